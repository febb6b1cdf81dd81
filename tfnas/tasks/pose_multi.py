"""Bottom-up multi-person pose: heatmaps + associative-embedding tags, grouping and COCO AP (3M-Pose, Hoang (3M-Pose, 2021)).

3M-Pose searches a network whose output at 1/4 resolution is 17 heatmaps followed by 17
scalar tag maps ("the scalar tag for every keypoint", associative embedding, Newell et al.
2017), 34 channels as HigherHRNet's `tag_per_joint` head (3M-POSE.md sections 1, 14, 16):

- heatmap loss: mean squared error to Gaussian targets (sigma 2, stride 4; per joint the
  maximum over people), as HigherHRNet's `HeatmapLoss` (no crowd mask: targets here carry
  no crowd regions);
- grouping loss (AE): with `h_k(x)` the tag of joint k at pixel x and `hbar_n` the mean tag
  of person n over its labelled joints,
  pull = mean over people of the mean over their joints of `(h_k(x_nk) - hbar_n)^2`,
  push = mean over ordered pairs n != n' of `exp(-(hbar_n - hbar_n')^2)`,
  both per image and then averaged over the batch (a tag is read at the joint's pixel,
  rounded, as HigherHRNet does). HigherHRNet halves its push term; 3M-POSE.md section 14 does
  not, and neither does tfnas. Final training weights: heatmaps 1, grouping 1e-3.
- decoding (HigherHRNet / AE): max-pool NMS (5x5), the top 30 peaks per joint, then joints
  are taken one at a time in `COCO_GROUPING_ORDER`; the peaks above `detection_threshold`
  (0.1) are matched to the people found so far by the Hungarian algorithm on the cost
  `round(tag distance) * 100 - peak score`, a match being kept when the tag distance is
  below `tag_threshold` (1.0); unmatched peaks start new people. A person's score is the
  mean of its joint scores. HigherHRNet's optional refinement (filling missing joints from
  the heatmaps) is not done.
- evaluation: COCO OKS AP/AR through pycocotools' `COCOeval` (the reference code).

A target is a dict: `keypoints`, float32 `(P, J, 3)` (people padded to a fixed P with
all-unlabelled rows), and `area`, float32 `(P,)`, each person's segment area in pixels (OKS
scale; COCO's `area`).
"""

import contextlib
import io

import keras
import numpy as np
import tensorflow as tf

from tfnas.tasks import keypoints as kp
from tfnas.tasks.base import Task

__all__ = [
    "AssociativeEmbeddingLoss",
    "COCOKeypointAP",
    "PoseMultiTask",
    "ae_loss",
    "coco_keypoint_eval",
    "decode",
    "flip_test_multi",
    "group",
    "multi_pose_loss",
]

#: Names of COCOeval's 10 keypoint statistics, in `COCOeval.stats` order.
COCO_STAT_NAMES = (
    "ap",
    "ap50",
    "ap75",
    "ap_medium",
    "ap_large",
    "ar",
    "ar50",
    "ar75",
    "ar_medium",
    "ar_large",
)


def _targets(targets, num_joints=None):
    if isinstance(targets, dict):
        targets = targets["keypoints"]
    keypoints = tf.cast(tf.convert_to_tensor(targets), tf.float32)
    if keypoints.shape.rank != 4 or keypoints.shape[-1] != 3:
        raise ValueError(f"multi-person keypoints must have shape (N, P, J, 3), got {keypoints.shape}")
    if num_joints is not None and keypoints.shape[2] not in (None, num_joints):
        raise ValueError(f"targets have {keypoints.shape[2]} joints, the task {num_joints}")
    return keypoints


def _split_outputs(outputs, num_joints):
    outputs = tf.cast(tf.convert_to_tensor(outputs), tf.float32)
    if outputs.shape.rank != 4 or outputs.shape[-1] not in (None, 2 * num_joints):
        raise ValueError(
            f"outputs have shape {outputs.shape}; a bottom-up pose head has {2 * num_joints} "
            f"channels: {num_joints} heatmaps then {num_joints} tag maps"
        )
    return outputs[..., :num_joints], outputs[..., num_joints:]


def ae_loss(keypoints, tags, stride=4):
    """Associative-embedding pull and push losses of scalar tag maps (module docstring).

    Args:
        keypoints: float `(N, P, J, 3)` in image pixels (unlabelled people: all v = 0).
        tags: float `(N, h, w, J)` tag maps at `stride`.
        stride: int, image pixels per tag-map pixel. Default 4.

    Returns:
        `(pull, push)`: float32 scalars, means over the batch.
    """
    keypoints = _targets(keypoints)
    tags = tf.cast(tf.convert_to_tensor(tags), tf.float32)
    shape = tf.shape(tags)
    height, width = shape[1], shape[2]
    valid = kp.target_weights(keypoints, (height, width), stride)  # (N, P, J)
    ix = tf.clip_by_value(tf.cast(tf.round(kp.to_heatmap(keypoints[..., 0], stride)), tf.int32), 0, width - 1)
    iy = tf.clip_by_value(
        tf.cast(tf.round(kp.to_heatmap(keypoints[..., 1], stride)), tf.int32), 0, height - 1
    )
    flat = tf.reshape(tf.transpose(tags, [0, 3, 1, 2]), [shape[0], shape[3], -1])  # (N, J, hw)
    index = tf.transpose(iy * width + ix, [0, 2, 1])  # (N, J, P)
    values = tf.transpose(tf.gather(flat, index, batch_dims=2), [0, 2, 1])  # (N, P, J)

    count = tf.reduce_sum(valid, axis=-1)  # (N, P)
    mean = tf.math.divide_no_nan(tf.reduce_sum(values * valid, axis=-1), count)
    spread = tf.math.divide_no_nan(tf.reduce_sum(valid * tf.square(values - mean[..., None]), axis=-1), count)
    person = tf.cast(count > 0, tf.float32)
    people = tf.reduce_sum(person, axis=-1)  # (N,)
    pull = tf.math.divide_no_nan(tf.reduce_sum(spread * person, axis=-1), people)
    pairs = person[:, :, None] * person[:, None, :] * (1.0 - tf.eye(tf.shape(person)[1], dtype=tf.float32))
    difference = mean[:, :, None] - mean[:, None, :]
    push = tf.math.divide_no_nan(
        tf.reduce_sum(pairs * tf.exp(-tf.square(difference)), axis=[1, 2]), tf.reduce_sum(pairs, axis=[1, 2])
    )
    return tf.reduce_mean(pull), tf.reduce_mean(push)


def multi_pose_loss(targets, outputs, num_joints=17, stride=4, sigma=2.0, tag_weight=1e-3):
    """Heatmap MSE plus `tag_weight` times the AE pull and push losses.

    Args:
        targets: dict with `keypoints` `(N, P, J, 3)`, or that tensor.
        outputs: float `(N, h, w, 2J)`: heatmaps then tags, at `stride`.
        num_joints: int, J. Default 17.
        stride: int. Default 4.
        sigma: float, heatmap Gaussian sigma. Default 2.
        tag_weight: float, weight of pull + push. Default 1e-3 (3M-Pose, final training).

    Returns:
        `(total, parts)`: float32 scalar and dict `heatmap_loss`, `pull_loss`, `push_loss`.
    """
    keypoints = _targets(targets, num_joints)
    heatmaps, tags = _split_outputs(outputs, num_joints)
    truth = kp.render_heatmaps(keypoints, tf.shape(heatmaps)[1:3], stride, sigma)
    heat = tf.reduce_mean(tf.square(heatmaps - truth))
    pull, push = ae_loss(keypoints, tags, stride)
    total = heat + tag_weight * (pull + push)
    return total, {"heatmap_loss": heat, "pull_loss": pull, "push_loss": push}


@keras.saving.register_keras_serializable(package="tfnas")
class AssociativeEmbeddingLoss(keras.losses.Loss):
    """Keras loss: heatmap MSE + `tag_weight * (pull + push)` (`multi_pose_loss`).

    Args:
        num_joints: int, J. Default 17.
        stride: int, output stride. Default 4.
        sigma: float, heatmap sigma. Default 2.
        tag_weight: float. Default 1e-3.
        name: loss name (default `"associative_embedding_loss"`).
    """

    def __init__(
        self, num_joints=17, stride=4, sigma=2.0, tag_weight=1e-3, name="associative_embedding_loss"
    ):
        super().__init__(name=name)
        self.num_joints = int(num_joints)
        self.stride = int(stride)
        self.sigma = float(sigma)
        self.tag_weight = float(tag_weight)

    def __call__(self, y_true, y_pred, sample_weight=None):
        if sample_weight is not None:
            raise ValueError("AssociativeEmbeddingLoss takes no sample_weight")
        with tf.name_scope(self.name):
            return self.call(y_true, y_pred)

    def call(self, y_true, y_pred):
        return multi_pose_loss(y_true, y_pred, self.num_joints, self.stride, self.sigma, self.tag_weight)[0]

    def get_config(self):
        return {
            "name": self.name,
            "num_joints": self.num_joints,
            "stride": self.stride,
            "sigma": self.sigma,
            "tag_weight": self.tag_weight,
        }


def flip_test_multi(predict, images, num_joints=17, flip_pairs=kp.COCO_FLIP_PAIRS):
    """Heatmaps averaged over an image and its mirror; tags of both kept (HigherHRNet).

    Args:
        predict: callable mapping images to outputs `(N, h, w, 2J)` (or a dict with them
            under `"logits"`).
        images: float tensor `(N, H, W, 3)`.
        num_joints: int, J.
        flip_pairs: joint pairs swapped by a mirror image.

    Returns:
        `(heatmaps, tags)`: `(N, h, w, J)` and `(N, h, w, J, 2)` (straight, mirrored).
    """

    def run(batch):
        out = predict(batch)
        return _split_outputs(out["logits"] if isinstance(out, dict) else out, num_joints)

    heat, tags = run(images)
    heat_m, tags_m = run(tf.reverse(images, axis=[2]))
    heatmaps = 0.5 * (heat + kp.flip_heatmaps(heat_m, flip_pairs))
    return heatmaps, tf.stack([tags, kp.flip_heatmaps(tags_m, flip_pairs)], axis=-1)


def group(
    scores,
    positions,
    tags,
    detection_threshold=0.1,
    tag_threshold=1.0,
    joint_order=kp.COCO_GROUPING_ORDER,
    max_people=30,
    use_detection_value=True,
):
    """Group the peaks of one image into people by their tags (HigherHRNet's `match_by_tag`).

    Args:
        scores: array `(J, k)` of peak scores (from `heatmap_candidates`).
        positions: array `(J, k, 2)` of peak positions in image pixels.
        tags: array `(J, k, D)` (or `(J, k)`) of peak tags.
        detection_threshold: float, peaks at or below are dropped. Default 0.1.
        tag_threshold: float, largest tag distance of a match. Default 1.0.
        joint_order: order in which joints are grouped. Default COCO's head-first order;
            None takes joints 0..J-1.
        max_people: int, only the first `max_people` people take part in the matching.
        use_detection_value: bool, the cost is `round(distance) * 100 - score` (True,
            HigherHRNet) or the distance itself.

    Returns:
        `(people, person_scores)`: float32 `(Q, J, 3)` rows `(x, y, score)` (zeros for joints
        a person lacks) and float32 `(Q,)`, the mean joint score.
    """
    from scipy.optimize import linear_sum_assignment

    scores = np.asarray(scores, np.float64)
    positions = np.asarray(positions, np.float64)
    tags = np.asarray(tags, np.float64)
    if tags.ndim == 2:
        tags = tags[..., None]
    num_joints = scores.shape[0]
    order = range(num_joints) if joint_order is None else joint_order
    if sorted(order) != list(range(num_joints)):
        raise ValueError(f"joint_order {list(order)} is not an order of joints 0..{num_joints - 1}")
    people, people_tags = [], []

    def start(joint, score, position, tag):
        person = np.zeros((num_joints, 3))
        person[joint] = (*position, score)
        people.append(person)
        people_tags.append([tag])

    for joint in order:
        keep = scores[joint] > detection_threshold
        found = list(zip(scores[joint][keep], positions[joint][keep], tags[joint][keep]))
        if not found:
            continue
        if not people:
            for candidate in found:
                start(joint, *candidate)
            continue
        grouped = min(len(people), max_people)
        means = np.stack([np.mean(people_tags[i], axis=0) for i in range(grouped)])
        candidate_tags = np.stack([tag for _, _, tag in found])
        distance = np.linalg.norm(candidate_tags[:, None] - means[None], axis=-1)
        cost = distance
        if use_detection_value:
            cost = np.round(distance) * 100 - np.array([s for s, _, _ in found])[:, None]
        rows, cols = linear_sum_assignment(cost)
        matched = set()
        for row, col in zip(rows, cols):
            if distance[row, col] < tag_threshold:
                score, position, tag = found[row]
                people[col][joint] = (*position, score)
                people_tags[col].append(tag)
                matched.add(row)
        for row, candidate in enumerate(found):
            if row not in matched:
                start(joint, *candidate)
    if not people:
        return np.zeros((0, num_joints, 3), np.float32), np.zeros((0,), np.float32)
    people = np.stack(people).astype(np.float32)
    return people, people[..., 2].mean(axis=-1)


def decode(heatmaps, tags, stride=4, k=30, nms_kernel=5, **group_kwargs):
    """Decode network outputs into people, image by image (NMS, top-k, `group`).

    Args:
        heatmaps: float `(N, h, w, J)`.
        tags: float `(N, h, w, J)` or `(N, h, w, J, D)`.
        stride: image pixels per heatmap pixel. Default 4.
        k: peaks kept per joint. Default 30.
        nms_kernel: NMS window. Default 5.
        **group_kwargs: passed to `group`.

    Returns:
        list of N pairs `(people (Q, J, 3), person_scores (Q,))`.
    """
    scores, positions, tag_values = kp.heatmap_candidates(heatmaps, tags, k, stride, nms_kernel)
    return [
        group(s, p, t, **group_kwargs)
        for s, p, t in zip(scores.numpy(), positions.numpy(), tag_values.numpy())
    ]


def _pycocotools():
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as error:
        raise ImportError(
            "COCO keypoint AP needs pycocotools, the reference COCO evaluation code; install "
            "it with `pip install pycocotools==2.0.11`"
        ) from error
    return COCO, COCOeval


def _bbox(person):
    labelled = person[:, 2] > 0
    xs, ys = person[labelled, 0], person[labelled, 1]
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min()), float(ys.max() - ys.min())]


def coco_ground_truth(ground_truth, image_sizes=None, joint_names=kp.COCO_KEYPOINTS):
    """A COCO-format keypoints annotation dict from per-image arrays.

    Args:
        ground_truth: list (one entry per image) of `(keypoints (P, J, 3), area (P,))`;
            people with no labelled joint (padding) are left out.
        image_sizes: optional list of `(height, width)`.
        joint_names: names of the J joints.

    Returns:
        dict with `images`, `annotations` and `categories` (image ids are 1-based indices).
    """
    images, annotations = [], []
    for index, (people, areas) in enumerate(ground_truth):
        image = {"id": index + 1}
        if image_sizes is not None:
            image["height"], image["width"] = (int(v) for v in image_sizes[index])
        images.append(image)
        for person, area in zip(np.asarray(people, np.float64), np.asarray(areas, np.float64)):
            labelled = int((person[:, 2] > 0).sum())
            if not labelled:
                continue
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": index + 1,
                    "category_id": 1,
                    "keypoints": [float(v) for v in person.reshape(-1)],
                    "num_keypoints": labelled,
                    "area": float(area),
                    "bbox": _bbox(person),
                    "iscrowd": 0,
                }
            )
    category = {"id": 1, "name": "person", "supercategory": "person", "keypoints": list(joint_names)}
    return {"images": images, "annotations": annotations, "categories": [category]}


def coco_keypoint_eval(ground_truth, detections, sigmas=None, image_sizes=None):
    """COCO OKS AP/AR of detected people, computed by pycocotools' `COCOeval`.

    Args:
        ground_truth: list of `(keypoints (P, J, 3), area (P,))` per image.
        detections: list (same length) of `(people (Q, J, 3), person_scores (Q,))`, rows
            `(x, y, score)`, e.g. from `decode`.
        sigmas: per-joint OKS constants (J,); default COCO's (J must be 17).
        image_sizes: optional list of `(height, width)`.

    Returns:
        dict of floats named by `COCO_STAT_NAMES` (`ap` is AP over OKS 0.50:0.95;
        -1 where COCOeval has no ground truth in an area range), and `people`, the number
        of labelled ground-truth people.

    Raises:
        ImportError: if pycocotools is not installed.
        ValueError: if the lists differ in length, no person is labelled, or joint counts
            do not match the sigmas.
    """
    COCO, COCOeval = _pycocotools()
    if len(ground_truth) != len(detections):
        raise ValueError(
            f"{len(ground_truth)} ground-truth images but {len(detections)} "
            "detection lists; pass one of each per image"
        )
    dataset = coco_ground_truth(ground_truth, image_sizes)
    if not dataset["annotations"]:
        raise ValueError("no labelled person in the ground truth; COCO AP is undefined")
    num_joints = len(dataset["annotations"][0]["keypoints"]) // 3
    sigmas = kp.COCO_SIGMAS if sigmas is None else np.asarray(sigmas, np.float64)
    if len(sigmas) != num_joints:
        raise ValueError(f"{len(sigmas)} OKS sigmas for {num_joints} joints; pass one per joint")
    results = []
    for index, (people, person_scores) in enumerate(detections):
        for person, score in zip(np.asarray(people, np.float64), np.asarray(person_scores)):
            results.append(
                {
                    "image_id": index + 1,
                    "category_id": 1,
                    "keypoints": [float(v) for v in person.reshape(-1)],
                    "score": float(score),
                }
            )
    stats = {name: 0.0 for name in COCO_STAT_NAMES}
    if results:
        with contextlib.redirect_stdout(io.StringIO()):
            coco = COCO()
            coco.dataset = dataset
            coco.createIndex()
            evaluation = COCOeval(coco, coco.loadRes(results), "keypoints")
            evaluation.params.kpt_oks_sigmas = sigmas
            evaluation.evaluate()
            evaluation.accumulate()
            evaluation.summarize()
        stats = {name: float(v) for name, v in zip(COCO_STAT_NAMES, evaluation.stats)}
    stats["people"] = len(dataset["annotations"])
    return stats


@keras.saving.register_keras_serializable(package="tfnas")
class COCOKeypointAP(keras.metrics.Metric):
    """Streaming COCO keypoint AP: decodes each batch and evaluates with pycocotools.

    Peaks are found in the graph (`heatmap_candidates`); targets and peaks are handed to
    Python with `tf.py_function` (so run it without XLA: `jit_compile=False`), grouped
    there, and `scores()` runs `coco_keypoint_eval` on everything seen since the last reset.
    Images whose people all have a negative area (`PoseMultiTask.padding_target`) are
    skipped, so an evaluation set can be padded to whole batches.

    Args:
        num_joints: int, J. Default 17.
        stride: int, output stride. Default 4.
        k: peaks per joint. Default 30.
        sigmas: OKS constants (default COCO's).
        name: metric name (default `"coco_keypoint_ap"`).
        dtype: dtype of `result()`.
    """

    def __init__(
        self, num_joints=17, stride=4, k=30, sigmas=None, name="coco_keypoint_ap", dtype=None, **group_kwargs
    ):
        super().__init__(name=name, dtype=dtype)
        _pycocotools()
        self.num_joints = int(num_joints)
        self.stride = int(stride)
        self.k = int(k)
        self.sigmas = None if sigmas is None else [float(s) for s in sigmas]
        self.group_kwargs = group_kwargs
        self.images = self.add_variable(shape=(), initializer="zeros", dtype="int64", name="images")
        self._store = []
        self._cache = (None, None)

    def _add(self, keypoints, areas, scores, positions, tags):
        for args in zip(keypoints.numpy(), areas.numpy(), scores.numpy(), positions.numpy(), tags.numpy()):
            people, area, s, p, t = args
            if len(area) and (area < 0).all():
                continue  # a padding image (`PoseMultiTask.padding_target`)
            self._store.append(((people, area), group(s, p, t, **self.group_kwargs)))
        return np.int64(len(keypoints.numpy()))

    def update_state(self, y_true, y_pred, sample_weight=None):
        """Add a batch: targets (dict `keypoints`, `area`) and outputs `(N, h, w, 2J)`."""
        if sample_weight is not None:
            raise ValueError("COCOKeypointAP takes no sample_weight")
        keypoints = _targets(y_true, self.num_joints)
        heatmaps, tags = _split_outputs(y_pred, self.num_joints)
        scores, positions, tag_values = kp.heatmap_candidates(heatmaps, tags, self.k, self.stride)
        added = tf.py_function(
            self._add, [keypoints, y_true["area"], scores, positions, tag_values], tf.int64
        )
        added.set_shape([])
        self.images.assign_add(added)

    def reset_state(self):
        super().reset_state()
        self._store = []
        self._cache = (None, None)

    def scores(self):
        """COCO statistics (`COCO_STAT_NAMES`) and `reward` (= `ap`) of all batches seen."""
        if self._cache[0] != len(self._store):
            if not self._store:
                raise ValueError("COCOKeypointAP has seen no image; call update_state first")
            stats = coco_keypoint_eval([g for g, _ in self._store], [d for _, d in self._store], self.sigmas)
            stats["reward"] = stats["ap"]
            self._cache = (len(self._store), stats)
        return dict(self._cache[1])

    def result(self):
        """COCO AP of what was seen (computed in Python; 0 before any image)."""
        ap = tf.py_function(lambda: np.float32(self.scores()["ap"] if self._store else 0.0), [], tf.float32)
        return tf.cast(ap, self.dtype)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_joints=self.num_joints, stride=self.stride, k=self.k, sigmas=self.sigmas, **self.group_kwargs
        )
        return config


class PoseMultiTask(Task):
    """Bottom-up multi-person pose as a `tfnas.tasks.base.Task` (3M-Pose, Hoang (3M-Pose, 2021)).

    Target: dict `keypoints` float32 `(P, J, 3)` and `area` float32 `(P,)`. Head: 2J
    linear channels at stride 4 (heatmaps, then tags). Loss: `AssociativeEmbeddingLoss`.
    Metric: `COCOKeypointAP`. Reward: COCO AP (OKS 0.50:0.95). An exported model returns
    `heatmaps`, `tags` and the decoded peaks (`peak_scores` `(N, J, k)`, `peak_positions`
    `(N, J, k, 2)` in input pixels, `peak_tags` `(N, J, k, 1)`), which `group` turns
    into people (the Hungarian matching is not a graph op).

    Args:
        num_joints: int, J. Default 17.
        flip_pairs: joint pairs swapped by a mirror image. Default COCO's.
        stride: int, output stride. Default 4.
        sigma: float, heatmap sigma. Default 2.
        tag_weight: float, AE loss weight. Default 1e-3.
        max_people: int, peaks kept per joint when decoding (HigherHRNet's 30).
        sigmas: OKS constants; default COCO's (J = 17).
    """

    name = "pose-multi"
    reward_description = "COCO keypoint AP (OKS 0.50:0.95)"
    headline_scores = (("ap", "COCO AP"), ("ar", "COCO AR"))
    serving_outputs = ("heatmaps", "peak_positions", "peak_scores", "peak_tags", "tags")
    TRAINING = {
        "source": "3M-Pose, section 15 and 13 of 3M-POSE.md",
        "optimizer": "adam",
        "learning_rate": 1e-3,
        "schedule": "step",
        "drop_epochs": [200, 260],
        "drop_factor": 0.1,
        "epochs": 300,
        "loss_weights": {"heatmap": 1.0, "grouping": 1e-3},
        "augment": {"scale": [0.75, 1.25], "rotation": 30, "translation": 40, "flip": True, "crop": 512},
    }

    def __init__(
        self,
        num_joints=17,
        flip_pairs=kp.COCO_FLIP_PAIRS,
        stride=4,
        sigma=2.0,
        tag_weight=1e-3,
        max_people=30,
        sigmas=None,
    ):
        super().__init__()
        self.num_joints = int(num_joints)
        self.flip_pairs = tuple(tuple(int(j) for j in pair) for pair in flip_pairs)
        kp.flip_permutation(self.num_joints, self.flip_pairs)
        self.output_stride = int(stride)
        self.sigma = float(sigma)
        self.tag_weight = float(tag_weight)
        self.max_people = int(max_people)
        if sigmas is None and self.num_joints != len(kp.COCO_SIGMAS):
            raise ValueError(f"{self.num_joints} joints need their own OKS sigmas; pass sigmas")
        self.sigmas = None if sigmas is None else [float(s) for s in sigmas]

    @property
    def output_channels(self):
        return 2 * self.num_joints

    @property
    def target_spec(self):
        return {
            "keypoints": tf.TensorSpec([None, self.num_joints, 3], tf.float32),
            "area": tf.TensorSpec([None], tf.float32),
        }

    def validate_target(self, target, image_size=None):
        """Check people's keypoints (shape, joint count, flags, inside the image) and areas."""
        if not isinstance(target, dict) or set(target) != {"keypoints", "area"}:
            got = sorted(target) if isinstance(target, dict) else type(target).__name__
            raise ValueError(f"a pose-multi target is a dict with 'keypoints' and 'area', got {got}")
        keypoints = kp.check_keypoints(target["keypoints"], self.num_joints, image_size)
        if keypoints.ndim != 3:
            raise ValueError(f"pose-multi keypoints have shape (P, J, 3), got {keypoints.shape}")
        area = np.asarray(target["area"], np.float32)
        if area.shape != keypoints.shape[:1]:
            raise ValueError(f"area has shape {area.shape} for {keypoints.shape[0]} people")
        labelled = (keypoints[..., 2] > 0).any(axis=-1)
        if (area[labelled] <= 0).any():
            raise ValueError("a labelled person has area <= 0; OKS needs each person's area")
        return {"keypoints": keypoints, "area": area}

    def padding_target(self, image_size, people=1):
        """An image that `COCOKeypointAP` skips: unlabelled people with area -1.

        Args:
            image_size: `(height, width)` (unused: the target has no map).
            people: int, P of the padded target (the data set's). Default 1.
        """
        return {
            "keypoints": np.zeros((people, self.num_joints, 3), np.float32),
            "area": np.full((people,), -1.0, np.float32),
        }

    def _make_loss(self):
        return AssociativeEmbeddingLoss(self.num_joints, self.output_stride, self.sigma, self.tag_weight)

    def metric(self, name="coco_keypoint_ap"):
        return COCOKeypointAP(self.num_joints, self.output_stride, self.max_people, self.sigmas, name=name)

    def reward(self, scores):
        return float(max(scores["ap"], 0.0))

    def builtin_data(self, split, image_size=64, num_samples=None, seed=0, **kwargs):
        """Scenes of several stick figures (`tfnas.data.figure_scenes`); COCO's 17 joints."""
        from tfnas.data.figures import figure_scenes

        if self.num_joints != len(kp.COCO_KEYPOINTS):
            raise ValueError("the built-in figures have 17 COCO joints; use num_joints=17")
        return figure_scenes(split, image_size=image_size, num_scenes=num_samples, seed=seed, **kwargs)

    def flip(self, image, target):
        width = tf.shape(image)[1]
        return tf.reverse(image, axis=[1]), {
            "keypoints": kp.flip_keypoints(target["keypoints"], width, self.flip_pairs),
            "area": target["area"],
        }

    def postprocess(self, outputs, image_size):
        """`heatmaps`, `tags` and the top-k peaks of each joint (see the class docstring)."""
        heatmaps, tags = _split_outputs(outputs, self.num_joints)
        stride = tf.cast(image_size[1], tf.float32) / tf.cast(tf.shape(heatmaps)[2], tf.float32)
        scores, positions, tag_values = kp.heatmap_candidates(heatmaps, tags, self.max_people, stride)
        return {
            "heatmaps": heatmaps,
            "tags": tags,
            "peak_scores": scores,
            "peak_positions": positions,
            "peak_tags": tag_values,
        }

    def config(self):
        return {
            "num_joints": self.num_joints,
            "flip_pairs": [list(p) for p in self.flip_pairs],
            "stride": self.output_stride,
            "sigma": self.sigma,
            "tag_weight": self.tag_weight,
            "max_people": self.max_people,
            "sigmas": self.sigmas,
        }
