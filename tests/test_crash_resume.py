"""Crash guarantees of `tfnas search --resume`: killed with SIGKILL at chosen points, every trial ends done once.

The search runs as a subprocess (`python -m tfnas.cli search ...`, tiny settings). A
test-only `sitecustomize.py`, put on the subprocess's PYTHONPATH, wraps one function of
Keras, keras-tuner, numpy or tfnas and sends the process SIGKILL on the n-th call, so each
kill lands at a known point with no hook in product code:

- `cache`: while the feature cache is written (the second `.npy` file is being opened: one
  file written, no `meta.json`);
- `fit`: in the middle of a trial (the start of the second trial's stage-1 `fit`);
- `save`: during a weights save (the trial's `model.weights.h5` half written);
- `recorded`: right after a trial's `trial.json` says COMPLETED, before `oracle.json` is
  saved (keras-tuner would queue that trial again).

The same wrapper appends `start <id>` / `end <id>` to a log on each `NASTuner.run_trial`,
so the test can check that no trial recorded as COMPLETED is ever started again. The last
run (no kill) has no new trial to run; it must start none and end with the results table.
"""

import glob
import json
import os
import subprocess
import sys
import textwrap

import h5py
import pytest

from tfnas import pretrained
from tfnas.search_dir import SearchDir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
#: Trial 0 completes in the `fit` run; trial 1 is cut by the `fit`, `save` and `recorded`
#: kills. A third trial would only add a training to the last run: that run is checked
#: without it, since keras-tuner hands a reloaded Oracle's ongoing trials out again before
#: it stops at max_trials, so a trial the `recorded` kill left "ongoing" would be re-run.
TRIALS = 2

SITECUSTOMIZE = textwrap.dedent('''
    """Test-only: SIGKILL this process on the n-th call of a chosen function (TFNAS_KILL_AT)."""
    import os
    import signal

    def _install():
        log_path = os.environ["TFNAS_TRIAL_LOG"]
        target, _, nth = os.environ.get("TFNAS_KILL_AT", "none:0").partition(":")
        nth, calls = int(nth), [0]

        def reached():
            calls[0] += 1
            return calls[0] == nth

        def die(where):
            with open(log_path, "a") as f:
                f.write(f"killed {where}\\n")
            os.kill(os.getpid(), signal.SIGKILL)

        import keras
        import keras_tuner
        import numpy as np
        from tfnas.tuners.nas_tuner import NASTuner

        run_trial = NASTuner.run_trial

        def logged_run_trial(self, trial, *args, **kwargs):
            with open(log_path, "a") as f:
                f.write(f"start {trial.trial_id}\\n")
            result = run_trial(self, trial, *args, **kwargs)
            with open(log_path, "a") as f:
                f.write(f"end {trial.trial_id}\\n")
            return result

        NASTuner.run_trial = logged_run_trial
        if target == "cache":
            open_memmap = np.lib.format.open_memmap

            def killing_open_memmap(*args, **kwargs):
                if reached():
                    die("cache")
                return open_memmap(*args, **kwargs)

            np.lib.format.open_memmap = killing_open_memmap
        elif target == "fit":
            fit = keras.Model.fit

            def killing_fit(self, *args, **kwargs):
                if reached():
                    die("fit")
                return fit(self, *args, **kwargs)

            keras.Model.fit = killing_fit
        elif target == "save":
            save_weights = keras.Model.save_weights

            def killing_save_weights(self, filepath, *args, **kwargs):
                if reached():
                    with open(filepath, "wb") as f:  # what a save cut short leaves
                        f.write(b"\\x89HDF\\r\\n\\x1a\\n" + b"\\0" * 4096)
                    die("save")
                return save_weights(self, filepath, *args, **kwargs)

            keras.Model.save_weights = killing_save_weights
        elif target == "recorded":
            oracle_cls = keras_tuner.Oracle
            save_trial = oracle_cls._save_trial

            def killing_save_trial(self, trial):
                save_trial(self, trial)
                if trial.status == "COMPLETED" and reached():
                    die("recorded")

            oracle_cls._save_trial = killing_save_trial

    if os.environ.get("TFNAS_TRIAL_LOG"):
        _install()
''')


def _trials(out):
    """Trial id -> status, from the trial files a running search has written so far."""
    return {trial_id: trial["status"] for trial_id, trial in SearchDir(out).trials(skipped=[]).items()}


def _search(tmp_path, out, kill_at, resume):
    """Runs `tfnas search` with a kill point; returns (returncode, output)."""
    command = [sys.executable, "-m", "tfnas.cli", "search", "--out", out, "--verbose", "0"]
    if resume:
        command.append("--resume")
    else:
        command += [
            "--space",
            "auxcell",
            "--oracle",
            "random",
            "--trials",
            str(TRIALS),
            "--image-size",
            "32",
            "--scenes",
            "20",
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
            "--cache-images",
            "16",
            "--batch-size",
            "8",
            "--latency-runs",
            "0",
            "--no-termination",
        ]
    env = {
        **os.environ,
        "TF_CPP_MIN_LOG_LEVEL": "3",
        "TFNAS_KILL_AT": kill_at,
        "TFNAS_TRIAL_LOG": str(tmp_path / "trials.log"),
        "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    return done.returncode, done.stdout + done.stderr


@pytest.mark.slow
def test_search_killed_at_each_point_resumes_and_runs_every_trial_once(tmp_path):
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "sitecustomize.py").write_text(SITECUSTOMIZE)
    out = str(tmp_path / "run")
    log = tmp_path / "trials.log"
    # (kill point, the n-th call that is killed); each run after the first resumes.
    kills = [("cache", 2), ("fit", 2), ("save", 1), ("recorded", 1)]
    completed = set()  # trials whose trial.json said COMPLETED when a run began
    cache_written = None  # the feature cache's meta.json, once a run has finished writing it
    for step, (target, nth) in enumerate(kills + [("none", 0)]):
        log.write_text((log.read_text() if log.exists() else "") + "--- run\n")
        returncode, output = _search(tmp_path, out, f"{target}:{nth}", resume=step > 0)
        lines = log.read_text().split("--- run\n")[-1].splitlines()
        if target == "none":
            assert returncode == 0, output[-3000:]
        else:
            assert returncode == -9, f"{target}: expected SIGKILL, got {returncode}\n{output[-3000:]}"
            assert lines[-1] == f"killed {target}", lines
        started = {line.split()[1] for line in lines if line.startswith("start ")}
        assert not started & completed, (
            f"run {step} ({target}) ran completed trials again: {started & completed}"
        )
        completed = {t for t, s in _trials(out).items() if s == "COMPLETED"}
        metas = glob.glob(os.path.join(out, "cache", "train-*", "meta.json"))
        if cache_written is None and metas:
            cache_written = (metas, os.stat(metas[0]).st_mtime_ns)
    # The cache cut short by the first kill was computed once by the next run, then reused.
    assert cache_written is not None and len(cache_written[0]) == 1
    assert os.stat(cache_written[0][0]).st_mtime_ns == cache_written[1]
    # `--resume` alone restored every saved argument, and the search ended with its table.
    assert f"best {TRIALS} of {TRIALS} trial(s) (0 failed)" in output and "genotype" in output, output[-3000:]
    run = json.load(open(os.path.join(out, "run.json")))
    assert run["space"] == "auxcell" and run["space_config"]["width"] == 8 and run["cli"]["trials"] == TRIALS
    # Built-in data at width 0.35: the shipped encoder and teacher (tfnas.pretrained), chosen
    # again the same way by every resume (run.json keeps the flag as given, not the file).
    assert run["encoder"] == f"pretrained ({pretrained.digits_encoder_weights(0.35)})"
    assert run["teacher"] == "Keras model 'digits_teacher_01'" and run["distillation"] is True
    assert run["cli"]["encoder_weights"] is None and not os.path.exists(
        os.path.join(out, "warmup.weights.h5")
    )
    states = _trials(out)
    assert sorted(states, key=int) == [str(i) for i in range(TRIALS)]
    assert set(states.values()) == {"COMPLETED"}
    oracle = json.load(open(os.path.join(out, "oracle.json")))
    assert oracle["ongoing_trials"] == {}
    assert sorted(oracle["end_order"], key=int) == [str(i) for i in range(TRIALS)]
    for trial_id in states:  # every trial's weights are a whole HDF5 file (the cut one was rewritten)
        with h5py.File(os.path.join(out, f"trial_{trial_id}", "model.weights.h5"), "r") as f:
            assert len(f.keys()) > 0
