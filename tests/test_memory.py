"""Graphs traced by a proxy stage are freed with their model (issue 16's memory growth)."""

import gc
import weakref

import keras
import numpy as np
import tensorflow as tf
from tensorflow.python.framework import func_graph, ops

from tfnas.training import ParameterGroup, ProxyModel, make_optimizer, run_stage
from tfnas.training.stages import release_custom_gradients


def _custom_gradient_names():
    return {name for name in ops._gradient_registry._registry if name.startswith("CustomGradient-")}


def _func_graphs():
    gc.collect()
    return [o for o in gc.get_objects() if isinstance(o, func_graph.FuncGraph)]


def test_release_custom_gradients_drops_what_the_block_registered():
    @tf.custom_gradient
    def double(x):
        return 2.0 * x, lambda dy: 3.0 * dy  # a wrong gradient, to see it is the one used

    @tf.function
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = double(x)
        return tape.gradient(y, x)

    before = _custom_gradient_names()
    with release_custom_gradients():
        assert float(step(tf.constant(1.0))) == 3.0
        assert len(_custom_gradient_names() - before) == 1  # registered while tracing
    assert _custom_gradient_names() == before
    assert float(step(tf.constant(2.0))) == 3.0  # the traced function still runs


def test_run_stage_leaves_no_graph_holding_the_model():
    inputs = keras.Input((4, 4, 2))
    network = keras.Model(inputs, {"logits": keras.layers.Conv2D(3, 1)(inputs)})
    group = ParameterGroup(make_optimizer("adam", 1e-2, polyak_decay=0.9), network.trainable_variables)
    model = ProxyModel(network, [group], 3)
    data = tf.data.Dataset.from_tensor_slices(
        (np.random.default_rng(0).normal(size=(4, 4, 4, 2)).astype("float32"), np.zeros((4, 4, 4), "int32"))
    ).batch(2, drop_remainder=True)
    graphs_before = {id(g) for g in _func_graphs()}
    before = _custom_gradient_names()
    run_stage(model, data, 1, "stage 1", verbose=0)
    assert _custom_gradient_names() == before
    traced = [weakref.ref(g) for g in _func_graphs() if id(g) not in graphs_before]
    assert traced  # the train step was traced
    del model, network, group
    gc.collect()
    assert [ref() for ref in traced if ref() is not None] == []
