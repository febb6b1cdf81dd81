"""Image files on disk: which extensions count as images, and listing them.

Imports nothing but the standard library, so that `tfnas.serving.tftrt` (which runs on a
Jetson with only NVIDIA's TensorFlow) and the data loaders share one definition.
"""

import os

#: File extensions read as images (what `tf.io.decode_image` and PIL both decode).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")


def list_images(directory, what="image folder"):
    """The image files of a folder, sorted by name.

    Args:
        directory: str.
        what: str, the folder's role for error messages (e.g. "images_dir").

    Returns:
        list of str paths (possibly empty).

    Raises:
        FileNotFoundError: naming the folder, if it is missing or cannot be read.
    """
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"{what} {directory!r} is not a folder")
    try:
        names = sorted(os.listdir(directory))
    except OSError as error:
        raise FileNotFoundError(f"{what} {directory!r} cannot be read: {error}") from error
    return [os.path.join(directory, n) for n in names if os.path.splitext(n)[1].lower() in IMAGE_EXTENSIONS]
