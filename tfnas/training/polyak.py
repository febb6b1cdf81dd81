"""Optimizer groups with Polyak averaging of the weights (Nekrasov et al., CVPR 2019, Sec. 3.2.2).

The running average of the parameters is kept during each proxy stage and applied before
validation (decay 0.9 in stage 1, 0.99 in stage 2). Keras 3 optimizers do exactly this
with `use_ema=True, ema_momentum=decay`: after every update `average = decay * average +
(1 - decay) * weight`, the average starting at the weights after the first update, and
`finalize_variable_values` copies the averages into the weights. Two things do not fit
`model.fit` as is: stage 2 trains the encoder with SGD and the decoder with Adam (fit
finalizes one optimizer over *all* trainable weights, which fails for two), and a Keras
optimizer adds a dozen graph ops per variable, so for a decoder with ~350 variables the
optimizer alone was two thirds of the traced train step (measured: 28k ops, ~20 s of
tracing on this machine's CPU).

`ParameterGroup` therefore gives each optimizer one flat float32 vector holding all its
variables: the Keras optimizer (and its EMA) updates that single vector, and the model's
variables are assigned their slices after each step. The update rule is Keras' own,
unchanged; only the variable layout differs. Batch-norm moving statistics are not
trainable weights, so they are neither optimized nor averaged (they follow training, as
in the paper).

    >>> group = ParameterGroup(make_optimizer("adam", 3e-3, polyak_decay=0.9), decoder.trainable_variables)
"""

import keras
import numpy as np
import tensorflow as tf

_OPTIMIZERS = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD}
#: The optimizers `make_optimizer` makes, by name.
OPTIMIZERS = tuple(sorted(_OPTIMIZERS))


def make_optimizer(name, learning_rate, polyak_decay=None, momentum=0.9):
    """A Keras optimizer keeping a Polyak (exponential moving) average of what it trains.

    Args:
        name: `"adam"` or `"sgd"`.
        learning_rate: float, or a `keras.optimizers.schedules.LearningRateSchedule` of
            the optimizer's steps (e.g. a polynomial decay).
        polyak_decay: float in [0, 1) or None: decay of the weights' moving average; None
            keeps no average.
        momentum: float, SGD momentum (ignored for Adam). Default 0.9.

    Returns:
        A `keras.optimizers.Optimizer`.

    Raises:
        ValueError: for an unknown name or a decay outside [0, 1).
    """
    if name not in _OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}; expected one of {sorted(_OPTIMIZERS)}")
    if polyak_decay is not None and not 0.0 <= polyak_decay < 1.0:
        raise ValueError(f"polyak_decay={polyak_decay!r} must be in [0, 1) or None")
    if not isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule):
        learning_rate = float(learning_rate)
    kwargs = {"learning_rate": learning_rate}
    if name == "sgd":
        kwargs["momentum"] = float(momentum)
    if polyak_decay is not None:
        kwargs.update(use_ema=True, ema_momentum=float(polyak_decay))
    return _OPTIMIZERS[name](**kwargs)


class ParameterGroup:
    """Variables trained by one optimizer through a flat copy of them (see the module docstring).

    Args:
        optimizer: a fresh `keras.optimizers.Optimizer` (from `make_optimizer`).
        variables: the float variables it trains.
        name: str, name of the flat vector.

    Raises:
        ValueError: if `variables` is empty.
    """

    def __init__(self, optimizer, variables, name="parameters"):
        self.optimizer = optimizer
        self.variables = list(variables)
        if not self.variables:
            raise ValueError(f"parameter group {name!r} has no variables to train")
        self.shapes = [tuple(v.shape) for v in self.variables]
        self.sizes = [int(np.prod(s)) for s in self.shapes]
        self.flat = keras.Variable(np.zeros(sum(self.sizes), np.float32), trainable=False, name=name)
        self.sync()
        optimizer.build([self.flat])

    def reset(self):
        """Fresh optimizer state on the same variables: step count, slots and averages zeroed.

        What a new optimizer would start from, without creating variables, so a training
        step traced over this group keeps serving the next trial of a supernet search
        (issue 10). The learning rate is left as it is (a schedule starts again: it reads
        the zeroed step count); call `sync` afterwards.
        """
        learning_rate = getattr(self.optimizer, "_learning_rate", None)
        for variable in self.optimizer.variables:
            if variable is not learning_rate:
                variable.assign(tf.zeros(variable.shape, variable.dtype))

    def all_finite(self):
        """Whether every value the group trains is finite (one check of the flat vector)."""
        return bool(np.all(np.isfinite(self.flat.numpy())))

    def sync(self):
        """Copies the variables' current values into the flat vector (eagerly)."""
        self.flat.assign(np.concatenate([np.reshape(v.numpy(), [-1]) for v in self.variables]))

    def apply(self, gradients):
        """One optimizer step from the variables' gradients (None counts as zero); graph-safe.

        Args:
            gradients: list of tensors (or None) aligned with `variables`.
        """
        flat_gradient = tf.concat(
            [
                tf.zeros([size]) if g is None else tf.reshape(tf.cast(g, tf.float32), [-1])
                for g, size in zip(gradients, self.sizes)
            ],
            axis=0,
        )
        self.optimizer.apply([flat_gradient], [self.flat])
        self._write_back()

    def _write_back(self):
        for variable, part, shape in zip(self.variables, tf.split(self.flat, self.sizes), self.shapes):
            variable.assign(tf.reshape(tf.cast(part, variable.dtype), shape))

    def apply_polyak(self):
        """Replaces the weights by their moving average (no-op without EMA or steps)."""
        if self.optimizer.use_ema and int(self.optimizer.iterations.numpy()) > 0:
            self.optimizer.finalize_variable_values([self.flat])
            self._write_back()
