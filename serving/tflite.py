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

The serving signatures' preprocessing (uint8 -> [-1, 1]) and the task's postprocessing (for
segmentation resize, softmax and argmax; for depth the resize; for pose the heatmap decoding)
are not in the .tflite file: with full-integer quantization they would be quantized too, so the
app does them (`tflite_predict` does the preprocessing, `task.postprocess` the rest).

`compare` reports what quantization costs, for the export's task: the largest difference of
the raw outputs to TensorFlow and, for segmentation, pixel agreement and mean IoU of the class
maps with TensorFlow's as reference; for depth, the depth error in metres; for pose, how many
keypoints land within one heatmap pixel of TensorFlow's.
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
    task=None,
):
    """Converts a tfnas model to a `.tflite` file (its `logits` signature, whatever the task).

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
        task: for a Keras `source`, the task it predicts for (as in `tfnas.serving.export`;
            default None: segmentation); a version directory's task is in its metadata.

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
        converter = _converter(as_saved_model_dir(source, tmp, task=task), input_shape)
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
        float32 numpy logits `(N, h, w, C)`: the model's main output whatever its task
        (class logits, depths, heatmaps); `task.postprocess` turns it into the serving outputs.

    Where TFLite's default XNNPACK delegate fails to prepare a node (seen with int8 files of
    small digit-scene models), the file runs again on TFLite's builtin kernels.
    """
    from tfnas.preprocessing import preprocess

    inputs = preprocess(np.asarray(images)).numpy()
    try:
        return _interpreter(path, num_threads).get_signature_runner()(images=inputs)["logits"]
    except RuntimeError as error:
        if "XNNPACK" not in str(error):
            raise
    return _interpreter(path, num_threads, delegates=False).get_signature_runner()(images=inputs)["logits"]


def _interpreter(path, num_threads=None, delegates=True):
    """A `tf.lite.Interpreter`; `delegates=False`: builtin kernels only, no XNNPACK."""
    import tensorflow as tf

    options = {}
    if not delegates:
        options["experimental_op_resolver_type"] = (
            tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        )
    with warnings.catch_warnings():  # "use ai_edge_litert": not installed; tf.lite still works in 2.21
        warnings.simplefilter("ignore", UserWarning)
        return tf.lite.Interpreter(model_path=path, num_threads=num_threads, **options)


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


def _task_report(task, reference, got, size):
    """The task-specific part of `compare`: errors of TFLite's predictions against TensorFlow's."""
    import tensorflow as tf

    from tfnas.tasks.keypoints import decode_heatmaps

    if task.name == "segmentation":
        ref_map, got_map = _class_maps(reference, size), _class_maps(got, size)
        return {
            "pixel_agreement": float(np.mean(ref_map == got_map)),
            "miou_vs_tf": mean_iou(ref_map, got_map, reference.shape[-1]),
        }
    if task.name == "depth":
        ref_depth = task.postprocess(tf.constant(reference), size)["depth"].numpy()
        got_depth = task.postprocess(tf.constant(got), size)["depth"].numpy()
        error = np.abs(ref_depth - got_depth)
        return {"depth_max_abs_diff": float(error.max()), "depth_mean_abs_diff": float(error.mean())}
    if task.name in ("pose", "pose-multi"):  # heatmaps first: the joints' argmax keypoints
        stride = size[1] / reference.shape[2]
        joints = task.num_joints
        ref_points = decode_heatmaps(reference[..., :joints], stride).numpy()[..., :2]
        got_points = decode_heatmaps(got[..., :joints], stride).numpy()[..., :2]
        distance = np.linalg.norm(ref_points - got_points, axis=-1)
        return {
            "keypoint_agreement": float(np.mean(distance <= stride)),
            "keypoint_max_distance": float(distance.max()),
        }
    raise ValueError(
        f"compare does not know the {task.name!r} task; it knows segmentation, depth, pose and pose-multi"
    )


def compare(saved_model_dir, tflite_path, images, task=None):
    """Compares a TFLite model with the SavedModel it came from on sample images.

    Args:
        saved_model_dir: the SavedModel version directory (reference, `logits` signature).
        tflite_path: a `.tflite` file from `to_tflite`.
        images: uint8 images `(N, H, W, 3)`, ideally from the user's data.
        task: the model's task (a `tfnas.tasks.Task`, name or config dict); default None
            reads it from the export's metadata (segmentation for exports without one).

    Returns:
        dict: `max_abs_diff` (largest difference of the raw outputs: logits, depths or
        heatmaps), `max_rel_diff` (the same over the outputs' scale, their largest magnitude
        and at least 1), `size_bytes` of the .tflite file, `task` (its name), and for
        - segmentation: `pixel_agreement` (fraction of pixels whose class equals
          TensorFlow's, at input size), `miou_vs_tf` (mean IoU against TensorFlow's class map);
        - depth: `depth_max_abs_diff`, `depth_mean_abs_diff` (metres, at input size);
        - pose and pose-multi: `keypoint_agreement` (fraction of joints whose heatmap maximum
          lies within one heatmap pixel of TensorFlow's), `keypoint_max_distance` (input pixels).
    """
    import tensorflow as tf

    from tfnas.preprocessing import preprocess
    from tfnas.serving.savedmodel import read_task, resolve_task

    images = np.asarray(images)
    reference = tf.saved_model.load(saved_model_dir).signatures[SIGNATURE](images=preprocess(images))[
        "logits"
    ]
    reference = reference.numpy()
    if task is not None:
        task = resolve_task(task, reference.shape[-1])
    else:
        try:
            task = read_task(saved_model_dir)
        except FileNotFoundError:  # a SavedModel without tfnas metadata: segmentation, as before tasks
            task = resolve_task(None, reference.shape[-1])
    got = tflite_predict(tflite_path, images)
    diff = float(np.max(np.abs(reference - got)))
    return {
        "task": task.name,
        "max_abs_diff": diff,
        "max_rel_diff": diff / max(1.0, float(np.max(np.abs(reference)))),
        **_task_report(task, reference, got, images.shape[1:3]),
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
