"""User depth data: a folder of RGB images and a folder of 16-bit PNG depth maps (NYUDv2 / Kinect layout).

`images_dir/x.jpg` (or `.jpeg`, `.png`) is paired with `depths_dir/x.png` by file stem. A
depth PNG is single-channel 16-bit (as Kinect, RealSense and the NYUDv2 toolbox write them)
holding depth in sensor units; `depth_scale` converts a unit to metres (0.001 for
millimetres, the NYUDv2 and Kinect v2 convention; 1/5000 for TUM RGB-D). A raw value of 0
means "no measurement" and stays 0, which the depth loss and metrics skip. Every pair is
checked when the data set is built, so a bad file is reported by name before training.

Example:
    >>> ds = image_depth_folder("nyu/rgb", "nyu/depth", depth_scale=0.001)
"""

import os

import numpy as np
import tensorflow as tf
from PIL import Image

from tfnas.data._common import image_hw
from tfnas.data.folders import _image_size, _list_images

#: PIL modes read as 16-bit (or 32-bit integer) depth.
_DEPTH_MODES = ("I;16", "I;16B", "I;16L", "I")


def read_depth(path, depth_scale=0.001):
    """Read a 16-bit depth PNG as float32 metres `(H, W)`, 0 where there is no measurement.

    Args:
        path: file path.
        depth_scale: float, metres per raw unit. Default 0.001 (millimetres).

    Returns:
        float32 array `(H, W)`.

    Raises:
        ValueError: if the file is not a single-channel 16-bit image (an 8-bit or palette
            PNG is most likely a segmentation mask) or cannot be read.
    """
    try:
        with Image.open(path) as depth:
            if depth.mode not in _DEPTH_MODES:
                kind = (
                    "an 8-bit or palette image, which looks like a segmentation mask"
                    if depth.mode in ("L", "P", "1")
                    else f"mode {depth.mode!r}"
                )
                raise ValueError(
                    f"depth map {path!r} is {kind}; expected a single-channel 16-bit PNG of "
                    "raw depth (e.g. millimetres) with 0 for missing measurements"
                )
            raw = np.asarray(depth).astype(np.float64)
    except OSError as error:
        raise ValueError(f"depth map {path!r} cannot be read as an image: {error}") from error
    if (raw < 0).any():
        raise ValueError(f"depth map {path!r} holds negative values; raw depth is unsigned")
    return (raw * depth_scale).astype(np.float32)


def _load(image_path, depth_path, depth_scale):
    image = tf.io.decode_image(tf.io.read_file(image_path), channels=3, expand_animations=False)
    depth = tf.numpy_function(
        lambda p: read_depth(p.decode() if isinstance(p, bytes) else str(p), depth_scale),
        [depth_path],
        tf.float32,
        stateful=False,
    )
    image.set_shape([None, None, 3])
    depth.set_shape([None, None])
    return image, depth


def _resize(image, depth, size):
    image = tf.image.resize(image, size, method="bilinear")
    image = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
    # Nearest neighbour: bilinear weights would mix missing (0) pixels into valid ones.
    depth = tf.image.resize(depth[..., None], size, method="nearest")[..., 0]
    return image, depth


def image_depth_folder(images_dir, depths_dir, depth_scale=0.001, image_size=None, max_depth=100.0):
    """Pairs of RGB images and depth maps from two folders, as `tf.data`.

    Args:
        images_dir: folder of `.jpg`, `.jpeg` or `.png` images.
        depths_dir: folder of 16-bit `.png` depth maps with the images' stems.
        depth_scale: float, metres per raw depth unit. Default 0.001 (millimetres).
        image_size: None to keep each file's size, or an int or `(height, width)` to resize
            to (bilinear for images, nearest neighbour for depth).
        max_depth: float, largest plausible depth in metres; a map beyond it is reported
            as a wrong `depth_scale`. Default 100.

    Returns:
        unbatched `tf.data.Dataset` of `(uint8 (H, W, 3) image, float32 (H, W) depth in
        metres)`, in sorted file-name order.

    Raises:
        FileNotFoundError: if a folder does not exist or an image has no depth map.
        ValueError: if a file cannot be read, a depth map is not 16-bit, its size differs
            from its image's, or its depths exceed `max_depth`.
    """
    if not depth_scale > 0:
        raise ValueError(f"depth_scale={depth_scale!r} must be positive (metres per unit)")
    size = None if image_size is None else image_hw(image_size)
    image_paths = _list_images(images_dir)
    if not os.path.isdir(depths_dir):
        raise FileNotFoundError(f"depths_dir {depths_dir!r} is not a folder")
    depth_paths = []
    for image_path in image_paths:
        stem = os.path.splitext(os.path.basename(image_path))[0]
        depth_path = os.path.join(depths_dir, stem + ".png")
        if not os.path.isfile(depth_path):
            raise FileNotFoundError(f"image {image_path!r} has no depth map: expected {depth_path!r}")
        width, height = _image_size(image_path)
        depth = read_depth(depth_path, depth_scale)
        if depth.shape != (height, width):
            raise ValueError(
                f"depth map {depth_path!r} is {depth.shape[1]}x{depth.shape[0]} but image "
                f"{image_path!r} is {width}x{height} (width x height); they must match"
            )
        if depth.max(initial=0.0) > max_depth:
            raise ValueError(
                f"depth map {depth_path!r} reaches {depth.max():g} m with depth_scale="
                f"{depth_scale:g}, above max_depth={max_depth:g}; check depth_scale"
            )
        depth_paths.append(depth_path)
    dataset = tf.data.Dataset.from_tensor_slices((image_paths, depth_paths))
    dataset = dataset.map(
        lambda i, d: _load(i, d, depth_scale), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
    )
    if size is not None:
        dataset = dataset.map(
            lambda i, d: _resize(i, d, size), num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
    return dataset
