"""Semantic segmentation: loss, confusion-matrix scores and the search reward (Nekrasov et al., CVPR 2019, Sec. 4.1).

The reward of the CVPR 2019 auxiliary-cell search is the geometric mean of three scores
computed with the background class left out: mean IoU, frequency-weighted IoU and mean
pixel accuracy. The WACV 2020 template search uses the same mean with no class left out
(Cityscapes' class 0 is road; the authors' script passes no omitted class), and the Dense
Prediction Cell search (Chen et al., NeurIPS 2018, Sec. 3.2) maximises mIoU alone: the
reward's `REWARD_METRICS` entry and the omitted classes are arguments (`scores`,
`ConfusionMatrix`, `SegmentationTask`). Everything here works on a confusion matrix whose rows are the true class
and whose columns are the predicted class, so the scores can be accumulated over a whole
validation set (the streaming `ConfusionMatrix` metric) and computed once at the end.

How classes without data enter the means (the usual convention of VOC/Cityscapes tools):

- mean IoU averages the IoU of the kept classes present in the ground truth *or* the
  prediction (union > 0); a class predicted but absent from the truth counts with IoU 0;
- mean accuracy averages ``tp / gt`` over the kept classes present in the ground truth;
- frequency-weighted IoU weights each kept class's IoU by its share of the kept classes'
  ground-truth pixels;
- pixel accuracy is the share of correct pixels among the kept classes' ground-truth pixels
  (with ``omit=()`` it is the usual overall pixel accuracy).

"Kept" means not listed in ``omit`` (background, class 0, by default). A mean over no class
is 0.0, as in `keras.metrics.MeanIoU`.

Training models may emit logits at a lower resolution than the mask (1/4 for the
auxiliary-cell space); the loss and the metric resize the logits bilinearly to the mask
with `tf.image.resize` (not `UpSampling2D`, see DESIGN.md) before comparing.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from tfnas.preprocessing import IGNORE_LABEL
from tfnas.tasks.base import Task

__all__ = [
    "ConfusionMatrix",
    "SegmentationLoss",
    "SegmentationTask",
    "confusion_matrix",
    "distillation_loss",
    "resize_logits",
    "scores",
    "segmentation_loss",
    "REWARD_METRICS",
    "reward_of",
]

#: The search rewards of segmentation: name -> what it computes, in words.
#: `geometric_mean`: Nekrasov et al., CVPR 2019, Sec. 4.1 (and WACV 2020, Sec. 4.1);
#: `miou`: Chen et al., NeurIPS 2018, Sec. 3.2 ("f(b) is the pixel-wise mean
#: intersection-over-union").
REWARD_METRICS = {
    "geometric_mean": "geometric mean of mIoU, fwIoU and mean accuracy",
    "miou": "mIoU",
}


def resize_logits(logits, size):
    """Resize logits bilinearly to a spatial size.

    Uses `tf.image.resize` (half-pixel centres), which exports to SavedModel and ONNX with
    dynamic sizes. When the static size already matches, the logits are returned as they are.

    Args:
        logits: float tensor `(N, h, w, C)`.
        size: target `(H, W)`: a pair of ints or an int32 tensor of shape `(2,)`.

    Returns:
        Tensor `(N, H, W, C)` with the dtype of `logits`.

    Raises:
        ValueError: if `logits` is not of rank 4.
    """
    logits = tf.convert_to_tensor(logits)
    if logits.shape.rank != 4:
        raise ValueError(
            f"logits must have shape (N, h, w, C), got shape {logits.shape}; "
            "pass the per-pixel class scores of an image batch"
        )
    if isinstance(size, (tuple, list)) and tuple(logits.shape[1:3]) == tuple(size):
        return logits
    resized = tf.image.resize(logits, size, method="bilinear")
    return tf.cast(resized, logits.dtype)


def _as_masks(labels):
    """Return labels as an int32 tensor `(N, H, W)`, accepting `(N, H, W, 1)`."""
    labels = tf.convert_to_tensor(labels)
    if labels.shape.rank == 4 and labels.shape[-1] == 1:
        labels = labels[..., 0]
    if labels.shape.rank != 3:
        raise ValueError(
            f"masks must have shape (N, H, W) or (N, H, W, 1), got shape {labels.shape}; "
            "pass a batch of class-index masks"
        )
    return tf.cast(labels, tf.int32)


def _check_classes(logits, num_classes):
    channels = logits.shape[-1]
    if channels is not None and num_classes is not None and channels != num_classes:
        raise ValueError(
            f"logits have {channels} channels but num_classes is {num_classes}; "
            "the last axis of the logits must hold one score per class"
        )


def confusion_matrix(labels, predictions, num_classes, ignore_label=IGNORE_LABEL):
    """Confusion matrix of class-index maps, skipping pixels labelled `ignore_label`.

    Works eagerly and inside `tf.function`.

    Args:
        labels: int tensor or array of true classes, any shape (e.g. `(N, H, W)`).
        predictions: int tensor or array of predicted classes, same number of elements.
        num_classes: int, number of classes `C`.
        ignore_label: int, label value whose pixels are not counted (default 255).

    Returns:
        int64 tensor `(C, C)`; entry `[i, j]` counts pixels of true class `i` predicted
        as `j`.

    Raises:
        ValueError: if `num_classes` is not a positive int.
        tf.errors.InvalidArgumentError: if a label (other than `ignore_label`) or a
            prediction lies outside `[0, num_classes)`.
    """
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    labels = tf.reshape(tf.cast(labels, tf.int64), [-1])
    predictions = tf.reshape(tf.cast(predictions, tf.int64), [-1])
    valid = tf.not_equal(labels, ignore_label)
    return tf.math.confusion_matrix(
        tf.boolean_mask(labels, valid),
        tf.boolean_mask(predictions, valid),
        num_classes=num_classes,
        dtype=tf.int64,
    )


def _kept(num_classes, omit):
    """Boolean numpy mask of the classes not listed in `omit`.

    Raises:
        ValueError: if an entry of `omit` is not the index of an existing class.
    """
    keep = np.ones(num_classes, dtype=bool)
    for index in omit:
        if isinstance(index, (bool, np.bool_)) or not isinstance(index, (int, np.integer)):
            raise ValueError(
                f"omit lists {index!r}, which is not a class index; pass integer classes "
                "(e.g. omit=(0,) for background, or omit=() to keep every class)"
            )
        if not 0 <= int(index) < num_classes:
            raise ValueError(
                f"omit lists class {index}, but only classes 0..{num_classes - 1} exist; "
                "pass indices of existing classes (e.g. omit=(0,) for background)"
            )
        keep[int(index)] = False
    return keep


def _check_reward_metric(reward_metric):
    if not isinstance(reward_metric, str) or reward_metric not in REWARD_METRICS:
        raise ValueError(
            f"reward_metric={reward_metric!r} is unknown; expected one of {sorted(REWARD_METRICS)}"
        )
    return reward_metric


def reward_of(values, reward_metric="geometric_mean"):
    """The search reward of segmentation scores.

    Args:
        values: dict with `miou`, `fwiou` and `mean_accuracy` (floats).
        reward_metric: a name in `REWARD_METRICS`: `"geometric_mean"` (the cube root of
            the product of the three, Nekrasov et al., CVPR 2019, Sec. 4.1; default) or
            `"miou"` (Chen et al., NeurIPS 2018, Sec. 3.2).

    Returns:
        float.

    Raises:
        ValueError: for an unknown `reward_metric`.
    """
    if _check_reward_metric(reward_metric) == "miou":
        return float(values["miou"])
    return float((values["miou"] * values["fwiou"] * values["mean_accuracy"]) ** (1 / 3))


def _masked_mean(values, mask):
    mask = tf.cast(mask, values.dtype)
    return tf.math.divide_no_nan(tf.reduce_sum(values * mask), tf.reduce_sum(mask))


def _score_tensors(confusion, omit):
    """All scores of a `(C, C)` confusion matrix as float64 tensors (graph-safe)."""
    confusion = tf.cast(tf.convert_to_tensor(confusion), tf.float64)
    if confusion.shape.rank != 2 or confusion.shape[0] != confusion.shape[1] or (confusion.shape[0] is None):
        raise ValueError(
            f"confusion must be a square (C, C) matrix with static C, got shape "
            f"{confusion.shape}; build it with confusion_matrix(labels, predictions, C)"
        )
    keep = tf.constant(_kept(confusion.shape[0], omit))
    true_positives = tf.linalg.diag_part(confusion)
    ground_truth = tf.reduce_sum(confusion, axis=1)
    union = ground_truth + tf.reduce_sum(confusion, axis=0) - true_positives
    iou = tf.math.divide_no_nan(true_positives, union)
    accuracy = tf.math.divide_no_nan(true_positives, ground_truth)
    in_truth = keep & (ground_truth > 0)
    frequency = tf.where(in_truth, ground_truth, 0.0)
    result = {
        "miou": _masked_mean(iou, keep & (union > 0)),
        "fwiou": tf.math.divide_no_nan(tf.reduce_sum(frequency * iou), tf.reduce_sum(frequency)),
        "mean_accuracy": _masked_mean(accuracy, in_truth),
        "pixel_accuracy": tf.math.divide_no_nan(
            tf.reduce_sum(tf.where(keep, true_positives, 0.0)),
            tf.reduce_sum(tf.where(keep, ground_truth, 0.0)),
        ),
        "per_class_iou": tf.where(union > 0, iou, tf.constant(math.nan, tf.float64)),
    }
    return result


def scores(confusion, omit=(0,), reward_metric="geometric_mean"):
    """Segmentation scores and the search reward of a confusion matrix (Nekrasov et al., CVPR 2019, Sec. 4.1).

    See the module docstring for how classes without pixels enter the means. Call eagerly.

    Args:
        confusion: `(C, C)` numpy array or tensor, rows = true class, columns = predicted.
        omit: class indices left out of every average (default `(0,)`, background, as the
            paper does for the reward); `()` keeps all classes.
        reward_metric: what `reward` is, a name in `REWARD_METRICS` (`reward_of`). Default
            `"geometric_mean"`.

    Returns:
        dict of plain Python floats: `miou`, `fwiou`, `mean_accuracy`, `pixel_accuracy`,
        `reward` (by default the geometric mean of `miou`, `fwiou`, `mean_accuracy`) and
        `per_class_iou` (list of C floats over all classes, NaN where a class is absent
        from both truth and prediction).

    Raises:
        ValueError: if `confusion` is not square, `omit` names a class that does not exist
            or `reward_metric` is unknown.
    """
    _check_reward_metric(reward_metric)
    values = _score_tensors(confusion, omit)
    result = {key: float(value) for key, value in values.items() if key != "per_class_iou"}
    result["reward"] = reward_of(result, reward_metric)
    result["per_class_iou"] = [float(v) for v in values["per_class_iou"].numpy()]
    return result


@keras.saving.register_keras_serializable(package="tfnas")
class ConfusionMatrix(keras.metrics.Metric):
    """Streaming confusion matrix of a segmentation model; `result()` is the mean IoU.

    Logits are resized bilinearly to the mask size and turned into classes by argmax;
    pixels labelled `ignore_label` are skipped. `scores()` gives every score of the module
    (mIoU, fwIoU, mean and pixel accuracy, per-class IoU, reward).

    ```python
    metric = ConfusionMatrix(num_classes=21)
    model.compile(optimizer="adam", loss={"logits": SegmentationLoss()},
                  metrics={"logits": [metric]})
    ```

    Args:
        num_classes: int, number of classes `C`.
        ignore_label: int, mask value of pixels that are not counted (default 255).
        omit: class indices left out of `result()` and of `scores()` (default `(0,)`,
            background).
        reward_metric: the `reward` of `scores()`, a name in `REWARD_METRICS`. Default
            `"geometric_mean"`.
        name: metric name (default `"confusion_matrix"`).
        dtype: dtype of `result()` (default float32 from Keras).
    """

    def __init__(
        self,
        num_classes,
        ignore_label=IGNORE_LABEL,
        omit=(0,),
        reward_metric="geometric_mean",
        name="confusion_matrix",
        dtype=None,
    ):
        super().__init__(name=name, dtype=dtype)
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        _kept(self.num_classes, omit)  # validate early
        self.omit = tuple(int(i) for i in omit)
        self.reward_metric = _check_reward_metric(reward_metric)
        self.confusion = self.add_variable(
            shape=(self.num_classes, self.num_classes),
            initializer="zeros",
            dtype="int64",
            name="confusion",
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Add a batch to the confusion matrix.

        Args:
            y_true: int masks `(N, H, W)` or `(N, H, W, 1)`.
            y_pred: logits `(N, h, w, C)`, resized bilinearly to `(H, W)` when they differ.
            sample_weight: unsupported; must be None.

        Raises:
            ValueError: if `sample_weight` is given or the logits do not have C channels.
        """
        if sample_weight is not None:
            raise ValueError(
                "ConfusionMatrix counts pixels and takes no sample_weight; mark pixels to "
                f"skip with the ignore label {self.ignore_label} instead"
            )
        masks = _as_masks(y_true)
        logits = tf.convert_to_tensor(y_pred)
        _check_classes(logits, self.num_classes)
        logits = resize_logits(logits, _spatial_size(masks))
        predictions = tf.argmax(logits, axis=-1)
        self.confusion.assign_add(confusion_matrix(masks, predictions, self.num_classes, self.ignore_label))

    def result(self):
        """Mean IoU over the kept classes (see the module docstring)."""
        return tf.cast(_score_tensors(self.confusion, self.omit)["miou"], self.dtype)

    def scores(self):
        """All scores of the accumulated confusion matrix, as `scores(confusion, omit, reward_metric)`."""
        return scores(self.confusion, self.omit, self.reward_metric)

    def get_config(self):
        """Constructor arguments, for `keras.saving`."""
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            ignore_label=self.ignore_label,
            omit=list(self.omit),
            reward_metric=self.reward_metric,
        )
        return config


def _spatial_size(masks):
    """Static `(H, W)` of a mask batch when known, else a dynamic int32 tensor."""
    static = tuple(masks.shape[1:3])
    if None not in static:
        return static
    return tf.shape(masks)[1:3]


def segmentation_loss(labels, logits, ignore_label=IGNORE_LABEL, class_weights=None, sample_weight=None):
    """Softmax cross-entropy of logits resized to the mask, ignored pixels left out.

    Pixel weights are `class_weights[label] * sample_weight` on valid pixels and 0 on
    pixels labelled `ignore_label`; the loss is the weighted mean
    `sum(w * ce) / sum(w)`, i.e. the mean over valid pixels without weights, and 0 when no
    pixel is valid.

    Args:
        labels: int masks `(N, H, W)` or `(N, H, W, 1)` (float masks are cast).
        logits: logits `(N, h, w, C)`, resized bilinearly to `(H, W)` when they differ.
        ignore_label: int, label value contributing nothing (default 255).
        class_weights: optional sequence of C floats, weight of each true class.
        sample_weight: optional weights broadcastable to `(N, H, W)`, e.g. per image `(N,)`.

    Returns:
        float32 scalar tensor.

    Raises:
        ValueError: if shapes are wrong or `class_weights` does not have C entries.
        tf.errors.InvalidArgumentError: (on CPU) if a label lies outside `[0, C)` and is not
            `ignore_label`.
    """
    masks = _as_masks(labels)
    logits = tf.cast(resize_logits(logits, _spatial_size(masks)), tf.float32)
    valid = tf.not_equal(masks, ignore_label)
    safe_labels = tf.where(valid, masks, 0)
    cross_entropy = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=safe_labels, logits=logits)
    weights = tf.cast(valid, tf.float32)
    if class_weights is not None:
        class_weights = tf.constant(class_weights, tf.float32)
        num_classes = logits.shape[-1]
        if class_weights.shape.rank != 1 or (
            num_classes is not None and class_weights.shape[0] != num_classes
        ):
            raise ValueError(
                f"class_weights has shape {class_weights.shape} but the logits have "
                f"{num_classes} classes; pass one weight per class"
            )
        weights *= tf.gather(class_weights, safe_labels)
    if sample_weight is not None:
        sample_weight = tf.cast(sample_weight, tf.float32)
        if sample_weight.shape.rank == 4 and sample_weight.shape[-1] == 1:
            sample_weight = sample_weight[..., 0]
        while sample_weight.shape.rank is not None and sample_weight.shape.rank < 3:
            sample_weight = sample_weight[..., None]
        weights *= sample_weight
    return tf.math.divide_no_nan(tf.reduce_sum(cross_entropy * weights), tf.reduce_sum(weights))


@keras.saving.register_keras_serializable(package="tfnas")
class SegmentationLoss(keras.losses.Loss):
    """Keras loss wrapping `segmentation_loss` (ignore label, class weights, resizing).

    ```python
    loss = SegmentationLoss()
    model.compile(optimizer="adam", loss={"logits": loss, "aux_0": loss},
                  loss_weights={"logits": 1.0, "aux_0": 0.15})
    ```

    Keras' `sample_weight`, when given, multiplies the pixel weights (see
    `segmentation_loss`), so the result stays a mean over valid pixels.

    Args:
        ignore_label: int, mask value contributing nothing (default 255).
        class_weights: optional list of C floats.
        name: loss name (default `"segmentation_loss"`).
    """

    def __init__(self, ignore_label=IGNORE_LABEL, class_weights=None, name="segmentation_loss"):
        super().__init__(name=name)
        self.ignore_label = int(ignore_label)
        self.class_weights = None if class_weights is None else [float(w) for w in class_weights]

    def __call__(self, y_true, y_pred, sample_weight=None):
        with tf.name_scope(self.name):
            return segmentation_loss(y_true, y_pred, self.ignore_label, self.class_weights, sample_weight)

    def call(self, y_true, y_pred):
        """Loss of a batch; see `segmentation_loss`."""
        return segmentation_loss(y_true, y_pred, self.ignore_label, self.class_weights)

    def get_config(self):
        """Constructor arguments, for `keras.saving`."""
        return {
            "name": self.name,
            "ignore_label": self.ignore_label,
            "class_weights": self.class_weights,
        }


def distillation_loss(student_logits, teacher_logits):
    """Mean squared error between student and teacher logits (Nekrasov et al., CVPR 2019, Sec. 3.2.2).

    The teacher's logits are resized bilinearly to the student's size when they differ.

    Args:
        student_logits: float tensor `(N, h, w, C)`.
        teacher_logits: float tensor `(N, h', w', C)`.

    Returns:
        float32 scalar tensor.

    Raises:
        ValueError: if the two do not have the same number of classes.
    """
    student_logits = tf.cast(student_logits, tf.float32)
    teacher_logits = tf.convert_to_tensor(teacher_logits)
    if student_logits.shape[-1] != teacher_logits.shape[-1]:
        raise ValueError(
            f"student logits have {student_logits.shape[-1]} classes but teacher logits have "
            f"{teacher_logits.shape[-1]}; distil between models of the same classes"
        )
    teacher_logits = tf.cast(resize_logits(teacher_logits, _spatial_size(student_logits)), tf.float32)
    return tf.reduce_mean(tf.square(student_logits - teacher_logits))


class SegmentationTask(Task):
    """Semantic segmentation as a `tfnas.tasks.base.Task` (Nekrasov et al., CVPR 2019, Sec. 4.1).

    Wraps the functions of this module unchanged: the loss is `SegmentationLoss`, the
    metric `ConfusionMatrix`, the reward `reward_of` its scores: by default the geometric
    mean of mIoU, fwIoU and mean accuracy with the background (class 0) left out, as the
    CVPR 2019 search on PASCAL VOC; a space may default to its own paper's (the template
    space keeps every class, the DPC space rewards mIoU; `DecoderSpace.SEGMENTATION_REWARD`).
    A target is an int32 `(H, W)` class map, `ignore_label` marking pixels to skip; the
    built-in data are the digit scenes. An exported model returns `classes` (int32
    `(N, H, W)`) and `probabilities` (`(N, H, W, C)`) at the input size, as
    `serving/savedmodel.py` does.

    Args:
        num_classes: int, number of classes (at least 2). Default 11 (digit scenes).
        ignore_label: int, mask value of pixels to skip. Default 255.
        omit: classes left out of the reward's averages (and of every score): `(0,)`
            (background, default) or `()` where class 0 is a real class (Cityscapes' road).
        reward_metric: the search reward, a name in `REWARD_METRICS`: `"geometric_mean"`
            (default) or `"miou"`.

    Attributes:
        reward_description: str, what the reward computes, in words (metric and omitted
            classes).

    Raises:
        ValueError: for fewer than 2 classes, an omitted class that does not exist or an
            unknown reward metric.
    """

    name = "segmentation"
    reward_description = "geometric mean of mIoU, fwIoU and mean accuracy (background left out)"
    headline_scores = (("miou", "mIoU"), ("fwiou", "fwIoU"), ("mean_accuracy", "mean accuracy"))
    serving_outputs = ("classes", "probabilities")

    def __init__(self, num_classes=11, ignore_label=IGNORE_LABEL, omit=(0,), reward_metric="geometric_mean"):
        super().__init__()
        if isinstance(num_classes, bool) or int(num_classes) < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes!r}")
        self.num_classes = int(num_classes)
        self.ignore_label = int(ignore_label)
        _kept(self.num_classes, omit)
        self.omit = tuple(int(i) for i in omit)
        self.reward_metric = _check_reward_metric(reward_metric)
        if self.omit == (0,):
            left_out = "background left out"
        elif self.omit:
            left_out = f"class{'es' if len(self.omit) > 1 else ''} {', '.join(map(str, self.omit))} left out"
        else:
            left_out = "every class counted"
        self.reward_description = f"{REWARD_METRICS[self.reward_metric]} ({left_out})"

    @property
    def output_channels(self):
        return self.num_classes

    @property
    def target_spec(self):
        return tf.TensorSpec([None, None], tf.int32, name="mask")

    def validate_target(self, target, image_size=None):
        """Check a class map: integer dtype, `(H, W)`, labels in range (see `Task`)."""
        mask = np.asarray(target)
        if mask.ndim == 3 and mask.shape[-1] == 1:
            mask = mask[..., 0]
        if not np.issubdtype(mask.dtype, np.integer):
            raise ValueError(
                f"segmentation targets are integer class maps, got dtype {mask.dtype}; a float "
                "map looks like depth: use the depth task for depth maps"
            )
        if mask.ndim != 2:
            raise ValueError(f"a class map has shape (H, W), got {mask.shape}")
        if image_size is not None and tuple(mask.shape) != tuple(image_size):
            raise ValueError(f"class map is {mask.shape} but its image is {tuple(image_size)}")
        bad = ((mask < 0) | (mask >= self.num_classes)) & (mask != self.ignore_label)
        if bad.any():
            raise ValueError(
                f"class map has label {int(mask[bad][0])}, but num_classes={self.num_classes} "
                f"allows 0..{self.num_classes - 1} and the ignore label {self.ignore_label}"
            )
        return mask.astype(np.int32)

    def padding_target(self, image_size):
        """A class map of `ignore_label` (as `tfnas.training.stages.pad_to_batches`)."""
        return np.full(tuple(image_size), self.ignore_label, np.int32)

    def _make_loss(self):
        return SegmentationLoss(ignore_label=self.ignore_label)

    def metric(self, name="confusion_matrix"):
        return ConfusionMatrix(
            self.num_classes,
            ignore_label=self.ignore_label,
            omit=self.omit,
            reward_metric=self.reward_metric,
            name=name,
        )

    def reward(self, scores):
        """The reward of a dict of scores: `reward_of(scores, reward_metric)`."""
        return reward_of(scores, self.reward_metric)

    def builtin_data(self, split, image_size=64, num_samples=None, seed=0, **kwargs):
        """The digit scenes (`tfnas.data.digit_scenes`); `kwargs` go to it."""
        from tfnas.data.digits import digit_scenes, num_classes

        classes = num_classes(kwargs.get("digits"))
        if classes != self.num_classes:
            raise ValueError(
                f"the digit scenes have {classes} classes but the task "
                f"has num_classes={self.num_classes}; pass digits=... with "
                f"{self.num_classes - 1} digits"
            )
        return digit_scenes(split, image_size=image_size, num_scenes=num_samples, seed=seed, **kwargs)

    def postprocess(self, outputs, image_size):
        """`classes` and `probabilities` at the input size (logits resized bilinearly)."""
        logits = tf.image.resize(outputs, image_size, method="bilinear")
        return {
            "classes": tf.argmax(logits, axis=-1, output_type=tf.int32),
            "probabilities": tf.nn.softmax(logits, axis=-1),
        }

    def config(self):
        return {
            "num_classes": self.num_classes,
            "ignore_label": self.ignore_label,
            "omit": list(self.omit),
            "reward_metric": self.reward_metric,
        }
