"""Deployment graphs of the published architectures: dynamic vs fixed-size ONNX, TFLite, Keras (issue 17).

For each published architecture of each space (auxcell arch0-2, template arch0-1, dpc
top1_cityscapes; random weights: latency and graph shape do not depend on them) at a realistic
size: the node census and onnxruntime latency of the ONNX model with dynamic shapes (what
`tfnas convert` wrote before) and at the deployment size, TFLite fp32 and int8 (full-integer,
calibrated on random images) at that size, and Keras (`tf.function`, training=False), each with
its largest logit difference to Keras (and, for int8, the class-map agreement). CPU, batch 1,
median of `--runs` timed runs after one warm-up. Also the exported
`logits` signature as TF Serving runs it (dynamic N, H, W) next to Keras traced at the size. Writes benchmarks/results/deploy_graphs.json
(after each architecture) and prints a markdown table.

    python benchmarks/bench_deploy_graphs.py                          # all, 512x512
    python benchmarks/bench_deploy_graphs.py --archs auxcell:arch0 --size 128 --runs 2   # smoke run
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
#: (space, architecture) -> (space constructor arguments): the papers' deployment settings.
ARCHS = {
    ("auxcell", "arch0"): {"num_classes": 21, "width": 64},  # CVPR 2019, PASCAL VOC
    ("auxcell", "arch1"): {"num_classes": 21, "width": 64},
    ("auxcell", "arch2"): {"num_classes": 21, "width": 64},
    ("template", "arch0"): {"num_classes": 19, "width": 64},  # WACV 2020, Cityscapes
    ("template", "arch1"): {"num_classes": 19, "width": 64},
    ("dpc", "top1_cityscapes"): {"num_classes": 19},  # NeurIPS 2018, Cityscapes
}
#: ONNX ops that are decompositions (dynamic shapes) rather than the searched ops themselves.
DECOMPOSED = ("Transpose", "SpaceToDepth", "DepthToSpace", "Split", "Slice", "Concat", "Shape", "Cast")


def timed(fn, runs):
    """Median and min latency in ms of `fn()` after one warm-up call."""
    fn()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return {"median_ms": round(statistics.median(times), 2), "min_ms": round(min(times), 2), "runs": runs}


def bench_arch(space_name, arch, config, size, runs, tmp, threads):
    """Every runtime of one architecture, each on `threads` CPU threads; returns a dict of results."""
    import onnxruntime as ort
    import tensorflow as tf

    from tfnas.preprocessing import preprocess
    from tfnas.serving import export, to_onnx, to_tflite
    from tfnas.serving.onnx_export import op_census
    from tfnas.serving.tflite import tflite_op_census
    from tfnas.spaces import get_space

    space = get_space(space_name)(**config)
    model = space.inference_model(space.build_genotype(arch))
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (1, *size, 3), dtype=np.uint8)
    x = preprocess(image).numpy()
    keras_fn = tf.function(lambda t: model(t, training=False), autograph=False)
    reference = keras_fn(tf.constant(x)).numpy()
    result = {
        "space": space_name,
        "arch": arch,
        "config": config,
        "params": int(model.count_params()),
        "input": [1, *size, 3],
        "runtimes": {},
    }
    result["runtimes"]["Keras (tf.function)"] = {
        **timed(lambda: keras_fn(tf.constant(x)), runs),
        "max_abs_diff": 0.0,
    }
    saved = export(model, tmp, f"{space_name}_{arch}", warmup_images=np.zeros((1, 32, 32, 3), np.uint8))
    # What TF Serving runs: the exported `logits` signature, whose graph takes any N, H, W (the
    # Keras row above is the same network traced at this one shape).
    served = tf.saved_model.load(saved).signatures["logits"]
    served_logits = served(images=tf.constant(x))["logits"].numpy()
    result["runtimes"]["SavedModel logits (dynamic N, H, W)"] = {
        **timed(lambda: served(images=tf.constant(x)), runs),
        "max_abs_diff": float(np.max(np.abs(served_logits - reference))),
    }
    for name, input_size in (("ONNX dynamic", None), ("ONNX fixed", size)):
        path = os.path.join(tmp, f"{space_name}_{arch}_{name.split()[1]}.onnx")
        start = time.perf_counter()
        report = to_onnx(saved, path, signature="logits", input_size=input_size, sample_inputs=x, atol=1e-3)
        convert_s = time.perf_counter() - start
        census = op_census(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        entry = timed(lambda s=session: s.run(None, {"images": x}), runs)
        entry.update(
            nodes=sum(census.values()),
            conv=census["Conv"],
            decomposition_ops={op: census[op] for op in DECOMPOSED if census[op]},
            max_abs_diff=report["max_abs_diff"]["logits"],
            convert_s=round(convert_s, 1),
        )
        result["runtimes"][name] = entry
        print(f"  {name}: {entry}", flush=True)
    calibration = rng.integers(0, 256, (8, *size, 3), dtype=np.uint8)
    for quantization, label in (("none", "TFLite fp32 fixed"), ("int8", "TFLite int8 fixed")):
        path = os.path.join(tmp, f"{space_name}_{arch}_{quantization}.tflite")
        to_tflite(saved, path, quantization, calibration if quantization == "int8" else None, input_size=size)
        interpreter = tf.lite.Interpreter(model_path=path, num_threads=threads)
        runner = interpreter.get_signature_runner()
        got = runner(images=x)["logits"]
        census = tflite_op_census(path)
        entry = timed(lambda r=runner: r(images=x), runs)
        entry.update(
            ops=sum(census.values()),
            space_to_batch=census["SPACE_TO_BATCH_ND"],
            max_abs_diff=float(np.max(np.abs(got - reference))),
            class_agreement=float(np.mean(got.argmax(-1) == reference.argmax(-1))),
            size_bytes=os.path.getsize(path),
        )
        result["runtimes"][label] = entry
        print(f"  {label}: {entry}", flush=True)
    return result


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument(
        "--archs", default=",".join(f"{s}:{a}" for s, a in ARCHS), help="comma-separated space:arch"
    )
    parser.add_argument("--size", default="512x512", help="input HxW")
    parser.add_argument("--runs", type=int, default=10, help="timed runs per runtime")
    parser.add_argument(
        "--threads",
        type=int,
        default=os.cpu_count(),
        help="CPU threads of every runtime (TensorFlow intra-op, onnxruntime intra-op, TFLite)",
    )
    parser.add_argument(
        "--out", default=os.path.join(HERE, "results", "deploy_graphs.json"), help="JSON output"
    )
    args = parser.parse_args()

    import tensorflow as tf

    from tfnas.serving.onnx_export import parse_input_size

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    size = parse_input_size(args.size)
    report = {
        "date": datetime.date.today().isoformat(),
        "size": list(size),
        "runs": args.runs,
        "threads": args.threads,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "tensorflow": tf.__version__,
            "load_average_at_start": list(os.getloadavg()),
        },
        "results": [],
    }
    for item in args.archs.split(","):
        space_name, arch = item.split(":")
        print(f"{space_name} {arch} at {size[0]}x{size[1]}", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            report["results"].append(
                bench_arch(space_name, arch, ARCHS[(space_name, arch)], size, args.runs, tmp, args.threads)
            )
        report["machine"]["load_average_at_end"] = list(os.getloadavg())
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    print(
        f"\n{size[0]}x{size[1]}, batch 1, median ms of {args.runs}; nodes (ONNX) / ops (TFLite); "
        "max |logit - Keras|\n"
    )
    print("| space | arch | runtime | nodes | median ms | max abs diff |")
    print("| --- | --- | --- | ---: | ---: | ---: |")
    for r in report["results"]:
        for name, e in r["runtimes"].items():
            nodes = e.get("nodes", e.get("ops", ""))
            print(
                f"| {r['space']} | {r['arch']} | {name} | {nodes} | {e['median_ms']:.0f} | {e['max_abs_diff']:.1e} |"
            )


if __name__ == "__main__":
    main()
