"""Top-down single-person pose: heatmap loss, PCKh and flip test (Nekrasov et al., CVPR 2019, Sec. 4.5.1, App. B).

The CVPR 2019 paper trains its found architectures for pose with "the training protocol of
Xiao et al." (SimpleBaselines): one person per crop, one heatmap per joint at output stride
4, Gaussian targets with sigma 2, a mean-squared-error loss in which joints that are not
labelled get weight 0 (`JointsMSELoss`), argmax decoding with a quarter-pixel shift, flip
testing, and MPII's PCKh at 0.5 and 0.1 of the head size (Table 2). Heatmap conventions
are in `tfnas.tasks.keypoints`.

A target is a dict: `keypoints`, float32 `(J, 3)` rows `(x, y, v)` in crop pixels (COCO
flags; v = 0 for joints not labelled), and `head_size`, float32 `()`, MPII's head
normaliser: 0.6 times the diagonal of the head box.

PCKh@t: a labelled joint is correct when its decoded position lies within `t * head_size`
of the truth. Scores pool all labelled joints of all crops (MPII's overall "Mean" weights
joints by their counts the same way; MPII also leaves pelvis and thorax out, which COCO's
17 joints do not have). Reward: `(PCKh@0.5 + PCKh@0.1) / 2`, the two numbers of Table 2;
the @0.1 term keeps ranking architectures once @0.5 saturates on easy data.
"""

import keras
import numpy as np
import tensorflow as tf

from tfnas.tasks import keypoints as kp
from tfnas.tasks.base import Task

__all__ = ["JointsMSELoss", "PCKh", "PoseTask", "flip_test", "joints_mse_loss", "pckh"]


def _keypoints(targets):
    """The keypoints of pose targets (a dict with `keypoints`, or the keypoints tensor)."""
    if isinstance(targets, dict):
        if "keypoints" not in targets:
            raise ValueError(f"pose targets have keys {sorted(targets)}; expected 'keypoints'")
        targets = targets["keypoints"]
    keypoints = tf.cast(tf.convert_to_tensor(targets), tf.float32)
    if keypoints.shape.rank != 3 or keypoints.shape[-1] != 3:
        raise ValueError(
            f"pose keypoints must have shape (N, J, 3), got {keypoints.shape}; a target with a "
            "class map or a depth map is not a pose target"
        )
    return keypoints


def _check_joints(keypoints, heatmaps):
    heatmaps = tf.cast(tf.convert_to_tensor(heatmaps), tf.float32)
    if heatmaps.shape.rank != 4:
        raise ValueError(f"heatmaps must have shape (N, h, w, J), got {heatmaps.shape}")
    if (
        keypoints.shape[1] is not None
        and heatmaps.shape[-1] is not None
        and (keypoints.shape[1] != heatmaps.shape[-1])
    ):
        raise ValueError(
            f"targets have {keypoints.shape[1]} joints but the network outputs "
            f"{heatmaps.shape[-1]} heatmaps; the head needs one channel per joint"
        )
    return heatmaps


def joints_mse_loss(targets, heatmaps, stride=4, sigma=2.0):
    """SimpleBaselines' `JointsMSELoss` with target weights: `0.5 * mean(w * (h - g)^2)`.

    The Gaussian targets `g` (`tfnas.tasks.keypoints.render_heatmaps`) are rendered at the
    heatmaps' size; the mean runs over batch, joints and pixels, and `w` is 0 for joints
    not labelled or outside the image.

    Args:
        targets: dict with `keypoints` `(N, J, 3)` in image pixels, or that tensor.
        heatmaps: float `(N, h, w, J)` at `stride`.
        stride: int, image pixels per heatmap pixel. Default 4.
        sigma: float, Gaussian sigma in heatmap pixels. Default 2.

    Returns:
        float32 scalar tensor.
    """
    keypoints = _keypoints(targets)
    heatmaps = _check_joints(keypoints, heatmaps)
    size = tf.shape(heatmaps)[1:3]
    truth = kp.render_heatmaps(keypoints, size, stride, sigma)
    weights = kp.target_weights(keypoints, size, stride)[:, None, None, :]
    return 0.5 * tf.reduce_mean(weights * tf.square(heatmaps - truth))


@keras.saving.register_keras_serializable(package="tfnas")
class JointsMSELoss(keras.losses.Loss):
    """Keras loss wrapping `joints_mse_loss` (invisible joints masked).

    Args:
        stride: int, output stride of the heatmaps. Default 4.
        sigma: float, Gaussian sigma in heatmap pixels. Default 2.
        name: loss name (default `"joints_mse_loss"`).
    """

    def __init__(self, stride=4, sigma=2.0, name="joints_mse_loss"):
        super().__init__(name=name)
        self.stride = int(stride)
        self.sigma = float(sigma)

    def __call__(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            raise ValueError("JointsMSELoss takes no sample_weight; mark joints to skip with v=0")
        with tf.name_scope(self.name):
            return joints_mse_loss(y_true, y_pred, self.stride, self.sigma)

    def call(self, y_true, y_pred):
        return joints_mse_loss(y_true, y_pred, self.stride, self.sigma)

    def get_config(self):
        return {"name": self.name, "stride": self.stride, "sigma": self.sigma}


def _pckh_counts(keypoints, head_size, predicted, thresholds):
    """Per-joint labelled counts `(J,)` and correct counts `(len(thresholds), J)`."""
    labelled = keypoints[..., 2] > 0
    distance = tf.norm(predicted[..., :2] - keypoints[..., :2], axis=-1)
    normalised = distance / tf.reshape(tf.cast(head_size, tf.float32), [-1, 1])
    total = tf.reduce_sum(tf.cast(labelled, tf.float64), axis=0)
    correct = tf.stack(
        [tf.reduce_sum(tf.cast(labelled & (normalised <= t), tf.float64), axis=0) for t in thresholds]
    )
    return total, correct


def pckh(predicted, keypoints, head_size, threshold=0.5):
    """PCKh of predicted joints: share of labelled joints within `threshold * head_size`.

    Args:
        predicted: `(N, J, 2)` or `(N, J, 3)` predicted positions (x, y[, score]).
        keypoints: `(N, J, 3)` true `(x, y, v)`; joints with v = 0 are not counted.
        head_size: `(N,)` head sizes in pixels.
        threshold: float, fraction of the head size. Default 0.5.

    Returns:
        `(mean, per_joint)`: float over all labelled joints, and a list of J floats (NaN
        for a joint never labelled).
    """
    keypoints = tf.convert_to_tensor(keypoints, tf.float32)
    predicted = tf.convert_to_tensor(predicted, tf.float32)
    total, correct = _pckh_counts(keypoints, head_size, predicted, (threshold,))
    total, correct = total.numpy(), correct.numpy()[0]
    per_joint = [float(c / t) if t else float("nan") for c, t in zip(correct, total)]
    return float(correct.sum() / max(total.sum(), 1.0)), per_joint


@keras.saving.register_keras_serializable(package="tfnas")
class PCKh(keras.metrics.Metric):
    """Streaming PCKh of heatmap outputs at two thresholds; `result()` is PCKh at the first.

    Heatmaps are decoded with `tfnas.tasks.keypoints.decode_heatmaps`. `scores()` gives
    `pckh` (at 0.5), `pckh@0.1`, their per-joint values and the reward.

    Args:
        num_joints: int, J.
        stride: int, output stride of the heatmaps. Default 4.
        thresholds: two floats. Default `(0.5, 0.1)`.
        name: metric name (default `"pckh"`).
        dtype: dtype of `result()`.
    """

    def __init__(self, num_joints, stride=4, thresholds=(0.5, 0.1), name="pckh", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.num_joints = int(num_joints)
        self.stride = int(stride)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.total = self.add_variable(
            shape=(self.num_joints,), initializer="zeros", dtype="float64", name="total"
        )
        self.correct = self.add_variable(
            shape=(len(self.thresholds), self.num_joints),
            initializer="zeros",
            dtype="float64",
            name="correct",
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Add a batch: targets (dict with `keypoints` and `head_size`) and heatmaps."""
        if sample_weight is not None:
            raise ValueError("PCKh takes no sample_weight; mark joints to skip with v=0")
        if not isinstance(y_true, dict) or "head_size" not in y_true:
            raise ValueError("PCKh needs targets with 'keypoints' and 'head_size'")
        keypoints = _keypoints(y_true)
        heatmaps = _check_joints(keypoints, y_pred)
        predicted = kp.decode_heatmaps(heatmaps, self.stride)
        total, correct = _pckh_counts(keypoints, y_true["head_size"], predicted, self.thresholds)
        self.total.assign_add(total)
        self.correct.assign_add(correct)

    def result(self):
        return tf.cast(
            tf.math.divide_no_nan(tf.reduce_sum(self.correct[0]), tf.reduce_sum(self.total)), self.dtype
        )

    def scores(self):
        """`pckh`, `pckh@<t>` for each threshold, `per_joint_pckh`, `labelled_joints`, `reward`."""
        total, correct = self.total.numpy(), self.correct.numpy()
        result = {}
        for t, row in zip(self.thresholds, correct):
            result[f"pckh@{t:g}"] = float(row.sum() / max(total.sum(), 1.0))
        result["pckh"] = result[f"pckh@{self.thresholds[0]:g}"]
        result["per_joint_pckh"] = [float(c / n) if n else float("nan") for c, n in zip(correct[0], total)]
        result["labelled_joints"] = int(total.sum())
        result["reward"] = float(np.mean([result[f"pckh@{t:g}"] for t in self.thresholds]))
        return result

    def get_config(self):
        config = super().get_config()
        config.update(num_joints=self.num_joints, stride=self.stride, thresholds=list(self.thresholds))
        return config


def flip_test(predict, images, flip_pairs=kp.COCO_FLIP_PAIRS):
    """Average the heatmaps of images and of their mirror images (SimpleBaselines' flip test).

    The mirror's heatmaps are flipped back and their joints renamed with `flip_pairs`;
    thanks to the half-pixel convention (`tfnas.tasks.keypoints`) no shift is needed.

    Args:
        predict: callable mapping a float image batch to heatmaps `(N, h, w, J)` or to a
            dict whose `"logits"` entry holds them (a Keras model).
        images: float tensor `(N, H, W, 3)`.
        flip_pairs: joint pairs that swap in a mirror image. Default COCO's.

    Returns:
        float32 tensor `(N, h, w, J)`.
    """

    def heatmaps(batch):
        out = predict(batch)
        return tf.cast(out["logits"] if isinstance(out, dict) else out, tf.float32)

    straight = heatmaps(images)
    mirrored = heatmaps(tf.reverse(images, axis=[2]))
    return 0.5 * (straight + kp.flip_heatmaps(mirrored, flip_pairs))


class PoseTask(Task):
    """Top-down single-person pose as a `tfnas.tasks.base.Task` (Nekrasov et al., CVPR 2019, Sec. 4.5.1).

    Target: dict `keypoints` float32 `(J, 3)` and `head_size` float32 `()`. Head: J
    linear heatmaps at stride 4. Loss: `JointsMSELoss`. Metric: `PCKh`. Reward:
    `(PCKh@0.5 + PCKh@0.1) / 2`. An exported model returns `heatmaps` `(N, h, w, J)` and
    `keypoints` `(N, J, 3)`: decoded `(x, y, score)` in input pixels.

    Args:
        num_joints: int, J. Default 17 (COCO).
        flip_pairs: joint pairs swapped by a mirror image. Default COCO's.
        joint_names: names of the joints (default COCO's when J = 17).
        stride: int, heatmap stride. Default 4.
        sigma: float, target Gaussian sigma in heatmap pixels. Default 2.
    """

    name = "pose"
    reward_description = "mean of PCKh@0.5 and PCKh@0.1"
    headline_scores = (("pckh@0.5", "PCKh@0.5"), ("pckh@0.1", "PCKh@0.1"))
    serving_outputs = ("heatmaps", "keypoints")
    TRAINING = {
        "source": "Nekrasov et al. (CVPR 2019), App. B (protocol of Xiao et al.)",
        "optimizer": "adam",
        "learning_rate": 1e-3,
        "schedule": "step",
        "drop_epochs": [90, 120],
        "drop_factor": 0.1,
        "epochs": 140,
        "batch_size": 128,
        "augment": {
            "mpii": {"scale": 0.25, "rotation": 30, "flip": True},
            "coco": {"scale": 0.30, "rotation": 40, "flip": True},
        },
        "crop": {"mpii": [256, 256], "coco": [256, 192]},
    }

    def __init__(self, num_joints=17, flip_pairs=kp.COCO_FLIP_PAIRS, joint_names=None, stride=4, sigma=2.0):
        super().__init__()
        self.num_joints = int(num_joints)
        if self.num_joints < 1:
            raise ValueError(f"num_joints={num_joints!r} must be a positive int")
        self.flip_pairs = tuple(tuple(int(j) for j in pair) for pair in flip_pairs)
        kp.flip_permutation(self.num_joints, self.flip_pairs)  # validate
        if joint_names is None and self.num_joints == len(kp.COCO_KEYPOINTS):
            joint_names = kp.COCO_KEYPOINTS
        self.joint_names = None if joint_names is None else tuple(joint_names)
        if self.joint_names is not None and len(self.joint_names) != self.num_joints:
            raise ValueError(f"{len(self.joint_names)} joint names for {self.num_joints} joints")
        self.output_stride = int(stride)
        self.sigma = float(sigma)

    @property
    def output_channels(self):
        return self.num_joints

    @property
    def target_spec(self):
        return {
            "keypoints": tf.TensorSpec([self.num_joints, 3], tf.float32),
            "head_size": tf.TensorSpec([], tf.float32),
        }

    def validate_target(self, target, image_size=None):
        """Check keypoints (shape, joint count, flags, inside the image) and the head size."""
        if not isinstance(target, dict) or set(target) != {"keypoints", "head_size"}:
            got = sorted(target) if isinstance(target, dict) else type(target).__name__
            raise ValueError(f"a pose target is a dict with 'keypoints' and 'head_size', got {got}")
        keypoints = kp.check_keypoints(target["keypoints"], self.num_joints, image_size)
        head_size = float(np.asarray(target["head_size"]))
        if not head_size > 0:
            raise ValueError(f"head_size is {head_size:g}; PCKh needs a positive head size")
        return {"keypoints": keypoints, "head_size": np.float32(head_size)}

    def padding_target(self, image_size):
        """No labelled joint (v = 0 everywhere), head size 1."""
        return {"keypoints": np.zeros((self.num_joints, 3), np.float32), "head_size": np.float32(1.0)}

    def _make_loss(self):
        return JointsMSELoss(self.output_stride, self.sigma)

    def metric(self, name="pckh"):
        return PCKh(self.num_joints, self.output_stride, name=name)

    def reward(self, scores):
        return float((scores["pckh@0.5"] + scores["pckh@0.1"]) / 2)

    def builtin_data(self, split, image_size=64, num_samples=None, seed=0, **kwargs):
        """Crops of one stick figure each (`tfnas.data.figure_crops`); COCO's 17 joints."""
        from tfnas.data.figures import figure_crops

        if self.num_joints != len(kp.COCO_KEYPOINTS):
            raise ValueError(
                f"the built-in figures have 17 COCO joints, the task {self.num_joints}; use num_joints=17"
            )
        return figure_crops(split, image_size=image_size, num_crops=num_samples, seed=seed, **kwargs)

    def flip(self, image, target):
        width = tf.shape(image)[1]
        return tf.reverse(image, axis=[1]), {
            "keypoints": kp.flip_keypoints(target["keypoints"], width, self.flip_pairs),
            "head_size": target["head_size"],
        }

    def postprocess(self, outputs, image_size):
        """`heatmaps` as output and `keypoints` `(N, J, 3)` decoded in input pixels."""
        heatmaps = tf.cast(outputs, tf.float32)
        stride = tf.cast(image_size[1], tf.float32) / tf.cast(tf.shape(heatmaps)[2], tf.float32)
        return {"heatmaps": heatmaps, "keypoints": kp.decode_heatmaps(heatmaps, stride)}

    def config(self):
        return {
            "num_joints": self.num_joints,
            "flip_pairs": [list(p) for p in self.flip_pairs],
            "joint_names": None if self.joint_names is None else list(self.joint_names),
            "stride": self.output_stride,
            "sigma": self.sigma,
        }
