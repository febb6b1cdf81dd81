"""What a network runs, layer by layer, as latency-table keys; and every layer a space can run.

A *item* is `(layer, input_shapes)`: one layer configuration called on inputs of those
shapes (batch 1). Its table key (`layer_key`) is the layer's class, a digest of its config
without its name, and the shapes, so the same op at the same place of any architecture (or of
any cell) is one entry, as `tfnas.supernet.Supernet.cost` keys its per-layer counts.

- `network_items(model, input_shapes)`: walks a built model's functional graph with
  symbolic tensors of concrete shape (nothing is computed), descending into nested models
  except the encoder, which is one item (it is the same for every architecture). The
  searched cells are split into their ops and element-wise sums/concatenations
  (`CELL_PARTS`), so a table needs each candidate op, not each cell. What the runtime
  prunes is left out: layers whose output reaches the model output only through the
  searched `zero` op, and, where the runtime folds constants (ONNX, TensorRT), layers that
  compute on zeros alone.
- `inference_items(space, values, image_shape)`: the items of an architecture's standalone
  inference model, built decoder-only (the encoder is one cached item).
- `space_items(space, image_shape)`: every item any architecture of the space can run at
  that image size (auxcell and DPC spaces): what `tfnas latency measure` times. The template
  space's shapes are combinatorial (its strides and block outputs set every later input
  shape: 100 random genotypes had 100 shape signatures), so it has no listing: its table
  starts from the items of `architectures` sampled architectures, and grows during a search
  as new items are met (`tfnas.latency.predict.Predictor(measure_missing=True)`).

    >>> space = AuxCellSpace(num_classes=4, width=16, alpha=0.35)
    >>> items = space_items(space, (48, 48, 3))
    >>> keys = [layer_key(*item) for item in inference_items(space, values, (48, 48, 3))]
"""

import hashlib
import inspect
import itertools
import json

import keras

from tfnas.cells.auxcell import AuxCell
from tfnas.cells.dpc import DPC_OPS, DensePredictionCell, dpc_op
from tfnas.ops import CELL_OPS, ConvBN, ResizeLike, Zero, make_op
from tfnas.spaces.base import MAIN_OUTPUT

#: Config fields that do not change what a layer computes, left out of its key.
_NOT_KEYED = ("name", "trainable", "dtype")
#: Nested models kept whole: the encoder is the same for every architecture of a space.
WHOLE = ("encoder",)


def layer_config(layer):
    """A layer's config without its name, trainability and dtype policy."""
    config = layer.get_config()
    return {k: v for k, v in config.items() if k not in _NOT_KEYED}


def shape_text(shape):
    """`(1, 12, 12, 16)` -> `"1x12x12x16"`."""
    return "x".join(str(int(d)) for d in shape)


def layer_key(layer, input_shapes):
    """The table key of a layer configuration on inputs of `input_shapes`.

    Args:
        layer: a Keras layer or model.
        input_shapes: list of shapes (tuples of ints, batch first).

    Returns:
        str, e.g. `"ConvBN[3e9a0c51d2]@1x12x12x16"`.
    """
    config = json.dumps(layer_config(layer), sort_keys=True, default=str)
    digest = hashlib.sha1(config.encode()).hexdigest()[:10]
    return f"{type(layer).__name__}[{digest}]@{'+'.join(shape_text(s) for s in input_shapes)}"


def _add():
    return keras.layers.Add()


def _concatenate():
    return keras.layers.Concatenate(axis=-1)


def _auxcell_parts(cell, shapes):
    """An `AuxCell`: its 7 ops, 3 branch sums and the loose-end sums, wired as in its `call`.

    Returns:
        `(parts, output)`: parts `(layer, input_shapes, input refs, output ref)` in call
        order, refs local to the cell ("in" is its input), and the ref of its output.
    """
    (shape,) = shapes
    pool = ["in", "first"]
    parts = [(cell.first, [shape], ["in"], "first")]
    for k, ((i_a, i_b, _, _), (op_a, op_b)) in enumerate(zip(cell.cell[1:], cell.branch_ops), start=1):
        a, b, total = f"branch{k}_a", f"branch{k}_b", f"branch{k}"
        parts += [
            (op_a, [shape], [pool[i_a]], a),
            (op_b, [shape], [pool[i_b]], b),
            (_add(), [shape, shape], [a, b], total),
        ]
        pool += [a, b, total]
    out = pool[cell.ends[0]]
    for n, i in enumerate(cell.ends[1:]):
        parts.append((_add(), [shape, shape], [out, pool[i]], f"end{n}"))
        out = f"end{n}"
    return parts, out


def _dpc_parts(cell, shapes):
    """A `DensePredictionCell`: its branch ops, the concatenation and the projection."""
    (shape,) = shapes
    branch = (*shape[:-1], cell.filters)
    pool = ["in"]
    parts = []
    for k, ((source, _), op) in enumerate(zip(cell.branches, cell.branch_ops)):
        parts.append((op, [shape if source == 0 else branch], [pool[source]], f"branch{k}"))
        pool.append(f"branch{k}")
    joined = pool[1]
    if len(cell.branches) > 1:  # concatenating one tensor is no op
        parts.append((_concatenate(), [branch] * len(cell.branches), pool[1:], "concat"))
        joined = "concat"
    parts.append((cell.projection, [(*shape[:-1], cell.filters * len(cell.branches))], [joined], "out"))
    return parts, "out"


#: Searched cells, split into the items they run: class -> `(cell, input_shapes) -> (parts,
#: output)` (see `_auxcell_parts`), so that a table needs each candidate op, not each cell.
CELL_PARTS = {AuxCell: _auxcell_parts, DensePredictionCell: _dpc_parts}


def _is_graph(layer):
    return isinstance(layer, keras.Model) and hasattr(layer, "_nodes_by_depth") and layer.name not in WHOLE


def _walk(model, input_shapes):
    """A built functional model as a flat list of nodes, cells split into their parts.

    Returns:
        `(nodes, inputs, outputs)`: nodes `(layer, input_shapes, input ids, output ids)` in
        call order, and the ids of the model's input and output tensors.
    """
    nodes = []
    ids = {}  # id(symbolic tensor) -> tensor id; the tensors are kept alive in `held`
    held = []
    inside_cells = itertools.count(-1, -1)  # ids of the tensors between a cell's parts

    def tensor_id(tensor):
        if id(tensor) not in ids:
            ids[id(tensor)] = len(ids)
            held.append(tensor)
        return ids[id(tensor)]

    def visit(operation):
        def run(*args, **kwargs):
            flat = keras.tree.flatten(args)
            if _is_graph(operation):
                return operation._run_through_graph(flat, operation_fn=visit, call_fn=_call)
            if isinstance(operation, keras.layers.InputLayer):
                return args
            shapes = [tuple(int(d) for d in t.shape) for t in flat]
            inputs = [tensor_id(t) for t in flat]
            result = _output_spec(operation, args, kwargs)
            outputs = [tensor_id(t) for t in keras.tree.flatten(result)]
            split = CELL_PARTS.get(type(operation))
            if split is None:
                nodes.append((operation, shapes, inputs, outputs))
                return result
            parts, out = split(operation, shapes)
            local = {"in": inputs[0]}
            for layer, part_shapes, part_inputs, ref in parts:
                local[ref] = outputs[0] if ref == out else next(inside_cells)
                nodes.append((layer, part_shapes, [local[r] for r in part_inputs], [local[ref]]))
            return result

        return run

    tensors = [keras.KerasTensor(tuple(s), dtype="float32") for s in input_shapes]
    inputs = [tensor_id(t) for t in tensors]
    result = model._run_through_graph(tensors, operation_fn=visit, call_fn=_call)
    return nodes, inputs, [tensor_id(t) for t in keras.tree.flatten(result)]


#: Layers that read some inputs for their static shape only, by class: the positions of the
#: inputs whose *values* they read. `ResizeLike([x, reference])` resizes x to the reference's
#: size; with the fixed input shapes a table is measured at, every runtime folds that size to
#: a constant, so what computes the reference runs only if something else needs it.
VALUE_INPUTS = {ResizeLike: (0,)}


def _value_inputs(layer, node_inputs):
    """The tensor ids among `node_inputs` whose values `layer` reads (`VALUE_INPUTS`)."""
    if isinstance(layer, Zero):
        return []  # zeros of its input's static shape
    positions = VALUE_INPUTS.get(type(layer))
    return list(node_inputs) if positions is None else [node_inputs[i] for i in positions]


def _running(nodes, inputs, outputs, fold_constants):
    """The nodes a runtime runs, and whether it reads any model input.

    A runtime prunes what the outputs do not need, and `Zero` (zeros of its input's static
    shape) needs no input value, nor does the reference of a `ResizeLike` (its size is
    static), so what feeds only those is pruned too. With `fold_constants` (ONNX and
    TensorRT, whose weights are constants) a node whose value inputs all descend from zero
    ops is computed once at load time; TensorFlow keeps the weights in variables and runs it.
    """
    live = set(inputs)  # tensors that depend on the model's input
    for layer, _, node_inputs, node_outputs in nodes:
        if live.intersection(_value_inputs(layer, node_inputs)):
            live.update(node_outputs)
    needed, running = set(outputs), []
    for node in reversed(nodes):
        layer, _, node_inputs, node_outputs = node
        if not needed.intersection(node_outputs) or isinstance(layer, Zero):
            continue
        if fold_constants and not live.intersection(node_outputs):
            continue
        running.append(node)
        needed.update(_value_inputs(layer, node_inputs))
    return running[::-1], bool(needed.intersection(inputs))


def folds_constants(runtime):
    """Whether a runtime folds what does not depend on the input: all but TensorFlow, whose
    weights are variables (onnxruntime, TensorRT: their weights are constants)."""
    return runtime != "tensorflow"


def network_items(model, input_shapes, fold_constants=False):
    """The items a built functional model runs, in graph order (see the module docstring).

    Only what the runtime runs is listed: layers whose output the model's outputs do not
    need (after the searched `zero` op) are left out, as TensorFlow, onnxruntime and
    TensorRT prune them.

    Args:
        model: a functional Keras model (an inference model, a decoder, a snippet).
        input_shapes: one shape per model input, batch included (`(1, H, W, C)`).
        fold_constants: whether the runtime folds layers that do not depend on the input
            (ONNX runtimes, TensorRT: True; TensorFlow with its variables: False).

    Returns:
        list of `(layer, input_shapes)`.
    """
    nodes, inputs, outputs = _walk(model, input_shapes)
    running, _ = _running(nodes, inputs, outputs, fold_constants)
    return [(layer, shapes) for layer, shapes, _, _ in running]


def _output_spec(layer, args, kwargs):
    """The layer's output spec at the inputs' concrete shapes.

    A layer whose `compute_output_spec` leaves spatial dimensions open (the template space's
    `Template` blocks resize to sizes they compute at run time) is called once on zeros of the
    input shapes to learn them: the walk needs concrete shapes for every later key.
    """
    result = layer.compute_output_spec(*args, **kwargs)
    if all(None not in tuple(t.shape) for t in keras.tree.flatten(result)):
        return result
    import tensorflow as tf

    def concrete(x):
        return tf.zeros(x.shape, x.dtype) if isinstance(x, keras.KerasTensor) else x

    kwargs = {k: v for k, v in kwargs.items() if k != "training"}
    if "training" in inspect.signature(layer.call).parameters:
        kwargs["training"] = False
    outputs = layer(*keras.tree.map_structure(concrete, args), **kwargs)
    return keras.tree.map_structure(lambda y: keras.KerasTensor(tuple(y.shape), dtype=y.dtype), outputs)


def _call(op, *args, **kwargs):
    kwargs.pop("training", None)
    return op(*args, **kwargs)


class SpaceShapes:
    """A space's encoder and the shapes of its features at one image size (built once).

    Args:
        space: a `tfnas.spaces.base.DecoderSpace`.
        image_shape: `(H, W, C)`.
    """

    def __init__(self, space, image_shape):
        self.space = space
        self.image_shape = tuple(int(d) for d in image_shape)
        self.encoder = space.build_encoder()
        self.strides = [int(s) for s in self.encoder.tap_strides]
        spec = self.encoder.compute_output_spec(keras.KerasTensor((1, *self.image_shape)))
        self.feature_shapes = [tuple(int(d) for d in t.shape) for t in keras.tree.flatten(spec)]
        self.specs = [(shape[-1], s) for shape, s in zip(self.feature_shapes, self.strides)]

    def encoder_item(self):
        return self.encoder, [(1, *self.image_shape)]


def inference_items(space, values, image_shape, shapes=None, fold_constants=False):
    """The items of an architecture's standalone inference model (encoder whole, decoder split).

    Builds only the decoder (`space.decoder_from_genotype_values`) and keeps its path to the
    main output, as `space.inference_model` does. Pruned layers are left out
    (`network_items`), and so is the encoder when no running layer reads its features (an
    architecture whose every path from the image passes a zero op).

    Args:
        space: the space.
        values: dict, hyperparameter values of the architecture.
        image_shape: `(H, W, C)`.
        shapes: optional `SpaceShapes` of the space at that size (built when None; pass it
            to predict many architectures without rebuilding the encoder).
        fold_constants: see `network_items`.

    Returns:
        list of `(layer, input_shapes)`.
    """
    shapes = shapes or SpaceShapes(space, image_shape)
    decoder = space.decoder_from_genotype_values(values, shapes.specs)
    main = keras.Model(decoder.inputs, decoder.get_layer(MAIN_OUTPUT).output)
    nodes, inputs, outputs = _walk(main, shapes.feature_shapes)
    running, reads_features = _running(nodes, inputs, outputs, fold_constants)
    items = [(layer, item_shapes) for layer, item_shapes, _, _ in running]
    return ([shapes.encoder_item()] if reads_features else []) + items


def _head_items(space, shape, stride, reference=None, kernel_size=3):
    """The items of the task's head on features of `shape` at `stride` (a built snippet)."""
    x = keras.Input(batch_shape=shape)
    inputs, ref = [x], None
    if reference is not None:
        ref_input = keras.Input(batch_shape=reference[0])
        inputs.append(ref_input)
        ref = (ref_input, reference[1])
    out = space.task.head(x, MAIN_OUTPUT, stride, kernel_size=kernel_size, reference=ref)
    model = keras.Model(inputs, out)
    return network_items(model, [tuple(i.shape) for i in inputs])


def _auxcell_items(space, shapes):
    from tfnas.spaces.auxcell import NUM_BLOCKS

    w = space.width
    at = {s: shape[1:3] for s, shape in zip(shapes.strides, shapes.feature_shapes)}
    reference = (shapes.feature_shapes[0], shapes.strides[0])
    items = [(ConvBN(w, 1), [shape]) for shape in shapes.feature_shapes]  # the adapters
    for s, (h, wd) in at.items():
        x = (1, h, wd, w)
        items += [(make_op(op, w), [x]) for op in CELL_OPS]
        items += [(_add(), [x, x]), (ConvBN(w, 1), [x])]  # sums, block aggregation
        for coarse, (hc, wc) in at.items():
            if coarse > s:
                items.append((ResizeLike(), [(1, hc, wc, w), x]))
        for k in range(1, NUM_BLOCKS + 1):  # k unused block outputs collected at stride s
            if k > 1:
                items.append((_concatenate(), [x] * k))
            items += [(keras.layers.ReLU(), [(1, h, wd, k * w)]), (ConvBN(w, 1), [(1, h, wd, k * w)])]
        items += _head_items(space, x, s, reference)
    return items


def _dpc_items(space, shapes):
    shape = shapes.feature_shapes[-1]
    branch = (*shape[:-1], space.width)
    items = [(dpc_op(op, space.width), [shape]) for op in DPC_OPS]
    items += [(dpc_op(op, space.width), [branch]) for op in DPC_OPS]
    if space.num_branches > 1:
        items.append((_concatenate(), [branch] * space.num_branches))
    items.append((ConvBN(space.width, 1), [(*shape[:-1], space.width * space.num_branches)]))
    return items + _head_items(space, branch, shapes.strides[-1], kernel_size=1)  # as DPCSpace


#: Spaces whose items `space_items` can list: registry name -> `(space, SpaceShapes) -> items`.
SPACE_ITEMS = {"auxcell": _auxcell_items, "dpc": _dpc_items}


def space_name(space):
    """The registry name of a space instance (`tfnas.spaces.SPACES`)."""
    from tfnas.spaces import SPACES

    for name, cls in SPACES.items():
        if type(space) is cls:
            return name
    return space.name


def space_items(space, image_shape, shapes=None, architectures=None, seed=0):
    """Every item (layer configuration and input shapes) the space's architectures can run.

    Args:
        space: a space.
        image_shape: `(H, W, C)`, the size the table is for.
        shapes: optional `SpaceShapes`.
        architectures: for a space without a listing (`SPACE_ITEMS`: the template space),
            the number of random architectures whose items stand for the space's (a table
            of them grows later, `Predictor(measure_missing=True)`); ignored for the others.
        seed: int, seed of those architectures (`space.random_values(seed + i)`).

    Returns:
        dict key -> `(layer, input_shapes)`, the encoder first.

    Raises:
        ValueError: for a space without a listing and no `architectures`.
    """
    name = space_name(space)
    shapes = shapes or SpaceShapes(space, image_shape)
    if name in SPACE_ITEMS:
        items = [shapes.encoder_item()] + SPACE_ITEMS[name](space, shapes)
    elif architectures:
        items = [shapes.encoder_item()]
        for i in range(int(architectures)):
            values = space.random_values(seed + i)
            items += inference_items(space, values, image_shape, shapes)  # unfolded: a superset
    else:
        raise ValueError(
            f"the {name!r} space's shapes are combinatorial and have no listing (spaces with one: "
            f"{sorted(SPACE_ITEMS)}); sample its items from architectures=N random architectures "
            "(tfnas latency measure --architectures N), and let the table grow in the search"
        )
    return {layer_key(*item): item for item in items}


__all__ = [
    "CELL_PARTS",
    "SPACE_ITEMS",
    "SpaceShapes",
    "folds_constants",
    "inference_items",
    "layer_config",
    "layer_key",
    "network_items",
    "space_items",
    "space_name",
]
