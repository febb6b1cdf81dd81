"""Test helper for the Oracle tests: a small HyperModel, a cheap Tuner, and a search script.

Imported by tests/test_oracles.py and tests/test_distributed.py, and run as a script in a
subprocess for the kill/resume and distributed tests:

    python tests/_oracle_worker.py --oracle ppo --directory DIR --max-trials 8 --sleep 0.5

Each run of `run_trial` appends `start <trial_id> <tuner_id>` and `done <trial_id>
<tuner_id>` lines to `<DIR>/search/runs.log`, so a test can see which trials ran, how often
and on which worker.
"""

import argparse
import os
import time

import keras
import keras_tuner
import numpy as np

from tfnas.tuners.ppo import PPOOracle
from tfnas.tuners.random_search import NearBestRandomOracle

PROJECT = "search"
# The synthetic objective's best value of every decision.
BEST = {"op": "sep3x3", "width": 24, "skip": True, "depth": 2}
OBJECTIVE = keras_tuner.Objective("score", direction="max")


def declare(hp):
    """Declares the decisions of the small space and returns their values.

    Args:
        hp: `keras_tuner.HyperParameters`.

    Returns:
        Dict of decision values.
    """
    return {
        "op": hp.Choice("op", ["conv3x3", "sep3x3", "sep5x5", "maxpool"]),
        "width": hp.Int("width", 8, 32, step=8),
        "skip": hp.Boolean("skip"),
        "depth": hp.Choice("depth", [1, 2, 3]),
    }


def synthetic_score(values):
    """Fraction of decisions at their `BEST` value (1.0 for the best architecture).

    Args:
        values: Dict of decision values.

    Returns:
        Float in [0, 1].
    """
    return sum(values[name] == best for name, best in BEST.items()) / len(BEST)


class SmallSpace(keras_tuner.HyperModel):
    """Four decisions (Choice, Int, Boolean, Choice) and a tiny Dense model."""

    def build(self, hp):
        """Declares the decisions and returns a tiny regression model.

        Args:
            hp: `keras_tuner.HyperParameters`.

        Returns:
            A compiled `keras.Model` mapping 4 features to 1.
        """
        values = declare(hp)
        inputs = keras.Input((4,))
        x = inputs
        for _ in range(values["depth"]):
            x = keras.layers.Dense(values["width"], activation="relu")(x)
        model = keras.Model(inputs, keras.layers.Dense(1)(x))
        model.compile(optimizer="adam", loss="mse")
        return model


class SyntheticTuner(keras_tuner.Tuner):
    """A Tuner whose trials score the synthetic objective, or train the tiny model.

    Args:
        sleep: Seconds each trial sleeps (so a test can kill a search mid-trial).
        fail_trials: Trial ids whose `run_trial` raises.
        train: If True, the trial builds the HyperModel, trains it for one step and
            returns its loss as `"loss"`; else it returns the synthetic `"score"`.
        **kwargs: Passed to `keras_tuner.Tuner`.
    """

    def __init__(self, sleep=0.0, fail_trials=(), train=False, **kwargs):
        self.sleep = sleep
        self.fail_trials = set(fail_trials)
        self.train = train
        super().__init__(**kwargs)

    def _log(self, event, trial):
        with open(os.path.join(self.project_dir, "runs.log"), "a") as f:
            f.write(f"{event} {trial.trial_id} {self.tuner_id}\n")

    def run_trial(self, trial, *args, **kwargs):
        """Runs one trial: sleeps, then scores it.

        Args:
            trial: The `Trial` to run.
            *args: Unused.
            **kwargs: Unused.

        Returns:
            Dict of metrics.

        Raises:
            RuntimeError: for trials in `fail_trials`.
        """
        self._log("start", trial)
        time.sleep(self.sleep)
        if trial.trial_id in self.fail_trials:
            raise RuntimeError(f"trial {trial.trial_id} fails on purpose")
        if self.train:
            model = self.hypermodel.build(trial.hyperparameters)
            rng = np.random.default_rng(0)
            x = rng.normal(size=(8, 4)).astype("float32")
            y = x.sum(axis=1, keepdims=True)
            history = model.fit(x, y, epochs=1, batch_size=8, verbose=0)
            metrics = {"loss": float(history.history["loss"][-1])}
        else:
            metrics = {"score": synthetic_score(declare(trial.hyperparameters))}
        self._log("done", trial)
        return metrics

    def save_model(self, trial_id, model, step=0):
        """Nothing to save: the trials keep no model."""

    def load_model(self, trial):
        """Rebuilds the (untrained) model of a trial.

        Args:
            trial: A `Trial`.

        Returns:
            A `keras.Model`.
        """
        return self.hypermodel.build(trial.hyperparameters)


def make_oracle(kind, max_trials, seed, **kwargs):
    """Makes a PPOOracle ("ppo") or NearBestRandomOracle ("random") on the score objective.

    Args:
        kind: "ppo" or "random".
        max_trials: Int.
        seed: Int.
        **kwargs: Passed to the Oracle.

    Returns:
        The Oracle.
    """
    cls = {"ppo": PPOOracle, "random": NearBestRandomOracle}[kind]
    return cls(objective=OBJECTIVE, max_trials=max_trials, seed=seed, **kwargs)


def make_tuner(oracle, directory, overwrite=False, **kwargs):
    """Makes a SyntheticTuner over SmallSpace in `directory/search`.

    Args:
        oracle: The Oracle.
        directory: String, the tuner directory.
        overwrite: Bool, passed to the Tuner.
        **kwargs: Passed to SyntheticTuner.

    Returns:
        The Tuner.
    """
    return SyntheticTuner(
        oracle=oracle,
        hypermodel=SmallSpace(),
        directory=str(directory),
        project_name=PROJECT,
        overwrite=overwrite,
        **kwargs,
    )


def main():
    """Runs one search (or one chief/worker of a distributed search) from the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--oracle", choices=["ppo", "random"], required=True)
    parser.add_argument("--directory", required=True)
    parser.add_argument("--max-trials", type=int, required=True)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--sleep", type=float, default=0.0)
    args = parser.parse_args()
    oracle = make_oracle(args.oracle, args.max_trials, args.seed)
    tuner = make_tuner(oracle, args.directory, sleep=args.sleep)
    tuner.search(verbose=0)


if __name__ == "__main__":
    main()
