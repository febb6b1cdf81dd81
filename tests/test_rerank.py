"""Re-ranking (`tfnas.training.rerank`, `tfnas rerank`): the best trials of a search trained
longer, ordered by that result, recorded as each finishes, resumed without training again,
and `tfnas train --trial reranked`.

The search directory is written by hand (trials of Dense Prediction Cells with their initial
weights, as in test_full_training), so no search runs; the networks are tiny (width 8, alpha
0.35, 32x32 images) and each architecture trains for one epoch.
"""

import io
import json
import os

import keras
import pytest
from _cli import run_cli
from keras_tuner.engine.trial import Trial
from test_full_training import SEGMENTATION_CLI, write_search

from tfnas.search_dir import SearchDir
from tfnas.training.rerank import RERANK, _candidates, rerank, reranked_trial_id

#: Dense Prediction Cells (`[input, op]` per branch) of the hand-written trials.
CELLS = {
    "small": [[0, "conv1x1"], [0, "sep3x3_1x1"], [1, "pool2x2"], [2, "conv1x1"], [3, "sep3x3_1x1"]],
    "dilated": [[0, "sep3x3_6x6"], [1, "sep3x3_3x3"], [0, "pool1x1"], [2, "sep3x3_1x3"], [4, "conv1x1"]],
}


def add_trial(run_dir, trial_id, genotype, reward, status="COMPLETED", terminated=False):
    """Adds trial `trial_id` of a genotype (its initial weights when COMPLETED)."""
    search = SearchDir(run_dir)
    space = search.space()
    trial = Trial(space.hyperparameters(space.values(genotype)), trial_id, status)
    os.makedirs(search.trial_dir(trial_id))
    if status == "COMPLETED":
        trial.metrics.update("reward", reward)
        trial.metrics.update("terminated", float(terminated))
        trial.score = reward
        keras.utils.set_random_seed(int(trial_id))
        space.build_genotype(genotype).save_weights(search.trial_weights(trial_id))
    else:
        trial.message = "ValueError: the loss became NaN"
    with open(os.path.join(search.trial_dir(trial_id), "trial.json"), "w") as f:
        json.dump(trial.get_state(), f)


@pytest.fixture(scope="module")
def search(tmp_path_factory):
    """Trials by search reward: 03 (0.40, terminated), 01 (0.30), 00 (0.25), 02 (0.20); 04 FAILED."""
    run_dir = write_search(
        str(tmp_path_factory.mktemp("rerank") / "run"),
        "dpc",
        "top1_cityscapes",
        SEGMENTATION_CLI,
        num_classes=3,
    )
    add_trial(run_dir, "01", CELLS["small"], 0.30)
    add_trial(run_dir, "02", CELLS["dilated"], 0.20)
    add_trial(run_dir, "03", CELLS["small"], 0.40, terminated=True)
    add_trial(run_dir, "04", CELLS["dilated"], None, status="FAILED")
    return run_dir


@pytest.fixture(scope="module")
def reranked(search):
    printed = io.StringIO()
    rows = rerank(search, top=2, epochs=1, batch_size=8, stream=printed)
    return search, rows, printed.getvalue()


def read_record(run_dir):
    with open(os.path.join(run_dir, "rerank.json")) as f:
        return json.load(f)


def mtimes(run_dir):
    """Modification times of the reranked trainings' weights and checkpoint states."""
    found = {}
    for trial_id in ("00", "01"):
        folder = os.path.join(run_dir, "rerank", f"trial_{trial_id}")
        for name in ("model.weights.h5", os.path.join("checkpoint", "state.json")):
            found[trial_id, name] = os.stat(os.path.join(folder, name)).st_mtime_ns
    return found


def test_the_papers_choose_how_many_to_rerank():
    assert (RERANK["auxcell"]["top"], RERANK["dpc"]["top"], RERANK["auxcell"]["epochs"]) == (10, 50, 50)
    assert "Sec. 4.2" in RERANK["auxcell"]["source"] and "NeurIPS 2018" in RERANK["dpc"]["source"]


@pytest.mark.slow
def test_rerank_trains_the_best_two_longer_and_orders_them_by_the_longer_result(reranked):
    run_dir, rows, printed = reranked
    record = read_record(run_dir)
    # the two best COMPLETED, not terminated trials, in search order; the failed one left out
    assert record["trials"] == ["01", "00"] and sorted(record["results"]) == ["00", "01"]
    assert record["settings"]["epochs"] == 1 and record["settings"]["batch_size"] == 8 and record["top"] == 2
    for trial_id, search_reward in (("01", 0.30), ("00", 0.25)):
        result = record["results"][trial_id]
        assert result["status"] == "COMPLETED" and result["search_reward"] == search_reward
        assert 0.0 <= result["rerank_reward"] <= 1.0 and result["rerank_reward"] != search_reward
        assert result["rerank_reward"] == result["scores"]["reward"] and "miou" in result["scores"]
        assert result["seconds"] > 0
        state = json.load(
            open(os.path.join(run_dir, "rerank", f"trial_{trial_id}", "checkpoint", "state.json"))
        )
        assert state["epoch"] == 1 and state["history"][-1]["val"]["reward"] == result["rerank_reward"]
    # ordered by the rerank reward, with the search's rank and the change
    assert [r["rerank_reward"] for r in rows] == sorted((r["rerank_reward"] for r in rows), reverse=True)
    assert [r["rank"] for r in rows] == [1, 2] and {r["trial_id"] for r in rows} == {"00", "01"}
    for row in rows:
        assert row["rerank_reward"] == record["results"][row["trial_id"]]["rerank_reward"]
        assert row["search_rank"] == {"01": 1, "00": 2}[row["trial_id"]]
        assert row["change"] == row["search_rank"] - row["rank"]
        assert row["genotype"].startswith("[[0,") and "miou" in row
    assert reranked_trial_id(run_dir) == rows[0]["trial_id"]
    # progress lines and notes on what was left out
    assert "1 FAILED trial(s) left out" in printed
    assert "1 trial(s) stopped by progressive termination left out" in printed
    assert "rerank 1/2  trial 01  reward " in printed and "rerank 2/2  trial 00  reward " in printed
    assert "~" in printed.split("rerank 1/2")[1].splitlines()[0]  # time left after the first
    # rerank/ is a search directory of the reranked trials: its best is the rerank's winner
    reranked_dir = SearchDir(os.path.join(run_dir, "rerank"))
    assert reranked_dir.best_trial_id() == rows[0]["trial_id"]
    _, metadata = reranked_dir.load_trial_model(rows[1]["trial_id"])
    assert metadata["metrics"]["proxy_reward"] == rows[1]["search_reward"]
    assert metadata["score"] == rows[1]["rerank_reward"]


@pytest.mark.slow
def test_tfnas_rerank_prints_the_table_and_a_second_run_trains_nothing(reranked, capsys):
    run_dir, rows, _ = reranked
    before = mtimes(run_dir)
    assert run_cli(["rerank", run_dir]) == 0  # --top and --epochs: the earlier rerank's
    out = capsys.readouterr().out
    assert out.count("reranked before") == 2 and "epoch 1/1" not in out
    table = out[out.index("rank  trial_id") :].splitlines()
    assert ["rerank_reward", "search_reward", "search_rank", "change"] == table[0].split()[2:6]
    assert [line.split()[1] for line in table[2:4]] == [r["trial_id"] for r in rows]
    assert f"next: tfnas train {run_dir} --trial reranked" in out
    assert mtimes(run_dir) == before
    assert run_cli(["rerank", run_dir, "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [(r["trial_id"], r["rerank_reward"]) for r in printed] == [
        (r["trial_id"], r["rerank_reward"]) for r in rows
    ]
    # killed after the second architecture trained but before rerank.json recorded it: the
    # first is kept, the second's finished checkpoint is read back, no epoch is trained again
    record = read_record(run_dir)
    lost = record["results"].pop(rows[1]["trial_id"])
    with open(os.path.join(run_dir, "rerank.json"), "w") as f:
        json.dump(record, f)
    printed = io.StringIO()
    again = rerank(run_dir, stream=printed, verbose=2)
    assert "reranked before" in printed.getvalue() and "resuming after epoch 1/1" in capsys.readouterr().out
    assert [(r["trial_id"], r["rerank_reward"]) for r in again] == [
        (r["trial_id"], r["rerank_reward"]) for r in rows
    ]
    assert read_record(run_dir)["results"][rows[1]["trial_id"]]["rerank_reward"] == lost["rerank_reward"]
    assert mtimes(run_dir) == before
    # other settings than the rerank being resumed: one line naming them
    assert run_cli(["rerank", run_dir, "--epochs", "3"]) == 1
    assert "holds a rerank with epochs=1, not 3" in capsys.readouterr().err


@pytest.mark.slow
def test_tfnas_train_trains_the_rerank_winner(reranked, capsys):
    run_dir, rows, _ = reranked
    winner = rows[0]["trial_id"]
    assert run_cli(["train", run_dir, "--trial", "reranked", "--epochs", "1", "--batch-size", "8"]) == 0
    assert f"training trial {winner} of {run_dir}" in capsys.readouterr().out
    run = SearchDir(os.path.join(run_dir, f"full_{winner}")).read_run()
    assert run["full_training"]["trial"] == winner


def test_bad_input_gives_one_clear_error(search, tmp_path, capsys):
    assert run_cli(["rerank", search, "--top", "0"]) == 2
    assert "argument --top: 0 must be at least 1" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert run_cli(["rerank", str(tmp_path / "empty")]) == 2
    assert "holds no search (no run.json)" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"top=0 must be an integer >= 1"):
        rerank(search, top=0)
    full = tmp_path / "full"
    full.mkdir()
    (full / "run.json").write_text(json.dumps({"space": "auxcell", "full_training": {"source": search}}))
    with pytest.raises(ValueError, match="holds a full training \\(tfnas train\\) of .*, not a search"):
        rerank(str(full))
    # fewer completed trials than asked for: all of them, and a note saying so
    chosen, notes = _candidates(SearchDir(search), 10, include_terminated=False)
    assert [t.trial_id for t in chosen] == ["01", "00", "02"]
    assert any("only 3 completed architecture(s) to rerank, fewer than top=10" in n for n in notes)
    chosen, _ = _candidates(SearchDir(search), 2, include_terminated=True)
    assert [t.trial_id for t in chosen] == ["03", "01"]
    # tfnas train --trial reranked before a rerank
    fresh = str(tmp_path / "fresh")
    write_search(fresh, "dpc", "top1_cityscapes", SEGMENTATION_CLI, num_classes=3)
    assert run_cli(["train", fresh, "--trial", "reranked"]) == 2
    assert "was not reranked (no rerank.json); run tfnas rerank" in capsys.readouterr().err
