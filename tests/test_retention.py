"""Tests of tfnas.retention: exactly the best K trials (and running ones) keep their weights."""

import json
import os

import keras_tuner
import pytest

from tfnas import retention

WEIGHTS = "model.weights.h5"


def _search_dir(tmp_path, trials):
    """A search folder with keras-tuner trial.json files and a weight file per trial that has one.

    `trials`: list of (trial_id, status, score, has_weights).
    """
    for trial_id, status, score, has_weights in trials:
        folder = tmp_path / f"trial_{trial_id}"
        folder.mkdir()
        (folder / "trial.json").write_text(
            json.dumps({"trial_id": trial_id, "status": status, "score": score})
        )
        if has_weights:
            (folder / WEIGHTS).write_bytes(b"w" * (100 + int(trial_id)))
    return str(tmp_path)


TRIALS = [
    ("00", "COMPLETED", 0.30, True),
    ("01", "COMPLETED", 0.70, True),
    ("02", "FAILED", None, False),
    ("03", "COMPLETED", 0.50, True),
    ("04", "COMPLETED", 0.70, True),
    ("05", "COMPLETED", 0.10, True),
    ("06", "RUNNING", None, True),
]


def _with_weights(run_dir):
    return sorted(
        name[len("trial_") :]
        for name in os.listdir(run_dir)
        if os.path.exists(os.path.join(run_dir, name, WEIGHTS))
    )


def test_best_trial_ids_orders_by_score_then_trial_order():
    trials = [{"trial_id": t, "status": s, "score": v} for t, s, v, _ in TRIALS]
    # 01 and 04 tie at 0.70: the earlier trial first, as keras-tuner sorts.
    assert retention.best_trial_ids(trials, 3) == ["01", "04", "03"]
    assert retention.best_trial_ids(trials, 2, direction="min") == ["05", "00"]
    assert retention.best_trial_ids(trials, 0) == []


def test_prune_keeps_exactly_the_best_k_and_running_trials(tmp_path):
    run_dir = _search_dir(tmp_path, TRIALS)
    result = retention.prune_trial_weights(run_dir, keep_best=2, running_trial_ids=["06"])
    assert result["kept"] == ["01", "04", "06"]
    assert result["pruned"] == ["00", "03", "05"]
    assert result["freed_bytes"] == 100 + 103 + 105
    assert _with_weights(run_dir) == ["01", "04", "06"]
    marker = json.loads((tmp_path / "trial_03" / retention.MARKER).read_text())
    assert marker["keep_weights"] == 2 and marker["files"] == [WEIGHTS] and marker["bytes"] == 103
    # The failed trial had no weights: nothing to prune, no marker.
    assert not (tmp_path / "trial_02" / retention.MARKER).exists()
    # Pruning again changes nothing.
    again = retention.prune_trial_weights(run_dir, keep_best=2, running_trial_ids=["06"])
    assert again["pruned"] == [] and _with_weights(run_dir) == ["01", "04", "06"]


def test_prune_after_every_trial_ends_with_the_final_best_k(tmp_path):
    scores = [0.2, 0.9, 0.1, 0.5, 0.95, 0.3, 0.6, 0.05]
    done = []
    for i, score in enumerate(scores):
        trial_id = f"{i:02d}"
        folder = tmp_path / f"trial_{trial_id}"
        folder.mkdir()
        (folder / WEIGHTS).write_bytes(b"w")
        done.append({"trial_id": trial_id, "status": "COMPLETED", "score": score})
        retention.prune_trial_weights(str(tmp_path), 3, trials=done)
    assert _with_weights(str(tmp_path)) == ["01", "04", "06"]  # 0.9, 0.95, 0.6


def test_prune_accepts_keras_tuner_trials(tmp_path):
    run_dir = _search_dir(tmp_path, TRIALS)
    trials = []
    for trial_id, status, score, _ in TRIALS:
        trial = keras_tuner.engine.trial.Trial(
            keras_tuner.HyperParameters(), trial_id=trial_id, status=status
        )
        trial.score = score
        trials.append(trial)
    running = [trials[-1]]
    result = retention.prune_trial_weights(run_dir, 1, trials=trials, running_trial_ids=running)
    assert result["kept"] == ["01", "06"]
    assert _with_weights(run_dir) == ["01", "06"]


def test_pruned_message_names_the_setting_and_the_exportable_trials(tmp_path):
    run_dir = _search_dir(tmp_path, TRIALS)
    retention.prune_trial_weights(run_dir, keep_best=2, running_trial_ids=["06"])
    message = retention.pruned_message(run_dir, "03")
    assert message == (
        "trial 03's weights were pruned by --keep-weights 2 (only the best 2 "
        "trials keep theirs); export one of trials ['01', '04']"
    )
    # Trials that still have weights, or lost them for another reason, get no such message.
    assert retention.pruned_message(run_dir, "01") is None
    assert retention.pruned_message(run_dir, "02") is None


def test_negative_keep_is_refused(tmp_path):
    with pytest.raises(ValueError, match="keep_best=-1 must be 0 or more"):
        retention.prune_trial_weights(_search_dir(tmp_path, TRIALS), -1)
