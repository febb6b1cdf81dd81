"""Searches whose trials run in one supernet (issue 10): traced once, fresh state per trial."""

import json

import keras
import numpy as np
import pytest
from keras_tuner.engine.trial import TrialStatus
from test_tuner import SIZE, TinySpace, _reward_of, _tuner

from tfnas import profile
from tfnas.choice import Choice
from tfnas.data import digit_scenes
from tfnas.ops import ConvBN, ResizeLike
from tfnas.spaces import TemplateSpace
from tfnas.supernet import Use
from tfnas.training import ProxySettings, ProxyTask
from tfnas.tuners import make_oracle

KERNELS = (1, 3, 5)


class TinySupernetSpace(TinySpace):
    """TinySpace with fixed widths, so that its two kernel decisions have a supernet."""

    def declare_hyperparameters(self, hp):
        return {
            "kernel": hp.Choice("kernel", list(range(len(KERNELS)))),
            "coarse": hp.Choice("coarse", list(range(len(KERNELS)))),
        }

    def decoder_from_values(self, values, features, strides):
        x = ConvBN(4, KERNELS[values["kernel"]], name="main")(features[0])
        y = ConvBN(4, KERNELS[values["coarse"]], name="coarse")(features[1])
        return self._head(x, y)

    def _head(self, x, y):
        x = keras.layers.Add(name="sum")([x, ResizeLike(name="up")([y, x])])
        logits = keras.layers.Conv2D(self.num_classes, 3, padding="same", name="logits")(x)
        return {"logits": logits, "aux_0": keras.layers.Conv2D(self.num_classes, 1, name="aux_0")(y)}

    def supernet_from_features(self, features, strides):
        x = Choice([ConvBN(4, k, name=f"main_k{k}") for k in KERNELS], name="main")(features[0])
        y = Choice([ConvBN(4, k, name=f"coarse_k{k}") for k in KERNELS], name="coarse")(features[1])
        return self._head(x, y)

    def supernet_selection(self, values, strides):
        return {"main": int(values["kernel"]), "coarse": int(values["coarse"])}

    def supernet_uses(self, decoder, values, strides):
        main = decoder.get_layer("main").candidates[values["kernel"]]
        coarse = decoder.get_layer("coarse").candidates[values["coarse"]]
        return [
            Use(main, ("main",), strides[0], 8),
            Use(coarse, ("coarse",), strides[1], 8),
            Use(decoder.get_layer("logits"), ("logits",), strides[0], 4),
            Use(decoder.get_layer("aux_0"), ("aux_0",), strides[1], 4, inference=False),
        ]


def _settings(**kwargs):
    base = dict(
        stage1_epochs=1,
        stage2_epochs=1,
        batch_size=4,
        cache_images=16,
        warmup_epochs=0,
        latency_runs=0,
        termination=False,
        supernet=True,
    )
    return ProxySettings(**{**base, **kwargs})


@pytest.fixture(scope="module")
def data():
    return digit_scenes("train", SIZE, num_scenes=16, seed=2), digit_scenes("validation", SIZE, num_scenes=4)


def _task(tmp_path, data, **kwargs):
    space = TinySupernetSpace()
    task = ProxyTask(space, str(tmp_path), _settings(**kwargs), teacher=None, verbose=0)
    task.prepare(*data)
    return space, task


def test_a_search_traces_each_step_once_and_keeps_standalone_weights(tmp_path, data):
    space = TinySupernetSpace()
    tuner = _tuner(
        space, make_oracle("random", 4, seed=1), tmp_path, warmup_epochs=0, teacher=None, supernet=True
    )
    tuner.search(data[0], validation_data=data[1], verbose=0)
    trials = list(tuner.oracle.trials.values())
    assert len(trials) == 4 and all(t.status == TrialStatus.COMPLETED for t in trials)
    assert len({json.dumps(t.hyperparameters.values, sort_keys=True) for t in trials}) == 4
    # Four architectures, one trace of each step function (a standalone search traces four).
    once = {"train_step": 1, "test_step": 1}
    assert tuner.proxy.supernet_trials.traces() == {"stage1": once, "stage2": once}
    image = (SIZE, SIZE, 3)
    for trial in trials:
        model = tuner.load_model(trial)  # the standalone model, from the trial's saved weights
        metrics = {k: trial.metrics.get_last_value(k) for k in trial.metrics.metrics}
        # The weights the supernet trained are those the standalone model holds ...
        assert _reward_of(model, space, data[1]) == pytest.approx(metrics["reward"], abs=1e-6)
        # ... and the untraced cost is the standalone inference model's.
        inference = space.inference_model(model)
        assert metrics["params"] == profile.params(inference)["total"]
        assert metrics["madds"] == profile.madds(inference, image)
        assert metrics["training_params"] == profile.params(model)["total"]
        assert metrics["latency_ms"] > 0  # latency_runs=2: measured on the standalone model


def test_every_trial_starts_fresh_so_a_repeated_trial_repeats_its_reward(tmp_path, data):
    space, task = _task(tmp_path, data)
    a = space.hyperparameters({"kernel": 1, "coarse": 0})
    b = space.hyperparameters({"kernel": 1, "coarse": 2})
    first, _ = task.run_trial(a, "1", log=lambda message: None)
    task.run_trial(b, "2", log=lambda message: None)  # trains the shared main_k3 and the optimizers
    again, model = task.run_trial(a, "1", log=lambda message: None)
    # Weights, batch-norm statistics, optimizer slots and Polyak averages all start again.
    assert again["reward"] == pytest.approx(first["reward"], abs=1e-6)
    assert again["stage1_reward"] == pytest.approx(first["stage1_reward"], abs=1e-6)
    np.testing.assert_array_equal(
        model.get_layer("encoder").get_weights()[0], task.supernet_trials.encoder.get_weights()[0]
    )


def test_weight_sharing_starts_from_what_earlier_trials_trained(tmp_path, data):
    space, task = _task(tmp_path, data, weight_sharing=True)
    a = space.hyperparameters({"kernel": 1, "coarse": 0})
    task.run_trial(a, "1", log=lambda message: None)
    kernel = task.supernet_trials.supernet.decoder.get_layer("main").candidates[1].conv.kernel
    trained = kernel.numpy()
    task.supernet_trials.prepare(a.values, 5, task.data.encoder_weights, weight_sharing=True)
    np.testing.assert_array_equal(kernel.numpy(), trained)  # kept, not re-drawn
    task.supernet_trials.prepare(a.values, 5, task.data.encoder_weights, weight_sharing=False)
    assert not np.array_equal(kernel.numpy(), trained)
    # A failed trial's non-finite weights are not shared: they are drawn afresh.
    kernel.assign(np.full(kernel.shape, np.nan, "float32"))
    task.supernet_trials.prepare(a.values, 6, task.data.encoder_weights, weight_sharing=True)
    assert np.all(np.isfinite(kernel.numpy()))


def test_settings_and_spaces_without_a_supernet_are_refused(tmp_path):
    with pytest.raises(ValueError, match="set supernet=True too"):
        ProxySettings(weight_sharing=True)
    with pytest.raises(ValueError, match="TemplateSpace has no supernet yet; search it with supernet=False"):
        ProxyTask(TemplateSpace(num_classes=3), str(tmp_path), ProxySettings(supernet=True))
