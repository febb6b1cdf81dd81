"""The template of Nekrasov et al., WACV 2020 (Sec. 3.1-3.3, Fig. 2 and 4), as Keras layers.

A template `[op1, op2, agg]` takes two inputs and gives one output: `op1` is applied to the
first input and `op2` to the second (each may change the channels and stride by 2), and the
aggregation `agg` joins the two results. As in the authors' code, a path whose channels
differ from the wider one is first adapted by a 1x1 conv-BN-ReLU, then the two paths are
resized to a common resolution (down to the coarser one in the first half of the network,
up to the finer one in the second half) and aggregated:

- `psum` (0): `a * x + b * y` with learned per-channel `a` and `b` (`ParamSum`);
- `cat` (1): concatenation, BN, ReLU and a 1x1 conv back to the channels (`ConcatReduce`).

Ops, by genotype index (`TEMPLATE_OPS`), following the authors' layer factory: separable
3x3 and 5x5 convs and the 5x5 rate-6 one, each (depthwise, pointwise, BN, ReLU) `repeats`
times; global average pooling with 1x1 conv-BN-ReLU; 1x1 conv-BN then 3x3 max-pool;
skip, which repeats the channels when the op must widen them. With stride 2, every op
halves the resolution (the authors' code leaves `gap` and `skip` at full resolution and
relies on the aggregation's resizing; here all ops honour the stride).

    >>> t = Template([3, 0, 1], filters=(48, 64), strides=2, input_strides=(4, 8))
    >>> y = t([keras.random.normal((1, 32, 32, 24)), keras.random.normal((1, 16, 16, 32))])
    >>> y.shape   # (1, 8, 8, 64): down to the coarser path, max(48, 64) channels
"""

import keras

from tfnas.ops import ConvBN, GlobalPoolConv, ResizeLike, SepConv

_PACKAGE = "tfnas"

#: The 6 template ops of Nekrasov et al. (WACV 2020) Sec. 4.1, in the authors' genotype order.
TEMPLATE_OPS = ("sep3x3", "sep5x5", "gap", "maxpool3x3", "sep5x5_rate6", "skip")

#: The 2 aggregations: 0 = learned per-channel sum, 1 = concatenation and 1x1 conv.
AGGREGATIONS = ("psum", "cat")

_SEP = {"sep3x3": (3, 1), "sep5x5": (5, 1), "sep5x5_rate6": (5, 6)}


def _subsample(x, strides):
    return x if strides == 1 else x[:, ::strides, ::strides, :]


def _strided(size, strides):
    return None if size is None else -(-size // strides)


def _strided_shape(input_shape, strides, filters):
    """Output shape of a template op: spatial size divided by `strides`, `filters` channels."""
    n, h, w, _ = input_shape
    return (n, _strided(h, strides), _strided(w, strides), filters)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class StridedSepConv(SepConv):
    """`tfnas.ops.SepConv` whose first depthwise conv output is taken at `strides`.

    The first depthwise conv runs at full resolution and is subsampled before the first
    pointwise conv (same weights and output size as a strided depthwise conv, and valid with
    any dilation rate).

    Args:
        filters: int, output channels.
        kernel_size: int, depthwise kernel size.
        dilation_rate: int, depthwise dilation.
        repeats: int, (depthwise, pointwise, BN, ReLU) units. Default 2.
        strides: int, 1 or 2. Default 1.

    Input shape: `(N, H, W, C)`. Output shape: `(N, ceil(H / strides), ceil(W / strides), filters)`.
    """

    def __init__(self, filters, kernel_size=3, dilation_rate=1, repeats=2, strides=1, **kwargs):
        super().__init__(filters, kernel_size, dilation_rate, repeats, **kwargs)
        self.strides = int(strides)

    def call(self, inputs, training=None):
        x = inputs
        for i, (depthwise, pointwise, bn) in enumerate(self.units):
            x = depthwise(x)
            if i == 0:
                x = _subsample(x, self.strides)
            x = keras.ops.relu(bn(pointwise(x), training=training))
        return x

    def compute_output_shape(self, input_shape):
        return _strided_shape(input_shape, self.strides, self.filters)

    def get_config(self):
        return {**super().get_config(), "strides": self.strides}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PoolConv(keras.layers.Layer):
    """1x1 conv-BN (no ReLU) then 3x3 max-pooling, as the authors' `max_pool_3x3` op.

    Args:
        filters: int, output channels.
        strides: int, pooling stride (1 or 2). Default 1.

    Input shape: `(N, H, W, C)`. Output shape: `(N, ceil(H / strides), ceil(W / strides), filters)`.
    """

    def __init__(self, filters, strides=1, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.strides = int(strides)
        self.conv = ConvBN(self.filters, 1, activation=False, name="conv_bn")
        self.pool = keras.layers.MaxPooling2D(3, strides=self.strides, padding="same", name="pool")

    def build(self, input_shape):
        self.conv.build(input_shape)

    def call(self, inputs, training=None):
        return self.pool(self.conv(inputs, training=training))

    def compute_output_shape(self, input_shape):
        return _strided_shape(input_shape, self.strides, self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "strides": self.strides}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class TileSkip(keras.layers.Layer):
    """The skip op: subsamples by `strides` and repeats the channels up to `filters`.

    Args:
        filters: int, output channels; a multiple of the input channels.
        strides: int, 1 or 2. Default 1.

    Input shape: `(N, H, W, C)`. Output shape: `(N, ceil(H / strides), ceil(W / strides), filters)`.

    Raises:
        ValueError: at build time, if `filters` is not a multiple of the input channels.
    """

    def __init__(self, filters, strides=1, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.strides = int(strides)

    def build(self, input_shape):
        channels = input_shape[-1]
        if self.filters % channels:
            raise ValueError(
                f"skip op {self.name!r} cannot widen {channels} channels to "
                f"{self.filters}: the output must be a whole multiple of the input "
                f"(use an integer channel factor)"
            )
        self.times = self.filters // channels

    def call(self, inputs):
        x = _subsample(inputs, self.strides)
        return x if self.times == 1 else keras.ops.tile(x, (1, 1, 1, self.times))

    def compute_output_shape(self, input_shape):
        return _strided_shape(input_shape, self.strides, self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "strides": self.strides}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ParamSum(keras.layers.Layer):
    """The `psum` aggregation: `a * x + b * y` with learned per-channel `a`, `b` (init 1).

    Input shape: a list `[(N, H, W, C), (N, H, W, C)]`. Output shape: `(N, H, W, C)`.
    """

    def build(self, input_shape):
        channels = input_shape[0][-1]
        self.a = self.add_weight(name="a", shape=(channels,), initializer="ones")
        self.b = self.add_weight(name="b", shape=(channels,), initializer="ones")

    def call(self, inputs):
        x, y = inputs
        return self.a * x + self.b * y

    def compute_output_shape(self, input_shape):
        return input_shape[0]


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ConcatReduce(keras.layers.Layer):
    """The `cat` aggregation: concatenation, BN, ReLU and a 1x1 conv back to `filters`.

    Args:
        filters: int, output channels (the channels of each input).

    Input shape: a list `[(N, H, W, C), (N, H, W, C)]`. Output shape: `(N, H, W, filters)`.
    """

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.bn = keras.layers.BatchNormalization(name="bn")
        self.conv = keras.layers.Conv2D(self.filters, 1, use_bias=False, name="conv")

    def build(self, input_shape):
        shape = (*input_shape[0][:-1], input_shape[0][-1] + input_shape[1][-1])
        self.bn.build(shape)
        self.conv.build(shape)

    def call(self, inputs, training=None):
        x = keras.ops.concatenate(inputs, axis=-1)
        return self.conv(keras.ops.relu(self.bn(x, training=training)))

    def compute_output_shape(self, input_shape):
        return (*input_shape[0][:-1], self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


def template_op(index, filters, strides=1, repeats=2, name=None):
    """Builds template op `TEMPLATE_OPS[index]` mapping any channels to `filters` at `strides`.

    Args:
        index: int, op index into `TEMPLATE_OPS`.
        filters: int, output channels.
        strides: int, 1 or 2.
        repeats: int, units of the separable convs (2 in the authors' training code).
        name: optional layer name.

    Returns:
        A Keras layer. Every op but `gap` applies `strides` itself; `Template` subsamples
        the (spatially constant) `gap` output.

    Raises:
        ValueError: for an op index outside `TEMPLATE_OPS`.
    """
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(TEMPLATE_OPS):
        raise ValueError(
            f"template op {index!r} is not an index into {TEMPLATE_OPS} (0..{len(TEMPLATE_OPS) - 1})"
        )
    op = TEMPLATE_OPS[index]
    if op in _SEP:
        kernel, rate = _SEP[op]
        return StridedSepConv(filters, kernel, rate, repeats=repeats, strides=strides, name=name)
    if op == "gap":
        return GlobalPoolConv(filters, name=name)
    if op == "maxpool3x3":
        return PoolConv(filters, strides, name=name)
    return TileSkip(filters, strides, name=name)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Template(keras.layers.Layer):
    """One instantiation of a template `[op1, op2, agg]` on two inputs (Fig. 2).

    Args:
        template: `[op1, op2, agg]`, op indices into `TEMPLATE_OPS` and an aggregation index
            into `AGGREGATIONS`. Validated by the space's codec.
        filters: pair of ints, output channels of `op1` and `op2`; the template outputs
            `max(filters)` channels.
        strides: int, 1 or 2: the stride of both ops.
        input_strides: pair of ints, the strides (relative to the image) of the two inputs;
            they decide which path is resized.
        resize: `"down"` (first half of the network: to the coarser path) or `"up"` (second
            half: to the finer path).
        repeats: int, units of the separable convs. Default 2, as in the authors' code.

    Input shape: a list `[(N, H1, W1, C1), (N, H2, W2, C2)]`.
    Output shape: `(N, H, W, max(filters))` at the stride `max` (down) or `min` (up) of
    `input_strides * strides`.
    """

    def __init__(
        self, template, filters, strides=1, input_strides=(1, 1), resize="down", repeats=2, **kwargs
    ):
        super().__init__(**kwargs)
        if resize not in ("down", "up"):
            raise ValueError(f"resize is {resize!r}; expected 'down' or 'up'")
        if strides not in (1, 2):
            raise ValueError(f"template strides is {strides!r}; expected 1 or 2")
        self.template = [int(v) for v in template]
        self.filters = tuple(int(f) for f in filters)
        self.strides = int(strides)
        self.input_strides = tuple(int(s) for s in input_strides)
        self.resize = resize
        self.repeats = int(repeats)
        self.channels = max(self.filters)
        self.ops, self.post_strides, self.adapts = [], [], []
        for j in range(2):
            op = template_op(self.template[j], self.filters[j], self.strides, self.repeats, name=f"op{j + 1}")
            self.ops.append(op)
            self.post_strides.append(self.strides if isinstance(op, GlobalPoolConv) else 1)
            self.adapts.append(
                ConvBN(self.channels, 1, name=f"adapt{j + 1}") if self.filters[j] != self.channels else None
            )
        out = [s * self.strides for s in self.input_strides]
        target = max(out) if resize == "down" else min(out)
        self.resized = [j for j in range(2) if out[j] != target]  # at most one path
        self.reference = 1 - self.resized[0] if self.resized else None
        self.resize_layer = ResizeLike(name="resize") if self.resized else None
        if AGGREGATIONS[self.template[2]] == "psum":
            self.aggregation = ParamSum(name="psum")
        else:
            self.aggregation = ConcatReduce(self.channels, name="cat")

    def build(self, input_shape):
        shapes = []
        for j, (op, adapt) in enumerate(zip(self.ops, self.adapts)):
            op.build(input_shape[j])
            shape = (input_shape[j][0], None, None, self.filters[j])
            if adapt is not None:
                adapt.build(shape)
            shapes.append((input_shape[j][0], None, None, self.channels))
        self.aggregation.build(shapes)

    def call(self, inputs, training=None):
        paths = []
        for j, (op, adapt) in enumerate(zip(self.ops, self.adapts)):
            x = _subsample(op(inputs[j], training=training), self.post_strides[j])
            paths.append(adapt(x, training=training) if adapt is not None else x)
        for j in self.resized:
            paths[j] = self.resize_layer([paths[j], paths[self.reference]])
        return self.aggregation(paths, training=training)

    def compute_output_shape(self, input_shape):
        return (input_shape[0][0], None, None, self.channels)

    def get_config(self):
        return {
            **super().get_config(),
            "template": self.template,
            "filters": list(self.filters),
            "strides": self.strides,
            "input_strides": list(self.input_strides),
            "resize": self.resize,
            "repeats": self.repeats,
        }


__all__ = [
    "AGGREGATIONS",
    "TEMPLATE_OPS",
    "ConcatReduce",
    "ParamSum",
    "PoolConv",
    "StridedSepConv",
    "Template",
    "TileSkip",
    "template_op",
]
