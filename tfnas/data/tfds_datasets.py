"""Segmentation data sets from TensorFlow Datasets (TFDS), by name and feature keys.

Example:
    >>> ds = tfds_dataset("oxford_iiit_pet", "train", num_classes=3, label_offset=1,
    ...                   image_size=128)
"""

import tensorflow as tf

from tfnas.data._common import image_hw, resize_pair
from tfnas.preprocessing import IGNORE_LABEL


def _mask_to_class_map(mask, mask_key, name):
    """Turn a TFDS mask feature `(H, W)` or `(H, W, 1)` into an int32 `(H, W)` tensor."""
    rank = mask.shape.rank
    if rank == 3 and mask.shape[-1] == 1:
        mask = mask[..., 0]
    elif rank != 2:
        raise ValueError(
            f"TFDS dataset {name!r} feature {mask_key!r} has shape {mask.shape}; expected a "
            "class map (H, W) or (H, W, 1); pass the key of a segmentation-mask feature"
        )
    return tf.cast(mask, tf.int32)


def _check_labels(mask, num_classes, ignore_label, name, split):
    valid = ((mask >= 0) & (mask < num_classes)) | (mask == ignore_label)
    message = (
        f"TFDS dataset {name!r} split {split!r} has a mask label outside "
        f"0..{num_classes - 1} other than the ignore label {ignore_label}; "
        "raise num_classes or set label_offset"
    )
    with tf.control_dependencies([tf.debugging.assert_equal(tf.reduce_all(valid), True, message=message)]):
        return tf.identity(mask)


def _check_same_size(image, mask, name, split):
    message = (
        f"TFDS dataset {name!r} split {split!r} has a mask whose height and width "
        "differ from its image's; check image_key and mask_key"
    )
    with tf.control_dependencies(
        [tf.debugging.assert_equal(tf.shape(image)[:2], tf.shape(mask), message=message)]
    ):
        return tf.identity(mask)


def tfds_dataset(
    name,
    split,
    image_key="image",
    mask_key="segmentation_mask",
    num_classes=None,
    data_dir=None,
    ignore_label=IGNORE_LABEL,
    label_offset=0,
    image_size=None,
    download=True,
):
    """A TFDS segmentation data set as `tf.data` of `(image, class map)`.

    Args:
        name: TFDS name, e.g. "oxford_iiit_pet" (optionally with config and version).
        split: TFDS split, e.g. "train" or "test[:10%]".
        image_key: name of the image feature. Default "image".
        mask_key: name of the segmentation-mask feature; a trailing channel of 1 is
            squeezed. Default "segmentation_mask".
        num_classes: when given, every mask label (after `label_offset`) must be in
            `0..num_classes - 1` or equal `ignore_label`; a bad element stops iteration
            with an `InvalidArgumentError` naming the data set and split.
        data_dir: TFDS data folder; None uses the TFDS default (`~/tensorflow_datasets`).
        ignore_label: label value to skip in losses and metrics; kept as is. Default 255.
        label_offset: subtracted from every label other than `ignore_label`, e.g. 1 for
            the Oxford-IIIT Pet trimaps whose classes are 1..3. Default 0.
        image_size: None to keep each example's size, or an int or `(height, width)` to
            resize to (bilinear for images, nearest neighbour for masks); needed to batch
            data sets whose images differ in size.
        download: let TFDS download and prepare the data set if it is not in `data_dir`.

    Returns:
        unbatched `tf.data.Dataset` of `(uint8 (H, W, 3) image, int32 (H, W) mask)`.

    Raises:
        KeyError: if `image_key` or `mask_key` is not a feature of the data set.
        ValueError: if the mask feature is not a single-channel class map.
        tf.errors.InvalidArgumentError: while iterating, if a mask's size differs from its
            image's or (with `num_classes`) a label is out of range.
    """
    import tensorflow_datasets as tfds

    size = None if image_size is None else image_hw(image_size)
    dataset, info = tfds.load(name, split=split, data_dir=data_dir, with_info=True, download=download)
    for key in (image_key, mask_key):
        if key not in info.features:
            raise KeyError(
                f"TFDS dataset {name!r} has no feature {key!r}; its features are "
                f"{', '.join(sorted(info.features.keys()))}"
            )

    def to_pair(example):
        image = tf.cast(example[image_key], tf.uint8)
        if image.shape.rank == 3 and image.shape[-1] == 1:
            image = tf.image.grayscale_to_rgb(image)
        mask = _mask_to_class_map(example[mask_key], mask_key, name)
        mask = _check_same_size(image, mask, name, split)
        if label_offset:
            mask = tf.where(mask == ignore_label, mask, mask - label_offset)
        if num_classes is not None:
            mask = _check_labels(mask, num_classes, ignore_label, name, split)
        if size is not None:
            image, mask = resize_pair(image, mask, size)
        return image, mask

    return dataset.map(to_pair, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
