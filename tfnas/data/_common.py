"""Helpers shared by the tfnas data loaders: image-size arguments and paired resizing."""

import tensorflow as tf


def image_hw(image_size, name="image_size"):
    """Read an image-size argument as a `(height, width)` pair of positive ints.

    Args:
        image_size: an int (square images) or a pair `(height, width)`.
        name: argument name used in the error message.

    Returns:
        `(height, width)` tuple of Python ints.

    Raises:
        ValueError: if `image_size` is not a positive int or a pair of positive ints.
    """
    if isinstance(image_size, int) and not isinstance(image_size, bool):
        pair = (image_size, image_size)
    else:
        try:
            pair = tuple(int(v) for v in image_size)
        except (TypeError, ValueError):
            pair = ()
    if len(pair) != 2 or min(pair) < 1:
        raise ValueError(
            f"{name}={image_size!r} is not a size; pass a positive int or a pair (height, width)"
        )
    return pair


def resize_pair(image, mask, size):
    """Resize an image bilinearly and its class map with nearest neighbour, in a tf.data map.

    Args:
        image: uint8 tensor `(H, W, 3)`.
        mask: int32 tensor `(H, W)`.
        size: `(height, width)` to resize to.

    Returns:
        `(image, mask)`: uint8 `(height, width, 3)` and int32 `(height, width)`.
    """
    image = tf.image.resize(image, size, method="bilinear")
    image = tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)
    mask = tf.image.resize(mask[..., None], size, method="nearest")[..., 0]
    return image, tf.cast(mask, tf.int32)
