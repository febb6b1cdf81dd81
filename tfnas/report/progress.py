"""Live progress of a search: one readable line per trial instead of keras-tuner's table.

keras-tuner prints every hyperparameter of every trial under its raw name
(`branch2_index1`); a search of 20 decisions per trial is unreadable that way. The line
here says what a user follows during a search:

    trial 3/20  [[[3,3],[3,2],[3,0]],[8,[0,0,5,2],[0,2,8,8],[0,5,1,4]]]  reward 0.4123 (stage 1 0.3012)  best 0.4510 (trial 1)  61 s  ~17 min left

The architecture is the genotype in the paper's notation. `NASTuner` calls
`on_trial_begin(trial)` and `on_trial_end(trial)` from its keras-tuner hooks of the same
names; the printer also takes `tfnas.report.Trial` objects (read back from disk).
"""

import sys
import time

from tfnas.report.runs import format_genotype


def trial_parts(trial):
    """(trial_id, status, values, metrics dict, message) of a keras-tuner or tfnas.report trial."""
    metrics = trial.metrics
    if not isinstance(metrics, dict):  # keras_tuner.engine.metrics_tracking.MetricsTracker
        metrics = {
            name: metrics.get_last_value(name)
            for name in metrics.metrics
            if metrics.get_last_value(name) is not None
        }
    values = getattr(trial, "values", None)
    if values is None:
        values = trial.hyperparameters.values
    status = getattr(trial.status, "value", trial.status)
    return str(trial.trial_id), str(status), dict(values), metrics, getattr(trial, "message", None)


def format_duration(seconds):
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class ProgressPrinter:
    """Prints one line per ended trial: i/N, architecture, reward, best so far, time.

    Args:
        total: int, the trials of the search (`max_trials`).
        space: optional tfnas space; its `genotype(values)` gives the paper's notation
            (without it, the raw values are printed).
        done: int, trials that ended before (a resumed search). Default 0.
        stream: file to print to. Default `sys.stdout`.
        clock: callable returning seconds, for the durations. Default `time.monotonic`.
    """

    def __init__(self, total, space=None, done=0, stream=None, clock=time.monotonic):
        self.total = int(total)
        self.space = space
        self.done = int(done)
        self.stream = stream
        self.clock = clock
        self.best = None  # (reward, trial_id)
        self._starts = {}
        self._seconds = []

    def architecture(self, values):
        """The paper's notation of a trial's decisions (raw values if the space cannot)."""
        if self.space is not None:
            try:
                return format_genotype(self.space.genotype(values))
            except Exception:  # values the space does not decode: show them as they are
                pass
        return format_genotype(values)

    def on_trial_begin(self, trial):
        """Notes the trial's start time."""
        self._starts[str(trial.trial_id)] = self.clock()

    def on_trial_end(self, trial):
        """Prints the trial's line and returns it.

        Args:
            trial: a `keras_tuner.engine.trial.Trial` (or `tfnas.report.Trial`) that ended.

        Returns:
            str, the line printed.
        """
        trial_id, status, values, metrics, message = trial_parts(trial)
        self.done += 1
        start = self._starts.pop(trial_id, None)
        seconds = self.clock() - start if start is not None else metrics.get("trial_seconds")
        if seconds is not None:
            self._seconds.append(float(seconds))
        reward = metrics.get("reward")
        if status == "COMPLETED" and reward is not None and (self.best is None or reward > self.best[0]):
            self.best = (float(reward), trial_id)
        parts = [f"trial {self.done}/{self.total}", self.architecture(values)]
        if status == "COMPLETED" and reward is not None:
            stage1 = metrics.get("stage1_reward")
            if metrics.get("terminated"):
                parts.append(f"reward {reward:.4f} (terminated after stage 1)")
            elif stage1 is not None:
                parts.append(f"reward {reward:.4f} (stage 1 {stage1:.4f})")
            else:
                parts.append(f"reward {reward:.4f}")
        else:
            reason = f": {str(message).strip().splitlines()[-1]}" if message else ""
            parts.append(f"{status}{reason}")
        if self.best is not None:
            parts.append(f"best {self.best[0]:.4f} (trial {self.best[1]})")
        if seconds is not None:
            parts.append(format_duration(seconds))
        left = self.total - self.done
        if left > 0 and self._seconds:
            parts.append(f"~{format_duration(left * sum(self._seconds) / len(self._seconds))} left")
        line = "  ".join(parts)
        print(line, file=self.stream or sys.stdout, flush=True)
        return line
