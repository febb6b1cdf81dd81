"""The per-op latency table's error: predicted against measured latency of random networks (issue 14).

For a space at the demo's settings (`--space auxcell`: width 16, MobileNetV2 alpha 0.35, 4
classes; `--space dpc`: the same encoder, width 16, 5 branches) and an image size (48x48 by
default), for each runtime asked:

1. `tfnas.latency.measure.measure_table`: every item of the space (each candidate op at each
   stride, adapters, resizes, sums, concatenations, heads, the encoder whole) timed alone, the
   call overhead, and the correction fitted on 3 random networks (seeds 0-2);
2. `tfnas.latency.predict.table_error` on `--genotypes` other random networks (seeds 100+):
   each predicted from the table (decoder built, nothing timed) and measured whole with the
   same runtime and timing (median of `--runs` calls after `--warmup`).

Reports the mean / median / max absolute error in percent, the share of networks within
+-10 % (nn-Meter's measure), the rank correlations (Spearman, Kendall tau) of predicted and
measured latency, and the seconds spent measuring the table and predicting one network. Writes
`benchmarks/results/latency_table.json` (`--out` for another file).

    nice -n 10 .venv/bin/python benchmarks/bench_latency_table.py
    nice -n 10 .venv/bin/python benchmarks/bench_latency_table.py --runtimes tensorflow,onnxruntime
    .venv/bin/python benchmarks/bench_latency_table.py --space dpc --image-size 256 --genotypes 100
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfnas.latency.measure import measure_table  # noqa: E402
from tfnas.latency.predict import Predictor, table_error  # noqa: E402
from tfnas.spaces import AuxCellSpace, DPCSpace  # noqa: E402

#: The spaces at the demo's settings.
SPACES = {
    "auxcell": (AuxCellSpace, dict(num_classes=4, width=16, alpha=0.35)),
    "dpc": (DPCSpace, dict(num_classes=4, width=16, alpha=0.35, num_branches=5)),
}


def run(space_name, runtime, image_size, genotypes, networks, warmup, runs):
    space_class, settings = SPACES[space_name]
    space = space_class(**settings)
    shape = (image_size, image_size, 3)
    start = time.perf_counter()
    table = measure_table(space, shape, runtime, warmup=warmup, runs=runs, networks=networks, seed=0)
    measure_seconds = time.perf_counter() - start
    values = [space.random_values(seed=100 + i) for i in range(genotypes)]
    predictor = Predictor(table, space)
    predict_seconds = []
    for v in values[:3]:
        start = time.perf_counter()
        predictor.predict(v)
        predict_seconds.append(time.perf_counter() - start)
    started = time.perf_counter()

    def progress(index, row):
        print(
            f"  {runtime} {index + 1}/{genotypes}: predicted {row['predicted_ms']:.3f} ms, measured "
            f"{row['measured_ms']:.3f} ms ({row['error_pct']:+.1f} %), {time.perf_counter() - started:.0f} s",
            flush=True,
        )

    report = table_error(table, space, values, on_network=progress)
    return {
        "runtime": runtime,
        "device": table.device,
        "entries": len(table.entries),
        "call_overhead_ms": table.call_overhead_ms,
        "correction_ms": table.correction_ms,
        "calibration": table.calibration,
        "measure_seconds": measure_seconds,
        "predict_seconds_median": statistics.median(predict_seconds),
        **report,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--space", choices=sorted(SPACES), default="auxcell")
    parser.add_argument("--runtimes", default="tensorflow", help="comma-separated: tensorflow, onnxruntime")
    parser.add_argument("--image-size", type=int, default=48)
    parser.add_argument("--genotypes", type=int, default=10, help="random networks the error is measured on")
    parser.add_argument("--networks", type=int, default=3, help="random networks the correction is fitted on")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument(
        "--out", default=os.path.join(os.path.dirname(__file__), "results", "latency_table.json")
    )
    args = parser.parse_args()
    results = []
    for runtime in [r.strip() for r in args.runtimes.split(",") if r.strip()]:
        result = run(
            args.space, runtime, args.image_size, args.genotypes, args.networks, args.warmup, args.runs
        )
        print(
            f"{runtime}: mean |error| {result['mean_abs_error_pct']:.1f} %, median "
            f"{result['median_abs_error_pct']:.1f} %, max {result['max_abs_error_pct']:.1f} %, "
            f"{100 * result['within_10pct']:.0f} % within +-10 %, Spearman {result['spearman']:.2f}, "
            f"Kendall tau {result['kendall_tau']:.2f}; table {result['entries']} entries in "
            f"{result['measure_seconds']:.0f} s, predict {result['predict_seconds_median']:.2f} s",
            flush=True,
        )
        results.append(result)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(
            {
                "benchmark": "latency_table",
                "date": datetime.datetime.now().isoformat(timespec="seconds"),
                "machine": platform.platform(),
                "cpus": os.cpu_count(),
                "space": {"name": args.space, **SPACES[args.space][1]},
                "image_size": args.image_size,
                "settings": vars(args),
                "results": results,
            },
            f,
            indent=1,
        )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
