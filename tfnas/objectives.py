"""Hardware-aware objectives: a latency or multiply-adds target in the reward (issue 14).

MnasNet (Tan et al., CVPR 2019, Sec. 3, Eq. 2) scores an architecture `m` as

    reward(m) = score(m) * (LAT(m) / T) ** w,   w = alpha if LAT(m) <= T else beta

with `alpha = beta = -0.07` (the *soft* constraint: a network twice as fast as the target
scores 5 % more, twice as slow 5 % less) or `alpha = 0, beta = -1` (only networks over the
target are penalised). `HardwareObjective` applies that term to the task's reward, on
`latency_ms` (measured by the proxy task, or predicted from a per-op latency table,
`tfnas.latency`) or on `madds`, and/or a *hard* constraint: a trial over the target is
recorded with all its metrics, marked `over_budget = 1`, and scores a reward of 0, so no
Oracle learns from it as from a good architecture. The task's own reward is kept as
`task_reward`. `NASTuner(hardware_objective=...)` applies it to every trial, whatever the Oracle.

    >>> objective = HardwareObjective("latency_ms", target=33.0, table="jetson_fp16.json")
    >>> tuner = NASTuner(space, hardware_objective=objective, ...)

Targets parse with units: `parse_latency("33ms")` (also `"0.033s"`, `"33000us"`) and
`parse_count("2G")` (also `"500M"`, `"1.5e9"`).
"""

import math
import re

__all__ = ["METRICS", "HardwareObjective", "parse_count", "parse_latency"]

#: Metrics a target can be on.
METRICS = ("latency_ms", "madds")
_LATENCY_UNITS = {"ms": 1.0, "s": 1000.0, "us": 1e-3, "µs": 1e-3}
_COUNT_UNITS = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_NUMBER = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"


def parse_latency(text):
    """A latency with its unit, in milliseconds: `"33ms"`, `"0.033s"`, `"33000us"`.

    Raises:
        ValueError: naming the text and the units understood.
    """
    match = re.fullmatch(_NUMBER + r"\s*(ms|s|us|µs)", str(text).strip())
    if not match or float(match.group(1)) <= 0:
        raise ValueError(
            f"latency {text!r} is not a positive number with a unit; write e.g. 33ms, 0.033s or 33000us"
        )
    return float(match.group(1)) * _LATENCY_UNITS[match.group(2)]


def parse_count(text):
    """A count with an optional SI suffix: `"2G"`, `"500M"`, `"1.5e9"`, `"300K"`.

    Raises:
        ValueError: naming the text and the suffixes understood.
    """
    match = re.fullmatch(_NUMBER + r"\s*([KMGT]?)", str(text).strip())
    if not match or float(match.group(1)) <= 0:
        raise ValueError(
            f"multiply-adds {text!r} is not a positive count; write e.g. 2G, 500M, 300K or 1.5e9"
        )
    return float(match.group(1)) * _COUNT_UNITS[match.group(2)]


class HardwareObjective:
    """A latency or multiply-adds target applied to each trial's reward (MnasNet, Eq. 2).

    Args:
        metric: `"latency_ms"` or `"madds"`.
        target: float > 0, the target (ms, or multiply-adds).
        weight: float, the exponent `w` of `(value / target) ** w`; default -0.07
            (MnasNet's soft constraint). 0 disables the soft term.
        hard: bool, trials over the target score 0 (`over_budget = 1`). Default False.
        penalize_only_above: bool, MnasNet's other setting: `w` applies only above the
            target (`alpha = 0`), so networks under it keep their task reward. Default False.
        table: optional path of a `tfnas.latency` table: `latency_ms` is predicted from it
            for every trial (at the table's image size) instead of measured. Latency only.
            A table measured on this machine (TensorFlow or onnxruntime) times the items it
            lacks when a trial first needs them (`Predictor(measure_missing=True)`; the
            template space's tables grow this way); a device's table must hold them.

    Raises:
        ValueError: for an unknown metric, a target that is not positive, or a table on
            `madds`.
    """

    def __init__(self, metric, target, weight=-0.07, hard=False, penalize_only_above=False, table=None):
        if metric not in METRICS:
            raise ValueError(f"objective metric {metric!r} is not one of {METRICS}")
        if isinstance(target, bool) or not isinstance(target, (int, float)) or not target > 0:
            raise ValueError(f"objective target {target!r} must be a positive number ({metric})")
        if not math.isfinite(float(weight)):
            raise ValueError(f"objective weight {weight!r} must be a finite number (MnasNet: -0.07)")
        if table is not None and metric != "latency_ms":
            raise ValueError(f"a latency table predicts latency_ms; the objective is on {metric}")
        self.metric, self.target, self.weight = metric, float(target), float(weight)
        self.hard, self.penalize_only_above = bool(hard), bool(penalize_only_above)
        self.table = table
        self._predictor = None

    def config(self):
        """The constructor's arguments (JSON; written to `run.json`)."""
        return {
            "metric": self.metric,
            "target": self.target,
            "weight": self.weight,
            "hard": self.hard,
            "penalize_only_above": self.penalize_only_above,
            "table": self.table,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def describe(self):
        """What `run.json` records: the config and where latencies come from."""
        source = None
        if self.metric == "latency_ms":
            source = "table" if self.table else "measured"
        return {**self.config(), "latency_source": source}

    def bind(self, space):
        """Loads the table (if any) for `space`; checks it was measured for this space.

        Raises:
            ValueError: if the table is for another space or other settings.
        """
        if self.table is not None:
            from tfnas.latency.measure import local_device
            from tfnas.latency.predict import Predictor
            from tfnas.latency.table import LatencyTable

            table = LatencyTable.load(self.table)
            here = table.device == local_device(table.runtime)
            self._predictor = Predictor(table, space, measure_missing=here)
        return self

    def factor(self, value):
        """The MnasNet term `(value / target) ** w` (1 below the target when only above)."""
        if self.penalize_only_above and value <= self.target:
            return 1.0
        return (float(value) / self.target) ** self.weight

    def apply(self, metrics, values=None):
        """The trial's metrics with the objective applied to `reward`.

        Args:
            metrics: dict of the proxy task's metrics (`reward`, `latency_ms`, `madds`, ...).
            values: dict, the trial's hyperparameter values (needed with a table).

        Returns:
            a new dict: `reward` = task reward * factor (0 when over a hard target),
            `task_reward`, `objective_factor`, `over_budget` (0/1); with a table,
            `latency_ms` predicted, `latency_from_table = 1` and the proxy's measurement
            (if any) as `measured_latency_ms`.

        Raises:
            ValueError: if the metric is missing (e.g. latency not measured and no table).
        """
        metrics = dict(metrics)
        if self._predictor is not None:
            if values is None:
                raise ValueError("a latency table predicts from the trial's values; pass values=")
            if metrics.get("latency_ms") is not None:
                metrics["measured_latency_ms"] = metrics["latency_ms"]
            before = len(self._predictor.measured)
            metrics["latency_ms"] = self._predictor.predict(values)
            metrics["latency_from_table"] = 1.0
            if len(self._predictor.measured) > before:  # the table grew for this trial
                metrics["latency_entries_measured"] = float(len(self._predictor.measured) - before)
        value = metrics.get(self.metric)
        if value is None:
            raise ValueError(
                f"the trial has no {self.metric} for the objective; give a latency table or "
                "time the trials (latency_runs > 0)"
            )
        over = float(value) > self.target
        factor = self.factor(value)
        task_reward = float(metrics["reward"])
        metrics["task_reward"] = task_reward
        metrics["objective_factor"] = factor
        metrics["over_budget"] = float(over)
        metrics["reward"] = 0.0 if (self.hard and over) else task_reward * factor
        return metrics
