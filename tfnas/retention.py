"""Retention of trial weights: keep the best K trials' weights so a long search's disk stays bounded.

Every trial of a search saves its training model's weights to `trial_<id>/model.weights.h5`
(see `tfnas.tuners.nas_tuner`), so disk grows linearly with the trials, as keras-tuner's
users report (keras-tuner #172, #288, #481). `prune_trial_weights` keeps the weights of the
best `keep_best` COMPLETED trials (by the objective, `reward` maximised) and of the trials
still running, and deletes the other trials' weight files. Each pruned trial folder gets a
small `weights_pruned.json` marker, so tools that need the weights (`tfnas export`,
`NASTuner.get_best_models`) can say why they are gone and which trials can be exported
instead (`pruned_message`).

The best K only get better as the search goes on, so a trial pruned once is never among the
best K later (with the same K): pruning after every trial keeps exactly the final best K.
The marker is written before the weights are deleted, so a search killed in between leaves
a marked trial whose weights may still be there (harmless: `pruned_message` checks the file),
never a trial whose weights vanished without a marker.

    >>> prune_trial_weights("runs/search", keep_best=3, trials=tuner.oracle.trials.values(),
    ...                     running_trial_ids=tuner.oracle.ongoing_trials.values())
"""

import datetime
import json
import os

from tfnas.io import atomic_write_json
from tfnas.search_dir import SearchDir

__all__ = [
    "MARKER",
    "WEIGHT_SUFFIX",
    "best_trial_ids",
    "kept_trial_ids",
    "prune_trial_weights",
    "pruned_message",
    "read_trials",
]

#: File written in a trial folder whose weights were deleted.
MARKER = "weights_pruned.json"
#: Files deleted by pruning: the Keras weight files of the trial folder.
WEIGHT_SUFFIX = ".weights.h5"
_COMPLETED = "COMPLETED"


def _field(trial, name):
    """`trial.<name>` for keras-tuner Trials, `trial[name]` for dicts read from trial.json."""
    return trial.get(name) if isinstance(trial, dict) else getattr(trial, name, None)


def _trial_dir(run_dir, trial_id):
    return SearchDir(run_dir).trial_dir(trial_id)


def _weight_files(run_dir, trial_id):
    folder = _trial_dir(run_dir, trial_id)
    if not os.path.isdir(folder):
        return []
    return sorted(os.path.join(folder, name) for name in os.listdir(folder) if name.endswith(WEIGHT_SUFFIX))


def read_trials(run_dir):
    """The trials of a search folder as dicts `{"trial_id", "status", "score"}`, from trial.json.

    A `trial.json` another process is writing (the chief of a distributed search) is left
    out; it is neither kept nor pruned this time.

    Args:
        run_dir: str, the search directory (keras-tuner's project dir).

    Returns:
        list of dicts, in trial folder order.
    """
    return [
        {"trial_id": trial_id, "status": info.get("status"), "score": info.get("score")}
        for trial_id, info in SearchDir(run_dir).trials(skipped=[]).items()
    ]


def best_trial_ids(trials, keep_best, direction="max"):
    """Ids of the best `keep_best` COMPLETED trials with a score, best first.

    Ties keep the earlier trial (the order of `trials`), as keras-tuner's sort does.

    Args:
        trials: iterable of keras-tuner `Trial`s or dicts with `trial_id`, `status`, `score`.
        keep_best: int >= 0.
        direction: `"max"` (the default, tfnas' `reward`) or `"min"`.

    Returns:
        list of str trial ids.

    Raises:
        ValueError: for a negative `keep_best` or an unknown direction.
    """
    if int(keep_best) < 0:
        raise ValueError(
            f"keep_best={keep_best!r} must be 0 or more (the number of trials whose weights are kept)"
        )
    if direction not in ("max", "min"):
        raise ValueError(f"direction={direction!r}; expected 'max' or 'min'")
    scored = [
        (float(_field(t, "score")), i, str(_field(t, "trial_id")))
        for i, t in enumerate(trials)
        if str(_field(t, "status")) == _COMPLETED and _field(t, "score") is not None
    ]
    sign = -1.0 if direction == "max" else 1.0
    scored.sort(key=lambda item: (sign * item[0], item[1]))
    return [trial_id for _, _, trial_id in scored[: int(keep_best)]]


def prune_trial_weights(run_dir, keep_best, trials=None, running_trial_ids=(), direction="max"):
    """Deletes the weight files of every trial but the best `keep_best` and the running ones.

    Trials that are neither among the best K COMPLETED trials nor running lose their
    `*.weights.h5` files; a `weights_pruned.json` marker is written in their folder first
    (see the module docstring). Trials without weight files (failed, or pruned before) are
    left alone, so calling this after every trial costs a directory listing per trial.

    Args:
        run_dir: str, the search directory.
        keep_best: int >= 0, how many of the best completed trials keep their weights.
        trials: iterable of keras-tuner `Trial`s (e.g. `tuner.oracle.trials.values()`) or
            dicts with `trial_id`, `status`, `score`; None reads the trial.json files.
        running_trial_ids: iterable of trial ids (or `Trial`s) that are running; their
            weights are kept whatever their status.
        direction: `"max"` or `"min"`, the objective's direction. Default `"max"`.

    Returns:
        dict `{"kept": [ids, best first, then running], "pruned": [ids pruned now],
        "freed_bytes": int}`.

    Raises:
        ValueError: for a negative `keep_best` or an unknown direction.
    """
    trials = read_trials(run_dir) if trials is None else list(trials)
    best = best_trial_ids(trials, keep_best, direction)
    running = [str(_field(t, "trial_id") if not isinstance(t, (str, int)) else t) for t in running_trial_ids]
    kept = best + [trial_id for trial_id in running if trial_id not in best]
    pruned, freed = [], 0
    for trial in trials:
        trial_id = str(_field(trial, "trial_id"))
        files = _weight_files(run_dir, trial_id)
        if trial_id in kept or not files:
            continue
        size = sum(os.path.getsize(path) for path in files)
        atomic_write_json(
            os.path.join(_trial_dir(run_dir, trial_id), MARKER),
            {
                "trial_id": trial_id,
                "keep_weights": int(keep_best),
                "score": _field(trial, "score"),
                "files": [os.path.basename(p) for p in files],
                "bytes": size,
                "kept_at_pruning": kept,
                "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            },
        )
        for path in files:
            os.remove(path)
        pruned.append(trial_id)
        freed += size
    return {"kept": kept, "pruned": pruned, "freed_bytes": freed}


def kept_trial_ids(run_dir, trials=None, direction="max"):
    """Ids of the COMPLETED trials that still have weight files, best first.

    Args:
        run_dir: str, the search directory.
        trials: as in `prune_trial_weights`; None reads the trial.json files.
        direction: `"max"` or `"min"`. Default `"max"`.

    Returns:
        list of str trial ids.
    """
    trials = read_trials(run_dir) if trials is None else list(trials)
    ranked = best_trial_ids(trials, len(trials), direction)
    return [trial_id for trial_id in ranked if _weight_files(run_dir, trial_id)]


def pruned_message(run_dir, trial_id, trials=None, direction="max"):
    """Why a trial has no weights, or None when they were not pruned (or are still there).

    Args:
        run_dir: str, the search directory.
        trial_id: the trial whose weights are missing.
        trials: as in `prune_trial_weights`; None reads the trial.json files.
        direction: `"max"` or `"min"`. Default `"max"`.

    Returns:
        str such as `"trial 07's weights were pruned by --keep-weights 3 (only the best 3
        trials keep theirs); export one of trials ['12', '03', '09']"`, or None.
    """
    trial_id = str(trial_id)
    marker = os.path.join(_trial_dir(run_dir, trial_id), MARKER)
    if not os.path.exists(marker) or _weight_files(run_dir, trial_id):
        return None
    with open(marker) as f:
        info = json.load(f)
    keep = info.get("keep_weights")
    kept = kept_trial_ids(run_dir, trials, direction)
    return (
        f"trial {trial_id}'s weights were pruned by --keep-weights {keep} (only the best "
        f"{keep} trials keep theirs); export one of trials {kept}"
        if kept
        else f"trial {trial_id}'s weights were pruned by --keep-weights {keep}, and no completed "
        "trial has weights left"
    )
