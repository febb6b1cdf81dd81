"""One-shot 3M-Pose search on the built-in pose data with the FLOPs constraint on and off (issue 13).

Two `OneShotTuner` searches, identical but for the FLOPs term of the search loss:

- `flops_off`: `SearchSettings(flops_weight=0)`: the architecture parameters follow the
  heatmap and grouping losses only;
- `flops_on`: the thesis' term `(GFLOPs / T) ** w` (T = 47.8, w = 0.15) at weight
  `--flops-weight` (default 1), its warm-up starting at its ceiling (`flops_warmup_start=1`), so
  that a search of a few epochs feels it (the thesis' own weight and warm-up, 1e-3 from 1e-4,
  barely move alpha in that time; this is a stronger setting, not the thesis').

Each trains the supernet of a small fabric on the built-in pose data (`--task pose-multi`, the
default: the multi-person figure scenes, scored by COCO keypoint AP; `--task pose`: the single-
figure crops, scored by PCKh, which a short budget already moves above 0), derives the
architecture by the thesis' rule (argmax m, top-k alpha and beta; the oracle's first trial) and
scores it with the proxy task. Reported per search: the derived architecture, its multiply-adds
and parameters (`tfnas.profile` of the trial's model), its reward on the held-out images, the
expected GFLOPs of the last supernet epoch, and the seconds of the search (supernet and trial;
on a shared CPU, indicative only).

Writes `benchmarks/results/oneshot_flops.json` (`oneshot_flops_<task>.json` for another task).

    taskset -c 1 .venv/bin/python benchmarks/bench_oneshot_flops.py
    taskset -c 1 .venv/bin/python benchmarks/bench_oneshot_flops.py --task pose
    taskset -c 1 .venv/bin/python benchmarks/bench_oneshot_flops.py --quick    # smoke run
"""

import argparse
import datetime
import json
import os
import platform
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from tfnas.oneshot import SearchSettings  # noqa: E402
from tfnas.spaces.fabric import FabricSpace, genotype_table  # noqa: E402
from tfnas.tuners.oneshot import OneShotTuner  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def search(space, train, settings, args, directory, name):
    keras.utils.set_random_seed(0)
    tuner = OneShotTuner(
        space,
        max_trials=1,
        search_settings=settings,
        search_batch_size=args.batch,
        stage1_epochs=args.trial_epochs,
        stage2_epochs=0,
        batch_size=args.batch,
        cache_images=args.scenes,
        latency_runs=0,
        termination=False,
        verbose=0,
        directory=directory,
        project_name=name,
    )
    start = time.perf_counter()
    tuner.search(train)
    seconds = time.perf_counter() - start
    (trial,) = tuner.oracle.get_best_trials(1)
    history = tuner.supernet_search.result()["history"]
    genotype = space.genotype(trial.hyperparameters.values)
    return {
        "source": tuner.oracle.source(trial.trial_id),
        "genotype": genotype,
        "table": genotype_table(genotype),
        "reward": trial.score,
        "madds": trial.metrics.get_last_value("madds"),
        "params": trial.metrics.get_last_value("params"),
        "last_epoch_expected_gflops": history[-1]["expected_gflops"],
        "expected_gflops_per_epoch": [h["expected_gflops"] for h in history],
        "seconds": seconds,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a 2x3 fabric, 2 epochs, 16 scenes")
    parser.add_argument("--epochs", type=int, default=8, help="supernet epochs")
    parser.add_argument("--scenes", type=int, default=64)
    parser.add_argument("--size", type=int, default=48)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--trial-epochs", type=int, default=3)
    parser.add_argument("--flops-weight", type=float, default=1.0)
    parser.add_argument("--task", default="pose-multi", choices=("pose-multi", "pose"))
    parser.add_argument("--out", default=None, help="default results/oneshot_flops[_<task>].json")
    args = parser.parse_args()
    config = dict(width=8, rows=3, columns=4, eel_columns=(2,), stem_channels=16, stem_blocks=1)
    if args.quick:
        config = dict(
            width=4, rows=2, columns=3, layout=[1, 2, 1], eel_columns=(2,), stem_channels=4, stem_blocks=1
        )
        args.epochs, args.scenes, args.size, args.batch, args.trial_epochs = 2, 16, 32, 4, 1
    space = FabricSpace(**config, task=args.task)
    if args.out is None:
        suffix = "" if args.task == "pose-multi" else f"_{args.task}"
        args.out = os.path.join(HERE, "results", f"oneshot_flops{suffix}.json")
    train = space.task.builtin_data("train", image_size=args.size, num_samples=args.scenes, seed=0)
    common = dict(epochs=args.epochs, arch_split=0.25)
    variants = {
        "flops_off": SearchSettings(**common, flops_weight=0.0),
        "flops_on": SearchSettings(**common, flops_weight=args.flops_weight, flops_warmup_start=1.0),
    }
    results = {}
    with tempfile.TemporaryDirectory() as directory:
        for name, settings in variants.items():
            results[name] = search(space, train, settings, args, directory, name)
            r = results[name]
            print(
                f"{name}: derived {r['madds'] / 1e6:.2f} M multiply-adds, {r['params'] / 1e3:.1f} K params, "
                f"reward {r['reward']:.4f}, expected {r['last_epoch_expected_gflops'] * 1e3:.3f} MFLOPs "
                f"in the last epoch, {r['seconds']:.0f} s",
                flush=True,
            )
    record = {
        "date": datetime.date.today().isoformat(),
        "machine": platform.platform(),
        "cpus": len(os.sched_getaffinity(0)),
        "space": config,
        "task": args.task,
        "image_size": args.size,
        "scenes": args.scenes,
        "supernet_epochs": args.epochs,
        "batch": args.batch,
        "trial_stage1_epochs": args.trial_epochs,
        "flops_weight_on": args.flops_weight,
        "results": results,
        "madds_on_over_off": results["flops_on"]["madds"] / results["flops_off"]["madds"],
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(record, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
