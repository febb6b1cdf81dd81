"""tfnas.report: reading search directories, the Pareto front, the table, plots, the HTML page,
the genotype drawings, the progress line and the TensorBoard HParams logs.

The search directories here are written with keras-tuner's own `Trial.save` (the format a
real search writes), with the cases a running or killed search leaves: a RUNNING trial, a
FAILED one, a terminated one, a half-written `trial.json`.
"""

import glob
import json
import os
import re

import keras_tuner
import numpy as np
import pytest
from keras_tuner.engine.trial import Trial as KTTrial

from tfnas.cli import main
from tfnas.report import Trial, load_run, non_dominated, pareto_front, plots
from tfnas.report.graphs import auxcell_graphs, dpc_graphs, draw_genotype, layout, template_graphs
from tfnas.report.html import write_report
from tfnas.report.progress import ProgressPrinter
from tfnas.report.table import csv_table, trial_rows
from tfnas.spaces.auxcell import AuxCellSpace
from tfnas.spaces.dpc import DPCSpace
from tfnas.spaces.template import TemplateSpace

SPACE = AuxCellSpace(num_classes=4, width=8)
GENOTYPES = [AuxCellSpace.PUBLISHED[name] for name in ("arch0", "arch1", "arch2")]
# (trial id, status, genotype index, metrics): trial 3 is terminated, 4 failed, 5 running.
TRIALS = [
    (
        "0",
        "COMPLETED",
        0,
        {"reward": 0.40, "stage1_reward": 0.30, "params": 3e5, "madds": 2e8, "latency_ms": 9.0},
    ),
    (
        "1",
        "COMPLETED",
        1,
        {"reward": 0.55, "stage1_reward": 0.35, "params": 5e5, "madds": 4e8, "latency_ms": 12.0},
    ),
    (
        "2",
        "COMPLETED",
        2,
        {"reward": 0.50, "stage1_reward": 0.33, "params": 2e5, "madds": 5e8, "latency_ms": 15.0},
    ),
    (
        "3",
        "COMPLETED",
        0,
        {
            "reward": 0.10,
            "stage1_reward": 0.10,
            "params": 1e5,
            "madds": 1e8,
            "latency_ms": 5.0,
            "terminated": 1.0,
        },
    ),
    ("4", "FAILED", 1, {}),
    ("5", "RUNNING", 2, {}),
]


def _write_trial(run_dir, trial_id, status, genotype, metrics):
    hp = SPACE.hyperparameters(SPACE.values(genotype))
    trial = KTTrial(
        hp,
        trial_id=trial_id,
        status=status,
        message="ValueError: weights are not finite" if status == "FAILED" else None,
    )
    metrics = {"terminated": 0.0, "trial_seconds": 60.0, **metrics} if metrics else {}
    for name, value in metrics.items():
        trial.metrics.register(name, direction="max" if "reward" in name else "min")
        trial.metrics.update(name, value)
    if status == "COMPLETED":
        trial.score = metrics["reward"]
    os.makedirs(os.path.join(run_dir, f"trial_{trial_id}"), exist_ok=True)
    trial.save(os.path.join(run_dir, f"trial_{trial_id}", "trial.json"))


@pytest.fixture
def run_dir(tmp_path):
    """A search directory as NASTuner leaves it mid-search (PPO, trial 5 running)."""
    path = str(tmp_path / "search")
    os.makedirs(path)
    for trial_id, status, g, metrics in TRIALS:
        _write_trial(path, trial_id, status, GENOTYPES[g], metrics)
    with open(os.path.join(path, "run.json"), "w") as f:
        json.dump(
            {
                "space": "auxcell",
                "space_config": SPACE.config(),
                "image_size": [32, 32],
                "num_classes": 4,
                "oracle": "PPOOracle",
                "max_trials": 10,
                "meta_train_images": 86,
                "meta_val_images": 10,
                "distillation": True,
                "cli": {"scenes": 96, "digits": "017", "teacher": "auto"},
                "settings": {"stage1_epochs": 1, "warmup_epochs": 1},
            },
            f,
        )
    # Trial 1 ended before trial 0: search order follows end_order, not ids.
    with open(os.path.join(path, "oracle.json"), "w") as f:
        json.dump(
            {
                "end_order": ["1", "0", "2", "3", "4"],
                "ongoing_trials": {"tuner0": "5"},
                "controller": {
                    "baseline": 0.45,
                    "updates": 2,
                    "history": [
                        {"update": 1, "baseline": 0.40, "entropy": 30.1},
                        {"update": 2, "baseline": 0.45, "entropy": 29.5},
                    ],
                },
            },
            f,
        )
    return path


def test_non_dominated_hand_worked():
    # (score max, cost min): (0.5, 10) dominates (0.4, 12); (0.6, 20) and (0.3, 5) are on the
    # front; (0.5, 10) twice: equal points do not dominate each other.
    points = [(0.5, 10), (0.4, 12), (0.6, 20), (0.3, 5), (0.5, 10), (0.2, 6)]
    assert non_dominated(points, ["max", "min"]) == [0, 2, 3, 4]
    assert non_dominated([(1, 1, 1), (1, 1, 2), (2, 0, 5)], ["max", "min", "min"]) == [0, 2]
    with pytest.raises(ValueError, match="'up'"):
        non_dominated(points, ["max", "up"])
    with pytest.raises(ValueError, match="point 0"):
        non_dominated([(1, 2, 3)], ["max", "min"])


def test_pareto_front_of_a_hand_made_trial_set():
    def t(trial_id, reward, latency, madds, status="COMPLETED", terminated=0.0):
        return Trial(
            trial_id,
            0,
            status,
            {},
            {"reward": reward, "latency_ms": latency, "madds": madds, "terminated": terminated},
            reward,
        )

    trials = [
        t("a", 0.40, 9, 2e8),
        t("b", 0.55, 12, 4e8),
        t("c", 0.50, 15, 1e8),
        t("d", 0.30, 10, 3e8),
        t("e", 0.90, 1, 1, terminated=1.0),
        t("f", 0.99, 1, 1, status="FAILED"),
    ]
    assert [x.trial_id for x in pareto_front(trials, "latency_ms")] == ["a", "b"]
    assert [x.trial_id for x in pareto_front(trials, "madds")] == ["c", "b"]
    assert [x.trial_id for x in pareto_front(trials, ["latency_ms", "madds"])] == ["a", "b", "c"]
    # Terminated trials join only when asked; failed ones never.
    assert [x.trial_id for x in pareto_front(trials, "latency_ms", include_terminated=True)] == ["e"]
    # Plain dicts of metrics work too (the Python API on trial.json metrics).
    dicts = [
        {"trial_id": "x", "reward": 0.5, "params": 10},
        {"trial_id": "y", "reward": 0.6, "params": 20},
        {"trial_id": "z", "reward": 0.4, "params": 30},
    ]
    assert [d["trial_id"] for d in pareto_front(dicts, "params")] == ["x", "y"]


def test_load_run_orders_and_keeps_a_running_search(run_dir):
    os.makedirs(os.path.join(run_dir, "trial_6"))
    with open(os.path.join(run_dir, "trial_6", "trial.json"), "w") as f:
        f.write('{"trial_id": "6", "hyperpa')  # being written right now
    run = load_run(run_dir)
    assert [t.trial_id for t in run.trials] == ["1", "0", "2", "3", "4", "5"]
    assert [t.order for t in run.trials] == list(range(6))
    assert len(run.skipped) == 1 and "trial_6" in run.skipped[0]
    by_id = {t.trial_id: t for t in run.trials}
    assert by_id["1"].score == pytest.approx(0.55) and by_id["1"].metrics["latency_ms"] == 12.0
    assert by_id["3"].terminated and not by_id["0"].terminated
    assert by_id["4"].status == "FAILED" and "not finite" in by_id["4"].message
    assert by_id["5"].status == "RUNNING" and by_id["5"].score is None
    assert by_id["0"].genotype == GENOTYPES[0]
    assert by_id["0"].arch == json.dumps(GENOTYPES[0], separators=(",", ":"))
    assert [t.trial_id for t in run.best(2)] == ["1", "2"]
    assert run.max_trials == 10
    assert [h["entropy"] for h in run.controller_history()] == [30.1, 29.5]


def test_load_run_without_oracle_and_errors(run_dir, tmp_path):
    os.remove(os.path.join(run_dir, "oracle.json"))
    run = load_run(run_dir)  # killed before the first oracle save: id order
    assert [t.trial_id for t in run.trials] == ["0", "1", "2", "3", "4", "5"]
    assert any("oracle.json" in why for why in run.skipped)
    with pytest.raises(FileNotFoundError, match="holds no search"):
        load_run(str(tmp_path))
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_run(str(tmp_path / "missing"))


def test_trial_rows_sort_and_csv(run_dir):
    run = load_run(run_dir)
    rows, columns = trial_rows(run.trials, sort="latency_ms")
    assert [r["trial_id"] for r in rows] == ["3", "0", "1", "2", "4", "5"]  # unmeasured last
    rows, _ = trial_rows(run.trials, sort="reward")
    assert [r["trial_id"] for r in rows][:4] == ["1", "2", "0", "3"]
    rows, _ = trial_rows(run.trials, sort="params", descending=True)
    assert [r["trial_id"] for r in rows][:4] == ["1", "0", "2", "3"]
    with pytest.raises(ValueError, match="cannot sort by 'speed'"):
        trial_rows(run.trials, sort="speed")
    lines = csv_table(*trial_rows(run.trials, sort="order")).splitlines()
    header = lines[0].split(",")
    assert header[:3] == ["trial_id", "status", "reward"]
    first = dict(zip(header, lines[1].split(",")))
    assert first["trial_id"] == "1" and float(first["reward"]) == 0.55


def _cli(argv):
    return main(argv)  # the `tfnas` entry point: one error policy for every subcommand


def test_results_command(run_dir, capsys):
    assert _cli(["results", run_dir, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["trial_id"] for r in rows][:3] == ["1", "2", "0"]
    assert _cli(["results", run_dir, "--pareto", "--json"]) == 0
    assert [r["trial_id"] for r in json.loads(capsys.readouterr().out)] == ["0", "1"]
    assert _cli(["results", run_dir, "--pareto", "madds,params", "--json"]) == 0
    assert [r["trial_id"] for r in json.loads(capsys.readouterr().out)] == ["0", "1", "2"]
    assert _cli(["results", run_dir, "--sort", "latency_ms", "--top", "2"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("6 trial(s) of 10") and [line.split()[0] for line in out[3:]] == ["3", "0"]
    assert _cli(["results", run_dir, "--sort", "speed"]) == 1
    err = capsys.readouterr().err
    assert "cannot sort by 'speed'" in err and len(err.strip().splitlines()) == 1


def test_rewards_and_pareto_figures_hold_the_trials(run_dir):
    run = load_run(run_dir)
    fig = plots.rewards_figure(run.trials)
    left, right = fig.axes
    found = {c.get_gid(): c.get_offsets().tolist() for c in left.collections}
    # x = search position (1-based, end order 1, 0, 2, 3), y = reward.
    assert found["reward"] == [[1, 0.55], [2, 0.40], [3, 0.50]]
    assert found["terminated"] == [[4, 0.10]]
    best = [line for line in left.lines if line.get_gid() == "best so far"][0]
    assert best.get_xydata().tolist() == [[1, 0.55], [2, 0.55], [3, 0.55], [4, 0.55]]
    assert sorted(right.collections[0].get_offsets().tolist()) == [[0.30, 0.40], [0.33, 0.50], [0.35, 0.55]]

    fig = plots.pareto_figure(run.trials)
    for ax, cost in zip(fig.axes, ("latency_ms", "madds", "params")):
        points = {c.get_gid(): c.get_offsets().tolist() for c in ax.collections}
        front = pareto_front(run.trials, cost)
        assert points["front"] == [[t.metrics[cost], t.score] for t in front]
        assert len(points["trials"]) == 3  # completed, not terminated
    assert [t.trial_id for t in fig.fronts["params"]] == ["2", "1"]

    fig = plots.controller_figure(run.controller_history())
    assert [line.get_xydata().tolist() for ax in fig.axes for line in ax.lines] == [
        [[1, 30.1], [2, 29.5]],
        [[1, 0.40], [2, 0.45]],
    ]


def test_class_iou_figure_when_recorded():
    trial = Trial(
        "7",
        0,
        "COMPLETED",
        {},
        {"reward": 0.5, "iou_class_0": 0.9, "iou_class_2": 0.4, "iou_class_1": 0.6},
        0.5,
    )
    fig = plots.class_iou_figure(trial, ["background", "zero", "one"])
    heights = [p.get_height() for p in fig.axes[0].patches]
    assert heights == [0.9, 0.6, 0.4]
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["background", "zero", "one"]
    assert plots.class_iou_figure(Trial("8", 0, "COMPLETED", {}, {"reward": 0.5}, 0.5)) is None


@pytest.mark.slow
def test_report_page_references_existing_images(run_dir, tmp_path):
    out = str(tmp_path / "page")
    path = write_report(run_dir, out, top=2)
    page = open(path).read()
    images = re.findall(r'<img src="([^"]+)"', page)
    assert {"rewards.png", "pareto.png", "controller.png", "arch_1_trial_1.png", "arch_2_trial_2.png"} <= set(
        images
    )
    for name in images:
        with open(os.path.join(out, name), "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert sorted(glob.glob(os.path.join(out, "*.png"))) == sorted(os.path.join(out, n) for n in images)
    assert "http" not in page.replace(" http", "")  # nothing fetched from the network
    assert "iou_class_&lt;k&gt;" in page  # says what the tuner must record
    assert json.dumps(GENOTYPES[1], separators=(",", ":")) in page
    assert "built-in digit scenes: 96 scenes, digits 017" in page


def test_auxcell_graph_of_arch0():
    decoder, cell = auxcell_graphs(AuxCellSpace.PUBLISHED["arch0"])
    # connections [[3, 3], [3, 2], [3, 0]]: no block reads a block, so all three are concatenated.
    assert sorted(decoder.edges) == sorted(
        [
            ("p3", "p4", ""),
            ("p3", "p4", ""),
            ("p3", "p5", ""),
            ("p2", "p5", ""),
            ("p3", "p6", ""),
            ("p0", "p6", ""),
            ("p4", "out", ""),
            ("p5", "out", ""),
            ("p6", "out", ""),
        ]
    )
    labels = cell.labels()
    # cell [8, [0, 0, 5, 2], [0, 2, 8, 8], [0, 5, 1, 4]]: o1 = sep5x5_rate6; branch 2 reads
    # branch 1's first op output (pool index 2).
    assert labels["f1"] == "sep5x5_rate6" and labels["f2"] == "conv3x3_rate3" and labels["f9"] == "gap"
    assert ("f2", "f6", "") in cell.edges
    assert sorted(src for src, dst, _ in cell.edges if dst == "out") == ["f1", "f10", "f4", "f7"]
    positions = layout(cell)
    assert all(positions[s][0] < positions[d][0] for s, d, _ in cell.edges)


def test_template_and_dpc_graphs():
    graphs = template_graphs(TemplateSpace.PUBLISHED["arch0"])
    assert len(graphs) == 4
    assert [graphs[0].labels()[k] for k in ("a", "b", "agg")] == ["maxpool3x3", "sep3x3", "cat"]
    blocks = graphs[-1]
    assert blocks.labels()["p2"] == "block 0\ntemplate 0 x1, stride 2"
    assert ("p0", "p2", "1") in blocks.edges and ("p1", "p2", "2") in blocks.edges
    # block 3 of arch0 reads [1, 1]: one edge for both inputs.
    assert [e for e in blocks.edges if e[1] == "p5"] == [("p1", "p5", "1, 2")]
    (graph,) = dpc_graphs(DPCSpace.PUBLISHED["top1_cityscapes"])
    assert graph.labels()["b2"] == "branch 1\nsep3x3_18x15"
    assert ("b1", "b2", "") in graph.edges and sum(dst == "out" for _, dst, _ in graph.edges) == 5
    for name, genotype in (
        ("template", TemplateSpace.PUBLISHED["arch0"]),
        ("dpc", DPCSpace.PUBLISHED["top1_cityscapes"]),
    ):
        fig = draw_genotype(name, genotype)
        texts = {t.get_text() for ax in fig.axes for t in ax.texts}
        assert {label for g in fig.graphs for _, label, _ in g.nodes} <= texts


def test_progress_printer_lines(run_dir):
    import io

    run = load_run(run_dir)
    now = [0.0]
    stream = io.StringIO()
    printer = ProgressPrinter(total=8, space=SPACE, stream=stream, clock=lambda: now[0])
    lines = []
    for trial, seconds in zip(run.trials[:5], (30, 50, 40, 20, 10)):
        printer.on_trial_begin(trial)
        now[0] += seconds
        lines.append(printer.on_trial_end(trial))
    arch = json.dumps(GENOTYPES[1], separators=(",", ":"))
    assert (
        lines[0]
        == f"trial 1/8  {arch}  reward 0.5500 (stage 1 0.3500)  best 0.5500 (trial 1)  30 s  ~4 min left"
    )
    assert lines[1].endswith("best 0.5500 (trial 1)  50 s  ~4 min left")  # 6 left x 40 s mean
    assert "reward 0.1000 (terminated after stage 1)" in lines[3]
    assert "FAILED: ValueError: weights are not finite" in lines[4]
    assert lines[4].endswith("10 s  ~2 min left")  # 3 left x 30 s mean = 1.5 min
    assert stream.getvalue().splitlines() == lines


def test_progress_printer_takes_keras_tuner_trials():
    hp = keras_tuner.HyperParameters()
    hp.Choice("x", [1, 2])
    trial = KTTrial(hp, trial_id="3", status="COMPLETED")
    trial.metrics.register("reward", "max")
    trial.metrics.update("reward", 0.25)
    import io

    printer = ProgressPrinter(total=1, stream=io.StringIO())
    assert printer.on_trial_end(trial) == 'trial 1/1  {"x":1}  reward 0.2500  best 0.2500 (trial 3)'


def test_hparams_writer_logs_read_back(run_dir, tmp_path):
    import tensorflow as tf
    from tensorboard.plugins.hparams import metadata as hp_metadata

    from tfnas.report.tensorboard import HParamsWriter

    logdir = str(tmp_path / "tb")
    sessions = HParamsWriter(logdir).write_run(load_run(run_dir))
    assert sorted(os.path.basename(s) for s in sessions) == [f"trial_{i}" for i in range(5)]

    def events(folder):
        for path in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
            for event in tf.compat.v1.train.summary_iterator(path):
                yield from event.summary.value

    config = [v for v in events(logdir) if v.tag == hp_metadata.EXPERIMENT_TAG]
    experiment = hp_metadata.parse_experiment_plugin_data(config[0].metadata.plugin_data.content)
    assert {m.name.tag for m in experiment.metric_infos} >= {
        "reward",
        "stage1_reward",
        "params",
        "madds",
        "latency_ms",
    }
    assert {"block0_input0", "cell_op1", "genotype"} <= {h.name for h in experiment.hparam_infos}
    cell_op1 = [h for h in experiment.hparam_infos if h.name == "cell_op1"][0]
    assert [v.number_value for v in cell_op1.domain_discrete.values] == list(range(11))

    values = list(events(os.path.join(logdir, "trial_1")))
    start = [v for v in values if v.tag == hp_metadata.SESSION_START_INFO_TAG][0]
    info = hp_metadata.parse_session_start_info_plugin_data(start.metadata.plugin_data.content)
    assert info.group_name == "1"
    assert info.hparams["genotype"].string_value == json.dumps(GENOTYPES[1], separators=(",", ":"))
    assert info.hparams["cell_op1"].number_value == GENOTYPES[1][1][0]
    scalars = {v.tag: float(tf.make_ndarray(v.tensor)) for v in values if v.tag in ("reward", "latency_ms")}
    assert scalars == {"reward": pytest.approx(0.55), "latency_ms": pytest.approx(12.0)}
    assert np.isfinite(scalars["reward"])
