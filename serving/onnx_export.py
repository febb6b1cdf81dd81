"""ONNX export of a tfnas SavedModel with tf2onnx, at the deployment size or with dynamic shapes.

The ONNX model keeps the signature's tensor names:

| signature | ONNX input | ONNX outputs |
| --- | --- | --- |
| `serving_default` | `images` uint8 `(N, H, W, 3)` | the task's outputs (`tfnas.serving.savedmodel`): `classes` and `probabilities` for segmentation, `depth`, pose `heatmaps` and `keypoints`, ... |
| `serving_float` | `images` float32 in [0, 255] | same |
| `logits` | `images` float32 in [-1, 1] | `logits` float32 `(N, h, w, C)`, whatever the task |

**Fixed size** (`input_size=(H, W)`, the deployment size): the signature is re-traced with
the input shape `(batch_size, H, W, 3)`, every shape computation the graph does is folded to
a constant, and tf2onnx then writes each searched op in its native form: a dilated
convolution is one `Conv` with `dilations` (not SpaceToBatch / BatchToSpace decompositions),
layout transposes cancel except at the input and output, a bilinear resize is one `Resize`.
This is what TensorRT builds from (an engine has fixed shapes anyway) and the fastest graph
in onnxruntime.

**Dynamic** (`input_size=None`): N, H and W stay free. tf2onnx cannot fold the dilated
convolutions or the layout transposes then; the graph has several times the nodes and runs
slower in onnxruntime (issue 17 measured the CVPR 2019 arch0 at 512x512: 2,511 nodes and 161 ms
dynamic, 378 nodes and 65 ms fixed).

`serving_default` converts whole (preprocessing and the task's postprocessing: for
segmentation bilinear resize, softmax, argmax; for pose the heatmap decoding), the simplest
graph to deploy with onnxruntime; `logits` is the one to feed TensorRT (float input, no argmax,
smallest output).

**Parity check**: `to_onnx` runs the ONNX model in onnxruntime and TensorFlow on the same images.
Float outputs may differ by `atol` times their scale (the largest magnitude of TensorFlow's
output, at least 1: probabilities and logits are checked at about `atol`, depths in metres
relative to the farthest depth); integer outputs (the class map) on at most 0.1% of elements
(ties between classes). Outputs decoded at a heatmap maximum (pose `keypoints`, bottom-up
`peak_*`) jump to another pixel when two heatmap values tie within rounding, so they are
checked against TensorFlow's decoding of the ONNX model's own `heatmaps` (and `tags`), at the
same tolerance; the heatmaps themselves are checked against TensorFlow's.
"""

import collections
import os
import tempfile

import numpy as np

#: Convolution and pooling ops whose strides set the network's output stride.
_STRIDED_OPS = ("Conv2D", "DepthwiseConv2dNative", "MaxPool", "AvgPool")
#: Outputs of the serving signatures decoded at heatmap maxima (argmax, top-k), per task.
DECODED_OUTPUTS = {"pose": ("keypoints",), "pose-multi": ("peak_scores", "peak_positions", "peak_tags")}


class ParityError(RuntimeError):
    """The converted model's outputs differ from TensorFlow's beyond the tolerances."""


def parse_input_size(value):
    """Reads a deployment size: `"512x384"`, `512` (square), `(512, 384)`, or None/"dynamic".

    Args:
        value: str `HxW`, int, pair of ints, or None / "dynamic" for dynamic shapes.

    Returns:
        `(H, W)` tuple of ints, or None for dynamic shapes.

    Raises:
        ValueError: for anything else, or sizes below 1.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() == "dynamic"):
        return None
    try:
        if isinstance(value, str):
            parts = [int(p) for p in value.lower().split("x")]
        elif isinstance(value, (int, np.integer)):
            parts = [int(value)] * 2
        else:
            parts = [int(p) for p in value]
    except (TypeError, ValueError):
        parts = []
    if len(parts) != 2 or min(parts) < 1:
        raise ValueError(
            f"input size {value!r} must be HxW with positive integers (e.g. 512x512), "
            "or 'dynamic' for dynamic shapes"
        )
    return tuple(parts)


def _sample_inputs(dtype, shape=(2, 48, 48, 3), seed=0):
    rng = np.random.default_rng(seed)
    if dtype == np.uint8:
        return rng.integers(0, 256, shape, dtype=np.uint8)
    if dtype == "logits":
        return rng.uniform(-1, 1, shape).astype(np.float32)
    return rng.uniform(0, 255, shape).astype(np.float32)


def onnx_predict(path, images):
    """Runs an ONNX model exported by `to_onnx` in onnxruntime (CPU).

    Args:
        path: .onnx file.
        images: array with the input's dtype, `(N, H, W, 3)`.

    Returns:
        dict output name -> numpy array.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    input_name = session.get_inputs()[0].name
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {input_name: np.asarray(images)})))


def op_census(path):
    """Counts the nodes of an ONNX model by op type (the main graph).

    Args:
        path: .onnx file, or a loaded `onnx.ModelProto`.

    Returns:
        `collections.Counter` op type -> count; `sum(counter.values())` is the node count.
    """
    import onnx

    model = onnx.load(path, load_external_data=False) if isinstance(path, (str, os.PathLike)) else path
    return collections.Counter(node.op_type for node in model.graph.node)


def _redecoded(task, outputs, image_size):
    """TensorFlow's decoding (`task.postprocess`) of a model's own heatmaps (and tags).

    Args:
        task: the export's `tfnas.tasks.Task`, or None.
        outputs: dict name -> numpy array, one run of a serving signature.
        image_size: `(H, W)` of the input images.

    Returns:
        dict name -> numpy array of the `DECODED_OUTPUTS` of the task, or {} when it has none
        (or `outputs` lack the heatmaps, as the `logits` signature does).
    """
    import tensorflow as tf

    names = DECODED_OUTPUTS.get(getattr(task, "name", None), ())
    if not names or "heatmaps" not in outputs:
        return {}
    main = outputs["heatmaps"]
    if task.name == "pose-multi":  # the head's 2J channels: heatmaps, then tags
        main = np.concatenate([main, outputs["tags"]], axis=-1)
    decoded = task.postprocess(tf.constant(main), tf.constant(image_size, tf.int32))
    return {k: decoded[k].numpy() for k in names}


def _export_task(saved_model_dir):
    """The task recorded with an export, or None for a SavedModel without tfnas metadata."""
    from tfnas.serving.savedmodel import read_task

    try:
        return read_task(saved_model_dir)
    except FileNotFoundError:
        return None


def _import(graph_def):
    import tensorflow as tf

    graph = tf.Graph()
    with graph.as_default():
        tf.import_graph_def(graph_def, name="")
    return graph


def inlined_graph(concrete_function):
    """A concrete function with its nested functions inlined and variables frozen, as a `tf.Graph`.

    Importing the GraphDef runs TensorFlow's shape inference on every op, so a function traced
    at a fixed input size has static shapes throughout (see `network_stride`).
    """
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    frozen = convert_variables_to_constants_v2(concrete_function, aggressive_inlining=True)
    return _import(frozen.graph.as_graph_def())


def network_stride(graph, input_size):
    """The output stride of a network: how many input pixels one of its deepest features spans.

    Read from the static shapes of a graph traced at `input_size`: for every strided
    convolution or pooling, input size / output size, rounded to a power of two (the strides of
    every tfnas encoder are powers of two, and "same" padding rounds sizes up).

    Args:
        graph: `tf.Graph` (or GraphDef) traced at a fixed input size.
        input_size: `(H, W)` it was traced at.

    Returns:
        `(stride_h, stride_w)` ints, `(1, 1)` for a network without strided ops.
    """
    if not hasattr(graph, "get_operations"):
        graph = _import(graph)
    stride = [1, 1]
    for op in graph.get_operations():
        if op.type not in _STRIDED_OPS or not op.outputs[0].shape.is_fully_defined():
            continue
        shape, strides = op.outputs[0].shape.as_list(), op.get_attr("strides")
        if op.get_attr("data_format") == b"NCHW":
            shape, strides = [shape[0], *shape[2:], shape[1]], [strides[0], *strides[2:], strides[1]]
        for axis in (0, 1):
            if strides[1 + axis] == 1:  # global pooling and the convolutions after it keep the stride
                continue
            ratio = input_size[axis] / max(shape[1 + axis], 1)
            stride[axis] = max(stride[axis], int(2 ** round(np.log2(max(ratio, 1.0)))))
    return tuple(stride)


def check_input_size(input_size, stride):
    """Raises a ValueError unless both sides of `input_size` are multiples of the output stride.

    With another size the strided layers pad unevenly, the deepest features no longer line up
    with the image and the upsampled class map is shifted; TensorRT and TFLite would build it,
    so this is where it is caught.

    Args:
        input_size: `(H, W)`.
        stride: `(stride_h, stride_w)` from `network_stride`.
    """
    bad = [(side, size, s) for side, size, s in zip(("height", "width"), input_size, stride) if size % s]
    if bad:
        fixes = "x".join(str(max(s, int(round(size / s)) * s)) for size, s in zip(input_size, stride))
        side, size, s = bad[0]
        raise ValueError(
            f"input size {input_size[0]}x{input_size[1]} does not fit this network: its {side} {size} is not "
            f"divisible by the network's output stride {s} (its deepest features are at 1/{s} of the "
            f"input); use multiples of {stride[0]}x{stride[1]}, e.g. {fixes}"
        )


def _fold_static_shapes(graph_def):
    """Replaces `Shape` and `ZerosLike` of statically known shape by constants.

    The signatures of a tfnas SavedModel are traced for any image size; re-tracing them at a
    fixed size gives TensorFlow static shapes everywhere, but the restored function bodies still
    compute sizes at run time (`tf.shape` for every resize, dilated convolution and global
    pooling branch). tf2onnx only folds what its own shape inference proves, so those stay as
    Shape / Slice / Concat chains that block the dilated-convolution and transpose rewrites.
    Returns the GraphDef with those values as constants (without `_output_shapes` attributes,
    so the next pass re-infers the shapes).
    """
    import tensorflow as tf

    graph = _import(graph_def)
    out = tf.compat.v1.GraphDef()
    out.versions.CopyFrom(graph_def.versions)
    out.library.CopyFrom(graph_def.library)
    for node in graph_def.node:
        new = out.node.add()
        new.CopyFrom(node)
        new.attr.pop("_output_shapes", None)
        if node.op not in ("Shape", "ZerosLike"):
            continue
        source = graph.get_operation_by_name(node.name).inputs[0]
        if not source.shape.is_fully_defined():
            continue
        if node.op == "Shape":
            dtype = tf.as_dtype(node.attr["out_type"].type)
            value = np.array(source.shape.as_list(), dtype=dtype.as_numpy_dtype)
        else:
            dtype = tf.as_dtype(node.attr["T"].type)
            value = np.zeros(source.shape.as_list(), dtype=dtype.as_numpy_dtype)
        new.ClearField("input")
        new.ClearField("attr")
        new.op = "Const"
        new.attr["dtype"].type = dtype.as_datatype_enum
        new.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(value, dtype=dtype))
    return out


def _frozen_graph(saved_model_dir, signature, input_shape):
    """The signature as a frozen, optimized GraphDef (what tf2onnx converts), and its names.

    Returns:
        (graph_def, input tensor names, output tensor names, renames to the signature's names,
        the signature's `tf.TensorSpec`, the restored signature function).
    """
    import tensorflow as tf
    from tf2onnx import tf_loader

    loaded = tf.saved_model.load(saved_model_dir)
    if signature not in loaded.signatures:
        raise ValueError(
            f"signature {signature!r} is not in {saved_model_dir}; it has {sorted(loaded.signatures)}"
        )
    fn = loaded.signatures[signature]
    ((input_name, spec),) = fn.structured_input_signature[1].items()
    concrete = fn
    if input_shape is not None:
        fixed = tf.TensorSpec(input_shape, spec.dtype, name=input_name)
        concrete = tf.function(
            lambda images: fn(**{input_name: images}), input_signature=[fixed], autograph=False
        ).get_concrete_function()
    captured = {id(t) for t in concrete.captured_inputs}
    inputs = [t.name for t in concrete.inputs if t.dtype != tf.resource and id(t) not in captured]
    outputs = [t.name for t in concrete.outputs]
    # tf2onnx's own naming rule (tf_loader._from_saved_model_v2): outputs in sorted key order.
    renames = dict(zip(inputs, [input_name]))
    renames.update(zip(outputs, sorted(concrete.structured_outputs)))
    graph_def = tf_loader.from_function(concrete, inputs, outputs)
    if input_shape is not None:
        folded = _fold_static_shapes(graph_def)
        with tf.Graph().as_default():  # grappler runs on a graph, as in tf_loader.from_function
            graph_def = tf_loader.tf_optimize(inputs, outputs, folded)
    return graph_def, inputs, outputs, renames, spec, fn


def to_onnx(
    source,
    path,
    opset=17,
    signature="serving_default",
    input_size=None,
    batch_size=1,
    sample_inputs=None,
    atol=1e-4,
    task=None,
):
    """Converts one signature of an exported SavedModel to ONNX and checks it in onnxruntime.

    Args:
        source: a version directory written by `tfnas.serving.export`, or a Keras tfnas model
            (exported to a temporary directory first, with `task`).
        path: output .onnx file.
        opset: ONNX opset, default 17.
        signature: "serving_default" (uint8 in, the task's outputs out: classes and
            probabilities for segmentation), "serving_float", or "logits" (preprocessed float
            in, raw logits out, for TensorRT). Default "serving_default".
        input_size: the deployment size `(H, W)` (or "HxW", or an int for a square): the graph
            is converted for input `(batch_size, H, W, 3)`, with every op in its native form.
            Default None: dynamic batch, height and width (a larger, slower graph).
        batch_size: fixed batch size when `input_size` is given, default 1.
        sample_inputs: images for the parity check, with the signature's input dtype and
            range; default two random 48x48 images (dynamic) or one batch of random images at
            the fixed shape.
        atol: largest allowed difference of float outputs, relative to each output's scale
            (its largest magnitude in TensorFlow, at least 1); integer outputs (the class map)
            may differ on at most 0.1% of pixels (ties between classes); decoded pose outputs
            are checked as the module docstring says. Default 1e-4.
        task: for a Keras `source`, the task it predicts for (as in `export`; default None:
            segmentation); a version directory's own task is read from its metadata.

    Returns:
        dict: `path`, `signature`, `task` (name, or None without tfnas metadata),
        `input_names`, `output_names`, `input_shape` (None for dynamic dimensions),
        `output_stride` (fixed size only), `nodes` (count), `op_counts`, `max_abs_diff` (per
        float output, against TensorFlow), `tolerance` (per float output), `mismatch_fraction`
        (per integer output), `decode_max_abs_diff` (per decoded output, against TensorFlow's
        decoding of the ONNX heatmaps).

    Raises:
        ValueError: for an unknown signature, a bad size, or a size that is not a multiple of
            the network's output stride (the message names both).
        ParityError: if onnxruntime disagrees with TensorFlow beyond the tolerances.
    """
    import tensorflow as tf
    from tf2onnx import convert

    from tfnas.serving.savedmodel import saved_model_dir as as_saved_model_dir

    size = parse_input_size(input_size)
    if size is not None and (isinstance(batch_size, bool) or int(batch_size) < 1):
        raise ValueError(f"batch_size {batch_size!r} must be a positive integer")
    input_shape = None if size is None else (int(batch_size), size[0], size[1], 3)
    with tempfile.TemporaryDirectory() as tmp:
        saved = as_saved_model_dir(source, tmp, task=task)
        export_task = _export_task(saved)
        graph_def, inputs, outputs, renames, spec, fn = _frozen_graph(saved, signature, input_shape)
        stride = None
        if size is not None:
            stride = network_stride(graph_def, size)
            check_input_size(size, stride)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with tf.device("/cpu:0"):
            convert._convert_common(  # noqa: SLF001 - the CLI's own conversion step (tf2onnx 1.17)
                graph_def,
                name=os.path.basename(saved),
                opset=opset,
                input_names=inputs,
                output_names=outputs,
                tensors_to_rename=renames,
                output_path=path,
            )
        input_name = renames[inputs[0]]
        dtype = spec.dtype.as_numpy_dtype
        if sample_inputs is None:
            kind = "logits" if signature == "logits" else dtype
            sample_inputs = _sample_inputs(kind, input_shape or (2, 48, 48, 3))
        sample_inputs = np.asarray(sample_inputs).astype(dtype)
        expected = {k: v.numpy() for k, v in fn(**{input_name: tf.constant(sample_inputs)}).items()}
    got = onnx_predict(path, sample_inputs)
    census = op_census(path)
    report = {
        "path": path,
        "signature": signature,
        "task": getattr(export_task, "name", None),
        "input_names": [input_name],
        "output_names": sorted(got),
        "input_shape": list(input_shape) if input_shape else None,
        "output_stride": list(stride) if stride else None,
        "nodes": sum(census.values()),
        "op_counts": dict(census),
        "max_abs_diff": {},
        "tolerance": {},
        "mismatch_fraction": {},
        "decode_max_abs_diff": {},
    }
    failures = []
    shapes_agree = all(k in got and got[k].shape == v.shape for k, v in expected.items())
    decoded = _redecoded(export_task, got, sample_inputs.shape[1:3]) if shapes_agree else {}
    for key, want in expected.items():
        if key not in got:
            failures.append(f"output {key!r} missing from the ONNX model (it has {sorted(got)})")
            continue
        if want.shape != got[key].shape:
            failures.append(f"output {key!r} has shape {got[key].shape} in ONNX, {want.shape} in TensorFlow")
        elif np.issubdtype(want.dtype, np.integer):
            fraction = float(np.mean(want != got[key]))
            report["mismatch_fraction"][key] = fraction
            if fraction > 1e-3:
                failures.append(f"output {key!r} differs on {fraction:.2%} of elements (allowed 0.1%)")
        else:
            scale = max(1.0, float(np.max(np.abs(want)))) if want.size else 1.0
            tolerance = atol * scale
            diff = float(np.max(np.abs(want - got[key]))) if want.size else 0.0
            report["max_abs_diff"][key] = diff
            report["tolerance"][key] = tolerance
            if key in decoded:  # argmax / top-k: compared with TensorFlow decoding ONNX's heatmaps
                diff = float(np.max(np.abs(decoded[key] - got[key]))) if want.size else 0.0
                report["decode_max_abs_diff"][key] = diff
                if not diff <= tolerance:
                    failures.append(
                        f"output {key!r} differs by up to {diff:.3g} from TensorFlow's decoding of the "
                        f"ONNX heatmaps (tolerance {tolerance:.3g} = atol {atol} x scale {scale:.3g})"
                    )
            elif not diff <= tolerance:
                failures.append(
                    f"output {key!r} differs by up to {diff:.3g} (tolerance {tolerance:.3g} = atol {atol} "
                    f"x output scale {scale:.3g})"
                )
    if failures:
        raise ParityError(
            f"ONNX parity check of {path} (signature {signature!r}) against TensorFlow failed: "
            + "; ".join(failures)
            + ". Try another opset or signature='logits'."
        )
    return report
