"""The Choice layer (tfnas.choice): index mode, weighted mode, serialization, no retracing."""

import gc

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfnas.choice import Choice, Take, ZerosLike
from tfnas.ops import ConvBN, GlobalPoolConv, Identity, ResizeLike, SepConv, Zero


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


# --- tracing="shared" (one out-of-line function per family) against the inline Case -------


class Tally(keras.layers.Layer):
    """Adds `factor`; counts its runs in a non-trainable variable (state updated in call)."""

    def __init__(self, factor, **kwargs):
        super().__init__(**kwargs)
        self.factor = float(factor)

    def build(self, input_shape):
        self.runs = self.add_weight(shape=(), initializer="zeros", trainable=False, name="runs")

    def call(self, inputs):
        self.runs.assign_add(1.0)
        return inputs + self.factor

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


def _set_tracing(layer, tracing):
    for sub in layer._flatten_layers(include_self=True, recursive=True):
        if isinstance(sub, Choice):
            sub.tracing = tracing


def _traced_step(layer, inputs, tracing, index):
    """Loss, gradients of the inputs and of every trainable variable, and the non-trainable
    values after one traced training step through `tracing`; the weights are restored."""
    initial = [v.numpy() for v in layer.weights]
    _set_tracing(layer, tracing)
    layer.index.assign(index)
    inputs = tf.nest.map_structure(tf.constant, inputs)
    # Unknown spatial sizes, as in a supernet (candidates may give outputs of several sizes).
    spec = tf.nest.map_structure(lambda t: tf.TensorSpec((None, None, None, t.shape[-1]), t.dtype), inputs)

    @tf.function(input_signature=[spec])
    def step(inputs):
        with tf.GradientTape() as tape:
            tape.watch(inputs)
            y = layer(inputs, training=True)
            loss = tf.reduce_sum(tf.sin(y) * y)
        return loss, tape.gradient(
            loss, [inputs, layer.trainable_variables], unconnected_gradients=tf.UnconnectedGradients.ZERO
        )

    loss, (input_grads, variable_grads) = step(inputs)
    result = {
        "loss": float(loss),
        "inputs": [g.numpy() for g in tf.nest.flatten(input_grads)],
        "variables": {v.path: g.numpy() for v, g in zip(layer.trainable_variables, variable_grads)},
        "state": {v.path: v.numpy() for v in layer.non_trainable_variables if v is not layer.index},
    }
    for variable, value in zip(layer.weights, initial):
        variable.assign(value)
    return result


def _assert_same_step(shared, inline):
    np.testing.assert_allclose(shared["loss"], inline["loss"], rtol=1e-5)
    for got, want in zip(shared["inputs"], inline["inputs"]):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * max(1.0, np.abs(want).max()))
    assert shared["variables"].keys() == inline["variables"].keys()
    for path, want in inline["variables"].items():
        scale = max(1.0, np.abs(want).max())
        np.testing.assert_allclose(
            shared["variables"][path], want, rtol=1e-5, atol=1e-5 * scale, err_msg=path
        )
    assert shared["state"].keys() == inline["state"].keys()
    for path, want in inline["state"].items():
        np.testing.assert_array_equal(shared["state"][path], want, err_msg=path)


def test_shared_tracing_matches_the_inline_case_for_ops_with_batch_norm():
    keras.utils.set_random_seed(0)
    choice = Choice([ConvBN(4, 1), SepConv(4, 3), GlobalPoolConv(4), Identity(), Zero()])
    x = _x()
    choice(x)
    owned = [{v.path for v in c.trainable_variables} for c in choice.candidates]
    for index in range(len(choice.candidates)):
        shared = _traced_step(choice, x, "shared", index)
        inline = _traced_step(choice, x, "inline", index)
        _assert_same_step(shared, inline)
        # Unchosen candidates get exactly zero gradients; the chosen one (with weights) does not.
        for path, grad in shared["variables"].items():
            if path not in owned[index]:
                np.testing.assert_array_equal(grad, np.zeros_like(grad), err_msg=path)
        if owned[index]:
            assert any(np.abs(shared["variables"][p]).max() > 0 for p in owned[index])
        assert np.abs(shared["inputs"][0]).max() > 0 or index == 4  # Zero cuts the input's gradient
    # Inference (training=False, no tape) through the shared function: the inline outputs.
    choice.index.assign(1)
    outputs = {}
    for tracing in ("shared", "inline"):
        choice.tracing = tracing
        outputs[tracing] = tf.function(lambda t: choice(t, training=False))(x).numpy()
    np.testing.assert_allclose(outputs["shared"], outputs["inline"], rtol=1e-5, atol=1e-6)


def test_shared_tracing_matches_the_inline_case_for_a_choice_among_inputs():
    a, b = _x(seed=1), _x((2, 3, 3, 4), seed=2)
    pick = Choice()
    pick([a, b])
    for index in (0, 1):
        shared = _traced_step(pick, [a, b], "shared", index)
        inline = _traced_step(pick, [a, b], "inline", index)
        _assert_same_step(shared, inline)
        chosen = (a, b)[index]
        np.testing.assert_allclose(
            shared["inputs"][index], np.sin(chosen) + chosen * np.cos(chosen), rtol=1e-5
        )
        np.testing.assert_array_equal(shared["inputs"][1 - index], np.zeros_like((a, b)[1 - index]))


def test_shared_tracing_matches_the_inline_case_with_routes_and_list_candidates():
    keras.utils.set_random_seed(1)
    a, b = _x(seed=3), _x((2, 3, 3, 4), seed=4)
    routed = Choice([ConvBN(4, 1), SepConv(4, 3), Identity()], routes=[1, 0, 1])
    routed([a, b])
    for index in range(3):
        shared = _traced_step(routed, [a, b], "shared", index)
        inline = _traced_step(routed, [a, b], "inline", index)
        _assert_same_step(shared, inline)
        unread = 1 - routed.routes[index]
        np.testing.assert_array_equal(shared["inputs"][unread], np.zeros_like(shared["inputs"][unread]))
    # Candidates on the whole list input (a block's align and collect choices).
    masks = Choice([ZerosLike(1), Take(0), ResizeLike()])
    masks([b, a])
    for index in range(3):
        _assert_same_step(
            _traced_step(masks, [b, a], "shared", index), _traced_step(masks, [b, a], "inline", index)
        )


def test_shared_tracing_updates_state_once_per_step_and_only_the_chosen_candidate_runs():
    keras.utils.set_random_seed(2)
    x = _x()
    choice = Choice([Tally(1.0), ConvBN(4, 1), Tally(2.0)])
    choice(x)  # eager: the chosen candidate (0) runs once
    reference = Choice([Tally(1.0), ConvBN(4, 1), Tally(2.0)])
    reference(x)
    reference.set_weights(choice.get_weights())
    for layer in (choice, reference):
        layer.index.assign(1)
    step = tf.function(lambda t: choice(t, training=True))
    for _ in range(2):
        step(tf.constant(x))
        reference(x, training=True)  # eager: runs candidate 1 once per call
    # Batch-norm statistics moved as by two eager training calls: updated once per step.
    for got, want in zip(
        choice.candidates[1].non_trainable_variables, reference.candidates[1].non_trainable_variables
    ):
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-6, atol=1e-7)
    assert not np.allclose(choice.candidates[1].bn.moving_mean.numpy(), 0.0)
    choice.index.assign(2)
    step(tf.constant(x))
    step(tf.constant(x))
    assert [float(choice.candidates[k].runs.numpy()) for k in (0, 2)] == [1.0, 2.0]


def test_choices_with_equal_candidates_share_one_traced_function():
    x = _x()
    first = Choice([ConvBN(4, 1), SepConv(4, 3), Identity()])
    second = Choice([ConvBN(4, 1), SepConv(4, 3), Identity()])
    other = Choice([ConvBN(4, 3), Identity()])
    for layer in (first, second, other):
        layer(x)

    @tf.function
    def step(t):
        with tf.GradientTape() as tape:
            y = other(second(first(t, training=True), training=True), training=True)
            loss = tf.reduce_sum(y * y)
        return tape.gradient(loss, first.trainable_variables + second.trainable_variables)

    step(tf.constant(x))
    assert first._program is second._program and first._program is not other._program
    assert first._program.function.experimental_get_tracing_count() == 1
    for concrete in first._program.function._list_all_concrete_functions():
        assert not concrete.graph.captures  # every variable is an argument


def _weighted_step(choice, x, logits, keep, tracing):
    """One traced training step of `choice` in weighted mode with straight-through weights
    (forward `keep`, backward the softmax of `logits`): loss, gradients of the input, of the
    logits and of every trainable variable, and the non-trainable values after the step; the
    weights are restored."""
    initial = [v.numpy() for v in choice.weights]
    choice.tracing = tracing

    @tf.function
    def step(t):
        with tf.GradientTape() as tape:
            tape.watch(t)
            soft = tf.nn.softmax(logits)
            y = choice(t, training=True, mixture=keep + soft - tf.stop_gradient(soft))
            loss = tf.reduce_sum(tf.sin(y) * y)
        grads = tape.gradient(
            loss, [t, logits, choice.trainable_variables], unconnected_gradients=tf.UnconnectedGradients.ZERO
        )
        return loss, grads

    loss, (x_grad, logits_grad, variable_grads) = step(tf.constant(x))
    result = {
        "loss": float(loss),
        "inputs": [x_grad.numpy(), logits_grad.numpy()],
        "variables": {v.path: g.numpy() for v, g in zip(choice.trainable_variables, variable_grads)},
        "state": {v.path: v.numpy() for v in choice.non_trainable_variables if v is not choice.index},
    }
    for variable, value in zip(choice.weights, initial):
        variable.assign(value)
    return result


def test_shared_weighted_mode_matches_the_inline_one_and_runs_only_nonzero_candidates():
    keras.utils.set_random_seed(3)
    x = _x()
    choice = Choice([ConvBN(4, 1), SepConv(4, 3), Tally(2.0), Identity(), Tally(-1.0)])
    choice(x)
    logits = tf.Variable([0.3, -0.2, 0.5, 0.1, 0.0])
    keep = tf.constant([1.0, 0.0, 1.0, 0.0, 0.0])  # Dyn-EGS-like 0/1 weights: ConvBN and Tally(2)
    shared = _weighted_step(choice, x, logits, keep, "shared")
    inline = _weighted_step(choice, x, logits, keep, "inline")
    _assert_same_step(shared, inline)
    # Only the kept candidates ran: the first Tally counted one run, the last none; the
    # skipped SepConv gets no gradient, the kept ConvBN does; every logit gets one (softmax).
    runs = [shared["state"][c.runs.path] for c in (choice.candidates[2], choice.candidates[4])]
    assert runs == [1.0, 0.0]
    sep = {v.path for v in choice.candidates[1].trainable_variables}
    conv = {v.path for v in choice.candidates[0].trainable_variables}
    assert all(not shared["variables"][p].any() for p in sep)
    assert all(shared["variables"][p].any() for p in conv)
    assert np.all(shared["inputs"][1] != 0)
    # Two choices of one family call one traced weighted function.
    twin = Choice([ConvBN(4, 1), SepConv(4, 3), Tally(2.0), Identity(), Tally(-1.0)])
    twin(x)
    choice.tracing = "shared"
    traced = choice._program.weighted.experimental_get_tracing_count()  # the steps above: training=True
    pair = tf.function(lambda t: twin(choice(t, mixture=keep), mixture=keep))
    pair(tf.constant(x))
    assert twin._program is choice._program
    assert choice._program.weighted.experimental_get_tracing_count() == traced + 1  # training=None, once


def test_tracing_argument_is_validated_and_serialized_only_when_not_the_default():
    default = Choice([Identity(), Zero()])
    assert "tracing" not in default.get_config()
    inline = Choice([Identity(), Zero()], tracing="inline")
    assert Choice.from_config(inline.get_config()).tracing == "inline"
    with pytest.raises(ValueError, match="tracing='recompute'"):
        Choice([Identity()], tracing="recompute")


def test_a_shared_function_outlives_the_model_it_was_traced_for():
    """A supernet built after an earlier one is freed still uses the family's function."""
    x = tf.random.normal((2, 8, 8, 8))

    def traced_model():
        choice = Choice([ConvBN(4, 1), ConvBN(4, 3)], name="main")
        inputs = keras.Input((8, 8, 8))
        model = keras.Model(inputs, choice(inputs))
        step = tf.function(lambda x: model(x, training=True))
        return model, step

    first, first_step = traced_model()
    first_step(x)
    second, second_step = traced_model()
    expected = second_step(x).numpy()
    del first, first_step
    gc.collect()
    np.testing.assert_array_equal(second_step(x).numpy(), expected)  # BN in training: same output
    third, third_step = traced_model()  # traced after the prototype's model is gone
    assert third_step(x).shape == (2, 8, 8, 4)
