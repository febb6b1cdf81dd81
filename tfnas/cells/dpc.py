"""The Dense Prediction Cell of Chen et al., NeurIPS 2018 (seed 002, Sec. 3.1), as Keras layers.

A cell has B branches; branch i applies one operation to the backbone features or to the
output of an earlier branch. The operator space has 81 functions (`DPC_OPS`):

- `"conv1x1"`: 1x1 conv-BN-ReLU;
- `"sep3x3_{rh}x{rw}"`: 3x3 atrous separable conv (depthwise, pointwise, BN, ReLU) with
  rates `rh x rw`, each in {1, 3, 6, 9, ..., 21} (64 ops);
- `"pool{gh}x{gw}"`: average spatial pyramid pooling over a `gh x gw` grid, each in
  {1, 2, 4, 8}, then 1x1 conv-BN-ReLU and bilinear resizing back (16 ops).

Every op has `filters` (256) outputs. The cell concatenates all branch outputs and projects
them with a 1x1 conv-BN-ReLU to `filters` channels.

    >>> cell = DensePredictionCell([[0, "sep3x3_1x6"], [1, "sep3x3_18x15"], [2, "sep3x3_6x3"],
    ...                             [1, "sep3x3_1x1"], [1, "sep3x3_6x21"]], filters=256)
    >>> y = cell(keras.random.normal((1, 33, 33, 320)))   # (1, 33, 33, 256)
"""
import keras
import tensorflow as tf

from tfnas.ops import ConvBN, ResizeLike, SepConv

_PACKAGE = "tfnas"

#: Atrous rates of the separable convs, per axis.
RATES = (1, 3, 6, 9, 12, 15, 18, 21)
#: Pyramid-pooling grid sizes, per axis.
GRIDS = (1, 2, 4, 8)
#: The 81 branch operations, in the order used by the space's `branch{i}_op` decisions.
DPC_OPS = (("conv1x1",) + tuple(f"sep3x3_{h}x{w}" for h in RATES for w in RATES)
           + tuple(f"pool{h}x{w}" for h in GRIDS for w in GRIDS))


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
        raise ValueError(f"unknown DPC op {op!r}; expected 'conv1x1', 'sep3x3_<rh>x<rw>' with rates "
                         f"in {RATES} or 'pool<gh>x<gw>' with grids in {GRIDS}")
    if op == "conv1x1":
        return ConvBN(filters, 1, name=name)
    if op.startswith("sep3x3_"):
        rates = tuple(int(v) for v in op[len("sep3x3_"):].split("x"))
        return SepConv(filters, 3, dilation_rate=rates, repeats=1, name=name)
    grid = tuple(int(v) for v in op[len("pool"):].split("x"))
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
        self.branch_ops = [dpc_op(op, self.filters, name=f"branch{i}")
                           for i, (_, op) in enumerate(self.branches)]
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
