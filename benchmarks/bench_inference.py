"""Inference latency of one exported tfnas model across runtimes, side by side.

Builds a published auxiliary-cell architecture (CVPR 2019 arch0 by default, random weights:
latency does not depend on them), exports it, converts it, and times single-image and
batch-16 inference at 512x512 for: Keras (`predict_on_batch`), the loaded SavedModel
(`logits` and `serving_default` signatures), onnxruntime (`logits` ONNX) and TFLite fp32 /
int8. Writes benchmarks/results/inference.json and prints a markdown table.

    python benchmarks/bench_inference.py                 # arch0, width 64, 512x512
    python benchmarks/bench_inference.py --size 64 --width 8 --runs 2   # smoke run
"""

import argparse
import json
import os
import platform
import statistics
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def timed(fn, batch, warmup, runs):
    """Median and min latency in ms of `fn(batch)` after `warmup` calls."""
    for _ in range(warmup):
        fn(batch)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn(batch)
        times.append((time.perf_counter() - start) * 1000)
    return {"median_ms": statistics.median(times), "min_ms": min(times), "runs": runs}


def runtimes(model, saved_model_dir, onnx_path, tflite_paths):
    """name -> function of a uint8 batch, each doing the training preprocessing itself."""
    import onnxruntime as ort
    import tensorflow as tf

    from tfnas.preprocessing import preprocess

    loaded = tf.saved_model.load(saved_model_dir)
    logits_fn, serving_fn = loaded.signatures["logits"], loaded.signatures["serving_default"]
    session = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"])
    found = {
        "Keras predict_on_batch": lambda x: model.predict_on_batch(preprocess(x)),
        "SavedModel logits": lambda x: logits_fn(images=preprocess(x)),
        "SavedModel serving_default (+resize, softmax, argmax)": lambda x: serving_fn(images=tf.constant(x)),
        "onnxruntime logits": lambda x: session.run(None, {"images": preprocess(x).numpy()}),
    }
    for name, path in tflite_paths.items():
        interpreter = tf.lite.Interpreter(model_path=path, num_threads=os.cpu_count())
        runner = interpreter.get_signature_runner()  # created once, as an app would
        found[f"TFLite {name}"] = lambda x, r=runner: r(images=preprocess(x).numpy())
    return found


def main():
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--arch", default="arch0", help="published auxcell architecture")
    parser.add_argument("--width", type=int, default=64, help="decoder width")
    parser.add_argument("--num-classes", type=int, default=21, help="classes (21 = PASCAL VOC)")
    parser.add_argument("--size", type=int, default=512, help="input height and width")
    parser.add_argument("--batches", default="1,16", help="batch sizes")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per setting")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "inference.json"), help="JSON output")
    args = parser.parse_args()

    import tensorflow as tf

    from tfnas.serving import export, to_onnx, to_tflite
    from tfnas.spaces import AuxCellSpace

    space = AuxCellSpace(args.num_classes, width=args.width)
    model = space.inference_model(space.build_genotype(args.arch))
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        saved = export(model, tmp, args.arch, warmup_images=np.zeros((1, 32, 32, 3), np.uint8))
        onnx_path = os.path.join(tmp, "model.onnx")
        onnx_report = to_onnx(
            saved,
            onnx_path,
            signature="logits",
            sample_inputs=rng.uniform(-1, 1, (1, 64, 64, 3)).astype(np.float32),
        )
        calibration = rng.integers(0, 256, (8, args.size, args.size, 3), dtype=np.uint8)
        tflite = {
            "fp32": to_tflite(saved, os.path.join(tmp, "fp32.tflite")),
            "int8": to_tflite(saved, os.path.join(tmp, "int8.tflite"), "int8", calibration),
        }
        results = []
        for batch_size in [int(b) for b in args.batches.split(",")]:
            batch = rng.integers(0, 256, (batch_size, args.size, args.size, 3), dtype=np.uint8)
            for name, fn in runtimes(model, saved, onnx_path, tflite).items():
                runs = args.runs if batch_size == 1 else max(2, args.runs // 2)
                timing = timed(fn, batch, warmup=1, runs=runs)
                timing.update(
                    runtime=name, batch=batch_size, images_per_s=batch_size * 1000 / timing["median_ms"]
                )
                results.append(timing)
                print(f"{name:55s} batch {batch_size:2d}: {timing['median_ms']:9.1f} ms", flush=True)
    report = {
        "model": {
            "space": "auxcell",
            "arch": args.arch,
            "width": args.width,
            "num_classes": args.num_classes,
            "params": int(model.count_params()),
            "input": [args.size, args.size, 3],
        },
        "onnx_max_abs_diff": onnx_report["max_abs_diff"]["logits"],
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "tensorflow": tf.__version__},
        "results": results,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    batches = sorted({r["batch"] for r in results})
    print(
        f"\n{args.arch} width {args.width}, {args.size}x{args.size}, {report['model']['params']:,} params, "
        f"{os.cpu_count()} CPUs; median ms (images/s)\n"
    )
    print("| runtime | " + " | ".join(f"batch {b}" for b in batches) + " |")
    print("| --- | " + " | ".join("---:" for _ in batches) + " |")
    for name in dict.fromkeys(r["runtime"] for r in results):
        cells = [
            next(
                f"{r['median_ms']:.0f} ({r['images_per_s']:.1f})"
                for r in results
                if r["runtime"] == name and r["batch"] == b
            )
            for b in batches
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
