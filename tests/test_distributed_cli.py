"""A distributed NASTuner search from the command line: a chief and workers, real trials.

`tfnas search --workers 2` starts the chief and two workers (keras-tuner's chief/worker
mode) on this machine. Checked: a worker killed mid-trial is restarted and its trial
counted once, every trial runs once, the feature cache is computed once and shared,
`tfnas export` works on the directory; a chief killed while its workers run trials and
restarted with `--resume` loses and repeats no trial; a worker without a chief gives up in
bounded time.
"""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tfnas.distributed import free_port
from tfnas.search_dir import SearchDir

#: Stage 2 and the warm-up are off: what these tests check (who runs which trial, the shared
#: cache, restarts) does not depend on them, and each costs every process a trace per trial.
TINY = [
    "--space",
    "auxcell",
    "--oracle",
    "random",
    "--scenes",
    "24",
    "--image-size",
    "32",
    "--digits",
    "01",
    "--width",
    "8",
    "--alpha",
    "0.35",
    "--stage1-epochs",
    "1",
    "--stage2-epochs",
    "0",
    "--warmup-epochs",
    "0",
    "--latency-runs",
    "0",
    "--no-termination",
    "--verbose",
    "2",
    "--batch-size",
    "4",
]


def _trials(out):
    """The trial files a running search has written so far (half-written ones left out)."""
    return SearchDir(out).trials(skipped=[])


def _children(pid):
    """PIDs of the processes whose parent is `pid` (from /proc)."""
    kids = []
    for stat in glob.glob("/proc/[0-9]*/stat"):
        try:
            fields = open(stat).read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            kids.append(int(stat.split("/")[2]))
    return kids


def _tuner_id(pid):
    try:
        env = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")
    except OSError:
        return None
    for entry in env:
        if entry.startswith(b"KERASTUNER_TUNER_ID="):
            return entry.split(b"=", 1)[1].decode()
    return None


def _search(out, trials, log):
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tfnas.cli",
            "search",
            *TINY,
            "--trials",
            str(trials),
            "--workers",
            "2",
            "--out",
            out,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )


@pytest.mark.slow
def test_two_workers_share_one_cache_and_a_worker_killed_mid_trial_is_restarted(tmp_path):
    out = str(tmp_path / "run")
    with open(tmp_path / "log.txt", "w") as log:
        # Two trials: tuner0's (killed, then re-run by its restarted process) and tuner1's.
        launcher = _search(out, 2, log)
        killed = None
        deadline = time.monotonic() + 900
        while killed is None and time.monotonic() < deadline and launcher.poll() is None:
            time.sleep(0.5)
            running = [t for t in _trials(out).values() if t["status"] == "RUNNING"]
            if running:
                workers = {_tuner_id(pid): pid for pid in _children(launcher.pid)}
                if "tuner0" in workers:
                    time.sleep(2)  # inside the trial
                    os.kill(workers["tuner0"], signal.SIGKILL)
                    killed = workers["tuner0"]
        assert killed is not None, "no trial started"
        assert launcher.wait(timeout=1200) == 0
    text = (tmp_path / "log.txt").read_text()
    assert "worker tuner0 ended with exit status -9; restarting it" in text
    trials = _trials(out)
    assert sorted(trials) == ["0", "1"]
    assert all(t["status"] == "COMPLETED" for t in trials.values()), text[-3000:]
    # One worker computed the feature cache; the other, and the restarted one, reused it.
    assert text.count("feature cache: computing encoder outputs") == 2, text[-3000:]  # train + val
    assert text.count("feature cache: reusing") >= 2
    assert len(glob.glob(os.path.join(out, "cache", "train-*"))) == 1
    run = json.load(open(os.path.join(out, "run.json")))
    assert run["oracle"] == "NearBestRandomOracle" and run["cached_images"] > 0
    ran = {
        line.split()[2] for line in text.splitlines() if line.startswith("tfnas: worker") and "done" in line
    }
    assert ran == {"tuner0", "tuner1"}
    export = subprocess.run(
        [
            sys.executable,
            "-m",
            "tfnas.cli",
            "export",
            out,
            "--trial",
            "best",
            "--base",
            str(tmp_path / "exports"),
        ],
        capture_output=True,
        text=True,
    )
    assert export.returncode == 0, export.stderr
    assert os.path.exists(tmp_path / "exports" / "run" / "1" / "saved_model.pb")


#: Trials of the chief-restart test: one per worker, both running when the chief is killed.
#: Enough for what it checks: the first worker to finish then asks the new chief for a
#: trial, and a chief that put the running trials in its retry queue would hand it the
#: other worker's (keras-tuner serves the retry queue before it stops at max_trials).
CHIEF_RESTART_TRIALS = 2


def _process(out, tuner_id, port, log, *extra):
    """One process of a distributed search started the keras-tuner way (no `--workers`)."""
    env = dict(
        os.environ,
        KERASTUNER_TUNER_ID=tuner_id,
        KERASTUNER_ORACLE_IP="127.0.0.1",
        KERASTUNER_ORACLE_PORT=str(port),
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    command = [
        sys.executable,
        "-m",
        "tfnas.cli",
        "search",
        *TINY,
        "--trials",
        str(CHIEF_RESTART_TRIALS),
        "--out",
        out,
    ]
    return subprocess.Popen(command + list(extra), stdout=log, stderr=subprocess.STDOUT, env=env)


@pytest.mark.slow
def test_a_chief_restarted_with_resume_repeats_and_loses_no_trial(tmp_path):
    """The chief dies while both workers run a trial; a new chief with --resume takes over.

    Without handing the running trials back to their workers, the first worker to finish
    would be given the other's running trial from the retry queue and run it a second time.
    """
    out, port = str(tmp_path / "run"), free_port()
    logs = {name: open(tmp_path / f"{name}.txt", "w") for name in ("chief", "chief2", "tuner0", "tuner1")}
    try:
        chief = _process(out, "chief", port, logs["chief"])
        workers = [_process(out, t, port, logs[t], "--chief-timeout", "300") for t in ("tuner0", "tuner1")]
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline and chief.poll() is None:
            time.sleep(0.5)
            if sum(t["status"] == "RUNNING" for t in _trials(out).values()) == 2:
                break
        assert chief.poll() is None, "the chief ended before both workers ran a trial"
        chief.kill()
        chief.wait()
        time.sleep(3)
        chief = _process(out, "chief", port, logs["chief2"], "--resume")
        assert chief.wait(timeout=1200) == 0
        assert [w.wait(timeout=300) for w in workers] == [0, 0]
    finally:
        for proc in [chief, *workers]:
            if proc.poll() is None:
                proc.kill()
        for log in logs.values():
            log.close()
    text = "\n".join(f"--- {name}\n" + (tmp_path / f"{name}.txt").read_text()[-2000:] for name in logs)
    assert "Reloading Tuner" in (tmp_path / "chief2.txt").read_text(), text
    trials = _trials(out)
    ids = [str(i) for i in range(CHIEF_RESTART_TRIALS)]
    assert sorted(trials) == ids, text
    assert all(t["status"] == "COMPLETED" for t in trials.values()), text
    oracle = json.load(open(os.path.join(out, "oracle.json")))
    assert sorted(oracle["end_order"]) == ids, text  # each ended once
    assert oracle["run_times"] == dict.fromkeys(ids, 1), text  # each ran once


def test_a_worker_without_a_chief_gives_up_in_bounded_time(tmp_path):
    env = dict(
        os.environ,
        KERASTUNER_TUNER_ID="tuner0",
        KERASTUNER_ORACLE_IP="127.0.0.1",
        KERASTUNER_ORACLE_PORT=str(free_port()),
        TF_CPP_MIN_LOG_LEVEL="3",
    )
    start = time.monotonic()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tfnas.cli",
            "search",
            *TINY,
            "--trials",
            "1",
            "--chief-timeout",
            "2",
            "--out",
            str(tmp_path / "run"),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert result.returncode == 1
    assert "worker 'tuner0' cannot reach the chief at 127.0.0.1:" in result.stderr
    assert "within 2 s" in result.stderr and "Traceback" not in result.stderr
    assert time.monotonic() - start < 300  # TensorFlow's import, the data and 2 s; not an hour
