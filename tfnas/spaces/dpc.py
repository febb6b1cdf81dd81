"""Dense Prediction Cell space of Chen et al., NeurIPS 2018 (Sec. 3.1).

A Dense Prediction Cell (`tfnas.cells.dpc`) on the last backbone features at output stride
16 (MobileNetV2 by default, ResNet-50 with `encoder="resnet50"`), then a 1x1 conv to the
classes gives the `logits` (stride 16). The backbone is the frozen encoder of stage 1, as in
the paper's proxy task on cached backbone features.

Genotypes are lists of B branches `[input, op]`: `input` 0 is the backbone features and
`input` k the output of branch k - 1 (branch i may read 0..i, so branch 0 reads only the
backbone); `op` is a name in `tfnas.cells.dpc.DPC_OPS`: `"conv1x1"`, `"sep3x3_<rh>x<rw>"`
(rates in 1, 3, 6, ..., 21) or `"pool<gh>x<gw>"` (grids in 1, 2, 4, 8). The paper counts
`B! * 81^B` cells (about 4.2e11 for B = 5), which is `DPCSpace().size()`.

The supernet (`build_supernet`, `tfnas.supernet`) is a `SuperDensePredictionCell`: every
shape is fixed, so one graph (one trace) serves every architecture.

    >>> space = DPCSpace(num_classes=19)
    >>> model = space.build_genotype("top1_cityscapes")
"""

import keras

from tfnas.cells.dpc import DPC_OPS, DensePredictionCell, SuperDensePredictionCell
from tfnas.spaces.base import MAIN_OUTPUT, DecoderSpace, check_index
from tfnas.supernet import Use


def _branch_keys(i):
    return f"branch{i}_input", f"branch{i}_op"


class DPCSpace(DecoderSpace):
    """The Dense Prediction Cell space, a `keras_tuner.HyperModel`.

    Decisions, in branch order: `branch0_op`, then for i = 1..B-1 `branch{i}_input`
    (0..i) and `branch{i}_op` (the 81 names of `DPC_OPS`). Branch 0 has no input decision:
    it always reads the backbone.

    Args:
        num_classes: int, number of classes (19 for Cityscapes).
        width: int, filters of every branch and of the projection. Default 256.
        num_branches: int, B. Default 5.
        encoder: `"mobilenetv2"` (default) or `"resnet50"`.
        output_stride: int, MobileNetV2 output stride. Default 16, as in the paper.
        **kwargs: other encoder settings of `DecoderSpace` (`encoder_weights`, `alpha`, ...).

    Raises:
        ValueError: for fewer than one branch.
    """

    PUBLISHED = {
        # Fig. 5a; deeplab/core/dense_prediction_cell_branch5_top1_cityscapes.json.
        "top1_cityscapes": [
            [0, "sep3x3_1x6"],
            [1, "sep3x3_18x15"],
            [2, "sep3x3_6x3"],
            [1, "sep3x3_1x1"],
            [1, "sep3x3_6x21"],
        ],
    }
    TAPS = (6,)
    DEFAULT_ORACLE = "random"
    #: Sec. 3.3 and 4: a DPC trained on cached backbone features only, SGD with a
    #: polynomial learning rate from 0.01, batches of 8, 30K iterations; see
    #: `tfnas.training.proxy.PROTOCOLS["dpc2018"]`.
    PROXY_PROTOCOL = "dpc2018"
    #: Sec. 3.2: "f(b) is the pixel-wise mean intersection-over-union (mIOU)", over every
    #: class (Cityscapes has no background class).
    SEGMENTATION_REWARD = {"omit": (), "reward_metric": "miou"}

    def __init__(self, num_classes=None, width=256, num_branches=5, output_stride=16, name="dpc", **kwargs):
        super().__init__(num_classes, width, output_stride=output_stride, name=name, **kwargs)
        if int(num_branches) < 1:
            raise ValueError(f"num_branches must be at least 1, got {num_branches!r}")
        self.num_branches = int(num_branches)

    def config(self):
        return {**super().config(), "num_branches": self.num_branches}

    def build_encoder(self):
        """The backbone: image -> [features at stride 16] (ResNet-50: its stride-16 tap)."""
        encoder = super().build_encoder()
        if self.encoder != "resnet50":
            return encoder
        tap = encoder.tap_strides.index(16)
        model = keras.Model(encoder.inputs, [encoder.outputs[tap]], name="encoder")
        model.tap_strides = [16]
        return model

    # --- decisions and codec --------------------------------------------------------------
    def declare_hyperparameters(self, hp):
        values = {}
        for i in range(self.num_branches):
            source, op = _branch_keys(i)
            if i > 0:
                values[source] = hp.Choice(source, list(range(i + 1)))
            values[op] = hp.Choice(op, list(DPC_OPS))
        return values

    def encode(self, values):
        return [
            [int(values[source]) if i > 0 else 0, str(values[op])]
            for i, (source, op) in enumerate(map(_branch_keys, range(self.num_branches)))
        ]

    def values(self, genotype):
        b = self.num_branches
        form = f"[[input, op]] * {b}, e.g. {self.PUBLISHED['top1_cityscapes']!r}"
        if (
            not isinstance(genotype, (list, tuple))
            or len(genotype) != b
            or any(not isinstance(branch, (list, tuple)) or len(branch) != 2 for branch in genotype)
        ):
            raise ValueError(f"genotype {genotype!r} must be {b} branches in the form {form}")
        values = {}
        for i, (source, op) in enumerate(genotype):
            check_index(
                source,
                i + 1,
                f"genotype branch {i} input",
                f"branch {i} may read the backbone (0) and the {i} earlier branch(es)",
            )
            if op not in DPC_OPS:
                raise ValueError(
                    f"genotype branch {i} op is {op!r}, but ops are 'conv1x1', "
                    f"'sep3x3_<rh>x<rw>' with rates in 1, 3, 6, ..., 21, or "
                    f"'pool<gh>x<gw>' with grids in 1, 2, 4, 8 (see DPC_OPS)"
                )
            source_key, op_key = _branch_keys(i)
            if i > 0:
                values[source_key] = source
            values[op_key] = op
        return values

    # --- the network ----------------------------------------------------------------------
    def decoder_from_values(self, values, features, strides):
        cell = DensePredictionCell(self.genotype(values), self.width, name="cell")(features[-1])
        return {MAIN_OUTPUT: self.task.head(cell, MAIN_OUTPUT, strides[-1], kernel_size=1)}

    # --- the supernet ---------------------------------------------------------------------
    def supernet_from_features(self, features, strides):
        cell = SuperDensePredictionCell(self.num_branches, self.width, name="cell")(features[-1])
        return {MAIN_OUTPUT: self.task.head(cell, MAIN_OUTPUT, strides[-1], kernel_size=1)}

    def supernet_selection(self, values, strides):
        return SuperDensePredictionCell.selection(self.genotype(values), prefix="cell/")

    def supernet_uses(self, decoder, values, strides):
        cell, stride = decoder.get_layer("cell"), strides[-1]
        backbone = decoder.inputs[-1].shape[-1]
        uses = [
            Use(layer, ("cell", *path), stride, backbone if on_backbone else self.width)
            for layer, path, on_backbone in cell.uses(self.genotype(values))
        ]
        uses.append(Use(cell.projection, ("cell", "projection"), stride, self.width * self.num_branches))
        head = self.task.head_conv(decoder, MAIN_OUTPUT)
        uses.append(Use(head, (head.name,), stride, self.width))
        return uses
