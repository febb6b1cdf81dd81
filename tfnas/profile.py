"""Model cost: parameters, multiply-adds counted from the traced graph, and latency.

Multiply-adds are counted for one image (batch 1) from the TensorFlow graph of
`model(x, training=False)` traced on a static `TensorSpec([1, H, W, C])`, so they count what
actually runs, whatever layers built it. Counted ops and formulas (per op, summed over the
batch, with output sizes that already reflect strides and padding):

- `Conv2D`: H_out * W_out * K_h * K_w * C_in * C_out (C_in per group for grouped convs);
- `DepthwiseConv2dNative`: H_out * W_out * K_h * K_w * C_in * multiplier;
- `Conv2DBackpropInput` (transposed conv): H_in * W_in * K_h * K_w * C_in * C_out;
- `MatMul`, `BatchMatMul*` (dense layers): rows * in * out; `Einsum`: output size times the
  sizes of the contracted indices;
- `AvgPool`, `MaxPool` (and 3D): H_out * W_out * C * K_h * K_w;
- `Mean` (global average pooling; any `Mean`, e.g. layer-norm moments, counts the same
  way): the number of reduced elements.

Bias adds, batch normalisation, activations, element-wise sums and resizes are not counted.
Dilated convolutions that TensorFlow runs as SpaceToBatch -> conv -> BatchToSpace are
counted on the BatchToSpace output size, so the dilation does not change the count.

Keras 3 does not wrap layers in nested functions: the traced graph is flat. Layers or
models whose `call` is itself a `tf.function` appear as `(Stateful)PartitionedCall` ops, and
control flow as `If`/`While`; when any are present the graph is frozen with
`convert_variables_to_constants_v2`, which inlines function calls (and lowers control flow,
so both branches of an `If` are counted), and the inlined graph is counted instead.
"""

import time

import numpy as np
import tensorflow as tf
from tensorflow.python.framework.convert_to_constants import (
    convert_variables_to_constants_v2,
)

__all__ = ["format_profile", "latency", "madds", "params", "profile"]

_NESTED_OPS = {
    "PartitionedCall",
    "StatefulPartitionedCall",
    "If",
    "StatelessIf",
    "While",
    "StatelessWhile",
    "Case",
    "StatelessCase",
}


def params(model):
    """Count a model's parameters, each weight variable once even when shared.

    Args:
        model: a built Keras model or layer.

    Returns:
        dict `{"trainable": int, "non_trainable": int, "total": int}`.
    """
    trainable_ids = {id(v) for v in model.trainable_weights}
    unique = {id(v): v for v in model.weights}
    sizes = {key: int(np.prod(v.shape)) for key, v in unique.items()}
    trainable = sum(size for key, size in sizes.items() if key in trainable_ids)
    total = sum(sizes.values())
    return {"trainable": trainable, "non_trainable": total - trainable, "total": total}


def _check_input_shape(input_shape):
    shape = tuple(input_shape)
    if len(shape) != 3 or not all(isinstance(d, (int, np.integer)) and d > 0 for d in shape):
        raise ValueError(
            f"input_shape must be (H, W, C) with positive ints, got {input_shape!r}; "
            "pass the size of one image, e.g. (512, 512, 3)"
        )
    return tuple(int(d) for d in shape)


def _forward(model):
    return tf.function(lambda x: model(x, training=False))


def _static(shape, op):
    """Return a static shape as a list of ints, or raise naming the op."""
    if shape.rank is None or None in shape.as_list():
        raise ValueError(
            f"op {op.name!r} ({op.type}) has a non-static shape {shape}; multiply-adds need "
            "static shapes: give madds a full (H, W, C) and avoid ops that make sizes "
            "data-dependent"
        )
    return shape.as_list()


def _elements(tensor, op):
    return int(np.prod(_static(tensor.shape, op)))


def _conv_output_elements(op):
    """Output size of a conv, taken after BatchToSpaceND for dilated convs."""
    consumers = op.outputs[0].consumers()
    if len(consumers) == 1 and consumers[0].type == "BatchToSpaceND":
        return _elements(consumers[0].outputs[0], op)
    return _elements(op.outputs[0], op)


def _einsum_madds(op):
    equation = op.get_attr("equation").decode().replace(" ", "")
    inputs, output = equation.split("->")
    sizes = {}
    for labels, tensor in zip(inputs.split(","), op.inputs):
        shape = _static(tensor.shape, op)
        labels = labels.replace("...", "")
        for label, size in zip(labels, shape[len(shape) - len(labels) :]):
            sizes[label] = size
    contracted = [sizes[label] for label in sizes if label not in output]
    return _elements(op.outputs[0], op) * int(np.prod(contracted))


def _op_madds(op):
    """Multiply-adds of one graph op (0 for ops that are not counted)."""
    kind = op.type
    if kind == "Conv2D":
        k_h, k_w, c_in, _ = _static(op.inputs[1].shape, op)
        return _conv_output_elements(op) * k_h * k_w * c_in
    if kind == "DepthwiseConv2dNative":
        k_h, k_w, _, _ = _static(op.inputs[1].shape, op)
        return _conv_output_elements(op) * k_h * k_w
    if kind == "Conv2DBackpropInput":
        k_h, k_w, c_out, _ = _static(op.inputs[1].shape, op)
        return _elements(op.inputs[2], op) * k_h * k_w * c_out
    if kind == "MatMul":
        a = _static(op.inputs[0].shape, op)
        inner = a[0] if op.get_attr("transpose_a") else a[1]
        return _elements(op.outputs[0], op) * inner
    if kind in ("BatchMatMul", "BatchMatMulV2", "BatchMatMulV3"):
        a = _static(op.inputs[0].shape, op)
        inner = a[-2] if op.get_attr("adj_x") else a[-1]
        return _elements(op.outputs[0], op) * inner
    if kind == "Einsum":
        return _einsum_madds(op)
    if kind in ("AvgPool", "MaxPool", "AvgPool3D", "MaxPool3D"):
        return _elements(op.outputs[0], op) * int(np.prod(op.get_attr("ksize")))
    if kind in ("MaxPoolV2", "MaxPool2d"):
        ksize = tf.get_static_value(op.inputs[1])
        if ksize is None:
            raise ValueError(f"op {op.name!r} ({kind}) has a non-constant pool size")
        return _elements(op.outputs[0], op) * int(np.prod(ksize))
    if kind == "Mean":
        return _elements(op.inputs[0], op)
    return 0


def madds(model, input_shape):
    """Multiply-adds of one image, counted from the traced TensorFlow graph.

    See the module docstring for the counted ops and formulas.

    Args:
        model: a Keras model (or any callable taking `(x, training=False)`) with one
            image input.
        input_shape: `(H, W, C)` of one image.

    Returns:
        int, multiply-adds for a batch of one image.

    Raises:
        ValueError: if `input_shape` is not three positive ints, or an op's shapes are not
            static, or function calls remain after inlining.
    """
    height, width, channels = _check_input_shape(input_shape)
    function = _forward(model).get_concrete_function(tf.TensorSpec([1, height, width, channels], tf.float32))
    graph = function.graph
    if any(op.type in _NESTED_OPS for op in graph.get_operations()):
        graph = convert_variables_to_constants_v2(function).graph
        left = sorted({op.type for op in graph.get_operations()} & _NESTED_OPS)
        if left:
            raise ValueError(
                f"the traced graph still holds {left} after inlining; madds cannot count "
                "inside them: avoid tf.function or tf.while_loop inside layers"
            )
    return int(sum(_op_madds(op) for op in graph.get_operations()))


def latency(model, input_shape, runs=100, warmup=10, batch_size=1):
    """Time forward passes of a compiled `model(x, training=False)` on random input.

    Each pass is timed with `time.perf_counter` up to the result's `.numpy()`, after
    `warmup` untimed passes (the first one traces the function).

    Args:
        model: a Keras model with one image input.
        input_shape: `(H, W, C)` of one image.
        runs: int >= 1, number of timed passes (default 100).
        warmup: int >= 0, number of untimed passes first (default 10).
        batch_size: int >= 1, images per pass (default 1).

    Returns:
        `(mean_ms, std_ms)`: mean and standard deviation of one pass, in milliseconds.

    Raises:
        ValueError: if `input_shape`, `runs`, `warmup` or `batch_size` is out of range.
    """
    shape = _check_input_shape(input_shape)
    if runs < 1 or warmup < 0 or batch_size < 1:
        raise ValueError(
            f"need runs >= 1, warmup >= 0 and batch_size >= 1, got runs={runs}, "
            f"warmup={warmup}, batch_size={batch_size}"
        )
    forward = _forward(model)
    images = tf.random.uniform((batch_size,) + shape, -1.0, 1.0)

    def run_once():
        outputs = forward(images)
        tf.nest.map_structure(lambda t: t.numpy(), outputs)

    for _ in range(warmup):
        run_once()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run_once()
        times.append((time.perf_counter() - start) * 1000.0)
    return float(np.mean(times)), float(np.std(times))


def profile(model, input_shape, runs=100):
    """Parameters, multiply-adds and latency of a model in one dict.

    Args:
        model: a Keras model with one image input.
        input_shape: `(H, W, C)` of one image.
        runs: timed passes for `latency` (default 100); 0 skips timing (latency is None).

    Returns:
        dict with `params` (total), `trainable_params`, `madds`, `latency_ms`,
        `latency_std_ms` and `input_shape` (list `[H, W, C]`); JSON-serialisable.

    Raises:
        ValueError: as `madds` and `latency`.
    """
    shape = _check_input_shape(input_shape)
    counts = params(model)
    mean_ms, std_ms = latency(model, shape, runs=runs) if runs else (None, None)
    return {
        "params": counts["total"],
        "trainable_params": counts["trainable"],
        "madds": madds(model, shape),
        "latency_ms": mean_ms,
        "latency_std_ms": std_ms,
        "input_shape": list(shape),
    }


def format_si(value):
    """A count with an SI prefix, e.g. `2613568 -> "2.61 M"`; NaN or None -> `"-"`.

    Args:
        value: number (parameters, multiply-adds) or None.

    Returns:
        str.
    """
    if value is None or value != value:
        return "-"
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f}"


def format_profile(result):
    """One-line summary of a `profile` dict.

    Args:
        result: dict returned by `profile`.

    Returns:
        str such as `"2.61 M params, 4.47 G mult-adds @512x512, 12.3 +- 0.4 ms"` (the
        latency part is left out when it was not measured).
    """
    height, width = result["input_shape"][:2]
    text = f"{format_si(result['params'])} params, {format_si(result['madds'])} mult-adds @{height}x{width}"
    if result.get("latency_ms") is not None:
        text += f", {result['latency_ms']:.1f} +- {result['latency_std_ms']:.1f} ms"
    return text
