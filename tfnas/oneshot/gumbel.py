"""Gumbel-softmax, its temperature, Dyn-EGS and the architecture parameters of 3M-Pose (Hoang, 3M-Pose thesis 2021, Sec. 3.2.1, 3.3).

Spec: `/work/shared/3M-POSE.md` sections 6 and 7.
"""

import keras
import numpy as np
import tensorflow as tf

from tfnas.cells.fabric import EDGES, FABRIC_OPS, INPUTS

#: Logit of a candidate a cell does not have (an input beyond the fabric's edge).
_ABSENT = -1e9


def _next_seed(seed, offset):
    """A second seed from `seed`: an int is offset; a `SeedGenerator` (or None) draws again."""
    return seed + offset if isinstance(seed, int) else seed


# --- Gumbel-softmax and its temperature ------------------------------------------------------
def sample_gumbel(shape, seed=None):
    """Standard Gumbel noise, -log(-log(U)) with U uniform in (0, 1).

    Args:
        shape: output shape.
        seed: optional int or `keras.random.SeedGenerator`.
    """
    u = keras.random.uniform(shape, minval=1e-10, maxval=1.0, seed=seed)
    return -keras.ops.log(-keras.ops.log(u))


def gumbel_softmax(logits, temperature, noise=None, seed=None):
    """The Gumbel-softmax of Eq. 3.4: softmax((logits + g) / temperature) over the last axis.

    Args:
        logits: tensor of architecture parameters.
        temperature: float or scalar tensor, tau > 0.
        noise: optional Gumbel noise shaped like `logits` (drawn when None).
        seed: seed for the noise when drawn.

    Returns:
        `(probabilities, perturbed_logits)`.
    """
    noise = sample_gumbel(keras.ops.shape(logits), seed) if noise is None else noise
    perturbed = logits + noise
    return keras.ops.softmax(perturbed / temperature, axis=-1), perturbed


@keras.saving.register_keras_serializable(package="tfnas")
class LinearTemperature:
    """Gumbel-softmax temperature decreasing linearly per step from `start` to `end` (spec section 6).

    tau(step) = end + (start - end) * (1 - min(1, step / (total_steps - 1))), steps 0-based,
    so the search's last step (`total_steps - 1`) runs at exactly `end`.

    Args:
        total_steps: int > 0, steps of the whole search (epochs x steps per epoch).
        start: float, tau at step 0 (10 in the thesis).
        end: float, tau at the last step and after (0.001 in the thesis).
    """

    def __init__(self, total_steps, start=10.0, end=1e-3):
        if int(total_steps) < 1 or not start > 0 or not end > 0:
            raise ValueError(
                f"LinearTemperature needs total_steps >= 1 and positive start and end, got "
                f"total_steps={total_steps}, start={start}, end={end}"
            )
        self.total_steps, self.start, self.end = int(total_steps), float(start), float(end)

    def __call__(self, step):
        last = float(max(1, self.total_steps - 1))
        fraction = keras.ops.minimum(1.0, keras.ops.cast(step, "float32") / last)
        return self.end + (self.start - self.end) * (1.0 - fraction)  # exactly `end` at the last step

    def get_config(self):
        return {"total_steps": self.total_steps, "start": self.start, "end": self.end}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


# --- Dyn-EGS -----------------------------------------------------------------------------------
def _rank(scores):
    """Rank of every entry along the last axis, 0 = largest; ties go to the lower index."""
    order = tf.argsort(scores, axis=-1, direction="DESCENDING", stable=True)
    return tf.argsort(order, axis=-1, stable=True)


def _straight_through_one_hot(logits, temperature, noise):
    soft, perturbed = gumbel_softmax(logits, temperature, noise)
    hard = tf.one_hot(tf.argmax(perturbed, axis=-1), tf.shape(logits)[-1], dtype=soft.dtype)
    return hard + (soft - tf.stop_gradient(soft))  # exactly `hard` forward


def dyn_egs(logits, density, temperature, noise=None, density_noise=None, seed=None):
    """Dyn-EGS weights (spec section 7): keep the top-(i + 1) candidates, i drawn from the density.

    For every row of `logits` (candidates along the last axis), a hard Gumbel one-hot `h` over
    the states of `density` chooses i, and `M_j` is the 0/1 mask of the top-(j + 1) entries of
    the Gumbel-perturbed logits. The weights are

        w = sum_j h_j * (M_j + y - stop_gradient(y)),  y = gumbel_softmax(logits, temperature),

    whose forward value is exactly `M_i` (i + 1 ones) and whose gradient reaches the logits
    through y and the density through the straight-through one-hot h (d w / d h_j = M_j).

    Args:
        logits: `(..., N)` alpha or beta; absent candidates hold a very negative value.
        density: `(..., S)` m_alpha or m_beta, S <= N states (state j keeps j + 1).
        temperature: tau.
        noise: optional Gumbel noise for `logits`; `density_noise` for `density`.
        seed: seed for the noise that is drawn.

    Returns:
        `(..., N)` weights: 0/1 forward values, straight-through gradients.
    """
    logits = tf.convert_to_tensor(logits)
    if noise is None:
        noise = sample_gumbel(tf.shape(logits), seed)
    if density_noise is None:
        density_noise = sample_gumbel(tf.shape(density), _next_seed(seed, 1))
    y, perturbed = gumbel_softmax(logits, temperature, noise)
    states = density.shape[-1]
    rank = _rank(perturbed)
    keep = tf.range(1, states + 1)  # state j keeps j + 1
    masks = tf.cast(rank[..., None, :] < keep[:, None], y.dtype)  # (..., S, N)
    h = _straight_through_one_hot(density, temperature, density_noise)  # (..., S)
    return tf.einsum("...s,...sn->...n", h, masks) + tf.reduce_sum(h, axis=-1, keepdims=True) * (
        y - tf.stop_gradient(y)
    )


def derive_topk(logits, density):
    """The derivation rule (spec section 7): i = argmax m, keep the top-(i + 1) of the logits.

    Deterministic: ties go to the lower index.

    Args:
        logits: 1-D array of N values.
        density: 1-D array of S <= N values.

    Returns:
        tuple of the kept candidate indices, sorted.
    """
    logits, density = np.asarray(logits, dtype=np.float64), np.asarray(density, dtype=np.float64)
    k = int(np.argmax(density)) + 1
    order = np.argsort(-logits, kind="stable")
    return tuple(sorted(int(i) for i in order[:k]))


class ArchitectureParameters:
    """The architecture parameters {alpha, beta, m} of a `FabricSpace` (spec sections 6, 7).

    - `alpha`: `(cells, 3, 9)`, one logit per op of each edge;
    - `beta`: `(cells, 3)`, one logit per input (above, parallel, below); inputs a cell lacks
      are held at a very negative value and never chosen;
    - `m_alpha`: `(cells, 3, R_alpha)`, per edge (Table A.1 counts ops per edge; the thesis' m_alpha
      is per hidden node);
    - `m_beta`: `(cells, R_beta)`, one choice per cell of how many inputs it keeps; states beyond
      a cell's number of candidates are held very negative.

    All start at zero (uniform), apart from the absent entries.

    Args:
        space: a `tfnas.spaces.fabric.FabricSpace`.
    """

    def __init__(self, space):
        self.space = space
        n = len(space.cells)
        absent_inputs = np.zeros((n, len(INPUTS)), np.float32)
        absent_states = np.zeros((n, space.max_inputs), np.float32)
        for k in range(n):
            available = space.candidates(k)
            for i in range(len(INPUTS)):
                if i not in available:
                    absent_inputs[k, i] = _ABSENT
            absent_states[k, min(space.max_inputs, len(available)) :] = _ABSENT
        self._absent_inputs = tf.constant(absent_inputs)
        self._absent_states = tf.constant(absent_states)
        self.alpha = keras.Variable(np.zeros((n, len(EDGES), len(FABRIC_OPS)), np.float32), name="alpha")
        self.beta = keras.Variable(np.zeros((n, len(INPUTS)), np.float32), name="beta")
        self.m_alpha = keras.Variable(np.zeros((n, len(EDGES), space.max_ops), np.float32), name="m_alpha")
        self.m_beta = keras.Variable(np.zeros((n, space.max_inputs), np.float32), name="m_beta")

    @property
    def variables(self):
        """The four variables, for the architecture optimizer."""
        return [self.alpha, self.beta, self.m_alpha, self.m_beta]

    def sample(self, temperature, seed=None):
        """Dyn-EGS weights for one step.

        Args:
            temperature: tau.
            seed: optional int or `keras.random.SeedGenerator` (use one inside a `tf.function`).

        Returns:
            `(op_weights (cells, 3, 9), input_weights (cells, 3))`.
        """
        ops = dyn_egs(self.alpha, self.m_alpha, temperature, seed=seed)
        inputs = dyn_egs(
            self.beta + self._absent_inputs,
            self.m_beta + self._absent_states,
            temperature,
            seed=_next_seed(seed, 2),
        )
        return ops, inputs

    def get_state(self):
        """The four parameters as JSON-able nested lists (to resume a search)."""
        return {v.name: np.asarray(v).tolist() for v in self.variables}

    def set_state(self, state):
        """Restores `get_state()`'s output.

        Raises:
            ValueError: naming a missing parameter or a shape that does not fit this space.
        """
        for v in self.variables:
            if v.name not in state:
                raise ValueError(
                    f"architecture state lacks {v.name!r}; expected the keys "
                    f"{[w.name for w in self.variables]}"
                )
            value = np.asarray(state[v.name], np.float32)
            if value.shape != tuple(v.shape):
                raise ValueError(
                    f"architecture state {v.name!r} has shape {value.shape}, but this space needs "
                    f"{tuple(v.shape)}"
                )
            v.assign(value)

    def derive(self, keep=None):
        """The derived genotype (`derive_topk` per edge and per cell, pruned by the space).

        Args:
            keep: None for the rule of spec section 7 (i = argmax m); or an int >= 1: keep
                the top-`keep` ops of every edge and inputs of every cell (at most R_alpha,
                R_beta and the inputs a cell has), the alpha/beta ranking at another density.

        Returns:
            the genotype (list; `None` for a pruned cell).

        Raises:
            ValueError: if `keep` is not a positive int.
        """
        if keep is not None and (isinstance(keep, bool) or int(keep) != keep or keep < 1):
            raise ValueError(f"keep={keep!r} must be None or a positive int")
        alpha, beta = np.asarray(self.alpha), np.asarray(self.beta) + np.asarray(self._absent_inputs)
        m_alpha, m_beta = np.asarray(self.m_alpha), np.asarray(self.m_beta) + np.asarray(self._absent_states)
        if keep is not None:
            m_alpha, m_beta = _forced_density(m_alpha, keep), _forced_density(m_beta, keep)
        inputs, ops = [], []
        for k in range(len(self.space.cells)):
            inputs.append(derive_topk(beta[k], m_beta[k]))
            ops.append([derive_topk(alpha[k, e], m_alpha[k, e]) for e in range(len(EDGES))])
        return self._genotype(inputs, ops)

    def sample_genotype(self, temperature, seed=None):
        """The genotype of one Dyn-EGS sample (`sample`): the candidates with weight 1.

        Args:
            temperature: tau (the last step's, 0.001 in the thesis, samples near `derive()`).
            seed: optional int or `keras.random.SeedGenerator`.

        Returns:
            the genotype (list; `None` for a pruned cell).
        """
        op_weights, input_weights = (np.asarray(w) for w in self.sample(temperature, seed))
        inputs = [tuple(int(i) for i in np.flatnonzero(w > 0.5)) for w in input_weights]
        ops = [[tuple(int(o) for o in np.flatnonzero(w > 0.5)) for w in cell] for cell in op_weights]
        return self._genotype(inputs, ops)

    def _genotype(self, inputs, ops):
        """Kept inputs and ops per cell -> the space's (pruned) genotype."""
        values = {}
        for k in range(len(self.space.cells)):
            values[f"cell{k}_inputs"] = self.space.input_subsets(k).index(tuple(inputs[k]))
            for e in range(len(EDGES)):
                values[f"cell{k}_o{e}"] = self.space.op_sets.index(tuple(ops[k][e]))
        return self.space.genotype(values)


def _forced_density(density, keep):
    """A density whose argmax keeps `keep` candidates (fewer where fewer states are present)."""
    present = (density > _ABSENT / 2).sum(axis=-1, keepdims=True)
    state = np.minimum(int(keep), present) - 1
    return np.where(np.arange(density.shape[-1]) == state, 0.0, _ABSENT)
