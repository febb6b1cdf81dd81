"""TensorRT engines from the ONNX export, for NVIDIA Jetson (JetPack ships TensorRT and trtexec).

Two ways, both starting from `to_onnx(..., signature="logits")` (float32 input in [-1, 1]):

- `build_engine` / `time_engine`: the TensorRT Python API (builder, `OnnxParser`, FP16/INT8
  flags, an `IInt8EntropyCalibrator2` fed from your images), run on the device. Device memory
  comes from `cuda-python` (`cuda.bindings.runtime` or `cuda.cudart`) or `pycuda`.
- `write_trtexec_script`: a self-contained folder (ONNX model + shell script) to copy to the
  Jetson; the script builds the engine with `trtexec` and times it.

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


def _import_tensorrt():
    try:
        import tensorrt as trt
    except ImportError as e:
        raise RuntimeError(
            f"TensorRT is not installed here ({e}). Run this on the Jetson (JetPack ships TensorRT "
            "and its Python bindings), or copy the folder written by write_trtexec_script "
            "(`tfnas convert SAVED_MODEL --to tensorrt`) there and run its script.") from None
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
                    "(`pip install cuda-python`) on the Jetson") from None
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
                    "resize your calibration images to the engine input size")
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


def build_engine(onnx_path, engine_path, precision="fp16", calibration_data=None, workspace_mb=1024,
                 input_shape=(1, 512, 512, 3), calibration_cache=None):
    """Builds a TensorRT engine from an ONNX model with the TensorRT Python API.

    Args:
        onnx_path: ONNX model from `to_onnx` (the `logits` signature is the usual choice).
        engine_path: output engine file (`.engine` / `.plan`).
        precision: "fp32", "fp16" or "int8" (INT8 keeps FP16 for layers without INT8 kernels).
            Default "fp16".
        calibration_data: for "int8": an iterable of uint8 images `(H, W, 3)` or batches
            `(N, H, W, 3)` at the engine's input size, from your data. Preprocessed here when the
            ONNX input is float.
        workspace_mb: builder workspace in MiB, default 1024.
        input_shape: fixed engine input shape `(N, H, W, 3)`, default `(1, 512, 512, 3)`.
        calibration_cache: INT8 cache file, default `engine_path + ".calib"`; reused if present
            (and readable by trtexec `--calib`).

    Returns:
        str, `engine_path`.

    Raises:
        ValueError: for a bad precision, or INT8 without calibration data or cache.
        RuntimeError: if TensorRT is not installed here, or parsing/building fails.
    """
    precision = precision.lower()
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} must be one of {PRECISIONS}")
    calibration_cache = calibration_cache or f"{engine_path}.calib"
    if precision == "int8" and calibration_data is None and not os.path.exists(calibration_cache):
        raise ValueError("int8 needs calibration_data (your images) or an existing calibration cache")
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
    profile = builder.create_optimization_profile()
    profile.set_shape(network_input.name, input_shape, input_shape, input_shape)
    config.add_optimization_profile(profile)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    memory = None
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        memory = _CudaMemory()
        dtype = np.uint8 if network_input.dtype == trt.DataType.UINT8 else np.float32
        batches = _calibration_batches(calibration_data or [], input_shape, dtype)
        nbytes = int(np.prod(input_shape)) * np.dtype(dtype).itemsize
        config.int8_calibrator = _make_calibrator(trt, batches, nbytes, calibration_cache, memory)
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
        raise RuntimeError(f"could not load {engine_path}; engines only load with the TensorRT version and GPU that built them")
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
    return {"mean_ms": float(np.mean(times)), "median_ms": float(np.median(times)),
            "p90_ms": float(np.percentile(times, 90)), "input_shape": list(input_shape)}


def write_trtexec_script(onnx_path, out_dir, precision="fp16", input_shape=(1, 512, 512, 3),
                         calibration_cache=None, input_name="images", iterations=200):
    """Writes a folder to copy to the Jetson: the ONNX model and `build_engine.sh` for trtexec.

    The script builds `model_<precision>.engine` with `trtexec --onnx=... --saveEngine=...`
    (`--fp16`, or `--int8 --fp16 --calib=CACHE`), then times it with `--loadEngine`. Without a
    calibration cache, `--int8` uses placeholder ranges: fine for timing, wrong for accuracy;
    make a cache with `build_engine(..., precision="int8", calibration_data=...)`.

    Args:
        onnx_path: ONNX model from `to_onnx` (copied into `out_dir` as `model.onnx`).
        out_dir: output folder.
        precision: "fp32", "fp16" or "int8", default "fp16".
        input_shape: engine input shape `(N, H, W, 3)`, default `(1, 512, 512, 3)`.
        calibration_cache: INT8 calibration cache to copy along (`--calib`), default None.
        input_name: ONNX input name, default "images" (see `to_onnx`).
        iterations: timed iterations, default 200.

    Returns:
        str, the path of the script.

    Raises:
        ValueError: for a bad precision or input shape.
        FileNotFoundError: if the ONNX model or the calibration cache is missing.
    """
    precision = precision.lower()
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} must be one of {PRECISIONS}")
    if len(input_shape) != 4 or any(int(d) < 1 for d in input_shape):
        raise ValueError(f"input_shape {tuple(input_shape)} must be 4 positive sizes (N, H, W, 3)")
    for path in [onnx_path] + ([calibration_cache] if calibration_cache else []):
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} does not exist")
    os.makedirs(out_dir, exist_ok=True)
    if os.path.abspath(onnx_path) != os.path.abspath(os.path.join(out_dir, "model.onnx")):
        shutil.copyfile(onnx_path, os.path.join(out_dir, "model.onnx"))
    flags = {"fp32": "", "fp16": " --fp16", "int8": " --int8 --fp16"}[precision]
    if precision == "int8" and calibration_cache:
        shutil.copyfile(calibration_cache, os.path.join(out_dir, "calibration.cache"))
        flags += ' --calib="$HERE/calibration.cache"'
    shape = f"{input_name}:{'x'.join(str(int(d)) for d in input_shape)}"
    engine = f"model_{precision}.engine"
    script = f"""#!/bin/sh
# Generated by tfnas.serving.tensorrt.write_trtexec_script: build and time a TensorRT engine.
# Run on the Jetson (JetPack ships trtexec in /usr/src/tensorrt/bin). Precision: {precision}.
set -e
HERE=$(cd "$(dirname "$0")" && pwd)
TRTEXEC=${{TRTEXEC:-/usr/src/tensorrt/bin/trtexec}}
[ -x "$TRTEXEC" ] || TRTEXEC=trtexec
"$TRTEXEC" --onnx="$HERE/model.onnx" --saveEngine="$HERE/{engine}"{flags} --shapes={shape} --memPoolSize=workspace:1024
"$TRTEXEC" --loadEngine="$HERE/{engine}" --shapes={shape} --warmUp=500 --iterations={int(iterations)} --avgRuns={int(iterations)} | tee "$HERE/timing_{precision}.txt"
"""
    if precision == "int8" and not calibration_cache:
        script = script.replace("set -e\n", "set -e\necho 'note: no calibration cache: INT8 ranges are placeholders (timing only)'\n")
    path = os.path.join(out_dir, "build_engine.sh")
    with open(path, "w") as f:
        f.write(script)
    os.chmod(path, os.stat(path).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path
