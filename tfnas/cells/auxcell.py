"""The searched decoder cell of Nekrasov et al. (CVPR 2019, Appendix A, Fig. 9), and its supernet form.

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

`SuperAuxCell` holds every cell of the space at once (a `tfnas.choice.Choice` per op, per
branch input and per loose end) for the supernet (`tfnas.supernet`).

    >>> cell = AuxCell([8, [0, 0, 5, 2], [0, 2, 8, 8], [0, 5, 1, 4]], filters=48)
    >>> y = cell(keras.random.normal((2, 16, 16, 48)))   # (2, 16, 16, 48)
"""

import keras

from tfnas.choice import Choice
from tfnas.ops import CELL_OPS, Identity, Zero, make_op

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
            self.branch_ops.append(
                (
                    make_op(CELL_OPS[o_a], self.filters, name=f"branch{k}_op0"),
                    make_op(CELL_OPS[o_b], self.filters, name=f"branch{k}_op1"),
                )
            )
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


#: Pool indices that can be loose ends: `o1(input)` and the three branch sums.
END_CANDIDATES = (1, 4, 7, 10)


def _op_choice(filters, name):
    return Choice([make_op(op, filters, name=op) for op in CELL_OPS], name=name)


@keras.saving.register_keras_serializable(package="tfnas")
class SuperAuxCell(keras.layers.Layer):
    """Every CVPR 2019 cell at once: the supernet form of `AuxCell` (one weight set per op).

    Each of the 7 op positions is a `Choice` among the 11 ops of Table 4, each branch input a
    `Choice` among the features built so far, and each possible loose end (`END_CANDIDATES`)
    a `Choice` between `Zero` (read by a branch: left out of the sum) and `Identity`
    (summed). Adding exact zeros changes no bit of a float sum, so with the selection of
    `selection(cell)` and the weights of the chosen ops this layer computes what
    `AuxCell(cell, filters)` computes.

    Args:
        filters: int, channels in and out.

    Input shape: `(N, H, W, filters)`. Output shape: `(N, H, W, filters)`.
    """

    def __init__(self, filters, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.first = _op_choice(self.filters, "op1")
        self.branch_inputs, self.branch_ops = [], []
        for k in range(1, NUM_BRANCHES + 1):
            self.branch_inputs.append((Choice(name=f"branch{k}_index0"), Choice(name=f"branch{k}_index1")))
            self.branch_ops.append(
                (_op_choice(self.filters, f"branch{k}_op0"), _op_choice(self.filters, f"branch{k}_op1"))
            )
        self.ends = [
            Choice([Zero(name="zero"), Identity(name="skip")], name=f"end{i}") for i in END_CANDIDATES
        ]

    def build(self, input_shape):
        self.first.build(input_shape)
        for k, ((in_a, in_b), (op_a, op_b)) in enumerate(zip(self.branch_inputs, self.branch_ops), start=1):
            in_a.build([input_shape] * branch_pool_size(k))
            in_b.build([input_shape] * branch_pool_size(k))
            op_a.build(input_shape)
            op_b.build(input_shape)
        for end in self.ends:
            end.build(input_shape)

    def call(self, inputs, training=None):
        pool = [inputs, self.first(inputs, training=training)]
        for k, ((in_a, in_b), (op_a, op_b)) in enumerate(zip(self.branch_inputs, self.branch_ops), start=1):
            readable = pool[: branch_pool_size(k)]
            a = op_a(in_a(readable), training=training)
            b = op_b(in_b(readable), training=training)
            pool += [a, b, a + b]
        out = None
        for i, end in zip(END_CANDIDATES, self.ends):
            term = end(pool[i])
            out = term if out is None else out + term
        return out

    @staticmethod
    def selection(cell, prefix=""):
        """dict choice path (under `prefix`) -> index, for the cell configuration `cell`."""
        selection = {f"{prefix}op1": int(cell[0])}
        for k, branch in enumerate(cell[1:], start=1):
            for pos in range(2):
                selection[f"{prefix}branch{k}_index{pos}"] = int(branch[pos])
                selection[f"{prefix}branch{k}_op{pos}"] = int(branch[2 + pos])
        ends = loose_ends(cell)
        for i in END_CANDIDATES:
            selection[f"{prefix}end{i}"] = int(i in ends)
        return selection

    def uses(self, cell):
        """(supernet op layer, path of the same op inside `AuxCell`) for `cell`."""
        pairs = [(self.first.candidates[cell[0]], ("first",))]
        for k, branch in enumerate(cell[1:]):
            for pos in range(2):
                pairs.append((self.branch_ops[k][pos].candidates[branch[2 + pos]], ("branch_ops", k, pos)))
        return pairs

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "filters": self.filters}
