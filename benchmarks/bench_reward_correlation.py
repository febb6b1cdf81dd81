"""Search reward vs mIoU after full training: the CVPR 2019 paper's Fig. 5 (issue 11).

Nekrasov et al. (CVPR 2019, Fig. 5) show that the reward a trial earns in the short proxy
task ranks architectures much as their mIoU after full training does. This benchmark
measures that rank correlation for tfnas on the built-in digit scenes, with the real
`tfnas` command line (what a user runs), in three phases:

1. `search`: one `tfnas search` at `tfnas demo`'s settings (`tfnas.cli.options.DEMO`:
   auxcell space, 48x48, 512 scenes, digits 017 of side 16-32, decoder width 16, the
   shipped MobileNetV2 alpha 0.35 pretrained on digit scenes, so no warm-up; 5 stage-1
   epochs, 1 stage-2 epoch, batch 16), with `--oracle random` so that the architectures
   spread over the space, `--no-termination` (every trial runs through stage 2, so every
   reward is a final proxy reward), `--latency-runs 0`, `--seed`.
2. `train`: `tfnas train RUN_DIR --trial ID --epochs E` for every COMPLETED trial, by
   default `--from-scratch` (a fresh decoder on the search's encoder, as the paper's Fig. 5
   trains every architecture from the start; `--proxy-weights` continues from the trial's
   proxy-trained weights instead). The recipe is the paper's (Sec. 4.4, App. B) stretched
   to E epochs on the search's meta-train data, scored on its meta-val data.
3. `correlate`: Spearman's rho and Kendall's tau (`scipy.stats`, ties averaged) between the
   search reward (the trial's `reward`: geometric mean of mIoU, fwIoU and mean accuracy
   without the background class) and the mIoU after the last epoch of the full training
   (the `miou` of the training's `trial.json`, read with `tfnas results --json`; like the
   reward it leaves the background class out); also, for reference, against the mean mIoU
   of the last 5 epochs (less noisy on the small meta-val set), the full training's own
   reward, and the proxy's mIoU vs the final mIoU.

Everything lives in `--out` (the search in `OUT/search`, each training in
`OUT/train_<id>`, or `OUT/proxy_<id>` with `--proxy-weights`); a rerun skips what is done:
a finished search (all trials COMPLETED or failed) is not run again, a stopped one is
continued with `--resume`, a finished training is read back (with the training seconds the
earlier run wrote), a stopped one is continued with `--resume`. The JSON is written after every training too (`"finished": false` until
the end), so a stopped run leaves its partial result.

Writes `benchmarks/results/reward_correlation.json` (`--output`): the search (its command
and seconds) and one entry per variant (`from_scratch`, `proxy_weights`; a run replaces its
own and keeps the other's) with date, machine, the exact commands, one row per architecture
(trial id, genotype, params, multiply-adds, search reward, mIoU after training, mIoU per
epoch, training seconds), rho, tau and the seconds of the trainings.

    taskset -c 1 .venv/bin/python benchmarks/bench_reward_correlation.py --quick   # minutes
    taskset -c 1 .venv/bin/python benchmarks/bench_reward_correlation.py \
        --trials 16 --epochs 40 --out runs/fig5                                   # ~1 h
    taskset -c 1 .venv/bin/python benchmarks/bench_reward_correlation.py \
        --trials 16 --epochs 40 --out runs/fig5 --proxy-weights   # same search: + ~40 min
"""

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUTPUT = os.path.join(HERE, "results", "reward_correlation.json")

#: `tfnas demo`'s data and network settings (`tfnas.cli.options.DEMO`), as search flags.
SEARCH_FLAGS = [
    "--space", "auxcell",
    "--image-size", "48",
    "--digits", "017",
    "--min-digit-size", "16",
    "--max-digit-size", "32",
    "--width", "16",
    "--alpha", "0.35",
    "--stage1-epochs", "5",
    "--stage2-epochs", "1",
    "--batch-size", "16",
    "--cache-images", "512",
    "--oracle", "random",
    "--latency-runs", "0",
    "--no-termination",
    "--verbose", "0",
]  # fmt: skip

MODES = {
    "quick": {"trials": 3, "epochs": 2, "scenes": 128},
    "default": {"trials": 16, "epochs": 40, "scenes": 512},
}


def tfnas_command():
    """The `tfnas` console script next to this Python, else `python -m tfnas.cli`."""
    script = os.path.join(os.path.dirname(sys.executable), "tfnas")
    return [script] if os.path.exists(script) else [sys.executable, "-m", "tfnas.cli"]


def run_tfnas(args, log):
    """Runs `tfnas ARGS`, its output appended to `log` and echoed; returns (rc, seconds)."""
    command = tfnas_command() + list(args)
    print("$ tfnas " + shlex.join(args), flush=True)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"\n$ tfnas {shlex.join(args)}\n")
        f.flush()
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
        for line in process.stdout:
            f.write(line)
            f.flush()
            if not line.startswith(("WARNING", "I0000", "W0000", "E0000")) and line.strip():
                print("  " + line.rstrip(), flush=True)
        rc = process.wait()
    return rc, time.perf_counter() - start


def results_json(run_dir):
    """`tfnas results RUN_DIR --json --include-terminated`: a list of trial dicts."""
    output = subprocess.run(
        tfnas_command() + ["results", run_dir, "--json", "--sort", "trial_id", "--ascending"],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        check=True,
    ).stdout
    return json.loads(output[output.index("[") :])


def search_done(run_dir, trials):
    """True when `run_dir` holds `trials` trials, none of them still running."""
    if not os.path.exists(os.path.join(run_dir, "run.json")):
        return False
    try:
        rows = results_json(run_dir)
    except (subprocess.CalledProcessError, ValueError):
        return False
    return len(rows) >= trials and all(r.get("status") in ("COMPLETED", "FAILED", "INVALID") for r in rows)


def training_state(train_dir, trial_id):
    """The training's `trial.json` dict, or None when it has not started."""
    path = os.path.join(train_dir, f"trial_{trial_id}", "trial.json")
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def training_history(train_dir, trial_id):
    """Per-epoch records of the training's checkpoint (`checkpoint/state.json`), or []."""
    path = os.path.join(train_dir, f"trial_{trial_id}", "checkpoint", "state.json")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f).get("history", [])


def correlations(x, y):
    """Spearman's rho and Kendall's tau (tau-b; ties averaged) of two equal-length lists."""
    from scipy import stats

    if len(x) < 3:
        return {"n": len(x), "spearman": None, "kendall": None}
    if len(set(x)) < 2 or len(set(y)) < 2:  # a constant input: no rank correlation defined
        return {"n": len(x), "spearman": None, "kendall": None, "note": "an input is constant"}
    rho = stats.spearmanr(x, y)
    tau = stats.kendalltau(x, y)
    return {
        "n": len(x),
        "spearman": float(rho.statistic),
        "spearman_p": float(rho.pvalue),
        "kendall": float(tau.statistic),
        "kendall_p": float(tau.pvalue),
    }


def last_mean(values, k=5):
    """Mean of the last `k` values (fewer when there are fewer), None for none."""
    values = [v for v in values if v is not None][-k:]
    return sum(values) / len(values) if values else None


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="3 trials, 2 epochs, 128 scenes: checks that it runs"
    )
    parser.add_argument("--trials", type=int, default=None, help="architectures searched (default 16)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs of each full training (default 40)")
    parser.add_argument("--scenes", type=int, default=None, help="built-in scenes (default 512, the demo's)")
    parser.add_argument(
        "--batch-size", type=int, default=16, help="batch size of the full trainings (default 16)"
    )
    parser.add_argument("--seed", type=int, default=1, help="tfnas search --seed (default 1)")
    parser.add_argument(
        "--out", default=None, help="work folder: OUT/search, OUT/train_<id> (default: runs/fig5[-quick])"
    )
    start_from = parser.add_mutually_exclusive_group()
    start_from.add_argument(
        "--from-scratch", dest="from_scratch", action="store_true", default=True,
        help="train each architecture from a fresh decoder on the search's encoder (default; the paper's Fig. 5)",
    )  # fmt: skip
    start_from.add_argument(
        "--proxy-weights", dest="from_scratch", action="store_false",
        help="train each architecture on from its proxy-trained weights (tfnas train's default)",
    )  # fmt: skip
    parser.add_argument(
        "--output", default=None, help=f"result JSON (default {DEFAULT_OUTPUT}; --quick: OUT/...)"
    )
    args = parser.parse_args(argv)

    mode = "quick" if args.quick else "default"
    settings = dict(MODES[mode])
    for key in ("trials", "epochs", "scenes"):
        if getattr(args, key) is not None:
            settings[key] = getattr(args, key)
    settings.update(batch_size=args.batch_size, seed=args.seed)
    variant = "from_scratch" if args.from_scratch else "proxy_weights"
    out = os.path.abspath(args.out or os.path.join("runs", "fig5-quick" if args.quick else "fig5"))
    output = args.output or (os.path.join(out, "reward_correlation.json") if args.quick else DEFAULT_OUTPUT)
    os.makedirs(out, exist_ok=True)
    log = os.path.join(out, "tfnas.log")
    run_dir = os.path.join(out, "search")
    began = datetime.datetime.now(datetime.timezone.utc)
    load_before = os.getloadavg()
    started = time.perf_counter()
    previous = read_result(output, out)
    earlier = {  # trial id -> training seconds of the run that trained it
        r["trial_id"]: r.get("training_seconds")
        for r in previous["variants"].get(variant, {}).get("rows", [])
    }
    commands = []

    # 1. the search
    search_args = ["search", "--out", run_dir, "--trials", str(settings["trials"])]
    search_args += ["--scenes", str(settings["scenes"])] + SEARCH_FLAGS + ["--seed", str(args.seed)]
    search = dict(previous.get("search") or {})
    if search_done(run_dir, settings["trials"]):
        print(f"search: done already in {run_dir}", flush=True)
        search.setdefault("command", "tfnas " + shlex.join(search_args))
    else:
        if os.path.exists(os.path.join(run_dir, "run.json")):
            search_args = ["search", "--out", run_dir, "--resume"]
        rc, seconds = run_tfnas(search_args, log)
        if rc != 0:
            sys.exit(f"tfnas search failed (exit {rc}); see {log}")
        search = {
            "command": "tfnas " + shlex.join(search_args),
            "seconds": seconds,
            "date": began.isoformat(),
        }
    trials = results_json(run_dir)
    completed = [t for t in trials if t.get("status") == "COMPLETED"]
    search.update(trials=len(trials), completed=len(completed))
    print(f"search: {len(completed)}/{len(trials)} trials COMPLETED", flush=True)

    # 2. the full trainings
    rows = []
    for number, trial in enumerate(completed, 1):
        trial_id = str(trial["trial_id"])
        train_dir = os.path.join(out, f"{TRAIN_PREFIX[variant]}{trial_id}")
        train_args = ["train", run_dir, "--trial", trial_id, "--epochs", str(settings["epochs"])]
        train_args += ["--batch-size", str(args.batch_size), "--out", train_dir]
        if args.from_scratch:
            train_args.append("--from-scratch")
        state = training_state(train_dir, trial_id)
        seconds = earlier.get(trial_id)  # reused: as the run that trained it measured
        if state is not None and state.get("status") == "COMPLETED":
            print(f"train {number}/{len(completed)}: trial {trial_id} done already", flush=True)
            commands.append("tfnas " + shlex.join(train_args) + "   # an earlier run's, reused")
        else:
            if os.path.exists(os.path.join(train_dir, "run.json")):
                train_args.append("--resume")
            print(f"train {number}/{len(completed)}: trial {trial_id}", flush=True)
            commands.append("tfnas " + shlex.join(train_args))
            rc, seconds = run_tfnas(train_args, log)
            if rc != 0:
                print(f"  tfnas train failed (exit {rc}); trial {trial_id} left out (see {log})", flush=True)
                continue
        full = results_json(train_dir)[0]
        history = training_history(train_dir, trial_id)
        epoch_seconds = [h["seconds"] for h in history]
        rows.append(
            {
                "trial_id": trial_id,
                "genotype": trial.get("genotype"),
                "params": trial.get("params"),
                "madds": trial.get("madds"),
                "search_reward": trial.get("reward"),
                "search_stage1_reward": trial.get("stage1_reward"),
                "search_miou": trial.get("miou"),
                "search_trial_seconds": trial.get("trial_seconds"),
                "miou": full.get("miou"),
                "reward": full.get("reward"),
                "miou_per_epoch": [h["val"].get("miou") for h in history],
                "training_seconds": seconds,  # wall of the tfnas train process
                "training_epoch_seconds": sum(epoch_seconds),  # inside its epochs, from its checkpoint
                "first_epoch_seconds": epoch_seconds[0] if epoch_seconds else None,
            }
        )
        r = rows[-1]
        print(
            f"  trial {trial_id}: search reward {r['search_reward']:.4f}  mIoU after training {r['miou']:.4f}",
            flush=True,
        )
        result = variant_result(rows, completed, commands, settings, variant, began, load_before, started)
        write_result(output, out, previous, search, variant, result)

    result = variant_result(rows, completed, commands, settings, variant, began, load_before, started)
    result["finished"] = len(rows) == len(completed)
    write_result(output, out, previous, search, variant, result)
    print_table(result, search, output)


#: Folder prefix of the trainings of each variant in --out.
TRAIN_PREFIX = {"from_scratch": "train_", "proxy_weights": "proxy_"}


def read_result(output, out):
    """The result JSON an earlier run of the same --out wrote, as {"search", "variants"}.

    A JSON of the earlier flat form (one variant, `rows` at the top) is read as its variant.
    """
    empty = {"search": None, "variants": {}}
    if not os.path.exists(output):
        return empty
    with open(output) as f:
        previous = json.load(f)
    if previous.get("work_dir") != out:
        return empty
    if "variants" in previous:
        return previous
    variant = "from_scratch" if previous["settings"]["start_from"].startswith("scratch") else "proxy_weights"
    search = {"command": previous["commands"][0], "seconds": previous["seconds"].get("search_seconds")}
    return {"search": search, "variants": {variant: previous}}


def variant_result(rows, completed, commands, settings, variant, began, load_before, started):
    """The JSON entry of one variant: settings, machine, commands, rows, correlations."""
    rewards = [r["search_reward"] for r in rows]
    mious = [r["miou"] for r in rows]
    trained = [r["training_seconds"] for r in rows if r["training_seconds"] is not None]
    return {
        "date": began.isoformat(timespec="seconds"),
        "settings": {
            **settings,
            "start_from": "scratch: a fresh decoder on the search's encoder (tfnas train --from-scratch)"
            if variant == "from_scratch"
            else "the trial's proxy-trained weights (tfnas train's default)",
        },
        "machine": {
            "nproc": os.cpu_count(),
            "affinity": sorted(os.sched_getaffinity(0)),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "commands": commands,
        "rows": rows,
        "search_reward_vs_miou": correlations(rewards, mious),
        "search_reward_vs_miou_last5_mean": correlations(
            rewards, [last_mean(r["miou_per_epoch"]) for r in rows]
        ),
        "search_reward_vs_full_reward": correlations(rewards, [r["reward"] for r in rows]),
        "search_miou_vs_miou": correlations([r["search_miou"] for r in rows], mious),
        "distinct_search_rewards": len({round(x, 6) for x in rewards if x is not None}),
        "trained": len(rows),
        "finished": False,  # set when every COMPLETED trial is trained
        "seconds": {
            "train_seconds": sum(trained),  # each training as the run that trained it measured
            "this_run_seconds": time.perf_counter() - started,
        },
    }


def write_result(output, out, previous, search, variant, result):
    """Writes the JSON: the search, this variant's entry and the other variant's, if any."""
    variants = {**previous["variants"], variant: result}
    combined = {
        "benchmark": "reward_correlation",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "search_flags": SEARCH_FLAGS,
        "search": search,
        "variants": {name: variants[name] for name in TRAIN_PREFIX if name in variants},
        "work_dir": out,
    }
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    with open(output + ".tmp", "w") as f:
        json.dump(combined, f, indent=1, allow_nan=False)
    os.replace(output + ".tmp", output)


def print_table(result, search, output):
    rows = result["rows"]
    header = (
        f"{'trial':>5}  {'params':>8}  {'madds':>8}  {'search':>7}  {'mIoU':>7}  {'train s':>7}  genotype"
    )
    print("\n" + header)
    for r in sorted(rows, key=lambda r: -r["search_reward"]):
        train_s = "-" if r["training_seconds"] is None else f"{r['training_seconds']:.0f}"
        print(
            f"{r['trial_id']:>5}  {r['params'] or 0:>8.0f}  {r['madds'] or 0:>8.0f}  {r['search_reward']:>7.4f}  "
            f"{r['miou']:>7.4f}  {train_s:>7}  {r['genotype']}"
        )
    c = result["search_reward_vs_miou"]
    if c["spearman"] is not None:
        print(f"\nsearch reward vs mIoU after training, n={c['n']}: Spearman {c['spearman']:.3f} "
              f"(p {c['spearman_p']:.3g}), Kendall {c['kendall']:.3f} (p {c['kendall_p']:.3g})")  # fmt: skip
    seconds = {"search": search.get("seconds"), **result["seconds"]}
    print(f"seconds: {json.dumps({k: v if v is None else round(v) for k, v in seconds.items()})}")
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
