"""Trials in a supernet vs standalone trials: fixed cost, trials per hour, rewards (issue 10).

One variant per process, on the same data, genotypes (`space.random_values(1000 + t)`) and
trial ids, so that two variants run side by side, each pinned to its own core:

- `standalone`: `ProxyTask(supernet=False)`, a model built and traced per trial (today's
  NASTuner trial);
- `supernet`: `ProxyTask(supernet=True)`, one supernet traced once; fresh weights per trial;
- `sharing`: `ProxyTask(supernet=True, weight_sharing=True)`, ENAS-style;
- `stock`: stock `keras_tuner.RandomSearch` training `space.build(hp)` end to end for the
  same number of epochs (`bench_search.EndToEndHyperModel`).

Why not all in one process: a standalone trial seeds TensorFlow (`tf.random.set_seed`),
which clears TensorFlow's kernel cache, so a supernet trial after it would instantiate
its traced steps again; a user's search runs one kind of trial per process.

Progressive termination is off (every trial does the same work) and no latency is timed.
Per trial: the trial's seconds, the seconds inside training epochs (a Keras callback),
the fixed cost = trial - epochs (the supernet's build and trace fall in its first trial
and are reported apart), resident memory, stage-1 and final rewards, params and
multiply-adds. `--combine` summarises: medians over trials 2..N, trials per hour and
their ratios, the mean stage-1 reward difference supernet - standalone, Spearman rank
correlations with the standalone rewards.

    taskset -c 0 .venv/bin/python benchmarks/bench_supernet_search.py --variant standalone \
        --trials 10 --output /tmp/standalone.json &
    taskset -c 1 .venv/bin/python benchmarks/bench_supernet_search.py --variant supernet \
        --trials 10 --output /tmp/supernet.json
    .venv/bin/python benchmarks/bench_supernet_search.py --combine /tmp/standalone.json \
        /tmp/supernet.json    # writes benchmarks/results/supernet_search.json
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import keras_tuner  # noqa: E402
import psutil  # noqa: E402
import tensorflow as tf  # noqa: E402
from scipy import stats  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_search import EndToEndHyperModel, end_to_end_data  # noqa: E402

from tfnas.data import digit_scenes, num_classes  # noqa: E402
from tfnas.spaces import get_space  # noqa: E402
from tfnas.training import ProxySettings, ProxyTask  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUTPUT = os.path.join(HERE, "results", "supernet_search.json")

#: The demo's search (`tfnas demo`), except `--quick`.
MODES = {
    "demo": dict(image_size=48, scenes=512, digits=(0, 1, 7), digit_sizes=(16, 32), width=16, alpha=0.35,
                 stage1_epochs=5, stage2_epochs=1, batch_size=16, cache_images=512, warmup_epochs=30),
    "quick": dict(image_size=32, scenes=48, digits=(0, 1), digit_sizes=(None, None), width=4, alpha=0.35,
                  stage1_epochs=1, stage2_epochs=1, batch_size=8, cache_images=48, warmup_epochs=1),
}  # fmt: skip


class EpochClock(keras.callbacks.Callback):
    """Adds up the seconds spent inside training epochs (`seconds`, reset by the caller)."""

    seconds = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        EpochClock.seconds += time.perf_counter() - self._start


def _rss_mb():
    return psutil.Process().memory_info().rss / 2**20


def _space(mode, space_name):
    m = MODES[mode]
    cls = get_space(space_name)
    kwargs = dict(num_classes=num_classes(m["digits"]), width=m["width"], alpha=m["alpha"])
    return cls(**kwargs)


def _proxy_task(space, search_dir, mode, **kwargs):
    m = MODES[mode]
    settings = ProxySettings(
        stage1_epochs=m["stage1_epochs"],
        stage2_epochs=m["stage2_epochs"],
        batch_size=m["batch_size"],
        cache_images=m["cache_images"],
        warmup_epochs=m["warmup_epochs"],
        termination=False,
        latency_runs=0,
        seed=1,
        **kwargs,
    )
    return ProxyTask(space, search_dir, settings, verbose=0)


def _stock_tuner(space, workdir):
    return keras_tuner.RandomSearch(
        EndToEndHyperModel(space),
        objective="val_loss",
        max_trials=1,
        seed=1,
        directory=workdir,
        project_name="random_search",
        overwrite=True,
    )


VARIANTS = {
    "standalone": {},
    "supernet": {"supernet": True},
    "sharing": {"supernet": True, "weight_sharing": True},
    "stock": None,
}


def run(mode, trials, space_name, variant, log=print):
    """Runs `trials` trials of one variant; returns (rows, extra)."""
    m = MODES[mode]
    keras.utils.set_random_seed(1)
    scenes = dict(
        digits=m["digits"], min_digit_size=m["digit_sizes"][0], max_digit_size=m["digit_sizes"][1], seed=1
    )
    train = digit_scenes("train", m["image_size"], num_scenes=m["scenes"], **scenes)
    val = digit_scenes("validation", m["image_size"], num_scenes=max(16, m["scenes"] // 8), **scenes)
    workdir = tempfile.mkdtemp(prefix="tfnas-bench-supernet-")
    space = _space(mode, space_name)
    rows, extra = [], {}
    try:
        if variant == "stock":
            stock = _stock_tuner(_space(mode, space_name), workdir)
            keys = list(space.build(space.hyperparameters(space.random_values(0))).output)
            stock_train, stock_val = end_to_end_data(train, val, m["batch_size"], keys)
        else:
            log(f"preparing {variant}: warm-up and feature cache")
            start = time.perf_counter()
            task = _proxy_task(space, os.path.join(workdir, "search"), mode, **VARIANTS[variant])
            task.prepare(train, val)
            extra["prepare_seconds"] = time.perf_counter() - start
        for t in range(1, trials + 1):
            hp = space.hyperparameters(space.random_values(seed=1000 + t))
            EpochClock.seconds = 0.0
            start = time.perf_counter()
            if variant == "stock":
                stock.oracle.max_trials = t
                stock.search(
                    stock_train,
                    validation_data=stock_val,
                    epochs=m["stage1_epochs"] + m["stage2_epochs"],
                    callbacks=[EpochClock()],
                    verbose=0,
                )
                metrics = {}
            else:
                metrics, _ = task.run_trial(hp, str(t), callbacks=[EpochClock()], log=lambda message: None)
            seconds = time.perf_counter() - start
            row = {
                "trial": t,
                "seconds": seconds,
                "epoch_seconds": EpochClock.seconds,
                "fixed_seconds": seconds - EpochClock.seconds,
                "rss_mb": _rss_mb(),
                **{
                    k: metrics.get(k)
                    for k in ("reward", "stage1_reward", "params", "madds", "profile_seconds")
                },
            }
            rows.append(row)
            traces = task.supernet_trials.traces() if VARIANTS[variant] else ""
            log(
                f"trial {t} {variant}: {seconds:.1f} s, epochs {EpochClock.seconds:.1f} s, "
                f"stage-1 reward {metrics.get('stage1_reward', float('nan')):.4f}, "
                f"rss {row['rss_mb']:.0f} MB {traces}"
            )
        if VARIANTS[variant]:
            extra.update(
                supernet_build_seconds=task.supernet_trials.build_seconds,
                supernet_traces=task.supernet_trials.traces(),
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return rows, extra


def summarize(results):
    """Per-variant medians and ratios from one result per variant (see the module docstring)."""

    def later(rows, key):
        values = [r[key] for r in rows[1:]] or [r[key] for r in rows]
        return statistics.median(values)

    summary = {}
    for name, result in results.items():
        rows = result["trials"]
        summary[name] = {
            "first_trial_seconds": rows[0]["seconds"],
            "trial_seconds": later(rows, "seconds"),
            "epoch_seconds": later(rows, "epoch_seconds"),
            "fixed_seconds": later(rows, "fixed_seconds"),
            "trials_per_hour": 3600.0 / later(rows, "seconds"),
            "trials_per_hour_with_first": 3600.0 * len(rows) / sum(r["seconds"] for r in rows),
            "rss_mb_trial_1_2_last": [
                rows[0]["rss_mb"],
                rows[min(1, len(rows) - 1)]["rss_mb"],
                rows[-1]["rss_mb"],
            ],
            **result["extra"],
        }
    for base in ("standalone", "stock"):
        if base in summary:
            for name in summary:
                summary[name][f"trials_per_hour_vs_{base}"] = (
                    summary[name]["trials_per_hour"] / summary[base]["trials_per_hour"]
                )
    if "standalone" in results and "supernet" in results:
        own = [r["stage1_reward"] for r in results["standalone"]["trials"]]
        ours = [r["stage1_reward"] for r in results["supernet"]["trials"]]
        n = min(len(own), len(ours))
        summary["stage1_reward_mean"] = {
            "standalone": statistics.mean(own[:n]),
            "supernet": statistics.mean(ours[:n]),
        }
        summary["stage1_reward_mean_difference"] = statistics.mean(ours[:n]) - statistics.mean(own[:n])
        for key in ("params", "madds"):
            summary[f"{key}_equal"] = [r[key] for r in results["standalone"]["trials"][:n]] == [
                r[key] for r in results["supernet"]["trials"][:n]
            ]
        if n > 2:
            summary["supernet_spearman_stage1_reward"] = float(stats.spearmanr(own[:n], ours[:n]).statistic)
    if "standalone" in results and "sharing" in results:
        own, shared = results["standalone"]["trials"], results["sharing"]["trials"]
        n = min(len(own), len(shared))
        if n > 2:
            for key in ("stage1_reward", "reward"):
                rho = stats.spearmanr([r[key] for r in own[:n]], [r[key] for r in shared[:n]])
                summary[f"sharing_spearman_{key}"] = float(rho.statistic)
    return summary


def main(argv=None):
    """Command-line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=sorted(MODES), default="demo")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--space", default="auxcell", choices=["auxcell", "dpc"])
    parser.add_argument("--variant", choices=sorted(VARIANTS), help="run this variant, write its JSON")
    parser.add_argument("--combine", nargs="+", metavar="JSON", help="summarize variant JSONs into --output")
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    args = parser.parse_args(argv)
    if args.combine:
        results = {}
        for path in args.combine:
            with open(path) as f:
                result = json.load(f)
            results[result["variant"]] = result
        combined = {
            "benchmark": "supernet_search",
            "date": datetime.date.today().isoformat(),
            "summary": summarize(results),
            "variants": results,
        }
        with open(args.output, "w") as f:
            json.dump(combined, f, indent=1)
        print(json.dumps(combined["summary"], indent=1))
        return
    if not args.variant:
        parser.error("give --variant (one per process) or --combine")
    start = time.perf_counter()
    rows, extra = run(args.mode, args.trials, args.space, args.variant)
    result = {
        "variant": args.variant,
        "date": datetime.date.today().isoformat(),
        "mode": args.mode,
        "settings": {**MODES[args.mode], "space": args.space, "trials": args.trials},
        "machine": {
            "cores": os.cpu_count(),
            "affinity": sorted(os.sched_getaffinity(0)),
            "load_average": os.getloadavg(),
            "platform": platform.platform(),
            "tensorflow": tf.__version__,
        },
        "extra": extra,
        "trials": rows,
        "seconds": time.perf_counter() - start,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=1)
    print(f"wrote {args.output} in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
