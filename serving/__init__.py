"""Shipping tfnas models: SavedModel for TF Serving, its config, client and preview server, ONNX,
TensorRT, TF-TRT and TFLite.

Imports are lazy, so that `import tfnas.serving.tftrt` (which must run on a Jetson with only
NVIDIA's TensorFlow installed) does not pull TensorFlow-independent dependencies, and so that
`tfnas --help` stays fast. `from tfnas.serving import export` works as usual.
"""

import importlib

_EXPORTS = {
    "export": "savedmodel",
    "next_version": "savedmodel",
    "read_metadata": "savedmodel",
    "read_warmup_requests": "savedmodel",
    "read_task": "savedmodel",
    "SIGNATURES": "savedmodel",
    "TASK_OUTPUTS": "savedmodel",
    "ModelConfig": "config",
    "models_config_text": "config",
    "write_models_config": "config",
    "read_models_config": "config",
    "ServingClient": "client",
    "ServingError": "client",
    "ServingConnectionError": "client",
    "PreviewServer": "preview",
    "to_onnx": "onnx_export",
    "op_census": "onnx_export",
    "parse_input_size": "onnx_export",
    "quantize_onnx": "quantize",
    "onnx_predict": "onnx_export",
    "to_tflite": "tflite",
    "tflite_predict": "tflite",
    "compare": "tflite",
    "to_tftrt": "tftrt",
    "build_engine": "tensorrt",
    "time_engine": "tensorrt",
    "write_trtexec_script": "tensorrt",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    """Import the submodule that defines `name` on first use."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'tfnas.serving' has no attribute {name!r}")
    module = importlib.import_module(f"{__name__}.{_EXPORTS[name]}")
    return getattr(module, name)
