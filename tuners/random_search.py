"""Random search that also samples near the best, as a keras-tuner Oracle (Chen et al., NeurIPS 2018, Sec. 3.2).

Chen et al. (NeurIPS 2018) search the Dense Prediction Cell with Vizier's random search,
"sampling points uniformly at random as well as sampling some points near the currently
best observed architectures". Here a new trial is, with probability
`mutation_probability`, one of the `top_k` best completed trials with `mutations` of its
decisions changed to another value; otherwise every decision is drawn uniformly. An
architecture already tried (same values hash) is never proposed again; when
`max_collisions` draws in a row are all repeats, or every architecture of a finite space
has been tried, the Oracle answers STOPPED.

Example:

    oracle = NearBestRandomOracle(objective=keras_tuner.Objective("reward", "max"),
                                max_trials=50, mutation_probability=0.5, seed=1)
"""

import math

import keras_tuner
import numpy as np
from keras_tuner.engine import trial as trial_module
from keras_tuner.engine.hyperparameters import Float

from tfnas.tuners._settings import check_settings
from tfnas.tuners.controller import decision_values
from tfnas.tuners.oracles import ResumableOracle


class NearBestRandomOracle(ResumableOracle):
    """Uniform sampling plus mutations of the best trials, never repeating an architecture.

    Args:
        objective: A string or `keras_tuner.Objective`, what "best" means. Defaults to
            keras-tuner's default objective (minimise the value `run_trial` returns).
        max_trials: Int, the number of trials to run. Defaults to 10.
        mutation_probability: Float in [0, 1], the probability that a trial mutates one of
            the best trials so far instead of sampling uniformly (uniform while no trial
            has completed). Defaults to 0.5.
        top_k: Int, the parent of a mutation is drawn uniformly from the `top_k` best
            completed trials. Defaults to 5.
        mutations: Int, how many decisions a mutation changes (all of them if the parent
            has fewer changeable decisions). Defaults to 1.
        max_collisions: Int, how many repeated architectures in a row are drawn before the
            space is considered exhausted and the search stops. Defaults to 100.
        seed: Optional int; the same seed gives the same sequence of architectures for the
            same scores.
        hyperparameters: Optional `keras_tuner.HyperParameters` to register or override
            decisions in advance.
        allow_new_entries: Bool, whether the HyperModel may declare hyperparameters not in
            `hyperparameters`. Defaults to True.
        tune_new_entries: Bool, whether such new hyperparameters are searched (else their
            default is used). Defaults to True.
        max_retries_per_trial: Int, how many times a crashed trial is re-run. Defaults to 0.
        max_consecutive_failed_trials: Int, the search stops after this many failed trials
            in a row. Defaults to 3.

    Raises:
        ValueError: if a setting is out of range.
    """

    def __init__(
        self,
        objective=None,
        max_trials=10,
        mutation_probability=0.5,
        top_k=5,
        mutations=1,
        max_collisions=100,
        seed=None,
        hyperparameters=None,
        allow_new_entries=True,
        tune_new_entries=True,
        max_retries_per_trial=0,
        max_consecutive_failed_trials=3,
    ):
        checks = [
            ("mutation_probability", mutation_probability, 0 <= mutation_probability <= 1, "in [0, 1]"),
            ("top_k", top_k, top_k >= 1, ">= 1"),
            ("mutations", mutations, mutations >= 1, ">= 1"),
            ("max_collisions", max_collisions, max_collisions >= 0, ">= 0"),
        ]
        check_settings(checks)
        super().__init__(
            objective=objective,
            max_trials=max_trials,
            hyperparameters=hyperparameters,
            allow_new_entries=allow_new_entries,
            tune_new_entries=tune_new_entries,
            seed=seed,
            max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials,
        )
        if seed is not None:  # the base class treats seed=0 as "no seed"
            self.seed = self._seed_state = int(seed)
        self.mutation_probability = float(mutation_probability)
        self.top_k = int(top_k)
        self.mutations = int(mutations)
        self._max_collisions = int(max_collisions)
        self._rng = np.random.default_rng(self.seed)
        # trial_id -> id of the trial it mutates, or None when sampled uniformly.
        self.parents = {}

    def _sample(self, hp, exclude=None):
        """A uniform draw of one hyperparameter's value, different from `exclude` if given."""
        if isinstance(hp, Float):
            for _ in range(100):
                value = hp.random_sample(int(self._rng.integers(2**31)))
                if exclude is None or value != exclude:
                    return value
            return value
        values = [v for v in decision_values(hp) if exclude is None or v != exclude]
        return values[int(self._rng.integers(len(values)))]

    def _fill(self, values):
        """Keeps `values` of active hyperparameters, drawing the active ones it lacks."""
        hps = keras_tuner.HyperParameters()
        for hp in self.hyperparameters.space:
            hps.merge([hp])
            if hps.is_active(hp):
                hps.values[hp.name] = values[hp.name] if hp.name in values else self._sample(hp)
        return hps.values

    def _changeable(self, hp):
        if isinstance(hp, Float):
            return hp.max_value > hp.min_value
        return len(decision_values(hp)) > 1

    def _mutate(self, parent):
        """The parent's values with `mutations` decisions changed to another value."""
        values = dict(parent.hyperparameters.values)
        candidates = [hp for hp in self.hyperparameters.space if hp.name in values and self._changeable(hp)]
        count = min(self.mutations, len(candidates))
        for index in self._rng.choice(len(candidates), size=count, replace=False):
            hp = candidates[int(index)]
            values[hp.name] = self._sample(hp, exclude=values[hp.name])
        return self._fill(values)

    def _pick_parent(self):
        best = [
            trial
            for trial in self.get_best_trials(self.top_k)
            if trial.status == trial_module.TrialStatus.COMPLETED
        ]
        if not best:
            return None
        return best[int(self._rng.integers(len(best)))]

    def space_size(self):
        """The number of distinct architectures, or None if infinite or conditional.

        Returns:
            Int or None.
        """
        sizes = []
        for hp in self.hyperparameters.space:
            if isinstance(hp, Float) or hp.conditions:
                return None
            sizes.append(len(decision_values(hp)))
        return math.prod(sizes)

    def populate_space(self, trial_id):
        """Proposes an architecture not tried yet: uniform, or a mutation of a top trial.

        Args:
            trial_id: String, the id of the new trial.

        Returns:
            `{"status": "RUNNING", "values": {...}}`, or `{"status": "STOPPED"}` when the
            space is exhausted.
        """
        size = self.space_size()
        if size is not None and len(self._tried_so_far) >= size:
            return {"status": trial_module.TrialStatus.STOPPED, "values": None}
        for _ in range(self._max_collisions + 1):
            parent = None
            if self._rng.random() < self.mutation_probability:
                parent = self._pick_parent()
            values = self._mutate(parent) if parent else self._fill({})
            if not self._duplicate(values):
                self.parents[trial_id] = parent.trial_id if parent else None
                return {"status": trial_module.TrialStatus.RUNNING, "values": values}
        return {"status": trial_module.TrialStatus.STOPPED, "values": None}

    def get_state(self):
        """Returns the JSON-able state: keras-tuner's plus the RNG state and parents.

        Returns:
            Dict.
        """
        state = super().get_state()
        state["random_search"] = {"rng": self._rng.bit_generator.state, "parents": self.parents}
        return state

    def set_state(self, state):
        """Restores the state written by `get_state`.

        Args:
            state: Dict from `get_state`.
        """
        super().set_state(state)
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = state["random_search"]["rng"]
        self.parents = state["random_search"]["parents"]
