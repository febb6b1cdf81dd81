"""Primitive operations of the searched cells as Keras layers, and the registry of op names.

The op set is Table 4 of Nekrasov et al. (CVPR 2019); the template space of Nekrasov et al.
(WACV 2020) adds a 3x3 max-pool. Every op maps `filters` channels to `filters` channels at the
same resolution, so any op can stand at any place of a cell. Following the authors' code, a
separable convolution is (depthwise, pointwise, BN, ReLU) twice, and a plain convolution is
conv-BN-ReLU.

    >>> op = make_op("sep5x5_rate6", filters=48)
    >>> y = op(keras.random.normal((1, 32, 32, 48)))   # (1, 32, 32, 48)
"""

import keras
import tensorflow as tf

_PACKAGE = "tfnas"


def _pair(value):
    return tuple(value) if isinstance(value, (list, tuple)) else (value, value)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ConvBN(keras.layers.Layer):
    """Convolution, batch normalisation and (optionally) ReLU.

    Args:
        filters: int, output channels.
        kernel_size: int or pair, default 1.
        dilation_rate: int or pair, default 1 (atrous convolution when > 1).
        strides: int or pair, default 1.
        activation: bool, whether to end with ReLU. Default True.

    Input shape: `(N, H, W, C)`. Output shape: `(N, H / strides, W / strides, filters)`.
    """

    def __init__(self, filters, kernel_size=1, dilation_rate=1, strides=1, activation=True, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size)
        self.dilation_rate = _pair(dilation_rate)
        self.strides = _pair(strides)
        self.activation = bool(activation)
        self.conv = keras.layers.Conv2D(
            self.filters,
            self.kernel_size,
            strides=self.strides,
            dilation_rate=self.dilation_rate,
            padding="same",
            use_bias=False,
            name="conv",
        )
        self.bn = keras.layers.BatchNormalization(name="bn")

    def build(self, input_shape):
        self.conv.build(input_shape)
        self.bn.build(self.conv.compute_output_shape(input_shape))

    def call(self, inputs, training=None):
        x = self.bn(self.conv(inputs), training=training)
        return keras.ops.relu(x) if self.activation else x

    def compute_output_shape(self, input_shape):
        return self.conv.compute_output_shape(input_shape)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "dilation_rate": self.dilation_rate,
            "strides": self.strides,
            "activation": self.activation,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SepConv(keras.layers.Layer):
    """Separable convolution: (depthwise, pointwise, BN, ReLU) repeated `repeats` times.

    Args:
        filters: int, output channels.
        kernel_size: int or pair, depthwise kernel size.
        dilation_rate: int or pair, depthwise dilation; a pair `(r_h, r_w)` gives the
            rectangular atrous rates of the Dense Prediction Cell. Default 1.
        repeats: int, how many (depthwise, pointwise, BN, ReLU) units. Default 2, as in the
            authors' code for the CVPR/WACV spaces.

    Input shape: `(N, H, W, C)`. Output shape: `(N, H, W, filters)`.
    """

    def __init__(self, filters, kernel_size=3, dilation_rate=1, repeats=2, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = _pair(kernel_size)
        self.dilation_rate = _pair(dilation_rate)
        self.repeats = int(repeats)
        self.units = []
        for i in range(self.repeats):
            self.units.append(
                (
                    keras.layers.DepthwiseConv2D(
                        self.kernel_size,
                        dilation_rate=self.dilation_rate,
                        padding="same",
                        use_bias=False,
                        name=f"depthwise_{i}",
                    ),
                    keras.layers.Conv2D(self.filters, 1, use_bias=False, name=f"pointwise_{i}"),
                    keras.layers.BatchNormalization(name=f"bn_{i}"),
                )
            )

    def build(self, input_shape):
        shape = input_shape
        for depthwise, pointwise, bn in self.units:
            depthwise.build(shape)
            pointwise.build(shape)
            shape = pointwise.compute_output_shape(shape)
            bn.build(shape)

    def call(self, inputs, training=None):
        x = inputs
        for depthwise, pointwise, bn in self.units:
            x = keras.ops.relu(bn(pointwise(depthwise(x)), training=training))
        return x

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": self.kernel_size,
            "dilation_rate": self.dilation_rate,
            "repeats": self.repeats,
        }


@keras.saving.register_keras_serializable(package=_PACKAGE)
class GlobalPoolConv(keras.layers.Layer):
    """Global average pooling, 1x1 conv-BN-ReLU, and upsampling back to the input size.

    Upsampling a 1x1 map bilinearly is a broadcast, so it is written as one (it exports to
    SavedModel and converts to ONNX with dynamic spatial sizes).

    Args:
        filters: int, output channels.

    Input shape: `(N, H, W, C)`. Output shape: `(N, H, W, filters)`.
    """

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.conv = ConvBN(self.filters, 1, name="conv_bn")

    def build(self, input_shape):
        self.conv.build((input_shape[0], 1, 1, input_shape[-1]))

    def call(self, inputs, training=None):
        pooled = keras.ops.mean(inputs, axis=(1, 2), keepdims=True)
        pooled = self.conv(pooled, training=training)
        return pooled + keras.ops.zeros_like(inputs[..., :1])

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Identity(keras.layers.Layer):
    """The skip connection: returns its input."""

    def call(self, inputs):
        return inputs


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Zero(keras.layers.Layer):
    """The zero operation: nullifies the path (zeros shaped like the input)."""

    def call(self, inputs):
        return keras.ops.zeros_like(inputs)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ResizeLike(keras.layers.Layer):
    """Bilinear resize of `x` to the spatial size of a reference tensor: `[x, ref] -> x'`.

    Used instead of `UpSampling2D(interpolation="bilinear")`, which in Keras 3.15 fails to
    export when the spatial size is dynamic (see DESIGN.md). Works for up- and down-sampling.

    Input shape: a list `[(N, h, w, C), (N, H, W, ...)]`. Output shape: `(N, H, W, C)`.
    """

    def call(self, inputs):
        x, ref = inputs
        size = tf.shape(ref)[1:3]
        return tf.cast(tf.image.resize(x, size, method="bilinear"), x.dtype)

    def compute_output_shape(self, input_shape):
        x_shape, ref_shape = input_shape
        return (x_shape[0], ref_shape[1], ref_shape[2], x_shape[-1])


# Op names to factories `(filters, name) -> layer`. Table 4 of Nekrasov et al. (CVPR 2019), plus max-pool (Nekrasov et al., WACV 2020).
OPS = {
    "conv1x1": lambda f, name=None: ConvBN(f, 1, name=name),
    "conv3x3": lambda f, name=None: ConvBN(f, 3, name=name),
    "sep3x3": lambda f, name=None: SepConv(f, 3, name=name),
    "sep5x5": lambda f, name=None: SepConv(f, 5, name=name),
    "gap": lambda f, name=None: GlobalPoolConv(f, name=name),
    "conv3x3_rate3": lambda f, name=None: ConvBN(f, 3, dilation_rate=3, name=name),
    "conv3x3_rate12": lambda f, name=None: ConvBN(f, 3, dilation_rate=12, name=name),
    "sep3x3_rate3": lambda f, name=None: SepConv(f, 3, dilation_rate=3, name=name),
    "sep5x5_rate6": lambda f, name=None: SepConv(f, 5, dilation_rate=6, name=name),
    "skip": lambda f, name=None: Identity(name=name),
    "zero": lambda f, name=None: Zero(name=name),
    "maxpool3x3": lambda f, name=None: keras.layers.MaxPooling2D(3, strides=1, padding="same", name=name),
}

#: The 11 cell ops of Nekrasov et al. (CVPR 2019) in the order of Table 4 (index = the genotype's op index).
CELL_OPS = (
    "conv1x1",
    "conv3x3",
    "sep3x3",
    "sep5x5",
    "gap",
    "conv3x3_rate3",
    "conv3x3_rate12",
    "sep3x3_rate3",
    "sep5x5_rate6",
    "skip",
    "zero",
)


def make_op(op, filters, name=None):
    """Builds the op layer registered under `op`.

    Args:
        op: str, a key of `OPS`.
        filters: int, channels in and out.
        name: optional layer name.

    Returns:
        A Keras layer mapping `(N, H, W, filters)` to `(N, H, W, filters)`.

    Raises:
        ValueError: if `op` is not a registered op name.
    """
    if op not in OPS:
        raise ValueError(f"unknown op {op!r}; expected one of {sorted(OPS)}")
    return OPS[op](filters, name=name)
