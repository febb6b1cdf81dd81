"""Measure a latency table on the device from a bundle, with onnxruntime or TensorRT only.

This file is a standalone script (also `tools/device_latency.py`, and copied into every
bundle as `device_latency.py`): it needs Python, numpy and onnxruntime, and reads
TensorFlow and tfnas nowhere, so it runs on a Jetson that has neither. `tfnas latency
bundle` writes the bundle (one ONNX model per layer configuration and input shape, a few
whole networks for the correction, `manifest.json`, this script and `table.py`); run

    python3 device_latency.py BUNDLE --runtime tensorrt --precision fp16 --out table.json

on the device and bring `table.json` back for `tfnas search --latency-table table.json`.

Runtimes:
- `onnxruntime`: its CPU execution provider, or CUDA with `--cuda`;
- `tensorrt`: TensorRT through onnxruntime's TensorRT execution provider (the
  `onnxruntime-gpu` wheel for JetPack has it), `--precision fp16` or `int8`. INT8 here is
  for timing: without a calibration table TensorRT picks its own ranges, so the numbers are
  the speed of INT8 kernels, not of a calibrated model.

Every model is timed as `median` of `runs` calls after `warmup` untimed ones, on random
input of its fixed shape.
"""

import argparse
import json
import os
import platform
import statistics
import sys
import time

import numpy as np

if __package__:
    from .table import LatencyTable, fit_correction
else:  # run as a script: table.py lies beside this file (in the bundle or in tfnas/latency)
    sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
    from table import LatencyTable, fit_correction

BUNDLE_FORMAT = "tfnas-latency-bundle"
MANIFEST = "manifest.json"


def median_ms(call, warmup=5, runs=20):
    """Median wall time of `call()` in milliseconds, after `warmup` untimed calls.

    Args:
        call: a function of no arguments that returns when the work is done.
        warmup: int >= 0, untimed calls first (default 5).
        runs: int >= 1, timed calls (default 20).

    Raises:
        ValueError: if `warmup` or `runs` is out of range.
    """
    if int(runs) < 1 or int(warmup) < 0:
        raise ValueError(f"need runs >= 1 and warmup >= 0, got runs={runs}, warmup={warmup}")
    for _ in range(int(warmup)):
        call()
    times = []
    for _ in range(int(runs)):
        start = time.perf_counter()
        call()
        times.append((time.perf_counter() - start) * 1000.0)
    return float(statistics.median(times))


def describe_device(runtime_words):
    """The machine in words: the board (a Jetson names itself), the CPU, and the runtime."""
    parts = []
    for path in ("/proc/device-tree/model",):  # e.g. "NVIDIA Jetson Orin Nano Developer Kit"
        if os.path.exists(path):
            with open(path, "rb") as f:
                parts.append(f.read().decode(errors="replace").strip("\x00 \n"))
    cpu = platform.processor() or platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
        if names:
            cpu = f"{names[0]} ({len(names)} threads)"
    parts.append(cpu)
    parts.append(runtime_words)
    return ", ".join(p for p in parts if p)


def import_onnxruntime():
    """The `onnxruntime` module; a RuntimeError saying how to install it where it is missing."""
    try:
        import onnxruntime
    except ImportError as err:
        raise RuntimeError(
            f"onnxruntime is not installed here ({err}); install it: pip install onnxruntime "
            "(on a Jetson: the onnxruntime-gpu wheel for your JetPack, which has TensorRT)"
        ) from None
    return onnxruntime


def providers(runtime, precision="fp32", cuda=False):
    """onnxruntime execution providers for a runtime and precision.

    Args:
        runtime: "onnxruntime" or "tensorrt".
        precision: "fp32", or for TensorRT "fp16" / "int8".
        cuda: bool, onnxruntime on the GPU (CUDA execution provider).

    Returns:
        list for `onnxruntime.InferenceSession(providers=...)`.

    Raises:
        ValueError: for an unknown runtime or a precision the runtime does not offer.
        RuntimeError: if the needed provider is not available here, saying what to install.
    """
    ort = import_onnxruntime()
    available = ort.get_available_providers()
    if runtime == "onnxruntime":
        if precision != "fp32":
            raise ValueError(
                f"--precision {precision} needs --runtime tensorrt; onnxruntime runs these models in fp32"
            )
        wanted = "CUDAExecutionProvider" if cuda else "CPUExecutionProvider"
        if wanted not in available:
            raise RuntimeError(
                f"onnxruntime here has no {wanted} (it has {available}); install onnxruntime-gpu "
                "for --cuda, or leave --cuda out"
            )
        return [wanted]
    if runtime == "tensorrt":
        if "TensorrtExecutionProvider" not in available:
            raise RuntimeError(
                f"TensorRT is not available here: onnxruntime has only {available}. Run this "
                "script on the Jetson, with JetPack (TensorRT) and the onnxruntime-gpu wheel for "
                "your JetPack (it has the TensorRT execution provider); or use --runtime onnxruntime"
            )
        options = {
            "trt_fp16_enable": precision in ("fp16", "int8"),
            "trt_int8_enable": precision == "int8",
        }
        return [("TensorrtExecutionProvider", options), "CUDAExecutionProvider"]
    raise ValueError(f"runtime {runtime!r} is not one of ('onnxruntime', 'tensorrt')")


def usable_cpus():
    """The number of CPUs this process may run on (its affinity mask where the OS has one).

    onnxruntime sizes its intra-op thread pool by the machine's cores, not by the process'
    CPU affinity (`taskset`, a container's cpuset): on 1 of 2 cores its default pool timed a
    conv at 25.6 ms median (13.7-49.8) against 5.4 ms with one thread, its spinning threads
    waiting for each other on the one core. Timing with this many threads avoids that.
    """
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


def time_onnx(path, provider_list, warmup=5, runs=20, threads=None):
    """Median latency (ms) of one ONNX model in onnxruntime, on random input of its shape.

    Args:
        path: the ONNX file.
        provider_list: onnxruntime execution providers (`providers`).
        warmup, runs: untimed and timed calls.
        threads: intra-op threads; default `usable_cpus()`.

    Raises:
        ValueError: if an input has no fixed shape.
    """
    ort = import_onnxruntime()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = int(threads or usable_cpus())
    session = ort.InferenceSession(path, options, providers=provider_list)
    rng = np.random.default_rng(0)
    feed = {}
    for spec in session.get_inputs():
        if not all(isinstance(d, int) for d in spec.shape):
            raise ValueError(f"{path}: input {spec.name!r} has shape {spec.shape}; bundles hold fixed shapes")
        feed[spec.name] = rng.uniform(-1, 1, spec.shape).astype(np.float32)
    return median_ms(lambda: session.run(None, feed), warmup, runs)


def read_manifest(bundle):
    """The bundle's manifest, checked.

    Raises:
        FileNotFoundError: if `bundle` has no manifest.
        ValueError: if it is not a tfnas latency bundle.
    """
    path = os.path.join(bundle, MANIFEST)
    if not os.path.exists(path):
        raise FileNotFoundError(
            f"{bundle!r} has no {MANIFEST}; pass a folder written by `tfnas latency bundle`"
        )
    with open(path) as f:
        manifest = json.load(f)
    if manifest.get("format") != BUNDLE_FORMAT:
        raise ValueError(f"{path} is not a tfnas latency bundle (format {manifest.get('format')!r})")
    return manifest


def measure_bundle(
    bundle, runtime="onnxruntime", precision="fp32", cuda=False, warmup=5, runs=20, threads=None, log=None
):
    """Times every model of a bundle and returns the latency table.

    Args:
        bundle: str, the folder `tfnas latency bundle` wrote.
        runtime: "onnxruntime" or "tensorrt".
        precision: "fp32" (onnxruntime), "fp16" or "int8" (TensorRT).
        cuda: bool, onnxruntime's CUDA provider instead of the CPU one.
        warmup, runs: untimed and timed calls per model.
        threads: optional intra-op threads of onnxruntime (default: `usable_cpus()`).
        log: optional function taking one line of progress.

    Returns:
        `LatencyTable`, its correction fitted on the bundle's networks.
    """
    manifest = read_manifest(bundle)
    provider_list = providers(runtime, precision, cuda)
    threads = int(threads or usable_cpus())

    def timed(name):
        return time_onnx(os.path.join(bundle, name), provider_list, warmup, runs, threads)

    entries = {}
    for i, (key, entry) in enumerate(manifest["entries"].items()):
        entries[key] = {k: v for k, v in entry.items() if k != "file"}
        entries[key]["ms"] = timed(entry["file"])
        if log:
            log(f"[{i + 1}/{len(manifest['entries'])}] {key}: {entries[key]['ms']:.3f} ms")
    ort = import_onnxruntime()
    names = [p if isinstance(p, str) else p[0] for p in provider_list]
    table = LatencyTable(
        runtime,
        describe_device(f"onnxruntime {ort.__version__} {names[0]}"),
        precision,
        manifest["space"],
        manifest["space_config"],
        manifest["image_shape"],
        entries,
        call_overhead_ms=timed(manifest["call_overhead"]),
        tfnas_version=manifest.get("tfnas_version", "unknown"),
        warmup=warmup,
        runs=runs,
        # `tfnas latency check` times whole networks with the same threads
        extra={"providers": names, "intra_op_threads": threads},
    )
    networks = [{**n, "measured_ms": timed(n["file"])} for n in manifest["networks"]]
    if networks:
        fit_correction(table, networks)
    return table


def main(argv=None):
    """The script's command line; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="device_latency.py",
        description="Measure a tfnas latency table from a bundle on this machine (onnxruntime or "
        "TensorRT; no TensorFlow needed).",
    )
    parser.add_argument("bundle", help="folder written by `tfnas latency bundle`")
    parser.add_argument("--runtime", choices=("onnxruntime", "tensorrt"), default="onnxruntime")
    parser.add_argument(
        "--precision",
        choices=("fp32", "fp16", "int8"),
        default=None,
        help="default: fp32 for onnxruntime, fp16 for tensorrt",
    )
    parser.add_argument("--cuda", action="store_true", help="onnxruntime on the GPU (CUDA provider)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls per model")
    parser.add_argument("--runs", type=int, default=20, help="timed calls per model (the median is kept)")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="onnxruntime intra-op threads (default: the CPUs this process may use)",
    )
    parser.add_argument("--out", default="latency_table.json", help="the table to write")
    args = parser.parse_args(argv)
    precision = args.precision or ("fp16" if args.runtime == "tensorrt" else "fp32")
    try:
        table = measure_bundle(
            args.bundle,
            args.runtime,
            precision,
            args.cuda,
            args.warmup,
            args.runs,
            args.threads,
            log=lambda line: print(line, flush=True),
        )
    except Exception as err:  # one line for the user; onnxruntime's errors are its own types
        print(f"device_latency.py: error: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    table.save(args.out)
    print(f"wrote {args.out}: {len(table.entries)} entries, correction {table.correction_ms:+.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
