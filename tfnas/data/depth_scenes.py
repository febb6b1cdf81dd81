"""Depth scenes: built-in RGB-D data with known depth that needs no download.

Each scene is a small room seen by a pinhole camera (focal length 0.8 x the image width,
1.2 m above the floor, horizon at 35-55 % of the height): a chequered floor whose depth
follows from the camera height, a textured back wall at 4-8 m, and 1..`max_objects`
objects standing on the floor at 1 m to just before the wall: boxes (constant depth) and
balls (depth rising from the centre to the rim; a ball's
front is up to 0.6 m nearer than its centre). Sizes follow perspective (1/depth), and
every surface is mixed towards a grey haze with `1 - exp(-depth / 6 m)`, so that the image
carries the usual monocular cues: height in the image, size, texture gradient, haze and
occlusion (nearer objects are drawn over farther ones through a depth buffer).

Missing measurements (depth 0), as a Kinect leaves them in NYUDv2:
- the projector shadow: a band left of each object's left edge, as wide as the 7.5 cm
  baseline seen at the object's depth (`f * 0.075 / z` pixels);
- dropout blobs (dark or specular surfaces): each scene has, with probability
  `missing_blobs`, one to three ellipses without depth;
- isolated dropped pixels with probability `dropout`.

Example:
    >>> ds = depth_scenes("train", image_size=64)  # (uint8 64x64x3, float32 64x64 metres)
"""

import numpy as np
import tensorflow as tf

from tfnas.data._common import image_hw
from tfnas.data.digits import _backgrounds

SPLITS = ("train", "validation", "test")
DEFAULT_NUM_SCENES = {"train": 512, "validation": 128, "test": 128}
_CAMERA_HEIGHT = 1.2  # metres
_BASELINE = 0.075  # Kinect projector-camera baseline, metres
_HAZE = np.array([170.0, 170.0, 180.0])


def _shade(colour, depth):
    """Mix colours towards the haze by `1 - exp(-depth / 6)`; broadcasts over pixels."""
    mix = (1.0 - np.exp(-depth / 6.0))[..., None]
    return colour * (1.0 - mix) + _HAZE * mix


def _scene(rng, wall_texture, rows, cols, max_objects, missing_blobs, dropout):
    f = 0.8 * cols
    cx, horizon = (cols - 1) / 2, rng.uniform(0.35, 0.55) * rows
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float64)
    wall = rng.uniform(4.0, 8.0)
    below = yy > horizon + 1e-6
    floor_depth = np.where(below, f * _CAMERA_HEIGHT / np.maximum(yy - horizon, 1e-6), np.inf)
    depth = np.minimum(floor_depth, wall)
    on_floor = floor_depth < wall
    # Floor: 0.5 m chequer in world coordinates; wall: the digit scenes' texture.
    world_x = (xx - cx) * depth / f
    chequer = (np.floor(world_x / 0.5) + np.floor(depth / 0.5)) % 2
    floor_colours = rng.integers(0, 256, (2, 3)).astype(np.float64)
    image = np.where(on_floor[..., None], floor_colours[chequer.astype(int)], wall_texture)
    image = _shade(image, depth)
    missing = np.zeros((rows, cols), bool)

    count = int(rng.integers(1, max_objects + 1))
    objects = sorted(
        ((rng.uniform(1.0, wall - 0.5), rng.random() < 0.5) for _ in range(count)), reverse=True
    )  # far to near
    for z, ball in objects:
        x_m = rng.uniform(-0.5, 0.5) * cols * z / f
        colour = rng.integers(0, 256, 3).astype(np.float64)
        bottom = horizon + f * _CAMERA_HEIGHT / z
        if ball:
            radius = rng.uniform(0.2, 0.6)
            centre_y = bottom - f * radius / z
            r_px = f * radius / z
            d2 = ((xx - cx - f * x_m / z) ** 2 + (yy - centre_y) ** 2) / r_px**2
            mask = d2 <= 1.0
            surface = z - radius * np.sqrt(np.clip(1.0 - d2, 0.0, 1.0))
            light = 0.6 + 0.4 * np.sqrt(np.clip(1.0 - d2, 0.0, 1.0))
            left = cx + f * x_m / z - r_px
        else:
            width, height = rng.uniform(0.3, 1.2), rng.uniform(0.4, 1.8)
            left = cx + f * (x_m - width / 2) / z
            right = cx + f * (x_m + width / 2) / z
            mask = (xx >= left) & (xx <= right) & (yy <= bottom) & (yy >= bottom - f * height / z)
            surface = np.full((rows, cols), z)
            light = 1.0
        mask &= surface < depth
        shaded = _shade(colour * np.broadcast_to(light, (rows, cols))[..., None], surface)
        image[mask] = shaded[mask]
        depth[mask] = surface[mask]
        missing[mask] = False
        # Projector shadow on what lies behind, left of the object's left edge.
        shadow = np.zeros((rows, cols), bool)
        rows_hit = mask.any(axis=1)
        first = np.argmax(mask, axis=1)
        band = f * _BASELINE / z
        for r in np.flatnonzero(rows_hit):
            shadow[r, max(int(first[r] - band), 0) : first[r]] = True
        missing |= shadow & ~mask & (depth > z)
    for _ in range(int(rng.integers(1, 4)) if rng.random() < missing_blobs else 0):
        cy_, cx_ = rng.uniform(0, rows), rng.uniform(0, cols)
        ry, rx = rng.uniform(0.03, 0.12) * rows, rng.uniform(0.03, 0.12) * cols
        missing |= ((yy - cy_) / ry) ** 2 + ((xx - cx_) / rx) ** 2 <= 1.0
    missing |= rng.random((rows, cols)) < dropout
    return image, np.where(missing, 0.0, depth).astype(np.float32)


def depth_scene_arrays(
    split,
    image_size=64,
    num_scenes=None,
    seed=0,
    max_objects=4,
    missing_blobs=0.5,
    dropout=0.01,
    noise_std=4.0,
):
    """Generate depth scenes as numpy arrays (see the module docstring for the recipe).

    Args:
        split: "train", "validation" or "test" (each its own random stream).
        image_size: int or `(height, width)`, at least 16. Default 64.
        num_scenes: number of scenes; None gives 512 for train and 128 otherwise.
        seed: int; the same seed, split and arguments give identical arrays.
        max_objects: each scene holds 1..max_objects objects. Default 4.
        missing_blobs: probability that a scene has dropout blobs. Default 0.5.
        dropout: probability that a pixel's depth is dropped. Default 0.01.
        noise_std: standard deviation of Gaussian pixel noise on the image. Default 4.

    Returns:
        `(images, depths)`: uint8 `(N, H, W, 3)` and float32 `(N, H, W)` in metres, 0 where
        the depth is missing.

    Raises:
        ValueError: if `split` is unknown or a size or count is out of range.
    """
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is unknown; use one of {', '.join(SPLITS)}")
    rows, cols = image_hw(image_size)
    if min(rows, cols) < 16:
        raise ValueError(f"image_size={image_size!r} is too small; use at least 16 pixels")
    num = DEFAULT_NUM_SCENES[split] if num_scenes is None else int(num_scenes)
    if num < 1 or int(max_objects) < 1:
        raise ValueError(f"num_scenes={num} and max_objects={max_objects} must be at least 1")
    if not (0 <= missing_blobs <= 1 and 0 <= dropout < 1):
        raise ValueError(f"missing_blobs={missing_blobs} and dropout={dropout} are probabilities")
    rng = np.random.default_rng([int(seed), SPLITS.index(split), 3])
    walls = _backgrounds(rng, num, rows, cols)
    images = np.empty((num, rows, cols, 3), np.float32)
    depths = np.empty((num, rows, cols), np.float32)
    for i in range(num):
        images[i], depths[i] = _scene(rng, walls[i], rows, cols, int(max_objects), missing_blobs, dropout)
    images += rng.normal(0.0, noise_std, images.shape).astype(np.float32)
    return np.clip(np.round(images), 0, 255).astype(np.uint8), depths


def depth_scenes(
    split,
    image_size=64,
    num_scenes=None,
    seed=0,
    max_objects=4,
    missing_blobs=0.5,
    dropout=0.01,
    noise_std=4.0,
):
    """The built-in depth data set as `tf.data` (see `depth_scene_arrays`).

    Returns:
        unbatched `tf.data.Dataset` of `(uint8 (H, W, 3) image, float32 (H, W) depth in
        metres, 0 where missing)`.
    """
    images, depths = depth_scene_arrays(
        split, image_size, num_scenes, seed, max_objects, missing_blobs, dropout, noise_std
    )
    return tf.data.Dataset.from_tensor_slices((images, depths))
