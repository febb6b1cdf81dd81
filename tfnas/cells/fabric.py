"""The 3M-Pose fabric as Keras layers, Hoang 2021 (seed 003, Sec. 3.1-3.2, Fig. 3.1-3.2, Table A.1).

Specification and readings: `/work/shared/3M-POSE.md` (sections in brackets below).

- **Ops** [4]: the nine cell ops, 3x3, stride 1, `filters` channels in and out, in the thesis'
  order (`FABRIC_OPS`, index = genotype op index). Internals are not given by the thesis; the
  readings used: conv = conv-BN-ReLU; residual = HRNet BasicBlock; separable conv = one
  depthwise 3x3 + pointwise 1x1 + BN + ReLU (MobileNet's unit; `tfnas.ops.SepConv` with
  `repeats=1`); CSI = `x * sigmoid(conv1x1(x))`; zoom conv = bilinear x1/2, conv-BN-ReLU, bilinear
  back (FasterSeg); squeeze-and-excite with reduction 16 (Hu et al.); pools with stride 1.
- **Cell** [4]: H = 2 hidden nodes and three edges, O0: I -> h1, O1: I -> h2, O2: h1 -> h2
  (Table A.1); each edge is the sum of its kept ops (or, in a supernet, their weighted sum);
  the output is a 1x1 conv-BN-ReLU of concat(h1, h2) back to the row width.
- **Macro inputs** [5]: a cell reads the previous column's outputs "above" (finer row,
  resampled down by a 3x3 stride-2 conv-BN), "parallel" (same row, as is) and "below" (coarser
  row, 1x1 conv-BN then bilinear up); the kept ones are summed (`Resample`, `mix_inputs`).
- **Fuse-split and early escapes** [10]: `Fuse` (rows -> 1x1 conv -> up to 1/4 -> concat ->
  1x1 conv -> SE, then the same with the skip features) and `Split` (a 1x1 conv of stride
  2^r per row, added to that row); `PoseHead` gives `num_joints` heatmaps and tag maps
  (bottom-up pose, the thesis' task); `TaskHead` gives another task's output (segmentation,
  depth, top-down pose) from the same stride-4 features.
- **Stem** [2]: `Stem`, HRNet's two 3x3 stride-2 convs and four bottlenecks, then a 1x1 conv
  to the fabric width.
- **Dynamic inference** [11]: `heatmap_confidence` (skewness and kurtosis of the heatmaps),
  `count_keypoints`, `ExitGate` (pose), `softmax_confidence` and `SoftmaxExitGate` (segmentation).

A derived network combines its kept candidates with `mix` (`FabricCell`, `mix_inputs`): a
plain sum. The one-shot supernet (`tfnas.oneshot.FabricSupernet`) holds each edge's nine ops
and each cell's macro inputs in a `tfnas.choice.Choice` instead, mixed in its weighted mode,
which computes only the candidates whose weight is not zero.
"""

import dataclasses

import keras
import tensorflow as tf

from tfnas.ops import ConvBN, Identity, ResizeLike, SepConv

_PACKAGE = "tfnas"

#: The nine fabric ops in the thesis' order (Sec. 3.2.2); index = genotype op index.
FABRIC_OPS = (
    "identity",
    "conv3x3",
    "avgpool3x3",
    "maxpool3x3",
    "residual",
    "sepconv3x3",
    "csi",
    "zoomconv3x3",
    "se",
)

#: The names Table A.1 uses for the ops, in `FABRIC_OPS` order.
TABLE_OP_NAMES = ("Identity", "Conv", "Avg", "Max", "Residual", "SepConv", "CSI", "ZoomConv", "SE")

#: The three macro inputs of a cell, in the order of the thesis' beta (Eq. 3.7): the finer row
#: of the previous column ("above"), the same row ("parallel"), the coarser row ("below").
INPUTS = ("above", "parallel", "below")

#: Edges of a cell as (source, target): 0 = the cell input I, 1 = h1, 2 = h2.
EDGES = ((0, 1), (0, 2), (1, 2))

#: Squeeze-and-excite reduction ratio (Hu et al., not given by the thesis).
SE_RATIO = 16


def _reduced(filters, ratio):
    return max(1, int(filters) // int(ratio))


def mix(outputs, weights=None):
    """Combines candidate outputs: their sum, or their sum weighted by `weights`.

    A derived network's cells and inputs combine their kept candidates here; the one-shot
    supernet mixes through `tfnas.choice.Choice` instead (see the module docstring).

    Args:
        outputs: list of tensors of one shape.
        weights: `None` (a derived network: plain sum, Sec. 15 of the spec) or a 1-D tensor of
            `len(outputs)` weights (a supernet: hard top-k weights with straight-through
            gradients, or soft Gumbel weights).

    Returns:
        The combined tensor.
    """
    if not outputs:
        raise ValueError("mix needs at least one candidate output, got none")
    if weights is None:
        total = outputs[0]
        for y in outputs[1:]:
            total = total + y
        return total
    if int(weights.shape[0]) != len(outputs):
        raise ValueError(f"mix got {int(weights.shape[0])} weights for {len(outputs)} candidates")
    total = weights[0] * outputs[0]
    for i in range(1, len(outputs)):
        total = total + weights[i] * outputs[i]
    return total


# --- the nine ops ------------------------------------------------------------------------------
@keras.saving.register_keras_serializable(package=_PACKAGE)
class ResidualBlock(keras.layers.Layer):
    """HRNet's BasicBlock: conv3x3-BN-ReLU, conv3x3-BN, plus the input, ReLU.

    Args:
        filters: int, channels in and out.

    Input shape: `(N, H, W, filters)`. Output shape: the same.
    """

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.conv1 = ConvBN(self.filters, 3, name="conv1")
        self.conv2 = ConvBN(self.filters, 3, activation=False, name="conv2")

    def build(self, input_shape):
        self.conv1.build(input_shape)
        self.conv2.build(self.conv1.compute_output_shape(input_shape))

    def call(self, inputs, training=None):
        x = self.conv2(self.conv1(inputs, training=training), training=training)
        return keras.ops.relu(x + inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ConvSigmoidIdentity(keras.layers.Layer):
    """CSI: the input gated by the sigmoid of a convolution of itself, `x * sigmoid(conv(x))`.

    Args:
        filters: int, channels in and out.
        kernel_size: int, the gate's kernel (unspecified by the thesis; default 1).

    Input shape: `(N, H, W, filters)`. Output shape: the same.
    """

    def __init__(self, filters, kernel_size=1, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.conv = keras.layers.Conv2D(self.filters, self.kernel_size, padding="same", name="gate")

    def build(self, input_shape):
        self.conv.build(input_shape)

    def call(self, inputs):
        return inputs * keras.ops.sigmoid(self.conv(inputs))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size}


def _half_size(x):
    size = tf.shape(x)[1:3]
    return (size + 1) // 2


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ZoomConv(keras.layers.Layer):
    """FasterSeg's zoomed convolution: bilinear x1/2, conv3x3-BN-ReLU, bilinear back.

    Costs a quarter of a 3x3 conv for a twice larger receptive field.

    Args:
        filters: int, channels in and out.

    Input shape: `(N, H, W, filters)`. Output shape: the same (inner size `ceil(H/2)`).
    """

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.conv = ConvBN(self.filters, 3, name="conv")

    def build(self, input_shape):
        self.conv.build(input_shape)

    def call(self, inputs, training=None):
        x = tf.image.resize(inputs, _half_size(inputs), method="bilinear")
        x = self.conv(tf.cast(x, inputs.dtype), training=training)
        return tf.cast(tf.image.resize(x, tf.shape(inputs)[1:3], method="bilinear"), inputs.dtype)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SqueezeExcite(keras.layers.Layer):
    """Squeeze-and-excite: global mean, 1x1 conv-ReLU to `filters / ratio`, 1x1 conv-sigmoid, scale.

    Args:
        filters: int, channels in and out.
        ratio: int, reduction ratio (default 16, as in Hu et al.); at least one hidden channel.

    Input shape: `(N, H, W, filters)`. Output shape: the same.
    """

    def __init__(self, filters, ratio=SE_RATIO, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.ratio = int(ratio)
        self.reduce = keras.layers.Conv2D(
            _reduced(self.filters, self.ratio), 1, activation="relu", name="reduce"
        )
        self.expand = keras.layers.Conv2D(self.filters, 1, activation="sigmoid", name="expand")

    def build(self, input_shape):
        pooled = (input_shape[0], 1, 1, input_shape[-1])
        self.reduce.build(pooled)
        self.expand.build(self.reduce.compute_output_shape(pooled))

    def call(self, inputs):
        scale = self.expand(self.reduce(keras.ops.mean(inputs, axis=(1, 2), keepdims=True)))
        return inputs * scale

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "ratio": self.ratio}


_FACTORIES = {
    "identity": lambda f, name: Identity(name=name),
    "conv3x3": lambda f, name: ConvBN(f, 3, name=name),
    "avgpool3x3": lambda f, name: keras.layers.AveragePooling2D(3, strides=1, padding="same", name=name),
    "maxpool3x3": lambda f, name: keras.layers.MaxPooling2D(3, strides=1, padding="same", name=name),
    "residual": lambda f, name: ResidualBlock(f, name=name),
    "sepconv3x3": lambda f, name: SepConv(f, 3, repeats=1, name=name),
    "csi": lambda f, name: ConvSigmoidIdentity(f, name=name),
    "zoomconv3x3": lambda f, name: ZoomConv(f, name=name),
    "se": lambda f, name: SqueezeExcite(f, name=name),
}


def make_fabric_op(op, filters, name=None):
    """Builds one of the nine fabric ops.

    Args:
        op: str (a name of `FABRIC_OPS`) or int (its index).
        filters: int, channels in and out.
        name: optional layer name.

    Returns:
        A Keras layer mapping `(N, H, W, filters)` to the same shape.

    Raises:
        ValueError: for an unknown op name or index.
    """
    if isinstance(op, int) and not isinstance(op, bool):
        if not 0 <= op < len(FABRIC_OPS):
            raise ValueError(
                f"fabric op index {op} is out of range; expected 0..{len(FABRIC_OPS) - 1} "
                f"({', '.join(FABRIC_OPS)})"
            )
        op = FABRIC_OPS[op]
    if op not in _FACTORIES:
        raise ValueError(f"unknown fabric op {op!r}; expected one of {list(FABRIC_OPS)}")
    return _FACTORIES[op](int(filters), name)


def op_madds(op, height, width, filters):
    """Multiply-adds of one fabric op on one `(height, width, filters)` map, as `tfnas.profile` counts.

    Args:
        op: str or int, a fabric op.
        height: int, map height.
        width: int, map width.
        filters: int, channels.

    Returns:
        int, multiply-adds for one image.
    """
    op = FABRIC_OPS[op] if isinstance(op, int) else op
    hw, c = int(height) * int(width), int(filters)
    if op == "identity":
        return 0
    if op == "conv3x3":
        return hw * 9 * c * c
    if op in ("avgpool3x3", "maxpool3x3"):
        return hw * c * 9
    if op == "residual":
        return 2 * hw * 9 * c * c
    if op == "sepconv3x3":
        return hw * (9 * c + c * c)
    if op == "csi":
        return hw * c * c
    if op == "zoomconv3x3":
        return -(-int(height) // 2) * -(-int(width) // 2) * 9 * c * c
    if op == "se":
        return hw * c + 2 * c * _reduced(c, SE_RATIO)
    raise ValueError(f"unknown fabric op {op!r}; expected one of {list(FABRIC_OPS)}")


# --- the cell and the macro inputs -------------------------------------------------------------
def _check_edges(edges):
    if len(edges) != len(EDGES):
        raise ValueError(
            f"a fabric cell has {len(EDGES)} edges (O0: I->h1, O1: I->h2, O2: h1->h2), "
            f"got {len(edges)}: {edges!r}"
        )
    out = []
    for e, ops in enumerate(edges):
        ops = [FABRIC_OPS[o] if isinstance(o, int) and not isinstance(o, bool) else o for o in ops]
        if not ops:
            raise ValueError(
                f"fabric cell edge O{e} keeps no op; expected at least one of {list(FABRIC_OPS)}"
            )
        for o in ops:
            if o not in FABRIC_OPS:
                raise ValueError(
                    f"fabric cell edge O{e} has unknown op {o!r}; expected one of {list(FABRIC_OPS)}"
                )
        out.append(tuple(ops))
    return tuple(out)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class FabricCell(keras.layers.Layer):
    """A fabric cell: h1 = O0(I), h2 = O1(I) + O2(h1), output = 1x1 conv-BN-ReLU(concat(h1, h2)).

    Each edge holds its candidate ops. A derived cell holds the kept ops (1 or 2) and sums
    them; a supernet cell holds all nine and is called with `edge_weights`.

    Args:
        filters: int, the row width (channels in and out).
        edges: three sequences of op names (or indices into `FABRIC_OPS`), for O0, O1, O2.

    Call args:
        inputs: `(N, H, W, filters)`, the cell input I.
        edge_weights: optional list of three 1-D tensors, one weight per candidate op of each
            edge (see `mix`).

    Input shape: `(N, H, W, filters)`. Output shape: the same.
    """

    def __init__(self, filters, edges, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.edges = _check_edges(edges)
        self.ops = [
            [make_fabric_op(op, self.filters, name=f"o{e}_{op}") for op in ops]
            for e, ops in enumerate(self.edges)
        ]
        self.project = ConvBN(self.filters, 1, name="project")

    def build(self, input_shape):
        for ops in self.ops:
            for op in ops:
                op.build(input_shape)
        self.project.build((*input_shape[:-1], 2 * self.filters))

    def call(self, inputs, edge_weights=None, training=None):
        weights = edge_weights or [None] * len(EDGES)
        nodes = [inputs]
        for e, ((source, target), w) in enumerate(zip(EDGES, weights)):
            y = self._edge(e, nodes[source], w, training)
            if target < len(nodes):
                nodes[target] = nodes[target] + y
            else:
                nodes.append(y)
        return self.project(keras.ops.concatenate(nodes[1:], axis=-1), training=training)

    def _edge(self, e, x, weights, training):
        """Edge e's ops on x, combined by `mix` (the supernet's cell chooses instead)."""
        return mix([op(x, training=training) for op in self.ops[e]], weights)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "edges": [list(e) for e in self.edges]}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Resample(keras.layers.Layer):
    """Brings a neighbouring row's output to this row's scale and width (spec section 5).

    `direction="down"` (the "above" input, from the finer row): 3x3 stride-2 conv-BN.
    `direction="up"` (the "below" input, from the coarser row): 1x1 conv-BN, then bilinear
    resize to the size of a reference tensor of this row.

    Args:
        filters: int, this row's width.
        direction: `"down"` or `"up"`.

    Call args:
        inputs: `x` for "down"; `[x, reference]` for "up".
    """

    def __init__(self, filters, direction, **kwargs):
        super().__init__(**kwargs)
        if direction not in ("down", "up"):
            raise ValueError(f"Resample direction must be 'down' or 'up', got {direction!r}")
        self.filters = int(filters)
        self.direction = direction
        if direction == "down":
            self.conv = ConvBN(self.filters, 3, strides=2, activation=False, name="conv")
        else:
            self.conv = ConvBN(self.filters, 1, activation=False, name="conv")
            self.resize = ResizeLike(name="resize")

    def build(self, input_shape):
        self.conv.build(input_shape if self.direction == "down" else input_shape[0])

    def call(self, inputs, training=None):
        if self.direction == "down":
            return self.conv(inputs, training=training)
        x, reference = inputs
        return self.resize([self.conv(x, training=training), reference])

    def compute_output_shape(self, input_shape):
        if self.direction == "down":
            return self.conv.compute_output_shape(input_shape)
        x, ref = input_shape
        return (x[0], ref[1], ref[2], self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "direction": self.direction}


def mix_inputs(tensors, weights=None):
    """The cell input I: the sum (or weighted sum) of the resampled macro inputs (see `mix`)."""
    return mix(list(tensors), weights)


# --- stem, fuse-split, heads -------------------------------------------------------------------
@keras.saving.register_keras_serializable(package=_PACKAGE)
class Bottleneck(keras.layers.Layer):
    """ResNet/HRNet bottleneck: 1x1, 3x3, 1x1 (x4 channels) conv-BN, plus a shortcut, ReLU.

    Args:
        planes: int, inner channels; the output has `4 * planes`.

    Input shape: `(N, H, W, C)`. Output shape: `(N, H, W, 4 * planes)`; the shortcut is a 1x1
    conv-BN when `C != 4 * planes`.
    """

    EXPANSION = 4

    def __init__(self, planes, **kwargs):
        super().__init__(**kwargs)
        self.planes = int(planes)
        out = self.EXPANSION * self.planes
        self.conv1 = ConvBN(self.planes, 1, name="conv1")
        self.conv2 = ConvBN(self.planes, 3, name="conv2")
        self.conv3 = ConvBN(out, 1, activation=False, name="conv3")
        self.shortcut = None

    def build(self, input_shape):
        self.conv1.build(input_shape)
        inner = (*input_shape[:-1], self.planes)
        self.conv2.build(inner)
        self.conv3.build(inner)
        if input_shape[-1] != self.EXPANSION * self.planes:
            self.shortcut = ConvBN(self.EXPANSION * self.planes, 1, activation=False, name="shortcut")
            self.shortcut.build(input_shape)

    def call(self, inputs, training=None):
        x = self.conv3(
            self.conv2(self.conv1(inputs, training=training), training=training), training=training
        )
        skip = inputs if self.shortcut is None else self.shortcut(inputs, training=training)
        return keras.ops.relu(x + skip)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.EXPANSION * self.planes)

    def get_config(self):
        return {**super().get_config(), "planes": self.planes}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Stem(keras.layers.Layer):
    """The 3M-Pose stem (spec section 2): HRNet's stem and layer1, then a 1x1 conv to the fabric width.

    conv3x3 s2 (3 -> `channels`), conv3x3 s2, `blocks` bottlenecks (`channels` planes, `4 *
    channels` out), then a 1x1 conv-BN-ReLU to `filters`: 1/4 of the input size.

    Args:
        filters: int, the fabric width C (32 in the thesis).
        channels: int, the stem convolutions' width (64 in HRNet).
        blocks: int, bottlenecks (4 in HRNet).

    Input shape: `(N, H, W, 3)`. Output shape: `(N, ceil(H/4), ceil(W/4), filters)`.
    """

    def __init__(self, filters, channels=64, blocks=4, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.channels = int(channels)
        self.blocks = int(blocks)
        self.conv1 = ConvBN(self.channels, 3, strides=2, name="conv1")
        self.conv2 = ConvBN(self.channels, 3, strides=2, name="conv2")
        self.bottlenecks = [Bottleneck(self.channels, name=f"layer1_{i}") for i in range(self.blocks)]
        self.reduce = ConvBN(self.filters, 1, name="reduce")

    def build(self, input_shape):
        self.conv1.build(input_shape)
        shape = self.conv1.compute_output_shape(input_shape)
        self.conv2.build(shape)
        shape = self.conv2.compute_output_shape(shape)
        for block in self.bottlenecks:
            block.build(shape)
            shape = block.compute_output_shape(shape)
        self.reduce.build(shape)

    def call(self, inputs, training=None):
        x = self.conv2(self.conv1(inputs, training=training), training=training)
        for block in self.bottlenecks:
            x = block(x, training=training)
        return self.reduce(x, training=training)

    def compute_output_shape(self, input_shape):
        n, h, w, _ = input_shape
        quarter = lambda s: None if s is None else -(-s // 4)
        return (n, quarter(h), quarter(w), self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "channels": self.channels,
            "blocks": self.blocks,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Fuse(keras.layers.Layer):
    """FUSE (spec section 10): the rows of a column and the skip features -> the final features.

    Each row output -> 1x1 conv-BN-ReLU to `filters` -> bilinear up to row 0's size; concat ->
    1x1 conv-BN-ReLU -> SE; then concat(skip, fused) -> 1x1 conv-BN-ReLU -> SE.

    Args:
        filters: int, the fabric width C (row 0's width).
        rows: int, number of row outputs fused.

    Call args:
        inputs: list `[skip, row_0, ..., row_{rows-1}]`; `skip` and `row_0` at 1/4.

    Output shape: `(N, H_0, W_0, filters)`.
    """

    def __init__(self, filters, rows, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.rows = int(rows)
        self.adapt = [ConvBN(self.filters, 1, name=f"row{r}") for r in range(self.rows)]
        self.resize = [ResizeLike(name=f"up{r}") for r in range(1, self.rows)]
        self.fuse = ConvBN(self.filters, 1, name="fuse")
        self.fuse_se = SqueezeExcite(self.filters, name="fuse_se")
        self.merge = ConvBN(self.filters, 1, name="merge")
        self.merge_se = SqueezeExcite(self.filters, name="merge_se")

    def build(self, input_shape):
        skip, rows = input_shape[0], input_shape[1:]
        if len(rows) != self.rows:
            raise ValueError(f"Fuse was made for {self.rows} rows but got {len(rows)} row inputs")
        for adapt, shape in zip(self.adapt, rows):
            adapt.build(shape)
        base = (*rows[0][:-1], self.filters)
        self.fuse.build((*rows[0][:-1], self.rows * self.filters))
        self.fuse_se.build(base)
        self.merge.build((*rows[0][:-1], skip[-1] + self.filters))
        self.merge_se.build(base)

    def call(self, inputs, training=None):
        skip, rows = inputs[0], inputs[1:]
        top = self.adapt[0](rows[0], training=training)
        parts = [top] + [
            resize([adapt(x, training=training), top])
            for adapt, resize, x in zip(self.adapt[1:], self.resize, rows[1:])
        ]
        x = keras.ops.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0]
        fused = self.fuse_se(self.fuse(x, training=training))
        merged = self.merge(keras.ops.concatenate([skip, fused], axis=-1), training=training)
        return self.merge_se(merged)

    def compute_output_shape(self, input_shape):
        return (*input_shape[1][:-1], self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "rows": self.rows}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Split(keras.layers.Layer):
    """SPLIT (spec section 10): the final features back to every row, added to that row.

    Row r gets a 1x1 conv-BN of stride 2^r to `widths[r]` channels, added to the row's output.

    Args:
        widths: sequence of int, each row's width (C * 2^r).

    Call args:
        inputs: list `[final_features, row_0, ..., row_{R-1}]`.

    Returns:
        list of the R updated row outputs.
    """

    def __init__(self, widths, **kwargs):
        super().__init__(**kwargs)
        self.widths = tuple(int(w) for w in widths)
        self.convs = [
            ConvBN(w, 1, strides=2**r, activation=False, name=f"row{r}") for r, w in enumerate(self.widths)
        ]

    def build(self, input_shape):
        if len(input_shape) - 1 != len(self.widths):
            raise ValueError(f"Split was made for {len(self.widths)} rows but got {len(input_shape) - 1}")
        for conv in self.convs:
            conv.build(input_shape[0])

    def call(self, inputs, training=None):
        final, rows = inputs[0], inputs[1:]
        return [x + conv(final, training=training) for conv, x in zip(self.convs, rows)]

    def compute_output_shape(self, input_shape):
        return list(input_shape[1:])

    def get_config(self):
        return {**super().get_config(), "widths": list(self.widths)}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PoseHead(keras.layers.Layer):
    """An output head: one 1x1 conv to `num_joints` heatmaps followed by `num_joints * tag_dim` tag maps.

    The channel layout is HigherHRNet's `tag_per_joint` (heatmaps first, then tags).

    Args:
        num_joints: int, keypoints (17 for COCO).
        tag_dim: int, associative-embedding tag channels per joint (1: scalar tags).

    Input shape: `(N, H, W, C)`. Output shape: `(N, H, W, num_joints * (1 + tag_dim))`.
    """

    def __init__(self, num_joints, tag_dim=1, **kwargs):
        super().__init__(**kwargs)
        self.num_joints = int(num_joints)
        self.tag_dim = int(tag_dim)
        self.conv = keras.layers.Conv2D(self.num_joints * (1 + self.tag_dim), 1, name="conv")

    def build(self, input_shape):
        self.conv.build(input_shape)

    def call(self, inputs):
        return self.conv(inputs)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.num_joints * (1 + self.tag_dim))

    def get_config(self):
        return {**super().get_config(), "num_joints": self.num_joints, "tag_dim": self.tag_dim}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class TaskHead(keras.layers.Layer):
    """An output head for a task other than bottom-up pose: a 1x1 conv, then the task's activation.

    The thesis' heads are `PoseHead`s; on the fabric's stride-4 features the same 1x1 conv gives
    segmentation logits, depth or top-down heatmaps (`Task.output_channels`), followed by
    the task's head activation (`Task.activation`, none for the built-in tasks). Segmentation
    and depth predict at stride 4 and their losses resize to the target, as in the other
    spaces.

    Args:
        channels: int, output channels (the task's `output_channels`).
        activation: None or a Keras activation name (the task's `activation`).

    Input shape: `(N, H, W, C)`. Output shape: `(N, H, W, channels)`.
    """

    def __init__(self, channels, activation=None, **kwargs):
        super().__init__(**kwargs)
        self.channels = int(channels)
        self.activation = activation
        self.conv = keras.layers.Conv2D(self.channels, 1, activation=activation, name="conv")

    def build(self, input_shape):
        self.conv.build(input_shape)

    def call(self, inputs):
        return self.conv(inputs)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.channels)

    def get_config(self):
        return {**super().get_config(), "channels": self.channels, "activation": self.activation}


# --- dynamic inference (spec section 11) --------------------------------------------------------
def heatmap_moments(heatmaps):
    """Skewness m3 / m2^1.5 and (Pearson) kurtosis m4 / m2^2 of each heatmap's values.

    Args:
        heatmaps: `(N, H, W, J)` tensor.

    Returns:
        `(skew, kurtosis)`, each `(N, J)`; a constant heatmap gives 0 and 0.
    """
    x = tf.cast(heatmaps, tf.float32)
    d = x - tf.reduce_mean(x, axis=(1, 2), keepdims=True)
    m2 = tf.reduce_mean(d**2, axis=(1, 2))
    m3 = tf.reduce_mean(d**3, axis=(1, 2))
    m4 = tf.reduce_mean(d**4, axis=(1, 2))
    flat = m2 <= 1e-12
    safe = tf.where(flat, tf.ones_like(m2), m2)
    skew = tf.where(flat, tf.zeros_like(m3), m3 / safe**1.5)
    kurtosis = tf.where(flat, tf.zeros_like(m4), m4 / safe**2)
    return skew, kurtosis


def heatmap_confidence(heatmaps, coefficients=(1.0, 1.0, 1.0), subtract_half=False, excess_kurtosis=False):
    """The thesis' exit confidence, sigmoid(c0 * (c1 * skew + c2 * kurtosis) / 2), per image.

    The moments are taken over each heatmap's values and skewness and kurtosis are averaged
    over the joints (spec section 11, suggested reading). As printed the thesis subtracts 0.5,
    which puts the confidence in (-0.5, 0.5) where neither threshold (1, 0.6) can be reached;
    the consistent reading, the default, thresholds the sigmoid itself.

    Which kurtosis is meant is open: the formula writes Pearson's m4 / m2^2 (the default), which
    is at least skew^2 + 1, so with column 7's c0 = 2 every non-constant heatmap scores at least
    sigmoid(3/8 * 2) = 0.68 and passes its 0.6; the text's "kurtosis in [-1, 1]" fits the
    excess kurtosis m4 / m2^2 - 3 better (`excess_kurtosis=True`), which has no such floor (a
    linear ramp: sigmoid(-1.2) = 0.23). `docs/fabric.md` ("Open question").

    Args:
        heatmaps: `(N, H, W, J)`.
        coefficients: `(c0, c1, c2)`.
        subtract_half: bool, whether to subtract 0.5 as printed (default False).
        excess_kurtosis: bool, use m4 / m2^2 - 3 (default False: Pearson's, as printed). A
            constant heatmap's moments stay 0 either way.

    Returns:
        `(N,)` float32 confidence.
    """
    c0, c1, c2 = (float(c) for c in coefficients)
    skew, kurtosis = heatmap_moments(heatmaps)
    if excess_kurtosis:
        kurtosis = tf.where(tf.equal(kurtosis, 0.0), kurtosis, kurtosis - 3.0)
    score = c0 * (c1 * tf.reduce_mean(skew, axis=-1) + c2 * tf.reduce_mean(kurtosis, axis=-1)) / 2.0
    conf = tf.sigmoid(score)
    return conf - 0.5 if subtract_half else conf


def count_keypoints(heatmaps, threshold=0.1, window=3):
    """N, the number of detected keypoints: local maxima (max-pool NMS) above `threshold`, per image.

    Args:
        heatmaps: `(N, H, W, J)`.
        threshold: float, minimum peak value (default 0.1).
        window: int, NMS window (default 3).

    Returns:
        `(N,)` int32 counts over all joints.
    """
    x = tf.cast(heatmaps, tf.float32)
    peaks = tf.nn.max_pool2d(x, window, 1, "SAME")
    keep = tf.logical_and(tf.equal(x, peaks), x > threshold)
    return tf.reduce_sum(tf.cast(keep, tf.int32), axis=(1, 2, 3))


@dataclasses.dataclass(frozen=True)
class ExitGate:
    """When an early-escape layer answers (spec section 11): no keypoint, or confidence above threshold.

    An image leaves at this exit if `count_keypoints(heatmaps) == 0` ("we automatically stop
    inferencing") or if `heatmap_confidence(heatmaps, coefficients) > threshold`. The comparison
    is strict, so the thesis' column-4 threshold of 1 is never passed (a float32 sigmoid can
    round to 1.0): column 4 answers only images without keypoints, its reading as "an excellent
    human detector".

    Args:
        coefficients: `(c0, c1, c2)`; the thesis: (1, 1, 1) at column 4, (2, 1, 1) at column 7.
        threshold: float; the thesis: 1 at column 4, 0.6 at column 7.
        keypoint_threshold: float, heatmap value of a detected keypoint (default 0.1).
        subtract_half: bool, the printed `- 0.5` (default False; see `heatmap_confidence`).
        excess_kurtosis: bool, excess instead of Pearson kurtosis (default False; see
            `heatmap_confidence`).
    """

    coefficients: tuple = (1.0, 1.0, 1.0)
    threshold: float = 1.0
    keypoint_threshold: float = 0.1
    subtract_half: bool = False
    excess_kurtosis: bool = False

    def __call__(self, heatmaps):
        """`(N,)` bool: whether each image leaves at this exit."""
        empty = tf.equal(count_keypoints(heatmaps, self.keypoint_threshold), 0)
        confident = (
            heatmap_confidence(heatmaps, self.coefficients, self.subtract_half, self.excess_kurtosis)
            > self.threshold
        )
        return tf.logical_or(empty, confident)


#: The thesis' gates by 1-based column (Sec. 3.1.4); other columns: the final output.
THESIS_GATES = {4: ExitGate((1.0, 1.0, 1.0), 1.0), 7: ExitGate((2.0, 1.0, 1.0), 0.6)}


def softmax_confidence(logits):
    """Segmentation exit confidence: the mean over pixels of the largest class probability.

    Args:
        logits: `(N, H, W, K)`.

    Returns:
        `(N,)` float32 in [1/K, 1].
    """
    probs = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
    return tf.reduce_mean(tf.reduce_max(probs, axis=-1), axis=(1, 2))


@dataclasses.dataclass(frozen=True)
class SoftmaxExitGate:
    """When a segmentation early exit answers: `softmax_confidence(logits) > threshold`.

    The thesis gates pose only; this is the same rule for segmentation heads, with a
    threshold that is a setting (no published value).

    Args:
        threshold: float in (0, 1), default 0.9.
    """

    threshold: float = 0.9

    def __call__(self, logits):
        """`(N,)` bool: whether each image leaves at this exit."""
        return softmax_confidence(logits) > self.threshold
