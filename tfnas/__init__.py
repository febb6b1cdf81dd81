"""tfnas: neural architecture search for compact, fast dense-prediction networks in Keras.

Subpackages: `tfnas.spaces` (search spaces as keras-tuner HyperModels), `tfnas.tuners`
(NASTuner and the Oracles), `tfnas.serving` (export and conversion), `tfnas.data`,
`tfnas.tasks`, `tfnas.profile`. See docs/architecture.md for the map.
"""

__version__ = "0.1.0"
