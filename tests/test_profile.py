"""Tests for tfnas.profile: parameter counts, graph-counted multiply-adds, latency."""

import keras
import pytest
import tensorflow as tf

from tfnas.profile import format_profile, latency, madds, params, profile


def single_layer(layer, input_shape=(8, 8, 3)):
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, layer(inputs))


# Input 8x8x3, 3x3 kernels. Output sizes: same s1 -> 8, same s2 -> 4, valid s2 -> 3.
@pytest.mark.parametrize(
    "padding, strides, out", [("same", 1, 8), ("same", 2, 4), ("valid", 2, 3), ("valid", 1, 6)]
)
def test_conv_layers_match_formula(padding, strides, out):
    conv = keras.layers.Conv2D(4, 3, strides=strides, padding=padding)
    assert madds(single_layer(conv), (8, 8, 3)) == out * out * 3 * 3 * 3 * 4
    depthwise = keras.layers.DepthwiseConv2D(3, strides=strides, padding=padding, depth_multiplier=2)
    assert madds(single_layer(depthwise), (8, 8, 3)) == out * out * 3 * 3 * 3 * 2
    separable = keras.layers.SeparableConv2D(5, 3, strides=strides, padding=padding)
    # depthwise 3x3 on 3 channels + pointwise 3 -> 5
    assert madds(single_layer(separable), (8, 8, 3)) == out * out * (3 * 3 * 3 + 3 * 5)


def test_dilated_convs_count_like_undilated():
    # TF runs these as SpaceToBatch -> conv -> BatchToSpace on a padded 4x4 grid per block;
    # the count must still be H_out * W_out * K_h * K_w * C_in (* C_out).
    conv = keras.layers.Conv2D(4, 3, padding="same", dilation_rate=2)
    assert madds(single_layer(conv, (7, 7, 3)), (7, 7, 3)) == 7 * 7 * 9 * 3 * 4
    depthwise = keras.layers.DepthwiseConv2D(3, padding="same", dilation_rate=2)
    assert madds(single_layer(depthwise, (7, 7, 3)), (7, 7, 3)) == 7 * 7 * 9 * 3


@pytest.mark.parametrize(
    "layer, expected",
    [
        (keras.layers.AveragePooling2D(2), 4 * 4 * 3 * 2 * 2),  # valid, stride 2: 4x4 out
        (keras.layers.AveragePooling2D(3, strides=2, padding="same"), 4 * 4 * 3 * 3 * 3),
        (keras.layers.AveragePooling2D(3, strides=1, padding="valid"), 6 * 6 * 3 * 3 * 3),
        (keras.layers.MaxPooling2D(3, strides=2, padding="valid"), 3 * 3 * 3 * 3 * 3),
        (keras.layers.GlobalAveragePooling2D(), 8 * 8 * 3),
        (keras.layers.Dense(7), 8 * 8 * 3 * 7),  # per-pixel dense: in * out per position
    ],
)
def test_pooling_and_dense_match_formula(layer, expected):
    assert madds(single_layer(layer), (8, 8, 3)) == expected


def test_small_functional_model_is_the_sum_of_its_layers():
    inputs = keras.Input((16, 16, 3))
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same")(inputs)  # 8x8x8
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    branch = keras.layers.DepthwiseConv2D(3, padding="same")(x)  # 8x8x8
    x = keras.layers.Add()([x, keras.layers.Conv2D(8, 1)(branch)])  # 8x8x8
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(10)(x)
    model = keras.Model(inputs, outputs)
    expected = (
        8 * 8 * 3 * 3 * 3 * 8  # strided conv
        + 8 * 8 * 3 * 3 * 8  # depthwise
        + 8 * 8 * 8 * 8  # 1x1 conv
        + 8 * 8 * 8  # global average pooling
        + 8 * 10  # dense
    )
    assert madds(model, (16, 16, 3)) == expected
    # a flattening dense head on the same layers counts in * out
    flat = keras.Model(inputs, keras.layers.Dense(5)(keras.layers.Flatten()(inputs)))
    assert madds(flat, (16, 16, 3)) == 16 * 16 * 3 * 5


class FunctionConv(keras.layers.Layer):
    """A layer whose call is a tf.function: traced as a nested StatefulPartitionedCall."""

    def build(self, input_shape):
        self.kernel = self.add_weight(shape=(3, 3, input_shape[-1], 4))

    @tf.function
    def call(self, x):
        return tf.nn.conv2d(x, self.kernel, 1, "SAME")


def test_nested_function_calls_are_inlined_and_counted():
    model = single_layer(FunctionConv(), (None, None, 3))
    assert madds(model, (8, 8, 3)) == 8 * 8 * 9 * 3 * 4


def test_madds_rejects_bad_input_shape():
    model = single_layer(keras.layers.Conv2D(4, 3))
    with pytest.raises(ValueError, match=r"input_shape must be \(H, W, C\)"):
        madds(model, (None, 8, 3))
    with pytest.raises(ValueError, match=r"input_shape must be \(H, W, C\)"):
        madds(model, (8, 8))


def test_params_trainable_and_batchnorm_statistics():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3)(inputs)  # 3*3*3*4 + 4 = 112 trainable
    x = keras.layers.BatchNormalization()(x)  # gamma, beta 8 trainable; mean, var 8 not
    shared = keras.layers.Dense(2)  # 4*2 + 2 = 10, used twice, counted once
    outputs = keras.layers.Add()([shared(x), shared(x)])
    counts = params(keras.Model(inputs, outputs))
    assert counts == {"trainable": 112 + 8 + 10, "non_trainable": 8, "total": 138}


def test_latency_and_profile():
    model = single_layer(keras.layers.Conv2D(4, 3, padding="same"))
    mean_ms, std_ms = latency(model, (8, 8, 3), runs=3, warmup=1)
    assert isinstance(mean_ms, float) and isinstance(std_ms, float)
    assert mean_ms > 0 and std_ms >= 0
    with pytest.raises(ValueError, match="runs=0"):
        latency(model, (8, 8, 3), runs=0)

    result = profile(model, (8, 8, 3), runs=2)
    assert result["params"] == result["trainable_params"] == 3 * 3 * 3 * 4 + 4
    assert result["madds"] == 8 * 8 * 9 * 3 * 4
    assert result["latency_ms"] > 0
    assert format_profile(result).startswith("112 params, 6.91 K mult-adds @8x8, ")


def test_format_profile():
    result = {
        "params": 2_610_000,
        "madds": 4_470_000_000,
        "latency_ms": 12.34,
        "latency_std_ms": 0.41,
        "input_shape": [512, 512, 3],
    }
    assert format_profile(result) == "2.61 M params, 4.47 G mult-adds @512x512, 12.3 +- 0.4 ms"
    result["latency_ms"] = None
    assert format_profile(result) == "2.61 M params, 4.47 G mult-adds @512x512"
