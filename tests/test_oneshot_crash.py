"""Crash guarantees of the one-shot search from the command line: `tfnas search --oracle gumbel` killed with SIGKILL, then `--resume`.

The search (a 2-row, 2-column fabric of width 4 without early exits, six 32x32 figure
scenes, two supernet epochs, two derived architectures scored as trials) runs as a
process of its own (`tfnas.cli.main`, as `python -m tfnas.cli search ...` runs it; forked
from a process that has imported TensorFlow and tfnas once, `tests/_kill.py`). As in
`test_crash_resume.py`, a test-only wrapper (`tests._kill.install`, installed in that
process before the command runs) wraps functions of tfnas and Keras, with no hook in product code:
it logs every supernet checkpoint (`epoch <n>`, after `Checkpoint.save` returns) and every
trial (`start <id>` / `end <id>` around `NASTuner.run_trial`), and sends the process
SIGKILL at a chosen point:

- `supernet:n`: at the n-th supernet update after the first epoch's checkpoint, so in the
  middle of the second epoch;
- `fit:n`: at the n-th `keras.Model.fit`, the stage-1 training of a trial (the supernet
  trains without `fit`, and no warm-up runs).

The search is killed during the supernet training, resumed and killed during the second
trial, then resumed to its end and once more (a no-op), these two in this process through
`tfnas.cli.main`, with no kill. It must end with the supernet
of an uninterrupted search with the same seed (trained here, in this process), the same
derived architectures, every epoch trained and every trial run to its end exactly once.
"""

import json
import os

import numpy as np
import pytest

from tests._cli import run_cli
from tests._kill import Runner
from tfnas.oneshot import SearchSettings
from tfnas.search_dir import SearchDir
from tfnas.spaces import get_space
from tfnas.tasks import get_task
from tfnas.tuners.oneshot import ONESHOT_DIR, GumbelOracle, OneShotTuner

SCENES, IMAGE_SIZE, EPOCHS, TRIALS, BATCH = 6, 32, 2, 2, 2
ARGS = [
    "--space", "fabric", "--task", "pose-multi", "--oracle", "gumbel", "--trials", str(TRIALS),
    "--scenes", str(SCENES), "--image-size", str(IMAGE_SIZE), "--width", "4",
    "--rows", "2", "--columns", "2", "--eel-columns", "none", "--stem-channels", "4", "--stem-blocks", "1",
    "--search-epochs", str(EPOCHS), "--search-batch-size", str(BATCH),
    "--stage1-epochs", "1", "--stage2-epochs", "0", "--batch-size", "4", "--cache-images", "4",
    "--latency-runs", "0", "--no-termination", "--seed", "0",
]  # fmt: skip


def _files(out):
    """Path -> modification time of every file in the search directory but the ones every run rewrites."""
    rewritten = {"run.json", "oracle.json", "tuner0.json", "prepare.lock"}  # state files save() rewrites
    found = {}
    for folder, _, names in os.walk(out):
        for name in names:
            path = os.path.join(folder, name)
            if name not in rewritten and "tensorboard" not in path:
                found[os.path.relpath(path, out)] = os.stat(path).st_mtime_ns
    return found


def _uninterrupted(tmp_path):
    """An uninterrupted search's supernet with the CLI's space, data and seed: `(space, result, candidates)`."""
    space = get_space("fabric")(
        task=get_task("pose-multi"),
        width=4,
        rows=2,
        columns=2,
        eel_columns=(),
        stem_channels=4,
        stem_blocks=1,
    )
    tuner = OneShotTuner(
        space,
        max_trials=TRIALS,
        search_settings=SearchSettings(epochs=EPOCHS),
        search_batch_size=BATCH,
        seed=0,
        verbose=0,
        directory=str(tmp_path),
        project_name="uninterrupted",
    )
    train = space.task.builtin_data("train", image_size=IMAGE_SIZE, num_samples=SCENES, seed=0)
    meta_train, _ = tuner.split_data(train)
    result = tuner.supernet_search.run(meta_train)
    candidates = GumbelOracle(max_trials=TRIALS, seed=0).set_architecture(
        space, result["architecture"], result["temperature"]
    )
    return space, result, candidates


@pytest.mark.slow
def test_gumbel_search_killed_in_supernet_and_trial_resumes_to_the_uninterrupted_result(tmp_path):
    out = str(tmp_path / "run")
    state_file = os.path.join(out, ONESHOT_DIR, "checkpoint", "state.json")
    with Runner(tmp_path) as runner:
        # 1. Killed in the middle of the second supernet epoch: the first epoch is checkpointed.
        #    Meanwhile (tracing is mostly one core's work) the uninterrupted reference trains here.
        first_run = runner.start(["search", "--verbose", "0", "--out", out, *ARGS], "supernet:3")
        try:
            space, result, candidates = _uninterrupted(tmp_path)
        finally:
            returncode, output, lines = runner.finish(first_run)
        assert returncode == -9, f"expected SIGKILL, got {returncode}\n{output[-3000:]}"
        assert lines == ["epoch 0", "killed supernet"], lines
        assert SearchDir(out).read_run()["space_config"] == space.config()  # the reference's space
        with open(state_file) as f:
            first = json.load(f)
        assert first["epoch"] == 0 and len(first["history"]) == 1

        # 2. Resumed from that checkpoint (the second epoch again, not the first), killed in the
        #    second trial's stage 1.
        returncode, output, lines = runner.run(
            ["search", "--verbose", "0", "--out", out, "--resume"], "fit:2"
        )
    assert returncode == -9, f"expected SIGKILL, got {returncode}\n{output[-3000:]}"
    assert lines == ["epoch 1", "start 0", "end 0", "start 1", "killed fit"], lines
    with open(state_file) as f:
        state = json.load(f)
    assert state["epoch"] == EPOCHS - 1 and state["history"][0] == first["history"][0]

    # 3. Resumed to the end (here, through the same `tfnas.cli.main`): only the interrupted
    #    trial runs again; no supernet epoch, and the completed trial is left as it was.
    before = _files(out)
    assert run_cli(["search", "--out", out, "--resume", "--verbose", "0"]) == 0
    after = _files(out)
    assert {path: after[path] for path in before if not path.startswith("trial_1")} == {
        path: time for path, time in before.items() if not path.startswith("trial_1")
    }
    weights = os.path.join("trial_1", "model.weights.h5")  # the interrupted trial's, now saved
    assert weights not in before and weights in after

    # 4. Resuming a finished search is a no-op: no epoch, no trial, no file rewritten.
    oracle_path = os.path.join(out, "oracle.json")
    with open(oracle_path) as f:
        oracle = json.load(f)
    assert run_cli(["search", "--out", out, "--resume", "--verbose", "0"]) == 0
    assert _files(out) == after
    with open(oracle_path) as f:
        again = json.load(f)
    assert again["end_order"] == oracle["end_order"] and again["gumbel"] == oracle["gumbel"]

    # The same supernet, candidates and trials as the uninterrupted search with the same seed
    # (another process: equal up to float rounding of the threads' reductions).
    for name, value in result["architecture"].items():
        np.testing.assert_allclose(state["settings"]["architecture"][name], value, rtol=1e-5, atol=1e-7)
    assert [h["loss"] for h in state["history"]] == pytest.approx([h["loss"] for h in result["history"]])
    assert oracle["gumbel"]["candidates"] == candidates and len(candidates) == TRIALS
    trials = SearchDir(out).trials()
    assert sorted(trials, key=int) == [str(i) for i in range(TRIALS)]
    assert [trials[str(i)]["status"] for i in range(TRIALS)] == ["COMPLETED"] * TRIALS
    assert [trials[str(i)]["hyperparameters"]["values"] for i in range(TRIALS)] == [
        c["values"] for c in candidates
    ]
    assert sorted(oracle["end_order"], key=int) == [str(i) for i in range(TRIALS)]
