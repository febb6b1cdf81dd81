"""Search strategies as keras-tuner Oracles, and the NASTuner that runs the proxy task.

- `PPOOracle`: LSTM controller trained with PPO or REINFORCE (seed 000, Sec. 3.2).
- `NearBestRandomOracle`: uniform sampling plus mutations of the best (seed 002, Sec. 3.2).
- `NASTuner`: a `keras_tuner.Tuner` running each trial as the two-stage proxy task.

Imported lazily so that `import tfnas.tuners.ppo` does not pull in the tuner's dependencies.
"""
import importlib

_EXPORTS = {
    "PPOOracle": "tfnas.tuners.ppo",
    "NearBestRandomOracle": "tfnas.tuners.random_search",
    "NASTuner": "tfnas.tuners.nas_tuner",
}


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'tfnas.tuners' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = list(_EXPORTS)
