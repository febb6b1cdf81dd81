"""Ops of Table 4 (seed 000) and the resize layer: shapes, behaviour, save/load round-trip."""

import keras
import numpy as np
import pytest

from tfnas import ops

FILTERS = 4


@pytest.fixture(scope="module")
def batch():
    return np.random.default_rng(0).normal(size=(2, 12, 10, FILTERS)).astype("float32")


@pytest.mark.parametrize("name", sorted(ops.OPS))
def test_op_keeps_shape_and_round_trips_through_keras_file(name, batch, tmp_path):
    inputs = keras.Input((None, None, FILTERS))
    model = keras.Model(inputs, ops.make_op(name, FILTERS, name="op")(inputs))
    out = model.predict(batch, verbose=0)
    assert out.shape == batch.shape
    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded.predict(batch, verbose=0), out, atol=1e-6)


def test_cell_op_table_matches_table_4():
    assert ops.CELL_OPS == (
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


def test_skip_zero_and_gap_compute_what_they_say(batch):
    np.testing.assert_array_equal(ops.make_op("skip", FILTERS)(batch), batch)
    assert not np.any(ops.make_op("zero", FILTERS)(batch))
    gap = np.asarray(ops.make_op("gap", FILTERS)(batch))
    # One value per image and channel, broadcast over space.
    np.testing.assert_allclose(gap, np.broadcast_to(gap[:, :1, :1, :], gap.shape))


def test_op_weights_follow_the_authors_layout():
    sep = ops.make_op("sep5x5_rate6", 8)
    sep.build((None, 16, 16, 8))
    # (depthwise 5x5, pointwise 8x8, BN) twice; BN has gamma, beta, mean, variance.
    shapes = [tuple(w.shape) for w in sep.weights]
    assert shapes.count((5, 5, 8, 1)) == 2 and shapes.count((1, 1, 8, 8)) == 2
    assert sep.units[0][0].dilation_rate == (6, 6)
    conv = ops.make_op("conv3x3_rate12", 8)
    conv.build((None, 16, 16, 8))
    assert conv.conv.dilation_rate == (12, 12) and not conv.conv.use_bias


def test_resize_like_matches_reference_size():
    x = np.random.default_rng(1).normal(size=(1, 3, 5, 2)).astype("float32")
    ref = np.zeros((1, 12, 20, 7), "float32")
    y = ops.ResizeLike()([x, ref])
    assert tuple(y.shape) == (1, 12, 20, 2)
    np.testing.assert_allclose(np.asarray(ops.ResizeLike()([x, x])), x, atol=1e-6)


def test_unknown_op_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown op 'sep7x7'"):
        ops.make_op("sep7x7", 4)
