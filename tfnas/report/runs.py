"""Reading a tfnas search directory (running, finished or killed) into a table of trials.

A search directory is keras-tuner's project directory written by `tfnas.tuners.NASTuner`:
`run.json` (space, settings, data), `oracle.json` (the Oracle's state, with `end_order`
and, for PPO, the controller's bookkeeping) and `trial_<id>/trial.json` (status,
hyperparameter values, metrics). A search that is still running or was killed leaves
trials in the RUNNING state, a `trial.json` half written, or no `oracle.json` yet; every
reader here takes what it can and says what it skipped, so `tfnas results` and
`tfnas report` work at any moment of a search.

    run = load_run("runs/search")
    for trial in run.trials:          # in the order they ended, then the running ones
        print(trial.trial_id, trial.status, trial.metrics.get("reward"), trial.arch)
"""

import dataclasses
import json
import os

from tfnas.io import try_read_json
from tfnas.search_dir import ORACLE_FILE, RUN_FILE, SearchDir, last_metrics

#: The metrics `NASTuner.run_trial` records, in the order tables show them.
METRICS = (
    "reward",
    "stage1_reward",
    "miou",
    "fwiou",
    "mean_accuracy",
    "params",
    "madds",
    "latency_ms",
    "terminated",
    "trial_seconds",
)


def task_name(space_config):
    """The task of a search from its `space_config` (searches before tasks: segmentation)."""
    task = (space_config or {}).get("task") or "segmentation"
    return task["name"] if isinstance(task, dict) else task


#: Prefix of the per-class IoU metrics (`iou_class_<k>`) a tuner may record.
CLASS_IOU_PREFIX = "iou_class_"


@dataclasses.dataclass
class Trial:
    """One trial of a search, flattened from keras-tuner's `trial.json`.

    Attributes:
        trial_id: str, keras-tuner's trial id.
        order: int, position in the search: trials that ended come first in the order they
            ended (`oracle.json`'s `end_order`), then the others by id.
        status: str, keras-tuner's status (`COMPLETED`, `FAILED`, `RUNNING`, `INVALID`, ...).
        values: dict, the hyperparameter values (the architecture's decisions).
        metrics: dict name -> float, the last value of each recorded metric.
        score: float or None, the objective (`reward`) of a completed trial.
        message: str or None, keras-tuner's message (the error of a failed trial).
        genotype: the architecture in the paper's form, or None when the space cannot
            decode the values (or the space is unknown).
    """

    trial_id: str
    order: int
    status: str
    values: dict
    metrics: dict
    score: float = None
    message: str = None
    genotype: object = None

    @property
    def terminated(self):
        """bool, whether progressive termination stopped the trial after stage 1."""
        return bool(self.metrics.get("terminated", 0.0))

    @property
    def completed(self):
        """bool, whether the trial completed with a score."""
        return self.status == "COMPLETED" and self.score is not None

    @property
    def arch(self):
        """str, the architecture in the paper's notation (compact JSON of the genotype)."""
        return format_genotype(self.genotype if self.genotype is not None else self.values)

    def row(self):
        """dict of the table's columns: id, order, status, the metrics, the genotype."""
        return {
            "trial_id": self.trial_id,
            "order": self.order,
            "status": self.status,
            "score": self.score,
            **self.metrics,
            "genotype": self.arch,
            "message": self.message,
        }


@dataclasses.dataclass
class Run:
    """A search directory read from disk.

    Attributes:
        path: str, the search directory.
        run: dict, `run.json` ({} when absent: the search has not prepared its data yet).
        oracle: dict, `oracle.json` ({} when absent or unreadable).
        trials: list of `Trial`, in `Trial.order`.
        skipped: list of str, why files were left out (a `trial.json` being written).
        space: the `tfnas.spaces` space rebuilt from `run.json`, or None.
    """

    path: str
    run: dict
    oracle: dict
    trials: list
    skipped: list
    space: object = None

    @property
    def max_trials(self):
        """int or None, the trials the search was asked for."""
        return self.run.get("max_trials") or self.run.get("cli", {}).get("trials")

    def completed(self, include_terminated=True):
        """The completed trials with a score (optionally without the terminated ones)."""
        return [t for t in self.trials if t.completed and (include_terminated or not t.terminated)]

    def best(self, count=1):
        """The `count` completed trials with the highest score, best first."""
        return sorted(self.completed(), key=lambda t: -t.score)[:count]

    def controller_history(self):
        """The PPO controller's history (list of dicts) from `oracle.json`, or None.

        The Oracle records it as `oracle.json["controller"]["history"]`: one entry per
        controller update with `update`, `baseline`, `entropy` (and optionally `loss`,
        `trial_ids`). Searches made before it did hold none.
        """
        history = self.oracle.get("controller", {}).get("history")
        return list(history) if history else None


def format_genotype(genotype):
    """The paper's notation of a genotype: JSON without spaces, e.g. `[[[3,3],[3,2]],...]`."""
    return json.dumps(genotype, separators=(",", ":"))


def _id_key(trial_id):
    return (0, int(trial_id), "") if str(trial_id).isdigit() else (1, 0, str(trial_id))


def rebuild_space(search_dir):
    """The search's space (`SearchDir.space`), or None when `run.json` cannot rebuild it."""
    try:
        return search_dir.space()
    except Exception:  # no run.json yet, an unknown or newer space: the report shows raw values
        return None


def load_run(path):
    """Reads a search directory into a `Run` (see the module docstring).

    Args:
        path: str, the search directory (`tfnas search --out`, keras-tuner's project dir).

    Returns:
        `Run`.

    Raises:
        FileNotFoundError: if `path` is not a directory or holds neither `run.json`,
            `oracle.json` nor any `trial_*` folder.
    """
    if not os.path.isdir(path):
        raise FileNotFoundError(
            f"{path!r} is not a directory; pass a search directory (the --out of tfnas search)"
        )
    entries = sorted(os.listdir(path))
    trial_dirs = [e for e in entries if e.startswith("trial_") and os.path.isdir(os.path.join(path, e))]
    if not trial_dirs and not {RUN_FILE, ORACLE_FILE} & set(entries):
        raise FileNotFoundError(
            f"{path!r} holds no search: no run.json, oracle.json or trial_* "
            "folder; pass the --out of tfnas search"
        )
    search_dir = SearchDir(path)
    skipped = []
    run, why = try_read_json(search_dir.run_file)
    if run is None:
        skipped.append(why)
    oracle, why = try_read_json(search_dir.file(ORACLE_FILE))
    if oracle is None:
        skipped.append(why)
    run, oracle = run or {}, oracle or {}
    space = rebuild_space(search_dir) if run else None
    raw = search_dir.trials(skipped=skipped)
    ended = [t for t in oracle.get("end_order", []) if t in raw]
    rest = sorted((t for t in raw if t not in ended), key=_id_key)
    trials = []
    for order, trial_id in enumerate(ended + rest):
        data = raw[trial_id]
        values = dict((data.get("hyperparameters") or {}).get("values") or {})
        genotype = None
        if space is not None:
            try:
                genotype = space.genotype(values)
            except Exception:  # values of another space version: shown raw
                genotype = None
        score = data.get("score")
        trials.append(
            Trial(
                trial_id=trial_id,
                order=order,
                status=str(data.get("status")),
                values=values,
                metrics=last_metrics(data),
                score=None if score is None else float(score),
                message=data.get("message"),
                genotype=genotype,
            )
        )
    return Run(path=path, run=run, oracle=oracle, trials=trials, skipped=skipped, space=space)


def class_ious(trial):
    """dict class index -> IoU from a trial's `iou_class_<k>` metrics ({} when not recorded)."""
    found = {}
    for name, value in trial.metrics.items():
        if name.startswith(CLASS_IOU_PREFIX) and name[len(CLASS_IOU_PREFIX) :].isdigit():
            found[int(name[len(CLASS_IOU_PREFIX) :])] = value
    return dict(sorted(found.items()))
