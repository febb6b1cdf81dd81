"""Trials per hour of a distributed search with 1, 2 and 4 workers on this machine.

Runs the same tiny `tfnas search` (random Oracle, built-in digit scenes) as one process and
with `--workers N`, one after the other, and measures throughput from the files the search
writes: trials completed between the end of the preparation (the feature cache's
`meta.json`) and the last trial's weights. With `--workers N` the CPU threads are split
between the workers, so on a 2-core machine more workers mostly add contention; on a
machine with more cores (or one GPU per worker) they add throughput.

    .venv/bin/python benchmarks/bench_distributed.py                 # ~15 min on 2 cores
    .venv/bin/python benchmarks/bench_distributed.py --trials 4 --workers 1 2
"""

import argparse
import datetime
import glob
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

from tfnas.search_dir import SearchDir

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUTPUT = os.path.join(HERE, "results", "distributed.json")
SEARCH = [
    "--space",
    "auxcell",
    "--oracle",
    "random",
    "--scenes",
    "64",
    "--image-size",
    "32",
    "--digits",
    "01",
    "--width",
    "8",
    "--alpha",
    "0.35",
    "--stage1-epochs",
    "2",
    "--stage2-epochs",
    "1",
    "--warmup-epochs",
    "1",
    "--latency-runs",
    "0",
    "--no-termination",
    "--verbose",
    "0",
    "--batch-size",
    "8",
]


def throughput(out):
    """Completed trials and trials per hour after the preparation, from the search's files."""
    prepared = min(os.path.getmtime(p) for p in glob.glob(os.path.join(out, "cache", "*", "meta.json")))
    search_dir = SearchDir(out)
    done = [
        os.path.getmtime(search_dir.trial_weights(trial_id))
        for trial_id, trial in search_dir.trials().items()
        if trial["status"] == "COMPLETED"
    ]
    seconds = max(done) - prepared
    return {
        "completed": len(done),
        "seconds_after_preparation": seconds,
        "trials_per_hour": 3600.0 * len(done) / seconds,
    }


def run(workers, trials, workdir):
    out = os.path.join(workdir, f"workers{workers or 0}")
    command = [sys.executable, "-m", "tfnas.cli", "search", *SEARCH, "--trials", str(trials), "--out", out]
    if workers:
        command += ["--workers", str(workers)]
    start = time.perf_counter()
    subprocess.run(
        command, check=True, stdout=subprocess.DEVNULL, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    )
    return {"workers": workers, "wall_seconds": time.perf_counter() - start, **throughput(out)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as workdir:
        for workers in [0] + list(args.workers):
            row = run(workers, args.trials, workdir)
            rows.append(row)
            print(
                f"{'one process' if not workers else f'{workers} worker(s)'}: "
                f"{row['trials_per_hour']:.0f} trials/h ({row['completed']} trials, "
                f"{row['seconds_after_preparation']:.0f} s after preparation)",
                flush=True,
            )
    single = rows[0]["trials_per_hour"]
    for row in rows:
        row["ratio_to_one_process"] = row["trials_per_hour"] / single
    result = {
        "date": datetime.date.today().isoformat(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "trials": args.trials,
        "search": SEARCH,
        "rows": rows,
    }
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
