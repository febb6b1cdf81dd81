"""The Choice layer (tfnas.choice): index mode, weighted mode, serialization, no retracing."""

import keras
import numpy as np
import tensorflow as tf

from tfnas.choice import Choice, Take, ZerosLike
from tfnas.ops import ConvBN, Identity, SepConv


class Counting(keras.layers.Layer):
    """Multiplies by `factor` and counts its (eager) calls."""

    def __init__(self, factor, **kwargs):
        super().__init__(**kwargs)
        self.factor = float(factor)
        self.calls = 0

    def call(self, inputs):
        self.calls += 1
        return inputs * self.factor

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


def _x(shape=(2, 6, 6, 4), seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def test_index_mode_runs_only_the_chosen_candidate():
    candidates = [Counting(f) for f in (1.0, 2.0, 3.0)]
    choice = Choice(candidates)
    x = _x()
    for index, factor in [(0, 1.0), (2, 3.0), (1, 2.0)]:
        choice.index.assign(index)
        np.testing.assert_array_equal(choice(x), x * factor)
    assert [c.calls for c in candidates] == [1, 1, 1]


def test_choice_among_inputs_and_routes():
    a, b = _x(seed=1), _x((2, 3, 3, 4), seed=2)
    pick = Choice()
    pick.index.assign(1)
    np.testing.assert_array_equal(pick([a, b]), b)
    routed = Choice([Counting(2.0), Counting(-1.0)], routes=[1, 0])
    routed.index.assign(0)
    np.testing.assert_array_equal(routed([a, b]), 2 * b)
    routed.index.assign(1)
    np.testing.assert_array_equal(routed([a, b]), -a)
    masks = Choice([ZerosLike(1), Take(0)])
    np.testing.assert_array_equal(masks([a, a]), np.zeros_like(a))


def test_weighted_mode_mixes_and_skips_zero_weights():
    candidates = [Counting(f) for f in (1.0, 2.0, 3.0)]
    choice = Choice(candidates)
    x = _x()
    # 0.25 * x + 0.75 * 3x = 2.5x; the zero-weight candidate is never called.
    np.testing.assert_allclose(choice(x, mixture=[0.25, 0.0, 0.75]), 2.5 * x, rtol=1e-6)
    assert [c.calls for c in candidates] == [1, 0, 1]
    # One-hot weights are the index mode.
    choice.index.assign(1)
    np.testing.assert_allclose(choice(x, mixture=[0.0, 1.0, 0.0]), choice(x), rtol=1e-6)


def test_weighted_mode_passes_straight_through_gradients():
    choice = Choice([Counting(1.0), Counting(2.0), Counting(3.0)])
    x = _x()
    logits = tf.Variable([0.1, 0.5, 0.2])
    with tf.GradientTape() as tape:
        soft = tf.nn.softmax(logits)
        hard = tf.one_hot(tf.argmax(soft), 3)
        weights = hard - tf.stop_gradient(soft) + soft  # forward: one-hot; backward: softmax
        y = choice(x, mixture=weights)
        loss = tf.reduce_sum(y)
    np.testing.assert_allclose(y, 2 * x, rtol=1e-6)
    grad = tape.gradient(loss, logits).numpy()
    # d loss / d w_1 = sum(2x); through the softmax every logit gets a gradient.
    s, g1 = tf.nn.softmax(logits).numpy(), 2 * x.sum()
    expected = g1 * s[1] * (np.eye(3)[1] - s)
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-4)


def test_choice_round_trips_through_a_keras_file(tmp_path):
    inputs = keras.Input((None, None, 4))
    choice = Choice([ConvBN(4, 1, name="conv"), SepConv(4, 3, name="sep"), Identity(name="skip")], name="op")
    model = keras.Model(inputs, choice(inputs))
    model.get_layer("op").index.assign(1)
    x = _x()
    path = tmp_path / "choice.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert int(loaded.get_layer("op").index.numpy()) == 1
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)


def test_a_tf_function_traces_once_across_indices():
    choice = Choice([ConvBN(4, 1), SepConv(4, 3), Identity()])
    x = _x()
    choice(x)
    step = tf.function(lambda t: choice(t, training=True))
    outputs = []
    for index in (0, 1, 2, 1):
        choice.index.assign(index)
        outputs.append(step(x).numpy())
    assert step.experimental_get_tracing_count() == 1
    np.testing.assert_array_equal(outputs[2], x)
    assert not np.allclose(outputs[0], outputs[1])
    # A choice among inputs (routes) switches without retracing too.
    a, b = _x(seed=1), _x(seed=2)
    routed = Choice([Counting(2.0), Counting(-1.0)], routes=[1, 0])
    route = tf.function(lambda p, q: routed([p, q]))
    got = []
    for index in (0, 1, 0):
        routed.index.assign(index)
        got.append(route(a, b).numpy())
    assert route.experimental_get_tracing_count() == 1
    np.testing.assert_array_equal(got[0], 2 * b)
    np.testing.assert_array_equal(got[1], -a)
