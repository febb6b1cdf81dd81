"""Proxy-training pieces: termination rule, Polyak averaging, optimizer groups, feature cache."""

import json
import os

import keras
import keras_tuner
import numpy as np
import pytest
import tensorflow as tf

from tfnas.spaces.base import DecoderSpace
from tfnas.tasks import get_task
from tfnas.training import (
    FeatureCache,
    NonFiniteLossError,
    ParameterGroup,
    ProgressiveTermination,
    ProxyModel,
    evaluate_reward,
    make_optimizer,
    pad_to_batches,
    run_stage,
    warm_up,
)

NUM_CLASSES = 3


def _tiny_encoder(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((None, None, 3), name="image")
    a = keras.layers.Conv2D(4, 3, strides=2, padding="same", name="enc_a")(inputs)
    b = keras.layers.Conv2D(6, 3, strides=2, padding="same", name="enc_b")(a)
    model = keras.Model(inputs, [a, b], name="encoder")
    model.tap_strides = [2, 4]
    return model


def _tiny_decoder(nan=False):
    f0, f1 = keras.Input((None, None, 4)), keras.Input((None, None, 6))
    x = keras.layers.Conv2D(5, 1, name="mix")(f0)
    x = keras.layers.BatchNormalization(name="bn")(x)
    logits = keras.layers.Conv2D(NUM_CLASSES, 1, name="classifier")(x)
    if nan:
        logits = keras.layers.Rescaling(float("nan"), name="explode")(logits)
    aux = keras.layers.Conv2D(NUM_CLASSES, 1, name="aux")(f1)
    return keras.Model([f0, f1], {"logits": logits, "aux_0": aux}, name="decoder")


def _pairs(count=8, size=16, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, size, size, 3), dtype=np.uint8)
    masks = rng.integers(0, NUM_CLASSES, (count, size, size)).astype(np.int32)
    return tf.data.Dataset.from_tensor_slices((images, masks))


# --- progressive termination -----------------------------------------------------------------
def test_termination_rule_matches_the_authors_formula_with_a_seeded_rng(tmp_path):
    path = str(tmp_path / "termination.json")
    rule = ProgressiveTermination(decay=0.5, delta=0.9, initial_average=0.5, seed=7, path=path)
    rewards = [0.6, 0.3, 0.05, 0.5]
    average, expected = 0.5, []
    for step, reward in enumerate(rewards):
        if reward > average:
            expected.append(True)
        else:
            u = np.random.default_rng([7, step]).uniform(0.0, 0.9)
            expected.append(bool(reward > average * (1.0 - u)))
        average = 0.5 * average + 0.5 * reward
    decisions = [rule.should_continue(str(i), r) for i, r in enumerate(rewards)]
    assert decisions == expected
    assert rule.steps == 4 and rule.average == pytest.approx(average)
    # The 0.05 reward is far below the average: only a tiny draw could keep it.
    assert decisions[0] is True and decisions[2] is False

    # The state survives a restart; a re-run trial gets its first decision, state unchanged.
    again = ProgressiveTermination(decay=0.5, delta=0.9, initial_average=0.5, seed=7, path=path)
    assert again.average == pytest.approx(average) and again.steps == 4
    assert again.should_continue("2", 0.99) is False
    assert again.steps == 4
    assert json.load(open(path))["decisions"] == {str(i): d for i, d in enumerate(expected)}


def test_termination_delta_is_annealed_on_the_authors_schedule():
    rule = ProgressiveTermination(delta=0.9)
    assert rule.delta == pytest.approx(0.9)
    rule.steps = 150
    assert rule.delta == pytest.approx(0.9 * 0.9)
    rule.steps = 450
    assert rule.delta == pytest.approx(0.9 * 0.9 * 0.8 * 0.7 * 0.6)
    with pytest.raises(ValueError, match="decay"):
        ProgressiveTermination(decay=1.0)


# --- Polyak averaging and optimizer groups -----------------------------------------------------
def test_parameter_group_polyak_average_equals_hand_computed_ema():
    a = keras.Variable(np.array([1.0, -2.0], np.float32))
    b = keras.Variable(np.array([[0.5, 0.0], [1.0, 3.0]], np.float32))
    group = ParameterGroup(make_optimizer("sgd", 0.1, polyak_decay=0.9, momentum=0.0), [a, b])
    g1 = [np.array([1.0, 1.0], np.float32), np.ones((2, 2), np.float32)]
    g2 = [np.array([-2.0, 4.0], np.float32), np.full((2, 2), 2.0, np.float32)]
    w0 = [a.numpy(), b.numpy()]
    w1 = [w - 0.1 * g for w, g in zip(w0, g1)]
    w2 = [w - 0.1 * g for w, g in zip(w1, g2)]
    group.apply([tf.constant(g) for g in g1])
    np.testing.assert_allclose(a.numpy(), w1[0], rtol=1e-6)
    group.apply([tf.constant(g) for g in g2])
    np.testing.assert_allclose(b.numpy(), w2[1], rtol=1e-6)
    group.apply_polyak()
    np.testing.assert_allclose(a.numpy(), 0.9 * w1[0] + 0.1 * w2[0], rtol=1e-6)
    np.testing.assert_allclose(b.numpy(), 0.9 * w1[1] + 0.1 * w2[1], rtol=1e-6)


class _Record(keras.callbacks.Callback):
    def __init__(self, variables):
        super().__init__()
        self.variables, self.values = variables, []

    def on_train_batch_end(self, batch, logs=None):
        self.values.append([v.numpy().copy() for v in self.variables])


def test_run_stage_applies_polyak_after_fit_with_two_optimizers():
    encoder = _tiny_encoder()
    decoder = _tiny_decoder()
    network = keras.Model(encoder.input, decoder(encoder(encoder.input)))
    frozen = [v.numpy().copy() for v in encoder.trainable_variables]
    groups = [
        ParameterGroup(make_optimizer("sgd", 0.0, 0.99), encoder.trainable_variables),
        ParameterGroup(make_optimizer("adam", 1e-2, 0.9), decoder.trainable_variables),
    ]
    model = ProxyModel(network, groups, NUM_CLASSES)
    data = _pairs(8).batch(4, drop_remainder=True).map(lambda x, y: (tf.cast(x, tf.float32) / 127.5 - 1, y))
    record = _Record(decoder.trainable_variables)
    history = run_stage(model, data, 1, "stage 2", callbacks=[record], verbose=0)
    assert len(record.values) == 2 and np.isfinite(history.history["loss"][0])
    (w1, w2) = record.values
    for variable, first, second in zip(decoder.trainable_variables, w1, w2):
        np.testing.assert_allclose(variable.numpy(), 0.9 * first + 0.1 * second, rtol=1e-5, atol=1e-7)
    assert any(not np.allclose(a, b) for a, b in zip(w1, w2))  # the decoder did train
    for variable, before in zip(encoder.trainable_variables, frozen):  # lr 0: unchanged
        np.testing.assert_allclose(variable.numpy(), before)
    scores = evaluate_reward(model, data)
    assert 0.0 <= scores["reward"] <= 1.0 and len(scores["per_class_iou"]) == NUM_CLASSES


def test_nan_loss_raises_a_failed_trial_error():
    decoder = _tiny_decoder(nan=True)
    model = ProxyModel(
        decoder, [ParameterGroup(make_optimizer("adam", 1e-3), decoder.trainable_variables)], NUM_CLASSES
    )
    features = (tf.random.normal((4, 8, 8, 4)), tf.random.normal((4, 4, 4, 6)))
    data = tf.data.Dataset.from_tensor_slices((features, tf.zeros((4, 16, 16), tf.int32))).batch(2)
    with pytest.raises(NonFiniteLossError, match="NaN|nan") as info:
        run_stage(model, data, 2, "stage 1", verbose=0)
    assert isinstance(info.value, keras_tuner.errors.FailedTrialError)
    assert isinstance(info.value, FloatingPointError)


def test_pad_to_batches_pads_with_the_tasks_padding_target():
    padding = get_task("segmentation", num_classes=3).padding_target((4, 4))
    arrays, masks = pad_to_batches(
        [np.ones((5, 2, 2, 1), np.float32)], np.zeros((5, 4, 4), np.int32), 4, padding
    )
    assert arrays[0].shape == (8, 2, 2, 1) and masks.shape == (8, 4, 4)
    assert (masks[5:] == 255).all() and (arrays[0][5:] == 0).all() and (masks[:5] == 0).all()
    # dict targets with a padded people count: the task's one-person padding is broadcast
    task = get_task("pose-multi")
    targets = {"keypoints": np.ones((3, 4, 17, 3), np.float32), "area": np.ones((3, 4), np.float32)}
    _, padded = pad_to_batches([np.ones((3, 1), np.float32)], targets, 4, task.padding_target((8, 8)))
    assert padded["keypoints"].shape == (4, 4, 17, 3) and padded["area"].shape == (4, 4)
    assert (padded["keypoints"][3] == 0).all() and (padded["area"][3] == -1).all()
    assert (padded["area"][:3] == 1).all()


# --- feature cache ----------------------------------------------------------------------------
def test_feature_cache_is_reused_when_the_fingerprint_matches_and_recomputed_otherwise(tmp_path):
    cache = FeatureCache(str(tmp_path / "cache"), verbose=0)
    encoder, data = _tiny_encoder(), _pairs(6)
    teacher = keras.Sequential([keras.Input((None, None, 3)), keras.layers.Conv2D(NUM_CLASSES, 1)])
    first = cache.load_or_compute("train", encoder, data, num_images=5, teacher=teacher, batch_size=2)
    assert not first.reused
    assert [f.shape for f in first.features] == [(5, 8, 8, 4), (5, 4, 4, 6)]
    assert first.teacher_logits.shape == (5, 16, 16, NUM_CLASSES) and first.targets.shape == (5, 16, 16)
    images = np.stack([x for x, _ in data.take(5).as_numpy_iterator()])
    expected = encoder(tf.cast(images, tf.float32) / 127.5 - 1.0, training=False)[1].numpy()
    np.testing.assert_allclose(first.features[1], expected, rtol=1e-5, atol=1e-5)
    meta = os.path.join(first.path, "meta.json")
    mtime = os.stat(meta).st_mtime_ns

    second = cache.load_or_compute("train", encoder, data, num_images=5, teacher=teacher, batch_size=2)
    assert second.reused and second.path == first.path and os.stat(meta).st_mtime_ns == mtime
    np.testing.assert_array_equal(second.features[0], first.features[0])

    encoder.get_layer("enc_a").kernel.assign(encoder.get_layer("enc_a").kernel * 2.0)
    third = cache.load_or_compute("train", encoder, data, num_images=5, teacher=teacher, batch_size=2)
    assert not third.reused and third.path != first.path
    assert not os.path.exists(first.path)  # the stale entry is removed
    assert not np.allclose(third.features[0], first.features[0])

    fourth = cache.load_or_compute("train", encoder, _pairs(6, seed=1), num_images=5, teacher=teacher)
    assert not fourth.reused and fourth.path != third.path


class _TinyEncoderSpace(DecoderSpace):
    """No published architecture: warm-up uses the simple reference head."""

    def build_encoder(self):
        return _tiny_encoder()


def test_warm_up_trains_once_and_is_reused(tmp_path):
    space = _TinyEncoderSpace(NUM_CLASSES, width=4)
    data = _pairs(4, size=32)
    model, reused = warm_up(space, data, str(tmp_path), epochs=1, batch_size=4, verbose=0)
    assert not reused and os.path.exists(tmp_path / "warmup.weights.h5")
    again, reused = warm_up(space, data, str(tmp_path), epochs=1, batch_size=4, verbose=0)
    assert reused and set(again.output) == {"logits"}
    before = [w.numpy() for w in model.get_layer("encoder").weights]
    assert not all(np.allclose(a, b.numpy()) for a, b in zip(before, _tiny_encoder().weights))
    for a, b in zip(model.get_layer("encoder").weights, again.get_layer("encoder").weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
