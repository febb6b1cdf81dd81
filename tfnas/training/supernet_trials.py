"""Trials in a supernet: the proxy task's models built and traced once per search (issue 10).

A standalone trial (`ProxyTask(supernet=False)`) builds its encoder and decoder and traces
its stage-1 step, stage-2 step, both validation steps and its profiling graphs (49 s of
fixed cost per trial against 1.6 s per epoch on the loaded machine of benchmarks/RESULTS.md
section 3).
`SupernetTrials` builds the space's supernet (`space.build_supernet`, `tfnas.supernet`) and
the two stage models around it once; a trial then

1. restores the search's encoder weights (stage 2 trains the encoder),
2. selects its architecture and re-draws the weights it uses from a seed derived from the
   trial (`Supernet.prepare`; with `weight_sharing` the weights of earlier trials are kept,
   ENAS-style),
3. zeroes the optimizers' step counts, slots and Polyak averages (`ParameterGroup.reset`),

and runs the same `run_stage` / `evaluate_reward` as a standalone trial on models whose
`tf.function`s are already traced: the architecture is the value of the `Choice` indices,
not the structure of the graph. Only the chosen candidate of each choice runs, but every
choice is a `Case` op and the gradient and optimizer touch every supernet variable, so on
a CPU at the demo's size a step costs about 3x the standalone architecture's
(`benchmarks/bench_supernet_step.py`) and most of what the traces saved is spent again: a
trial after the first takes about 32 s against 40 s standalone, but the first (building and
tracing the supernet) about 115 s against 35 s, so a search gains from about ten trials on
(benchmarks/RESULTS.md, "Supernets"). Hence `supernet=False` is the default.

Parameters and multiply-adds come from `Supernet.cost` (per-layer counts cached, no trace).
The trained weights are copied into the standalone model `space.build(hp)`
(`Supernet.transfer`), which is what the search directory keeps, exports and reloads.
"""

import time

import numpy as np

from tfnas.training.stages import set_batchnorm_momentum


class SupernetTrials:
    """The supernet, its encoder and both stage models of a search, reused by every trial.

    Args:
        task: the `tfnas.training.ProxyTask` (its `trial_space`, settings and stage-model
            factories).

    Attributes:
        supernet: the `tfnas.supernet.Supernet`.
        encoder: the encoder model shared by both stages.
        network: image -> encoder -> supernet decoder, the stage-2 training model.
        stage1: the stage-1 `ProxyModel` (decoder on cached features).
        build_seconds: float, time spent building the supernet and stage models.

    Raises:
        ValueError: if the space has no supernet.
    """

    def __init__(self, task):
        space = task.trial_space
        if not space.supports_supernet():
            raise ValueError(f"the {type(space).__name__} has no supernet yet; search it with supernet=False")
        start = time.perf_counter()
        self.task = task
        self.space = space
        self.encoder = space.build_encoder()
        self.supernet = space.build_supernet(self.encoder)
        self.network = space.assemble(self.encoder, self.supernet.decoder)
        set_batchnorm_momentum(self.network, task.settings.bn_momentum)
        self.stage1 = task.stage1_model(self.supernet.decoder)
        self._stage2 = None
        self.build_seconds = time.perf_counter() - start

    def stage2(self):
        """The stage-2 `ProxyModel` (whole network, SGD on the encoder), built on first use."""
        if self._stage2 is None:
            self._stage2 = self.task.stage2_model(self.encoder, self.supernet.decoder, self.network)
        return self._stage2

    def prepare(self, values, seed, encoder_weights, weight_sharing=False):
        """Makes the supernet a fresh instance of architecture `values` (no tracing).

        Args:
            values: dict, the architecture's hyperparameter values.
            seed: int, the trial's seed (`tfnas.training.trial_seed`).
            encoder_weights: list of arrays, the search's encoder weights.
            weight_sharing: bool, keep the decoder weights earlier trials trained (unless
                some are not finite: a failed trial's are drawn afresh).
        """
        self.encoder.set_weights(encoder_weights)
        # A failed (NaN) trial leaves its weights non-finite; sharing them would fail every
        # later architecture that uses them, so those are drawn afresh.
        weight_sharing = weight_sharing and self._finite(values)
        self.supernet.prepare(values, seed=seed, weight_sharing=weight_sharing)
        for model in (self.stage1, self._stage2):
            for group in model.groups if model is not None else ():
                group.reset()

    def _finite(self, values):
        """Whether every weight the architecture `values` uses is finite."""
        return all(
            np.all(np.isfinite(variable.numpy()))
            for use in self.supernet.uses(values)
            for variable in use.layer.weights
        )

    def cost(self, values, image_shape):
        """Parameters and multiply-adds of the standalone inference model (`Supernet.cost`)."""
        return self.supernet.cost(values, image_shape)

    def standalone(self, hp):
        """The architecture's standalone training model holding the trial's trained weights.

        Args:
            hp: `keras_tuner.HyperParameters` of the architecture.

        Returns:
            `space.build(hp)` with the supernet's encoder and the architecture's decoder
            weights: what `NASTuner.save_model`, export and `get_best_models` use.
        """
        model = self.space.build(hp.copy())
        model.get_layer("encoder").set_weights(self.encoder.get_weights())
        self.supernet.transfer(hp.values, model)
        return model

    def traces(self):
        """How many times each stage's steps were traced: `{"stage1": {...}, "stage2": {...}}`."""
        models = (("stage1", self.stage1), ("stage2", self._stage2))
        return {name: dict(model.traces) for name, model in models if model is not None}


__all__ = ["SupernetTrials"]
