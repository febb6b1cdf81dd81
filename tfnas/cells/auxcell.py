"""The searched decoder cell of Nekrasov et al., CVPR 2019 (seed 000, Appendix A, Fig. 9).

A cell is described by `[o1, [i2, i3, o2, o3], [i4, i5, o4, o5], [i6, i7, o6, o7]]`: op `o1` is
applied to the cell input; then each of three branches applies two ops to two earlier
features (chosen with replacement) and sums them. The feature pool, indexed as in the
authors' code, grows as the cell is built:

    0: cell input        1: o1(input)
    2, 3: branch 1 ops   4: branch 1 sum
    5, 6: branch 2 ops   7: branch 2 sum
    8, 9: branch 3 ops   10: branch 3 sum

so branch k (1-based) may read indices 0 .. 3k - 2. The cell output is the sum of the
features that no branch read ("loose ends"), taken among `o1(input)` and the branch
sums; intermediate op outputs are never summed on their own.

    >>> cell = AuxCell([8, [0, 0, 5, 2], [0, 2, 8, 8], [0, 5, 1, 4]], filters=48)
    >>> y = cell(keras.random.normal((2, 16, 16, 48)))   # (2, 16, 16, 48)
"""
import keras

from tfnas.ops import CELL_OPS, make_op

NUM_BRANCHES = 3


def branch_pool_size(branch):
    """How many features branch `branch` (1-based) may read: indices 0 .. 3 * branch - 2."""
    return 3 * branch - 1


def loose_ends(cell):
    """Indices of the pool features summed into the cell output (those no branch reads)."""
    ends = [1]
    for k, (i_a, i_b, _, _) in enumerate(cell[1:], start=1):
        ends = [e for e in ends if e not in (i_a, i_b)]
        ends.append(3 * k + 1)
    return ends


@keras.saving.register_keras_serializable(package="tfnas")
class AuxCell(keras.layers.Layer):
    """The CVPR 2019 decoder cell as a Keras layer; the auxiliary cell is the same layer.

    Args:
        cell: the cell configuration `[o1, [i2, i3, o2, o3], [i4, i5, o4, o5], [i6, i7, o6, o7]]`
            with op indices into `tfnas.ops.CELL_OPS` (Table 4). Validated by the space's codec.
        filters: int, channels in and out.

    Input shape: `(N, H, W, filters)`. Output shape: `(N, H, W, filters)`.
    """

    def __init__(self, cell, filters, **kwargs):
        super().__init__(**kwargs)
        self.cell = [int(cell[0])] + [[int(v) for v in branch] for branch in cell[1:]]
        self.filters = int(filters)
        self.first = make_op(CELL_OPS[self.cell[0]], self.filters, name="op1")
        self.branch_ops = []
        for k, (_, _, o_a, o_b) in enumerate(self.cell[1:], start=1):
            self.branch_ops.append((make_op(CELL_OPS[o_a], self.filters, name=f"branch{k}_op0"),
                                    make_op(CELL_OPS[o_b], self.filters, name=f"branch{k}_op1")))
        self.ends = loose_ends(self.cell)

    def build(self, input_shape):
        self.first.build(input_shape)
        for op_a, op_b in self.branch_ops:
            op_a.build(input_shape)
            op_b.build(input_shape)

    def call(self, inputs, training=None):
        pool = [inputs, self.first(inputs, training=training)]
        for (i_a, i_b, _, _), (op_a, op_b) in zip(self.cell[1:], self.branch_ops):
            a = op_a(pool[i_a], training=training)
            b = op_b(pool[i_b], training=training)
            pool += [a, b, a + b]
        out = pool[self.ends[0]]
        for i in self.ends[1:]:
            out = out + pool[i]
        return out

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "cell": self.cell, "filters": self.filters}
