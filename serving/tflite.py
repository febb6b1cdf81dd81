"""TFLite export for edge devices: float32, float16 and full-integer (int8) post-training quantization.

Converts the `logits` signature of an exported SavedModel (float32 images in [-1, 1] -> raw
logits, dynamic height and width) with `tf.lite.TFLiteConverter`:

- "none": float32, the reference.
- "float16": weights stored as float16 (half the size), computed in float32 on CPUs.
- "int8": weights and activations int8, calibrated on a representative dataset of the user's
  images (a few dozen are enough); input and output stay float32 so the same
  preprocessing applies.

`compare` reports what quantization costs: the largest logit difference to TensorFlow and,
on the class maps, pixel agreement and mean IoU with TensorFlow's prediction as reference.
"""
import os
import tempfile
import warnings

import numpy as np

from tfnas.serving._images import image_batch

QUANTIZATIONS = ("none", "float16", "int8")
#: The SavedModel signature converted (the only signature of the .tflite file).
SIGNATURE = "logits"


def _image_batches(data, limit):
    """Yields single uint8/float [0, 255] images `(1, H, W, 3)` from arrays, iterables or tf.data."""
    count = 0
    for item in data:
        if isinstance(item, (tuple, list)) and len(item) == 2 and np.ndim(item[0]) >= 3:
            item = item[0]  # (image, mask) pairs
        images = image_batch(item, f"representative image {count}")
        for image in images:
            yield image[None]
            count += 1
            if count >= limit:
                return


def _saved_model_dir(source, tmp):
    if isinstance(source, (str, os.PathLike)):
        if not os.path.exists(os.path.join(source, "saved_model.pb")):
            raise FileNotFoundError(
                f"{source!r} is not a SavedModel directory (no saved_model.pb); pass a version directory "
                "written by tfnas.serving.export, or a Keras model")
        return os.fspath(source)
    from tfnas.serving.savedmodel import export

    return export(source, tmp, "model", warmup_images=np.zeros((1, 8, 8, 3), np.uint8))


def to_tflite(source, path, quantization="none", representative_data=None, num_calibration_images=100):
    """Converts a tfnas model to a `.tflite` file.

    Args:
        source: a SavedModel version directory written by `tfnas.serving.export`, or a Keras
            tfnas model (exported to a temporary directory first).
        path: output `.tflite` file.
        quantization: "none" (float32), "float16", or "int8" (full-integer, needs
            `representative_data`). Default "none".
        representative_data: for "int8": uint8 images (or floats in [0, 255]) as an array
            `(N, H, W, 3)`, an iterable of images or batches, or a `tf.data.Dataset` of images or
            `(image, mask)` pairs. The training preprocessing is applied here.
        num_calibration_images: how many images to calibrate on, default 100.

    Returns:
        str, `path`.

    Raises:
        ValueError: for an unknown quantization, or "int8" without representative data.
    """
    import tensorflow as tf

    from tfnas.preprocessing import preprocess

    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization {quantization!r} must be one of {QUANTIZATIONS}")
    if quantization == "int8" and representative_data is None:
        raise ValueError(
            "int8 quantization needs representative_data: a few dozen of your own images "
            "(array (N, H, W, 3), iterable, or tf.data) to calibrate activation ranges")
    with tempfile.TemporaryDirectory() as tmp:
        saved_model_dir = _saved_model_dir(source, tmp)
        converter = tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=[SIGNATURE])
        if quantization == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantization == "int8":
            if isinstance(representative_data, np.ndarray) and representative_data.ndim == 3:
                representative_data = representative_data[None]

            def representative_dataset():
                for image in _image_batches(representative_data, num_calibration_images):
                    yield {"images": preprocess(image)}

            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = representative_dataset
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        flatbuffer = converter.convert()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(flatbuffer)
    return path


def tflite_predict(path, images, num_threads=None):
    """Runs a `.tflite` model written by `to_tflite`.

    Args:
        path: `.tflite` file.
        images: uint8 images (or floats in [0, 255]) `(N, H, W, 3)`; any size.
        num_threads: interpreter threads, default None (TFLite's default).

    Returns:
        float32 numpy logits `(N, h, w, C)`.
    """
    import tensorflow as tf

    from tfnas.preprocessing import preprocess

    with warnings.catch_warnings():  # "use ai_edge_litert": not installed; tf.lite still works in 2.21
        warnings.simplefilter("ignore", UserWarning)
        interpreter = tf.lite.Interpreter(model_path=path, num_threads=num_threads)
    runner = interpreter.get_signature_runner()
    return runner(images=preprocess(np.asarray(images)).numpy())["logits"]


def _class_maps(logits, size):
    import tensorflow as tf

    return tf.argmax(tf.image.resize(logits, size, method="bilinear"), axis=-1).numpy()


def mean_iou(reference, prediction, num_classes):
    """Mean IoU of a class map against a reference class map (all classes kept).

    Args:
        reference: int array of class ids.
        prediction: int array of the same shape.
        num_classes: number of classes.

    Returns:
        float in [0, 1].
    """
    from tfnas.tasks.segmentation import confusion_matrix, scores

    confusion = confusion_matrix(np.asarray(reference).ravel(), np.asarray(prediction).ravel(), num_classes)
    return scores(confusion, omit=())["miou"]


def compare(saved_model_dir, tflite_path, images):
    """Compares a TFLite model with the SavedModel it came from on sample images.

    Args:
        saved_model_dir: the SavedModel version directory (reference, `logits` signature).
        tflite_path: a `.tflite` file from `to_tflite`.
        images: uint8 images `(N, H, W, 3)`, ideally from the user's data.

    Returns:
        dict: `max_abs_diff` (largest logit difference), `pixel_agreement` (fraction of
        pixels whose class equals TensorFlow's, at input size), `miou_vs_tf` (mean IoU against
        TensorFlow's class map), `size_bytes` of the .tflite file.
    """
    import tensorflow as tf

    from tfnas.preprocessing import preprocess

    images = np.asarray(images)
    reference = tf.saved_model.load(saved_model_dir).signatures[SIGNATURE](images=preprocess(images))["logits"]
    reference = reference.numpy()
    got = tflite_predict(tflite_path, images)
    size = images.shape[1:3]
    ref_map, got_map = _class_maps(reference, size), _class_maps(got, size)
    return {
        "max_abs_diff": float(np.max(np.abs(reference - got))),
        "pixel_agreement": float(np.mean(ref_map == got_map)),
        "miou_vs_tf": mean_iou(ref_map, got_map, reference.shape[-1]),
        "size_bytes": os.path.getsize(tflite_path),
    }
