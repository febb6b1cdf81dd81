"""Explicit INT8 quantization of an ONNX model (QuantizeLinear/DequantizeLinear nodes) for TensorRT 10.

TensorRT 10 (JetPack 6) deprecates implicit INT8 calibration (`IInt8EntropyCalibrator2`) in
favour of explicit quantization: the ONNX model carries QuantizeLinear/DequantizeLinear (Q/DQ)
pairs with the scales, and `trtexec --int8` / the builder's INT8 flag use them as they are.
`quantize_onnx` writes such a model with `onnxruntime.quantization.quantize_static` in QDQ format,
calibrated on the user's images, following TensorRT's rules for Q/DQ models: signed int8
activations and weights, symmetric (zero point 0), weights per output channel, biases in float.

The same Q/DQ model runs in onnxruntime (CPU), which is how its accuracy is checked here before
it goes to the device.

Pose models' `serving_default` / `serving_float` graphs decode heatmaps (max-pool NMS, top-k,
keypoint positions in input pixels); quantized, the positions would be rounded to the int8 grid
and the peaks change, so `quantize_onnx` refuses them: quantize their `logits` graph (what
TensorRT builds from) and decode in float (`task.postprocess`).
"""

import os

import numpy as np

#: Calibration methods of onnxruntime.quantization.CalibrationMethod accepted by `quantize_onnx`.
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


def calibration_images(source, size=None, limit=100):
    """The user's calibration images as one uint8 batch, resized to the model's input size.

    Args:
        source: a folder of images (png, jpg, bmp, gif; read in name order), or uint8 images
            (or floats in [0, 255]) as an array `(N, H, W, 3)` / `(H, W, 3)` or a list of them.
        size: `(H, W)` to resize to (bilinear), default None keeps the size (all images must
            then have the same size).
        limit: most images used, default 100.

    Returns:
        uint8 numpy array `(N, H, W, 3)`.

    Raises:
        FileNotFoundError: for a missing or empty folder.
        ValueError: for images that are not RGB, or of different sizes without `size`.
    """
    import tensorflow as tf

    from tfnas.serving._images import image_batch

    if isinstance(source, (str, os.PathLike)):
        from tfnas.serving.tftrt import load_images

        images = load_images(os.fspath(source), limit=limit)
    elif isinstance(source, np.ndarray) or tf.is_tensor(source):
        images = list(image_batch(np.asarray(source), "calibration images"))
    else:
        images = [image for item in source for image in image_batch(item, "calibration image")]
    images = images[:limit]
    if not images:
        raise ValueError("no calibration images given; pass a few dozen of your own images")
    if size is not None:
        images = [tf.image.resize(np.asarray(i, np.float32), size, method="bilinear").numpy() for i in images]
    shapes = {tuple(np.shape(i)) for i in images}
    if len(shapes) > 1:
        raise ValueError(f"calibration images have different sizes {sorted(shapes)}; pass size=(H, W)")
    images = np.stack(images)
    return images if images.dtype == np.uint8 else np.clip(np.round(images), 0, 255).astype(np.uint8)


def _reader_class():
    from onnxruntime.quantization import CalibrationDataReader

    class ImageCalibrationReader(CalibrationDataReader):
        """Feeds calibration batches to `quantize_static`, preprocessed for the model's input.

        Args:
            images: uint8 array `(N, H, W, 3)`.
            input_name: the ONNX input name.
            input_shape: the ONNX input shape (ints, or strings/None for dynamic dimensions).
            dtype: "uint8" (serving_default: the graph preprocesses), "float_255"
                (serving_float) or "float" (logits: images / 127.5 - 1, the training
                preprocessing).
        """

        def __init__(self, images, input_name, input_shape, dtype):
            self.input_name = input_name
            batch = input_shape[0] if isinstance(input_shape[0], int) and input_shape[0] > 0 else 1
            if len(images) % batch:
                images = images[: len(images) - len(images) % batch]
                if not len(images):
                    raise ValueError(f"the model's batch is {batch}, but fewer calibration images were given")
            fixed = [d if isinstance(d, int) and d > 0 else None for d in input_shape[1:3]]
            if any(f is not None and f != s for f, s in zip(fixed, images.shape[1:3])):
                raise ValueError(
                    f"calibration images are {images.shape[1]}x{images.shape[2]}, the model input "
                    f"is {fixed[0]}x{fixed[1]}; resize them (calibration_images(..., size=))"
                )
            if dtype == "float":
                images = images.astype(np.float32) / 127.5 - 1.0  # tfnas.preprocessing.preprocess
            elif dtype == "float_255":
                images = images.astype(np.float32)
            self.batches = iter([images[i : i + batch] for i in range(0, len(images), batch)])

        def get_next(self):
            batch = next(self.batches, None)
            return None if batch is None else {self.input_name: batch}

    return ImageCalibrationReader


def is_qdq_model(path):
    """Whether an ONNX model is explicitly quantized (holds QuantizeLinear/DequantizeLinear nodes).

    Args:
        path: .onnx file.

    Returns:
        bool.
    """
    from tfnas.serving.onnx_export import op_census

    census = op_census(path)
    return census["QuantizeLinear"] > 0 and census["DequantizeLinear"] > 0


def quantize_onnx(onnx_path, out_path, calibration_data, method="minmax", per_channel=True, limit=100):
    """Writes an INT8 Q/DQ copy of an ONNX model from `to_onnx`, calibrated on your images.

    Activation ranges come from running the float model in onnxruntime on the calibration
    images (`method`); weights are quantized per output channel. The input, the output and the
    integer ops (argmax) stay as they are, so the Q/DQ model is a drop-in replacement.

    Args:
        onnx_path: float ONNX model written by `to_onnx` (any signature; `logits` at the
            deployment size for TensorRT; for pose models the `logits` signature only).
        out_path: output .onnx file.
        calibration_data: a folder of your images, or uint8 images as an array / list (see
            `calibration_images`); resized to the model's input size when it is fixed. A few
            dozen representative images are enough.
        method: activation range estimate: "minmax" (default; fast), "entropy" (TensorRT's
            classic choice, slower, more memory) or "percentile" (99.999%).
        per_channel: quantize weights per output channel, default True.
        limit: most calibration images used, default 100.

    Returns:
        dict: `path`, `calibration_images` (count), `method`, `quantize_linear` and
        `dequantize_linear` (node counts), `nodes`.

    Raises:
        ValueError: for an unknown method, unusable calibration images, or a graph that
            decodes pose heatmaps (module docstring).
        FileNotFoundError: for a missing model or calibration folder.
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from tfnas.serving.onnx_export import DECODED_OUTPUTS, op_census

    method = str(method).lower()
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method {method!r} must be one of {CALIBRATION_METHODS}")
    if not os.path.exists(onnx_path):
        raise FileNotFoundError(f"ONNX model {onnx_path} does not exist; write it with tfnas.serving.to_onnx")
    model = onnx.load(onnx_path, load_external_data=False)
    decoded = sorted(
        {o.name for o in model.graph.output} & {n for names in DECODED_OUTPUTS.values() for n in names}
    )
    if decoded:
        raise ValueError(
            f"{onnx_path} decodes pose heatmaps in the graph (outputs {decoded}); INT8 Q/DQ would round "
            "the decoded positions and peaks to the int8 grid. Quantize the logits signature instead "
            "(to_onnx(..., signature='logits'), `tfnas convert ... --signature logits`) and decode its "
            "heatmaps in float with task.postprocess"
        )
    graph_input = model.graph.input[0]
    dims = [d.dim_value if d.HasField("dim_value") else None for d in graph_input.type.tensor_type.shape.dim]
    elem = graph_input.type.tensor_type.elem_type
    size = tuple(dims[1:3]) if all(dims[1:3]) else None
    images = calibration_images(calibration_data, size=size, limit=limit)
    if elem == onnx.TensorProto.UINT8:
        dtype = "uint8"
    else:  # logits take preprocessed images in [-1, 1]; serving_float takes [0, 255]
        dtype = "float" if any(o.name == "logits" for o in model.graph.output) else "float_255"
    reader = _reader_class()(images, graph_input.name, dims, dtype)
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    quantize_static(
        onnx_path,
        out_path,
        reader,
        quant_format=QuantFormat.QDQ,
        per_channel=bool(per_channel),
        activation_type=QuantType.QInt8,
        weight_type=QuantType.QInt8,
        calibrate_method={
            "minmax": CalibrationMethod.MinMax,
            "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile,
        }[method],
        # TensorRT's explicit quantization: symmetric int8 (zero point 0) for activations and weights,
        # float biases (TensorRT folds them into the convolution). Relu/Clip stay in the graph: with
        # symmetric ranges removing them would let negative values through (onnxruntime #11660).
        extra_options={
            "ActivationSymmetric": True,
            "WeightSymmetric": True,
            "QuantizeBias": False,
            "QDQKeepRemovableActivations": True,
        },
    )
    census = op_census(out_path)
    if not census["QuantizeLinear"]:
        raise ValueError(f"onnxruntime quantized nothing in {onnx_path} (ops: {dict(census)})")
    return {
        "path": out_path,
        "calibration_images": int(len(images)),
        "method": method,
        "quantize_linear": census["QuantizeLinear"],
        "dequantize_linear": census["DequantizeLinear"],
        "nodes": sum(census.values()),
    }
