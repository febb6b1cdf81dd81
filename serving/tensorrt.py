"""TensorRT engines from the ONNX export, for NVIDIA Jetson (JetPack ships TensorRT and trtexec).

Both ways start from the ONNX model at the deployment size, `to_onnx(..., signature="logits",
input_size=(H, W))` (float32 input in [-1, 1], every op in its native form; an engine has fixed
shapes anyway), so an engine returns the raw `logits` whatever the task (class logits, depths,
pose heatmaps and tags) and the app applies `task.postprocess` (`tfnas.tasks`). The two ways:

- `build_engine` / `time_engine`: the TensorRT Python API (builder, `OnnxParser`, FP16/INT8
  flags), run on the device. Device memory comes from `cuda-python` (`cuda.bindings.runtime` or
  `cuda.cudart`) or `pycuda`.
- `write_trtexec_script`: a self-contained folder (ONNX model + shell script) to copy to the
  Jetson; the script builds the engine with `trtexec` and times it.

INT8 is explicit: the ONNX model carries QuantizeLinear/DequantizeLinear nodes calibrated on
your images (`tfnas.serving.quantize.quantize_onnx`), and TensorRT uses their scales. That is the
only INT8 path of TensorRT 10 (JetPack 6), which deprecates implicit calibration. The implicit
path (an `IInt8EntropyCalibrator2` fed from your images, on the float model) is kept for
TensorRT < 10 (JetPack 5).

TensorRT is not installable on machines without an NVIDIA driver (the PyPI `tensorrt` package
downloads its libraries from NVIDIA at install time); there `build_engine` and `time_engine`
raise `RuntimeError` saying to run them on the Jetson or use the generated trtexec script.
Engines are specific to the GPU and TensorRT version they were built with.
"""

import os
import shutil
import stat
import time

import numpy as np

PRECISIONS = ("fp32", "fp16", "int8")


def needs_explicit_quantization(version):
    """Whether a TensorRT version needs Q/DQ models for INT8 (10 and later: no implicit calibration).

    Args:
        version: TensorRT version string, e.g. `tensorrt.__version__` ("10.3.0").

    Returns:
        bool.
    """
    return int(str(version).split(".")[0]) >= 10


def _onnx_input(onnx_path):
    """(name, shape with None for dynamic dimensions) of the ONNX model's first input."""
    import onnx

    graph_input = onnx.load(onnx_path, load_external_data=False).graph.input[0]
    dims = graph_input.type.tensor_type.shape.dim
    return graph_input.name, tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)


def _engine_shape(onnx_path, input_shape):
    """The engine input shape: the model's own when it is fixed, else `input_shape` (or 1x512x512x3)."""
    _, model_shape = _onnx_input(onnx_path)
    if all(model_shape):
        if input_shape is not None and tuple(int(d) for d in input_shape) != model_shape:
            raise ValueError(
                f"{onnx_path} has the fixed input shape {model_shape}, not {tuple(input_shape)}; convert the "
                "model at that size (to_onnx(..., input_size=(H, W), batch_size=N)) or leave input_shape out"
            )
        return model_shape, True
    shape = tuple(int(d) for d in (input_shape or (1, 512, 512, 3)))
    if len(shape) != 4 or min(shape) < 1:
        raise ValueError(f"input_shape {tuple(shape)} must be 4 positive sizes (N, H, W, 3)")
    return shape, False


def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise RuntimeError(
            f"TensorRT is not installed here ({e}). Run this on the Jetson (JetPack ships TensorRT "
            "and its Python bindings), or copy the folder written by write_trtexec_script "
            "(`tfnas convert SAVED_MODEL --to tensorrt`) there and run its script."
        ) from None
    return trt


class _CudaMemory:
    """Minimal device memory and stream helpers over cuda-python or pycuda."""

    def __init__(self):
        try:
            try:
                from cuda.bindings import runtime as cudart
            except ImportError:
                from cuda import cudart
            self._cudart, self._pycuda = cudart, None
        except ImportError:
            try:
                import pycuda.autoinit  # noqa: F401 - creates the context
                import pycuda.driver as cuda
            except ImportError:
                raise RuntimeError(
                    "TensorRT needs device memory from `cuda-python` or `pycuda`; install one "
                    "(`pip install cuda-python`) on the Jetson"
                ) from None
            self._cudart, self._pycuda = None, cuda

    def _check(self, result):
        err, *rest = result
        if int(err) != 0:
            raise RuntimeError(f"CUDA error {err}")
        return rest[0] if rest else None

    def malloc(self, nbytes):
        if self._pycuda:
            return self._pycuda.mem_alloc(int(nbytes))
        return self._check(self._cudart.cudaMalloc(int(nbytes)))

    def free(self, ptr):
        if self._pycuda:
            ptr.free()
        else:
            self._check(self._cudart.cudaFree(ptr))

    def to_device(self, ptr, array):
        array = np.ascontiguousarray(array)
        if self._pycuda:
            self._pycuda.memcpy_htod(ptr, array)
        else:
            kind = self._cudart.cudaMemcpyKind.cudaMemcpyHostToDevice
            self._check(self._cudart.cudaMemcpy(ptr, array.ctypes.data, array.nbytes, kind))

    def to_host(self, array, ptr):
        if self._pycuda:
            self._pycuda.memcpy_dtoh(array, ptr)
        else:
            kind = self._cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
            self._check(self._cudart.cudaMemcpy(array.ctypes.data, ptr, array.nbytes, kind))

    def synchronize(self):
        if self._pycuda:
            self._pycuda.Context.synchronize()
        else:
            self._check(self._cudart.cudaDeviceSynchronize())


def _preprocess(images):
    # Same formula as tfnas.preprocessing.preprocess, without TensorFlow (absent on most Jetsons).
    return np.asarray(images, np.float32) / 127.5 - 1.0


def _calibration_batches(calibration_data, input_shape, dtype):
    batch = []
    for item in calibration_data:
        images = np.asarray(item)
        for image in images if images.ndim == 4 else images[None]:
            if tuple(image.shape) != tuple(input_shape[1:]):
                raise ValueError(
                    f"calibration image is {image.shape}, but the engine input is {tuple(input_shape[1:])}; "
                    "resize your calibration images to the engine input size"
                )
            batch.append(image)
            if len(batch) == input_shape[0]:
                array = np.stack(batch)
                yield array.astype(np.uint8) if dtype == np.uint8 else _preprocess(array)
                batch = []


def _make_calibrator(trt, batches, nbytes, cache_path, memory):
    class EntropyCalibrator(trt.IInt8EntropyCalibrator2):
        """Feeds preprocessed user images to TensorRT's INT8 calibration, caching the scales."""

        def __init__(self):
            trt.IInt8EntropyCalibrator2.__init__(self)
            self.device = memory.malloc(nbytes)
            self.batch_size = None

        def get_batch_size(self):
            return self.batch_size or 1

        def get_batch(self, names):
            try:
                batch = next(batches)
            except StopIteration:
                return None
            self.batch_size = batch.shape[0]
            memory.to_device(self.device, batch)
            return [int(self.device)]

        def read_calibration_cache(self):
            if os.path.exists(cache_path):
                with open(cache_path, "rb") as f:
                    return f.read()
            return None

        def write_calibration_cache(self, cache):
            with open(cache_path, "wb") as f:
                f.write(bytes(cache))

    return EntropyCalibrator()


def build_engine(
    onnx_path,
    engine_path,
    precision="fp16",
    calibration_data=None,
    workspace_mb=1024,
    input_shape=None,
    calibration_cache=None,
):
    """Builds a TensorRT engine from an ONNX model with the TensorRT Python API.

    Args:
        onnx_path: ONNX model from `to_onnx` (the `logits` signature at the deployment size is
            the usual choice), or its Q/DQ copy from `quantize_onnx` for INT8.
        engine_path: output engine file (`.engine` / `.plan`).
        precision: "fp32", "fp16" or "int8" (INT8 keeps FP16 for layers without INT8 kernels).
            Default "fp16". INT8 from a Q/DQ model uses its scales (explicit quantization, any
            TensorRT >= 8, the only way in TensorRT 10); INT8 from a float model calibrates
            implicitly and needs TensorRT < 10.
        calibration_data: for implicit INT8 only: an iterable of uint8 images `(H, W, 3)` or
            batches `(N, H, W, 3)` at the engine's input size, from your data. Preprocessed
            here when the ONNX input is float.
        workspace_mb: builder workspace in MiB, default 1024.
        input_shape: engine input shape `(N, H, W, 3)`; default None takes the model's fixed
            shape (or `(1, 512, 512, 3)` for a dynamic model).
        calibration_cache: implicit INT8 cache file, default `engine_path + ".calib"`; reused if
            present (and readable by trtexec `--calib`).

    Returns:
        str, `engine_path`.

    Raises:
        ValueError: for a bad precision or shape, implicit INT8 without calibration data or
            cache, or implicit INT8 on TensorRT 10 (quantize the model with `quantize_onnx`).
        RuntimeError: if TensorRT is not installed here, or parsing/building fails.
    """
    from tfnas.serving.quantize import is_qdq_model

    precision = precision.lower()
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} must be one of {PRECISIONS}")
    calibration_cache = calibration_cache or f"{engine_path}.calib"
    explicit = precision == "int8" and os.path.exists(onnx_path) and is_qdq_model(onnx_path)
    if (
        precision == "int8"
        and not explicit
        and calibration_data is None
        and not os.path.exists(calibration_cache)
    ):
        raise ValueError(
            f"int8 needs a Q/DQ model (tfnas.serving.quantize.quantize_onnx on {onnx_path}) or, on TensorRT < 10, "
            "calibration_data (your images) or an existing calibration cache"
        )
    trt = _import_tensorrt()
    if precision == "int8" and not explicit and needs_explicit_quantization(trt.__version__):
        raise ValueError(
            f"TensorRT {trt.__version__} has no implicit INT8 calibration; {onnx_path} has no "
            "QuantizeLinear/DequantizeLinear nodes. Quantize it first: "
            "tfnas.serving.quantize.quantize_onnx(onnx_path, 'model_int8.onnx', your_images), or "
            "`tfnas convert SAVED_MODEL --to tensorrt --precision int8 --calibration-images DIR`"
        )
    input_shape, _ = _engine_shape(onnx_path, input_shape)
    trt = _import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if int(trt.__version__.split(".")[0]) < 10:
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    with open(onnx_path, "rb") as f:
        if not parser.parse(f.read()):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise RuntimeError(f"TensorRT could not parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    network_input = network.get_input(0)
    profile = None
    if any(int(d) < 0 for d in network_input.shape):  # a dynamic model: one profile at the engine shape
        profile = builder.create_optimization_profile()
        profile.set_shape(network_input.name, input_shape, input_shape, input_shape)
        config.add_optimization_profile(profile)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    memory = None
    if explicit:
        config.set_flag(trt.BuilderFlag.INT8)  # scales come from the Q/DQ nodes
    elif precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        memory = _CudaMemory()
        dtype = np.uint8 if network_input.dtype == trt.DataType.UINT8 else np.float32
        batches = _calibration_batches(calibration_data or [], input_shape, dtype)
        nbytes = int(np.prod(input_shape)) * np.dtype(dtype).itemsize
        config.int8_calibrator = _make_calibrator(trt, batches, nbytes, calibration_cache, memory)
        if profile is not None:
            config.set_calibration_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    os.makedirs(os.path.dirname(os.path.abspath(engine_path)), exist_ok=True)
    with open(engine_path, "wb") as f:
        f.write(serialized)
    return engine_path


def time_engine(engine_path, runs=100, warmup=10):
    """Times a TensorRT engine on random input (synchronous execution, device time included).

    Args:
        engine_path: engine file from `build_engine` or trtexec.
        runs: timed runs, default 100.
        warmup: untimed runs first, default 10.

    Returns:
        dict: `mean_ms`, `median_ms`, `p90_ms`, `input_shape`.

    Raises:
        RuntimeError: if TensorRT (or cuda-python/pycuda) is not installed here.
    """
    trt = _import_tensorrt()
    memory = _CudaMemory()
    logger = trt.Logger(trt.Logger.WARNING)
    with open(engine_path, "rb") as f:
        engine = trt.Runtime(logger).deserialize_cuda_engine(f.read())
    if engine is None:
        raise RuntimeError(
            f"could not load {engine_path}; engines only load with the TensorRT version and GPU that built them"
        )
    context = engine.create_execution_context()
    buffers, input_shape = [], None
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        shape = tuple(engine.get_tensor_shape(name))
        dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(name)))
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
            input_shape = shape
            data = (np.random.default_rng(0).uniform(-1, 1, shape)).astype(dtype)
            ptr = memory.malloc(data.nbytes)
            memory.to_device(ptr, data)
        else:
            ptr = memory.malloc(int(np.prod(shape)) * dtype.itemsize)
        context.set_tensor_address(name, int(ptr))
        buffers.append(ptr)
    times = []
    try:
        for i in range(warmup + runs):
            start = time.perf_counter()
            context.execute_async_v3(0)
            memory.synchronize()
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000)
    finally:
        for ptr in buffers:
            memory.free(ptr)
    return {
        "mean_ms": float(np.mean(times)),
        "median_ms": float(np.median(times)),
        "p90_ms": float(np.percentile(times, 90)),
        "input_shape": list(input_shape),
    }


def write_trtexec_script(
    onnx_path,
    out_dir,
    precision="fp16",
    input_shape=None,
    calibration_cache=None,
    input_name=None,
    iterations=200,
):
    """Writes a folder to copy to the Jetson: the ONNX model and `build_engine.sh` for trtexec.

    The script builds `model_<precision>.engine` with `trtexec --onnx=... --saveEngine=...`
    (`--fp16`, or `--int8 --fp16`), then times it with `--loadEngine`. For INT8 pass the Q/DQ
    model from `quantize_onnx` (explicit quantization, what TensorRT 10 needs). With a float
    model, `--int8` calibrates implicitly: with `calibration_cache` (`--calib`, TensorRT < 10)
    the ranges are real, without it they are placeholders (timing only; the script says so).
    A model at a fixed size (`to_onnx(..., input_size=(H, W))`) gets no `--shapes`: trtexec
    takes its shape from the model.

    Args:
        onnx_path: ONNX model from `to_onnx` or `quantize_onnx` (copied into `out_dir` as
            `model.onnx`).
        out_dir: output folder.
        precision: "fp32", "fp16" or "int8", default "fp16".
        input_shape: engine input shape `(N, H, W, 3)` for a dynamic model, default None:
            the model's fixed shape, or `(1, 512, 512, 3)`.
        calibration_cache: implicit INT8 calibration cache to copy along (`--calib`), default None.
        input_name: ONNX input name, default None reads it from the model ("images").
        iterations: timed iterations, default 200.

    Returns:
        str, the path of the script.

    Raises:
        ValueError: for a bad precision or input shape.
        FileNotFoundError: if the ONNX model or the calibration cache is missing.
    """
    from tfnas.serving.quantize import is_qdq_model

    precision = precision.lower()
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} must be one of {PRECISIONS}")
    for path in [onnx_path] + ([calibration_cache] if calibration_cache else []):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} does not exist")
    shape, static = _engine_shape(onnx_path, input_shape)
    input_name = input_name or _onnx_input(onnx_path)[0]
    explicit = precision == "int8" and is_qdq_model(onnx_path)
    os.makedirs(out_dir, exist_ok=True)
    if os.path.abspath(onnx_path) != os.path.abspath(os.path.join(out_dir, "model.onnx")):
        shutil.copyfile(onnx_path, os.path.join(out_dir, "model.onnx"))
    flags = {"fp32": "", "fp16": " --fp16", "int8": " --int8 --fp16"}[precision]
    if precision == "int8" and calibration_cache and not explicit:
        shutil.copyfile(calibration_cache, os.path.join(out_dir, "calibration.cache"))
        flags += ' --calib="$HERE/calibration.cache"'
    shapes = "" if static else f" --shapes={input_name}:{'x'.join(str(d) for d in shape)}"
    engine = f"model_{precision}.engine"
    note = ""
    if precision == "int8" and explicit:
        note = "# INT8 from the model's QuantizeLinear/DequantizeLinear scales (explicit quantization).\n"
    elif precision == "int8" and not calibration_cache:
        note = (
            "echo 'note: model.onnx has no Q/DQ nodes and there is no calibration cache: INT8 ranges are "
            "placeholders (timing only); use tfnas convert --precision int8 --calibration-images DIR'\n"
        )
    script = f"""#!/bin/sh
# Generated by tfnas.serving.tensorrt.write_trtexec_script: build and time a TensorRT engine.
# Run on the Jetson (JetPack ships trtexec in /usr/src/tensorrt/bin). Precision: {precision}.
# Input {input_name}: {"x".join(str(d) for d in shape)}{" (fixed in the model)" if static else ""}.
set -e
{note}HERE=$(cd "$(dirname "$0")" && pwd)
TRTEXEC=${{TRTEXEC:-/usr/src/tensorrt/bin/trtexec}}
[ -x "$TRTEXEC" ] || TRTEXEC=trtexec
"$TRTEXEC" --onnx="$HERE/model.onnx" --saveEngine="$HERE/{engine}"{flags}{shapes} --memPoolSize=workspace:1024
"$TRTEXEC" --loadEngine="$HERE/{engine}"{shapes} --warmUp=500 --iterations={int(iterations)} --avgRuns={int(iterations)} | tee "$HERE/timing_{precision}.txt"
"""
    path = os.path.join(out_dir, "build_engine.sh")
    with open(path, "w") as f:
        f.write(script)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path
