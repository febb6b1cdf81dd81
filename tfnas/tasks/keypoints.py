"""Keypoint conventions shared by the pose tasks: COCO joints, heatmaps and their decoding.

The heatmap recipe is the one of Xiao et al. (SimpleBaselines, ECCV 2018), used by the CVPR
2019 paper (Nekrasov et al., CVPR 2019, App. B: "keypoint heatmaps of output stride 4 with Gaussian
distribution with sigma = 2") and by HigherHRNet for the bottom-up task: one heatmap per
joint, an unnormalised Gaussian (peak 1) centred on the joint, target weight 0 for joints
that are not labelled or fall outside the image.

Coordinates. Keypoints are `(x, y, v)` in input-image pixels, pixel centres at integer
coordinates (the COCO convention); `v` is COCO's visibility flag: 0 not labelled,
1 labelled but hidden, 2 labelled and visible. A heatmap at stride `s` covers image pixels
`[s*j, s*j + s)` with its pixel `j`, whose centre is image coordinate `s*j + (s - 1) / 2`,
i.e. the half-pixel-centre convention of `tf.image.resize`. The map between image and
heatmap coordinates is therefore `u = (x + 0.5) / s - 0.5` and back `x = (u + 0.5) * s - 0.5`.
With this convention flipping an image left-right flips its heatmaps exactly (the
one-pixel shift SimpleBaselines applies to flipped heatmaps compensates for its
corner-aligned convention and is not needed here).

Decoding takes the argmax of each heatmap and moves it a quarter pixel towards the higher
of its two neighbours along each axis (SimpleBaselines' `get_final_preds`, HRNet,
HigherHRNet's `adjust`), which recovers positions to within a quarter of a heatmap pixel.
"""

import numpy as np
import tensorflow as tf

#: The 17 COCO person keypoints, in COCO order.
COCO_KEYPOINTS = (
    "nose",
    "left_eye",
    "right_eye",
    "left_ear",
    "right_ear",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
#: Pairs of joints that swap names when an image is flipped left-right.
COCO_FLIP_PAIRS = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16))
#: COCO's skeleton (1-based joint indices, as in the COCO annotation files).
COCO_SKELETON = (
    (16, 14),
    (14, 12),
    (17, 15),
    (15, 13),
    (12, 13),
    (6, 12),
    (7, 13),
    (6, 7),
    (6, 8),
    (7, 9),
    (8, 10),
    (9, 11),
    (2, 3),
    (1, 2),
    (1, 3),
    (2, 4),
    (3, 5),
    (4, 6),
    (5, 7),
)
#: Per-joint OKS constants of COCO (`COCOeval.Params.kpt_oks_sigmas`).
COCO_SIGMAS = (
    np.array(
        [0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89]
    )
    / 10.0
)
#: Joint order of the bottom-up grouping: head and torso first, then the limbs (HigherHRNet).
COCO_GROUPING_ORDER = (0, 1, 2, 3, 4, 5, 6, 11, 12, 7, 8, 9, 10, 13, 14, 15, 16)


def flip_permutation(num_joints, flip_pairs):
    """Index array mapping each joint to the joint it becomes in a flipped image.

    Args:
        num_joints: int, number of joints J.
        flip_pairs: sequence of `(a, b)` joint index pairs that swap.

    Returns:
        int array `(J,)`; `keypoints[..., permutation, :]` renames the joints of a flip.

    Raises:
        ValueError: if a pair names a joint outside `0..J-1` or a joint twice.
    """
    permutation = np.arange(num_joints)
    seen = set()
    for a, b in flip_pairs:
        for joint in (a, b):
            if not 0 <= joint < num_joints or joint in seen:
                raise ValueError(
                    f"flip pair ({a}, {b}) names joint {joint}, but joints are 0..{num_joints - 1} "
                    "and each may appear in one pair only"
                )
            seen.add(joint)
        permutation[a], permutation[b] = b, a
    return permutation


def flip_keypoints(keypoints, width, flip_pairs):
    """Keypoints of the left-right mirror of an image `width` pixels wide (tensor op).

    Args:
        keypoints: float tensor `(..., J, 3)` of `(x, y, v)`.
        width: image width in pixels (int or scalar tensor).
        flip_pairs: sequence of joint index pairs that swap names.

    Returns:
        float tensor `(..., J, 3)`: `x -> width - 1 - x` for labelled joints (unlabelled ones
        stay at 0), joints renamed by `flip_pairs`.
    """
    keypoints = tf.convert_to_tensor(keypoints, tf.float32)
    permutation = flip_permutation(keypoints.shape[-2], flip_pairs)
    x, y, v = tf.unstack(keypoints, axis=-1)
    x = tf.where(v > 0, tf.cast(width, tf.float32) - 1.0 - x, x)
    flipped = tf.stack([x, y, v], axis=-1)
    return tf.gather(flipped, permutation, axis=-2)


def flip_heatmaps(heatmaps, flip_pairs):
    """Flip `(N, h, w, J[, ...])` maps left-right and rename their joint channels.

    Args:
        heatmaps: tensor `(N, h, w, J)` (or with trailing axes after J, e.g. tag maps).
        flip_pairs: sequence of joint index pairs that swap names.

    Returns:
        tensor of the same shape: the maps of the flipped image, in un-flipped joint order.
    """
    heatmaps = tf.convert_to_tensor(heatmaps)
    permutation = flip_permutation(heatmaps.shape[3], flip_pairs)
    return tf.gather(tf.reverse(heatmaps, axis=[2]), permutation, axis=3)


def to_heatmap(xy, stride):
    """Image coordinates to heatmap coordinates at `stride` (see the module docstring)."""
    return (xy + 0.5) / stride - 0.5


def to_image(uv, stride):
    """Heatmap coordinates at `stride` to image coordinates (see the module docstring)."""
    return (uv + 0.5) * stride - 0.5


def target_weights(keypoints, heatmap_size, stride):
    """1.0 for labelled joints inside the heatmap, 0.0 for the others.

    Args:
        keypoints: float tensor `(..., J, 3)` in image pixels.
        heatmap_size: `(h, w)` of the heatmaps (ints or int tensors).
        stride: int, image pixels per heatmap pixel.

    Returns:
        float32 tensor `(..., J)`.
    """
    keypoints = tf.convert_to_tensor(keypoints, tf.float32)
    u = to_heatmap(keypoints[..., 0], stride)
    v = to_heatmap(keypoints[..., 1], stride)
    h = tf.cast(heatmap_size[0], tf.float32)
    w = tf.cast(heatmap_size[1], tf.float32)
    inside = (u >= -0.5) & (u < w - 0.5) & (v >= -0.5) & (v < h - 0.5)
    return tf.cast(inside & (keypoints[..., 2] > 0), tf.float32)


def render_heatmaps(keypoints, heatmap_size, stride=4, sigma=2.0):
    """Gaussian target heatmaps of keypoints (SimpleBaselines / HigherHRNet recipe).

    Each labelled joint inside the image gives `exp(-d^2 / (2 sigma^2))`, `d` the distance
    in heatmap pixels from the joint's exact (sub-pixel) position; joints not labelled or
    outside the image give an all-zero map. With several people (`keypoints` of rank 4),
    the heatmap of a joint is the maximum over people (HigherHRNet).

    Args:
        keypoints: float tensor `(N, J, 3)` (one person) or `(N, P, J, 3)` (P people,
            padded with unlabelled people) in image pixels.
        heatmap_size: `(h, w)` of the maps (ints or int tensors).
        stride: int, image pixels per heatmap pixel. Default 4.
        sigma: float, Gaussian standard deviation in heatmap pixels. Default 2.

    Returns:
        float32 tensor `(N, h, w, J)`.
    """
    keypoints = tf.convert_to_tensor(keypoints, tf.float32)
    if keypoints.shape.rank == 3:
        keypoints = keypoints[:, None]
    weights = target_weights(keypoints, heatmap_size, stride)  # (N, P, J)
    u = to_heatmap(keypoints[..., 0], stride)[..., None, None]  # (N, P, J, 1, 1)
    v = to_heatmap(keypoints[..., 1], stride)[..., None, None]
    ys = tf.range(tf.cast(heatmap_size[0], tf.float32))[:, None]
    xs = tf.range(tf.cast(heatmap_size[1], tf.float32))[None, :]
    gauss = tf.exp(-((xs - u) ** 2 + (ys - v) ** 2) / (2.0 * sigma**2))
    gauss = gauss * weights[..., None, None]  # (N, P, J, h, w)
    return tf.transpose(tf.reduce_max(gauss, axis=1), [0, 2, 3, 1])


def _quarter_offset(flat, index, x, y, width, height):
    """Quarter-pixel shifts towards the higher neighbour of argmax positions.

    Args:
        flat: heatmaps `(..., h*w)`.
        index: int32 flat argmax indices `(..., K)`.
        x, y: int32 coordinates of `index`.
        width, height: int32 scalars, the heatmap size.

    Returns:
        `(dx, dy)` float32, each 0 or +-0.25; 0 at the border where a neighbour is missing.
    """

    def value(offset):
        return tf.gather(
            flat, tf.clip_by_value(index + offset, 0, width * height - 1), batch_dims=flat.shape.rank - 1
        )

    dx = tf.sign(value(1) - value(-1)) * 0.25
    dy = tf.sign(value(width) - value(-width)) * 0.25
    dx = tf.where((x > 0) & (x < width - 1), dx, 0.0)
    dy = tf.where((y > 0) & (y < height - 1), dy, 0.0)
    return dx, dy


def decode_heatmaps(heatmaps, stride=4):
    """One keypoint per heatmap: argmax plus the quarter-pixel shift, in image pixels.

    Args:
        heatmaps: float tensor `(N, h, w, J)`.
        stride: int, image pixels per heatmap pixel of `heatmaps`. Default 4.

    Returns:
        float32 tensor `(N, J, 3)`: `(x, y, score)`, the score being the heatmap maximum.
    """
    heatmaps = tf.cast(tf.convert_to_tensor(heatmaps), tf.float32)
    shape = tf.shape(heatmaps)
    height, width = shape[1], shape[2]
    flat = tf.reshape(tf.transpose(heatmaps, [0, 3, 1, 2]), [shape[0], shape[3], -1])
    index = tf.argmax(flat, axis=-1, output_type=tf.int32)[..., None]  # (N, J, 1)
    score = tf.gather(flat, index, batch_dims=2)[..., 0]
    x, y = index % width, index // width
    dx, dy = _quarter_offset(flat, index, x, y, width, height)
    px = to_image(tf.cast(x, tf.float32) + dx, stride)[..., 0]
    py = to_image(tf.cast(y, tf.float32) + dy, stride)[..., 0]
    return tf.stack([px, py, score], axis=-1)


def heatmap_candidates(heatmaps, tags, k=30, stride=4, nms_kernel=5):
    """Top-k peaks of each joint's heatmap after max-pool NMS, with their tags (HigherHRNet).

    A pixel survives non-maximum suppression when it equals the maximum of its
    `nms_kernel x nms_kernel` neighbourhood; the `k` highest survivors of each joint are
    kept and shifted a quarter pixel towards their higher neighbours.

    Args:
        heatmaps: float tensor `(N, h, w, J)`.
        tags: float tensor `(N, h, w, J)` or `(N, h, w, J, D)` (D tag values per joint,
            e.g. 2 after flip testing).
        k: int, peaks kept per joint (at most the number of heatmap pixels). Default 30
            (HigherHRNet's `max_num_people`).
        stride: int, image pixels per heatmap pixel. Default 4.
        nms_kernel: odd int, NMS window. Default 5 (HigherHRNet).

    Returns:
        `(scores, positions, tag_values)`: float32 `(N, J, k)`, `(N, J, k, 2)` (x, y in
        image pixels) and `(N, J, k, D)`.
    """
    heatmaps = tf.cast(tf.convert_to_tensor(heatmaps), tf.float32)
    tags = tf.cast(tf.convert_to_tensor(tags), tf.float32)
    if tags.shape.rank == 4:
        tags = tags[..., None]
    pooled = tf.nn.max_pool2d(heatmaps, nms_kernel, strides=1, padding="SAME")
    peaks = tf.where(tf.equal(pooled, heatmaps), heatmaps, 0.0)
    shape = tf.shape(heatmaps)
    height, width = shape[1], shape[2]
    flat = tf.reshape(tf.transpose(peaks, [0, 3, 1, 2]), [shape[0], shape[3], -1])
    scores, index = tf.math.top_k(flat, k=tf.minimum(k, height * width))
    x, y = index % width, index // width
    raw = tf.reshape(tf.transpose(heatmaps, [0, 3, 1, 2]), [shape[0], shape[3], -1])
    dx, dy = _quarter_offset(raw, index, x, y, width, height)
    positions = tf.stack(
        [to_image(tf.cast(x, tf.float32) + dx, stride), to_image(tf.cast(y, tf.float32) + dy, stride)],
        axis=-1,
    )
    flat_tags = tf.reshape(tf.transpose(tags, [0, 3, 1, 2, 4]), [shape[0], shape[3], -1, tf.shape(tags)[-1]])
    tag_values = tf.gather(flat_tags, index, batch_dims=2)
    return scores, positions, tag_values


def check_keypoints(keypoints, num_joints, image_size=None, what="keypoints"):
    """Validate annotated keypoints (numpy), raising errors that name the bad value.

    Args:
        keypoints: array `(..., J, 3)` of `(x, y, v)`.
        num_joints: int, expected J.
        image_size: optional `(height, width)`; labelled joints must lie inside the image,
            `[-0.5, width - 0.5] x [-0.5, height - 0.5]` (pixel centres at integers).
        what: name used in messages (e.g. a file name).

    Returns:
        the keypoints as float32 numpy array.

    Raises:
        ValueError: on a wrong shape or joint count, visibility outside {0, 1, 2}, a
            non-finite value, or a labelled keypoint outside the image.
    """
    array = np.asarray(keypoints)
    if array.ndim < 2 or array.shape[-1] != 3:
        raise ValueError(
            f"{what} have shape {array.shape}; expected (..., {num_joints}, 3) rows of (x, y, visibility)"
        )
    if array.shape[-2] != num_joints:
        raise ValueError(
            f"{what} have {array.shape[-2]} joints but the task expects {num_joints}; "
            "pass one (x, y, v) row per joint, in the task's joint order"
        )
    array = array.astype(np.float32)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what} hold NaN or infinite values; mark missing joints with v=0")
    flags = np.unique(array[..., 2])
    bad = [f for f in flags if f not in (0.0, 1.0, 2.0)]
    if bad:
        raise ValueError(
            f"{what} have visibility {bad[0]:g}; expected COCO flags 0 (not labelled), "
            "1 (labelled, hidden) or 2 (visible)"
        )
    if image_size is not None:
        height, width = image_size
        labelled = array[..., 2] > 0
        x, y = array[..., 0], array[..., 1]
        # The image spans [-0.5, W - 0.5] with pixel centres at integers.
        outside = labelled & ((x < -0.5) | (x > width - 0.5) | (y < -0.5) | (y > height - 0.5))
        if outside.any():
            where = tuple(int(i) for i in np.argwhere(outside)[0])
            raise ValueError(
                f"{what}: joint at index {where} is at ({x[where]:g}, {y[where]:g}), outside "
                f"the {width}x{height} image (width x height); fix it or mark it v=0"
            )
    return array
