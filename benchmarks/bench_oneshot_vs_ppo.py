"""Time of one one-shot fabric search vs a PPO search reaching a comparable score (issue 13).

Two `tfnas search` runs of the same fabric space (rows, columns, early-escape column, width,
stem), task, built-in data (image size, scenes), seed and proxy task (stage-1 and stage-2
epochs, batch size, `--no-termination`, `--latency-runs 0`, `--teacher`):

- `oneshot`: `--space fabric --oracle gumbel --trials K --search-epochs E`: the 3M-Pose
  one-shot search trains the supernet once, then scores the K architectures derived from
  it as trials (each trained by the proxy task from the supernet's stem);
- `ppo`: `--space fabric --oracle ppo --trials N --warmup-epochs W`: the stem is warmed up
  on the search data, then N standalone trials are proposed by the PPO controller.

The two run AT THE SAME TIME, each in its own process pinned to its own cores
(`taskset -c`, `--cores-a` for one-shot, `--cores-b` for PPO; default 0 and 1), so their wall
times are comparable; each process's CPU time is recorded too (the fairer measure when the
cores are shared or one is busier): `os.wait4`'s rusage at the end, and while they run this
script samples each process's CPU time from `/proc/PID/stat` every `--poll` seconds.

Timelines (seconds from each process's start, i.e. from just before `Popen`):

- a trial's end (`end_s`) is the modification time of its `trial_<id>/trial.json` (keras-tuner
  writes it last when the trial ends); its CPU time (`cpu_s`) is the process's CPU time when
  this script's poll first saw the trial ended (at most `--poll` s late; a trial that ended
  just before the process exited gets the CPU time at exit); its reward and
  `trial_seconds`, `madds`, `params` are the trial's metrics. A failed trial counts as time
  spent with no score. `start_s` (`end_s - trial_seconds`) is approximate.
- the supernet's epochs (one-shot): each epoch's `seconds` from the checkpoint history
  (`oneshot/checkpoint/state.json`, `tfnas.oneshot.search.SupernetSearch.result()`), and the
  end of the last one as the modification time of that `state.json` (its last commit);
  per-epoch `seen_s`/`cpu_s` as this script's poll saw each commit.
- PPO's first trial start (`first_trial_seen_s`) marks the end of its warm-up and caching.

Summary: the one-shot's best reward S and T_os, the end of its last trial (wall and CPU);
PPO's best-so-far curve, the time its best first reaches >= S (wall and CPU; null: not
reached within N trials), its best at T_os (by wall time, and by CPU time at T_os's CPU time);
each search's best architecture's multiply-adds and parameters. With S = 0 any completed PPO
trial "reaches" it; the summary flags that. Both times count from process start, so both
include Python/TensorFlow start-up and data generation.

The proxy settings are the same flags and values, `--aux-weight` included (default 1.0, the
one-shot search's own: every early exit's loss weighs as much as the final output; the PPO
search would otherwise take the protocol's 0.15). What still differs is where a trial's stem
comes from: the supernet's (one-shot) or the warm-up's (PPO). The JSON's `proxy_differences`
lists what the two `run.json` files disagree on. `--teacher none` (default) keeps distillation off in both (the
one-shot warms nothing up, so its `auto` teacher is none).

**Control** (on unless `--no-control`): the two searches also differ in their stems, so after
them the one-shot's best architecture is scored once more *in the PPO search's setting*: a
third `tfnas search` with the PPO search's arguments (same data, warm-up and proxy task) whose
Oracle proposes only that architecture (`score_architecture`, run as a child of this script on
`--cores-a`). Its reward against the one-shot's S tells how much of the gap is the
architecture and how much the stem the supernet trained.

Writes `benchmarks/results/oneshot_vs_ppo.json` (date, machine, cores, both argv lists,
timelines, summary); the search folders `oneshot/`, `ppo/` and their output `oneshot.log`,
`ppo.log` stay under `--workdir` (default: a new temporary folder).

    python benchmarks/bench_oneshot_vs_ppo.py                       # depth, one-shot on core 0, PPO on core 1
    python benchmarks/bench_oneshot_vs_ppo.py --quick --task pose-multi --cores-a 1 --cores-b 1   # smoke run
"""

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # inherited by the searches: their logs stay readable

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUTPUT = os.path.join(HERE, "results", "oneshot_vs_ppo.json")
TASKS = ("depth", "segmentation", "pose-multi", "pose")
#: keras-tuner statuses of a trial that will not run again.
ENDED = ("COMPLETED", "FAILED", "INVALID")
SUPERNET_STATE = os.path.join("oneshot", "checkpoint", "state.json")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def common_argv(args):
    """The `tfnas search` arguments both searches share: space, task, data, seed, proxy task."""
    argv = ["--space", "fabric", "--task", args.task, "--seed", str(args.seed)]
    argv += ["--rows", str(args.rows), "--columns", str(args.columns), "--eel-columns", args.eel_columns]
    argv += ["--width", str(args.width), "--stem-channels", str(args.stem_channels)]
    argv += ["--stem-blocks", str(args.stem_blocks)]
    argv += ["--image-size", str(args.size), "--scenes", str(args.scenes)]
    argv += ["--stage1-epochs", str(args.stage1_epochs), "--stage2-epochs", str(args.stage2_epochs)]
    argv += ["--batch-size", str(args.batch), "--no-termination", "--latency-runs", "0"]
    argv += ["--aux-weight", str(args.aux_weight), "--teacher", args.teacher, "--verbose", "2"]
    return argv


def oneshot_argv(out, args):
    argv = ["search", "--out", out, "--oracle", "gumbel", "--trials", str(args.oneshot_trials)]
    argv += ["--search-epochs", str(args.search_epochs), "--search-batch-size", str(args.batch)]
    return argv + common_argv(args)


def ppo_argv(out, args):
    argv = ["search", "--out", out, "--oracle", "ppo", "--trials", str(args.ppo_trials)]
    argv += ["--warmup-epochs", str(args.warmup_epochs)]
    return argv + common_argv(args)


def read_json(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return None  # absent, or being written by the search: read again at the next poll


def cpu_seconds(pid):
    """CPU time (user + system) of a running process from /proc, or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime (fields 14, 15)


class Search:
    """One `tfnas search` child: its process, and what the polls saw of its folder."""

    def __init__(self, name, out, argv, cores):
        self.name, self.out, self.argv, self.cores = name, out, argv, cores
        self.trials_seen = {}  # trial id -> {"first_seen_s", "first_seen_cpu_s"}
        self.ended_seen = {}  # trial id -> {"seen_s", "cpu_s"}
        self.epochs_seen = {}  # supernet epoch -> {"seen_s", "cpu_s"}
        self.cpu = 0.0

    def start(self):
        self.log_path = self.out + ".log"  # beside the folder: tfnas search wants --out new or empty
        self.log = open(self.log_path, "w")
        command = ["taskset", "-c", self.cores, sys.executable, "-m", "tfnas.cli"] + self.argv
        self.started = time.time()
        self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
        self.pid = self.process.pid

    def poll(self, now):
        """Notes the trials that started or ended and the supernet epochs committed since the last poll."""
        cpu = cpu_seconds(self.pid)
        if cpu is not None:
            self.cpu = cpu
        elapsed = now - self.started
        try:
            entries = os.listdir(self.out)
        except FileNotFoundError:
            return
        for entry in entries:
            if not entry.startswith("trial_"):
                continue
            trial_id = entry[len("trial_") :]
            if trial_id not in self.trials_seen:
                self.trials_seen[trial_id] = {"first_seen_s": elapsed, "first_seen_cpu_s": self.cpu}
            if trial_id in self.ended_seen:
                continue
            data = read_json(os.path.join(self.out, entry, "trial.json"))
            if data is not None and data.get("status") in ENDED:
                self.ended_seen[trial_id] = {"seen_s": elapsed, "cpu_s": self.cpu}
        state = read_json(os.path.join(self.out, SUPERNET_STATE))
        if state is not None:
            for epoch in range(int(state.get("epoch", -1)) + 1):
                self.epochs_seen.setdefault(epoch, {"seen_s": elapsed, "cpu_s": self.cpu})

    def finish(self, status, rusage, now):
        self.log.close()
        self.process.returncode = os.waitstatus_to_exitcode(status)  # reaped by os.wait4
        self.returncode = self.process.returncode
        self.wall = now - self.started
        self.cpu_total = rusage.ru_utime + rusage.ru_stime
        self.max_rss_mib = rusage.ru_maxrss / 1024


def run_both(searches, poll):
    """Starts the searches together; polls their folders until both have exited."""
    for search in searches:
        search.start()
        print(
            f"{search.name} (pid {search.pid}, cores {search.cores}): tfnas {' '.join(search.argv)}",
            flush=True,
        )
    running = {s.pid: s for s in searches}
    try:
        while running:
            now = time.time()
            for search in running.values():
                search.poll(now)
            pid, status, rusage = os.wait4(-1, os.WNOHANG)
            if pid in running:
                search = running.pop(pid)
                # trials that ended since the last poll: seen now, with the CPU time at exit
                search.cpu = rusage.ru_utime + rusage.ru_stime
                search.poll(time.time())
                search.finish(status, rusage, time.time())
                print(
                    f"{search.name}: exit {search.returncode} after {search.wall:.0f} s wall, "
                    f"{search.cpu_total:.0f} s CPU",
                    flush=True,
                )
                continue
            time.sleep(poll)
    except BaseException:  # interrupted: stop the searches this script started
        for search in running.values():
            search.process.kill()
            search.process.wait()
        raise


def trial_timeline(search):
    """The trials of a finished search in the order they ended, with times, reward and costs."""
    from tfnas.report.runs import load_run

    run = load_run(search.out)
    rows = []
    for trial in run.trials:
        path = os.path.join(search.out, f"trial_{trial.trial_id}", "trial.json")
        end = os.path.getmtime(path) - search.started if trial.status in ENDED else None
        seconds = trial.metrics.get("trial_seconds")
        seen = search.ended_seen.get(trial.trial_id, {})
        rows.append(
            {
                "trial_id": trial.trial_id,
                "status": trial.status,
                "reward": trial.score if trial.completed else None,
                "end_s": end,
                "start_s": None if end is None or seconds is None else end - seconds,
                "cpu_s": seen.get("cpu_s"),
                "first_seen_s": search.trials_seen.get(trial.trial_id, {}).get("first_seen_s"),
                "trial_seconds": seconds,
                "madds": trial.metrics.get("madds"),
                "params": trial.metrics.get("params"),
                "genotype": trial.arch,
                "message": (trial.message or "").strip().splitlines()[-1] if trial.message else None,
            }
        )
    rows.sort(key=lambda r: (r["end_s"] is None, r["end_s"] or 0.0))
    best = None
    for row in rows:
        if row["reward"] is not None and (best is None or row["reward"] > best):
            best = row["reward"]
        row["best_so_far"] = best
    return run, rows


def supernet_timeline(search):
    """The one-shot supernet's epochs: checkpoint history seconds, and when the polls saw each commit."""
    path = os.path.join(search.out, SUPERNET_STATE)
    state = read_json(path)
    if state is None:
        return None
    history = state.get("history", [])
    end = os.path.getmtime(path) - search.started
    total = sum(h["seconds"] for h in history)
    return {
        "epochs": [
            {
                "epoch": h["epoch"],
                "seconds": h["seconds"],
                "seen_s": search.epochs_seen.get(h["epoch"], {}).get("seen_s"),
                "cpu_s": search.epochs_seen.get(h["epoch"], {}).get("cpu_s"),
                "derived_gflops": h.get("derived_gflops"),
            }
            for h in history
        ],
        "seconds": total,
        "end_s": end,
        "start_s": end - total,
    }


def best_row(rows):
    done = [r for r in rows if r["reward"] is not None]
    return max(done, key=lambda r: r["reward"]) if done else None


def proxy_settings(run):
    """What run.json records of the proxy task (`settings`) and of the stem the trials start from."""
    return {
        **(run.run.get("settings") or {}),
        "encoder": run.run.get("encoder"),
        "teacher": run.run.get("teacher"),
    }


def differences(a, b):
    """The proxy settings the two searches' run.json files disagree on: {name: [one-shot, PPO]}."""
    return {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


def summarize(oneshot, oneshot_rows, ppo, ppo_rows, supernet):
    best_os, best_ppo = best_row(oneshot_rows), best_row(ppo_rows)
    ended_os = [r for r in oneshot_rows if r["end_s"] is not None]
    t_os = max((r["end_s"] for r in ended_os), default=None)
    t_os_cpu = max((r["cpu_s"] for r in ended_os if r["cpu_s"] is not None), default=None)
    s = best_os["reward"] if best_os else None
    reached = None
    if s is not None:
        reached = next((r for r in ppo_rows if r["best_so_far"] is not None and r["best_so_far"] >= s), None)

    def best_before(key, limit):
        if limit is None:
            return None
        found = [
            r["reward"]
            for r in ppo_rows
            if r["reward"] is not None and r[key] is not None and r[key] <= limit
        ]
        return max(found) if found else None

    return {
        "oneshot": {
            "best_reward": s,
            "best_trial": best_os and best_os["trial_id"],
            "best_madds": best_os and best_os["madds"],
            "best_params": best_os and best_os["params"],
            "T_os_wall_s": t_os,
            "T_os_cpu_s": t_os_cpu,
            "supernet_seconds": supernet and supernet["seconds"],
            "supernet_end_s": supernet and supernet["end_s"],
            "first_trial_seen_s": min(
                (v["first_seen_s"] for v in oneshot.trials_seen.values()), default=None
            ),
            "setup_before_supernet_s": supernet and supernet["start_s"],
            "trials": len(oneshot_rows),
            "failed": sum(r["status"] == "FAILED" for r in oneshot_rows),
            "process_wall_s": oneshot.wall,
            "process_cpu_s": oneshot.cpu_total,
            "exit": oneshot.returncode,
        },
        "ppo": {
            "best_reward": best_ppo and best_ppo["reward"],
            "best_trial": best_ppo and best_ppo["trial_id"],
            "best_madds": best_ppo and best_ppo["madds"],
            "best_params": best_ppo and best_ppo["params"],
            "best_so_far": [
                {
                    "trial_id": r["trial_id"],
                    "end_s": r["end_s"],
                    "cpu_s": r["cpu_s"],
                    "best": r["best_so_far"],
                }
                for r in ppo_rows
            ],
            "reaches_S_at_wall_s": reached and reached["end_s"],
            "reaches_S_at_cpu_s": reached and reached["cpu_s"],
            "reaches_S_at_trial": (ppo_rows.index(reached) + 1) if reached else None,
            "not_reached": None if reached or s is None else f"not reached within {len(ppo_rows)} trials",
            "best_at_T_os_wall": best_before("end_s", t_os),
            "best_at_T_os_cpu": best_before("cpu_s", t_os_cpu),
            "first_trial_seen_s": min((v["first_seen_s"] for v in ppo.trials_seen.values()), default=None),
            "trials": len(ppo_rows),
            "failed": sum(r["status"] == "FAILED" for r in ppo_rows),
            "process_wall_s": ppo.wall,
            "process_cpu_s": ppo.cpu_total,
            "exit": ppo.returncode,
        },
        "degenerate": None
        if not s == 0
        else "the one-shot's best reward is 0: any completed PPO trial reaches it",
    }


def score_architecture(values_json, search_argv):
    """Runs `tfnas search search_argv` with an Oracle that proposes only the architecture given.

    The search's own data loading, warm-up and proxy task score it (one trial), so it is
    scored exactly as a trial of the search `search_argv` describes would be.

    Args:
        values_json: str, JSON of the architecture's decision values.
        search_argv: list of str, `tfnas search` arguments (`--trials` is ignored: one trial).
    """
    import keras_tuner

    import tfnas.tuners
    from tfnas.cli import main as tfnas_main

    values = json.loads(values_json)

    def fixed_oracle(name, max_trials, seed=0):
        hp = keras_tuner.HyperParameters()
        for key, value in values.items():
            hp.Fixed(key, value)
        return keras_tuner.oracles.RandomSearchOracle(
            objective=keras_tuner.Objective("reward", "max"),
            max_trials=1,
            hyperparameters=hp,
            tune_new_entries=False,
            allow_new_entries=False,
            seed=seed,
        )

    tfnas.tuners.make_oracle = fixed_oracle  # read by `tfnas search` when it makes its Oracle
    sys.exit(tfnas_main(search_argv))


def run_control(oneshot_rows, ppo, workdir, cores):
    """Scores the one-shot's best architecture in the PPO search's setting (module docstring)."""
    best = best_row(oneshot_rows)
    if best is None:
        return None
    from tfnas.report.runs import load_run

    (trial,) = [
        t for t in load_run(os.path.join(workdir, "oneshot")).trials if t.trial_id == best["trial_id"]
    ]
    out = os.path.join(workdir, "control")
    argv = list(ppo.argv)
    argv[argv.index("--out") + 1] = out
    command = ["taskset", "-c", cores, sys.executable, os.path.abspath(__file__), "--score-architecture"]
    command += [json.dumps(trial.values), "--"] + argv
    started = time.time()
    with open(out + ".log", "w") as log:
        code = subprocess.call(command, stdout=log, stderr=subprocess.STDOUT)
    if code != 0:
        return {"exit": code, "log": out + ".log"}
    (scored,) = load_run(out).trials
    return {
        "what": "the one-shot's best architecture scored in the PPO search's setting (its warmed-up stem, fresh weights)",
        "trial_values": trial.values,
        "reward": scored.metrics.get("reward"),
        "stage1_reward": scored.metrics.get("stage1_reward"),
        "wall_s": time.time() - started,
        "exit": code,
    }


def fmt(value, spec=".0f", missing="-"):
    return missing if value is None else format(value, spec)


def print_table(summary):
    o, p = summary["oneshot"], summary["ppo"]
    print()
    print(
        f"{'search':8} {'best reward':>11} {'madds (M)':>9} {'params (K)':>10} {'wall s':>7} {'CPU s':>7} trials"
    )
    for name, r in (("one-shot", o), ("PPO", p)):
        print(
            f"{name:8} {fmt(r['best_reward'], '.4f'):>11} {fmt(r['best_madds'] and r['best_madds'] / 1e6, '.2f'):>9} "
            f"{fmt(r['best_params'] and r['best_params'] / 1e3, '.1f'):>10} {fmt(r['process_wall_s']):>7} "
            f"{fmt(r['process_cpu_s']):>7} {r['trials']} ({r['failed']} failed)"
        )
    print(
        f"one-shot: S = {fmt(o['best_reward'], '.4f')} at T_os = {fmt(o['T_os_wall_s'])} s wall "
        f"({fmt(o['T_os_cpu_s'])} s CPU; supernet {fmt(o['supernet_seconds'])} s)"
    )
    if p["not_reached"]:
        reach = p["not_reached"]
    else:
        reach = (
            f"at {fmt(p['reaches_S_at_wall_s'])} s wall ({fmt(p['reaches_S_at_cpu_s'])} s CPU), "
            f"trial {p['reaches_S_at_trial']} in end order"
        )
    print(
        f"PPO: best >= S {reach}; best at T_os {fmt(p['best_at_T_os_wall'], '.4f')} (wall), "
        f"{fmt(p['best_at_T_os_cpu'], '.4f')} (CPU)"
    )
    if summary["degenerate"]:
        print(f"note: {summary['degenerate']}")


def main(argv=None):
    raw = list(sys.argv[1:] if argv is None else argv)
    if raw[:1] == ["--score-architecture"]:  # the control's child: values, "--", tfnas search argv
        return score_architecture(raw[1], raw[3:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="a 2x3 fabric, 32 scenes at 32 px, 1 epoch each, 2+2 trials"
    )
    parser.add_argument("--task", default="depth", choices=TASKS)
    parser.add_argument("--rows", type=int, default=3)
    parser.add_argument("--columns", type=int, default=4)
    parser.add_argument("--eel-columns", default="2")
    parser.add_argument("--width", type=int, default=8)
    parser.add_argument("--stem-channels", type=int, default=16)
    parser.add_argument("--stem-blocks", type=int, default=1)
    parser.add_argument("--size", type=int, default=64, help="image side")
    parser.add_argument("--scenes", type=int, default=256)
    parser.add_argument("--batch", type=int, default=8, help="proxy and supernet batch size")
    parser.add_argument("--stage1-epochs", type=int, default=5)
    parser.add_argument("--stage2-epochs", type=int, default=1)
    parser.add_argument("--search-epochs", type=int, default=8, help="one-shot supernet epochs")
    parser.add_argument("--oneshot-trials", type=int, default=3, help="derived architectures scored")
    parser.add_argument("--ppo-trials", type=int, default=12)
    parser.add_argument("--warmup-epochs", type=int, default=3, help="PPO's stem warm-up")
    parser.add_argument(
        "--aux-weight", type=float, default=1.0, help="early exits' loss weight, both searches"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--teacher",
        default="none",
        help="both searches' distillation teacher (none: the one-shot's has none, as it warms nothing up)",
    )
    parser.add_argument("--cores-a", default="0", help="taskset cores of the one-shot search")
    parser.add_argument("--cores-b", default="1", help="taskset cores of the PPO search")
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between looks at the search folders")
    parser.add_argument(
        "--workdir", default=None, help="where the two search folders go (default: a new temp folder)"
    )
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    parser.add_argument(
        "--no-control",
        dest="control",
        action="store_false",
        help="skip scoring the one-shot's best architecture in the PPO search's setting",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.rows, args.columns, args.eel_columns, args.width = 2, 3, "2", 4
        args.stem_channels, args.stem_blocks, args.size, args.scenes, args.batch = 4, 1, 32, 32, 4
        args.stage1_epochs, args.stage2_epochs, args.search_epochs, args.warmup_epochs = 1, 1, 1, 1
        args.oneshot_trials, args.ppo_trials = 2, 2
    cores = sorted({int(c) for spec in (args.cores_a, args.cores_b) for c in _cpu_list(spec)})
    # this script (polls, then reading the results) stays on the children's cores
    os.sched_setaffinity(0, cores)
    workdir = os.path.abspath(args.workdir or tempfile.mkdtemp(prefix="tfnas-oneshot-vs-ppo-"))
    outs = {name: os.path.join(workdir, name) for name in ("oneshot", "ppo")}
    used = [out for out in outs.values() if os.path.exists(out) and os.listdir(out)]
    if used:
        parser.error(f"--workdir {workdir} already holds a search ({', '.join(used)}); pick a new one")
    os.makedirs(workdir, exist_ok=True)
    oneshot = Search("oneshot", outs["oneshot"], oneshot_argv(outs["oneshot"], args), args.cores_a)
    ppo = Search("ppo", outs["ppo"], ppo_argv(outs["ppo"], args), args.cores_b)
    run_both([oneshot, ppo], args.poll)
    failed = [s.name for s in (oneshot, ppo) if s.returncode != 0]
    if failed:
        for s in (oneshot, ppo):
            if s.returncode != 0:
                with open(s.log_path) as f:
                    print(f"--- {s.name}: {s.log_path} (last lines) ---\n" + "".join(f.readlines()[-15:]))
        sys.exit(f"search(es) failed: {', '.join(failed)}; logs under {workdir}")
    os_run, oneshot_rows = trial_timeline(oneshot)
    ppo_run, ppo_rows = trial_timeline(ppo)
    supernet = supernet_timeline(oneshot)
    summary = summarize(oneshot, oneshot_rows, ppo, ppo_rows, supernet)
    if args.control:
        summary["control"] = run_control(oneshot_rows, ppo, workdir, args.cores_a)
    record = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(["bench_oneshot_vs_ppo.py"] + list(argv if argv is not None else sys.argv[1:])),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "cores": {"oneshot": args.cores_a, "ppo": args.cores_b},
        "settings": {k: v for k, v in vars(args).items() if k not in ("output", "workdir")},
        "workdir": workdir,
        "argv": {"oneshot": ["tfnas"] + oneshot.argv, "ppo": ["tfnas"] + ppo.argv},
        "proxy_settings": {"oneshot": proxy_settings(os_run), "ppo": proxy_settings(ppo_run)},
        "proxy_differences": differences(proxy_settings(os_run), proxy_settings(ppo_run)),
        "timelines": {
            "oneshot": {"supernet": supernet, "trials": oneshot_rows},
            "ppo": {"trials": ppo_rows},
        },
        "summary": summary,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(record, f, indent=1)
    print_table(summary)
    print(f"proxy settings that differ (one-shot, PPO): {record['proxy_differences']}")
    control = summary.get("control")
    if control:
        print(
            f"control: the one-shot's best architecture in the PPO search's setting: reward {control.get('reward')}"
        )
    print(f"wrote {args.output}; search folders under {workdir}")


def _cpu_list(spec):
    """The cores of a taskset list such as '0', '0,1' or '0-3'."""
    found = []
    for part in str(spec).split(","):
        low, _, high = part.partition("-")
        found += range(int(low), int(high or low) + 1)
    return found


if __name__ == "__main__":
    main()
