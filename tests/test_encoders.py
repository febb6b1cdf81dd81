"""MobileNetV2 encoder: taps, strides, output stride, weights copied from keras.applications."""

import keras
import numpy as np
import pytest

from tfnas import encoders


def test_taps_channels_and_strides_follow_the_paper():
    enc = encoders.mobilenet_v2()
    assert [t.shape[-1] for t in enc.outputs] == [24, 32, 96, 320]
    assert enc.tap_strides == [4, 8, 16, 32]
    outs = enc(np.zeros((1, 64, 96, 3), "float32"))
    assert [tuple(o.shape[1:3]) for o in outs] == [(16, 24), (8, 12), (4, 6), (2, 3)]
    # Same parameters as keras.applications without its final 1x1 conv to 1280 (+ BN).
    app = keras.applications.MobileNetV2(input_shape=(96, 96, 3), include_top=False, weights=None)
    top = app.get_layer("Conv_1").count_params() + app.get_layer("Conv_1_bn").count_params()
    assert enc.count_params() == app.count_params() - top


def test_output_stride_16_dilates_instead_of_striding():
    enc = encoders.mobilenet_v2(alpha=0.35, output_stride=16, taps=(6,))
    assert enc.tap_strides == [16]
    (out,) = keras.tree.flatten(enc(np.zeros((1, 64, 64, 3), "float32")))
    assert tuple(out.shape) == (1, 4, 4, 112)
    assert enc.get_layer("block_16_depthwise").dilation_rate == (2, 2)


def test_weights_from_a_local_file_are_copied_by_layer_name(tmp_path):
    app = keras.applications.MobileNetV2(input_shape=(96, 96, 3), alpha=0.35, include_top=False, weights=None)
    path = tmp_path / "mnv2.weights.h5"
    app.save_weights(path)
    enc = encoders.mobilenet_v2(alpha=0.35, weights=str(path))
    for name in ("Conv1", "block_5_project", "block_16_expand_BN"):
        for a, b in zip(enc.get_layer(name).get_weights(), app.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)


def test_bad_arguments_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.h5"):
        encoders.mobilenet_v2(weights=str(tmp_path / "missing.h5"))
    with pytest.raises(ValueError, match="output_stride 4"):
        encoders.mobilenet_v2(output_stride=4)
    with pytest.raises(ValueError, match="unknown encoder 'vgg'"):
        encoders.build_encoder("vgg")
