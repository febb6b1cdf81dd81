"""Tests for tfnas.tasks.segmentation: scores, reward, streaming metric, losses."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfnas.tasks.segmentation import (
    ConfusionMatrix,
    SegmentationLoss,
    confusion_matrix,
    distillation_loss,
    resize_logits,
    scores,
    segmentation_loss,
)

# Rows = true class, columns = predicted class.
#   ground truth per class gt = [6, 10, 4], predicted per class = [7, 8, 5], tp = [5, 6, 3]
#   union = gt + pred - tp = [8, 12, 6]  ->  IoU = [5/8, 6/12, 3/6] = [0.625, 0.5, 0.5]
#   accuracy = tp / gt = [5/6, 0.6, 0.75]
CONFUSION = np.array([[5, 1, 0], [2, 6, 2], [0, 1, 3]])


def test_scores_by_hand_background_omitted():
    result = scores(CONFUSION)  # omit=(0,)
    # classes 1, 2: mIoU = (0.5 + 0.5) / 2
    assert result["miou"] == pytest.approx(0.5)
    # mean accuracy = (0.6 + 0.75) / 2
    assert result["mean_accuracy"] == pytest.approx(0.675)
    # fwIoU = (10 * 0.5 + 4 * 0.5) / 14
    assert result["fwiou"] == pytest.approx(0.5)
    # pixel accuracy = (6 + 3) / (10 + 4)
    assert result["pixel_accuracy"] == pytest.approx(9 / 14)
    # reward = cube root of 0.5 * 0.5 * 0.675
    assert result["reward"] == pytest.approx(0.16875 ** (1 / 3))
    assert result["per_class_iou"] == pytest.approx([0.625, 0.5, 0.5])
    assert all(isinstance(v, float) for k, v in result.items() if k != "per_class_iou")


def test_scores_by_hand_all_classes_kept():
    result = scores(tf.constant(CONFUSION), omit=())
    # mIoU = (0.625 + 0.5 + 0.5) / 3
    assert result["miou"] == pytest.approx(1.625 / 3)
    # mean accuracy = (5/6 + 0.6 + 0.75) / 3
    assert result["mean_accuracy"] == pytest.approx((5 / 6 + 1.35) / 3)
    # fwIoU = (6 * 0.625 + 10 * 0.5 + 4 * 0.5) / 20 = 10.75 / 20
    assert result["fwiou"] == pytest.approx(0.5375)
    # pixel accuracy = 14 / 20
    assert result["pixel_accuracy"] == pytest.approx(0.7)
    assert result["reward"] == pytest.approx((1.625 / 3 * 0.5375 * (5 / 6 + 1.35) / 3) ** (1 / 3))


def test_scores_classes_without_ground_truth():
    # class 2: no ground truth but predicted once -> IoU 0, counted in mIoU only;
    # class 3: absent from truth and prediction -> NaN, left out everywhere.
    confusion = np.array([[4, 0, 0, 0], [0, 2, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    result = scores(confusion)
    # IoU class 1 = 2 / (3 + 2 - 2) = 2/3; class 2 = 0 / 1
    assert result["miou"] == pytest.approx((2 / 3 + 0) / 2)
    assert result["mean_accuracy"] == pytest.approx(2 / 3)  # class 1 only
    assert result["fwiou"] == pytest.approx(2 / 3)  # all kept truth is class 1
    assert result["per_class_iou"][:3] == pytest.approx([1.0, 2 / 3, 0.0])
    assert math.isnan(result["per_class_iou"][3])


def test_scores_empty_and_bad_omit():
    result = scores(np.zeros((3, 3)))
    assert result["miou"] == 0.0 and result["reward"] == 0.0
    with pytest.raises(ValueError, match="omit lists class 5"):
        scores(CONFUSION, omit=(5,))
    with pytest.raises(ValueError, match="square"):
        scores(np.zeros((2, 3)))


def test_confusion_matrix_skips_ignore_label():
    labels = np.array([[[0, 1], [255, 2]]])
    predictions = np.array([[[0, 2], [1, 2]]])
    expected = [[1, 0, 0], [0, 0, 1], [0, 0, 1]]  # the (255 -> 1) pixel is not counted
    np.testing.assert_array_equal(confusion_matrix(labels, predictions, 3), expected)
    graph_fn = tf.function(lambda a, b: confusion_matrix(a, b, 3))
    np.testing.assert_array_equal(graph_fn(labels, predictions), expected)


def test_streaming_metric_equals_function_on_concatenated_data():
    rng = np.random.default_rng(0)
    masks = rng.integers(0, 3, size=(4, 8, 8))
    masks[0, :2] = 255
    logits = rng.normal(size=(4, 4, 4, 3)).astype("float32")  # half resolution
    metric = ConfusionMatrix(3)
    metric.update_state(masks[:2], logits[:2])
    metric.update_state(masks[2:, ..., None], logits[2:])  # (N, H, W, 1) masks too

    predictions = tf.argmax(tf.image.resize(logits, (8, 8)), axis=-1)
    expected = confusion_matrix(masks, predictions, 3)
    np.testing.assert_array_equal(metric.confusion.numpy(), expected.numpy())
    assert int(expected.numpy().sum()) == 4 * 64 - 16
    assert metric.scores() == scores(expected)
    assert float(metric.result()) == pytest.approx(scores(expected)["miou"], rel=1e-6)

    clone = ConfusionMatrix.from_config(metric.get_config())
    assert (clone.num_classes, clone.ignore_label, clone.omit) == (3, 255, (0,))
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(metric))
    assert isinstance(restored, ConfusionMatrix) and restored.name == "confusion_matrix"

    metric.reset_state()
    assert int(tf.reduce_sum(metric.confusion)) == 0


def test_metric_rejects_wrong_number_of_classes():
    with pytest.raises(ValueError, match="logits have 4 channels but num_classes is 3"):
        ConfusionMatrix(3).update_state(np.zeros((1, 2, 2)), np.zeros((1, 2, 2, 4)))


# Hand computation on a 1x2x2 example, pixel (1, 0) ignored:
#   (0,0) logits [2, 0], label 0: ce = log(1 + e^-2) = 0.126928
#   (0,1) logits [0, 0], label 1: ce = log 2         = 0.693147
#   (1,1) logits [0, 1], label 0: ce = log(1 + e)    = 1.313262
LOGITS = np.array([[[[2.0, 0.0], [0.0, 0.0]], [[5.0, -5.0], [0.0, 1.0]]]], "float32")
LABELS = np.array([[[0, 1], [255, 0]]])
CE = [math.log(1 + math.exp(-2)), math.log(2), math.log(1 + math.e)]


def test_loss_by_hand_with_ignored_pixel():
    assert float(segmentation_loss(LABELS, LOGITS)) == pytest.approx(sum(CE) / 3, rel=1e-5)
    assert float(segmentation_loss(LABELS[..., None], LOGITS)) == pytest.approx(0.711112, rel=1e-5)
    # class weights [1, 3]: weights of the valid pixels are 1, 3, 1
    weighted = segmentation_loss(LABELS, LOGITS, class_weights=[1.0, 3.0])
    assert float(weighted) == pytest.approx((CE[0] + 3 * CE[1] + CE[2]) / 5, rel=1e-5)


def test_loss_resizes_low_resolution_logits():
    # a 1x1 logit map resized to 2x2 is constant: every pixel has ce = log(1 + e^-1)
    loss = segmentation_loss(np.zeros((1, 2, 2)), np.array([[[[1.0, 0.0]]]], "float32"))
    assert float(loss) == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-5)
    np.testing.assert_allclose(resize_logits(tf.ones((1, 1, 1, 2)), (3, 5)), np.ones((1, 3, 5, 2)))


def test_loss_all_ignored_is_zero_with_finite_gradient():
    logits = tf.Variable(LOGITS)
    with tf.GradientTape() as tape:
        loss = segmentation_loss(np.full((1, 2, 2), 255), logits)
    assert float(loss) == 0.0
    assert np.all(np.isfinite(tape.gradient(loss, logits).numpy()))


def test_keras_loss_wrapper_sample_weight_and_config():
    loss_fn = SegmentationLoss(class_weights=[1, 3])
    labels = np.concatenate([LABELS, np.ones((1, 2, 2), int)])
    logits = np.concatenate([LOGITS, np.zeros((1, 2, 2, 2), "float32")])
    # per-image weights [1, 0] leave only the first image: the hand-computed weighted loss
    assert float(loss_fn(labels, logits, sample_weight=np.array([1.0, 0.0]))) == pytest.approx(
        (CE[0] + 3 * CE[1] + CE[2]) / 5, rel=1e-5
    )
    clone = SegmentationLoss.from_config(loss_fn.get_config())
    assert clone.class_weights == [1.0, 3.0] and clone.ignore_label == 255


def test_compiled_model_trains_evaluates_and_reloads(tmp_path):
    rng = np.random.default_rng(1)
    images = rng.uniform(-1, 1, size=(4, 8, 8, 3)).astype("float32")
    masks = rng.integers(0, 3, size=(4, 8, 8))
    masks[:, 0] = 255
    inputs = keras.Input((8, 8, 3))
    logits = keras.layers.Conv2D(3, 3, strides=2, padding="same")(inputs)  # 4x4 logits
    model = keras.Model(inputs, logits)
    model.compile(optimizer="adam", loss=SegmentationLoss(), metrics=[ConfusionMatrix(3)])
    model.fit(images, masks, batch_size=2, epochs=1, verbose=0)
    evaluated = model.evaluate(images, masks, batch_size=2, verbose=0, return_dict=True)

    predicted = model.predict(images, verbose=0)
    expected = scores(confusion_matrix(masks, tf.argmax(resize_logits(predicted, (8, 8)), -1), 3))
    assert evaluated["confusion_matrix"] == pytest.approx(expected["miou"], abs=1e-5)
    assert evaluated["loss"] == pytest.approx(float(segmentation_loss(masks, predicted)), rel=1e-4)

    model.save(tmp_path / "m.keras")
    reloaded = keras.models.load_model(tmp_path / "m.keras")
    assert isinstance(reloaded.loss, SegmentationLoss)


def test_distillation_loss_resizes_teacher():
    student = np.array([[[[1.0], [2.0]], [[3.0], [4.0]]]], "float32")
    teacher = np.full((1, 1, 1, 1), 2.0, "float32")  # resized to a constant 2x2 map
    # ((1-2)^2 + 0 + (3-2)^2 + (4-2)^2) / 4 = 6 / 4
    assert float(distillation_loss(student, teacher)) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="student logits have 1 classes"):
        distillation_loss(student, np.zeros((1, 2, 2, 2)))
