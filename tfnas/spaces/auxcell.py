"""Auxiliary-cell decoder space of Nekrasov et al., CVPR 2019 (Sec. 3.1, Appendix A), and its supernet.

The decoder reads four encoder taps, each adapted by a 1x1 conv-BN-ReLU to `width` channels.
Three decoder blocks each pick two inputs with replacement from the growing pool (the four
taps, then earlier block outputs), apply the searched cell to each (separate weights), adapt
each with a 1x1 conv-BN-ReLU, resize the coarser to the finer and sum. After each block an
auxiliary cell (the same design) and a 3x3 conv give a training-only output `aux_<b>`. Block
outputs no later block reads are concatenated at the finest resolution, passed through ReLU
and a 1x1 conv-BN-ReLU, and a 3x3 conv gives the main `logits` (stride 4 for MobileNetV2).

Genotypes use the paper's form
`[[[c1, c2], [c3, c4], [c5, c6]], [o1, [i2, i3, o2, o3], [i4, i5, o4, o5], [i6, i7, o6, o7]]]`
(the authors' code writes `[cell, connections]`; `from_authors_code` converts).

The supernet (`build_supernet`, `tfnas.supernet`) has every block input as a `Choice` among
the pool, every cell as a `SuperAuxCell`, and a fixed-shape decoder end: all three block
outputs are concatenated, each either zeroed (read by a later block), kept, or resized to
the finest unused one. A 1x1 conv over zeros adds exactly nothing, so the conv over the
masked concatenation is the standalone conv over the unused outputs (its kernel rows for
those outputs). All 3 block resolutions are selected at run time: one signature, one trace.

    >>> space = AuxCellSpace(num_classes=21, width=64)
    >>> model = space.build_genotype("arch0")
    >>> deployable = space.inference_model(model)
"""

import keras

from tfnas.cells.auxcell import NUM_BRANCHES, AuxCell, SuperAuxCell, branch_pool_size
from tfnas.choice import Choice, Take, ZerosLike
from tfnas.ops import CELL_OPS, ConvBN, ResizeLike
from tfnas.spaces.base import MAIN_OUTPUT, DecoderSpace, check_index, resize_to_finest
from tfnas.supernet import Use

NUM_BLOCKS = 3
NUM_TAPS = 4
NUM_OPS = len(CELL_OPS)


def _block_key(b, j):
    return f"block{b}_input{j}"


def _branch_keys(k):
    return (f"branch{k}_index0", f"branch{k}_index1", f"branch{k}_op0", f"branch{k}_op1")


class AuxCellSpace(DecoderSpace):
    """The CVPR 2019 auxiliary-cell decoder space, a `keras_tuner.HyperModel`.

    Decisions, in the controller's order: `block{b}_input{j}` for blocks b = 0..2 (indices
    into the pool of 4 taps plus earlier blocks), then `cell_op1`, then for branches k = 1..3
    `branch{k}_index0`, `branch{k}_index1` (0 .. 3k - 2), `branch{k}_op0`, `branch{k}_op1`
    (Table 4 op indices 0..10).

    Args:
        num_classes: int, number of classes (21 for PASCAL VOC).
        width: int, decoder channels: 48 during search (default), 64 for full training.
        aux_cells: bool, whether auxiliary heads have the cell before their 3x3 classifier
            (True, as in the paper) or the classifier alone.
        **kwargs: encoder settings of `DecoderSpace` (`encoder_weights`, `alpha`, ...).
    """

    PUBLISHED = {
        "arch0": [[[3, 3], [3, 2], [3, 0]], [8, [0, 0, 5, 2], [0, 2, 8, 8], [0, 5, 1, 4]]],
        "arch1": [[[2, 3], [3, 1], [4, 4]], [2, [1, 0, 3, 6], [0, 1, 2, 8], [2, 0, 6, 1]]],
        "arch2": [[[1, 3], [4, 3], [2, 2]], [5, [0, 0, 4, 1], [3, 2, 0, 1], [5, 6, 5, 0]]],
    }
    #: Sec. 3.2 and 4.1: 5 epochs on cached encoder outputs (Adam 3e-3, distillation 0.3,
    #: Polyak 0.9), then 1 end to end (SGD 1e-3 on the encoder, Polyak 0.99), progressive
    #: termination; reward: geometric mean with the background left out (the defaults).
    PROXY_PROTOCOL = "cvpr2019"

    def __init__(self, num_classes=None, width=48, aux_cells=True, name="auxcell", **kwargs):
        super().__init__(num_classes, width, name=name, **kwargs)
        self.aux_cells = bool(aux_cells)

    def config(self):
        return {**super().config(), "aux_cells": self.aux_cells}

    # --- decisions and codec --------------------------------------------------------------
    def declare_hyperparameters(self, hp):
        values = {}
        for b in range(NUM_BLOCKS):
            for j in range(2):
                key = _block_key(b, j)
                values[key] = hp.Choice(key, list(range(NUM_TAPS + b)))
        values["cell_op1"] = hp.Choice("cell_op1", list(range(NUM_OPS)))
        for k in range(1, NUM_BRANCHES + 1):
            i0, i1, o0, o1 = _branch_keys(k)
            for key in (i0, i1):
                values[key] = hp.Choice(key, list(range(branch_pool_size(k))))
            for key in (o0, o1):
                values[key] = hp.Choice(key, list(range(NUM_OPS)))
        return values

    def encode(self, values):
        connections = [[int(values[_block_key(b, j)]) for j in range(2)] for b in range(NUM_BLOCKS)]
        cell = [int(values["cell_op1"])] + [
            [int(values[key]) for key in _branch_keys(k)] for k in range(1, NUM_BRANCHES + 1)
        ]
        return [connections, cell]

    def values(self, genotype):
        connections, cell = self._unpack(genotype)
        values = {}
        for b, pair in enumerate(connections):
            for j, index in enumerate(pair):
                check_index(
                    index,
                    NUM_TAPS + b,
                    f"genotype connection {b} input {j}",
                    f"block {b} may read the {NUM_TAPS} encoder taps and {b} earlier block(s)",
                )
                values[_block_key(b, j)] = index
        check_index(cell[0], NUM_OPS, "genotype cell op o1", "ops are indices into Table 4")
        values["cell_op1"] = cell[0]
        for k, branch in enumerate(cell[1:], start=1):
            keys = _branch_keys(k)
            for pos in range(2):
                check_index(
                    branch[pos],
                    branch_pool_size(k),
                    f"genotype cell branch {k} index {pos}",
                    f"branch {k} may read the cell features built so far",
                )
                check_index(
                    branch[2 + pos],
                    NUM_OPS,
                    f"genotype cell branch {k} op {pos}",
                    "ops are indices into Table 4",
                )
            values.update(zip(keys, branch))
        return values

    @staticmethod
    def _unpack(genotype):
        form = "[[[c1,c2],[c3,c4],[c5,c6]], [o1,[i2,i3,o2,o3],[i4,i5,o4,o5],[i6,i7,o6,o7]]]"
        if not isinstance(genotype, (list, tuple)) or len(genotype) != 2:
            raise ValueError(f"genotype {genotype!r} must be [connections, cell] in the form {form}")
        connections, cell = genotype
        if (
            not isinstance(connections, (list, tuple))
            or len(connections) != NUM_BLOCKS
            or any(not isinstance(p, (list, tuple)) or len(p) != 2 for p in connections)
        ):
            raise ValueError(
                f"genotype connections {connections!r} must be {NUM_BLOCKS} pairs "
                f"[c1, c2]; the whole genotype has the form {form}"
            )
        if (
            not isinstance(cell, (list, tuple))
            or len(cell) != 1 + NUM_BRANCHES
            or isinstance(cell[0], (list, tuple))
            or any(not isinstance(b, (list, tuple)) or len(b) != 4 for b in cell[1:])
        ):
            raise ValueError(
                f"genotype cell {cell!r} must be [o1, [i2, i3, o2, o3], "
                f"[i4, i5, o4, o5], [i6, i7, o6, o7]]; the whole genotype has the form {form}"
            )
        return connections, cell

    @staticmethod
    def from_authors_code(genotype):
        """Converts the authors' `[cell, connections]` order to the paper's `[connections, cell]`."""
        cell, connections = genotype
        return [connections, cell]

    # --- the network ----------------------------------------------------------------------
    def decoder_from_values(self, values, features, strides):
        connections, cell = self.genotype(values)
        w = self.width
        head_reference = (features[0], strides[0])  # heads with an output stride resize to it
        pool = [ConvBN(w, 1, name=f"adapt{i}")(f) for i, f in enumerate(features)]
        pool_strides = list(strides)
        outputs, used = {}, set()
        for b, (c1, c2) in enumerate(connections):
            branches = []
            for j, c in enumerate((c1, c2)):
                x = AuxCell(cell, w, name=f"block{b}_cell{j}")(pool[c])
                branches.append(ConvBN(w, 1, name=f"block{b}_agg{j}")(x))
            (x1, x2), stride = resize_to_finest(branches, [pool_strides[c1], pool_strides[c2]])
            out = keras.layers.Add(name=f"block{b}_sum")([x1, x2])
            aux = AuxCell(cell, w, name=f"aux{b}_cell")(out) if self.aux_cells else out
            outputs[f"aux_{b}"] = self.task.head(aux, f"aux_{b}", stride, reference=head_reference)
            used.update((c1, c2))
            pool.append(out)
            pool_strides.append(stride)
        unused = [i for i in range(NUM_TAPS, len(pool)) if i not in used]
        collected, stride = resize_to_finest([pool[i] for i in unused], [pool_strides[i] for i in unused])
        x = collected[0] if len(collected) == 1 else keras.layers.Concatenate(name="collect")(collected)
        x = keras.layers.ReLU(name="collect_relu")(x)
        x = ConvBN(w, 1, name="pre_classifier")(x)
        logits = self.task.head(x, MAIN_OUTPUT, stride, reference=head_reference)
        return {MAIN_OUTPUT: logits, **outputs}

    # --- the supernet ---------------------------------------------------------------------
    def supernet_from_features(self, features, strides):
        w = self.width
        head_reference = (features[0], strides[0])
        pool = [ConvBN(w, 1, name=f"adapt{i}")(f) for i, f in enumerate(features)]
        outputs = {}
        for b in range(NUM_BLOCKS):
            branches = []
            for j in range(2):
                x = Choice(name=_block_key(b, j))(list(pool))
                x = SuperAuxCell(w, name=f"block{b}_cell{j}")(x)
                branches.append(ConvBN(w, 1, name=f"block{b}_agg{j}")(x))
            # Each path is kept, or resized to the other when it is the coarser one.
            x1 = Choice([Take(0), ResizeLike()], name=f"block{b}_align0")(branches)
            x2 = Choice([Take(0), ResizeLike()], name=f"block{b}_align1")(branches[::-1])
            out = keras.layers.Add(name=f"block{b}_sum")([x1, x2])
            aux = SuperAuxCell(w, name=f"aux{b}_cell")(out) if self.aux_cells else out
            # the block's stride is the architecture's: heads resize to the reference
            outputs[f"aux_{b}"] = self.task.head(aux, f"aux_{b}", reference=head_reference)
            pool.append(out)
        blocks = pool[NUM_TAPS:]
        reference = Choice(name="collect_reference")(blocks)  # the finest unused block output
        collected = [
            Choice([ZerosLike(1), Take(0), ResizeLike()], name=f"collect{b}")([out, reference])
            for b, out in enumerate(blocks)
        ]
        x = keras.layers.Concatenate(name="collect")(collected)
        x = keras.layers.ReLU(name="collect_relu")(x)
        x = ConvBN(w, 1, name="pre_classifier")(x)
        logits = self.task.head(x, MAIN_OUTPUT, reference=head_reference)
        return {MAIN_OUTPUT: logits, **outputs}

    def _structure(self, values, strides):
        """Strides of the pool, unused block outputs and the finest of them, for `values`."""
        connections, cell = self.genotype(values)
        pool_strides = list(strides)
        for c1, c2 in connections:
            pool_strides.append(min(pool_strides[c1], pool_strides[c2]))
        used = {c for pair in connections for c in pair}
        unused = [i for i in range(NUM_TAPS, NUM_TAPS + NUM_BLOCKS) if i not in used]
        finest = min(unused, key=lambda i: pool_strides[i])
        return connections, cell, pool_strides, unused, finest

    def supernet_selection(self, values, strides):
        connections, cell, strides, unused, finest = self._structure(values, strides)
        selection = {}
        cells = [f"block{b}_cell{j}" for b in range(NUM_BLOCKS) for j in range(2)]
        cells += [f"aux{b}_cell" for b in range(NUM_BLOCKS)] if self.aux_cells else []
        for name in cells:
            selection.update(SuperAuxCell.selection(cell, prefix=f"{name}/"))
        for b, pair in enumerate(connections):
            finer = min(strides[c] for c in pair)
            for j, c in enumerate(pair):
                selection[_block_key(b, j)] = c
                selection[f"block{b}_align{j}"] = int(strides[c] != finer)
        selection["collect_reference"] = finest - NUM_TAPS
        for b in range(NUM_BLOCKS):
            i = NUM_TAPS + b
            selection[f"collect{b}"] = 0 if i not in unused else (1 if strides[i] == strides[finest] else 2)
        return selection

    def supernet_uses(self, decoder, values, strides):
        connections, cell, strides, unused, finest = self._structure(values, strides)
        w, uses = self.width, []
        read = {c for pair in connections for c in pair}
        for i in sorted(read & set(range(NUM_TAPS))):  # Keras drops the adapters of unread taps
            adapt = decoder.get_layer(f"adapt{i}")
            uses.append(Use(adapt, (f"adapt{i}",), strides[i], adapt.conv.kernel.shape[2]))
        for b, pair in enumerate(connections):
            for j, c in enumerate(pair):
                name = f"block{b}_cell{j}"
                for layer, path in decoder.get_layer(name).uses(cell):
                    uses.append(Use(layer, (name, *path), strides[c], w))
                uses.append(Use(decoder.get_layer(f"block{b}_agg{j}"), (f"block{b}_agg{j}",), strides[c], w))
            out_stride = strides[NUM_TAPS + b]
            if self.aux_cells:
                for layer, path in decoder.get_layer(f"aux{b}_cell").uses(cell):
                    uses.append(Use(layer, (f"aux{b}_cell", *path), out_stride, w, inference=False))
            head = self.task.head_conv(decoder, f"aux_{b}")  # named alike in both models
            uses.append(Use(head, (head.name,), out_stride, w, inference=False))
        rows = tuple(r for i in unused for r in range((i - NUM_TAPS) * w, (i - NUM_TAPS + 1) * w))
        uses.append(
            Use(
                decoder.get_layer("pre_classifier"),
                ("pre_classifier",),
                strides[finest],
                len(rows),
                rows=rows,
            )
        )
        head = self.task.head_conv(decoder, MAIN_OUTPUT)
        uses.append(Use(head, (head.name,), strides[finest], w))
        return uses
