"""Hardware-aware objectives: units, the MnasNet soft term, the hard constraint in a real search, CLI."""

import json
import os

import pytest
from _cli import run_cli
from keras_tuner.engine.trial import TrialStatus
from test_tuner import SIZE, TinySpace, _tuner

from tfnas.data import digit_scenes
from tfnas.latency.layers import space_items
from tfnas.latency.predict import Predictor
from tfnas.latency.table import LatencyTable
from tfnas.objectives import HardwareObjective, parse_count, parse_latency
from tfnas.spaces.dpc import DPCSpace
from tfnas.tuners import make_oracle


def test_units_parse_and_bad_units_are_named():
    assert parse_latency("33ms") == 33.0
    assert parse_latency("0.033s") == pytest.approx(33.0)
    assert parse_latency("33000us") == pytest.approx(33.0)
    assert parse_count("2G") == 2e9 and parse_count("500M") == 5e8 and parse_count("1.5e9") == 1.5e9
    with pytest.raises(ValueError, match=r"latency '33parsecs' is not a positive number with a unit"):
        parse_latency("33parsecs")
    with pytest.raises(ValueError, match=r"latency '0ms'"):
        parse_latency("0ms")
    with pytest.raises(ValueError, match=r"multiply-adds '2X' is not a positive count"):
        parse_count("2X")


def test_soft_term_is_mnasnet_formula():
    objective = HardwareObjective("latency_ms", 33.0)  # w = -0.07
    for latency in (16.5, 33.0, 66.0):
        metrics = objective.apply({"reward": 0.6, "latency_ms": latency, "madds": 5})
        assert metrics["reward"] == pytest.approx(0.6 * (latency / 33.0) ** -0.07)
        assert metrics["task_reward"] == 0.6 and metrics["over_budget"] == float(latency > 33.0)
    assert (
        objective.apply({"reward": 0.6, "latency_ms": 66.0})["reward"]
        < 0.6
        < objective.apply({"reward": 0.6, "latency_ms": 16.5})["reward"]
    )
    above = HardwareObjective("madds", 2e9, weight=-1.0, penalize_only_above=True)
    assert above.apply({"reward": 0.5, "madds": 1e9})["reward"] == 0.5
    assert above.apply({"reward": 0.5, "madds": 4e9})["reward"] == pytest.approx(0.25)
    with pytest.raises(ValueError, match="no latency_ms for the objective"):
        objective.apply({"reward": 0.5})
    with pytest.raises(ValueError, match="target -1 must be a positive number"):
        HardwareObjective("madds", -1)


def test_hard_constraint_scores_zero_and_records_the_trial():
    objective = HardwareObjective("madds", 1000.0, weight=0.0, hard=True)
    over = objective.apply({"reward": 0.7, "madds": 2000})
    assert over["reward"] == 0.0 and over["over_budget"] == 1.0 and over["task_reward"] == 0.7
    under = objective.apply({"reward": 0.7, "madds": 500})
    assert under["reward"] == 0.7 and under["over_budget"] == 0.0


def test_search_with_a_hard_madds_target_records_over_budget_trials_and_goes_on(tmp_path):
    # TinySpace's filter and kernel choices give networks on both sides of 60 K multiply-adds at 32x32.
    objective = HardwareObjective("madds", 60e3, weight=0.0, hard=True)
    oracle = make_oracle("random", 4, seed=1)
    tuner = _tuner(
        TinySpace(), oracle, tmp_path, hardware_objective=objective, stage2_epochs=0, warmup_epochs=0
    )
    tuner.search(digit_scenes("train", SIZE, num_scenes=12, seed=1), verbose=0)
    trials = list(tuner.oracle.trials.values())
    assert len(trials) == 4 and all(t.status == TrialStatus.COMPLETED for t in trials)
    seen = set()
    for trial in trials:
        metric = {
            name: trial.metrics.get_last_value(name)
            for name in ("reward", "task_reward", "madds", "over_budget")
        }
        over = metric["madds"] > 60e3
        seen.add(over)
        assert metric["over_budget"] == float(over)
        assert metric["reward"] == (0.0 if over else pytest.approx(metric["task_reward"]))
    assert seen == {True, False}
    with open(os.path.join(tuner.project_dir, "run.json")) as f:
        run = json.load(f)
    assert run["hardware_objective"]["metric"] == "madds" and run["hardware_objective"]["hard"] is True


def test_latency_from_a_table_replaces_the_measured_one(tmp_path):
    space = DPCSpace(num_classes=4, width=4, alpha=0.35, num_branches=1)
    keys = space_items(space, (32, 32, 3))
    entries = {key: {"layer": "x", "input_shapes": [], "ms": 1.0 + i} for i, key in enumerate(keys)}
    table = LatencyTable("onnxruntime", "jetson", "fp16", "dpc", space.config(), (32, 32, 3), entries, 0.5)
    path = table.save(str(tmp_path / "table.json"))
    objective = HardwareObjective("latency_ms", 10.0, table=path).bind(space)
    values = space.values([[0, "conv1x1"]])
    metrics = objective.apply({"reward": 0.5, "latency_ms": 99.0}, values)
    predicted = Predictor(table, space).predict(values)
    assert metrics["latency_ms"] == pytest.approx(predicted) and metrics["measured_latency_ms"] == 99.0
    assert metrics["latency_from_table"] == 1.0
    assert metrics["reward"] == pytest.approx(0.5 * (predicted / 10.0) ** -0.07)
    assert objective.describe()["latency_source"] == "table"


def test_cli_rejects_bad_targets_and_contradicting_flags(tmp_path, capsys):
    assert run_cli(["search", "--latency-target", "33parsecs"]) == 2
    assert "argument --latency-target: latency '33parsecs'" in capsys.readouterr().err
    assert run_cli(["search", "--madds-target", "lots"]) == 2
    out = str(tmp_path / "run")
    assert run_cli(["search", "--out", out, "--latency-table", "t.json"]) == 2
    assert "add --latency-target" in capsys.readouterr().err
    assert run_cli(["search", "--out", out, "--latency-target", "33ms", "--madds-target", "2G"]) == 2
    assert "not both" in capsys.readouterr().err
