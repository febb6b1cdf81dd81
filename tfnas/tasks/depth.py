"""Monocular depth: inverse Huber loss, the NYUDv2 metrics and a search reward (Nekrasov et al., CVPR 2019, Sec. 4.5.2, App. B).

The CVPR 2019 paper trains its found architectures on NYUDv2 with "the inverse Huber loss
[Laina et al. 2016] ..., ignoring pixels with missing depth measurements", the logits
upsampled to the size of the target, and reports (Table 3) RMSE (linear and log), absolute
and squared relative error and the threshold accuracies delta < 1.25, 1.25^2, 1.25^3.

A target is a float32 `(H, W)` depth map in metres, 0 marking pixels without a measurement
(the NYUDv2 / Kinect convention). Predictions `(N, h, w, 1)` are resized bilinearly to the
target before any loss or metric.

Metrics (Eigen et al. 2014), over the valid pixels `i` (target `d_i > 0`) of the whole
evaluation set pooled together, predictions `p_i` clamped to at least `min_depth`:

- `rmse`     = sqrt(mean((p - d)^2))
- `rmse_log` = sqrt(mean((ln p - ln d)^2))
- `abs_rel`  = mean(|p - d| / d)
- `sq_rel`   = mean((p - d)^2 / d)
- `delta1..3` = share of pixels with max(p / d, d / p) < 1.25, 1.25^2, 1.25^3.

Reward. The search reward must grow with quality, lie in [0, 1] and not depend on the
unit of depth (a scene scale must not change which architecture wins), so it uses only
the scale-free metrics, combined like segmentation's geometric mean of three scores:

    reward = (delta1 * max(0, 1 - abs_rel) * exp(-rmse_log)) ** (1/3)

(for the paper's arch0 on NYUDv2, Table 3: (0.830 * 0.864 * 0.832) ** (1/3) = 0.841).
"""

import math

import keras
import numpy as np
import tensorflow as tf

from tfnas.tasks.base import Task

__all__ = ["BerHuLoss", "DepthMetrics", "DepthTask", "berhu_loss", "depth_scores"]

#: Names of the depth scores, in the order of Table 3.
SCORE_NAMES = ("rmse", "rmse_log", "abs_rel", "sq_rel", "delta1", "delta2", "delta3")
_SUMS = ("count", "squared_error", "squared_log_error", "abs_rel", "sq_rel", "delta1", "delta2", "delta3")


def _as_depth(targets):
    """Return depth targets as float32 `(N, H, W)`, accepting `(N, H, W, 1)`."""
    targets = tf.convert_to_tensor(targets)
    if targets.dtype.is_integer or targets.dtype == tf.bool:
        raise ValueError(
            f"depth targets must be float depths in metres, got dtype {targets.dtype.name}: an "
            "integer map looks like a segmentation mask; convert raw sensor units with a "
            "depth scale (tfnas.data.image_depth_folder does)"
        )
    if targets.shape.rank == 4 and targets.shape[-1] == 1:
        targets = targets[..., 0]
    if targets.shape.rank != 3:
        raise ValueError(f"depth targets must have shape (N, H, W), got {targets.shape}")
    return tf.cast(targets, tf.float32)


def _as_prediction(predictions, size):
    """Resize `(N, h, w, 1)` (or `(N, h, w)`) predictions to `size`; returns `(N, H, W)`."""
    predictions = tf.cast(tf.convert_to_tensor(predictions), tf.float32)
    if predictions.shape.rank == 3:
        predictions = predictions[..., None]
    if predictions.shape.rank != 4 or predictions.shape[-1] != 1:
        raise ValueError(
            f"depth predictions must have shape (N, h, w, 1), got {predictions.shape}; a depth "
            "head has one output channel"
        )
    static = tuple(predictions.shape[1:3])
    if not (isinstance(size, tuple) and static == size):
        predictions = tf.image.resize(predictions, size, method="bilinear")
    return predictions[..., 0]


def _size(targets):
    static = tuple(targets.shape[1:3])
    return static if None not in static else tf.shape(targets)[1:3]


def berhu_loss(targets, predictions, threshold=0.2):
    """Inverse Huber (berHu) loss over pixels with a depth measurement (Laina et al. 2016).

    With `x` the error of a valid pixel and `c = threshold * max |x|` over the valid pixels
    of the batch (`c` is not differentiated, as in Laina et al.):
    `B(x) = |x|` when `|x| <= c`, else `(x^2 + c^2) / (2c)`. The loss is the mean of `B`
    over valid pixels (target > 0), 0 when there is none.

    Args:
        targets: float depths `(N, H, W)` or `(N, H, W, 1)`, 0 where missing.
        predictions: float `(N, h, w, 1)`, resized bilinearly to `(H, W)` when they differ.
        threshold: float, `c` as a fraction of the largest error. Default 0.2.

    Returns:
        float32 scalar tensor.

    Raises:
        ValueError: if the targets are integer (a class mask) or shapes are wrong.
    """
    targets = _as_depth(targets)
    predictions = _as_prediction(predictions, _size(targets))
    valid = targets > 0
    error = tf.where(valid, tf.abs(predictions - targets), 0.0)
    c = tf.stop_gradient(threshold * tf.reduce_max(error))
    quadratic = tf.math.divide_no_nan(tf.square(error) + tf.square(c), 2.0 * c)
    berhu = tf.where(error <= c, error, quadratic)
    weights = tf.cast(valid, tf.float32)
    return tf.math.divide_no_nan(tf.reduce_sum(berhu * weights), tf.reduce_sum(weights))


@keras.saving.register_keras_serializable(package="tfnas")
class BerHuLoss(keras.losses.Loss):
    """Keras loss wrapping `berhu_loss` (missing pixels skipped, prediction resized).

    Args:
        threshold: float, berHu's `c` as a fraction of the batch's largest error. Default 0.2.
        name: loss name (default `"berhu_loss"`).
    """

    def __init__(self, threshold=0.2, name="berhu_loss"):
        super().__init__(name=name)
        self.threshold = float(threshold)

    def __call__(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            raise ValueError("BerHuLoss takes no sample_weight; mark pixels to skip with depth 0")
        with tf.name_scope(self.name):
            return berhu_loss(y_true, y_pred, self.threshold)

    def call(self, y_true, y_pred):
        """Loss of a batch; see `berhu_loss`."""
        return berhu_loss(y_true, y_pred, self.threshold)

    def get_config(self):
        return {"name": self.name, "threshold": self.threshold}


def _sums(targets, predictions, min_depth):
    """The 8 sums the depth scores need, as a float64 vector (see `_SUMS`)."""
    valid = targets > 0
    d = tf.cast(tf.boolean_mask(targets, valid), tf.float64)
    p = tf.maximum(tf.cast(tf.boolean_mask(predictions, valid), tf.float64), min_depth)
    ratio = tf.maximum(p / d, d / p)
    return tf.stack(
        [
            tf.cast(tf.size(d), tf.float64),
            tf.reduce_sum(tf.square(p - d)),
            tf.reduce_sum(tf.square(tf.math.log(p) - tf.math.log(d))),
            tf.reduce_sum(tf.abs(p - d) / d),
            tf.reduce_sum(tf.square(p - d) / d),
            tf.reduce_sum(tf.cast(ratio < 1.25, tf.float64)),
            tf.reduce_sum(tf.cast(ratio < 1.25**2, tf.float64)),
            tf.reduce_sum(tf.cast(ratio < 1.25**3, tf.float64)),
        ]
    )


def _scores_from_sums(sums):
    sums = dict(zip(_SUMS, (float(v) for v in np.asarray(sums))))
    count = sums["count"]
    if count == 0:
        result = {name: math.nan for name in SCORE_NAMES}
    else:
        result = {
            "rmse": math.sqrt(sums["squared_error"] / count),
            "rmse_log": math.sqrt(sums["squared_log_error"] / count),
            "abs_rel": sums["abs_rel"] / count,
            "sq_rel": sums["sq_rel"] / count,
            **{f"delta{k}": sums[f"delta{k}"] / count for k in (1, 2, 3)},
        }
    result["valid_pixels"] = int(count)
    result["reward"] = depth_reward(result)
    return result


def depth_reward(scores):
    """`(delta1 * max(0, 1 - abs_rel) * exp(-rmse_log)) ** (1/3)`; 0 without valid pixels."""
    values = (scores["delta1"], scores["abs_rel"], scores["rmse_log"])
    if any(math.isnan(v) for v in values):
        return 0.0
    delta1, abs_rel, rmse_log = values
    return float((delta1 * max(0.0, 1.0 - abs_rel) * math.exp(-rmse_log)) ** (1.0 / 3.0))


def depth_scores(targets, predictions, min_depth=1e-3):
    """The depth scores and reward of a batch (see the module docstring). Call eagerly.

    Args:
        targets: float depths `(N, H, W)` (or `(H, W)`), 0 where missing.
        predictions: float `(N, h, w, 1)`, `(N, H, W)` or `(H, W)` depths.
        min_depth: float, predictions are clamped to at least this. Default 1e-3.

    Returns:
        dict of floats: `rmse`, `rmse_log`, `abs_rel`, `sq_rel`, `delta1`, `delta2`,
        `delta3` (NaN when no pixel is valid), `valid_pixels` and `reward`.
    """
    targets = tf.convert_to_tensor(targets)
    predictions = tf.convert_to_tensor(predictions)
    if targets.shape.rank == 2:
        targets = targets[None]
    if predictions.shape.rank == 2:
        predictions = predictions[None]
    targets = _as_depth(targets)
    predictions = _as_prediction(predictions, _size(targets))
    return _scores_from_sums(_sums(targets, predictions, min_depth))


@keras.saving.register_keras_serializable(package="tfnas")
class DepthMetrics(keras.metrics.Metric):
    """Streaming depth metrics over all valid pixels; `result()` is the linear RMSE.

    `scores()` gives every score of the module and the reward.

    Args:
        min_depth: float, predictions are clamped to at least this. Default 1e-3.
        name: metric name (default `"depth_metrics"`).
        dtype: dtype of `result()`.
    """

    def __init__(self, min_depth=1e-3, name="depth_metrics", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.min_depth = float(min_depth)
        self.sums = self.add_variable(shape=(len(_SUMS),), initializer="zeros", dtype="float64", name="sums")

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Add a batch: depths `(N, H, W)` and predictions `(N, h, w, 1)`."""
        if sample_weight is not None:
            raise ValueError("DepthMetrics takes no sample_weight; mark pixels to skip with 0")
        targets = _as_depth(y_true)
        predictions = _as_prediction(y_pred, _size(targets))
        self.sums.assign_add(_sums(targets, predictions, self.min_depth))

    def result(self):
        count = self.sums[0]
        return tf.cast(tf.sqrt(tf.math.divide_no_nan(self.sums[1], count)), self.dtype)

    def scores(self):
        """All depth scores and the reward of what was accumulated."""
        return _scores_from_sums(self.sums.numpy())

    def get_config(self):
        config = super().get_config()
        config.update(min_depth=self.min_depth)
        return config


class DepthTask(Task):
    """Monocular depth prediction as a `tfnas.tasks.base.Task` (Nekrasov et al., CVPR 2019, Sec. 4.5.2).

    Target: float32 `(H, W)` depth in metres, 0 where missing. Head: one linear channel,
    any stride (the loss resizes it to the target). Loss: `BerHuLoss`. Metric:
    `DepthMetrics`. Reward: `depth_reward` (module docstring). An exported model returns
    `depth`, float32 `(N, H, W)` in metres at the input size, clamped at 0.

    Args:
        max_depth: float, largest depth a target may hold (metres); larger values are
            reported by `validate_target` as a unit mistake. Default 100.
        min_depth: float, clamp of predictions in the metrics. Default 1e-3.
        threshold: float, berHu's `c` fraction. Default 0.2.
    """

    name = "depth"
    reward_description = "geometric mean of delta<1.25, 1 - abs rel and exp(-log RMSE)"
    headline_scores = (("rmse", "RMSE"), ("abs_rel", "abs rel"), ("delta1", "δ<1.25"))
    serving_outputs = ("depth",)
    TRAINING = {
        "source": "Nekrasov et al. (CVPR 2019), App. B (NYUDv2)",
        "optimizer": "sgd",
        "momentum": 0.9,
        "learning_rate": {"encoder": 1e-3, "decoder": 7e-3},
        "schedule": "poly",
        "poly_epochs": 400,
        "poly_power": 0.9,
        "epochs": 300,
        "batch_size": 32,
        "augment": {"scale": [0.5, 2.0], "flip": True, "crop": 500},
    }

    def __init__(self, max_depth=100.0, min_depth=1e-3, threshold=0.2):
        super().__init__()
        self.max_depth = float(max_depth)
        self.min_depth = float(min_depth)
        self.threshold = float(threshold)

    @property
    def output_channels(self):
        return 1

    @property
    def target_spec(self):
        return tf.TensorSpec([None, None], tf.float32, name="depth")

    def validate_target(self, target, image_size=None):
        """Check a depth map: float `(H, W)` metres, non-negative, finite, plausible range."""
        depth = np.asarray(target)
        if depth.ndim == 3 and depth.shape[-1] == 1:
            depth = depth[..., 0]
        if not np.issubdtype(depth.dtype, np.floating):
            raise ValueError(
                f"depth targets are float depths in metres, got dtype {depth.dtype}: this looks "
                "like a segmentation mask or raw sensor units; convert with a depth scale"
            )
        if depth.ndim != 2:
            raise ValueError(f"a depth map has shape (H, W), got {depth.shape}")
        if image_size is not None and tuple(depth.shape) != tuple(image_size):
            raise ValueError(f"depth map is {depth.shape} but its image is {tuple(image_size)}")
        if not np.all(np.isfinite(depth)):
            raise ValueError("depth map holds NaN or infinite values; mark missing pixels with 0")
        if (depth < 0).any():
            raise ValueError(f"depth map holds negative depth {depth.min():g}; depths are >= 0")
        if depth.max(initial=0.0) > self.max_depth:
            raise ValueError(
                f"depth map holds {depth.max():g} m, above max_depth={self.max_depth:g}; raw "
                "sensor units (e.g. millimetres) need a depth scale (0.001 for Kinect PNGs)"
            )
        return depth.astype(np.float32)

    def padding_target(self, image_size):
        """A depth map without measurements (all 0)."""
        return np.zeros(tuple(image_size), np.float32)

    def _make_loss(self):
        return BerHuLoss(self.threshold)

    def metric(self, name="depth_metrics"):
        return DepthMetrics(self.min_depth, name=name)

    def reward(self, scores):
        return depth_reward(scores)

    def builtin_data(self, split, image_size=64, num_samples=None, seed=0, **kwargs):
        """The depth scenes (`tfnas.data.depth_scenes`); `kwargs` go to it."""
        from tfnas.data.depth_scenes import depth_scenes

        return depth_scenes(split, image_size=image_size, num_scenes=num_samples, seed=seed, **kwargs)

    def postprocess(self, outputs, image_size):
        """`depth`: float32 `(N, H, W)` in metres at the input size, clamped at 0."""
        depth = tf.image.resize(tf.cast(outputs, tf.float32), image_size, method="bilinear")
        return {"depth": tf.nn.relu(depth[..., 0])}

    def config(self):
        return {"max_depth": self.max_depth, "min_depth": self.min_depth, "threshold": self.threshold}
