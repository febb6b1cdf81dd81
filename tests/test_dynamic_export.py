"""Dynamic-inference export (3M-Pose Sec. 3.1.4): a derived fabric builds, trains, exports, and its early exits answer.

Tiny: a 2-row, 4-column fabric of width 8 with an early exit at column 2, trained for two
steps on 32x32 figure scenes; a two-exit segmentation network of a few convolutions for the
softmax gate.
"""

import json
import math
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfnas.cells.fabric import ExitGate, SoftmaxExitGate, heatmap_confidence, softmax_confidence
from tfnas.serving import dynamic, savedmodel
from tfnas.spaces.fabric import FabricSpace
from tfnas.tasks import get_task

GENOTYPE = [  # layout 2, 2, 2, 2: eight cells
    [[1], [0], [1], [2]],
    [[0], [3], [1], [4]],
    [[1, 2], [6], [0, 1], [2]],
    [[0, 1], [4], [3, 5], [7]],
    [[1, 2], [1], [2], [8]],
    [[0, 1], [5], [1, 6], [3]],
    [[1], [2], [4], [0]],
    [[0, 1], [1], [7], [2]],
]
NO_EMPTY_RULE = -math.inf  # keypoint threshold under which no image counts as "no keypoint"


def tiny_space():
    return FabricSpace(width=8, rows=2, columns=4, eel_columns=(2,), stem_channels=8, stem_blocks=1)


@pytest.fixture(scope="module")
def trained():
    """The derived network, trained two steps on both heads (the thesis supervises every exit)."""
    keras.utils.set_random_seed(0)
    space = tiny_space()
    model = space.build_genotype(GENOTYPE)
    task = space.task
    data = task.pipeline(task.builtin_data("train", image_size=32, num_samples=4, seed=0), batch_size=4)
    images, targets = next(iter(data))
    optimizer = keras.optimizers.Adam(1e-3)
    losses = []
    for _ in range(2):
        with tf.GradientTape() as tape:
            outputs = model(images, training=True)
            loss = task.loss(targets, outputs["logits"]) + task.loss(targets, outputs["eel_2"])
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        losses.append(float(loss))
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    return space, model


def two_images():
    """A noise image and a flat one: their early-exit confidences differ."""
    rng = np.random.default_rng(1)
    noise = rng.uniform(-1, 1, (1, 32, 32, 3)).astype(np.float32)
    return noise, np.full((1, 32, 32, 3), 0.2, np.float32)


def split_threshold(model, task, images):
    """A threshold between the two images' column-2 confidences: (threshold, index of the confident one)."""
    heatmaps = [model(x, training=False)["eel_2"][..., : task.num_joints] for x in images]
    conf = [float(heatmap_confidence(h)[0]) for h in heatmaps]
    assert abs(conf[0] - conf[1]) > 1e-4, conf
    return (conf[0] + conf[1]) / 2, int(np.argmax(conf))


def test_segments_share_the_weights_and_give_the_model_s_exits(trained):
    space, model = trained
    dyn = dynamic.DynamicModel(model, space.task)
    assert dyn.exits == ("eel_2", "logits")
    images = tf.random.uniform([2, 32, 32, 3], -1, 1, seed=3)
    full, exits = model(images, training=False), dyn.exit_outputs(images)
    for name in dyn.exits:
        np.testing.assert_allclose(exits[name], full[name], atol=1e-5)
    first, last = ({layer.name for layer in s.layers} for s in dyn.segments.segments)
    assert "eel_2" in first and {"split2", "fuse4", "logits"} <= last and not {"split2", "fuse4"} & first
    # Shared, not copied: a weight changed in the model changes the segment's answer.
    kernel = model.get_layer("decoder").get_layer("eel_2").conv.kernel
    saved = kernel.numpy()
    kernel.assign(saved * 2)
    try:
        np.testing.assert_allclose(
            dyn.exit_outputs(images)["eel_2"], model(images, training=False)["eel_2"], atol=1e-5
        )
        assert not np.allclose(dyn.exit_outputs(images)["eel_2"], exits["eel_2"])
    finally:
        kernel.assign(saved)


def test_threshold_zero_answers_at_the_first_exit_and_inf_at_the_last(trained):
    space, model = trained
    images = tf.random.uniform([2, 32, 32, 3], -1, 1, seed=4)
    full = model(images, training=False)
    early = dynamic.DynamicModel(model, space.task, thresholds=(0.0,))(images)
    np.testing.assert_array_equal(early["exit"], [0, 0])
    np.testing.assert_allclose(early["logits"], full["eel_2"], atol=1e-5)
    late = dynamic.DynamicModel(model, space.task, thresholds=(math.inf,))(images)
    np.testing.assert_array_equal(late["exit"], [1, 1])
    np.testing.assert_allclose(late["logits"], full["logits"], atol=1e-5)
    heatmaps = full["logits"][..., : space.task.num_joints]
    np.testing.assert_allclose(late["confidence"], heatmap_confidence(heatmaps), rtol=1e-5)


def test_a_threshold_between_two_confidences_sends_one_image_on(trained):
    space, model = trained
    images = two_images()
    threshold, confident = split_threshold(model, space.task, images)
    gate = ExitGate((1.0, 1.0, 1.0), threshold, keypoint_threshold=NO_EMPTY_RULE)
    dyn = dynamic.DynamicModel(model, space.task, gates=(gate,))
    answers = [int(dyn(x)["exit"][0]) for x in images]
    assert answers[confident] == 0 and answers[1 - confident] == 1
    # One decision per batch: one unconfident image sends the whole batch on.
    np.testing.assert_array_equal(dyn(np.concatenate(images))["exit"], [1, 1])


def test_heatmaps_without_keypoints_answer_early(trained):
    space, model = trained
    head = model.get_layer("decoder").get_layer("eel_2").conv
    saved = [w.numpy() for w in head.weights]
    for w in head.weights:
        w.assign(tf.zeros_like(w))  # flat zero heatmaps: N = 0 keypoints, confidence 0.5
    try:
        images = two_images()[0]
        # 0.9 is above the confidence, but N = 0 stops inference (the thesis' rule) ...
        assert int(dynamic.DynamicModel(model, space.task, thresholds=(0.9,))(images)["exit"][0]) == 0
        # ... unless the exit is off.
        assert int(dynamic.DynamicModel(model, space.task, thresholds=(math.inf,))(images)["exit"][0]) == 1
    finally:
        for w, value in zip(head.weights, saved):
            w.assign(value)


def test_the_later_columns_run_only_in_the_branch_that_goes_on(trained):
    space, model = trained
    dyn = dynamic.DynamicModel(model, space.task, thresholds=(0.5,))
    spec = tf.TensorSpec([None, None, None, 3], tf.float32)
    graph = tf.function(dyn, input_signature=[spec], autograph=False).get_concrete_function().graph
    graph_def = graph.as_graph_def()
    top = [n.name for n in graph_def.node if n.op == "Conv2D"]
    assert any("_to_eel_2" in n for n in top) and not any("_to_logits" in n for n in top)
    (cond,) = [n for n in graph_def.node if n.op in ("If", "StatelessIf")]
    branches = {f.signature.name: f for f in graph_def.library.function}
    on = branches[cond.attr["else_branch"].func.name]
    assert any("_to_logits" in n.name for n in on.node_def if n.op == "Conv2D")
    leave = branches[cond.attr["then_branch"].func.name]
    assert not [n for n in leave.node_def if n.op == "Conv2D"]


def test_saved_model_answers_at_its_early_exit(trained, tmp_path):
    space, model = trained
    images = two_images()
    threshold, confident = split_threshold(model, space.task, images)
    gate = ExitGate((1.0, 1.0, 1.0), threshold, keypoint_threshold=NO_EMPTY_RULE)
    path = dynamic.export_dynamic(model, str(tmp_path), "pose", space.task, gates=(gate,))
    assert path == os.path.join(str(tmp_path), "pose", "1")
    loaded = tf.saved_model.load(path)
    serve = loaded.signatures["serving_float"]
    outputs = sorted(savedmodel.TASK_OUTPUTS["pose-multi"] + list(dynamic.EXIT_OUTPUTS))
    assert sorted(serve.structured_outputs) == outputs
    joints = space.task.num_joints
    for i, x in enumerate(images):
        answer = serve(images=tf.constant((x + 1) * 127.5))
        expected = 0 if i == confident else 1
        assert answer["exit"].numpy().tolist() == [expected]
        key = ("eel_2", "logits")[expected]
        np.testing.assert_allclose(answer["heatmaps"], model(x, training=False)[key][..., :joints], atol=1e-4)
    # The uint8 signature decides the same for the same pixels.
    uint8 = np.round((images[confident] + 1) * 127.5).astype(np.uint8)
    assert loaded.signatures["serving_default"](images=tf.constant(uint8))["exit"].numpy().tolist() == [0]
    static = loaded.signatures["logits"](images=tf.constant(images[confident]))["logits"]
    np.testing.assert_allclose(static, model(images[confident], training=False)["logits"], atol=1e-4)
    metadata = savedmodel.read_metadata(path)
    assert metadata["dynamic"]["exits"] == ["eel_2", "logits"]
    assert metadata["dynamic"]["gates"][0]["threshold"] == pytest.approx(threshold)
    assert metadata["task"]["name"] == "pose-multi"
    assert sorted(metadata["signatures"]["serving_default"]["outputs"]) == outputs
    assert len(savedmodel.read_warmup_requests(path)) == 1
    json.dumps(metadata)


def test_static_export_is_the_last_exit_only(trained, tmp_path):
    space, model = trained
    path = dynamic.export_dynamic(model, str(tmp_path), "pose", space.task, static=True)
    metadata = savedmodel.read_metadata(path)
    assert "dynamic" not in metadata
    assert (
        sorted(metadata["signatures"]["serving_default"]["outputs"]) == savedmodel.TASK_OUTPUTS["pose-multi"]
    )
    with pytest.raises(ValueError, match=r"static=True exports the last exit only; thresholds=\(0\.5,\)"):
        dynamic.export_dynamic(model, str(tmp_path), "pose", space.task, thresholds=(0.5,), static=True)


@pytest.mark.parametrize(
    "thresholds, message",
    [
        ((-0.1,), r"threshold -0\.1 of exit 'eel_2' must be a number >= 0"),
        ((math.nan,), r"threshold nan of exit 'eel_2' must be a number >= 0"),
        (("high",), r"threshold 'high' of exit 'eel_2' is not a number"),
        ((0.5, 0.6), r"thresholds \(0\.5, 0\.6\): expected one per early exit, 1 for \['eel_2'\]"),
        ("0.5", r"thresholds '0\.5': expected one per early exit"),
    ],
)
def test_bad_thresholds_name_the_value(trained, thresholds, message):
    space, model = trained
    with pytest.raises(ValueError, match=message):
        dynamic.DynamicModel(model, space.task, thresholds=thresholds)


def test_bad_settings_name_what_is_wrong(trained):
    space, model = trained
    assert dynamic.parse_thresholds("1, 0.6,inf") == (1.0, 0.6, math.inf)
    with pytest.raises(ValueError, match=r"exit threshold 'x' in '0\.5,x' is not a number"):
        dynamic.parse_thresholds("0.5,x")
    with pytest.raises(ValueError, match="the depth task has no exit confidence"):
        dynamic.exit_gates(get_task("depth"), ("eel_2", "logits"))
    with pytest.raises(ValueError, match="the model predicts 34 channels, but the task"):
        dynamic.DynamicModel(model, "depth")
    with pytest.raises(ValueError, match=r"exits \['logits', 'eel_9'\] must name at least two distinct"):
        dynamic.DynamicModel(model, space.task, exits=("logits", "eel_9"))
    with pytest.raises(ValueError, match="exit 'eel_2' does not go on from the features of exit 'logits'"):
        dynamic.DynamicModel(model, space.task, exits=("logits", "eel_2"))
    with pytest.raises(ValueError, match="does not output a dict of heads"):
        dynamic.DynamicModel(space.inference_model(model), space.task, exits=("a", "b"))
    with pytest.raises(ValueError, match="the pose-multi task takes ExitGate gates"):
        dynamic.DynamicModel(model, space.task, gates=(SoftmaxExitGate(0.5),))


def segmentation_model(classes=3):
    """image -> conv -> early head "eel_1" -> two more convs -> "logits": a flat functional model."""
    keras.utils.set_random_seed(2)
    inputs = keras.Input((None, None, 3), name="image")
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="conv0")(inputs)
    early = keras.layers.Conv2D(classes, 1, name="eel_1")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv1")(x)
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="conv2")(x)
    logits = keras.layers.Conv2D(classes, 1, name="logits")(x)
    return keras.Model(inputs, {"logits": logits, "eel_1": early}, name="segnet")


def test_segmentation_exits_gate_on_softmax_confidence(tmp_path):
    model = segmentation_model()
    task = get_task("segmentation", num_classes=3)
    images = two_images()
    conf = [float(softmax_confidence(model(x)["eel_1"])[0]) for x in images]
    assert abs(conf[0] - conf[1]) > 1e-5, conf
    confident = int(np.argmax(conf))
    dyn = dynamic.DynamicModel(model, task, thresholds=((conf[0] + conf[1]) / 2,))
    assert dyn.segments.prefix is None  # a flat model is cut as it is
    for i, x in enumerate(images):
        answer = dyn(x)
        expected = 0 if i == confident else 1
        assert int(answer["exit"][0]) == expected
        np.testing.assert_allclose(answer["logits"], model(x)[("eel_1", "logits")[expected]], atol=1e-5)
        np.testing.assert_allclose(answer["confidence"], softmax_confidence(answer["logits"]), rtol=1e-6)
    path = dynamic.export_dynamic(model, str(tmp_path), "seg", "segmentation", thresholds=(0.0,))
    answer = tf.saved_model.load(path).signatures["serving_float"](
        images=tf.constant((images[0] + 1) * 127.5)
    )
    assert answer["exit"].numpy().tolist() == [0] and answer["classes"].shape == (1, 32, 32)
    probabilities = tf.nn.softmax(tf.image.resize(model(images[0])["eel_1"], (32, 32)))
    np.testing.assert_allclose(answer["probabilities"], probabilities, atol=1e-5)


def test_a_segmentation_fabric_exports_with_its_early_exit(tmp_path):
    """The fabric's TaskHead exits (segmentation) are cut and gated like its pose heads."""
    settings = dict(width=4, rows=2, columns=3, eel_columns=(2,), stem_channels=4, stem_blocks=1)
    space = FabricSpace(**settings, task="segmentation", num_classes=3)
    keras.utils.set_random_seed(3)
    model = space.build(space.hyperparameters(space.random_values(1)))
    images = two_images()
    path = dynamic.export_dynamic(model, str(tmp_path), "fabric_seg", space.task, thresholds=(0.0,))
    serving = tf.saved_model.load(path).signatures["serving_float"]
    answer = serving(images=tf.constant((images[0] + 1) * 127.5))
    assert answer["exit"].numpy().tolist() == [0] and answer["classes"].shape == (1, 32, 32)
    early = model(images[0])["eel_2"]
    probabilities = tf.nn.softmax(tf.image.resize(early, (32, 32)))
    np.testing.assert_allclose(answer["probabilities"], probabilities, atol=1e-5)
    path = dynamic.export_dynamic(
        model, str(tmp_path), "fabric_seg_last", space.task, thresholds=(float("inf"),)
    )
    answer = tf.saved_model.load(path).signatures["serving_float"](
        images=tf.constant((images[0] + 1) * 127.5)
    )
    assert answer["exit"].numpy().tolist() == [1]
