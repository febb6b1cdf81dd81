"""Per-op latency tables: the JSON format, the layer walk, measuring, prediction, the device script."""

import json
import math
import os
import subprocess
import sys

import keras
import onnx
import pytest
import tensorflow as tf
from _cli import run_cli

from tfnas.cells.auxcell import AuxCell, loose_ends
from tfnas.latency.layers import SpaceShapes, inference_items, layer_key, network_items, space_items
from tfnas.latency.measure import calibration_values, local_device, measure_table, to_onnx, write_bundle
from tfnas.latency.predict import Predictor, check_table_space, error_summary
from tfnas.latency.table import LatencyTable, MissingEntryError, fit_correction
from tfnas.objectives import HardwareObjective
from tfnas.ops import ConvBN, ResizeLike, Zero
from tfnas.report.runs import format_genotype
from tfnas.spaces.auxcell import AuxCellSpace
from tfnas.spaces.dpc import DPCSpace

SHAPE = (32, 32, 3)
SCRIPT = os.path.join(os.path.dirname(__file__), "..", "tools", "device_latency.py")


def _auxcell():
    return AuxCellSpace(num_classes=4, width=4, alpha=0.35)


def _dpc():
    return DPCSpace(num_classes=4, width=4, alpha=0.35, num_branches=1)


def _table(space, entries, **kwargs):
    return LatencyTable(
        "tensorflow", "test machine", "fp32", space.name, space.config(), SHAPE, entries, 0.25, **kwargs
    )


def test_table_json_round_trip_and_schema_errors(tmp_path):
    space = _dpc()
    entries = {
        "ConvBN[ab]@1x2x2x4": {
            "layer": "ConvBN",
            "config": {"filters": 4},
            "input_shapes": [[1, 2, 2, 4]],
            "ms": 1.5,
        }
    }
    table = _table(
        space, entries, correction_ms=-0.5, calibration=[{"name": "n", "measured_ms": 1.0, "sum_ms": 1.25}]
    )
    path = table.save(str(tmp_path / "t.json"))
    loaded = LatencyTable.load(path)
    assert loaded.to_dict() == table.to_dict()
    assert loaded.ms("ConvBN[ab]@1x2x2x4") == pytest.approx(1.25)  # less the call overhead
    assert loaded.predict_ms(["ConvBN[ab]@1x2x2x4"] * 2) == pytest.approx(2.0)
    with pytest.raises(MissingEntryError, match=r"no entry 'Add\[x\]@1'.*tfnas latency measure"):
        loaded.ms("Add[x]@1")

    data = table.to_dict()
    with pytest.raises(ValueError, match="not a tfnas latency table"):
        LatencyTable.from_dict({**data, "format": "something"})
    with pytest.raises(ValueError, match="version 7"):
        LatencyTable.from_dict({**data, "version": 7})
    with pytest.raises(ValueError, match="lacks the field 'device'"):
        LatencyTable.from_dict({k: v for k, v in data.items() if k != "device"})
    with pytest.raises(ValueError, match="precision 'fp8'"):
        LatencyTable.from_dict({**data, "precision": "fp8"})
    bad = {**data, "entries": {"k": {"layer": "ConvBN", "input_shapes": [], "ms": float("nan")}}}
    with pytest.raises(ValueError, match="entry 'k' ms is nan"):
        LatencyTable.from_dict(bad)
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        LatencyTable.load(str(tmp_path / "broken.json"))


def test_auxcell_walk_splits_cells_and_every_item_is_listed_by_the_space():
    space = _auxcell()
    shapes = SpaceShapes(space, SHAPE)
    listed = space_items(space, SHAPE, shapes)
    values = space.values(space.PUBLISHED["arch0"])
    items = inference_items(space, values, SHAPE, shapes)
    keys = [layer_key(*item) for item in items]
    assert set(keys) <= set(listed)
    # By hand: arch0 runs 6 cells (2 per block) of 7 ops each; each cell sums 3 branches and
    # its loose ends; each block sums its two paths.
    cell = space.PUBLISHED["arch0"][1]
    names = [type(layer).__name__ for layer, _ in items]
    assert names[0] == "Functional" and names.count("Functional") == 1  # the encoder, whole
    assert names.count("Add") == 6 * (3 + len(loose_ends(cell)) - 1) + 3
    assert sum(name in ("ConvBN", "SepConv", "GlobalPoolConv", "Identity", "Zero") for name in names) == (
        6 * 7 + len({c for pair in space.PUBLISHED["arch0"][0] for c in pair if c < 4}) + 6 + 1
    )  # cell ops, adapters of the taps read, block aggregations, pre-classifier
    # The same keys as walking the whole standalone inference model.
    model = space.inference_model(space.build_genotype("arch0"))
    assert sorted(layer_key(*item) for item in network_items(model, [(1, *SHAPE)])) == sorted(keys)
    other = space.random_values(seed=3)
    assert {layer_key(*item) for item in inference_items(space, other, SHAPE, shapes)} <= set(listed)


def _cell_model(cell):
    x = keras.Input(batch_shape=(1, 8, 8, 4))
    return keras.Model(x, keras.layers.Conv2D(3, 1, name="head")(AuxCell(cell, 4, name="cell")(x)))


@pytest.mark.parametrize(
    "cell, running, running_folded",
    [
        # `first` (conv3x3) feeds only a zero op: pruned by every runtime.
        (
            [1, [1, 0, 10, 1], [3, 3, 1, 1], [6, 6, 1, 1]],
            ["branch1_op1", "branch2_op0", "branch2_op1", "branch3_op0", "branch3_op1"],
            ["branch1_op1", "branch2_op0", "branch2_op1", "branch3_op0", "branch3_op1"],
        ),
        # Every path from the input passes the zero op `first`: the output is a constant, which
        # ONNX folds whole; TensorFlow still runs the convs on zeros (their weights are variables).
        (
            [10, [1, 1, 1, 1], [2, 3, 1, 1], [4, 5, 1, 1]],
            ["branch1_op0", "branch1_op1", "branch2_op0", "branch2_op1", "branch3_op0", "branch3_op1"],
            [],
        ),
    ],
)
def test_items_leave_out_what_the_zero_op_prunes(tmp_path, cell, running, running_folded):
    model = _cell_model(cell)
    for fold, expected in ((False, running), (True, running_folded)):
        items = network_items(model, [(1, 8, 8, 4)], fold_constants=fold)
        assert [layer.name for layer, _ in items if isinstance(layer, ConvBN)] == expected
        assert not any(isinstance(layer, Zero) for layer, _ in items)
        assert any(layer.name == "head" for layer, _ in items) == bool(expected)
    # What tf2onnx exports (onnxruntime and TensorRT run it): the same convolutions.
    signature = [tf.TensorSpec((1, 8, 8, 4), tf.float32, name="x0")]
    path = to_onnx(
        tf.function(lambda x: model(x), input_signature=signature), signature, str(tmp_path / "m.onnx")
    )
    convs = sum(node.op_type == "Conv" for node in onnx.load(path).graph.node)
    assert convs == len(running_folded) + bool(running_folded)  # + the head


def test_prediction_is_the_sum_of_the_entries_plus_the_correction():
    space = _dpc()
    shapes = SpaceShapes(space, SHAPE)
    listed = space_items(space, SHAPE, shapes)
    entries = {key: {"layer": "x", "input_shapes": [], "ms": 0.5 + i / 100} for i, key in enumerate(listed)}
    table = _table(space, entries, correction_ms=2.0)
    values = space.values([[0, "conv1x1"]])
    predictor = Predictor(table, space)
    keys = predictor.keys(values)
    # By hand: encoder, the conv1x1 branch, the projection (no concatenation of 1 branch), the head.
    assert [key.split("[")[0] for key in keys] == ["Functional", "ConvBN", "ConvBN", "Conv2D"]
    expected = sum(entries[key]["ms"] - 0.25 for key in keys) + 2.0
    assert predictor.predict(values) == pytest.approx(expected)
    # fit_correction: the median of measured - sum over the calibration networks.
    fit_correction(
        table,
        [{"name": "a", "measured_ms": 10.0, "keys": keys}, {"name": "b", "measured_ms": 4.0, "keys": keys}],
    )
    assert table.correction_ms == pytest.approx(7.0 - table.sum_ms(keys))

    # the task's reward settings do not change the network: the table still fits
    check_table_space(
        table,
        DPCSpace(
            width=4, alpha=0.35, num_branches=1, task={"name": "segmentation", "num_classes": 4, "omit": []}
        ),
    )
    with pytest.raises(ValueError, match=r"other dpc settings \(width: table 4, space 8"):
        check_table_space(table, DPCSpace(num_classes=4, width=8, alpha=0.35, num_branches=1))
    with pytest.raises(ValueError, match="table is for the dpc space"):
        Predictor(table, _auxcell())


def test_error_summary_counts_the_share_within_10_percent_and_averages_tied_ranks():
    measured = [1.0, 2.0, 3.0, 4.0]
    predicted = [1.0, 1.0, 3.3, 3.8]  # errors 0, -50, +10, -5 %; a tie among the predictions
    rows = [
        {"predicted_ms": p, "measured_ms": m, "error_pct": 100.0 * (p - m) / m}
        for p, m in zip(predicted, measured)
    ]
    summary = error_summary(rows)
    assert summary["within_10pct"] == pytest.approx(3 / 4)
    assert summary["max_abs_error_pct"] == pytest.approx(50.0)
    assert summary["median_abs_error_pct"] == pytest.approx(7.5)
    # By hand, ranks with the tie averaged: predicted 1.5, 1.5, 3, 4 against 1, 2, 3, 4.
    assert summary["spearman"] == pytest.approx(4.5 / (4.5 * 5.0) ** 0.5)
    # Kendall's tau-b: 5 concordant pairs, 0 discordant, one pair tied in the predictions.
    assert summary["kendall_tau"] == pytest.approx(5 / (5 * 6) ** 0.5)
    assert error_summary(rows[:2])["spearman"] is None


def test_measuring_a_few_ops_in_tensorflow_gives_positive_medians():
    space = _auxcell()
    listed = space_items(space, SHAPE)
    keys = [k for k in listed if k.startswith(("SepConv", "Add"))][:3]
    table = measure_table(space, SHAPE, "tensorflow", warmup=1, runs=3, networks=0, keys=keys)
    assert sorted(table.entries) == sorted(keys)
    assert all(math.isfinite(e["ms"]) and e["ms"] > 0 for e in table.entries.values())
    assert table.runtime == "tensorflow" and table.image_shape == list(SHAPE) and table.space == "auxcell"
    assert LatencyTable.from_dict(json.loads(json.dumps(table.to_dict()))).entries == table.entries
    with pytest.raises(ValueError, match="TensorRT tables come from the device"):
        measure_table(space, SHAPE, "tensorrt")


def test_check_command_prints_each_network_as_measured_and_the_summary(tmp_path, capsys):
    """`tfnas latency check`: a line per network as it is measured, then the error summary."""
    space = _dpc()
    path = str(tmp_path / "dpc.json")
    checked = [space.random_values(seed=seed) for seed in (7, 8, 9)]
    needed = [values for _, values in calibration_values(space, 1)] + checked
    keys = sorted({layer_key(*item) for values in needed for item in inference_items(space, values, SHAPE)})
    measure_table(space, SHAPE, "tensorflow", warmup=1, runs=3, networks=1, keys=keys).save(path)
    assert run_cli(["latency", "check", path, "--top", "3", "--seed", "7"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines[:3]] == ["1/3", "2/3", "3/3"]
    for line, values in zip(lines, checked):
        assert "predicted" in line and "measured" in line
        assert line.endswith(format_genotype(space.genotype(values)))
    assert lines[3].startswith("mean |error|") and "within +-10 %" in lines[3] and "Kendall tau" in lines[3]


def _run_without_tensorflow(args):
    """Runs the device script with TensorFlow, Keras, tf2onnx and tfnas made unimportable."""
    block = "import sys; [sys.modules.__setitem__(m, None) for m in ('tensorflow', 'keras', 'tf2onnx', 'tfnas')]; "
    code = (
        block
        + f"import runpy; sys.argv = {['device_latency.py', *args]!r}; runpy.run_path({SCRIPT!r}, run_name='__main__')"
    )
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_device_script_measures_a_bundle_without_tensorflow(tmp_path):
    space = _dpc()
    ((_, values),) = calibration_values(space, 1)
    keys = sorted({layer_key(*item) for item in inference_items(space, values, SHAPE)})
    bundle = write_bundle(space, SHAPE, str(tmp_path / "bundle"), networks=1, keys=keys)
    assert os.path.exists(os.path.join(bundle, "device_latency.py"))
    out = str(tmp_path / "table.json")
    result = _run_without_tensorflow([bundle, "--runs", "3", "--warmup", "1", "--out", out])
    assert result.returncode == 0, result.stderr
    table = LatencyTable.load(out)
    assert table.runtime == "onnxruntime" and table.precision == "fp32" and sorted(table.entries) == keys
    # timed with the CPUs this process may use, recorded for `tfnas latency check`
    assert table.extra["intra_op_threads"] == len(os.sched_getaffinity(0))
    assert all(e["ms"] > 0 for e in table.entries.values())
    (network,) = table.calibration  # the correction is fitted on the bundled network
    assert table.correction_ms == pytest.approx(network["measured_ms"] - network["sum_ms"])
    assert Predictor(table, space).predict(values) == pytest.approx(network["measured_ms"])

    result = _run_without_tensorflow([bundle, "--runtime", "tensorrt", "--out", out])
    assert result.returncode == 1
    assert "TensorRT is not available here" in result.stderr and "Jetson" in result.stderr


def test_items_leave_out_what_only_gives_a_resize_its_size(tmp_path):
    """`ResizeLike` reads its reference's static size, not its values: what computes only the
    reference is pruned, as tf2onnx's export shows."""
    x = keras.Input(batch_shape=(1, 8, 8, 4))
    low = keras.layers.Conv2D(3, 1, strides=2, name="low")(x)
    reference = keras.layers.Conv2D(5, 1, name="reference")(x)  # read for its 8x8 size only
    up = ResizeLike(name="resize")([low, reference])
    model = keras.Model(x, keras.layers.Conv2D(2, 1, name="head")(up))
    for fold in (False, True):
        names = [layer.name for layer, _ in network_items(model, [(1, 8, 8, 4)], fold_constants=fold)]
        assert names == ["low", "resize", "head"]
    signature = [tf.TensorSpec((1, 8, 8, 4), tf.float32, name="x0")]
    path = to_onnx(
        tf.function(lambda x: model(x), input_signature=signature), signature, str(tmp_path / "m.onnx")
    )
    assert sum(node.op_type == "Conv" for node in onnx.load(path).graph.node) == 2  # low and head


def _template():
    from tfnas.spaces.template import TemplateSpace

    return TemplateSpace(num_classes=4, width=4, alpha=0.35)


def test_template_items_are_sampled_from_architectures_not_listed():
    space = _template()
    with pytest.raises(ValueError, match="have no listing.*--architectures N"):
        space_items(space, SHAPE)
    items = space_items(space, SHAPE, architectures=2, seed=4)
    for seed in (4, 5):  # every item of the sampled architectures, the encoder among them
        assert {layer_key(*item) for item in inference_items(space, space.random_values(seed), SHAPE)} <= set(
            items
        )


def test_a_template_table_grows_as_predictions_meet_new_layers(tmp_path):
    """The template space's shapes cannot be listed: a table measured here times what it lacks."""
    space = _template()
    table = measure_table(space, SHAPE, "tensorflow", warmup=1, runs=2, networks=1, architectures=1)
    assert table.device == local_device("tensorflow") and len(table.calibration) == 1
    values = next(space.random_values(seed) for seed in range(1, 50) if _lacks(table, space, seed))
    with pytest.raises(KeyError, match="has no entry"):
        Predictor(table, space).predict(values)
    before = set(table.entries)
    predictor = Predictor(table, space, measure_missing=True)
    predicted = predictor.predict(values)
    keys = predictor.keys(values)
    assert set(predictor.measured) == set(keys) - before and set(table.entries) == before | set(keys)
    assert predicted == pytest.approx(table.predict_ms(keys))
    assert all(table.entries[k]["ms"] > 0 for k in predictor.measured)
    measured = list(predictor.measured)
    assert predictor.predict(values) == pytest.approx(predicted) and predictor.measured == measured
    # A search's objective grows a table measured on this machine, and says so in the metrics.
    path = str(tmp_path / "template.json")
    LatencyTable.from_dict(dict(table.to_dict(), entries={k: table.entries[k] for k in before})).save(path)
    objective = HardwareObjective("latency_ms", 10.0, table=path).bind(space)
    metrics = objective.apply({"reward": 0.5}, values)
    assert metrics["latency_entries_measured"] == len(measured) and metrics["latency_ms"] > 0
    assert "latency_entries_measured" not in objective.apply({"reward": 0.5}, values)
    # A table from another machine is never topped up with entries timed here.
    table.device = "NVIDIA Jetson Orin Nano, onnxruntime 1.20 CUDAExecutionProvider"
    with pytest.raises(ValueError, match="not on this machine"):
        Predictor(table, space, measure_missing=True)


def _lacks(table, space, seed):
    return any(k not in table.entries for k in Predictor(table, space).keys(space.random_values(seed)))
