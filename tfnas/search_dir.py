"""The search directory: the one place that knows its files and how to read a trial back.

A search directory is keras-tuner's project directory (`directory/project_name`) plus
tfnas' own files. `NASTuner` writes it, `tfnas search --resume` continues it, `tfnas export`
and the reports read it; all of them go through `SearchDir`.

    run.json               the run: space name and config, data, proxy settings, encoder
                           and teacher, the command line (written by `NASTuner`)
    oracle.json            the Oracle's state (keras-tuner), incl. controller bookkeeping
    tuner0.json            keras-tuner's tuner state
    encoder.weights.h5     the encoder every trial starts from
    warmup.weights.h5      the warmed-up model (encoder + reference decoder), the default teacher
    termination.json       the progressive-termination rule's state
    cache/                 encoder (and teacher) outputs of the stage-1 and meta-val images
    tensorboard/           TensorBoard's HParams view of the trials (`tensorboard --logdir`)
    trial_<id>/trial.json  keras-tuner's trial: hyperparameters, metrics, status, score
    trial_<id>/model.weights.h5   the trial's trained training model
"""

import os

from tfnas.io import atomic_write_json, read_json, try_read_json

RUN_FILE = "run.json"
ORACLE_FILE = "oracle.json"
ENCODER_WEIGHTS = "encoder.weights.h5"
WARMUP_WEIGHTS = "warmup.weights.h5"
TERMINATION_FILE = "termination.json"
CACHE_DIR = "cache"
TENSORBOARD_DIR = "tensorboard"
MODEL_WEIGHTS = "model.weights.h5"
TRIAL_FILE = "trial.json"


class SearchDir:
    """Paths and readers of one search directory.

    Args:
        path: str, the search directory (`tfnas search --out`, or a tuner's `project_dir`).
    """

    def __init__(self, path):
        self.path = os.fspath(path)

    def __repr__(self):
        return f"SearchDir({self.path!r})"

    def file(self, name):
        """The path of a file of the search directory, e.g. `file(RUN_FILE)`."""
        return os.path.join(self.path, name)

    @property
    def run_file(self):
        return self.file(RUN_FILE)

    @property
    def encoder_weights(self):
        return self.file(ENCODER_WEIGHTS)

    @property
    def warmup_weights(self):
        return self.file(WARMUP_WEIGHTS)

    @property
    def termination_file(self):
        return self.file(TERMINATION_FILE)

    @property
    def cache_dir(self):
        return self.file(CACHE_DIR)

    @property
    def tensorboard_dir(self):
        return self.file(TENSORBOARD_DIR)

    def trial_dir(self, trial_id):
        """`trial_<id>/`, the folder keras-tuner's `Tuner.get_trial_dir` gives."""
        return self.file(f"trial_{trial_id}")

    def trial_weights(self, trial_id):
        """`trial_<id>/model.weights.h5`."""
        return os.path.join(self.trial_dir(trial_id), MODEL_WEIGHTS)

    # --- run.json --------------------------------------------------------------------------
    def has_run(self):
        """Whether a search has written its `run.json` here."""
        return os.path.exists(self.run_file)

    def read_run(self):
        """The parsed `run.json`.

        Raises:
            FileNotFoundError: naming the folder, when it holds no search.
        """
        if not os.path.isdir(self.path):
            raise FileNotFoundError(
                f"{self.path!r} is not a folder; expected a tfnas search directory (tfnas search --out)"
            )
        return read_json(
            self.run_file, "a tfnas search directory has one; is this the folder given to tfnas search --out?"
        )

    def update_run(self, run):
        """Writes `run.json` atomically, keeping the keys `run` does not set.

        Args:
            run: dict of entries to set.

        Returns:
            dict, the whole `run.json` written.
        """
        previous = read_json(self.run_file, "run.json") if self.has_run() else {}
        merged = {**previous, **run}
        atomic_write_json(self.run_file, merged)
        return merged

    def space(self, **overrides):
        """The search space rebuilt from `run.json` (`get_space(name)(**space_config)`).

        Args:
            **overrides: constructor arguments to replace, e.g. `encoder_weights=None` when
                trained weights are loaded afterwards.

        Raises:
            ValueError: if `run.json` names no known space.
        """
        from tfnas.spaces import get_space

        run = self.read_run()
        if "space" not in run:
            raise ValueError(f"{self.run_file} has no 'space' entry (keys: {sorted(run)})")
        return get_space(run["space"])(**{**run.get("space_config", {}), **overrides})

    # --- trials ----------------------------------------------------------------------------
    def trials(self, skipped=None):
        """keras-tuner's trials of the search, parsed.

        Args:
            skipped: None, or a list: then a `trial.json` that cannot be read yet (a running
                search writes it in place) is left out and the reason appended to the
                list, instead of raising.

        Returns:
            dict trial id -> `trial.json` contents, in folder order.

        Raises:
            ValueError: for an unreadable `trial.json` when `skipped` is None.
        """
        found = {}
        if not os.path.isdir(self.path):
            return found
        for entry in sorted(os.listdir(self.path)):
            path = os.path.join(self.path, entry, TRIAL_FILE)
            if not entry.startswith("trial_") or not os.path.exists(path):
                continue
            if skipped is None:
                trial = read_json(path, "a keras-tuner trial file")
            else:
                trial, why = try_read_json(path)
                if trial is None:
                    skipped.append(why)
                    continue
            found[str(trial.get("trial_id", entry[len("trial_") :]))] = trial
        return found

    def best_trial_id(self):
        """The id of the COMPLETED trial with the highest score.

        Raises:
            ValueError: if no trial is COMPLETED with a score.
        """
        scored = {
            tid: t["score"]
            for tid, t in self.trials().items()
            if t.get("status") == "COMPLETED" and t.get("score") is not None
        }
        if not scored:
            raise ValueError(
                f"no COMPLETED trial with a score in {self.path!r}; wait for the "
                "search to complete a trial or pass --trial ID"
            )
        return max(scored, key=scored.get)

    def load_trial_model(self, trial="best"):
        """Rebuilds one trial's training model and loads its trained weights.

        Args:
            trial: `"best"` (the highest score among COMPLETED trials) or a trial id.

        Returns:
            (Keras training model, metadata dict with `space`, `space_config`, `trial_id`,
            `score`, `hyperparameters`, the trial's last `metrics` and, when the space has a
            genotype codec, `genotype`).

        Raises:
            FileNotFoundError: if `run.json`, the trial or its weights are missing.
            ValueError: if `run.json` names no known space.
        """
        run = self.read_run()
        space = self.space(encoder_weights=None)  # the trial's weights hold the encoder too
        trial_id = self.best_trial_id() if trial == "best" else str(trial)
        trials = self.trials()
        if trial_id not in trials:
            raise FileNotFoundError(
                f"trial {trial_id!r} is not in {self.path!r}; its trials are {sorted(trials)}"
            )
        info = trials[trial_id]
        weights = self.trial_weights(trial_id)
        if not os.path.exists(weights):
            from tfnas.retention import pruned_message

            pruned = pruned_message(self.path, trial_id, trials.values())
            if pruned:
                raise FileNotFoundError(pruned)
            raise FileNotFoundError(
                f"trial {trial_id} of {self.path!r} has no trained weights "
                f"({weights} is missing; status {info.get('status')}); pick a "
                "COMPLETED trial"
            )
        values = info.get("hyperparameters", {}).get("values", {})
        model = space.build(space.hyperparameters(values))
        model.load_weights(weights)
        metadata = {
            "space": run["space"],
            "space_config": run.get("space_config", {}),
            "trial_id": trial_id,
            "score": info.get("score"),
            "hyperparameters": values,
            "metrics": last_metrics(info),
        }
        try:
            metadata["genotype"] = space.genotype(values)
        except (NotImplementedError, ValueError):
            pass
        return model, metadata


def last_metrics(trial):
    """A keras-tuner `trial.json`'s metrics as {name: last observed value (float)}."""
    found = {}
    for name, record in (trial.get("metrics") or {}).get("metrics", {}).items():
        observations = record.get("observations") or []
        if observations:
            value = observations[-1].get("value")
            if isinstance(value, list):
                value = value[0] if value else None
            if value is not None:
                found[name] = float(value)
    return found
