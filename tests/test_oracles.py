"""Tests for the search Oracles: PPO/REINFORCE controller and random search near the best."""

import json
import os
import signal
import subprocess
import sys
import time

import keras_tuner
import numpy as np
import pytest
import tensorflow as tf

sys.path.insert(0, os.path.dirname(__file__))
import _oracle_worker as worker  # noqa: E402

from tfnas.tuners.controller import Controller  # noqa: E402
from tfnas.tuners.ppo import PPOOracle  # noqa: E402
from tfnas.tuners.random_search import NearBestRandomOracle  # noqa: E402

WORKER = os.path.join(os.path.dirname(__file__), "_oracle_worker.py")


class FunctionTuner(keras_tuner.Tuner):
    """A Tuner whose trial score is `score(hp)`."""

    def __init__(self, score, **kwargs):
        self.score = score
        super().__init__(**kwargs)

    def run_trial(self, trial, *args, **kwargs):
        return {"score": self.score(trial.hyperparameters)}

    def save_model(self, trial_id, model, step=0):
        pass

    def load_model(self, trial):
        return None


def search(oracle, directory, **kwargs):
    tuner = worker.make_tuner(oracle, directory, overwrite=True, **kwargs)
    tuner.search(verbose=0)
    return tuner


def sequence(oracle):
    """The trials' values in trial order."""
    return [oracle.trials[t].hyperparameters.values for t in sorted(oracle.trials)]


def read_log(directory):
    with open(os.path.join(directory, worker.PROJECT, "runs.log")) as f:
        return [line.split() for line in f.read().splitlines()]


def test_controller_log_prob_matches_its_samples():
    controller = Controller([4, 3, 2, 3], units=16, seed=0)
    actions, log_probs = controller.sample(np.random.default_rng(0))
    recomputed = controller.log_prob(np.array([actions])).numpy()[0]
    assert recomputed == pytest.approx(sum(log_probs), abs=1e-5)
    assert controller.entropy(np.array([actions])).numpy()[0] > 0
    clone = Controller.from_config(controller.get_config())
    clone.build()
    for a, b in zip(clone.get_weights(), controller.get_weights()):
        np.testing.assert_array_equal(a, b)  # same seed -> same U(-0.1, 0.1) weights
    assert max(np.abs(w).max() for w in controller.get_weights()) <= 0.1


def test_fused_teacher_forced_pass_equals_the_cells_step_by_step():
    """The fused BlockLSTM pass (what PPO trains) is the Keras cells' function and gradient."""
    controller = Controller([4, 3, 2, 3, 5], units=16, layers=2, seed=1)
    controller.build()
    rng = np.random.default_rng(2)
    actions = tf.constant(np.stack([controller.sample(rng)[0] for _ in range(3)]), tf.int32)

    def step_by_step():
        x, states = controller._initial(3)
        total = 0.0
        for i in range(controller.num_decisions):
            output, states = controller._cells(x, states)
            log_p = tf.nn.log_softmax(controller._masked_logits(output, i))
            total += tf.reduce_sum(tf.gather(log_p, actions[:, i] + controller.offsets[i], batch_dims=1))
            if i < controller.num_decisions - 1:  # the last decision is never fed back
                x = controller.embedding(actions[:, i] + controller.offsets[i])
        return total

    variables = controller.trainable_variables
    with tf.GradientTape(persistent=True) as tape:
        reference = step_by_step()
        fused = tf.reduce_sum(controller.log_prob(actions))
    assert float(fused) == pytest.approx(float(reference), abs=1e-5)
    for variable, a, b in zip(
        variables, tape.gradient(reference, variables), tape.gradient(fused, variables)
    ):
        a, b = tf.convert_to_tensor(a).numpy(), tf.convert_to_tensor(b).numpy()
        assert np.abs(a).max() > 0, variable.name
        np.testing.assert_allclose(b, a, atol=1e-6, err_msg=variable.name)


@pytest.mark.parametrize("kind", ["ppo", "random"])
def test_same_seed_same_architectures(tmp_path, kind):
    runs = [
        sequence(search(worker.make_oracle(kind, 8, seed), tmp_path / f"{seed}_{i}").oracle)
        for i, seed in enumerate([5, 5, 6])
    ]
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]
    assert len(runs[0]) == 8 and set(runs[0][0]) == {"op", "width", "skip", "depth"}


def test_ppo_learns_the_best_choices(tmp_path):
    # A 10-architecture buffer in 10 minibatches keeps the test fast (up to 10 steps each).
    oracle = worker.make_oracle("ppo", 60, 1, learning_rate=3e-3, buffer_size=10, minibatches=10, units=32)
    tuner = worker.make_tuner(oracle, tmp_path, overwrite=True)
    before = oracle.controller_probabilities(worker.BEST)
    tuner.search(verbose=0)
    after = oracle.controller_probabilities(worker.BEST)
    best_before = np.array([before[n][v] for n, v in worker.BEST.items()])
    best_after = np.array([after[n][v] for n, v in worker.BEST.items()])
    assert oracle.updates == 60
    assert (best_after > best_before).all()
    assert best_after.prod() > 5 * best_before.prod()
    # The greedy architecture of the trained controller is the best one.
    greedy = oracle.controller_probabilities()
    assert {n: max(p, key=p.get) for n, p in greedy.items()} == worker.BEST


def test_reinforce_updates_and_prunes_checkpoints(tmp_path):
    oracle = worker.make_oracle("ppo", 12, 2, algorithm="reinforce", learning_rate=1e-2)
    tuner = worker.make_tuner(oracle, tmp_path, overwrite=True)
    before = oracle.controller_probabilities(worker.BEST)
    tuner.search(verbose=0)
    assert oracle.updates == 12
    assert oracle.controller_probabilities(worker.BEST) != before
    files = [f for f in os.listdir(tuner.project_dir) if f.startswith("controller_")]
    assert files == ["controller_000012.npz"]  # superseded checkpoints are pruned
    rewards = [oracle.trials[t].score for t in oracle.end_order]
    baseline = rewards[0]
    for reward in rewards[1:]:
        baseline = 0.95 * baseline + 0.05 * reward
    assert oracle.baseline == pytest.approx(baseline)


def test_update_every_batches_trials(tmp_path):
    oracle = worker.make_oracle("ppo", 7, 4, update_every=3)
    search(oracle, tmp_path)
    assert oracle.updates == 2
    assert len(oracle._rewards) == 1 and list(oracle._rewards) == list(oracle._samples)


def test_tiny_keras_model_trials_minimise_loss(tmp_path):
    oracle = PPOOracle(objective=keras_tuner.Objective("loss", "min"), max_trials=3, seed=0)
    tuner = search(oracle, tmp_path, train=True)
    losses = [oracle.trials[t].score for t in oracle.end_order]
    assert [oracle.trials[t].status for t in oracle.end_order] == ["COMPLETED"] * 3
    assert all(loss > 0 for loss in losses)
    expected = -losses[0]
    for loss in losses[1:]:
        expected = 0.95 * expected + 0.05 * -loss  # reward = -loss for a "min" objective
    assert oracle.baseline == pytest.approx(expected)
    assert tuner.get_best_models()[0].count_params() > 0


def test_failed_trial_does_not_update_the_controller(tmp_path):
    oracle = worker.make_oracle("ppo", 6, 0)
    search(oracle, tmp_path, fail_trials={"2"})
    statuses = {t: oracle.trials[t].status for t in oracle.trials}
    assert statuses == {
        "0": "COMPLETED",
        "1": "COMPLETED",
        "2": "FAILED",
        "3": "COMPLETED",
        "4": "COMPLETED",
        "5": "COMPLETED",
    }
    assert "fails on purpose" in oracle.trials["2"].message
    assert oracle.updates == 5
    assert oracle._samples == {} and oracle._rewards == {}


def test_unsupported_hyperparameter_is_named(tmp_path):
    oracle = PPOOracle(max_trials=2)
    with pytest.raises(ValueError, match=r"'lr' is a Float.*Choice, Int, Boolean"):
        FunctionTuner(
            score=lambda hp: 0.0,
            oracle=oracle,
            hypermodel=lambda hp: hp.Float("lr", 1e-4, 1e-2),
            directory=str(tmp_path),
        )
    with pytest.raises(ValueError, match="algorithm='a2c'"):
        PPOOracle(algorithm="a2c")


def test_random_never_repeats_and_stops_when_exhausted(tmp_path):
    oracle = NearBestRandomOracle(objective=worker.OBJECTIVE, max_trials=20, seed=1)

    def space(hp):
        return hp.Boolean("a"), hp.Choice("b", [1, 2]), hp.Boolean("c")

    tuner = FunctionTuner(
        score=lambda hp: float(hp["a"]) + hp["b"],
        oracle=oracle,
        hypermodel=space,
        directory=str(tmp_path),
        overwrite=True,
    )
    tuner.search(verbose=0)
    values = [tuple(sorted(v.items())) for v in sequence(oracle)]
    assert oracle.space_size() == 8
    assert len(values) == 8 and len(set(values)) == 8


def test_mutations_change_exactly_the_configured_number_of_decisions(tmp_path):
    oracle = worker.make_oracle("random", 15, 9, mutation_probability=1.0, top_k=3, mutations=2)
    search(oracle, tmp_path)
    order = sorted(oracle.trials)
    assert oracle.parents[order[0]] is None  # nothing to mutate yet
    for index, trial_id in enumerate(order[1:], start=1):
        parent_id = oracle.parents[trial_id]
        child = oracle.trials[trial_id].hyperparameters.values
        parent = oracle.trials[parent_id].hyperparameters.values
        assert sum(child[name] != parent[name] for name in child) == 2
        earlier = sorted((oracle.trials[t].score for t in order[:index]), reverse=True)
        assert oracle.trials[parent_id].score >= earlier[:3][-1]  # one of the top 3
    assert len({tuple(sorted(v.items())) for v in sequence(oracle)}) == 15


def _wait_for_starts(directory, count, proc, timeout=60):
    deadline = time.monotonic() + timeout
    path = os.path.join(directory, worker.PROJECT, "runs.log")
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the search exited before it could be killed"
        if os.path.exists(path) and sum(e == "start" for e, *_ in read_log(directory)) >= count:
            return
        time.sleep(0.05)
    raise TimeoutError(f"fewer than {count} trials started in {timeout}s")


@pytest.mark.parametrize("kind", ["ppo", "random"])
def test_killed_search_resumes(tmp_path, kind):
    max_trials, done_before_kill = 8, 4
    with open(tmp_path / "stderr.txt", "w") as stderr:
        proc = subprocess.Popen(
            [
                sys.executable,
                WORKER,
                "--oracle",
                kind,
                "--directory",
                str(tmp_path),
                "--max-trials",
                str(max_trials),
                "--sleep",
                "0.6",
            ],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            # Trial 4 has started (and sleeps): trials 0-3 are complete.
            _wait_for_starts(tmp_path, done_before_kill + 1, proc)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
    project = tmp_path / worker.PROJECT
    saved = json.loads((project / "oracle.json").read_text())

    oracle = worker.make_oracle(kind, max_trials, 3)
    tuner = worker.make_tuner(oracle, tmp_path, overwrite=False)
    if kind == "ppo":
        updates = saved["controller"]["updates"]
        assert updates == done_before_kill == oracle.updates
        assert oracle.baseline == saved["controller"]["baseline"]
        assert oracle._ensure_controller()
        with np.load(project / f"controller_{updates:06d}.npz") as data:
            for i, variable in enumerate(oracle._controller.weights):
                np.testing.assert_array_equal(variable.numpy(), data[f"weight_{i}"])
        # PPO made one Adam step per buffered architecture (minibatches of one): 1+2+3+4.
        assert int(oracle._optimizer.iterations.numpy()) == sum(range(1, updates + 1))
        assert [entry["trial_id"] for entry in oracle.buffer] == [
            entry["trial_id"] for entry in saved["controller"]["buffer"]
        ]
        assert len(oracle.buffer) == updates
    tuner.search(verbose=0)

    log = read_log(tmp_path)
    done = [trial_id for event, trial_id, _ in log if event == "done"]
    assert sorted(done) == [str(i) for i in range(max_trials)]  # each trial done once
    assert [t for e, t, _ in log if e == "start"].count(str(done_before_kill)) == 2
    assert all(trial.status == "COMPLETED" for trial in oracle.trials.values())
    assert len(oracle.trials) == max_trials
    if kind == "ppo":
        assert oracle.updates == max_trials and oracle._samples == {}
    else:
        values = {tuple(sorted(v.items())) for v in sequence(oracle)}
        assert len(values) == max_trials


def test_a_trial_created_just_before_a_kill_is_queued_again_not_lost(tmp_path):
    """A chief killed between the two saves of `create_trial` (the trial's file, then
    `oracle.json`): the reloaded Oracle lists the trial nowhere; it must still be run."""
    from tfnas.tuners.oracles import finish_interrupted_trials, return_running_trials

    def oracle():
        made = keras_tuner.oracles.RandomSearchOracle(
            objective=keras_tuner.Objective("score", "max"), max_trials=2, seed=1
        )
        made._set_project_dir(str(tmp_path), "p")
        space = keras_tuner.HyperParameters()
        space.Int("x", 0, 1000)
        made.update_space(space)
        return made

    chief = oracle()
    first = chief.create_trial("tuner0")
    before = (tmp_path / "p" / "oracle.json").read_text()
    second = chief.create_trial("tuner1")
    (tmp_path / "p" / "oracle.json").write_text(before)  # killed after trial_1's file
    restarted = oracle()
    restarted.reload()
    assert restarted.trials[second.trial_id].status == "RUNNING"
    finish_interrupted_trials(restarted)
    return_running_trials(restarted)  # as a restarted chief does
    assert restarted._retry_queue == [second.trial_id]
    assert restarted.start_order == [first.trial_id, second.trial_id]
    assert restarted.ongoing_trials["tuner0"].trial_id == first.trial_id
    handed = restarted.create_trial("tuner1")  # the worker that never got its reply asks again
    assert handed.trial_id == second.trial_id and handed.status == "RUNNING"
