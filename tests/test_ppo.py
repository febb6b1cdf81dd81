"""Tests of PPOOracle's rollout buffer: the clip binds, minibatch steps, exact resume."""

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import _oracle_worker as worker  # noqa: E402

SMALL = {"units": 16, "buffer_size": 6, "minibatches": 6}


def _weights(oracle):
    return [v.numpy().copy() for v in oracle._controller.weights]


def _ready_oracle(tmp_path, **kwargs):
    """A PPO oracle with its project directory set and controller built, no trial run."""
    oracle = worker.make_oracle("ppo", 5, 1, **{**SMALL, **kwargs})
    worker.make_tuner(oracle, tmp_path, overwrite=True)
    assert oracle._ensure_controller()
    return oracle


def test_ratio_leaves_one_for_buffered_architectures(tmp_path):
    oracle = worker.make_oracle("ppo", 5, 2, learning_rate=3e-2, **SMALL)
    worker.make_tuner(oracle, tmp_path, overwrite=True).search(verbose=0)
    assert [e["trial_id"] for e in oracle.buffer] == oracle.end_order[-5:]
    actions = np.array([e["actions"] for e in oracle.buffer])
    ratios = np.exp(
        oracle._controller.log_prob(actions).numpy() - np.array([e["log_prob"] for e in oracle.buffer])
    )
    # Every buffered architecture was sampled before at least one update.
    assert (np.abs(ratios - 1) > 1e-3).all()
    assert oracle.last_update["steps"] == 5  # one step per architecture (minibatches of 1)
    assert oracle.last_update["clip_fraction"] > 0
    assert oracle.last_update["ratio_min"] < 1 - 0.1 or oracle.last_update["ratio_max"] > 1.1
    # Traced once for the whole search, not per trial.
    assert oracle._controller._sample_function.experimental_get_tracing_count() == 1
    assert oracle._train_function.experimental_get_tracing_count() == 1


@pytest.mark.parametrize(
    "shift, reward, binds",
    [
        (-1.0, 1.0, True),  # ratio e > 1 + clip, advantage > 0: clipped, no gradient
        (1.0, -1.0, True),  # ratio 1/e < 1 - clip, advantage < 0: clipped, no gradient
        (0.0, 1.0, False),  # ratio 1: the gradient passes
        (-1.0, -1.0, False),  # ratio e with advantage < 0: the unclipped term is smaller
    ],
)
def test_clip_binds_exactly_when_the_clipped_term_is_smaller(tmp_path, shift, reward, binds):
    oracle = _ready_oracle(tmp_path)
    actions = [0, 1, 1, 2]
    current = float(oracle._controller.log_prob(np.array([actions])).numpy()[0])
    # The recorded sampling-time log-probability differs from the current one by `shift`.
    oracle._samples["x"] = {"actions": actions, "log_probs": [current + shift, 0.0, 0.0, 0.0]}
    oracle._rewards["x"] = reward
    oracle.baseline = 0.0
    before = _weights(oracle)
    oracle._update()
    advantage = reward - 0.05 * reward  # baseline 0 -> 0.95 * 0 + 0.05 * reward
    ratio = np.exp(-shift)
    expected_loss = -min(ratio * advantage, np.clip(ratio, 0.9, 1.1) * advantage)
    assert oracle.last_update["loss"] == pytest.approx(expected_loss, rel=1e-4)
    assert oracle.last_update["binding_fraction"] == float(binds)
    assert oracle.last_update["clip_fraction"] == float(shift != 0)
    changed = any(not np.array_equal(a, b) for a, b in zip(before, _weights(oracle)))
    assert changed != binds


def test_buffer_keeps_the_last_architectures_and_steps_per_minibatch(tmp_path):
    # Buffer of 4 in 2 minibatches of 2, 2 epochs: ceil(min(i, 4) / 2) * 2 steps at update i.
    oracle = worker.make_oracle("ppo", 7, 3, units=16, buffer_size=4, minibatches=2, epochs=2)
    worker.make_tuner(oracle, tmp_path, overwrite=True).search(verbose=0)
    assert [e["trial_id"] for e in oracle.buffer] == oracle.end_order[-4:]
    rewards = [oracle.trials[t].score for t in oracle.end_order]
    assert [e["reward"] for e in oracle.buffer] == rewards[-4:]
    steps = [-(-min(i, 4) // 2) * 2 for i in range(1, 8)]
    assert oracle.last_update["steps"] == steps[-1] == 4
    assert int(oracle._optimizer.iterations.numpy()) == sum(steps)
    baseline = rewards[0]
    for reward in rewards[1:]:
        baseline = 0.95 * baseline + 0.05 * reward
    assert oracle.baseline == pytest.approx(baseline)


class _Interrupted(BaseException):
    """Stops a search mid-trial the way a kill does (keras-tuner does not catch it)."""


@pytest.mark.slow
def test_resumed_search_continues_exactly_as_an_uninterrupted_one(tmp_path):
    max_trials, stop_at = 7, "4"
    whole = worker.make_oracle("ppo", max_trials, 5, **SMALL)
    worker.make_tuner(whole, tmp_path / "whole", overwrite=True).search(verbose=0)

    first = worker.make_oracle("ppo", max_trials, 5, **SMALL)
    tuner = worker.make_tuner(first, tmp_path / "cut", overwrite=True)
    run_trial = tuner.run_trial

    def interrupted(trial, *args, **kwargs):
        if trial.trial_id == stop_at:
            raise _Interrupted()
        return run_trial(trial, *args, **kwargs)

    tuner.run_trial = interrupted
    with pytest.raises(_Interrupted):
        tuner.search(verbose=0)
    resumed = worker.make_oracle("ppo", max_trials, 5, **SMALL)
    resumed_tuner = worker.make_tuner(resumed, tmp_path / "cut", overwrite=False)
    assert resumed.updates == int(stop_at) and len(resumed.buffer) == int(stop_at)
    resumed_tuner.search(verbose=0)

    def values(oracle):
        return [oracle.trials[t].hyperparameters.values for t in sorted(oracle.trials)]

    assert values(resumed) == values(whole)
    assert resumed.buffer == whole.buffer
    assert resumed.baseline == whole.baseline
    for a, b in zip(_weights(resumed), _weights(whole)):
        np.testing.assert_array_equal(a, b)


def test_buffer_settings_are_checked():
    with pytest.raises(ValueError, match=r"minibatches=8: expected a value in \[1, buffer_size=4\]"):
        worker.make_oracle("ppo", 2, 1, buffer_size=4, minibatches=8)
    with pytest.raises(ValueError, match="epochs=0"):
        worker.make_oracle("ppo", 2, 1, epochs=0)


@pytest.mark.parametrize("space_name", ["auxcell", "template", "dpc"])
def test_controller_samples_valid_architectures_of_every_space(tmp_path, space_name):
    """The controller's decisions are each space's own (its vocabulary comes from the space's
    hyperparameters), so every space is sampled here, cheaply; the end-to-end searches of
    `test_spaces_search.py` then need not pair every space with every Oracle."""
    import keras_tuner

    from tfnas.spaces import get_space
    from tfnas.tuners import make_oracle

    space = get_space(space_name)(num_classes=3, alpha=0.35)
    hp = keras_tuner.HyperParameters()
    space.declare_hyperparameters(hp)
    oracle = make_oracle("ppo", 4, seed=0, **SMALL)
    oracle._set_project_dir(str(tmp_path), "run")
    oracle.update_space(hp)
    genotypes = []
    for trial_id in ("0", "1", "2"):
        response = oracle.populate_space(trial_id)
        assert response["status"] == "RUNNING", response
        genotypes.append(space.genotype(response["values"]))  # raises for an invalid architecture
        assert space.values(genotypes[-1]) == response["values"]
    assert len({str(g) for g in genotypes}) > 1
