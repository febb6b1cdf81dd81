"""The task abstraction: registry, segmentation unchanged, heads, pipelines and a training step per task."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfnas.data import digit_scene_arrays, pipeline
from tfnas.tasks import (
    TASKS,
    ConfusionMatrix,
    SegmentationLoss,
    Task,
    UpsampleBy,
    get_task,
    scores,
    segmentation_loss,
)


def test_registry_builds_every_task():
    assert set(TASKS) == {"segmentation", "depth", "pose", "pose-multi"}
    channels = {"segmentation": 11, "depth": 1, "pose": 17, "pose-multi": 34}
    for name, cls in TASKS.items():
        task = get_task(name)
        assert isinstance(task, cls) and task.name == name
        assert task.output_channels == channels[name]
        assert get_task(name, **task.config()).config() == task.config()
    assert get_task("segmentation", num_classes=21).output_channels == 21
    assert [TASKS[n].output_stride for n in TASKS] == [None, None, None, None]
    assert get_task("pose").output_stride == 4 and get_task("pose-multi").output_stride == 4
    task = get_task("depth")
    assert get_task(task) is task
    with pytest.raises(ValueError, match="task 'flow' is unknown; use one of segmentation"):
        get_task("flow")


def test_segmentation_task_is_the_existing_functions():
    task = get_task("segmentation", num_classes=3)
    rng = np.random.default_rng(0)
    masks = rng.integers(0, 3, (2, 8, 8)).astype(np.int32)
    masks[0, 0, 0] = 255
    logits = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
    assert isinstance(task.loss, SegmentationLoss)
    assert float(task.loss(masks, logits)) == float(segmentation_loss(masks, logits))
    metric = task.metric()
    assert isinstance(metric, ConfusionMatrix)
    metric.update_state(masks, logits)
    expected = scores(metric.confusion.numpy())
    got = task.scores(metric)
    assert got == expected
    assert task.reward(got) == pytest.approx(expected["reward"])
    out = task.postprocess(tf.constant(logits), (8, 8))
    np.testing.assert_array_equal(out["classes"], tf.argmax(tf.image.resize(logits, (8, 8)), -1).numpy())
    with pytest.raises(ValueError, match="label 5, but num_classes=3"):
        task.validate_target(np.full((4, 4), 5, np.int32))
    with pytest.raises(ValueError, match="digit scenes have 11 classes"):
        task.builtin_data("train", num_samples=2)


def test_segmentation_pipeline_matches_the_data_pipeline():
    images, masks = digit_scene_arrays("validation", image_size=32, num_scenes=4)
    dataset = tf.data.Dataset.from_tensor_slices((images, masks))
    task = get_task("segmentation")
    ours = list(task.pipeline(dataset, 2, shuffle=True, seed=3, augment=True))
    theirs = list(pipeline(dataset, 2, shuffle=True, seed=3, augment=True))
    for (a, b), (c, d) in zip(ours, theirs):
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)


def test_head_upsamples_to_the_output_stride_and_round_trips(tmp_path):
    inputs = keras.Input((None, None, 8))
    task = get_task("pose", num_joints=5, flip_pairs=[])
    model = keras.Model(inputs, task.head(inputs, "logits", feature_stride=8))
    out = model(np.zeros((1, 6, 7, 8), np.float32))
    assert out.shape == (1, 12, 14, 5)
    assert model.layers[-1].name == "logits" and isinstance(model.layers[-1], UpsampleBy)
    model.save(tmp_path / "m.keras")
    again = keras.models.load_model(tmp_path / "m.keras")
    x = np.random.default_rng(0).normal(size=(1, 6, 7, 8)).astype(np.float32)
    np.testing.assert_allclose(again(x), model(x), atol=1e-6)
    same = keras.Model(inputs, get_task("depth").head(inputs, feature_stride=8))
    assert same(np.zeros((1, 6, 7, 8), np.float32)).shape == (1, 6, 7, 1)  # depth: any stride
    with pytest.raises(ValueError, match="stride 6 cannot give the pose task's stride-4"):
        task.head(inputs, feature_stride=6)


def _tiny_model(task, size):
    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(inputs)
    x = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu")(x)
    return keras.Model(inputs, task.head(x, feature_stride=4))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["depth", "pose", "pose-multi"])
def test_a_few_training_steps_lower_each_tasks_loss(name):
    task = get_task(name)
    data = task.builtin_data("train", image_size=32, num_samples=4, seed=1)
    images, targets = next(iter(task.pipeline(data, 4, augment=True)))
    model = _tiny_model(task, 32)
    optimizer = keras.optimizers.Adam(1e-2)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            loss = task.loss(targets, model(images, training=True))
        optimizer.apply_gradients(
            zip(tape.gradient(loss, model.trainable_variables), model.trainable_variables)
        )
        return loss

    losses = [float(step()) for _ in range(8)]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    metric = task.metric()
    metric.update_state(targets, model(images))
    result = task.scores(metric)
    assert 0.0 <= result["reward"] <= 1.0
    out = task.postprocess(model(images), (32, 32))
    first = next(iter(out.values()))
    assert first.shape[0] == 4


def test_pose_pipeline_flips_keypoints_with_their_images():
    task = get_task("pose")
    data = task.builtin_data("validation", image_size=32, num_samples=6)
    plain = list(task.pipeline(data, 6))[0]
    flipped = list(task.pipeline(data, 6, augment=True, seed=0))[0]
    changed = [i for i in range(6) if not np.array_equal(plain[0][i], flipped[0][i])]
    assert changed  # some images were flipped
    for i in changed:
        np.testing.assert_array_equal(flipped[0][i], plain[0][i][:, ::-1])
        # left shoulder of the flip = right shoulder of the original, mirrored
        k, f = plain[1]["keypoints"][i].numpy(), flipped[1]["keypoints"][i].numpy()
        if k[6, 2] > 0:
            np.testing.assert_allclose(f[5, :2], [31 - k[6, 0], k[6, 1]], rtol=1e-6)


def test_validate_dataset_names_the_bad_element():
    task = get_task("depth")
    good = np.ones((2, 4, 4), np.float32)
    bad = good.copy()
    bad[1, 0, 0] = -1.0
    dataset = tf.data.Dataset.from_tensor_slices((np.zeros((2, 4, 4, 3), np.uint8), bad))
    with pytest.raises(ValueError, match="element 1 of the depth data: .*negative depth -1"):
        task.validate_dataset(dataset)
    assert issubclass(type(task), Task)


def _stack(targets):
    if isinstance(targets[0], dict):
        return {key: np.stack([t[key] for t in targets]) for key in targets[0]}
    return np.stack(targets)


@pytest.mark.parametrize("name", ["segmentation", "depth", "pose", "pose-multi"])
def test_padding_targets_change_no_score(name):
    task = get_task(name)
    data = task.builtin_data("validation", image_size=32, num_samples=3, seed=2)
    images, targets = zip(*data.as_numpy_iterator())
    targets = list(targets)
    rng = np.random.default_rng(0)
    outputs = rng.uniform(0, 1, (4, 8, 8, task.output_channels)).astype(np.float32)
    if name == "depth":
        outputs = outputs * 8
    plain, padded = task.metric(), task.metric()
    plain.update_state(_stack(targets), outputs[:3])
    people = {"people": targets[0]["keypoints"].shape[0]} if name == "pose-multi" else {}
    padded.update_state(_stack(targets + [task.padding_target((32, 32), **people)]), outputs)
    assert task.scores(padded) == task.scores(plain)


def test_paper_learning_rate_schedules():
    pose = get_task("pose").learning_rate(steps_per_epoch=10)
    assert [float(pose(s)) for s in (0, 899, 900, 1199, 1200)] == pytest.approx(
        [1e-3, 1e-3, 1e-4, 1e-4, 1e-5]
    )
    depth = get_task("depth")
    decoder = depth.learning_rate(steps_per_epoch=10)
    assert float(decoder(0)) == pytest.approx(7e-3)
    assert float(decoder(2000)) == pytest.approx(7e-3 * 0.5**0.9)  # epoch 200 of 400
    assert float(depth.learning_rate(10, group="encoder")(0)) == pytest.approx(1e-3)
    multi = get_task("pose-multi").learning_rate(steps_per_epoch=1)
    assert float(multi(260)) == pytest.approx(1e-5)
    with pytest.raises(ValueError, match="no training recipe"):
        get_task("segmentation").learning_rate(10)
