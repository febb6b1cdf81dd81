"""The Dense Prediction Cell of Chen et al., NeurIPS 2018 (Sec. 3.1), as Keras layers.

A cell has B branches; branch i applies one operation to the backbone features or to the
output of an earlier branch. The operator space has 81 functions (`DPC_OPS`):

- `"conv1x1"`: 1x1 conv-BN-ReLU;
- `"sep3x3_{rh}x{rw}"`: 3x3 atrous separable conv (depthwise, pointwise, BN, ReLU) with
  rates `rh x rw`, each in {1, 3, 6, 9, ..., 21} (64 ops);
- `"pool{gh}x{gw}"`: average spatial pyramid pooling over a `gh x gw` grid, each in
  {1, 2, 4, 8}, then 1x1 conv-BN-ReLU and bilinear resizing back (16 ops).

Every op has `filters` (256) outputs. The cell concatenates all branch outputs and projects
them with a 1x1 conv-BN-ReLU to `filters` channels.

`SuperDensePredictionCell` holds every cell at once for the supernet (`tfnas.supernet`): all
output shapes are fixed (every branch gives `filters` channels at the backbone's resolution
and all branches are concatenated), so one graph serves every architecture.

    >>> cell = DensePredictionCell([[0, "sep3x3_1x6"], [1, "sep3x3_18x15"], [2, "sep3x3_6x3"],
    ...                             [1, "sep3x3_1x1"], [1, "sep3x3_6x21"]], filters=256)
    >>> y = cell(keras.random.normal((1, 33, 33, 320)))   # (1, 33, 33, 256)
"""

import keras
import tensorflow as tf

from tfnas.choice import Choice
from tfnas.ops import ConvBN, ResizeLike, SepConv

_PACKAGE = "tfnas"

#: Atrous rates of the separable convs, per axis.
RATES = (1, 3, 6, 9, 12, 15, 18, 21)
#: Pyramid-pooling grid sizes, per axis.
GRIDS = (1, 2, 4, 8)
#: The 81 branch operations, in the order used by the space's `branch{i}_op` decisions.
DPC_OPS = (
    ("conv1x1",)
    + tuple(f"sep3x3_{h}x{w}" for h in RATES for w in RATES)
    + tuple(f"pool{h}x{w}" for h in GRIDS for w in GRIDS)
)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class PyramidPooling(keras.layers.Layer):
    """Average pooling over a `gh x gw` grid, 1x1 conv-BN-ReLU, bilinear resize back.

    The grid cells split the rows and columns as adaptive average pooling does (cells of
    an uneven split overlap by one row; a map smaller than the grid repeats rows, so no cell
    is empty); the pooling is written as two small matrix products, so it exports with
    dynamic sizes.

    Args:
        filters: int, output channels.
        grid: pair of ints `(gh, gw)`.

    Input shape: `(N, H, W, C)`. Output shape: `(N, H, W, filters)`.
    """

    def __init__(self, filters, grid=(1, 1), **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.grid = tuple(int(g) for g in grid)
        self.conv = ConvBN(self.filters, 1, name="conv_bn")
        self.resize = ResizeLike(name="resize")

    def build(self, input_shape):
        self.conv.build((input_shape[0], *self.grid, input_shape[-1]))

    @staticmethod
    def _pooling_matrix(size, cells, dtype):
        """(size, cells) averaging weights: cell i spans rows floor(i*size/cells) up to
        ceil((i+1)*size/cells) - 1, as adaptive average pooling; never empty."""
        i = tf.range(cells)
        start, end = (i * size) // cells, ((i + 1) * size + cells - 1) // cells
        rows = tf.range(size)[:, None]
        weights = tf.cast((rows >= start) & (rows < end), dtype)
        return weights / tf.reduce_sum(weights, axis=0, keepdims=True)

    def call(self, inputs, training=None):
        shape = tf.shape(inputs)
        rows = self._pooling_matrix(shape[1], self.grid[0], inputs.dtype)
        cols = self._pooling_matrix(shape[2], self.grid[1], inputs.dtype)
        pooled = tf.einsum("hi,nhwc,wj->nijc", rows, inputs, cols)
        pooled = self.conv(pooled, training=training)
        return self.resize([pooled, inputs])

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "grid": list(self.grid)}


def dpc_op(op, filters, name=None):
    """Builds the branch operation named `op` (a member of `DPC_OPS`).

    Args:
        op: str, e.g. `"conv1x1"`, `"sep3x3_6x21"` or `"pool2x4"`.
        filters: int, output channels.
        name: optional layer name.

    Returns:
        A Keras layer mapping `(N, H, W, C)` to `(N, H, W, filters)`.

    Raises:
        ValueError: if `op` is not in `DPC_OPS`.
    """
    if op not in DPC_OPS:
        raise ValueError(
            f"unknown DPC op {op!r}; expected 'conv1x1', 'sep3x3_<rh>x<rw>' with rates "
            f"in {RATES} or 'pool<gh>x<gw>' with grids in {GRIDS}"
        )
    if op == "conv1x1":
        return ConvBN(filters, 1, name=name)
    if op.startswith("sep3x3_"):
        rates = tuple(int(v) for v in op[len("sep3x3_") :].split("x"))
        return SepConv(filters, 3, dilation_rate=rates, repeats=1, name=name)
    grid = tuple(int(v) for v in op[len("pool") :].split("x"))
    return PyramidPooling(filters, grid=grid, name=name)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class DensePredictionCell(keras.layers.Layer):
    """The Dense Prediction Cell: B branches, concatenation, 1x1 projection.

    Args:
        branches: list of `[input, op]`: `input` 0 reads the backbone features, `input` k
            reads the output of branch k - 1 (so branch i may read 0..i); `op` is a name
            in `DPC_OPS`. Validated by the space's codec.
        filters: int, channels of every branch and of the projection. Default 256.

    Input shape: `(N, H, W, C)`. Output shape: `(N, H, W, filters)`.
    """

    def __init__(self, branches, filters=256, **kwargs):
        super().__init__(**kwargs)
        self.branches = [[int(i), str(op)] for i, op in branches]
        self.filters = int(filters)
        self.branch_ops = [
            dpc_op(op, self.filters, name=f"branch{i}") for i, (_, op) in enumerate(self.branches)
        ]
        self.projection = ConvBN(self.filters, 1, name="projection")

    def build(self, input_shape):
        branch_shape = (*input_shape[:-1], self.filters)
        for (source, _), op in zip(self.branches, self.branch_ops):
            op.build(input_shape if source == 0 else branch_shape)
        self.projection.build((*input_shape[:-1], self.filters * len(self.branches)))

    def call(self, inputs, training=None):
        pool = [inputs]
        for (source, _), op in zip(self.branches, self.branch_ops):
            pool.append(op(pool[source], training=training))
        concat = keras.ops.concatenate(pool[1:], axis=-1)
        return self.projection(concat, training=training)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        return {**super().get_config(), "branches": self.branches, "filters": self.filters}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class SuperDensePredictionCell(keras.layers.Layer):
    """Every Dense Prediction Cell of B branches at once: the supernet form of the cell.

    Branch i is a `Choice` (`branch{i}`) among 2 x 81 candidates: the 81 ops on the backbone
    features (candidates 0..80) and, for i > 0, the 81 ops on an earlier branch's output
    (candidates 81..161, reading the output that the `Choice` `branch{i}_input` picks among
    branches 0..i-1). The two groups have their own weights because their input channels
    differ; an op on an earlier branch has one weight set whichever branch it reads, as in
    the standalone cell. The projection is that of the standalone cell.

    Args:
        num_branches: int, B.
        filters: int, channels of every branch and of the projection. Default 256.

    Input shape: `(N, H, W, C)`. Output shape: `(N, H, W, filters)`.
    """

    def __init__(self, num_branches, filters=256, **kwargs):
        super().__init__(**kwargs)
        self.num_branches = int(num_branches)
        self.filters = int(filters)
        self.sources, self.branch_ops = [], []
        for i in range(self.num_branches):
            candidates = [dpc_op(op, self.filters, name=op) for op in DPC_OPS]
            if i == 0:
                self.sources.append(None)
                self.branch_ops.append(Choice(candidates, name=f"branch{i}"))
                continue
            candidates += [dpc_op(op, self.filters, name=f"{op}_on_branch") for op in DPC_OPS]
            self.sources.append(Choice(name=f"branch{i}_input"))
            self.branch_ops.append(
                Choice(candidates, routes=[0] * len(DPC_OPS) + [1] * len(DPC_OPS), name=f"branch{i}")
            )
        self.projection = ConvBN(self.filters, 1, name="projection")

    def build(self, input_shape):
        branch_shape = (*input_shape[:-1], self.filters)
        for i, (source, op) in enumerate(zip(self.sources, self.branch_ops)):
            if source is None:
                op.build(input_shape)
            else:
                source.build([branch_shape] * i)
                op.build([input_shape, branch_shape])
        self.projection.build((*input_shape[:-1], self.filters * self.num_branches))

    def call(self, inputs, training=None):
        outputs = []
        for source, op in zip(self.sources, self.branch_ops):
            if source is None:
                outputs.append(op(inputs, training=training))
            else:
                outputs.append(op([inputs, source(outputs)], training=training))
        concat = keras.ops.concatenate(outputs, axis=-1)
        return self.projection(concat, training=training)

    @staticmethod
    def selection(branches, prefix=""):
        """dict choice path (under `prefix`) -> index, for the cell `branches` ([input, op])."""
        selection = {}
        for i, (source, op) in enumerate(branches):
            selection[f"{prefix}branch{i}"] = DPC_OPS.index(op) + (len(DPC_OPS) if source > 0 else 0)
            if i > 0:
                selection[f"{prefix}branch{i}_input"] = max(int(source) - 1, 0)
        return selection

    def uses(self, branches):
        """(supernet op layer, path inside `DensePredictionCell`, reads the backbone) per branch."""
        index = self.selection(branches)
        return [
            (self.branch_ops[i].candidates[index[f"branch{i}"]], ("branch_ops", i), source == 0)
            for i, (source, _) in enumerate(branches)
        ]

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.filters)

    def get_config(self):
        return {**super().get_config(), "num_branches": self.num_branches, "filters": self.filters}
