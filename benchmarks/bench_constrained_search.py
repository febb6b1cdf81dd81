"""A latency-constrained search against an unconstrained one, side by side (issue 14).

What a user runs to "search for my device", on the built-in digit scenes at the demo's
settings (auxcell space, width 16, MobileNetV2 alpha 0.35 shipped pretrained, 48x48 images,
digits 0/1/7, 5 + 1 proxy epochs, random Oracle, the same seed), through the `tfnas` command:

1. `tfnas latency measure`: the onnxruntime table of the space at the deployment size
   (`--image-size`, default 256), on this machine;
2. an unconstrained search that predicts every trial's latency from that table but scores it
   by its task reward alone (`--latency-weight 0`);
3. the same search with the target as a hard constraint (`--hard-constraint`: a trial over
   it is recorded with its latency, `over_budget = 1`, and scores 0) and MnasNet's soft term.

The target (`--target-ms`, default: the median predicted latency of 200 random architectures
of the space, so about half of them fit) is the same for both. Reported per search: every
trial's reward, task reward and predicted latency, the best trials, and whether each of them
meets the target; plus the Pareto front of reward against latency. Writes
`benchmarks/results/constrained_search.json`.

    taskset -c 0 .venv/bin/python benchmarks/bench_constrained_search.py
    taskset -c 0 .venv/bin/python benchmarks/bench_constrained_search.py --quick   # smoke run
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TFNAS = [sys.executable, "-m", "tfnas.cli"]
#: The demo's space settings (`tfnas.cli.options.DEMO`), which the table must match.
SPACE = ["--space", "auxcell", "--width", "16", "--alpha", "0.35"]


def run(args, log):
    """Runs `tfnas ARGS`, echoing the command; returns its standard output."""
    log("$ tfnas " + " ".join(args))
    start = time.perf_counter()
    result = subprocess.run(TFNAS + args, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"tfnas {' '.join(args)} exited {result.returncode}:\n{result.stderr[-3000:]}")
    log(f"  ({time.perf_counter() - start:.0f} s)")
    return result.stdout


def median_predicted_ms(table_path, genotypes):
    """The median predicted latency of `genotypes` random architectures of the table's space."""
    from tfnas.latency.predict import Predictor
    from tfnas.latency.table import LatencyTable
    from tfnas.spaces import get_space

    table = LatencyTable.load(table_path)
    space = get_space(table.space)(**{**table.space_config, "encoder_weights": None})
    predictor = Predictor(table, space)
    return statistics.median(predictor.predict(space.random_values(seed=1000 + i)) for i in range(genotypes))


def search(name, out, table, target_ms, hard, settings, log):
    """One search; returns its trials (`tfnas results --json`) and wall seconds."""
    if os.path.exists(out):
        shutil.rmtree(out)
    args = ["search", "--out", out, *SPACE, "--oracle", "random", "--seed", "1"]
    args += ["--trials", str(settings["trials"]), "--scenes", str(settings["scenes"])]
    args += ["--image-size", "48", "--digits", "017", "--min-digit-size", "16", "--max-digit-size", "32"]
    args += [
        "--stage1-epochs",
        str(settings["stage1_epochs"]),
        "--stage2-epochs",
        str(settings["stage2_epochs"]),
    ]
    args += ["--batch-size", "16", "--latency-runs", "0", "--no-termination"]
    args += ["--latency-table", table, "--latency-target", f"{target_ms:.4f}ms"]
    args += ["--hard-constraint"] if hard else ["--latency-weight", "0"]
    start = time.perf_counter()
    run(args, log)
    seconds = time.perf_counter() - start
    trials = json.loads(run(["results", out, "--json", "--sort", "order"], log))
    front = json.loads(run(["results", out, "--json", "--pareto", "latency_ms"], log))
    return {"name": name, "hard_constraint": hard, "seconds": seconds, "trials": trials, "pareto": front}


def summary(result, target_ms, top):
    """Best trials by reward and how many of them meet the target."""
    done = [t for t in result["trials"] if t.get("status") == "COMPLETED"]
    best = sorted(done, key=lambda t: -(t.get("reward") or 0.0))[:top]
    rows = [
        {
            "trial_id": t["trial_id"],
            "reward": t.get("reward"),
            "task_reward": t.get("task_reward", t.get("reward")),
            "latency_ms": t.get("latency_ms"),
            "meets_target": t.get("latency_ms") is not None and t["latency_ms"] <= target_ms,
        }
        for t in best
    ]
    return {"best": rows, "best_meet_target": sum(r["meets_target"] for r in rows), "completed": len(done)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 trials of 1 + 0 epochs on 64 scenes")
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=256, help="size the table predicts for")
    parser.add_argument(
        "--target-ms", type=float, default=None, help="default: median of random architectures"
    )
    parser.add_argument("--top", type=int, default=3, help="best trials compared")
    parser.add_argument("--work", default="/tmp/tfnas-bench-constrained", help="scratch folder")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "constrained_search.json"))
    args = parser.parse_args()
    settings = (
        {"trials": 2, "scenes": 64, "stage1_epochs": 1, "stage2_epochs": 0}
        if args.quick
        else {"trials": args.trials, "scenes": 512, "stage1_epochs": 5, "stage2_epochs": 1}
    )
    os.makedirs(args.work, exist_ok=True)

    def log(line):
        print(line, flush=True)

    start = time.perf_counter()
    table = os.path.join(args.work, f"auxcell_{args.image_size}_onnxruntime.json")
    run(
        ["latency", "measure", *SPACE, "--num-classes", "4", "--image-size", str(args.image_size)]
        + ["--runtime", "onnxruntime", "--runs", "5" if args.quick else "20", "--out", table],
        log,
    )
    target_ms = args.target_ms or median_predicted_ms(table, 20 if args.quick else 200)
    log(f"target: {target_ms:.3f} ms at {args.image_size}x{args.image_size}")
    results = []
    for name, hard in (("unconstrained", False), ("constrained", True)):
        result = search(name, os.path.join(args.work, name), table, target_ms, hard, settings, log)
        result["summary"] = summary(result, target_ms, args.top)
        for row in result["summary"]["best"]:
            log(
                f"  {name}: trial {row['trial_id']} reward {row['reward']:.4f} (task {row['task_reward']:.4f}) "
                f"latency {row['latency_ms']:.3f} ms {'meets' if row['meets_target'] else 'over'} the target"
            )
        results.append(result)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(
            {
                "benchmark": "constrained_search",
                "date": datetime.datetime.now().isoformat(timespec="seconds"),
                "machine": platform.platform(),
                "cpus": os.cpu_count(),
                "affinity": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
                "settings": {**settings, "image_size": args.image_size, "quick": args.quick},
                "target_ms": target_ms,
                "seconds": time.perf_counter() - start,
                "searches": results,
            },
            f,
            indent=1,
        )
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
