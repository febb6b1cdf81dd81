"""ONNX export of a tfnas SavedModel with tf2onnx, checked against TensorFlow in onnxruntime.

The ONNX model keeps the signature's tensor names:

| signature | ONNX input | ONNX outputs |
| --- | --- | --- |
| `serving_default` | `images` uint8 `(N, H, W, 3)` | `classes` int32 `(N, H, W)`, `probabilities` float32 `(N, H, W, C)` |
| `serving_float` | `images` float32 in [0, 255] | same |
| `logits` | `images` float32 in [-1, 1] | `logits` float32 `(N, h, w, C)` |

All dimensions but the channels stay dynamic. `serving_default` converts whole (preprocessing,
bilinear resize, softmax, argmax), which is the simplest graph to deploy with onnxruntime;
`logits` is the one to feed TensorRT (float input, no argmax, smallest output).
"""
import os

import numpy as np


def _sample_inputs(dtype, seed=0):
    rng = np.random.default_rng(seed)
    if dtype == np.uint8:
        return rng.integers(0, 256, (2, 48, 48, 3), dtype=np.uint8)
    if dtype == "logits":
        return rng.uniform(-1, 1, (2, 48, 48, 3)).astype(np.float32)
    return rng.uniform(0, 255, (2, 48, 48, 3)).astype(np.float32)


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


def to_onnx(saved_model_dir, path, opset=17, signature="serving_default", sample_inputs=None, atol=1e-4):
    """Converts one signature of an exported SavedModel to ONNX and checks it in onnxruntime.

    Args:
        saved_model_dir: a version directory written by `tfnas.serving.export`.
        path: output .onnx file.
        opset: ONNX opset, default 17.
        signature: "serving_default" (uint8 in, classes and probabilities out), "serving_float",
            or "logits" (preprocessed float in, raw logits out, for TensorRT). Default
            "serving_default".
        sample_inputs: images for the parity check, with the signature's input dtype and
            range; default two random 48x48 images.
        atol: largest allowed absolute difference of float outputs; integer outputs (the class
            map) may differ on at most 0.1% of pixels (ties between classes). Default 1e-4.

    Returns:
        dict: `path`, `signature`, `input_names`, `output_names`, `max_abs_diff` (per float
        output), `mismatch_fraction` (per integer output).

    Raises:
        ValueError: for an unknown signature.
        AssertionError: if onnxruntime disagrees with TensorFlow beyond the tolerances.
    """
    import tensorflow as tf
    from tf2onnx import convert, tf_loader

    loaded = tf.saved_model.load(saved_model_dir)
    if signature not in loaded.signatures:
        raise ValueError(
            f"signature {signature!r} is not in {saved_model_dir}; it has {sorted(loaded.signatures)}")
    fn = loaded.signatures[signature]
    (input_name, spec), = fn.structured_input_signature[1].items()
    # What `python -m tf2onnx.convert --saved-model DIR --signature_def SIG` does, in process.
    graph_def, inputs, outputs, tables, renames = tf_loader.from_saved_model(
        saved_model_dir, None, None, tag="serve", signatures=[signature],
        return_initialized_tables=True, return_tensors_to_rename=True)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with tf.device("/cpu:0"):
        convert._convert_common(  # noqa: SLF001 - the CLI's own conversion step (tf2onnx 1.17)
            graph_def, name=saved_model_dir, opset=opset, input_names=inputs, output_names=outputs,
            tensors_to_rename=renames, initialized_tables=tables, output_path=path)

    if sample_inputs is None:
        sample_inputs = _sample_inputs("logits" if signature == "logits" else spec.dtype.as_numpy_dtype)
    sample_inputs = np.asarray(sample_inputs).astype(spec.dtype.as_numpy_dtype)
    expected = {k: v.numpy() for k, v in fn(**{input_name: tf.constant(sample_inputs)}).items()}
    got = onnx_predict(path, sample_inputs)
    report = {"path": path, "signature": signature, "input_names": [input_name],
              "output_names": sorted(got), "max_abs_diff": {}, "mismatch_fraction": {}}
    failures = []
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
            diff = float(np.max(np.abs(want - got[key])))
            report["max_abs_diff"][key] = diff
            if not diff <= atol:
                failures.append(f"output {key!r} differs by up to {diff:.3g} (atol {atol})")
    if failures:
        raise AssertionError(
            f"ONNX parity check of {path} (signature {signature!r}) against TensorFlow failed: "
            + "; ".join(failures) + ". Try another opset or signature='logits'.")
    return report
