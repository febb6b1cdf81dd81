"""NASTuner: real searches on tiny data with each Oracle, failed (NaN) trials, reloading models."""

import json
import os

import keras
import keras_tuner
import numpy as np
import pytest
import tensorflow as tf
from keras_tuner.engine.trial import TrialStatus

from tfnas.data import digit_scenes, pipeline
from tfnas.ops import ConvBN, ResizeLike
from tfnas.spaces.base import DecoderSpace
from tfnas.tasks.segmentation import ConfusionMatrix
from tfnas.training import ProxySettings
from tfnas.tuners import NASTuner, make_oracle

SIZE = 32


class TinySpace(DecoderSpace):
    """A small real space (two 1x1/3x3 choices) on a two-conv encoder, for fast searches.

    With `unstable=True` its only decision `explode` multiplies the logits by NaN when 1.
    """

    def __init__(self, num_classes=11, width=4, unstable=False, **kwargs):
        super().__init__(num_classes, width, name="tiny", **kwargs)
        self.unstable = unstable

    def config(self):
        return {**super().config(), "unstable": self.unstable}

    def build_encoder(self):
        inputs = keras.Input(self.input_shape, name="image")
        a = keras.layers.Conv2D(8, 3, strides=4, padding="same", name="enc_a")(inputs)
        a = keras.layers.BatchNormalization(name="enc_a_bn")(a)
        b = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="enc_b")(a)
        model = keras.Model(inputs, [a, b], name="encoder")
        model.tap_strides = [4, 8]
        if self.encoder_weights is not None:  # "pretrained" weights from a file
            model.load_weights(self.encoder_weights)
        return model

    def declare_hyperparameters(self, hp):
        if self.unstable:
            return {"explode": hp.Choice("explode", [0, 1])}
        return {"filters": hp.Choice("filters", [4, 8]), "kernel": hp.Choice("kernel", [1, 3])}

    def genotype(self, values):
        return [int(values[k]) for k in sorted(values)]

    def decoder_from_values(self, values, features, strides):
        filters, kernel = values.get("filters", 4), values.get("kernel", 1)
        x = ConvBN(filters, kernel, name="main")(features[0])
        y = ConvBN(filters, 1, name="coarse")(features[1])
        x = keras.layers.Add(name="sum")([x, ResizeLike(name="up")([y, x])])
        logits = keras.layers.Conv2D(self.num_classes, 3, padding="same", name="classifier")(x)
        scale = float("nan") if values.get("explode") else 1.0
        logits = keras.layers.Rescaling(scale, name="logits")(logits)
        aux = keras.layers.Conv2D(self.num_classes, 1, name="aux_0")(y)
        return {"logits": logits, "aux_0": aux}


def _tuner(space, oracle, tmp_path, **kwargs):
    settings = dict(
        stage1_epochs=1,
        stage2_epochs=1,
        batch_size=4,
        cache_images=16,
        warmup_epochs=1,
        latency_runs=2,
        latency_warmup=1,
        verbose=0,
    )
    settings.update(kwargs)
    return NASTuner(space, oracle=oracle, directory=str(tmp_path), project_name="run", **settings)


def _reward_of(model, space, dataset):
    """Recomputes the meta-val reward of a loaded training model."""
    inference = space.inference_model(model)
    metric = ConfusionMatrix(space.num_classes)
    for images, masks in pipeline(dataset, 4):
        metric.update_state(masks, inference(images, training=False))
    return metric.scores()["reward"]


@pytest.mark.slow
@pytest.mark.parametrize("oracle_name", ["ppo", "random"])
def test_search_with_each_oracle(tmp_path, oracle_name):
    space = TinySpace()
    train = digit_scenes("train", SIZE, num_scenes=20, seed=1)
    val = digit_scenes("validation", SIZE, num_scenes=6, seed=1) if oracle_name == "random" else None
    tuner = _tuner(space, make_oracle(oracle_name, 3, seed=3), tmp_path)
    tuner.search(train, validation_data=val, verbose=0)

    run_dir = tmp_path / "run"
    assert tuner.project_dir == str(run_dir)
    trials = list(tuner.oracle.trials.values())
    assert len(trials) == 3 and all(t.status == TrialStatus.COMPLETED for t in trials)
    assert len({t.trial_id for t in trials}) == 3
    if oracle_name == "random":  # random search never repeats an architecture
        assert len({json.dumps(t.hyperparameters.values, sort_keys=True) for t in trials}) == 3
    for trial in trials:
        metrics = {k: trial.metrics.get_last_value(k) for k in trial.metrics.metrics}
        assert 0.0 <= metrics["reward"] <= 1.0 and 0.0 <= metrics["stage1_reward"] <= 1.0
        assert metrics["terminated"] in (0.0, 1.0)
        assert metrics["params"] > 0 and metrics["madds"] > 0 and metrics["latency_ms"] > 0
        assert metrics["params"] < metrics["training_params"]  # aux head left out
        assert os.path.exists(run_dir / f"trial_{trial.trial_id}" / "model.weights.h5")
        assert os.path.exists(run_dir / f"trial_{trial.trial_id}" / "trial.json")

    run = json.load(open(run_dir / "run.json"))
    assert run["space"] == "tiny" and run["space_config"] == space.config()
    assert run["settings"] == tuner.settings.to_json()  # every setting, saved whole
    assert sorted(run["settings"]) == sorted(ProxySettings.field_names())
    assert run["encoder"] == "warmed up on the search data (1 epochs)"
    assert run["teacher"] == "the warmed-up model"
    assert run["image_size"] == [SIZE, SIZE] and run["num_classes"] == 11
    assert run["distillation"] is True  # the warmed-up model is the default teacher
    if val is None:  # 10 % of the 20 training scenes held out as meta-val
        assert (run["meta_train_images"], run["meta_val_images"]) == (18, 2)
    assert json.load(open(run_dir / "termination.json"))["steps"] == 3
    assert os.path.exists(run_dir / "oracle.json") and os.path.exists(run_dir / "encoder.weights.h5")

    best_trial = tuner.oracle.get_best_trials(1)[0]
    best = tuner.get_best_models(1)[0]
    assert set(best.output) == {"logits", "aux_0"}
    if val is not None:  # the saved weights reproduce the reported reward
        assert _reward_of(best, space, val) == pytest.approx(
            best_trial.metrics.get_last_value("reward"), abs=1e-6
        )
    # The weights file holds the full training model of space.build(hp).
    rebuilt = space.build(best_trial.hyperparameters)
    rebuilt.load_weights(run_dir / f"trial_{best_trial.trial_id}" / "model.weights.h5")
    x = tf.random.uniform((1, SIZE, SIZE, 3), -1, 1)
    np.testing.assert_allclose(rebuilt(x)["logits"], best(x)["logits"], rtol=1e-5, atol=1e-5)


def test_nan_trial_is_recorded_as_failed_and_the_search_goes_on(tmp_path):
    space = TinySpace(unstable=True)
    oracle = keras_tuner.oracles.RandomSearchOracle(
        objective=keras_tuner.Objective("reward", "max"), max_trials=2, seed=0
    )
    tuner = _tuner(space, oracle, tmp_path, warmup_epochs=0, latency_runs=0, teacher=None)
    tuner.search(digit_scenes("train", SIZE, num_scenes=12), verbose=0)
    by_value = {t.hyperparameters.values["explode"]: t for t in tuner.oracle.trials.values()}
    assert by_value[0].status == TrialStatus.COMPLETED
    assert by_value[1].status == TrialStatus.FAILED
    assert "NonFiniteLossError" in by_value[1].message and "NaN" in by_value[1].message
    saved = json.load(open(tmp_path / "run" / f"trial_{by_value[1].trial_id}" / "trial.json"))
    assert saved["status"] == "FAILED" and "NonFiniteLossError" in saved["message"]
    assert [t.trial_id for t in tuner.oracle.get_best_trials(1)] == [by_value[0].trial_id]
    assert len(tuner.get_best_models(2)) == 1  # the failed trial has no model


def test_oracle_with_another_objective_is_rejected(tmp_path):
    oracle = keras_tuner.oracles.RandomSearchOracle(objective="val_loss", max_trials=1)
    with pytest.raises(ValueError, match="reward"):
        NASTuner(TinySpace(), oracle=oracle, directory=str(tmp_path), project_name="x")


def test_trials_never_reread_the_pretrained_encoder_weights(tmp_path):
    """Trials and get_best_models start from the search's encoder, not `encoder_weights`."""
    pretrained = str(tmp_path / "pretrained.weights.h5")
    TinySpace().build_encoder().save_weights(pretrained)
    space = TinySpace(encoder_weights=pretrained)
    tuner = _tuner(
        space, make_oracle("random", 1, seed=0), tmp_path, warmup_epochs=None, latency_runs=0, teacher=None
    )
    assert tuner.settings.warmup_epochs == 0  # pretrained: no warm-up by default
    tuner.search(digit_scenes("train", SIZE, num_scenes=10), verbose=0)
    run = json.load(open(tmp_path / "run" / "run.json"))
    assert run["encoder"] == f"pretrained ({pretrained})" and run["teacher"] == "none"
    os.remove(pretrained)  # gone (or an "imagenet" download that fails offline)
    best = tuner.get_best_models(1)[0]
    assert set(best.output) == {"logits", "aux_0"}


def test_settings_are_checked_and_given_one_way(tmp_path):
    with pytest.raises(ValueError, match=r"stage1_epochs=0 must be an integer >= 1"):
        NASTuner(TinySpace(), stage1_epochs=0, directory=str(tmp_path), project_name="a")
    with pytest.raises(ValueError, match="not both"):
        NASTuner(
            TinySpace(), settings=ProxySettings(), batch_size=4, directory=str(tmp_path), project_name="b"
        )
