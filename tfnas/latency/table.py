"""The per-op latency table: one JSON file per space, image size, runtime, device and precision.

A table holds the measured latency of every layer configuration a search space uses, at
every input shape it sees at one image size (`tfnas.latency.layers`), and the correction
that turns a sum of entries into a network's latency (`fit_correction`). It is measured
once (`tfnas latency measure` with TensorFlow or onnxruntime here; `tools/device_latency.py`
with onnxruntime or TensorRT on the device) and read by `tfnas search --latency-table`.

This module uses the Python standard library only: the standalone device script
(`tfnas/latency/device.py`, copied into every bundle) writes tables with it, without
TensorFlow or tfnas installed.

    {
      "format": "tfnas-latency-table", "version": 1,
      "runtime": "tensorflow", "device": "x86_64, Intel(R) Xeon(R) ...", "precision": "fp32",
      "date": "2026-11-24T10:00:00+00:00", "tfnas_version": "0.1.0",
      "space": "auxcell", "space_config": {...}, "image_shape": [48, 48, 3],
      "warmup": 5, "runs": 20, "call_overhead_ms": 0.05,
      "correction_ms": -0.4, "calibration": [{"name": ..., "measured_ms": ..., "sum_ms": ...}],
      "entries": {"ConvBN[1f3a...]@1x12x12x16": {"layer": "ConvBN", "config": {...},
                  "input_shapes": [[1, 12, 12, 16]], "ms": 0.21}, ...}
    }

An entry's `ms` is the median time of one call of that layer alone, overhead included;
`call_overhead_ms` is the median time of a call that does nothing (a framework's dispatch
and copy-out), taken off every entry when summing.
"""

import datetime
import json
import math
import os
import statistics
import tempfile

FORMAT = "tfnas-latency-table"
VERSION = 1
RUNTIMES = ("tensorflow", "onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "fp16", "int8")
_REQUIRED = {
    "runtime": str,
    "device": str,
    "precision": str,
    "date": str,
    "tfnas_version": str,
    "space": str,
    "space_config": dict,
    "image_shape": list,
    "call_overhead_ms": (int, float),
    "correction_ms": (int, float),
    "entries": dict,
}


class MissingEntryError(KeyError):
    """A table has no entry for a layer a network runs (a `KeyError` that prints its message)."""

    def __str__(self):
        return str(self.args[0]) if self.args else ""


def now():
    """The current time as an ISO 8601 string with time zone (a table's `date`)."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def _finite(value, where, minimum=None):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{where} is {value!r}; expected a finite number")
    if minimum is not None and value < minimum:
        raise ValueError(f"{where} is {value!r}; expected at least {minimum}")
    return float(value)


class LatencyTable:
    """A per-op latency table (see the module docstring for the JSON form).

    Args:
        runtime: str, one of `RUNTIMES`.
        device: str, the machine the table was measured on, in words.
        precision: str, one of `PRECISIONS`.
        space: str, the space's registry name (`tfnas.spaces.SPACES`).
        space_config: dict, the space's `config()`.
        image_shape: `(H, W, C)` the table was measured for.
        entries: dict key -> `{"layer", "config", "input_shapes", "ms"}`.
        call_overhead_ms: float, median time of an empty call, taken off each entry.
        correction_ms: float, added to the sum of entries (`fit_correction`). Default 0.
        calibration: list of dicts `{"name", "measured_ms", "sum_ms"}`, the networks the
            correction was fitted on.
        date: str, ISO 8601; default now.
        tfnas_version: str; default "unknown" (the device script does not know it).
        warmup, runs: ints, the untimed and timed calls per entry.
        extra: dict of other JSON fields kept as they are (e.g. the providers used).

    Raises:
        ValueError: for an unknown runtime or precision, or a bad entry.
    """

    def __init__(
        self,
        runtime,
        device,
        precision,
        space,
        space_config,
        image_shape,
        entries,
        call_overhead_ms,
        correction_ms=0.0,
        calibration=(),
        date=None,
        tfnas_version="unknown",
        warmup=None,
        runs=None,
        extra=None,
    ):
        if runtime not in RUNTIMES:
            raise ValueError(f"runtime {runtime!r} is not one of {RUNTIMES}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision {precision!r} is not one of {PRECISIONS}")
        self.runtime, self.device, self.precision = runtime, str(device), precision
        self.space, self.space_config = str(space), dict(space_config)
        self.image_shape = [int(d) for d in image_shape]
        if len(self.image_shape) != 3 or min(self.image_shape) < 1:
            raise ValueError(f"image_shape {list(image_shape)!r} must be [H, W, C] with positive sizes")
        self.entries = {}
        for key, entry in dict(entries).items():
            self.entries[key] = self._check_entry(key, entry)
        self.call_overhead_ms = _finite(call_overhead_ms, "call_overhead_ms", 0.0)
        self.correction_ms = _finite(correction_ms, "correction_ms")
        self.calibration = [dict(c) for c in calibration]
        self.date = date or now()
        self.tfnas_version = str(tfnas_version)
        self.warmup, self.runs = warmup, runs
        self.extra = dict(extra or {})

    @staticmethod
    def _check_entry(key, entry):
        if not isinstance(entry, dict):
            raise ValueError(f"entry {key!r} is {entry!r}; expected a dict with layer, input_shapes and ms")
        missing = [f for f in ("layer", "input_shapes", "ms") if f not in entry]
        if missing:
            raise ValueError(
                f"entry {key!r} lacks {missing}; entries have layer, config, input_shapes and ms"
            )
        _finite(entry["ms"], f"entry {key!r} ms", 0.0)
        return {**entry, "ms": float(entry["ms"])}

    # --- lookup ---------------------------------------------------------------------------
    def ms(self, key):
        """An entry's time with the call overhead taken off (never below 0).

        Raises:
            MissingEntryError: (a `KeyError`) naming the key and saying to measure a table
                for this space and size.
        """
        if key not in self.entries:
            raise MissingEntryError(
                f"the {self.runtime} latency table of the {self.space} space at "
                f"{'x'.join(map(str, self.image_shape))} has no entry {key!r}; measure a table "
                "for this space, width and image size (tfnas latency measure)"
            )
        return max(self.entries[key]["ms"] - self.call_overhead_ms, 0.0)

    def sum_ms(self, keys):
        """Sum of `ms(key)` over `keys` (a key counts as often as it appears)."""
        return sum(self.ms(key) for key in keys)

    def predict_ms(self, keys):
        """A network's predicted latency: the sum of its entries plus `correction_ms`."""
        return self.sum_ms(keys) + self.correction_ms

    # --- JSON -----------------------------------------------------------------------------
    def to_dict(self):
        """The JSON-able dict of the module docstring."""
        return {
            "format": FORMAT,
            "version": VERSION,
            **self.extra,
            "runtime": self.runtime,
            "device": self.device,
            "precision": self.precision,
            "date": self.date,
            "tfnas_version": self.tfnas_version,
            "space": self.space,
            "space_config": self.space_config,
            "image_shape": self.image_shape,
            "warmup": self.warmup,
            "runs": self.runs,
            "call_overhead_ms": self.call_overhead_ms,
            "correction_ms": self.correction_ms,
            "calibration": self.calibration,
            "entries": self.entries,
        }

    @classmethod
    def from_dict(cls, data, source="the table"):
        """Reads the dict form, checking the format, version and every field.

        Args:
            data: dict, as `to_dict` writes it.
            source: str naming where it came from, for errors.

        Raises:
            ValueError: naming the first missing or malformed field.
        """
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ValueError(
                f"{source} is not a tfnas latency table (format {found!r}, expected {FORMAT!r}); "
                "write one with `tfnas latency measure` or tools/device_latency.py"
            )
        if data.get("version") != VERSION:
            raise ValueError(
                f"{source} has table version {data.get('version')!r}; this tfnas reads version {VERSION}"
            )
        for field, kind in _REQUIRED.items():
            if field not in data:
                raise ValueError(f"{source} lacks the field {field!r}")
            if isinstance(data[field], bool) or not isinstance(data[field], kind):
                raise ValueError(f"{source} field {field!r} is {data[field]!r}; expected {kind}")
        known = set(_REQUIRED) | {"format", "version", "warmup", "runs", "calibration"}
        return cls(
            data["runtime"],
            data["device"],
            data["precision"],
            data["space"],
            data["space_config"],
            data["image_shape"],
            data["entries"],
            data["call_overhead_ms"],
            correction_ms=data["correction_ms"],
            calibration=data.get("calibration") or (),
            date=data["date"],
            tfnas_version=data["tfnas_version"],
            warmup=data.get("warmup"),
            runs=data.get("runs"),
            extra={k: v for k, v in data.items() if k not in known},
        )

    def save(self, path):
        """Writes the table as JSON (to a temporary file renamed over `path`)."""
        directory = os.path.dirname(os.path.abspath(path))
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp", suffix=".json", dir=directory)
        try:
            with os.fdopen(fd, "w") as f:
                json.dump(self.to_dict(), f, indent=1, sort_keys=False)
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.remove(tmp)
        return path

    @classmethod
    def load(cls, path):
        """Reads a table file.

        Raises:
            FileNotFoundError: if `path` does not exist.
            ValueError: if it is not valid JSON or not a table.
        """
        with open(path) as f:
            try:
                data = json.load(f)
            except json.JSONDecodeError as err:
                raise ValueError(f"latency table {path!r} is not valid JSON: {err}") from None
        return cls.from_dict(data, source=f"latency table {path!r}")


def fit_correction(table, calibration):
    """Fits `table.correction_ms` on measured networks and records them in the table.

    The correction is the median of (measured latency - sum of the network's entries): what
    a whole network costs beyond its layers (or saves: one call instead of many).

    Args:
        table: `LatencyTable`, its entries measured.
        calibration: list of dicts `{"name": str, "measured_ms": float, "keys": [entry keys]}`.

    Returns:
        float, the correction (also set on `table`).

    Raises:
        ValueError: if `calibration` is empty.
    """
    if not calibration:
        raise ValueError("fit_correction needs at least one measured network")
    records = []
    for network in calibration:
        measured = _finite(network["measured_ms"], f"network {network['name']!r} measured_ms", 0.0)
        records.append(
            {"name": network["name"], "measured_ms": measured, "sum_ms": table.sum_ms(network["keys"])}
        )
    table.correction_ms = float(statistics.median(r["measured_ms"] - r["sum_ms"] for r in records))
    table.calibration = records
    return table.correction_ms


__all__ = [
    "FORMAT",
    "PRECISIONS",
    "RUNTIMES",
    "VERSION",
    "LatencyTable",
    "MissingEntryError",
    "fit_correction",
    "now",
]
