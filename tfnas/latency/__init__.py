"""Per-op latency tables (issue 14): measure once per runtime and device, predict every trial.

- `table`: the JSON format `LatencyTable` (runtime, device, precision, date, entries) and
  `fit_correction`; standard library only.
- `layers`: the items (layer configuration + input shapes) a network or a space runs, and
  their table keys.
- `measure`: `measure_table` (TensorFlow or onnxruntime here), `write_bundle` (for the device).
- `device`: the standalone device script (onnxruntime / TensorRT, no TensorFlow), also
  `tools/device_latency.py`.
- `predict`: `Predictor` (a network's latency from the table) and `table_error`.
- `cli`: `tfnas latency measure | bundle | check`.

See docs/latency.md.
"""

from tfnas.latency.table import LatencyTable, MissingEntryError, fit_correction

__all__ = ["LatencyTable", "MissingEntryError", "fit_correction"]
