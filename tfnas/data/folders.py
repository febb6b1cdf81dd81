"""User data sets from a folder of images and a folder of PNG class-index masks.

The layout is the CamVid / PASCAL VOC one: `images_dir/x.jpg` (or `.jpeg`, `.png`) is
paired with `masks_dir/x.png` by file stem; a mask is a single-channel PNG (8-bit grey or
palette, or 16-bit) whose pixel values are class indices, with `ignore_label` (255 by
default) marking pixels that losses and metrics skip. Every pair is checked when the data
set is built, so that a bad file is reported by name before any training starts.

Example:
    >>> ds = image_mask_folder("camvid/train", "camvid/trainannot", num_classes=12)
"""

import os

import numpy as np
import tensorflow as tf
from PIL import Image

from tfnas.data._common import image_hw, resize_pair
from tfnas.images import IMAGE_EXTENSIONS, list_images
from tfnas.preprocessing import IGNORE_LABEL

#: Mask modes read as class indices: 8-bit grey, palette, 16-bit and 32-bit integer.
_MASK_MODES = ("L", "P", "I;16", "I;16B", "I;16L", "I")


def _list_images(images_dir):
    paths = list_images(images_dir, "images_dir")
    if not paths:
        raise ValueError(
            f"images_dir {images_dir!r} holds no images ({', '.join(IMAGE_EXTENSIONS)}); "
            "point it at the folder of training images"
        )
    images = [os.path.basename(p) for p in paths]
    stems = [os.path.splitext(n)[0] for n in images]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise ValueError(
            f"images_dir {images_dir!r} has several images named {duplicates[0]!r} with "
            "different extensions; keep one image per mask"
        )
    return [os.path.join(images_dir, n) for n in images]


def _read_mask(path):
    """Read a class-index mask as an int32 array `(H, W)`, raising ValueError naming it."""
    try:
        with Image.open(path) as mask:
            if mask.mode not in _MASK_MODES:
                raise ValueError(
                    f"mask {path!r} has mode {mask.mode!r}; expected a single-channel PNG of "
                    "class indices (grey or palette), not colours: convert colour-coded "
                    "masks to class indices first"
                )
            return np.asarray(mask).astype(np.int32)
    except OSError as error:
        raise ValueError(f"mask {path!r} cannot be read as an image: {error}") from error


def _image_size(path):
    try:
        with Image.open(path) as image:
            return image.size  # (width, height), from the header only
    except OSError as error:
        raise ValueError(f"image {path!r} cannot be read as an image: {error}") from error


def _check_pair(image_path, mask_path, num_classes, ignore_label):
    width, height = _image_size(image_path)
    mask = _read_mask(mask_path)
    if mask.shape != (height, width):
        raise ValueError(
            f"mask {mask_path!r} is {mask.shape[1]}x{mask.shape[0]} but image "
            f"{image_path!r} is {width}x{height} (width x height); masks must match their images"
        )
    bad = ((mask < 0) | (mask >= num_classes)) & (mask != ignore_label)
    if bad.any():
        values = ", ".join(str(v) for v in np.unique(mask[bad])[:5])
        raise ValueError(
            f"mask {mask_path!r} has label {values}, but num_classes={num_classes} allows "
            f"0..{num_classes - 1} and the ignore label {ignore_label}; fix the mask or "
            "raise num_classes"
        )


def _load_mask(path):
    return _read_mask(path.decode() if isinstance(path, bytes) else str(path))


def _load_pair(image_path, mask_path):
    image = tf.io.decode_image(tf.io.read_file(image_path), channels=3, expand_animations=False)
    # tf.io.decode_png turns palette PNGs into colours, so masks are read with PIL.
    mask = tf.numpy_function(_load_mask, [mask_path], tf.int32, stateful=False)
    mask.set_shape([None, None])
    image.set_shape([None, None, 3])
    return image, mask


def image_mask_folder(images_dir, masks_dir, num_classes, ignore_label=IGNORE_LABEL, image_size=None):
    """Pairs of images and class-index masks from two folders, as `tf.data`.

    Every image in `images_dir` must have a mask with the same stem and a `.png` extension
    in `masks_dir` (masks without an image are not used). All pairs are validated now:
    each image header is read for its size and each mask is read in full.

    Args:
        images_dir: folder of `.jpg`, `.jpeg` or `.png` RGB (or grey) images.
        masks_dir: folder of single-channel `.png` masks of class indices.
        num_classes: number of classes; labels must be in `0..num_classes - 1` or equal
            `ignore_label`.
        ignore_label: label value of pixels to skip in losses and metrics. Default 255.
        image_size: None to keep each file's size, or an int or `(height, width)` to resize
            to (bilinear for images, nearest neighbour for masks).

    Returns:
        unbatched `tf.data.Dataset` of `(uint8 (H, W, 3) image, int32 (H, W) mask)`, in
        sorted file-name order.

    Raises:
        FileNotFoundError: if a folder does not exist or an image has no mask.
        ValueError: if the folder holds no images, a file cannot be read, a mask's size
            differs from its image's, a mask is not single-channel, or a mask has a label
            outside `0..num_classes - 1` other than `ignore_label`.
    """
    if int(num_classes) < 1:
        raise ValueError(f"num_classes={num_classes!r} must be a positive int")
    size = None if image_size is None else image_hw(image_size)
    image_paths = _list_images(images_dir)
    if not os.path.isdir(masks_dir):
        raise FileNotFoundError(f"masks_dir {masks_dir!r} is not a folder")
    mask_paths = []
    for image_path in image_paths:
        stem = os.path.splitext(os.path.basename(image_path))[0]
        mask_path = os.path.join(masks_dir, stem + ".png")
        if not os.path.isfile(mask_path):
            raise FileNotFoundError(
                f"image {image_path!r} has no mask: expected {mask_path!r}; add the mask or "
                "move the image out of images_dir"
            )
        _check_pair(image_path, mask_path, int(num_classes), ignore_label)
        mask_paths.append(mask_path)

    dataset = tf.data.Dataset.from_tensor_slices((image_paths, mask_paths))
    dataset = dataset.map(_load_pair, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    if size is not None:
        dataset = dataset.map(
            lambda image, mask: resize_pair(image, mask, size),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    return dataset
