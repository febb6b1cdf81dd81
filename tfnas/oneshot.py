"""One-shot search parts of 3M-Pose, Hoang 2021 (seed 003, Sec. 3.2.1, 3.3, 3.4, 4.1): Gumbel-softmax, Dyn-EGS, losses.

Specification and readings: `/work/shared/3M-POSE.md` (sections in brackets).

- `gumbel_softmax` and `LinearTemperature` [6]: y = softmax((z + g) / tau), tau from 10 down
  to 0.001 linearly, per step.
- `dyn_egs` [7]: Dynamic Ensemble Gumbel Softmax. A density parameter m (one per edge for ops,
  one per cell for inputs) picks by a hard Gumbel one-hot a state i, and the top-(i + 1)
  candidates of the Gumbel-perturbed alpha (or beta) are kept. The forward weights are exactly
  0/1 (a derived network's plain sums); gradients flow straight through to the soft Gumbel
  probabilities of alpha/beta and of m. `derive_topk` is the same without noise.
- `ArchitectureParameters` holds alpha (cells x 3 edges x 9 ops), beta (cells x 3 inputs) and
  the densities m_alpha (cells x 3 edges x R_alpha) and m_beta (cells x R_beta) of a
  `FabricSpace`, samples weights and derives a genotype.
- `FabricCosts` [8]: multiply-adds of every op at its row's resolution, of every resampled
  input, and of the fixed parts (stem, cell projections, fuse, split, heads), so that
  `expected_madds(weights)` is differentiable in the weights and equals the counted
  multiply-adds (`tfnas.profile.madds`) of the derived network for 0/1 weights. `flops_loss`
  is `(GFLOPs / T) ** w` scaled by the step-wise warm-up `flops_warmup`.
- `rdm`, `rdm_correlation`, `teacher_guidance_loss` [9]: representational dissimilarity
  matrices and 1 - mean over teacher layers of the best Pearson correlation with a student
  layer, on the upper triangle.
- `FabricSupernet` [3-5, 10]: the network with every candidate op and input, mixed by the
  sampled weights.
- `SearchSettings` [8, 12]: the bi-level schedule and loss weights of the thesis.

The op and input weights enter the network through `tfnas.cells.fabric.mix`.
"""
import dataclasses

import keras
import numpy as np
import tensorflow as tf

from tfnas.cells.fabric import (
    EDGES,
    FABRIC_OPS,
    INPUTS,
    SE_RATIO,
    FabricCell,
    Fuse,
    PoseHead,
    Resample,
    Split,
    Stem,
    mix_inputs,
    op_madds,
)

#: Logit of a candidate a cell does not have (an input beyond the fabric's edge).
_ABSENT = -1e9


def _ceil_half(n):
    return -(-int(n) // 2)


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

    tau(step) = end + (start - end) * (1 - min(1, step / total_steps)).

    Args:
        total_steps: int > 0, steps of the whole search (epochs x steps per epoch).
        start: float, tau at step 0 (10 in the thesis).
        end: float, tau from `total_steps` on (0.001 in the thesis).
    """

    def __init__(self, total_steps, start=10.0, end=1e-3):
        if int(total_steps) < 1 or not start > 0 or not end > 0:
            raise ValueError(f"LinearTemperature needs total_steps >= 1 and positive start and end, got "
                             f"total_steps={total_steps}, start={start}, end={end}")
        self.total_steps, self.start, self.end = int(total_steps), float(start), float(end)

    def __call__(self, step):
        fraction = keras.ops.minimum(1.0, keras.ops.cast(step, "float32") / float(self.total_steps))
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
        density_noise = sample_gumbel(tf.shape(density), None if seed is None else seed + 1)
    y, perturbed = gumbel_softmax(logits, temperature, noise)
    states = density.shape[-1]
    rank = _rank(perturbed)
    keep = tf.range(1, states + 1)  # state j keeps j + 1
    masks = tf.cast(rank[..., None, :] < keep[:, None], y.dtype)  # (..., S, N)
    h = _straight_through_one_hot(density, temperature, density_noise)  # (..., S)
    return tf.einsum("...s,...sn->...n", h, masks) + tf.reduce_sum(h, axis=-1, keepdims=True) * (
        y - tf.stop_gradient(y))


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
            absent_states[k, min(space.max_inputs, len(available)):] = _ABSENT
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
            seed: optional int for reproducible noise.

        Returns:
            `(op_weights (cells, 3, 9), input_weights (cells, 3))`.
        """
        ops = dyn_egs(self.alpha, self.m_alpha, temperature, seed=seed)
        inputs = dyn_egs(self.beta + self._absent_inputs, self.m_beta + self._absent_states, temperature,
                         seed=None if seed is None else seed + 2)
        return ops, inputs

    def derive(self):
        """The derived genotype (`derive_topk` per edge and per cell, pruned by the space)."""
        alpha, beta = np.asarray(self.alpha), np.asarray(self.beta) + np.asarray(self._absent_inputs)
        m_alpha, m_beta = np.asarray(self.m_alpha), np.asarray(self.m_beta) + np.asarray(self._absent_states)
        values = {}
        for k in range(len(self.space.cells)):
            inputs = derive_topk(beta[k], m_beta[k])
            values[f"cell{k}_inputs"] = self.space.input_subsets(k).index(inputs)
            for e in range(len(EDGES)):
                values[f"cell{k}_o{e}"] = self.space.op_sets.index(derive_topk(alpha[k, e], m_alpha[k, e]))
        return self.space.genotype(values)


# --- the supernet --------------------------------------------------------------------------------
class FabricSupernet(keras.Model):
    """A `FabricSpace` with every candidate: nine ops on every edge, every possible macro input.

    `call(images, op_weights, input_weights)` mixes the candidates with the given weights
    (`ArchitectureParameters.sample`) through `tfnas.cells.fabric.mix`; with the 0/1 weights
    of a genotype it computes what that genotype's network computes (every cell is computed,
    pruned or not). The stem, fuses, splits and heads are those of the derived networks.

    Args:
        space: a `tfnas.spaces.fabric.FabricSpace`.

    Call args:
        images: `(N, H, W, 3)` float32.
        op_weights: `(cells, 3, 9)`; input_weights: `(cells, 3)`.
        training: bool.
        return_cells: bool, also return the list of cell outputs (for `teacher_guidance_loss`).

    Returns:
        dict of head outputs (`"logits"`, `"eel_<column>"`), and the cell outputs if asked.
    """

    def __init__(self, space, **kwargs):
        super().__init__(**kwargs)
        self.space = space
        s = space
        self.stem = Stem(s.width, s.stem_channels, s.stem_blocks, name="stem")
        self.fabric_cells = [FabricCell(s.widths[row], [FABRIC_OPS] * len(EDGES), name=f"cell{k}")
                             for k, (_, row) in enumerate(s.cells)]
        self.resamplers = {}
        for k, (_, row) in enumerate(s.cells):
            for i in s.candidates(k):
                if i != 1:
                    direction, label = ("down", "above") if i == 0 else ("up", "below")
                    name = f"cell{k}_{label}"
                    self.resamplers[name] = Resample(s.widths[row], direction, name=name)
        self.fuses = {str(c): Fuse(s.width, s.rows_of(c), name=f"fuse{c}") for c in s.fuse_columns}
        self.splits = {str(c): Split(s.widths[:s.rows_of(c)], name=f"split{c}") for c in s.eel_columns}
        self.heads = {str(c): PoseHead(s.num_joints, s.tag_dim, name=s.head_key(c)) for c in s.fuse_columns}

    def call(self, images, op_weights, input_weights, training=None, return_cells=False):
        s = self.space
        stem = self.stem(images, training=training)
        prev, skip, outputs, cell_outputs = {0: stem}, stem, {}, []
        for column in range(1, s.columns + 1):
            current = {}
            for row in range(s.rows_of(column)):
                k = s.cell_index(column, row)
                available = s.candidates(k)
                parts = []
                for i in available:
                    x = prev[row + i - 1]
                    if i == 0:
                        x = self.resamplers[f"cell{k}_above"](x, training=training)
                    elif i == 2:
                        x = self.resamplers[f"cell{k}_below"]([x, prev[row]], training=training)
                    parts.append(x)
                x = mix_inputs(parts, tf.gather(input_weights[k], list(available)))
                edge_weights = [op_weights[k, e] for e in range(len(EDGES))]
                current[row] = self.fabric_cells[k](x, edge_weights=edge_weights, training=training)
                cell_outputs.append(current[row])
            if column in s.fuse_columns:
                rows = [current[r] for r in range(s.rows_of(column))]
                final = self.fuses[str(column)]([skip, *rows], training=training)
                outputs[s.head_key(column)] = self.heads[str(column)](final)
                if column != s.columns:
                    current = dict(enumerate(self.splits[str(column)]([final, *rows], training=training)))
                skip = final
            prev = current
        return (outputs, cell_outputs) if return_cells else outputs


# --- the cost of an architecture ---------------------------------------------------------------
def _se_madds(height, width, filters):
    return height * width * filters + 2 * filters * max(1, filters // SE_RATIO)


class FabricCosts:
    """Multiply-adds of a fabric's parts at one input size (spec section 8), as `tfnas.profile` counts.

    Args:
        space: a `tfnas.spaces.fabric.FabricSpace`.
        image_size: `(H, W)` of the input image.

    Attributes:
        sizes: `(h, w)` of every row.
        ops: `(cells, 3, 9)` array, multiply-adds of each op of each edge.
        inputs: `(cells, 3)` array, multiply-adds of resampling each input (0 for parallel).
        cell_fixed: `(cells,)` array, the cell's 1x1 output projection.
        fixed: int, stem, fuses, splits and heads.
    """

    def __init__(self, space, image_size):
        self.space = space
        h, w = (int(s) for s in image_size)
        h, w = _ceil_half(_ceil_half(h)), _ceil_half(_ceil_half(w))
        self.sizes = []
        for _ in range(space.rows):
            self.sizes.append((h, w))
            h, w = _ceil_half(h), _ceil_half(w)
        self.image_size = tuple(int(s) for s in image_size)
        n = len(space.cells)
        self.ops = np.zeros((n, len(EDGES), len(FABRIC_OPS)), np.float64)
        self.inputs = np.zeros((n, len(INPUTS)), np.float64)
        self.cell_fixed = np.zeros((n,), np.float64)
        widths = space.widths
        for k, (_, row) in enumerate(space.cells):
            (hr, wr), c = self.sizes[row], widths[row]
            self.ops[k] = [op_madds(op, hr, wr, c) for op in FABRIC_OPS]
            self.cell_fixed[k] = hr * wr * 2 * c * c
            for i in space.candidates(k):
                if i == 0:
                    self.inputs[k, i] = hr * wr * 9 * widths[row - 1] * c
                elif i == 2:
                    (hb, wb) = self.sizes[row + 1]
                    self.inputs[k, i] = hb * wb * widths[row + 1] * c
        self.fixed = self._stem() + sum(self._fuse(column) for column in space.fuse_columns)

    def _stem(self):
        s = self.space
        h1, w1 = _ceil_half(self.image_size[0]), _ceil_half(self.image_size[1])
        hw = self.sizes[0][0] * self.sizes[0][1]
        ch = s.stem_channels
        total = h1 * w1 * 9 * 3 * ch + hw * 9 * ch * ch
        channels = ch
        for _ in range(s.stem_blocks):
            total += hw * (channels * ch + 9 * ch * ch + ch * 4 * ch)
            if channels != 4 * ch:
                total += hw * channels * 4 * ch
            channels = 4 * ch
        return total + hw * channels * s.width

    def _fuse(self, column):
        s, c = self.space, self.space.width
        rows = s.rows_of(column)
        h0, w0 = self.sizes[0]
        total = sum(self.sizes[r][0] * self.sizes[r][1] * s.widths[r] * c for r in range(rows))
        total += h0 * w0 * rows * c * c + _se_madds(h0, w0, c)
        total += h0 * w0 * 2 * c * c + _se_madds(h0, w0, c)
        total += h0 * w0 * c * s.num_joints * (1 + s.tag_dim)
        if column != s.columns:
            total += sum(self.sizes[r][0] * self.sizes[r][1] * c * s.widths[r] for r in range(rows))
        return total

    def alive(self, input_weights):
        """Which cells the derived network computes, from the (0/1 forward) input weights.

        A tensor version of `FabricSpace.alive`, without gradient: fuse-column cells, and
        cells a computed cell reads (weight > 0.5).

        Args:
            input_weights: `(cells, 3)`.

        Returns:
            `(cells,)` float32 of 0/1.
        """
        space = self.space
        read = tf.cast(tf.stop_gradient(input_weights) > 0.5, tf.float32)
        alive = [None] * len(space.cells)
        readers = {k: [] for k in range(len(space.cells))}
        for j, (column, _) in enumerate(space.cells):
            if column > 1:
                for i in space.candidates(j):
                    readers[space.source(j, i)].append((j, i))
        for k in reversed(range(len(space.cells))):
            column, _ = space.cells[k]
            value = tf.constant(1.0 if column in space.fuse_columns else 0.0)
            for j, i in readers[k]:
                value = tf.maximum(value, alive[j] * read[j, i])
            alive[k] = value
        return tf.stack(alive)

    def expected_madds(self, op_weights, input_weights):
        """Multiply-adds of the sampled architecture, differentiable in the weights.

        fixed + sum over computed cells of (projection + sum_i w_i * resample_i + sum_ops w * op).
        For 0/1 weights this is the derived network's count.

        Args:
            op_weights: `(cells, 3, 9)`.
            input_weights: `(cells, 3)`.

        Returns:
            scalar float32 tensor.
        """
        alive = self.alive(input_weights)
        ops = tf.reduce_sum(tf.cast(op_weights, tf.float64) * self.ops, axis=(1, 2))
        inputs = tf.reduce_sum(tf.cast(input_weights, tf.float64) * self.inputs, axis=1)
        per_cell = self.cell_fixed + ops + inputs
        return tf.cast(self.fixed + tf.reduce_sum(tf.cast(alive, tf.float64) * per_cell), tf.float32)

    def weights_of(self, genotype):
        """0/1 `(op_weights, input_weights)` of a genotype (pruned cells keep no input)."""
        n = len(self.space.cells)
        ops = np.zeros((n, len(EDGES), len(FABRIC_OPS)), np.float32)
        inputs = np.zeros((n, len(INPUTS)), np.float32)
        for k, cell in enumerate(genotype):
            if cell is None:
                continue
            inputs[k, list(cell[0])] = 1.0
            for e, kept in enumerate(cell[1:]):
                ops[k, e, list(kept)] = 1.0
        return ops, inputs

    def madds(self, genotype):
        """Multiply-adds of a derived genotype's network, int."""
        return int(round(float(self.expected_madds(*self.weights_of(genotype)))))


def flops_warmup(epoch, start=1e-4, factor=10.0, every=3, ceiling=1.0):
    """The step-wise warm-up of the FLOPs loss (spec section 8): min(ceiling, start * factor^floor(e / every)).

    Args:
        epoch: int, 0-based search epoch.
        start: float, scale of epochs 0..every-1 (1e-4).
        factor: float, growth per step (10).
        every: int, epochs per step (3).
        ceiling: float, largest scale (1).
    """
    return float(min(ceiling, start * factor ** (int(epoch) // int(every))))


def flops_loss(madds, epoch, settings=None):
    """The FLOPs constraint of the search loss: weight * s(epoch) * (GFLOPs / T) ** w.

    Args:
        madds: scalar tensor, expected multiply-adds (`FabricCosts.expected_madds`).
        epoch: int, 0-based search epoch.
        settings: `SearchSettings` (default: the thesis').
    """
    s = settings or SearchSettings()
    scale = s.flops_weight * flops_warmup(epoch, s.flops_warmup_start, s.flops_warmup_factor,
                                          s.flops_warmup_every, s.flops_warmup_ceiling)
    gflops = tf.cast(madds, tf.float32) / 1e9
    return scale * (gflops / s.flops_target) ** s.flops_exponent


# --- teacher guidance --------------------------------------------------------------------------
def rdm(activations):
    """Representational dissimilarity matrix: Euclidean distances between the samples of a batch.

    Args:
        activations: `(B, ...)` tensor; each sample is flattened.

    Returns:
        `(B, B)` float32 matrix D_ab = ||f_a - f_b||_2.
    """
    x = tf.reshape(tf.cast(activations, tf.float32), (tf.shape(activations)[0], -1))
    gram = tf.matmul(x, x, transpose_b=True)
    norms = tf.linalg.diag_part(gram)
    squared = tf.maximum(norms[:, None] + norms[None, :] - 2.0 * gram, 0.0)
    off = 1.0 - tf.eye(tf.shape(x)[0])
    return tf.sqrt(tf.maximum(squared, 1e-12)) * off


def _upper(matrix):
    b = matrix.shape[0]
    rows, cols = np.triu_indices(b, k=1)
    return tf.gather_nd(matrix, np.stack([rows, cols], axis=1))


def rdm_correlation(a, b):
    """Pearson correlation of two RDMs on their upper triangles (diagonal left out).

    Args:
        a: `(B, B)`; b: `(B, B)`, with B >= 3 (at least 3 pairs are needed for a correlation).

    Returns:
        scalar float32 in [-1, 1] (0 when either triangle is constant).
    """
    if a.shape[0] is None or a.shape[0] < 3:
        raise ValueError(f"an RDM correlation needs a static batch of at least 3 samples, got {a.shape[0]}")
    x, y = _upper(a), _upper(b)
    x, y = x - tf.reduce_mean(x), y - tf.reduce_mean(y)
    return tf.reduce_sum(x * y) / tf.sqrt(tf.reduce_sum(x * x) * tf.reduce_sum(y * y) + 1e-12)


def teacher_guidance_loss(student, teacher):
    """The teacher loss of Sec. 3.4: 1 - mean over teacher layers i of max over student layers j of corr(Y_i, X_j).

    Args:
        student: list of `(B, ...)` activations (every cell output).
        teacher: list of `(B, ...)` activations (hand-picked teacher layers).

    Returns:
        scalar float32 tensor.
    """
    if not student or not teacher:
        raise ValueError(f"teacher guidance needs student and teacher activations, got {len(student)} and "
                         f"{len(teacher)} layers")
    xs = [rdm(s) for s in student]
    sims = [tf.reduce_max(tf.stack([rdm_correlation(rdm(t), x) for x in xs])) for t in teacher]
    return 1.0 - tf.reduce_mean(tf.stack(sims))


# --- settings ------------------------------------------------------------------------------------
@dataclasses.dataclass
class SearchSettings:
    """The bi-level search of Sec. 4.1 (spec sections 8 and 12): optimisers, schedules, loss weights.

    Weights are trained on the training split and {alpha, beta, m} on a held-out architecture
    split of the training data (`arch_split`; the thesis uses val2017, whose results then leak).

    Args:
        epochs: int, search epochs (35).
        model_lr: float, Adam learning rate of the weights, constant (1e-3).
        arch_lr: float, Adam learning rate of the architecture parameters at epoch 0 (5e-3).
        arch_lr_drops: tuple of (epoch, lr): from that epoch on (((20, 2.5e-3), (25, 1.25e-3))).
        arch_split: float, share of the training data held out for the architecture (0.1).
        temperature_start: float, tau at the first step (10).
        temperature_end: float, tau at the last step (0.001).
        heatmap_weight, grouping_weight, teacher_weight, flops_weight: loss weights (1, 1e-3, 1, 1e-3).
        flops_target: float, T in GFLOPs (47.8).
        flops_exponent: float, w (0.15).
        flops_warmup_start, flops_warmup_factor, flops_warmup_every, flops_warmup_ceiling:
            the warm-up s(e) (1e-4, 10, 3, 1).
    """

    epochs: int = 35
    model_lr: float = 1e-3
    arch_lr: float = 5e-3
    arch_lr_drops: tuple = ((20, 2.5e-3), (25, 1.25e-3))
    arch_split: float = 0.1
    temperature_start: float = 10.0
    temperature_end: float = 1e-3
    heatmap_weight: float = 1.0
    grouping_weight: float = 1e-3
    teacher_weight: float = 1.0
    flops_weight: float = 1e-3
    flops_target: float = 47.8
    flops_exponent: float = 0.15
    flops_warmup_start: float = 1e-4
    flops_warmup_factor: float = 10.0
    flops_warmup_every: int = 3
    flops_warmup_ceiling: float = 1.0

    def arch_lr_at(self, epoch):
        """The architecture learning rate of a 0-based epoch."""
        lr = self.arch_lr
        for start, value in sorted(self.arch_lr_drops):
            if int(epoch) >= start:
                lr = value
        return lr

    def temperature(self, steps_per_epoch):
        """The `LinearTemperature` schedule over `epochs * steps_per_epoch` steps."""
        return LinearTemperature(self.epochs * int(steps_per_epoch), self.temperature_start, self.temperature_end)

    def search_loss(self, heatmap, grouping, teacher, madds, epoch):
        """L = heatmap + 1e-3 grouping + teacher + 1e-3 s(e) (GFLOPs / 47.8) ** 0.15 (the thesis' weights)."""
        return (self.heatmap_weight * heatmap + self.grouping_weight * grouping + self.teacher_weight * teacher
                + flops_loss(madds, epoch, self))


__all__ = ["ArchitectureParameters", "FabricCosts", "FabricSupernet", "LinearTemperature", "SearchSettings", "derive_topk",
           "dyn_egs", "flops_loss", "flops_warmup", "gumbel_softmax", "rdm",
           "rdm_correlation", "sample_gumbel", "teacher_guidance_loss"]
