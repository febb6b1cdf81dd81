"""TFLite export for edge devices: float32, float16 and full-integer (int8) post-training quantization.

Converts the `logits` signature of an exported SavedModel (float32 images in [-1, 1] -> raw
logits) with `tf.lite.TFLiteConverter`, at the deployment size (`input_size=(H, W)`: input
`(batch_size, H, W, 3)`, size computations folded, resizes as one `RESIZE_BILINEAR`; the converter
merges a dilated convolution into one op only where its feature map is a multiple of the rate)
or with dynamic height and width (`input_size=None`):

- "none": float32, the reference.
- "float16": weights stored as float16 (half the size), computed in float32 on CPUs.
- "int8": weights and activations int8, calibrated on a representative dataset of the user's
  images (a few dozen are enough); input and output stay float32 so the same
  preprocessing applies.

The serving signatures' preprocessing (uint8 -> [-1, 1]), resize, softmax and argmax are not in
the .tflite file: with full-integer quantization they would be quantized too, so the app does
them (`tflite_predict` does the preprocessing).

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


def _converter(saved_model_dir, input_shape):
    """A TFLiteConverter for the `logits` signature, re-traced at `input_shape` when given."""
    import tensorflow as tf

    from tfnas.serving.onnx_export import check_input_size, inlined_graph, network_stride

    if input_shape is None:
        return tf.lite.TFLiteConverter.from_saved_model(saved_model_dir, signature_keys=[SIGNATURE])
    loaded = tf.saved_model.load(saved_model_dir)
    fn = loaded.signatures[SIGNATURE]
    spec = tf.TensorSpec(input_shape, tf.float32, name="images")
    concrete = tf.function(
        lambda images: fn(images=images), input_signature=[spec], autograph=False
    ).get_concrete_function()
    check_input_size(input_shape[1:3], network_stride(inlined_graph(concrete), input_shape[1:3]))
    return tf.lite.TFLiteConverter.from_concrete_functions([concrete], trackable_obj=loaded)


def to_tflite(
    source,
    path,
    quantization="none",
    representative_data=None,
    num_calibration_images=100,
    input_size=None,
    batch_size=1,
):
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
        input_size: the deployment size `(H, W)` (or "HxW", or an int): the model takes
            `(batch_size, H, W, 3)`; representative images are resized to it. Default None:
            dynamic height and width (the interpreter resizes its tensors per call).
        batch_size: fixed batch size with `input_size`, default 1.

    Returns:
        str, `path`.

    Raises:
        ValueError: for an unknown quantization, "int8" without representative data, or a size
            that is not a multiple of the network's output stride.
    """
    import tensorflow as tf

    from tfnas.preprocessing import preprocess

    if quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization {quantization!r} must be one of {QUANTIZATIONS}")
    if quantization == "int8" and representative_data is None:
        raise ValueError(
            "int8 quantization needs representative_data: a few dozen of your own images "
            "(array (N, H, W, 3), iterable, or tf.data) to calibrate activation ranges"
        )
    from tfnas.serving.onnx_export import parse_input_size
    from tfnas.serving.savedmodel import saved_model_dir as as_saved_model_dir

    size = parse_input_size(input_size)
    input_shape = None if size is None else (int(batch_size), *size, 3)
    with tempfile.TemporaryDirectory() as tmp:
        converter = _converter(as_saved_model_dir(source, tmp), input_shape)
        if quantization == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif quantization == "int8":
            if isinstance(representative_data, np.ndarray) and representative_data.ndim == 3:
                representative_data = representative_data[None]

            def representative_dataset():
                batch = []
                for image in _image_batches(representative_data, num_calibration_images):
                    if size is not None:
                        image = tf.image.resize(tf.cast(image, tf.float32), size, method="bilinear")
                    batch.append(preprocess(image))
                    if len(batch) == (input_shape[0] if input_shape else 1):
                        yield {"images": tf.concat(batch, axis=0)}
                        batch = []

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
    reference = tf.saved_model.load(saved_model_dir).signatures[SIGNATURE](images=preprocess(images))[
        "logits"
    ]
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


def tflite_input_details(path):
    """The input of a `.tflite` file: dict with `name`, `shape` and `dtype` (numpy).

    Args:
        path: `.tflite` file.

    Returns:
        dict; `shape` has -1 (in `shape_signature`) where a dimension is dynamic.
    """
    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        interpreter = tf.lite.Interpreter(model_path=path)
    detail = interpreter.get_input_details()[0]
    return {
        "name": detail["name"],
        "shape": detail["shape"].tolist(),
        "shape_signature": detail["shape_signature"].tolist(),
        "dtype": detail["dtype"],
    }


def tflite_op_census(path):
    """Counts the operators of a `.tflite` file by builtin name (e.g. `CONV_2D`, `RESIZE_BILINEAR`).

    Args:
        path: `.tflite` file.

    Returns:
        `collections.Counter` op name -> count.
    """
    import collections

    import tensorflow as tf

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        interpreter = tf.lite.Interpreter(model_path=path)
    return collections.Counter(op["op_name"] for op in interpreter._get_ops_details())  # noqa: SLF001
