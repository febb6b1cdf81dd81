"""Multiply-adds (or latency) of fabric architectures, differentiable in the op and input weights (Hoang, 3M-Pose thesis 2021, Sec. 3.4).

Spec: `/work/shared/3M-POSE.md` section 8. `FabricCosts` counts multiply-adds; `FabricLatency`
sums the same parts' entries in a per-op latency table (the constraint's latency variant).
"""

import keras
import numpy as np
import tensorflow as tf

from tfnas.cells.fabric import EDGES, FABRIC_OPS, INPUTS, SE_RATIO, op_madds
from tfnas.latency.layers import layer_key


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


class FabricLatency(FabricCosts):
    """Latency (ms) of a fabric's parts from a per-op latency table: the constraint's latency variant.

    The same parts and sums as `FabricCosts` (spec section 8: the ops of each edge and the
    resampled inputs weighted, each computed cell's projection, the fixed stem, fuses, splits
    and heads), with each part's entry in a `tfnas.latency` table (`LatencyTable.ms`, the
    call overhead taken off) instead of its multiply-adds, and the table's correction in the
    fixed part: `expected_ms` of a derived network's 0/1 weights is the table's prediction of
    its parts. A part is the layer a derived network runs (`make_fabric_op`, `Resample`, the
    cell's 1x1 projection and the concatenation before it, `Fuse`, `Split`, the head) at its
    row's shape, keyed as `tfnas.latency.layers.layer_key` keys it. The element-wise sums of
    two kept ops or inputs are left out (a few microseconds each, and not linear in the
    weights).

    A table measured on this machine (TensorFlow or onnxruntime) gets the parts it lacks
    timed once (`tfnas.latency.measure.measure_entries`): a fabric has no listing of its
    items, and its ops at each row are a few dozen; a device's table must hold them.

    Args:
        space: a `tfnas.spaces.fabric.FabricSpace`.
        image_size: `(H, W)` of the input image (the table's image shape).
        table: a `tfnas.latency.table.LatencyTable` of this space at that size.
        log: optional function taking one line of progress (each part measured).

    Attributes:
        measured: list of the table keys timed here.

    Raises:
        MissingEntryError: for parts a table measured elsewhere lacks.
        ValueError: for a table of another image size.
    """

    def __init__(self, space, image_size, table, log=None):
        super().__init__(space, image_size)
        if list(table.image_shape[:2]) != [int(s) for s in image_size]:
            raise ValueError(
                f"the latency table is for {table.image_shape[0]}x{table.image_shape[1]} images, the "
                f"search for {image_size[0]}x{image_size[1]}; measure a table at the search's size"
            )
        parts = self.parts()
        keyed = {layer_key(*item): item for item in parts.values()}
        missing = {key: item for key, item in keyed.items() if key not in table.entries}
        self.measured = []
        if missing:
            from tfnas.latency.measure import local_device, measure_entries

            if table.device != local_device(table.runtime):
                table.ms(next(iter(missing)))  # raises MissingEntryError naming it
            self.measured = measure_entries(table, missing, log=log)
        ms = {name: table.ms(layer_key(*item)) for name, item in parts.items()}
        for k, (_, row) in enumerate(space.cells):
            self.ops[k] = [ms[("op", row, op)] for op in FABRIC_OPS]
            self.cell_fixed[k] = ms[("project", row)] + ms[("concat", row)]
            self.inputs[k] = 0.0
            for i in space.candidates(k):
                if i != 1:
                    self.inputs[k, i] = ms[("input", row, i)]
        self.fixed = (
            ms[("stem",)]
            + sum(ms[(part, column)] for column in space.fuse_columns for part in ("fuse", "head"))
            + sum(ms[("split", column)] for column in space.eel_columns)
            + table.correction_ms
        )

    def parts(self):
        """dict part name -> `(layer, input_shapes)`: every layer the latency sums over."""
        from tfnas.cells.fabric import Fuse, Resample, Split, make_fabric_op
        from tfnas.latency.layers import SpaceShapes
        from tfnas.ops import ConvBN

        space, widths = self.space, self.space.widths

        def shape(row):
            return (1, *self.sizes[row], widths[row])

        parts = {("stem",): SpaceShapes(space, (*self.image_size, 3)).encoder_item()}
        for row in range(space.rows):
            for op in FABRIC_OPS:
                parts[("op", row, op)] = (make_fabric_op(op, widths[row]), [shape(row)])
            parts[("project", row)] = (ConvBN(widths[row], 1), [(*shape(row)[:3], 2 * widths[row])])
            parts[("concat", row)] = (keras.layers.Concatenate(axis=-1), [shape(row)] * 2)
            if row > 0:
                parts[("input", row, 0)] = (Resample(widths[row], "down"), [shape(row - 1)])
            if row + 1 < space.rows:
                parts[("input", row, 2)] = (Resample(widths[row], "up"), [shape(row + 1), shape(row)])
        top = (1, *self.sizes[0], space.width)
        for column in space.fuse_columns:
            rows = space.rows_of(column)
            parts[("fuse", column)] = (Fuse(space.width, rows), [top] + [shape(r) for r in range(rows)])
            parts[("head", column)] = (space.make_head(column), [top])
            if column != space.columns:
                parts[("split", column)] = (Split(widths[:rows]), [top] + [shape(r) for r in range(rows)])
        return parts

    def expected_ms(self, op_weights, input_weights):
        """Latency (ms) of the sampled architecture, differentiable in the weights (`expected_madds`'s sum)."""
        return self.expected_madds(op_weights, input_weights)

    def latency_ms(self, genotype):
        """The table's latency of a derived genotype's network (ms)."""
        return float(self.expected_ms(*self.weights_of(genotype)))
