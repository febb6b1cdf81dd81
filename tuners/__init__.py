"""Search strategies as keras-tuner Oracles, and the NASTuner that runs the proxy task.

- `PPOOracle`: LSTM controller trained with PPO or REINFORCE (Nekrasov et al., CVPR 2019, Sec. 3.2).
- `NearBestRandomOracle`: uniform sampling plus mutations of the best (Chen et al., NeurIPS 2018, Sec. 3.2).
- `NASTuner`: a `keras_tuner.Tuner` running each trial as the two-stage proxy task.
- `GumbelOracle` + `OneShotTuner`: the 3M-Pose one-shot search (Hoang 2021): the fabric supernet
  trained once, its derived architectures scored as trials.
- `make_oracle(name, max_trials)`, `ORACLES`, `OBJECTIVE`: the Oracles by name.

Imported lazily so that `import tfnas.tuners.ppo` does not pull in the tuner's dependencies.
"""

import importlib

_EXPORTS = {
    "PPOOracle": "tfnas.tuners.ppo",
    "NearBestRandomOracle": "tfnas.tuners.random_search",
    "NASTuner": "tfnas.tuners.nas_tuner",
    "GumbelOracle": "tfnas.tuners.oneshot",
    "OneShotTuner": "tfnas.tuners.oneshot",
    "make_oracle": "tfnas.tuners.oracles",
    "ORACLES": "tfnas.tuners.oracles",
    "OBJECTIVE": "tfnas.tuners.oracles",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tfnas.tuners' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = list(_EXPORTS)
