"""A cheap synthetic reward over a search space's decisions, for sample-efficiency benchmarks.

Training a segmentation network per trial makes comparing search strategies over hundreds
of trials impossible on a laptop. `SyntheticObjective` stands in for the proxy task: it maps
the hyperparameter values of one architecture to a reward in (0, 1), deterministically,
from the values alone (no model is built or trained), with the structure that makes real
searches hard enough to be worth learning:

- a "true" preference table: every value v of every decision d gets a score
  `p[d][v] ~ N(0, 1)`, so some ops / connections are simply better than others;
- pairwise interactions: `num_interactions` distinct pairs of decisions (d1, d2) drawn at
  random, each with a table `q[d1, d2][v1, v2] ~ N(0, interaction_scale**2)`, so the best
  value of one decision depends on others (an op that only helps on one input, say);
- the raw score `s = sum_d p[d][v_d] + sum_(d1,d2) q[d1, d2][v_d1, v_d2]` has standard
  deviation about `scale = sqrt(D + num_interactions * interaction_scale**2)` over uniform
  architectures (D decisions), and the reward is `sigmoid(sharpness * s / scale)`.

With the defaults (seed 0, 40 interactions of scale 0.5, sharpness 0.5) a uniformly random
auxiliary-cell architecture scores about 0.53 +- 0.11 (the best of 2000 such: 0.81) and the
reference optimum is 0.95:
a spread like that of the segmentation reward between poor and good decoders.
`reference_optimum()` estimates the best reward by coordinate ascent from many random
starts (a lower bound of the true maximum; the space holds 1.8e15 architectures).

`SyntheticTuner` is a real `keras_tuner.Tuner` whose `run_trial` returns this reward, so
any keras-tuner Oracle (tfnas' `PPOOracle` and `NearBestRandomOracle`, keras-tuner's
`BayesianOptimizationOracle`, ...) runs with all of keras-tuner's bookkeeping and no
training:

    >>> space = AuxCellSpace(num_classes=11, width=16)
    >>> objective = SyntheticObjective(space)
    >>> tuner = SyntheticTuner(objective, oracle=oracle, directory=tmp, project_name="s")
    >>> tuner.search(verbose=0)
    >>> tuner.rewards  # reward of each trial, in the order they ran
"""

import math

import keras_tuner
import numpy as np

#: keras-tuner objective of the synthetic reward (maximised).
OBJECTIVE = keras_tuner.Objective("reward", direction="max")


def decisions_of(space):
    """The ordered decisions of a space: `[(name, [values...]), ...]`.

    Args:
        space: a `tfnas.spaces.base.DecoderSpace` (or anything with `hyperparameters()`
            returning `keras_tuner.HyperParameters` of `Choice` decisions).

    Returns:
        List of `(name, values)` pairs in the order the space declares them.

    Raises:
        ValueError: if a decision is not a `Choice`/`Int`/`Boolean` with a list of values.
    """
    decisions = []
    for hp in space.hyperparameters().space:
        values = getattr(hp, "values", None)
        if not values:
            raise ValueError(
                f"decision {hp.name!r} is a {type(hp).__name__} without a list of "
                "values; the synthetic objective needs categorical decisions"
            )
        decisions.append((hp.name, list(values)))
    return decisions


class SyntheticObjective:
    """Deterministic reward in (0, 1) from hyperparameter values (see the module docstring).

    Args:
        space: the search space whose decisions are scored (e.g. `AuxCellSpace`).
        seed: int, picks the preference and interaction tables. Default 0.
        num_interactions: int >= 0, number of interacting decision pairs. Default 40.
        interaction_scale: float >= 0, standard deviation of the interaction terms.
            Default 0.5.
        sharpness: float > 0, multiplies the normalised score inside the sigmoid.
            Default 0.5.

    Raises:
        ValueError: if a setting is out of range or the space has fewer than 2 decisions
            while interactions are asked for.
    """

    def __init__(self, space, seed=0, num_interactions=40, interaction_scale=0.5, sharpness=0.5):
        if num_interactions < 0 or interaction_scale < 0 or sharpness <= 0:
            raise ValueError(
                f"num_interactions={num_interactions!r}, interaction_scale={interaction_scale!r}, "
                f"sharpness={sharpness!r}: expected num_interactions >= 0, interaction_scale >= 0 "
                "and sharpness > 0"
            )
        self.decisions = decisions_of(space)
        self.names = [name for name, _ in self.decisions]
        self.sizes = [len(values) for _, values in self.decisions]
        count = len(self.decisions)
        pairs_available = count * (count - 1) // 2
        if num_interactions > pairs_available:
            raise ValueError(
                f"num_interactions={num_interactions} but the space has only "
                f"{pairs_available} pairs of its {count} decisions; ask for fewer"
            )
        rng = np.random.default_rng(seed)
        self.preferences = [rng.normal(size=n) for n in self.sizes]
        all_pairs = [(a, b) for a in range(count) for b in range(a + 1, count)]
        chosen = rng.choice(len(all_pairs), size=num_interactions, replace=False)
        self.interactions = [
            (a, b, rng.normal(scale=interaction_scale, size=(self.sizes[a], self.sizes[b])))
            for a, b in (all_pairs[int(i)] for i in sorted(chosen))
        ]
        self.scale = math.sqrt(count + num_interactions * interaction_scale**2)
        self.sharpness = float(sharpness)

    def indices(self, values):
        """Hyperparameter values (dict name -> value) -> list of choice indices.

        Raises:
            ValueError: if a decision is missing or holds a value not among its choices.
        """
        result = []
        for name, choices in self.decisions:
            if name not in values:
                raise ValueError(
                    f"values lack the decision {name!r}; expected every decision of the space: {self.names}"
                )
            try:
                result.append(choices.index(values[name]))
            except ValueError:
                raise ValueError(f"values[{name!r}] is {values[name]!r}, expected one of {choices}") from None
        return result

    def raw_score(self, indices):
        """The unsquashed score `s` of a list of choice indices."""
        total = sum(p[i] for p, i in zip(self.preferences, indices))
        total += sum(q[indices[a], indices[b]] for a, b, q in self.interactions)
        return float(total)

    def reward_of_indices(self, indices):
        """Reward in (0, 1) of a list of choice indices."""
        z = self.sharpness * self.raw_score(indices) / self.scale
        return 1.0 / (1.0 + math.exp(-z))

    def __call__(self, values):
        """Reward in (0, 1) of hyperparameter values (dict name -> value).

        Raises:
            ValueError: as `indices`.
        """
        return self.reward_of_indices(self.indices(values))

    def reference_optimum(self, restarts=100, seed=0):
        """Best reward found by coordinate ascent from `restarts` random starts.

        A lower bound of the true maximum, used to express search results as a fraction of
        the attainable reward.

        Args:
            restarts: int >= 1, number of random starts. Default 100.
            seed: int, seed of the starts.

        Returns:
            `(reward, indices)` of the best architecture found.
        """
        rng = np.random.default_rng(seed)
        best_score, best = -math.inf, None
        for _ in range(int(restarts)):
            current = [int(rng.integers(n)) for n in self.sizes]
            score = self.raw_score(current)
            improved = True
            while improved:
                improved = False
                for d, n in enumerate(self.sizes):
                    for v in range(n):
                        if v == current[d]:
                            continue
                        trial = current[:d] + [v] + current[d + 1 :]
                        trial_score = self.raw_score(trial)
                        if trial_score > score + 1e-12:
                            current, score, improved = trial, trial_score, True
            if score > best_score:
                best_score, best = score, current
        return self.reward_of_indices(best), best


class DecisionsOnly(keras_tuner.HyperModel):
    """A HyperModel that declares a space's decisions and builds nothing.

    Lets a Tuner register the space with its Oracle without building a network.

    Args:
        space: a `tfnas.spaces.base.DecoderSpace`.
    """

    def __init__(self, space):
        super().__init__(name=f"{space.name}_decisions")
        self.space = space

    def build(self, hp):
        """Declares the decisions on `hp`; returns None (there is no model)."""
        self.space.declare_hyperparameters(hp)


class SyntheticTuner(keras_tuner.Tuner):
    """A keras-tuner Tuner whose trials return the synthetic reward (no training).

    Args:
        objective_fn: a `SyntheticObjective` (or any callable values -> float).
        oracle: the keras-tuner Oracle to benchmark; its objective should be `OBJECTIVE`.
        space: the space the objective scores (its decisions are registered through
            `DecisionsOnly`).
        **kwargs: passed to `keras_tuner.Tuner` (`directory`, `project_name`, ...).

    Attributes:
        rewards: list of floats, the reward of each trial in the order they ran.
    """

    def __init__(self, objective_fn, oracle, space, **kwargs):
        self.objective_fn = objective_fn
        self.rewards = []
        super().__init__(oracle=oracle, hypermodel=DecisionsOnly(space), **kwargs)

    def run_trial(self, trial, *args, **kwargs):
        """Scores the trial's values with the synthetic objective.

        Returns:
            `{"reward": float}`.
        """
        reward = self.objective_fn(trial.hyperparameters.values)
        self.rewards.append(reward)
        return {"reward": reward}

    def save_model(self, trial_id, model, step=0):
        """Nothing to save: synthetic trials have no model."""

    def load_model(self, trial):
        """Synthetic trials have no model.

        Raises:
            NotImplementedError: always.
        """
        raise NotImplementedError("synthetic trials train no model; read tuner.rewards instead")
