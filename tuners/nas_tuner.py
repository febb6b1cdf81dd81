"""NASTuner: the keras-tuner Tuner that scores each architecture with the proxy task.

`NASTuner` is the adapter between keras-tuner and `tfnas.training.ProxyTask` (Nekrasov et
al., CVPR 2019, Sec. 3.2): `search` prepares the data once (split, encoder warm-up,
feature cache), `run_trial` hands the trial's hyperparameters to the proxy task and reports
its metrics, `save_model` / `load_model` keep the trained weights in the search directory
(`tfnas.search_dir.SearchDir`), and `on_trial_end` prints one line per trial and writes
TensorBoard's HParams entry (`SEARCH_DIR/tensorboard`). A trial whose build fails or whose loss or weights stop
being finite is recorded as FAILED with the reason in its `trial.json`, and the search goes
on.

    space = AuxCellSpace(num_classes=11, width=48)
    tuner = NASTuner(space, max_trials=20, directory="runs", project_name="search")
    tuner.search(digit_scenes("train"))
    best = tuner.get_best_models(1)[0]
"""

import os
import sys

import keras_tuner
from keras_tuner.engine.trial import TrialStatus
from keras_tuner.src.distribute import oracle_client
from keras_tuner.src.distribute import utils as dist_utils

import tfnas
from tfnas import retention
from tfnas.data import as_examples
from tfnas.distributed import RetryingStub, preparation_lock, serve_oracle
from tfnas.report.progress import ProgressPrinter
from tfnas.report.tensorboard import HParamsWriter
from tfnas.search_dir import SearchDir
from tfnas.training.proxy import ProxySettings, ProxyTask
from tfnas.tuners.oracles import finish_interrupted_trials, make_oracle, return_running_trials


class NASTuner(keras_tuner.Tuner):
    """Neural architecture search with the two-stage proxy task.

    Args:
        hypermodel: a tfnas space (`tfnas.spaces.DecoderSpace`).
        oracle: a `keras_tuner.Oracle` whose objective is `reward` (max); None makes the
            space's `DEFAULT_ORACLE` (`"ppo"` unless the space says otherwise).
        max_trials: int, trials when `oracle` is None. Default 10.
        settings: `tfnas.training.ProxySettings`, used as it is; or give its fields as
            keyword arguments (`stage1_epochs=3, batch_size=8, ...`), which override the
            space's paper's protocol (`ProxySettings.for_space`; `protocol="wacv2020"`
            picks another). Default: the space's protocol (`PROXY_PROTOCOL`).
        teacher: the distillation teacher: `"auto"` (the warmed-up model when the encoder is
            warmed up, else none), None, a Keras model, or a SavedModel / `.keras` path.
        keep_weights: int or None: after each trial keep the weights of only the best
            `keep_weights` completed trials and the running ones (`tfnas.retention`), so
            disk stays bounded; None keeps every trial's. Default None.
        metadata: optional dict merged into `run.json` (the CLI keeps its arguments there).
        hardware_objective: optional `tfnas.objectives.HardwareObjective`: a latency or multiply-adds
            target applied to every trial's reward (soft MnasNet term and/or hard
            constraint; the task's reward is kept as `task_reward`), whatever the Oracle.
            Default None: the task's reward alone.
        verbose: Keras verbosity of the stages (0, 1, 2 or "auto": 1 on a terminal, else 2).
        directory, project_name, overwrite, **kwargs: as `keras_tuner.Tuner`; the search
            directory is `directory/project_name`.

    Raises:
        ValueError: if the Oracle's objective is not `reward` (max) or a setting is invalid.
    """

    def __init__(
        self,
        hypermodel,
        oracle=None,
        max_trials=10,
        settings=None,
        teacher="auto",
        keep_weights=None,
        metadata=None,
        hardware_objective=None,
        verbose="auto",
        directory=None,
        project_name=None,
        overwrite=False,
        **kwargs,
    ):
        given = {name: kwargs.pop(name) for name in ProxySettings.field_names() if name in kwargs}
        if settings is not None and given:
            raise ValueError(
                f"pass the proxy settings either as settings= or as keyword "
                f"arguments, not both (got settings and {sorted(given)})"
            )
        settings = settings or ProxySettings.for_space(hypermodel, **given)
        if oracle is None:
            oracle = make_oracle(getattr(hypermodel, "DEFAULT_ORACLE", "ppo"), max_trials, settings.seed)
        objective = oracle.objective
        if getattr(objective, "name", None) != "reward" or objective.direction != "max":
            raise ValueError(
                f"the oracle's objective is {objective!r}; NASTuner reports "
                "'reward' to maximise: create the oracle with "
                "objective=keras_tuner.Objective('reward', 'max')"
            )
        if keep_weights is not None and int(keep_weights) < 1:
            raise ValueError(
                f"keep_weights={keep_weights!r} must be at least 1 (or None to keep every trial's weights)"
            )
        self.keep_weights = None if keep_weights is None else int(keep_weights)
        self.metadata = dict(metadata or {})
        self.verbose = verbose
        super().__init__(
            oracle=oracle,
            hypermodel=hypermodel,
            directory=directory,
            project_name=project_name,
            overwrite=overwrite,
            **kwargs,
        )
        if isinstance(self.oracle, oracle_client.OracleClient):  # a worker of a distributed search
            self.oracle.stub = RetryingStub(self.oracle.stub)
        self.search_dir = SearchDir(self.project_dir)
        self._hparams = HParamsWriter(self.search_dir.tensorboard_dir, space=hypermodel)
        self._progress = None
        self.proxy = ProxyTask(hypermodel, self.search_dir, settings, teacher, verbose=self._verbosity())
        hw = hardware_objective
        if hw is not None and hw.metric == "latency_ms" and not hw.table and not settings.latency_runs:
            raise ValueError(
                "the objective is on latency_ms, but trials are not timed (latency_runs=0) and "
                "no latency table is given: pass a table or latency_runs > 0"
            )
        self.hardware_objective = None if hw is None else hw.bind(self.proxy.trial_space)

    @property
    def settings(self):
        """The proxy task's `ProxySettings`."""
        return self.proxy.settings

    @property
    def run_dir(self):
        """The search directory (keras-tuner's project dir)."""
        return self.project_dir

    def _verbosity(self):
        if self.verbose == "auto":
            return 1 if sys.stdout.isatty() else 2
        return int(self.verbose)

    # --- keras-tuner hooks ----------------------------------------------------------------
    def _populate_initial_space(self):
        """Declares the space's decisions without building a model.

        keras-tuner's version also builds the model until every conditional scope is
        active; tfnas spaces declare no conditions, so `declare_hyperparameters` suffices.
        """
        if type(self.hypermodel).declare_hyperparameters is keras_tuner.HyperModel.declare_hyperparameters:
            return super()._populate_initial_space()
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    def search(self, train_data, validation_data=None, callbacks=None, verbose=1):
        """Runs the search.

        Args:
            train_data: `tf.data` of `(uint8 image (H, W, 3), int32 mask (H, W))` pairs,
                all of one size, in a fixed order (batched data are unbatched), or a tuple
                `(images, masks)` of arrays.
            validation_data: the same form, or None to hold out `validation_fraction` of
                `train_data` as meta-val.
            callbacks: Keras callbacks for every stage's `fit` (deep-copied per trial).
            verbose: keras-tuner's trial summaries (0 or 1). Default 1.

        Raises:
            ValueError: for data of the wrong form.
        """
        if dist_utils.is_chief_oracle():  # serves the Oracle to the workers, runs no trial
            self._write_run_file()
            self.oracle.verbose = verbose
            self.save()
            serve_oracle(self.oracle)  # keras-tuner's server, stopping within a second of the last worker
            return
        self._write_run_file()  # first, so that a search killed while preparing can be resumed
        # One process prepares (warm-up, feature cache); the workers of a distributed search
        # that come later wait, then reuse what it wrote.
        with preparation_lock(self.project_dir):
            self.proxy.prepare(
                as_examples(train_data, "train_data"), as_examples(validation_data, "validation_data")
            )
            self._write_run_file()
        if verbose:
            described = self.proxy.describe()
            print(f"tfnas: encoder {described['encoder']}; teacher {described['teacher']}", flush=True)
        self.save()  # so that a search killed in its first trial resumes rather than restarts
        # One readable line per trial instead of keras-tuner's table of raw decision names.
        self._progress = (
            ProgressPrinter(self.oracle.max_trials, space=self.hypermodel, done=self._ended_trials())
            if verbose
            else None
        )
        return super().search(callbacks=callbacks, verbose=0)

    def reload(self):
        """Reloads the search; trials that completed are never queued to run again.

        keras-tuner re-queues the trials its last `oracle.json` lists as running; a kill
        between a trial's end and the next save would otherwise run a completed trial twice.
        A restarted chief gives the trials that were running back to their workers instead
        (`return_running_trials`).
        """
        super().reload()
        if isinstance(self.oracle, keras_tuner.Oracle):  # the chief or a single process
            finish_interrupted_trials(self.oracle)
        if dist_utils.is_chief_oracle():  # its workers may still be running their trials
            return_running_trials(self.oracle)

    def _ended_trials(self):
        if not isinstance(self.oracle, keras_tuner.Oracle):  # a worker's client of the chief
            return 0
        return sum(
            t.status in (TrialStatus.COMPLETED, TrialStatus.FAILED) for t in self.oracle.trials.values()
        )

    def on_trial_begin(self, trial):
        super().on_trial_begin(trial)
        if self._progress is not None:
            self._progress.on_trial_begin(trial)

    def on_trial_end(self, trial):
        """Records the trial (keras-tuner), then its TensorBoard HParams entry and progress line."""
        super().on_trial_end(trial)
        if self.keep_weights is not None:
            # The trials as recorded on disk, so that a worker prunes too; trials not ended
            # (running elsewhere) keep their weights.
            trials = self.search_dir.trials()
            running = [tid for tid, t in trials.items() if t.get("status") not in ("COMPLETED", "FAILED")]
            retention.prune_trial_weights(
                self.project_dir, self.keep_weights, trials.values(), running_trial_ids=running
            )
        ended = self.oracle.get_trial(trial.trial_id)  # with its metrics, also on a worker
        self._hparams.write_trial(ended)
        if self._progress is not None:
            self._progress.on_trial_end(ended)

    def run_trial(self, trial, callbacks=None, **kwargs):
        """Trains and scores one architecture with the proxy task; returns its metrics.

        Raises:
            keras_tuner.errors.FailedTrialError: when the architecture cannot be built.
            NonFiniteLossError: when the loss or the weights stop being finite.
        """
        callbacks = self._deepcopy_callbacks(callbacks or [])
        self._configure_tensorboard_dir(callbacks, trial)
        metrics, network = self.proxy.run_trial(trial.hyperparameters, trial.trial_id, callbacks)
        self.save_model(trial.trial_id, network)
        if self.hardware_objective is not None:  # over a hard target: recorded, reward 0
            metrics = self.hardware_objective.apply(metrics, trial.hyperparameters.values)
        return metrics

    def save_model(self, trial_id, model, step=0):
        """Saves the training model's weights to `trial_<id>/model.weights.h5`."""
        from tfnas.io import atomic_path

        with atomic_path(self.search_dir.trial_weights(trial_id)) as tmp:
            model.save_weights(tmp)

    def load_model(self, trial):
        """Builds the trial's training model and loads its trained weights.

        Raises:
            FileNotFoundError: if the trial saved no weights (it failed).
        """
        path = self.search_dir.trial_weights(trial.trial_id)
        if not os.path.exists(path):
            pruned = retention.pruned_message(self.project_dir, trial.trial_id)
            if pruned:
                raise FileNotFoundError(pruned)
            raise FileNotFoundError(
                f"trial {trial.trial_id} has no weights at {path!r} "
                f"(status {trial.status}); pick a completed trial"
            )
        model = self.proxy.trial_space.build(trial.hyperparameters.copy())
        model.load_weights(path)
        return model

    def get_best_models(self, num_models=1):
        """The best trials' training models, built and loaded, best first."""
        trials = [t for t in self.oracle.get_best_trials(num_models) if t.status == TrialStatus.COMPLETED]
        return [self.load_model(t) for t in trials]

    # --- run.json ---------------------------------------------------------------------------
    def _space_name(self):
        from tfnas.spaces import SPACES

        for name, cls in SPACES.items():
            if type(self.hypermodel) is cls:
                return name
        return self.hypermodel.name

    def _write_run_file(self):
        run = {
            **self.metadata,
            "space": self._space_name(),
            "space_config": self.hypermodel.config(),
            "num_classes": self.hypermodel.num_classes,
            "objective": {"name": "reward", "direction": "max"},
            "reward_description": self.hypermodel.task.reward_description,
            "tfnas_version": tfnas.__version__,
        }
        if isinstance(self.oracle, keras_tuner.Oracle):  # not a worker's client of the chief
            run.update(oracle=type(self.oracle).__name__, max_trials=self.oracle.max_trials)
        if self.proxy.data is not None:
            run.update(self.proxy.describe())
        run["keep_weights"] = self.keep_weights
        hw = self.hardware_objective
        run["hardware_objective"] = None if hw is None else hw.describe()
        self.search_dir.update_run(run)
