"""TensorBoard's HParams dashboard for a search: every trial's decisions with tfnas' metrics.

keras-tuner writes HParams only through a `keras.callbacks.TensorBoard` given to `search`,
with the stages' Keras metrics; the numbers that matter in a NAS search (reward, stage-1
reward, parameters, multiply-adds, latency) are computed after `fit`. `HParamsWriter` writes
them with TensorBoard's hparams plugin API (`tensorboard.plugins.hparams.api`):

    LOGDIR/                     the experiment: `hparams_config` (decisions and metrics)
    LOGDIR/trial_<id>/          one session per trial: `hparams(values, trial_id)` and one
                                scalar per metric at step 0

so `tensorboard --logdir LOGDIR` lists the trials with their metrics in the HParams tab.
`NASTuner` calls `write_trial(trial)` from `on_trial_end`; `write_run(run)` back-fills the
logs of a search directory. Per-stage loss curves come from a `keras.callbacks.TensorBoard`
passed to `NASTuner.search(callbacks=...)`, which keras-tuner already sends to
`LOGDIR/<trial_id>/`.
"""

import os

import tensorflow as tf
from tensorboard.plugins.hparams import api as hp_api

from tfnas.report.progress import trial_parts
from tfnas.report.runs import format_genotype
from tfnas.tasks import TASKS

#: The metrics shown in the HParams dashboard: (metric name, display name).
HPARAMS_METRICS = (
    ("reward", "reward"),
    ("stage1_reward", "stage-1 reward"),
    ("miou", "mIoU"),  # the task's headline scores (`Task.headline_scores`) for a space of another task
    ("params", "parameters"),
    ("madds", "multiply-adds"),
    ("latency_ms", "latency (ms)"),
    ("terminated", "terminated after stage 1"),
    ("trial_seconds", "trial seconds"),
)


class HParamsWriter:
    """Writes each trial's decisions and metrics for TensorBoard's HParams plugin.

    Args:
        logdir: str, the TensorBoard log directory.
        space: optional tfnas space: its decisions (`hyperparameters().space`) become the
            HParams with their discrete domains, and its `genotype` the `genotype` column.
        metrics: sequence of (name, display name). Default `HPARAMS_METRICS`, with the
            space's task's headline scores (`Task.headline_scores`) in place of mIoU.
    """

    def __init__(self, logdir, space=None, metrics=None):
        self.logdir = logdir
        self.space = space
        self._metrics = None if metrics is None else tuple(metrics)
        self._configured = False

    @property
    def metrics(self):
        """The (name, display name) pairs written for each trial."""
        if self._metrics is not None:
            return self._metrics
        task = getattr(getattr(self.space, "task", None), "name", "segmentation")
        if task == "segmentation":
            return HPARAMS_METRICS
        head, tail = HPARAMS_METRICS[:2], [m for m in HPARAMS_METRICS[2:] if m[0] != "miou"]
        return head + tuple(TASKS[task].headline_scores) + tuple(tail)

    def _hparams(self, values):
        """`hp.HParam` per decision (discrete domains from the space when known)."""
        domains = {}
        if self.space is not None:
            for p in self.space.hyperparameters().space:
                domains[p.name] = hp_api.Discrete(list(p.values))
        params = [hp_api.HParam(name, domains.get(name)) for name in values]
        return params + [hp_api.HParam("genotype")]

    def _configure(self, values):
        os.makedirs(self.logdir, exist_ok=True)
        with tf.summary.create_file_writer(self.logdir).as_default():
            hp_api.hparams_config(
                hparams=self._hparams(values),
                metrics=[hp_api.Metric(name, display_name=label) for name, label in self.metrics],
            )
        self._configured = True

    def write_trial(self, trial):
        """Writes one trial's session (`LOGDIR/trial_<id>/`); the first call writes the config.

        Args:
            trial: a `keras_tuner.engine.trial.Trial` or `tfnas.report.Trial` that ended.

        Returns:
            str, the trial's session directory.
        """
        trial_id, status, values, metrics, _ = trial_parts(trial)
        if not self._configured:
            self._configure(values)
        genotype = getattr(trial, "genotype", None)
        if genotype is None and self.space is not None:
            try:
                genotype = self.space.genotype(values)
            except Exception:  # values the space does not decode
                genotype = None
        hparams = {**values, "genotype": format_genotype(genotype if genotype is not None else values)}
        session = os.path.join(self.logdir, f"trial_{trial_id}")
        with tf.summary.create_file_writer(session).as_default():
            hp_api.hparams(hparams, trial_id=trial_id)
            for name, _ in self.metrics:
                if metrics.get(name) is not None:
                    tf.summary.scalar(name, float(metrics[name]), step=0)
            tf.summary.text("status", status, step=0)
        return session

    def write_run(self, run):
        """Writes every ended trial of a `tfnas.report.Run` (a search directory read back)."""
        if self.space is None:
            self.space = run.space
        return [self.write_trial(t) for t in run.trials if t.status in ("COMPLETED", "FAILED")]
