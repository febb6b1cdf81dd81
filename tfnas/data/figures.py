"""Stick figures: built-in pose data with known joints that needs no download.

Each figure is an articulated, front-facing stick person with the 17 COCO joints
(`tfnas.tasks.keypoints.COCO_KEYPOINTS`): a torso from the neck to the hip centre, a
shoulder and a hip bar, two-segment arms and legs at random joint angles, a round head with
the nose, eyes and ears drawn as dots. The figure's left limbs (COCO "left", on the image's
right since the figure faces the camera) have one colour and its right limbs another, so
that left and right can be told apart as in real images; the whole figure is scaled,
rotated (up to 20 degrees) and placed on the textured backgrounds of the digit scenes.

Joints are sub-pixel positions in image pixels (pixel centres at integers), with COCO's
visibility flags: 2 visible, 1 labelled but covered by a figure drawn later, 0 outside the
image (then x = y = 0, as in COCO files).

- `figure_crops` (top-down, `pose` task): one figure per crop, centred, 70-95 % of the
  crop's height; targets `{"keypoints": (17, 3), "head_size": ()}`, the head size being
  MPII's 0.6 x the diagonal of the head box (a square around the head disk).
- `figure_scenes` (bottom-up, `pose-multi` task): 1..`max_people` figures per scene, 30-70 %
  of its height, overlapping freely; targets `{"keypoints": (max_people, 17, 3),
  "area": (max_people,)}`, padded with unlabelled people of area 0. `area`, the OKS
  scale, is half the area of the figure's drawn bounding box: a stick figure's own pixel
  count is far below the segment area of a real person of the same size (COCO segments
  fill about half their box), and would make OKS much stricter than on COCO.

Example:
    >>> ds = figure_crops("train", image_size=64)   # (uint8 64x64x3, {"keypoints", "head_size"})
"""

import numpy as np
import tensorflow as tf

from tfnas.data._common import image_hw
from tfnas.data.digits import _backgrounds

#: Split names.
SPLITS = ("train", "validation", "test")
#: Samples per split when none is given (sized for a laptop CPU).
DEFAULT_NUM_SAMPLES = {"train": 512, "validation": 128, "test": 128}
NUM_JOINTS = 17

# Body proportions as fractions of the figure's height.
_TORSO, _SHOULDER, _HIP, _NECK_TO_NOSE, _HEAD = 0.30, 0.11, 0.07, 0.11, 0.075
_UPPER_ARM, _FOREARM, _THIGH, _SHIN = 0.16, 0.14, 0.22, 0.21
_LIMB_WIDTH = 0.035


def _rotate(vector, angle):
    c, s = np.cos(angle), np.sin(angle)
    return np.array([c * vector[0] - s * vector[1], s * vector[0] + c * vector[1]])


def _skeleton(rng, height):
    """Joints of a figure `height` pixels tall, hip centre at the origin, `(17, 2)`.

    Image axes: x to the right, y down. The figure's left side is at +x.
    """
    lean = rng.uniform(-0.2, 0.2)
    up = _rotate(np.array([0.0, -1.0]), lean)
    side = _rotate(np.array([1.0, 0.0]), lean)
    neck = up * _TORSO * height
    nose = neck + up * _NECK_TO_NOSE * height
    joints = np.zeros((NUM_JOINTS, 2))
    joints[0] = nose
    joints[1] = nose + (side * 0.03 + up * 0.025) * height  # left eye, above the nose
    joints[2] = nose + (-side * 0.03 + up * 0.025) * height
    joints[3] = nose + side * 0.065 * height
    joints[4] = nose - side * 0.065 * height
    for sign, (shoulder, elbow, wrist, hip, knee, ankle) in (
        (1.0, (5, 7, 9, 11, 13, 15)),
        (-1.0, (6, 8, 10, 12, 14, 16)),
    ):
        joints[shoulder] = neck + sign * side * _SHOULDER * height
        joints[hip] = sign * side * _HIP * height
        down = -up
        arm = rng.uniform(-0.3, 2.7)  # from hanging down towards raised, outwards
        bend = rng.uniform(-0.4, 2.0)
        joints[elbow] = joints[shoulder] + _rotate(down, -sign * arm) * _UPPER_ARM * height
        joints[wrist] = joints[elbow] + _rotate(down, -sign * (arm + bend)) * _FOREARM * height
        leg = rng.uniform(-0.15, 0.6)
        knee_bend = rng.uniform(-0.8, 0.3)
        joints[knee] = joints[hip] + _rotate(down, -sign * leg) * _THIGH * height
        joints[ankle] = joints[knee] + _rotate(down, -sign * (leg + knee_bend)) * _SHIN * height
    return joints


def _segments(joints):
    """(start, end, part) of the drawn segments; part 0 body, 1 left limbs, 2 right limbs."""
    neck = (joints[5] + joints[6]) / 2
    hips = (joints[11] + joints[12]) / 2
    return [
        (joints[11], joints[13], 1),
        (joints[13], joints[15], 1),
        (joints[12], joints[14], 2),
        (joints[14], joints[16], 2),
        (neck, hips, 0),
        (joints[5], joints[6], 0),
        (joints[11], joints[12], 0),
        (joints[5], joints[7], 1),
        (joints[7], joints[9], 1),
        (joints[6], joints[8], 2),
        (joints[8], joints[10], 2),
    ]


def _segment_mask(xx, yy, start, end, radius):
    direction = end - start
    length2 = max(float(direction @ direction), 1e-9)
    t = np.clip(((xx - start[0]) * direction[0] + (yy - start[1]) * direction[1]) / length2, 0, 1)
    dx = xx - (start[0] + t * direction[0])
    dy = yy - (start[1] + t * direction[1])
    return dx * dx + dy * dy <= radius * radius


def _draw_figure(rng, image, owner, index, joints, height):
    """Draw a figure into `image` (float RGB) and `owner` (int map of who is on top).

    Returns:
        `(area, head_radius)`: the figure's OKS area, half of its drawn bounding box (in
        the image, before later figures cover it), and the head disk's radius.
    """
    rows, cols = owner.shape
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float64)
    width = max(_LIMB_WIDTH * height, 0.75)
    hue = rng.integers(0, 256, 3).astype(np.float64)
    colours = [hue, (hue + [96, 0, 160]) % 256, (hue + [0, 160, 96]) % 256]
    full = np.zeros(owner.shape, bool)
    for start, end, part in _segments(joints):
        mask = _segment_mask(xx, yy, start, end, width)
        image[mask] = colours[part]
        full |= mask
    radius = max(_HEAD * height, 1.5)
    head = (xx - joints[0][0]) ** 2 + (yy - joints[0][1]) ** 2 <= radius**2
    image[head] = (hue + [200, 200, 200]) % 256
    full |= head
    dot = max(0.018 * height, 0.6)
    for joint, colour in (
        (0, (255, 40, 40)),
        (1, (20, 20, 20)),
        (2, (20, 20, 20)),
        (3, (240, 240, 60)),
        (4, (60, 240, 240)),
    ):
        mask = (xx - joints[joint][0]) ** 2 + (yy - joints[joint][1]) ** 2 <= dot**2
        image[mask] = colour
        full |= mask
    owner[full] = index
    rows_on, cols_on = np.flatnonzero(full.any(axis=1)), np.flatnonzero(full.any(axis=0))
    if not len(rows_on):
        return 0.0, radius
    box = (rows_on[-1] - rows_on[0] + 1) * (cols_on[-1] - cols_on[0] + 1)
    return 0.5 * float(box), radius


def _keypoints(joints, owner, index):
    """`(17, 3)` COCO keypoints: v = 2 visible, 1 covered by a later figure, 0 outside."""
    rows, cols = owner.shape
    keypoints = np.zeros((NUM_JOINTS, 3), np.float32)
    for j, (x, y) in enumerate(joints):
        if 0 <= x <= cols - 1 and 0 <= y <= rows - 1:
            on_top = owner[int(round(y)), int(round(x))] == index
            keypoints[j] = (x, y, 2.0 if on_top else 1.0)
    return keypoints


def _rng(seed, split, kind):
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is unknown; use one of {', '.join(SPLITS)}")
    return np.random.default_rng([int(seed), SPLITS.index(split), kind])


def _count(split, num):
    num = DEFAULT_NUM_SAMPLES[split] if num is None else int(num)
    if num < 1:
        raise ValueError(f"the number of samples must be at least 1, got {num}")
    return num


def _place(joints, centre, angle):
    centre_of_box = (joints.min(axis=0) + joints.max(axis=0)) / 2
    local = joints - centre_of_box
    c, s = np.cos(angle), np.sin(angle)
    return local @ np.array([[c, s], [-s, c]]) + centre


def figure_crop_arrays(split, image_size=64, num_crops=None, seed=0, noise_std=6.0):
    """Top-down crops, one figure each, as numpy arrays (module docstring).

    Args:
        split: "train", "validation" or "test" (each its own random stream).
        image_size: int or `(height, width)`, at least 32. Default 64.
        num_crops: number of crops; None gives 512 for train and 128 otherwise.
        seed: int; the same seed, split and arguments give identical arrays.
        noise_std: standard deviation of Gaussian pixel noise. Default 6.

    Returns:
        `(images, keypoints, head_sizes)`: uint8 `(N, H, W, 3)`, float32 `(N, 17, 3)`,
        float32 `(N,)`.
    """
    rng = _rng(seed, split, 1)
    rows, cols = image_hw(image_size)
    if min(rows, cols) < 32:
        raise ValueError(f"image_size={image_size!r} is too small; use at least 32 pixels")
    num = _count(split, num_crops)
    images = _backgrounds(rng, num, rows, cols)
    keypoints = np.zeros((num, NUM_JOINTS, 3), np.float32)
    head_sizes = np.zeros(num, np.float32)
    for i in range(num):
        height = rng.uniform(0.7, 0.95) * rows / 0.95
        joints = _skeleton(rng, height)
        centre = np.array([cols, rows]) / 2 - 0.5 + rng.uniform(-0.05, 0.05, 2) * [cols, rows]
        joints = _place(joints, centre, rng.uniform(-0.35, 0.35))
        owner = np.full((rows, cols), -1, np.int32)
        _, radius = _draw_figure(rng, images[i], owner, 0, joints, height)
        keypoints[i] = _keypoints(joints, owner, 0)
        head_sizes[i] = 0.6 * 2 * np.sqrt(2) * radius
    images += rng.normal(0.0, noise_std, images.shape).astype(np.float32)
    return np.clip(np.round(images), 0, 255).astype(np.uint8), keypoints, head_sizes


def figure_crops(split, image_size=64, num_crops=None, seed=0, noise_std=6.0):
    """The built-in top-down pose data set as `tf.data` (see `figure_crop_arrays`).

    Returns:
        unbatched `tf.data.Dataset` of `(uint8 (H, W, 3) image,
        {"keypoints": float32 (17, 3), "head_size": float32 ()})`.
    """
    images, keypoints, head_sizes = figure_crop_arrays(split, image_size, num_crops, seed, noise_std)
    return tf.data.Dataset.from_tensor_slices((images, {"keypoints": keypoints, "head_size": head_sizes}))


def figure_scene_arrays(split, image_size=96, num_scenes=None, seed=0, max_people=4, noise_std=6.0):
    """Bottom-up scenes of 1..`max_people` figures as numpy arrays (module docstring).

    Args:
        split: "train", "validation" or "test".
        image_size: int or `(height, width)`, at least 32. Default 96.
        num_scenes: number of scenes; None gives 512 for train and 128 otherwise.
        seed: int; the same seed, split and arguments give identical arrays.
        max_people: int, most figures per scene and the padded P of the targets. Default 4.
        noise_std: standard deviation of Gaussian pixel noise. Default 6.

    Returns:
        `(images, keypoints, areas)`: uint8 `(N, H, W, 3)`, float32 `(N, P, 17, 3)`,
        float32 `(N, P)`; padding people have all joints unlabelled and area 0.
    """
    rng = _rng(seed, split, 2)
    rows, cols = image_hw(image_size)
    if min(rows, cols) < 32:
        raise ValueError(f"image_size={image_size!r} is too small; use at least 32 pixels")
    if int(max_people) < 1:
        raise ValueError(f"max_people={max_people!r} must be at least 1")
    num = _count(split, num_scenes)
    images = _backgrounds(rng, num, rows, cols)
    keypoints = np.zeros((num, max_people, NUM_JOINTS, 3), np.float32)
    areas = np.zeros((num, max_people), np.float32)
    for i in range(num):
        owner = np.full((rows, cols), -1, np.int32)
        people = []
        for p in range(int(rng.integers(1, max_people + 1))):
            height = rng.uniform(0.3, 0.7) * rows
            joints = _skeleton(rng, height)
            centre = rng.uniform([0.15 * cols, 0.25 * rows], [0.85 * cols, 0.75 * rows])
            joints = _place(joints, centre, rng.uniform(-0.35, 0.35))
            areas[i, p], _ = _draw_figure(rng, images[i], owner, p, joints, height)
            people.append(joints)
        for p, joints in enumerate(people):
            keypoints[i, p] = _keypoints(joints, owner, p)
    images += rng.normal(0.0, noise_std, images.shape).astype(np.float32)
    return np.clip(np.round(images), 0, 255).astype(np.uint8), keypoints, areas


def figure_scenes(split, image_size=96, num_scenes=None, seed=0, max_people=4, noise_std=6.0):
    """The built-in bottom-up pose data set as `tf.data` (see `figure_scene_arrays`).

    Returns:
        unbatched `tf.data.Dataset` of `(uint8 (H, W, 3) image,
        {"keypoints": float32 (P, 17, 3), "area": float32 (P,)})`, P = `max_people`.
    """
    images, keypoints, areas = figure_scene_arrays(split, image_size, num_scenes, seed, max_people, noise_std)
    return tf.data.Dataset.from_tensor_slices((images, {"keypoints": keypoints, "area": areas}))
