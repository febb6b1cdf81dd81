"""Sample efficiency of the search strategies: best reward after N trials, per Oracle.

Two parts, each written to `benchmarks/results/sample_efficiency.json` (a part that is not
run keeps its previous entry):

- `synthetic` (default): the Oracles run through a real `keras_tuner.Tuner`
  (`synthetic.SyntheticTuner`) over the auxiliary-cell space (CVPR 2019, Appendix A); a
  trial's reward is `synthetic.SyntheticObjective` of its values (no training), so
  hundreds of trials per seed are affordable. Oracles: `PPOOracle` at the paper's learning
  rate 1e-4 and at 3e-3, tfnas' `NearBestRandomOracle` (uniform + near-best mutations),
  keras-tuner's uniform `NearBestRandomOracle` and keras-tuner's stock
  `BayesianOptimizationOracle`.
- `real` (`--real`): a short real search with `NASTuner` on the built-in digit scenes
  (64x64 with large digits, MobileNetV2 alpha 0.35 warmed up by NASTuner, decoder width
  16, 8 stage-1 epochs, no stage 2), 3 trials per Oracle, 1 seed (`--real --full`: 6
  trials, 2 seeds, stage 2 on).

For each Oracle and budget N the script reports mean +- std over seeds of the best reward
among the first N trials, and the Oracle's own cost per trial (proposal + learning +
keras-tuner bookkeeping, wall-clock seconds on this shared machine).

    .venv/bin/python benchmarks/bench_sample_efficiency.py            # synthetic, <= 10 min
    .venv/bin/python benchmarks/bench_sample_efficiency.py --full     # 5 seeds, N <= 200
    .venv/bin/python benchmarks/bench_sample_efficiency.py --real     # NASTuner part
    .venv/bin/python benchmarks/bench_sample_efficiency.py --quick    # seconds, for tests
"""

import argparse
import concurrent.futures
import datetime
import json
import math
import multiprocessing
import os
import platform
import shutil
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUTPUT = os.path.join(HERE, "results", "sample_efficiency.json")

#: Oracle names -> (description, constructor arguments). Built in `make_oracle`.
ORACLES = {
    "ppo_lr1e-4": "PPOOracle with the authors' settings: rollout buffer 100, 1 epoch in 100 "
    "minibatches (100 Adam steps per architecture), Adam lr 1e-4, clip 0.1, "
    "baseline decay 0.95, grad-norm clip 2.0",
    "ppo_lr3e-3": "PPOOracle, Adam lr 3e-3, otherwise as the paper",
    "random_tfnas": "tfnas NearBestRandomOracle: uniform, or (p = 0.5) a mutation of a top-5 trial",
    "random_uniform": "keras-tuner NearBestRandomOracle (uniform)",
    "bayesian": "keras-tuner BayesianOptimizationOracle (stock: 3 x 19 = 57 random initial "
    "points, then a Matern GP with UCB, beta 2.6)",
}

#: Settings per mode: seeds, budgets N, and the largest N for the (slow) Bayesian Oracle.
MODES = {
    "quick": {
        "seeds": [1],
        "budgets": [3, 6],
        "bayesian_seeds": [1],
        "bayesian_max": 4,
        "oracles": list(ORACLES),
    },
    "default": {
        "seeds": [1, 2, 3],
        "budgets": [25, 50, 100, 300],
        "bayesian_seeds": [1],
        "bayesian_max": 70,
        "oracles": ["ppo_lr1e-4", "random_tfnas", "random_uniform"],
    },
    "full": {
        "seeds": [1, 2, 3, 4, 5],
        "budgets": [50, 100, 200],
        "bayesian_seeds": [1, 2, 3],
        "bayesian_max": 100,
        "oracles": list(ORACLES),
    },
}


def _space():
    from tfnas.spaces.auxcell import AuxCellSpace

    return AuxCellSpace(num_classes=11, width=16, alpha=0.35)


def make_oracle(name, max_trials, seed, objective):
    """Builds one of the benchmarked Oracles.

    Args:
        name: a key of `ORACLES`.
        max_trials: int, the number of trials.
        seed: int >= 1 (keras-tuner treats seed 0 as "no seed").
        objective: `keras_tuner.Objective` to maximise.

    Returns:
        A `keras_tuner.Oracle`.

    Raises:
        ValueError: if `name` is unknown.
    """
    import keras_tuner

    from tfnas.tuners.ppo import PPOOracle
    from tfnas.tuners.random_search import NearBestRandomOracle

    common = {"objective": objective, "max_trials": max_trials, "seed": seed}
    if name == "ppo_lr1e-4":
        return PPOOracle(learning_rate=1e-4, **common)
    if name == "ppo_lr3e-3":
        return PPOOracle(learning_rate=3e-3, **common)
    if name == "random_tfnas":
        return NearBestRandomOracle(**common)
    if name == "random_uniform":
        return keras_tuner.oracles.RandomSearchOracle(**common)
    if name == "bayesian":
        return keras_tuner.oracles.BayesianOptimizationOracle(**common)
    raise ValueError(f"unknown oracle {name!r}; expected one of {sorted(ORACLES)}")


def run_synthetic(name, seed, max_trials, objective_seed=0):
    """One synthetic search: `max_trials` trials of Oracle `name` with `seed`.

    Runs in a worker process (so searches can run in parallel and TF state stays apart).

    Returns:
        dict with `rewards` (list, in trial order) and `seconds` (wall-clock of the search).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, HERE)
    import synthetic

    space = _space()
    objective = synthetic.SyntheticObjective(space, seed=objective_seed)
    directory = tempfile.mkdtemp(prefix="tfnas-bench-se-")
    try:
        oracle = make_oracle(name, max_trials, seed, synthetic.OBJECTIVE)
        tuner = synthetic.SyntheticTuner(objective, oracle, space, directory=directory, project_name="search")
        oracle_times = _time_oracle(oracle)
        start, cpu = time.perf_counter(), time.process_time()
        tuner.search(verbose=0)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return {
        "name": name,
        "seed": seed,
        "rewards": tuner.rewards,
        "seconds": seconds,
        "cpu_seconds": cpu,
        "oracle_times": oracle_times,
    }


def _time_oracle(oracle):
    """Wraps `populate_space` and `end_trial` to record their wall and CPU seconds.

    Returns:
        dict `{"populate_space": [[wall, cpu], ...], "end_trial": [...]}` filled as the
        search runs (`end_trial` includes the controller update and keras-tuner's saving).
    """
    times = {"populate_space": [], "end_trial": []}
    for method in times:
        original = getattr(oracle, method)

        def timed(*args, _original=original, _record=times[method], **kwargs):
            start, cpu = time.perf_counter(), time.process_time()
            result = _original(*args, **kwargs)
            _record.append([time.perf_counter() - start, time.process_time() - cpu])
            return result

        setattr(oracle, method, timed)
    return times


def best_at(rewards_by_seed, budgets):
    """Mean and std over seeds of the best reward among the first N trials, per N.

    Args:
        rewards_by_seed: dict seed -> list of rewards in trial order.
        budgets: list of ints N.

    Returns:
        dict `str(N) -> {"mean", "std", "values", "seeds"}` for the N that every run reached.
    """
    table = {}
    for n in budgets:
        values = [max(r[:n]) for r in rewards_by_seed.values() if len(r) >= n]
        if len(values) != len(rewards_by_seed) or not values:
            continue
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        table[str(n)] = {"mean": mean, "std": std, "values": values, "seeds": len(values)}
    return table


def synthetic_part(mode, jobs, log=print, oracles=None, trials=None):
    """Runs the synthetic part and returns its JSON entry.

    Args:
        mode: a key of `MODES`.
        jobs: int, parallel searches.
        log: callable for progress lines.
        oracles: optional list of `ORACLES` keys replacing the mode's.
        trials: optional dict oracle name -> trials per seed, replacing the mode's largest
            budget for that Oracle (budgets above it are then not reported for it).
    """
    settings = dict(MODES[mode])
    if oracles:
        settings["oracles"] = list(oracles)
    budgets = settings["budgets"]
    trials = trials or {}
    tasks = []
    for name in settings["oracles"]:
        if name == "bayesian":
            tasks += [(name, s, settings["bayesian_max"]) for s in settings["bayesian_seeds"]]
        else:
            tasks += [(name, s, trials.get(name, max(budgets))) for s in settings["seeds"]]
    # Longest first, so parallel workers finish together.
    tasks.sort(key=lambda t: -(t[2] * (20 if t[0] == "bayesian" else 1)))
    results = []
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = [pool.submit(run_synthetic, *task) for task in tasks]
        for future in concurrent.futures.as_completed(futures):
            result = future.result()
            log(
                f"  {result['name']:>15} seed {result['seed']}: {len(result['rewards'])} trials, "
                f"best {max(result['rewards']):.4f}, {result['seconds']:.1f} s"
            )
            results.append(result)

    sys.path.insert(0, HERE)
    import synthetic

    objective = synthetic.SyntheticObjective(_space(), seed=0)
    reference, _ = objective.reference_optimum(restarts=20 if mode == "quick" else 200)
    space = _space()
    uniform = [objective(space.random_values(10_000 + i)) for i in range(500)]
    entry = {
        "objective": {
            "space": "auxcell (CVPR 2019 Appendix A), 19 decisions, 1.8e15 architectures",
            "seed": 0,
            "num_interactions": 40,
            "interaction_scale": 0.5,
            "sharpness": 0.5,
            "reference_optimum": reference,
            "uniform_mean": sum(uniform) / len(uniform),
            "uniform_std": math.sqrt(
                sum((u - sum(uniform) / len(uniform)) ** 2 for u in uniform) / len(uniform)
            ),
        },
        "budgets": budgets,
        "oracles": {},
    }
    for name in settings["oracles"]:
        runs = [r for r in results if r["name"] == name]
        rewards = {r["seed"]: r["rewards"] for r in runs}
        trials_run = sum(len(r["rewards"]) for r in runs)
        entry["oracles"][name] = {
            "description": ORACLES[name],
            "seeds": sorted(rewards),
            "max_trials": max(len(r) for r in rewards.values()),
            "best_at": best_at(
                rewards, budgets + ([len(next(iter(rewards.values())))] if name == "bayesian" else [])
            ),
            "seconds_per_trial": sum(r["seconds"] for r in runs) / trials_run,
            "cpu_seconds_per_trial": sum(r["cpu_seconds"] for r in runs) / trials_run,
            # populate_space + end_trial (controller update, keras-tuner bookkeeping) over
            # the last 10 trials of each seed, when the buffer is (nearly) full.
            "oracle_last10": {
                kind: sum(
                    p[i] + e[i]
                    for r in runs
                    for p, e in zip(
                        r["oracle_times"]["populate_space"][-10:], r["oracle_times"]["end_trial"][-10:]
                    )
                )
                / sum(len(r["oracle_times"]["end_trial"][-10:]) for r in runs)
                for i, kind in enumerate(["wall_seconds", "cpu_seconds"])
            },
            "rewards": {str(s): r for s, r in rewards.items()},
        }
    return entry


#: Settings of the real part per mode (64x64 digit scenes, alpha 0.35, width 16).
REAL_MODES = {
    "quick": {
        "oracles": ["ppo_lr3e-3", "random_tfnas"],
        "seeds": [1],
        "trials": 1,
        "train_images": 32,
        "val_images": 16,
        "batch_size": 8,
        "stage1_epochs": 1,
        "stage2_epochs": 0,
        "warmup_epochs": 1,
        "latency_runs": 2,
    },
    "default": {
        "oracles": ["ppo_lr1e-4", "ppo_lr3e-3", "random_tfnas", "bayesian"],
        "seeds": [1],
        "trials": 3,
        "train_images": 512,
        "val_images": 64,
        "batch_size": 16,
        "stage1_epochs": 5,
        "stage2_epochs": 0,
        "warmup_epochs": 30,
        "latency_runs": 10,
    },
    "full": {
        "oracles": ["ppo_lr1e-4", "ppo_lr3e-3", "random_tfnas", "bayesian"],
        "seeds": [1, 2],
        "trials": 6,
        "train_images": 256,
        "val_images": 64,
        "batch_size": 16,
        "stage1_epochs": 3,
        "stage2_epochs": 1,
        "warmup_epochs": 3,
        "latency_runs": 10,
    },
}


def real_part(mode, log=print):
    """Short real searches with `NASTuner`, one per Oracle and seed; returns the JSON entry.

    The encoder is warmed up once (`warmup_epochs`, NASTuner's own warm-up, which is also
    the distillation teacher) and its `warmup.weights.h5` is copied into every other
    search's directory, so every search starts from the same encoder and teacher. The
    Bayesian Oracle gets `num_initial_points=2` so that its Gaussian process proposes
    trials within so few; progressive termination is off so every trial is scored alike.
    """
    import keras_tuner

    from tfnas.data import digit_scene_arrays, num_classes
    from tfnas.search_dir import WARMUP_WEIGHTS
    from tfnas.spaces.auxcell import AuxCellSpace
    from tfnas.tuners import OBJECTIVE, NASTuner

    settings = REAL_MODES[mode]
    # The demo's task (`tfnas demo`): three digit classes, 16..32 pixels in 48x48 scenes.
    # With all ten digits a from-scratch encoder predicts only background at this budget.
    scenes = {"image_size": 48, "min_digit_size": 16, "max_digit_size": 32, "digits": (0, 1, 7)}
    train = digit_scene_arrays("train", num_scenes=settings["train_images"], **scenes)
    val = digit_scene_arrays("validation", num_scenes=settings["val_images"], **scenes)
    workdir = tempfile.mkdtemp(prefix="tfnas-bench-se-real-")
    warmed = None
    entry = {
        "settings": {
            **settings,
            **scenes,
            "alpha": 0.35,
            "width": 16,
            "termination": False,
            "bayesian_num_initial_points": 2,
        },
        "oracles": {},
    }
    try:
        for name in settings["oracles"]:
            rewards, seconds = {}, 0.0
            for seed in settings["seeds"]:
                if name == "bayesian":
                    oracle = keras_tuner.oracles.BayesianOptimizationOracle(
                        objective=OBJECTIVE, max_trials=settings["trials"], seed=seed, num_initial_points=2
                    )
                else:
                    oracle = make_oracle(name, settings["trials"], seed, OBJECTIVE)
                tuner = NASTuner(
                    AuxCellSpace(num_classes=num_classes(scenes["digits"]), width=16, alpha=0.35),
                    oracle=oracle,
                    seed=seed,
                    stage1_epochs=settings["stage1_epochs"],
                    stage2_epochs=settings["stage2_epochs"],
                    batch_size=settings["batch_size"],
                    warmup_epochs=settings["warmup_epochs"],
                    termination=False,
                    latency_runs=settings["latency_runs"],
                    verbose=0,
                    directory=workdir,
                    project_name=f"{name}_{seed}",
                    overwrite=True,
                )
                if warmed is not None:
                    shutil.copy(warmed, os.path.join(tuner.project_dir, WARMUP_WEIGHTS))
                start = time.perf_counter()
                tuner.search(train, validation_data=val, verbose=0)
                seconds += time.perf_counter() - start
                if warmed is None:
                    warmed = os.path.join(tuner.project_dir, WARMUP_WEIGHTS)
                trials = sorted(tuner.oracle.trials.values(), key=lambda t: int(t.trial_id))
                rewards[seed] = [t.score if t.score is not None else 0.0 for t in trials]
                log(f"  {name:>15} seed {seed}: rewards {[round(r, 4) for r in rewards[seed]]}")
            entry["oracles"][name] = {
                "description": ORACLES[name] + (" (num_initial_points=2)" if name == "bayesian" else ""),
                "seeds": sorted(rewards),
                "best_at": best_at(rewards, list(range(1, settings["trials"] + 1))),
                "seconds_per_trial": seconds / sum(len(r) for r in rewards.values()),
                "rewards": {str(s): r for s, r in rewards.items()},
            }
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return entry


def _load(path):
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {}


def _machine():
    return {
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "note": "shared machine: other engineers were running tests at the same time",
    }


def main(argv=None):
    """Command-line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="tiny settings (seconds), for tests")
    group.add_argument(
        "--full",
        action="store_true",
        help="more seeds and trials (synthetic: 5 seeds, N up to 200; over an hour)",
    )
    parser.add_argument(
        "--real", action="store_true", help="run the real NASTuner part instead of the synthetic one"
    )
    parser.add_argument("--jobs", type=int, default=2, help="parallel searches (default 2)")
    parser.add_argument(
        "--oracles",
        nargs="+",
        choices=sorted(ORACLES),
        help="synthetic part: the Oracles to run instead of the mode's",
    )
    parser.add_argument(
        "--trials",
        nargs="+",
        default=[],
        metavar="ORACLE=N",
        help="synthetic part: trials per seed for an Oracle, e.g. "
        "ppo_lr1e-4=100, instead of the mode's largest budget",
    )
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="JSON file to update")
    args = parser.parse_args(argv)
    if args.jobs < 1:
        parser.error(f"--jobs={args.jobs}: expected at least 1")
    mode = "quick" if args.quick else "full" if args.full else "default"

    data = _load(args.output)
    data.update({"benchmark": "sample_efficiency", "machine": _machine()})
    start = time.perf_counter()
    if args.real:
        print(f"real part (NASTuner), mode {mode}")
        entry = real_part(mode)
        entry.update(mode=mode, date=datetime.date.today().isoformat(), seconds=time.perf_counter() - start)
        data["real"] = entry
        for name, result in entry["oracles"].items():
            cells = "  ".join(
                f"N={n}: {v['mean']:.4f} +- {v['std']:.4f}" for n, v in result["best_at"].items()
            )
            print(f"{name:>15}  {cells}  ({result['seconds_per_trial']:.1f} s/trial)")
    else:
        print(f"synthetic part, mode {mode}, {args.jobs} job(s)")
        trials = {}
        for item in args.trials:
            name, _, count = item.partition("=")
            if name not in ORACLES or not count.isdigit() or int(count) < 1:
                parser.error(
                    f"--trials {item!r}: expected ORACLE=N with ORACLE one of {sorted(ORACLES)} and N >= 1"
                )
            trials[name] = int(count)
        entry = synthetic_part(mode, args.jobs, oracles=args.oracles, trials=trials)
        entry.update(mode=mode, date=datetime.date.today().isoformat(), seconds=time.perf_counter() - start)
        data["synthetic"] = entry
        for name, result in entry["oracles"].items():
            cells = "  ".join(
                f"N={n}: {v['mean']:.4f} +- {v['std']:.4f}" for n, v in result["best_at"].items()
            )
            print(f"{name:>15}  {cells}  ({result['seconds_per_trial']:.2f} s/trial)")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(data, f, indent=1)
    print(f"wrote {args.output} in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
