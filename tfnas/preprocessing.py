"""Image preprocessing shared by training, search, export and serving.

Every tfnas network takes float32 images scaled to [-1, 1] (the MobileNetV2 convention), so
that the same function is used in `tf.data` pipelines and inside exported serving graphs.
"""

import tensorflow as tf

#: Label value that losses and metrics skip (CamVid / VOC style).
IGNORE_LABEL = 255


def preprocess(images):
    """Scale uint8 (or float in [0, 255]) images to float32 in [-1, 1].

    Args:
        images: tensor or array of shape `(..., H, W, 3)`, uint8 or float in [0, 255].

    Returns:
        float32 tensor of the same shape in [-1, 1].
    """
    return tf.cast(images, tf.float32) / 127.5 - 1.0
