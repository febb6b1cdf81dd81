"""Crash guarantees of `tfnas search --resume`: killed with SIGKILL at chosen points, every trial ends done once.

The search runs as a process of its own (`tfnas.cli.main`, as `python -m tfnas.cli search
...` runs it, tiny settings; forked from a process that has imported TensorFlow and tfnas
once, `tests/_kill.py`). A test-only wrapper (`tests._kill.install`, installed in that
process before the command runs) wraps one function of Keras, keras-tuner, numpy or tfnas
and sends the process SIGKILL on the n-th call, so each kill lands at a known point with no
hook in product code:

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

import h5py
import pytest

from tests._kill import Runner
from tfnas import pretrained
from tfnas.search_dir import SearchDir

#: Trial 0 completes in the `fit` run; trial 1 is cut by the `fit`, `save` and `recorded`
#: kills. A third trial would only add a training to the last run: that run is checked
#: without it, since keras-tuner hands a reloaded Oracle's ongoing trials out again before
#: it stops at max_trials, so a trial the `recorded` kill left "ongoing" would be re-run.
TRIALS = 2


def _trials(out):
    """Trial id -> status, from the trial files a running search has written so far."""
    return {trial_id: trial["status"] for trial_id, trial in SearchDir(out).trials(skipped=[]).items()}


def _search(runner, out, kill_at, resume):
    """Runs `tfnas search` with a kill point; returns (returncode, output, the lines it logged)."""
    command = ["search", "--out", out, "--verbose", "0"]
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
    return runner.run(command, kill_at, timeout=1800)


@pytest.mark.slow
def test_search_killed_at_each_point_resumes_and_runs_every_trial_once(tmp_path):
    out = str(tmp_path / "run")
    # (kill point, the n-th call that is killed); each run after the first resumes.
    kills = [("cache", 2), ("fit", 2), ("save", 1), ("recorded", 1)]
    completed = set()  # trials whose trial.json said COMPLETED when a run began
    cache_written = None  # the feature cache's meta.json, once a run has finished writing it
    with Runner(tmp_path) as runner:
        for step, (target, nth) in enumerate(kills + [("none", 0)]):
            returncode, output, lines = _search(runner, out, f"{target}:{nth}", resume=step > 0)
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
