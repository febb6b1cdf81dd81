"""A short search for each task on its built-in data: the reward it reaches and what a trial costs.

For each task (`segmentation`, `depth`, `pose`, `pose-multi`) this runs the same short
`tfnas search` (auxcell space, random Oracle, MobileNetV2 alpha 0.35 warmed up on the search
data, decoder width 16, no termination) on the task's built-in data, each task in its own
process (so no search inherits another's traced functions or memory), one after the other,
and records the best trial's reward and the task's headline scores, the median seconds per
trial and the warm-up and cache time. Segmentation uses the demo's digit scenes (digits
0/1/7, 16-32 px). With `--train-epochs E`, the best trial of each search is then trained
fully for E epochs (`tfnas train`, its task's recipe stretched to E) and its validation
scores are recorded beside the search's. Writes `benchmarks/results/task_search.json`.

    taskset -c 1 python benchmarks/bench_task_search.py [--trials 4] [--size 48] [--tasks depth pose]
    # train the best of searches already run (their folders), without searching again:
    python benchmarks/bench_task_search.py --train-epochs 20 --existing depth=/tmp/tfnas-task-depth-x ...
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUTPUT = os.path.join(HERE, "results", "task_search.json")
TASKS = ("segmentation", "depth", "pose", "pose-multi")
#: Built-in data options that only segmentation's digit scenes take (the demo's).
SEGMENTATION_DATA = ["--digits", "017", "--min-digit-size", "16", "--max-digit-size", "32"]


def search_argv(task, out, args):
    """The `tfnas search` arguments of one task's short search."""
    argv = ["search", "--out", out, "--task", task, "--space", "auxcell", "--oracle", "random"]
    argv += ["--trials", str(args.trials), "--image-size", str(args.size), "--scenes", str(args.scenes)]
    argv += ["--width", "16", "--alpha", "0.35", "--stage1-epochs", str(args.stage1_epochs)]
    argv += ["--stage2-epochs", "1", "--warmup-epochs", str(args.warmup_epochs), "--batch-size", "16"]
    argv += ["--latency-runs", "0", "--no-termination", "--seed", "0"]
    return argv + (SEGMENTATION_DATA if task == "segmentation" else [])


def summarize(task, out, seconds):
    """The best trial's reward and scores, and the trials' costs, read from the search directory."""
    from tfnas.report.runs import load_run
    from tfnas.tasks import TASKS

    run = load_run(out)
    completed = [t for t in run.trials if t.status == "COMPLETED"]
    best = max(completed, key=lambda t: t.metrics["reward"])
    trial_seconds = [t.metrics["trial_seconds"] for t in completed]
    return {
        "task": task,
        "completed": len(completed),
        "failed": sum(t.status == "FAILED" for t in run.trials),
        "best_trial": best.trial_id,
        "best_reward": best.metrics["reward"],
        "best_stage1_reward": best.metrics["stage1_reward"],
        "best_scores": {name: best.metrics.get(name) for name, _ in TASKS[task].headline_scores},
        "rewards": [t.metrics["reward"] for t in completed],
        "median_trial_seconds": statistics.median(trial_seconds),
        "search_seconds": seconds,
        "setup_seconds": seconds - sum(trial_seconds),
        "params": best.metrics.get("params"),
        "madds": best.metrics.get("madds"),
    }


def train_best(task, out, epochs):
    """`tfnas train OUT --epochs E --batch-size 16` on the search's best trial; its final validation scores."""
    from tfnas.search_dir import SearchDir
    from tfnas.tasks import TASKS

    full = os.path.join(out, "full_best")
    command = [sys.executable, "-m", "tfnas.cli", "train", out, "--epochs", str(epochs), "--out", full]
    command += ["--batch-size", "16"]  # the search's (the recipes' 32-128 leave 1-7 steps per epoch here)
    if os.path.exists(full):
        command.append("--resume")
    start = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
    seconds = time.perf_counter() - start
    _, meta = SearchDir(full).load_trial_model("best")
    metrics = meta["metrics"]
    return {
        "epochs": epochs,
        "reward": metrics["reward"],
        "scores": {name: metrics.get(name) for name, _ in TASKS[task].headline_scores},
        "seconds": seconds,
    }


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--size", type=int, default=48, help="image side")
    parser.add_argument("--scenes", type=int, default=256, help="built-in images per task")
    parser.add_argument("--stage1-epochs", type=int, default=3)
    parser.add_argument("--warmup-epochs", type=int, default=10)
    parser.add_argument("--train-epochs", type=int, default=0, help="then train each best fully (0: no)")
    parser.add_argument(
        "--existing",
        nargs="*",
        default=[],
        metavar="TASK=DIR",
        help="searches already run by this script: summarize (and train) them instead of searching",
    )
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    existing = dict(item.split("=", 1) for item in args.existing)
    previous = {}
    if existing and os.path.exists(args.output):
        with open(args.output) as f:
            previous = {r["task"]: r for r in json.load(f)["results"]}
    results = []
    for task in args.tasks:
        if task in existing:
            out = existing[task]
            result = {
                **previous.get(task, {}),
                **summarize(task, out, previous.get(task, {}).get("search_seconds", 0)),
            }
        else:
            out = tempfile.mkdtemp(prefix=f"tfnas-task-{task}-")
            command = [sys.executable, "-m", "tfnas.cli"] + search_argv(task, out, args)
            print(f"{task}: {' '.join(command[2:])}", flush=True)
            start = time.perf_counter()
            subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
            result = summarize(task, out, time.perf_counter() - start)
        if args.train_epochs:
            print(f"{task}: tfnas train {out} --epochs {args.train_epochs}", flush=True)
            result["full_training"] = train_best(task, out, args.train_epochs)
        results.append(result)
        print(json.dumps(results[-1]), flush=True)
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(
            {
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                "command": " ".join(
                    ["bench_task_search.py"] + list(argv if argv is not None else sys.argv[1:])
                ),
                "settings": {k: v for k, v in vars(args).items() if k != "output"},
                "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
                "results": results,
            },
            f,
            indent=1,
        )


if __name__ == "__main__":
    main()
