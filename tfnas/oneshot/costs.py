"""Multiply-adds of fabric architectures, differentiable in the op and input weights (Hoang, 3M-Pose thesis 2021, Sec. 3.4).

Spec: `/work/shared/3M-POSE.md` section 8.
"""

import numpy as np
import tensorflow as tf

from tfnas.cells.fabric import EDGES, FABRIC_OPS, INPUTS, SE_RATIO, op_madds


def _ceil_half(n):
    return -(-int(n) // 2)


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
        total += h0 * w0 * c * s.head_channels
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

    def expected_madds(self, op_weights, input_weights, dtype=tf.float32):
        """Multiply-adds of the sampled architecture, differentiable in the weights.

        fixed + sum over computed cells of (projection + sum_i w_i * resample_i + sum_ops w * op).
        For 0/1 weights this is the derived network's count.

        Args:
            op_weights: `(cells, 3, 9)`.
            input_weights: `(cells, 3)`.
            dtype: result dtype (float32; float64 holds counts up to 2^53 exactly).

        Returns:
            scalar tensor.
        """
        alive = tf.cast(self.alive(input_weights), tf.float64)
        ops = tf.reduce_sum(tf.cast(op_weights, tf.float64) * self.ops, axis=(1, 2))
        inputs = tf.reduce_sum(tf.cast(input_weights, tf.float64) * self.inputs, axis=1)
        per_cell = self.cell_fixed + ops + inputs
        return tf.cast(self.fixed + tf.reduce_sum(alive * per_cell), dtype)

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
        return int(round(float(self.expected_madds(*self.weights_of(genotype), dtype=tf.float64))))
