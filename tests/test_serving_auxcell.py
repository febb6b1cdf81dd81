"""Export of the published auxiliary-cell architectures (CVPR 2019 arch0-2) at a tiny width,
and `tfnas export` of the best trial of a search run directory."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf
from test_serving_common import images

from tfnas.cli import main
from tfnas.preprocessing import preprocess
from tfnas.search_dir import SearchDir
from tfnas.serving import export, read_metadata
from tfnas.spaces import AuxCellSpace

SPACE_CONFIG = {"num_classes": 5, "width": 8, "alpha": 0.35}


def assert_exported_equals(path, inference, batch):
    loaded = tf.saved_model.load(path)
    want = np.asarray(inference(preprocess(batch)))
    got = loaded.signatures["logits"](images=preprocess(batch))["logits"].numpy()
    assert got.shape == want.shape and got.shape[-1] == 5  # 1/4 or 1/8: the finest tap the genotype reads
    np.testing.assert_allclose(got, want, atol=1e-5)
    classes = loaded.signatures["serving_default"](images=tf.constant(batch))["classes"].numpy()
    resized = tf.image.resize(want, batch.shape[1:3], method="bilinear")
    np.testing.assert_array_equal(classes, np.argmax(resized, axis=-1))


@pytest.mark.parametrize("arch", ["arch0", "arch2"])
def test_export_published_architecture(tmp_path, arch):
    space = AuxCellSpace(**SPACE_CONFIG)
    model = space.build_genotype(arch)
    assert {"logits", "aux_0"} <= set(model.output)  # a training model with auxiliary heads
    path = export(
        model, str(tmp_path), arch, metadata={"space": "auxcell", "genotype": AuxCellSpace.PUBLISHED[arch]}
    )
    inference = space.inference_model(model)
    assert_exported_equals(path, inference, images(2, 32, 32))
    meta = read_metadata(path)
    assert meta["genotype"] == AuxCellSpace.PUBLISHED[arch]
    assert meta["params"] == inference.count_params() < model.count_params()


def write_trial(run_dir, trial_id, status, score, values=None, model=None):
    os.makedirs(os.path.join(run_dir, f"trial_{trial_id}"))
    trial = {
        "trial_id": trial_id,
        "status": status,
        "score": score,
        "hyperparameters": {"space": [], "values": values or {}},
        "metrics": {
            "metrics": {"miou": {"direction": "max", "observations": [{"value": [score], "step": 0}]}}
        },
    }
    with open(os.path.join(run_dir, f"trial_{trial_id}", "trial.json"), "w") as f:
        json.dump(trial, f)
    if model is not None:
        model.save_weights(os.path.join(run_dir, f"trial_{trial_id}", "model.weights.h5"))


@pytest.mark.slow
def test_tfnas_export_of_best_trial_arch1(tmp_path):
    space = AuxCellSpace(**SPACE_CONFIG)
    values = space.values(AuxCellSpace.PUBLISHED["arch1"])
    model = space.build(space.hyperparameters(values))
    run_dir = str(tmp_path / "search")
    os.makedirs(run_dir)
    with open(os.path.join(run_dir, "run.json"), "w") as f:
        json.dump({"space": "auxcell", "space_config": space.config()}, f)
    write_trial(run_dir, "00", "COMPLETED", 0.3, space.random_values(seed=1))
    write_trial(run_dir, "01", "COMPLETED", 0.6, values, model)
    write_trial(run_dir, "02", "FAILED", 0.9)
    search_dir = SearchDir(run_dir)
    assert search_dir.best_trial_id() == "01"

    loaded, info = search_dir.load_trial_model()
    batch = images(1, 32, 32, seed=4)
    np.testing.assert_allclose(
        np.asarray(loaded(preprocess(batch))["logits"]),
        np.asarray(model(preprocess(batch))["logits"]),
        atol=1e-6,
    )
    assert info["trial_id"] == "01" and info["metrics"] == {"miou": 0.6}
    assert info["genotype"] == AuxCellSpace.PUBLISHED["arch1"]

    base = str(tmp_path / "exports")
    assert main(["export", run_dir, "--base", base]) == 0
    path = os.path.join(base, "search", "1")
    assert read_metadata(path)["trial_id"] == "01"
    assert_exported_equals(path, space.inference_model(model), batch)
    with pytest.raises(FileNotFoundError, match=r"trial '07' is not in .* \['00', '01', '02'\]"):
        search_dir.load_trial_model("07")
    with pytest.raises(FileNotFoundError, match="trial 00 of .* has no trained weights"):
        search_dir.load_trial_model("00")
