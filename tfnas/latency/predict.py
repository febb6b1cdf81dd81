"""A network's latency predicted from a per-op table, and the table's error against measurement.

Predicted latency = sum over the items of the architecture's standalone inference model
(`tfnas.latency.layers.inference_items`: the encoder whole, each decoder layer, each op of
each cell) of their table entries less the call overhead, plus the table's correction fitted
on whole networks (`tfnas.latency.table.fit_correction`). Prediction builds the decoder only
(no training, nothing timed), so it is cheap enough for every trial of a search. With
`measure_missing=True` a table measured on this machine (TensorFlow or onnxruntime) times the
items it lacks the first time an architecture needs them (`measure_entries`): how the template
space's table, which cannot list its combinatorial shapes ahead, grows during a search.

    >>> predictor = Predictor(LatencyTable.load("auxcell_48_tf.json"), space)
    >>> predictor.predict(values)                                   # ms
    >>> table_error(table, space, [space.random_values(s) for s in range(10)])
"""

import math
import statistics
import tempfile

import scipy.stats
import tensorflow as tf

from tfnas.latency import device
from tfnas.latency.layers import SpaceShapes, folds_constants, inference_items, layer_key, space_name
from tfnas.latency.measure import inference_network, local_device, measure_entries, time_tf, to_onnx

#: Space settings that do not change a network's speed, ignored when matching a table.
_UNTIMED = ("encoder_weights", "input_shape")
#: Task settings that shape the network (the head); its loss and reward settings do not.
_TASK_TIMED = ("name", "num_classes")


def _timed_config(config):
    timed = {k: v for k, v in config.items() if k not in _UNTIMED}
    if isinstance(timed.get("task"), dict):
        timed["task"] = {k: v for k, v in timed["task"].items() if k in _TASK_TIMED}
    return timed


def check_table_space(table, space):
    """Raises unless the table was measured for this space and these settings.

    Settings that do not change the network (encoder weights, the input shape, the task's
    loss and reward settings) are not compared; a head the table lacks shows as a missing
    entry when predicting.

    Raises:
        ValueError: naming the settings that differ.
    """
    name = space_name(space)
    if table.space != name:
        raise ValueError(f"the latency table is for the {table.space} space, the search is over {name}")
    config, measured = _timed_config(space.config()), _timed_config(table.space_config)
    differ = sorted(k for k in set(config) | set(measured) if config.get(k) != measured.get(k))
    if differ:
        pairs = ", ".join(f"{k}: table {measured.get(k)!r}, space {config.get(k)!r}" for k in differ)
        raise ValueError(
            f"the latency table was measured for other {name} settings ({pairs}); measure a table "
            "for these settings (tfnas latency measure)"
        )


class Predictor:
    """Predicts architectures' latencies from a table (see the module docstring).

    Args:
        table: `tfnas.latency.table.LatencyTable`.
        space: the space the table was measured for (checked by `check_table_space`).
        measure_missing: bool, time the items an architecture needs and the table lacks
            (`measure_entries`; the table's runtime on the machine it was measured on), so
            the table grows. Default False: a missing item is an error.
        log: optional function taking one line of progress (each item measured).

    Attributes:
        measured: list of the keys measured so far (`measure_missing`).

    Raises:
        ValueError: if the table is for another space or other settings, or
            `measure_missing` for a table measured elsewhere (a device's).
    """

    def __init__(self, table, space, measure_missing=False, log=None):
        check_table_space(table, space)
        self.table, self.space = table, space
        self.image_shape = tuple(table.image_shape)
        self.shapes = SpaceShapes(space, self.image_shape)
        self.measure_missing, self.log, self.measured = bool(measure_missing), log, []
        if self.measure_missing and table.device != local_device(table.runtime):
            raise ValueError(
                f"measure_missing: the table was measured on {table.device!r} ({table.runtime}), "
                "not on this machine; missing entries can only be timed where the table was measured"
            )

    def _items(self, values):
        return inference_items(
            self.space,
            values,
            self.image_shape,
            self.shapes,
            fold_constants=folds_constants(self.table.runtime),
        )

    def keys(self, values):
        """The table keys of the architecture `values` (a key repeats for each use)."""
        return [layer_key(*item) for item in self._items(values)]

    def predict(self, values):
        """Predicted latency (ms) of the architecture `values` at the table's image size.

        Raises:
            KeyError: if the table lacks one of its items (naming it) and `measure_missing`
                is off.
        """
        items = self._items(values)
        keys = [layer_key(*item) for item in items]
        if self.measure_missing:
            missing = {k: item for k, item in zip(keys, items) if k not in self.table.entries}
            if missing:
                self.measured += measure_entries(self.table, missing, log=self.log)
        return self.table.predict_ms(keys)


def measure_network(table, space, values, warmup=None, runs=None):
    """Measures an architecture's latency with the table's runtime, on this machine.

    Raises:
        ValueError: for a TensorRT table (measure those on the device).
    """
    warmup = table.warmup if warmup is None else warmup
    runs = table.runs if runs is None else runs
    warmup, runs = (5 if warmup is None else warmup), (20 if runs is None else runs)
    model = inference_network(space, values)
    shape = [(1, *table.image_shape)]
    signature = [tf.TensorSpec(shape[0], tf.float32, name="x0")]
    function = tf.function(lambda x: model(x, training=False), input_signature=signature)
    if table.runtime == "tensorflow":
        return time_tf(function, shape, warmup, runs)
    if table.runtime == "onnxruntime":
        with tempfile.TemporaryDirectory() as tmp:
            path = to_onnx(function, signature, f"{tmp}/network.onnx")
            # as many threads as the table's entries were timed with (a table measured under
            # taskset, checked without it, would otherwise compare 1 thread against 2)
            threads = table.extra.get("intra_op_threads")
            return device.time_onnx(path, device.providers("onnxruntime"), warmup, runs, threads)
    raise ValueError(
        f"a {table.runtime} table is checked on its device: put the architectures in a bundle "
        "(tfnas latency bundle) and compare there"
    )


def table_error(table, space, values_list, warmup=None, runs=None, on_network=None):
    """The table's error: predicted against measured latency of some architectures.

    Args:
        table: `LatencyTable` (TensorFlow or onnxruntime, measured on this machine).
        space: its space.
        values_list: list of hyperparameter-value dicts.
        warmup, runs: timing of each network (default: the table's).
        on_network: optional callable `(index, row)` called as each network is measured
            (each takes seconds: a build, for onnxruntime a conversion, and the timing), with
            `row` as in `networks` below; for progress output.

    Returns:
        dict: `networks` (list of `{"genotype", "predicted_ms", "measured_ms", "error_pct"}`)
        and the `error_summary` of those rows.
    """
    # a table measured here (what can be checked here) times the items it lacks (template space)
    predictor = Predictor(table, space, measure_missing=table.device == local_device(table.runtime))
    rows = []
    for values in values_list:
        predicted = predictor.predict(values)
        measured = measure_network(table, space, values, warmup, runs)
        rows.append(
            {
                "genotype": space.genotype(values),
                "predicted_ms": predicted,
                "measured_ms": measured,
                "error_pct": 100.0 * (predicted - measured) / measured,
            }
        )
        if on_network is not None:
            on_network(len(rows) - 1, rows[-1])
    return {"networks": rows, **error_summary(rows)}


def error_summary(rows):
    """How well predicted latencies match measured ones.

    Args:
        rows: list of dicts with `predicted_ms`, `measured_ms` and `error_pct`
            (`100 * (predicted - measured) / measured`), as `table_error` makes them.

    Returns:
        dict: `mean_abs_error_pct`, `median_abs_error_pct`, `max_abs_error_pct`,
        `within_10pct` (share of rows within +-10 %, nn-Meter's measure), and `spearman`
        and `kendall_tau` (scipy's, ties averaged; None for fewer than 3 rows or no spread).
    """
    errors = [abs(r["error_pct"]) for r in rows]
    predicted, measured = [r["predicted_ms"] for r in rows], [r["measured_ms"] for r in rows]
    return {
        "mean_abs_error_pct": statistics.fmean(errors),
        "median_abs_error_pct": statistics.median(errors),
        "max_abs_error_pct": max(errors),
        "within_10pct": sum(e <= 10.0 for e in errors) / len(errors),
        "spearman": _rank_correlation(scipy.stats.spearmanr, predicted, measured),
        "kendall_tau": _rank_correlation(scipy.stats.kendalltau, predicted, measured),
    }


def _rank_correlation(statistic, a, b):
    """`statistic(a, b)`'s coefficient as a float; None for fewer than 3 pairs or no spread."""
    if len(a) < 3:
        return None
    value = float(statistic(a, b).statistic)
    return None if math.isnan(value) else value


__all__ = ["Predictor", "check_table_space", "error_summary", "measure_network", "table_error"]
