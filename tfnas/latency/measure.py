"""Measuring a latency table: every layer of a space timed alone, in TensorFlow or onnxruntime.

`measure_table(space, image_shape, runtime)` lists every item the space can run at that
image size (`tfnas.latency.layers.space_items`), times each one alone (random input of its
shape, batch 1, `warmup` untimed calls then the median of `runs`), times an empty call (the
overhead taken off every entry), and fits the table's correction on a few whole networks
(random architectures of the space, seeded) timed the same way (`table.fit_correction`).

- `runtime="tensorflow"`: each item is a `tf.function` of `layer(x, training=False)`, its
  outputs copied to numpy as `tfnas.profile.latency` does;
- `runtime="onnxruntime"`: each item is converted with tf2onnx at its fixed shape
  (`write_bundle`) and timed by `tfnas.latency.device`, the code the device runs.

`write_bundle` writes what `tools/device_latency.py` needs on a device: one ONNX model per
item, the calibration networks, an empty model, `manifest.json`, and the script itself.

A space without a listing of its items (the template space) is measured on the items of
`architectures` random architectures (those of the calibration networks among them), and
`measure_entries` adds the items a table lacks later, on the machine and runtime it was
measured with (what `tfnas.latency.predict.Predictor(measure_missing=True)` does as a search
meets new layers).

    >>> table = measure_table(AuxCellSpace(num_classes=4, width=16, alpha=0.35), (48, 48, 3))
    >>> table.save("auxcell_48_tf.json")
"""

import json
import logging
import os
import shutil

import keras
import numpy as np
import tensorflow as tf

import tfnas
from tfnas.latency import device
from tfnas.latency.layers import (
    SpaceShapes,
    folds_constants,
    inference_items,
    layer_config,
    layer_key,
    space_items,
    space_name,
)
from tfnas.latency.table import LatencyTable, fit_correction

RUNTIMES = ("tensorflow", "onnxruntime")


def _call_layer(layer, inputs):
    if not isinstance(layer, keras.layers.Layer):  # a Keras op of a functional graph (`x + y`)
        return layer(*inputs)
    multi = len(inputs) > 1 or isinstance(layer, keras.layers.Add)
    return layer(list(inputs) if multi else inputs[0], training=False)


def _forward(layer, shapes):
    """A `tf.function` of the item at its fixed shapes, and its input signature."""
    signature = [tf.TensorSpec(s, tf.float32, name=f"x{i}") for i, s in enumerate(shapes)]
    return tf.function(lambda *xs: _call_layer(layer, xs), input_signature=signature), signature


def time_tf(function, shapes, warmup=5, runs=20):
    """Median latency (ms) of a `tf.function` on random inputs of `shapes`, outputs to numpy."""
    rng = np.random.default_rng(0)
    inputs = [tf.constant(rng.uniform(-1, 1, s).astype("float32")) for s in shapes]

    def call():
        tf.nest.map_structure(lambda t: t.numpy(), function(*inputs))

    return device.median_ms(call, warmup, runs)


def time_item_tf(layer, shapes, warmup=5, runs=20):
    """Median latency (ms) of one layer alone in TensorFlow (see the module docstring)."""
    function, _ = _forward(layer, shapes)
    return time_tf(function, shapes, warmup, runs)


def tf_overhead_ms(warmup=5, runs=20):
    """Median time of a `tf.function` that does nothing but return its (1-element) input."""
    return time_tf(tf.function(tf.identity), [(1, 1, 1, 1)], warmup, runs)


def calibration_values(space, networks, seed=0):
    """`networks` seeded random architectures of the space: list of `(name, values)`."""
    return [(f"random{seed + i}", space.random_values(seed=seed + i)) for i in range(int(networks))]


def inference_network(space, values):
    """The standalone inference model of an architecture (fresh weights: only its speed counts)."""
    return space.inference_model(space.build(space.hyperparameters(values)))


def _base_table(space, image_shape, runtime, entries, overhead, warmup, runs, words):
    return LatencyTable(
        runtime,
        device.describe_device(words),
        "fp32",
        space_name(space),
        space.config(),
        image_shape,
        entries,
        overhead,
        tfnas_version=tfnas.__version__,
        warmup=warmup,
        runs=runs,
    )


def _entry(key, layer, shapes):
    # JSON's form (tuples as lists), so a saved and reloaded table compares equal
    config = (
        None if isinstance(layer, keras.Model) else json.loads(json.dumps(layer_config(layer), default=str))
    )
    return {"layer": type(layer).__name__, "config": config, "input_shapes": [list(s) for s in shapes]}


def measure_table(
    space,
    image_shape,
    runtime="tensorflow",
    warmup=5,
    runs=20,
    networks=3,
    seed=0,
    keys=None,
    log=None,
    architectures=None,
):
    """Measures the latency table of a space at one image size on this machine.

    Args:
        space: an auxcell or DPC space (`tfnas.latency.layers.SPACE_ITEMS`).
        image_shape: `(H, W, 3)`, the size to predict latencies for (the deployment size).
        runtime: "tensorflow" or "onnxruntime" (CPU).
        warmup, runs: untimed and timed calls per item (the median is kept). Defaults 5, 20.
        networks: int >= 0, random architectures timed whole to fit the correction. Default 3.
        seed: int, seed of those architectures.
        keys: optional list of item keys to measure (a partial table, e.g. for tests);
            default every item of the space.
        log: optional function taking one line of progress.
        architectures: int, for a space without a listing (the template space): measure the
            items of this many random architectures (at least `networks`; `space_items`).

    Returns:
        `LatencyTable`.

    Raises:
        ValueError: for an unknown runtime or space, or a key the space does not have.
    """
    if runtime not in RUNTIMES:
        raise ValueError(
            f"runtime {runtime!r} is measured here as one of {RUNTIMES}; TensorRT tables come from "
            "the device: tfnas latency bundle, then tools/device_latency.py there"
        )
    image_shape = tuple(int(d) for d in image_shape)
    shapes = SpaceShapes(space, image_shape)
    items = _select(_listed(space, image_shape, shapes, architectures, networks, seed), keys)
    if runtime == "onnxruntime":
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            write_bundle(
                space,
                image_shape,
                tmp,
                networks=networks,
                seed=seed,
                keys=keys,
                shapes=shapes,
                log=log,
                architectures=architectures,
            )
            table = device.measure_bundle(tmp, "onnxruntime", warmup=warmup, runs=runs, log=log)
        table.tfnas_version = tfnas.__version__
        return table
    entries = {}
    for i, (key, (layer, item_shapes)) in enumerate(items.items()):
        entries[key] = {
            **_entry(key, layer, item_shapes),
            "ms": time_item_tf(layer, item_shapes, warmup, runs),
        }
        if log:
            log(f"[{i + 1}/{len(items)}] {key}: {entries[key]['ms']:.3f} ms")
    table = _base_table(
        space,
        image_shape,
        "tensorflow",
        entries,
        tf_overhead_ms(warmup, runs),
        warmup,
        runs,
        f"TensorFlow {tf.__version__} CPU",
    )
    calibration = []
    for name, values in calibration_values(space, networks, seed):
        model = inference_network(space, values)
        measured = time_tf(
            tf.function(lambda x, m=model: m(x, training=False)), [(1, *image_shape)], warmup, runs
        )
        items = inference_items(
            space, values, image_shape, shapes, fold_constants=folds_constants("tensorflow")
        )
        calibration.append(
            {"name": name, "measured_ms": measured, "keys": [layer_key(*item) for item in items]}
        )
    if calibration:
        fit_correction(table, calibration)
    return table


def _listed(space, image_shape, shapes, architectures, networks, seed):
    """`space_items`, sampling at least the calibration networks' architectures when sampling."""
    if architectures is not None:
        architectures = max(int(architectures), int(networks))
    return space_items(space, image_shape, shapes, architectures=architectures, seed=seed)


def local_device(runtime):
    """How this machine describes itself for `runtime` (a table's `device` when measured here)."""
    if runtime == "tensorflow":
        return device.describe_device(f"TensorFlow {tf.__version__} CPU")
    if runtime == "onnxruntime":
        return device.describe_device(
            f"onnxruntime {device.import_onnxruntime().__version__} CPUExecutionProvider"
        )
    return None


def measure_entries(table, items, log=None):
    """Times items a table lacks, as its own entries were timed, and adds them to it.

    Only on the machine and runtime the table was measured with (its `device` must be this
    machine's, `local_device`): entries timed elsewhere would not add up with the table's.

    Args:
        table: a TensorFlow or onnxruntime `LatencyTable` measured on this machine.
        items: dict key -> `(layer, input_shapes)` (e.g. from `inference_items`).
        log: optional function taking one line of progress.

    Returns:
        list of the keys added.

    Raises:
        ValueError: for a table of another runtime or machine.
    """
    here = local_device(table.runtime)
    if here is None or table.device != here:
        raise ValueError(
            f"the table lacks {len(items)} item(s) (e.g. {next(iter(items), '?')}) and was measured "
            f"on {table.device!r} ({table.runtime}), not here ({here or 'no local ' + table.runtime}); "
            "measure them where the table was measured (tfnas latency bundle for a device)"
        )
    warmup = 5 if table.warmup is None else table.warmup
    runs = 20 if table.runs is None else table.runs
    added = []
    for key, (layer, item_shapes) in items.items():
        if key in table.entries:
            continue
        if table.runtime == "tensorflow":
            ms = time_item_tf(layer, item_shapes, warmup, runs)
        else:
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                path = to_onnx(*_forward(layer, item_shapes), os.path.join(tmp, "item.onnx"))
                threads = table.extra.get("intra_op_threads")
                ms = device.time_onnx(path, device.providers("onnxruntime"), warmup, runs, threads)
        table.entries[key] = {**_entry(key, layer, item_shapes), "ms": ms}
        added.append(key)
        if log:
            log(f"measured {key}: {ms:.3f} ms")
    return added


def _select(items, keys):
    if keys is None:
        return items
    unknown = [k for k in keys if k not in items]
    if unknown:
        raise ValueError(
            f"the space has no items {unknown[:3]}; pick keys of tfnas.latency.layers.space_items"
        )
    return {k: items[k] for k in keys}


def to_onnx(function, signature, path):
    """Converts a fixed-shape `tf.function` to ONNX with tf2onnx (opset 17, as the exports)."""
    import tf2onnx

    logging.getLogger("tf2onnx").setLevel(logging.ERROR)
    with tf.device("/cpu:0"):
        tf2onnx.convert.from_function(function, input_signature=signature, opset=17, output_path=path)
    return path


def _empty_onnx(path):
    """An ONNX model that returns its 1-element input (the call overhead)."""
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x0", TensorProto.FLOAT, [1, 1, 1, 1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 1, 1, 1])
    graph = helper.make_graph([helper.make_node("Identity", ["x0"], ["y"])], "empty", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    onnx.save(model, path)


def write_bundle(
    space, image_shape, out_dir, networks=3, seed=0, keys=None, shapes=None, log=None, architectures=None
):
    """Writes the folder `tools/device_latency.py` measures on a device.

    Args:
        space: a space (without a listing, the template space: give `architectures`).
        image_shape: `(H, W, 3)`.
        out_dir: str, the folder (created; files in it are replaced).
        networks: int, random architectures converted whole for the correction.
        seed: int, their seed.
        keys: optional subset of item keys (default all).
        shapes: optional `SpaceShapes`.
        log: optional function taking one line of progress.
        architectures: int, for a space without a listing: the random architectures whose
            items are converted (at least `networks`; see `measure_table`).

    Returns:
        str, `out_dir`.
    """
    image_shape = tuple(int(d) for d in image_shape)
    shapes = shapes or SpaceShapes(space, image_shape)
    items = _select(_listed(space, image_shape, shapes, architectures, networks, seed), keys)
    os.makedirs(os.path.join(out_dir, "ops"), exist_ok=True)
    os.makedirs(os.path.join(out_dir, "networks"), exist_ok=True)
    entries = {}
    for i, (key, (layer, item_shapes)) in enumerate(items.items()):
        name = f"ops/{i:04d}.onnx"
        to_onnx(*_forward(layer, item_shapes), os.path.join(out_dir, name))
        entries[key] = {**_entry(key, layer, item_shapes), "file": name}
        if log:
            log(f"[{i + 1}/{len(items)}] converted {key}")
    network_records = []
    for name, values in calibration_values(space, networks, seed):
        model = inference_network(space, values)
        file = f"networks/{name}.onnx"
        signature = [tf.TensorSpec((1, *image_shape), tf.float32, name="x0")]
        to_onnx(
            tf.function(lambda x, m=model: m(x, training=False), input_signature=signature),
            signature,
            os.path.join(out_dir, file),
        )
        # onnxruntime and TensorRT, the runtimes of a bundle, both fold constants
        items = inference_items(space, values, image_shape, shapes, fold_constants=True)
        keys_of = [layer_key(*item) for item in items]
        network_records.append(
            {"name": name, "file": file, "keys": keys_of, "genotype": space.genotype(values)}
        )
    _empty_onnx(os.path.join(out_dir, "empty.onnx"))
    manifest = {
        "format": device.BUNDLE_FORMAT,
        "version": 1,
        "space": space_name(space),
        "space_config": space.config(),
        "image_shape": list(image_shape),
        "tfnas_version": tfnas.__version__,
        "call_overhead": "empty.onnx",
        "entries": entries,
        "networks": network_records,
    }
    from tfnas.io import atomic_write_json

    atomic_write_json(os.path.join(out_dir, device.MANIFEST), manifest)
    here = os.path.dirname(os.path.abspath(__file__))
    shutil.copyfile(os.path.join(here, "device.py"), os.path.join(out_dir, "device_latency.py"))
    shutil.copyfile(os.path.join(here, "table.py"), os.path.join(out_dir, "table.py"))
    return out_dir


__all__ = [
    "RUNTIMES",
    "local_device",
    "measure_entries",
    "measure_table",
    "time_item_tf",
    "time_tf",
    "to_onnx",
    "write_bundle",
]
