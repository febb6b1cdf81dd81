"""Checking user-supplied images for export, warm-up and calibration."""

import numpy as np


def image_batch(images, what):
    """`images` as a batch `(N, H, W, 3)`: a single image `(H, W, 3)` gains a batch axis.

    Args:
        images: array-like of shape `(H, W, 3)` or `(N, H, W, 3)`.
        what: how the error names the images, e.g. "warm-up image 2".

    Returns:
        numpy array `(N, H, W, 3)`, dtype unchanged.

    Raises:
        ValueError: naming `what` and the shape, if it is not an RGB image or batch.
    """
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"{what} has shape {images.shape}; expected (H, W, 3) or (N, H, W, 3)")
    return images
