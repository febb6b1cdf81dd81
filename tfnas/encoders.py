"""Encoders (backbones) with named feature taps for the decoder spaces.

MobileNetV2 is written out here, with the layer names of `keras.applications.MobileNetV2`, so
that it can (a) stop at any stage, (b) run at output stride 16 or 8 with atrous depthwise
convolutions (the Dense Prediction Cell runs at output stride 16), and (c) still load the
applications' weights, which are copied over by layer name. The taps of the CVPR 2019
decoder are the outputs of inverted-residual stages 1, 2, 4 and 6 (24, 32, 96 and 320
channels at width 1.0, strides 4, 8, 16 and 32).

    >>> encoder = mobilenet_v2(alpha=0.35)
    >>> [t.shape[-1] for t in encoder.outputs]   # [8, 16, 32, 112]
"""

import os

import keras

# (expansion, channels, repeats, stride) of the seven inverted-residual stages.
_MOBILENET_V2_STAGES = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)

#: Stages tapped by default (Nekrasov et al. (CVPR 2019): "layers 2, 3, 6, 8" of the authors' MobileNetV2).
MOBILENET_V2_TAPS = (1, 2, 4, 6)


def _make_divisible(value, divisor=8):
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * value else new


def _bn(name):
    return keras.layers.BatchNormalization(epsilon=1e-3, momentum=0.999, name=name)


def _inverted_residual(x, filters, expansion, stride, dilation, block_id):
    in_channels = x.shape[-1]
    prefix = f"block_{block_id}_" if block_id else "expanded_conv_"
    inputs = x
    if block_id:
        x = keras.layers.Conv2D(expansion * in_channels, 1, use_bias=False, name=prefix + "expand")(x)
        x = _bn(prefix + "expand_BN")(x)
        x = keras.layers.ReLU(6.0, name=prefix + "expand_relu")(x)
    x = keras.layers.DepthwiseConv2D(
        3, strides=stride, dilation_rate=dilation, padding="same", use_bias=False, name=prefix + "depthwise"
    )(x)
    x = _bn(prefix + "depthwise_BN")(x)
    x = keras.layers.ReLU(6.0, name=prefix + "depthwise_relu")(x)
    x = keras.layers.Conv2D(filters, 1, use_bias=False, name=prefix + "project")(x)
    x = _bn(prefix + "project_BN")(x)
    if in_channels == filters and stride == 1:
        x = keras.layers.Add(name=prefix + "add")([inputs, x])
    return x


def mobilenet_v2(
    alpha=1.0,
    weights=None,
    output_stride=32,
    taps=MOBILENET_V2_TAPS,
    input_shape=(None, None, 3),
    name="encoder",
):
    """MobileNetV2 returning the outputs of the tapped inverted-residual stages.

    Args:
        alpha: float, width multiplier. Default 1.0.
        weights: `None` (random init), `"imagenet"` (downloaded by Keras; needs a network), or
            the path of a weights file saved from
            `keras.applications.MobileNetV2(include_top=False, alpha=alpha)`.
        output_stride: 32 (default), 16 or 8. Below 32, the later strided stages keep the
            resolution and dilate their depthwise convolutions instead.
        taps: stage indices (0..6) whose outputs are returned, in order.
        input_shape: default `(None, None, 3)`: any image size.
        name: model name.

    Returns:
        A `keras.Model` mapping float32 images in [-1, 1] to a list of feature maps; its
        attribute `tap_strides` lists each tap's stride relative to the input.

    Raises:
        ValueError: for an unsupported output stride or tap index.
        FileNotFoundError: if `weights` is a path that does not exist.
    """
    if output_stride not in (8, 16, 32):
        raise ValueError(f"output_stride {output_stride!r} is not supported; expected 8, 16 or 32")
    bad = [t for t in taps if not 0 <= t < len(_MOBILENET_V2_STAGES)]
    if bad or not taps:
        raise ValueError(f"taps {tuple(taps)!r} must be stage indices in 0..6")
    inputs = keras.Input(input_shape, name="image")
    x = keras.layers.Conv2D(
        _make_divisible(32 * alpha), 3, strides=2, padding="same", use_bias=False, name="Conv1"
    )(inputs)
    x = _bn("bn_Conv1")(x)
    x = keras.layers.ReLU(6.0, name="Conv1_relu")(x)
    stride, dilation, block_id = 2, 1, 0
    outputs, strides = [], []
    for stage, (expansion, channels, repeats, first_stride) in enumerate(_MOBILENET_V2_STAGES):
        filters = _make_divisible(channels * alpha)
        for i in range(repeats):
            s = first_stride if i == 0 else 1
            if s == 2 and stride >= output_stride:
                s, dilation = 1, dilation * 2
            elif s == 2:
                stride *= 2
            x = _inverted_residual(x, filters, expansion, s, dilation if s == 1 else 1, block_id)
            block_id += 1
        if stage in taps:
            outputs.append(x)
            strides.append(stride)
        if stage >= max(taps):
            break
    model = keras.Model(inputs, outputs, name=name)
    model.tap_strides = strides
    if weights is not None:
        _load_application_weights(model, weights, alpha)
    return model


def _load_application_weights(model, weights, alpha):
    """Copies weights from `keras.applications.MobileNetV2` into `model` by layer name."""
    if weights != "imagenet" and not os.path.exists(weights):
        raise FileNotFoundError(
            f"encoder weights file {weights!r} does not exist; pass None, 'imagenet' or the path "
            f"of weights saved from keras.applications.MobileNetV2(include_top=False, alpha={alpha})"
        )
    source = keras.applications.MobileNetV2(
        input_shape=(224, 224, 3),
        alpha=alpha,
        include_top=False,
        weights="imagenet" if weights == "imagenet" else None,
    )
    if weights != "imagenet":
        source.load_weights(weights)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights(source.get_layer(layer.name).get_weights())


def save_application_weights(model, path, alpha):
    """Saves a tfnas MobileNetV2 encoder as `keras.applications.MobileNetV2` weights (by layer name).

    The inverse of what `mobilenet_v2(weights=path)` loads, so a file written here is read
    like any MobileNetV2 weights file; layers the encoder does not have (a stage past its
    last tap, the final 1x1 `Conv_1`) keep their initial values.
    """
    target = keras.applications.MobileNetV2(
        input_shape=(224, 224, 3), alpha=alpha, include_top=False, weights=None
    )
    for layer in model.layers:
        if layer.weights:
            target.get_layer(layer.name).set_weights(layer.get_weights())
    target.save_weights(path)


def resnet50(weights=None, input_shape=(None, None, 3), name="encoder"):
    """ResNet-50 from `keras.applications` with taps at strides 4, 8, 16 and 32.

    Args:
        weights: `None`, `"imagenet"` or a weights-file path, as `keras.applications.ResNet50`.
        input_shape: default `(None, None, 3)`.
        name: model name.

    Returns:
        A `keras.Model` (image -> list of 4 feature maps, 256/512/1024/2048 channels) with
        `tap_strides = [4, 8, 16, 32]`. Note: Keras' ResNet-50 expects caffe-style inputs;
        tfnas feeds it [-1, 1] images, which is fine when training from scratch.
    """
    base = keras.applications.ResNet50(include_top=False, weights=weights, input_shape=input_shape)
    names = ("conv2_block3_out", "conv3_block4_out", "conv4_block6_out", "conv5_block3_out")
    model = keras.Model(base.input, [base.get_layer(n).output for n in names], name=name)
    model.tap_strides = [4, 8, 16, 32]
    return model


ENCODERS = {"mobilenetv2": mobilenet_v2, "resnet50": resnet50}


def build_encoder(name, **kwargs):
    """Builds a registered encoder by name (`"mobilenetv2"` or `"resnet50"`).

    Raises:
        ValueError: for an unknown encoder name.
    """
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; expected one of {sorted(ENCODERS)}")
    return ENCODERS[name](**kwargs)
