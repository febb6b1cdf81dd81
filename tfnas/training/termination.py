"""Progressive termination between the two proxy-training stages (Nekrasov et al., CVPR 2019, Sec. 3.2.1).

After stage 1 a trial continues to stage 2 when its stage-1 reward beats a moving average
(decay 0.99) of the stage-1 rewards seen so far. Otherwise it continues only if
`reward > average * (1 - u)` with `u ~ U(0, delta)`: with `delta = 0.9` most weak
architectures still continue early in a search (exploration, as in epsilon-greedy), and
`delta` is annealed as the search goes on, so later only near-average ones do. The
schedule follows the authors' code: the moving average starts at 0.01, and `delta` is
multiplied by 0.9, 0.8, 0.7 and 0.6 after 100, 200, 300 and 400 decisions.

The state (average, number of decisions, the decision taken for each trial id) is a small
JSON file written atomically, so a search that is killed and resumed keeps its schedule,
and a trial that is re-run after a crash gets the decision it got the first time (the
average is updated once per trial). The random draw of decision `n` comes from
`numpy.random.default_rng([seed, n])`, so decisions are reproducible across restarts.

    >>> rule = ProgressiveTermination(seed=0)
    >>> rule.should_continue("00", 0.42)
    True
"""

import json
import os

import numpy as np

from tfnas.io import atomic_write_json, file_lock

#: The authors' annealing of `delta`: after `n` decisions, multiply it by the factor.
DEFAULT_ANNEALING = ((100, 0.9), (200, 0.8), (300, 0.7), (400, 0.6))


class ProgressiveTermination:
    """The authors' early-termination rule for stage 1, with its state kept on disk.

    Args:
        decay: float in [0, 1), decay of the moving average of stage-1 rewards. Default 0.99.
        delta: float in [0, 1], initial upper bound of the tolerated relative shortfall
            below the average. Default 0.9.
        initial_average: float, the moving average before any reward. Default 0.01.
        annealing: sequence of `(decisions, factor)`: after that many decisions `delta` is
            multiplied by `factor`. Default `DEFAULT_ANNEALING`.
        seed: int, seeds the random draws. Default 0.
        path: optional str, JSON file the state is loaded from (when it exists) and saved
            to after every decision.

    Raises:
        ValueError: if a setting is out of range.
    """

    def __init__(
        self, decay=0.99, delta=0.9, initial_average=0.01, annealing=DEFAULT_ANNEALING, seed=0, path=None
    ):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"termination decay={decay!r} must be in [0, 1)")
        if not 0.0 <= delta <= 1.0:
            raise ValueError(f"termination delta={delta!r} must be in [0, 1]")
        self.decay = float(decay)
        self.initial_delta = float(delta)
        self.initial_average = float(initial_average)
        self.annealing = tuple((int(n), float(f)) for n, f in annealing)
        self.seed = int(seed)
        self.path = path
        self.average = self.initial_average
        self.steps = 0
        self.decisions = {}
        if path is not None and os.path.exists(path):
            with open(path) as f:
                self.set_state(json.load(f))

    @property
    def delta(self):
        """The current (annealed) tolerance: `delta` times the factors reached so far."""
        value = self.initial_delta
        for after, factor in self.annealing:
            if self.steps >= after:
                value *= factor
        return value

    def should_continue(self, trial_id, reward):
        """Decides whether trial `trial_id`, with stage-1 `reward`, goes on to stage 2.

        Compares with the average of the *earlier* rewards, then adds `reward` to it. A
        trial id decided before (a re-run after a crash) gets its earlier decision and
        leaves the state unchanged.

        Args:
            trial_id: str, the keras-tuner trial id.
            reward: float, the stage-1 reward.

        Returns:
            bool, True to continue to stage 2, False to terminate the trial.
        """
        if self.path is None:
            return self._decide(str(trial_id), float(reward))
        # Workers of a distributed search share the state file: decide on its latest state.
        with file_lock(self.path + ".lock"):
            if os.path.exists(self.path):
                with open(self.path) as f:
                    self.set_state(json.load(f))
            return self._decide(str(trial_id), float(reward))

    def _decide(self, trial_id, reward):
        if trial_id in self.decisions:
            return self.decisions[trial_id]
        if not np.isfinite(reward):
            keep = False
        elif reward > self.average:
            keep = True
        else:
            shortfall = np.random.default_rng([self.seed, self.steps]).uniform(0.0, self.delta)
            keep = bool(reward > self.average * (1.0 - shortfall))
        if np.isfinite(reward):
            self.average = self.decay * self.average + (1.0 - self.decay) * reward
        self.steps += 1
        self.decisions[trial_id] = keep
        if self.path is not None:
            atomic_write_json(self.path, self.get_state())
        return keep

    def get_state(self):
        """The JSON-able state: average, number of decisions, decisions per trial id."""
        return {
            "average": self.average,
            "steps": self.steps,
            "decisions": dict(self.decisions),
            "decay": self.decay,
            "delta": self.initial_delta,
            "seed": self.seed,
        }

    def set_state(self, state):
        """Restores a state returned by `get_state`."""
        self.average = float(state["average"])
        self.steps = int(state["steps"])
        self.decisions = {str(k): bool(v) for k, v in state["decisions"].items()}
