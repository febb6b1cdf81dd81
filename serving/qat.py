"""Quantization-aware training (QAT) of a found architecture with tensorflow-model-optimization.

tensorflow-model-optimization (tfmot 0.8) quantizes only tf_keras (Keras 2) models; tfnas builds
Keras 3 models. The path here:

1. `to_tf_keras(model)` rebuilds a tfnas model (training or inference model; training-only heads
   are stripped) as one flat tf_keras functional model: nested models (encoder, decoder) are
   inlined, every standard Keras layer becomes its tf_keras class with the same config and
   weights, and the tfnas layers become tf_keras constructions of the same computation
   (`ConvBN` -> Conv2D, BatchNormalization, ReLU; `SepConv` -> DepthwiseConv2D, Conv2D, ...;
   `AuxCell`, `DensePredictionCell` and `Template` unrolled into their ops and aggregations; the
   template ops' subsampling as a 1x1 max-pooling with a stride, `ParamSum` as two 1x1 depthwise
   convolutions and a sum; `ResizeLike` and `UpsampleBy` as small tf_keras resize layers). A layer
   with no such construction (DPC's pyramid pooling, any other custom layer) runs as the Keras 3
   layer inside a tf_keras wrapper (`Keras3Layer`) that tfmot leaves in float: the per-op
   fallback. `TfKerasModel.float_layers` lists them with the reason. The rebuilt model is
   checked against the Keras 3 model on random input.
2. `quantize_aware` annotates every layer tfmot's default 8-bit scheme supports (and the resize
   layers, whose output is quantized as tfmot does for UpSampling2D) and applies
   `tfmot.quantization.keras.quantize_apply`; the rest stays in float.
3. `fine_tune` trains the QAT model a few epochs with the task's loss. The activation ranges are
   learnt here: before fine-tuning they are tfmot's initial ones and the QAT model is not usable
   (the digits model of benchmarks/bench_quantization.py scores mIoU 0.0 then, 0.368 after).
4. `to_tflite_int8` converts it with the ranges learnt in training (int8 where the ops have
   them, float where they fall back) and `to_qdq_onnx` converts it with tf2onnx, which writes
   each fake-quant node as a QuantizeLinear/DequantizeLinear pair.

Both files take float32 images in [-1, 1] named `images` and return `logits`, like the `logits`
signature of `tfnas.serving.export`, so `tfnas.serving.tflite.tflite_predict` and
`tfnas.serving.onnx_export.onnx_predict` run them.

tfmot sets `TF_USE_LEGACY_KERAS=1` when imported (so that `tf.keras` is tf_keras). `_tfmot`
resolves `tf.keras` first and restores the variable after the import, so Keras 3 (`import
keras`, `tf.keras`) keeps working in the same process and subprocesses are not switched to
Keras 2.

Q/DQ ONNX as tf2onnx writes it from tfmot's scheme: every fake-quantized activation becomes a
QuantizeLinear/DequantizeLinear pair with an asymmetric uint8 zero point, which onnxruntime runs
but TensorRT 10 rejects (it needs symmetric int8, zero point 0); the weights' fake quantization is
folded by TensorFlow's graph optimizer into float constants, so they carry no Q/DQ pair. For
TensorRT use `tfnas.serving.quantize.quantize_onnx` (symmetric int8, per-channel weights).
"""

import os

import numpy as np

#: Keras layer classes rebuilt as the tf_keras class of the same name from their config.
STANDARD_LAYERS = (
    "Activation",
    "Add",
    "AveragePooling2D",
    "BatchNormalization",
    "Concatenate",
    "Conv2D",
    "Dense",
    "DepthwiseConv2D",
    "Dropout",
    "GlobalAveragePooling2D",
    "MaxPooling2D",
    "Multiply",
    "ReLU",
    "Rescaling",
    "Reshape",
    "Resizing",
    "SeparableConv2D",
    "Softmax",
    "UpSampling2D",
    "ZeroPadding2D",
)
#: Keyword arguments every tf_keras layer accepts besides its own.
_BASE_KWARGS = ("name", "trainable", "dtype")
#: Why a layer kind stays in float (reported in `TfKerasModel.float_layers`).
FLOAT_REASONS = {
    "Keras3Layer": "no tf_keras construction in tfnas.serving.qat; runs as the Keras 3 layer in float",
    "ZerosLike": "the cell's zero op: a constant, nothing to quantize",
    "unsupported": "tfmot's default 8-bit scheme has no QuantizeConfig for it",
}


def _tfmot():
    """Imports tensorflow_model_optimization without switching `tf.keras` or subprocesses to Keras 2."""
    import tensorflow as tf

    getattr(tf.keras, "Model", None)  # resolve tf.keras (Keras 3) before tfmot sets TF_USE_LEGACY_KERAS
    before = os.environ.get("TF_USE_LEGACY_KERAS")
    try:
        import tensorflow_model_optimization as tfmot
    except ImportError as error:
        raise ImportError(
            "quantization-aware training needs tensorflow-model-optimization and tf_keras matching "
            f"TensorFlow {tf.__version__}: pip install tensorflow-model-optimization==0.8.* "
            f"tf_keras=={'.'.join(tf.__version__.split('.')[:2])}.* ({error})"
        ) from None
    finally:
        if before is None:
            os.environ.pop("TF_USE_LEGACY_KERAS", None)
        else:
            os.environ["TF_USE_LEGACY_KERAS"] = before
    return tfmot


def _tf_keras():
    _tfmot()
    import tf_keras

    return tf_keras


def _layers():
    """The tf_keras layer classes of this module (defined on first use: tf_keras is optional)."""
    if _layers.cache is not None:
        return _layers.cache
    import tensorflow as tf

    tf_keras = _tf_keras()

    class ResizeLike(tf_keras.layers.Layer):
        """Bilinear resize of `x` to the spatial size of a reference: `[x, ref] -> x'` (tfnas.ops.ResizeLike)."""

        def call(self, inputs):
            x, ref = inputs
            return tf.cast(tf.image.resize(x, tf.shape(ref)[1:3], method="bilinear"), x.dtype)

        def compute_output_shape(self, input_shape):
            x_shape, ref_shape = input_shape
            return tf.TensorShape([x_shape[0], ref_shape[1], ref_shape[2], x_shape[-1]])

    class UpsampleBy(tf_keras.layers.Layer):
        """Bilinear upsampling by an integer factor (tfnas.tasks.base.UpsampleBy)."""

        def __init__(self, factor, **kwargs):
            super().__init__(**kwargs)
            self.factor = int(factor)

        def call(self, x):
            size = tf.shape(x)[1:3] * self.factor
            return tf.cast(tf.image.resize(x, size, method="bilinear"), x.dtype)

        def get_config(self):
            return {**super().get_config(), "factor": self.factor}

    class ZerosLike(tf_keras.layers.Layer):
        """Zeros shaped like the input (tfnas.ops.Zero, the cells' zero op)."""

        def call(self, x):
            return tf.zeros_like(x)

    class Keras3Layer(tf_keras.layers.Layer):
        """A Keras 3 layer inside a tf_keras model, run in float (the per-op fallback).

        The wrapper owns the weights (tf_keras variables, so tf_keras saves, clones and trains
        them) and runs the Keras 3 layer with `stateless_call` on them; in training, updated
        non-trainable state (batch-norm statistics) is written back.

        Args:
            layer: the Keras 3 layer config, as `keras.saving.serialize_keras_object` writes it.
            input_shapes: the shapes the layer is built with (one per input).
        """

        def __init__(self, layer, input_shapes, **kwargs):
            import keras

            super().__init__(**kwargs)
            self.layer_config = layer
            self.input_shapes = [list(s) for s in input_shapes]
            self.inner = keras.saving.deserialize_keras_object(layer)
            shapes = [tuple(s) for s in self.input_shapes]
            if not self.inner.built:
                self.inner.build(shapes[0] if len(shapes) == 1 else shapes)

        def build(self, input_shape):
            def mirror(variables, trainable):
                return [
                    self.add_weight(
                        name=v.path.replace("/", "_"),
                        shape=v.shape,
                        dtype=v.dtype,
                        initializer=tf_keras.initializers.Constant(np.asarray(v.value)),
                        trainable=trainable,
                    )
                    for v in variables
                ]

            self.mirrored = mirror(self.inner.trainable_variables, True)
            self.mirrored_state = mirror(self.inner.non_trainable_variables, False)
            super().build(input_shape)

        def call(self, inputs, training=None):
            training = bool(training) if isinstance(training, bool) else False
            outputs, state = self.inner.stateless_call(
                list(self.mirrored), list(self.mirrored_state), inputs, training=training
            )
            if training:
                for variable, value in zip(self.mirrored_state, state):
                    variable.assign(value)
            return outputs

        def compute_output_shape(self, input_shape):
            shapes = input_shape if isinstance(input_shape, list) else [input_shape]
            shapes = [tuple(tf.TensorShape(s).as_list()) for s in shapes]
            return tf.TensorShape(self.inner.compute_output_shape(shapes[0] if len(shapes) == 1 else shapes))

        def get_config(self):
            return {**super().get_config(), "layer": self.layer_config, "input_shapes": self.input_shapes}

    _layers.cache = {
        "ResizeLike": ResizeLike,
        "UpsampleBy": UpsampleBy,
        "ZerosLike": ZerosLike,
        "Keras3Layer": Keras3Layer,
    }
    return _layers.cache


_layers.cache = None


class TfKerasModel:
    """The result of `to_tf_keras`.

    Attributes:
        model: the tf_keras functional model (images in [-1, 1] -> logits).
        float_layers: dict layer name -> why it cannot be quantized (tf_keras wrappers of
            Keras 3 layers, constants); `quantize_aware` adds the layers tfmot has no config for.
        source: dict tf_keras layer name -> the Keras 3 layer (path) it came from.
        max_abs_diff: largest difference to the Keras 3 model's logits on random input, or None
            when not checked.
    """

    def __init__(self, model, float_layers, source, max_abs_diff=None):
        self.model = model
        self.float_layers = float_layers
        self.source = source
        self.max_abs_diff = max_abs_diff


class _Rebuilder:
    """Walks a Keras 3 functional graph and emits the tf_keras layers computing the same."""

    def __init__(self):
        self.tf_keras = _tf_keras()
        self.custom = _layers()
        self.names = set()
        self.float_layers = {}
        self.source = {}
        self.copies = []  # (tf_keras layer, Keras 3 weights) set once the model is built
        self.shared = {}  # id(Keras 3 layer) -> tf_keras layer (a layer called twice stays shared)

    def unique(self, name):
        name, candidate, i = name.replace("/", "_"), name.replace("/", "_"), 1
        while candidate in self.names:
            candidate, i = f"{name}_{i}", i + 1
        self.names.add(candidate)
        return candidate

    def emit(self, layer, make, args, origin, weights=None):
        """Calls the tf_keras layer for `layer` (made once by `make(name)`) on `args`."""
        key = (id(layer), origin)
        if key not in self.shared:
            name = self.unique(origin)
            self.shared[key] = make(name)
            self.source[name] = getattr(layer, "path", None) or layer.name
            if weights:
                self.copies.append((self.shared[key], weights))
        return self.shared[key](*args)

    def standard(self, layer, x, origin):
        """A standard Keras layer as the tf_keras class of the same name and config."""
        import inspect

        cls = getattr(self.tf_keras.layers, type(layer).__name__)
        accepted = set(inspect.signature(cls.__init__).parameters) | set(_BASE_KWARGS)
        config = {
            k: v
            for k, v in layer.get_config().items()
            if k in accepted and not k.endswith(("_initializer", "_regularizer", "_constraint"))
        }
        config["dtype"] = "float32"
        weights = [np.asarray(w) for w in layer.get_weights()]

        def make(name):
            return cls.from_config({**config, "name": name})

        return self.emit(layer, make, [x], origin, weights)

    def relu(self, layer, x, origin):
        return self.emit(layer, lambda name: self.tf_keras.layers.ReLU(name=name), [x], origin + "_relu")

    def op(self, layer, x, origin):
        """One op of a cell or a whole layer: dispatch on its class."""
        from tfnas.cells.auxcell import AuxCell
        from tfnas.cells.dpc import DensePredictionCell
        from tfnas.ops import ConvBN, GlobalPoolConv, Identity, ResizeLike, SepConv, Zero
        from tfnas.tasks.base import UpsampleBy

        name = type(layer).__name__
        if isinstance(layer, (Identity,)) or name == "Identity":
            return x
        template = self.template_op(layer, x, origin)
        if template is not None:
            return template
        if isinstance(layer, ConvBN):
            x = self.standard(layer.bn, self.standard(layer.conv, x, f"{origin}_conv"), f"{origin}_bn")
            return self.relu(layer, x, origin) if layer.activation else x
        if isinstance(layer, SepConv):
            for i, (depthwise, pointwise, bn) in enumerate(layer.units):
                x = self.standard(depthwise, x, f"{origin}_depthwise_{i}")
                x = self.standard(
                    bn, self.standard(pointwise, x, f"{origin}_pointwise_{i}"), f"{origin}_bn_{i}"
                )
                x = self.relu(bn, x, f"{origin}_{i}")
            return x
        if isinstance(layer, GlobalPoolConv):
            pool = self.emit(
                layer,
                lambda n: self.tf_keras.layers.GlobalAveragePooling2D(keepdims=True, name=n),
                [x],
                origin + "_pool",
            )
            pooled = self.op(layer.conv, pool, f"{origin}_conv_bn")
            # bilinear resize of a 1x1 map = the broadcast tfnas writes
            return self.emit(
                layer, lambda n: self.custom["ResizeLike"](name=n), [[pooled, x]], origin + "_broadcast"
            )
        if isinstance(layer, Zero):
            out = self.emit(layer, lambda n: self.custom["ZerosLike"](name=n), [x], origin)
            self.float_layers[self.shared[(id(layer), origin)].name] = FLOAT_REASONS["ZerosLike"]
            return out
        if isinstance(layer, ResizeLike):
            return self.emit(layer, lambda n: self.custom["ResizeLike"](name=n), [x], origin)
        if isinstance(layer, UpsampleBy):
            return self.emit(layer, lambda n: self.custom["UpsampleBy"](layer.factor, name=n), [x], origin)
        if isinstance(layer, AuxCell):
            return self.aux_cell(layer, x, origin)
        if isinstance(layer, DensePredictionCell):
            pool = [x]
            for i, ((source, _), branch) in enumerate(zip(layer.branches, layer.branch_ops)):
                pool.append(self.op(branch, pool[source], f"{origin}_branch{i}"))
            concat = self.emit(
                layer, lambda n: self.tf_keras.layers.Concatenate(name=n), [pool[1:]], origin + "_concat"
            )
            return self.op(layer.projection, concat, f"{origin}_projection")
        if type(layer).__module__.startswith("keras.") and name in STANDARD_LAYERS:
            return self.standard(layer, x, origin)
        return self.fallback(layer, x, origin)

    def subsample(self, layer, x, strides, origin):
        """`x[:, ::s, ::s]` (tfnas.cells.template) as a 1x1 max-pooling with stride s."""
        if strides == 1:
            return x
        return self.emit(
            layer,
            lambda n: self.tf_keras.layers.MaxPooling2D(1, strides=strides, name=n),
            [x],
            origin + "_subsample",
        )

    def template_op(self, layer, x, origin):
        """The template space's cell and ops (WACV 2020) written with tf_keras layers; None for others."""
        from tfnas.cells.template import ConcatReduce, ParamSum, PoolConv, StridedSepConv, Template, TileSkip

        if isinstance(layer, Template):
            paths = []
            for j, (op, adapt) in enumerate(zip(layer.ops, layer.adapts)):
                y = self.op(op, x[j], f"{origin}_op{j + 1}")
                y = self.subsample(op, y, layer.post_strides[j], f"{origin}_op{j + 1}")
                paths.append(self.op(adapt, y, f"{origin}_adapt{j + 1}") if adapt is not None else y)
            for j in layer.resized:
                paths[j] = self.op(layer.resize_layer, [paths[j], paths[layer.reference]], f"{origin}_resize")
            return self.op(layer.aggregation, paths, f"{origin}_{layer.aggregation.name}")
        if isinstance(layer, StridedSepConv):
            for i, (depthwise, pointwise, bn) in enumerate(layer.units):
                x = self.standard(depthwise, x, f"{origin}_depthwise_{i}")
                if i == 0:
                    x = self.subsample(layer, x, layer.strides, origin)
                x = self.standard(
                    bn, self.standard(pointwise, x, f"{origin}_pointwise_{i}"), f"{origin}_bn_{i}"
                )
                x = self.relu(bn, x, f"{origin}_{i}")
            return x
        if isinstance(layer, PoolConv):
            return self.standard(layer.pool, self.op(layer.conv, x, f"{origin}_conv_bn"), f"{origin}_pool")
        if isinstance(layer, TileSkip):
            x = self.subsample(layer, x, layer.strides, origin)
            if layer.times == 1:
                return x
            return self.emit(
                layer,
                lambda n: self.tf_keras.layers.Concatenate(name=n),
                [[x] * layer.times],
                origin + "_tile",
            )
        if isinstance(layer, ParamSum):  # a * x + b * y: two 1x1 depthwise convolutions and a sum
            scaled = []
            for k, (path, weight) in enumerate(zip(x, (layer.a, layer.b))):
                kernel = np.asarray(weight.value).reshape(1, 1, -1, 1)
                scaled.append(
                    self.emit(
                        weight,
                        lambda n: self.tf_keras.layers.DepthwiseConv2D(1, use_bias=False, name=n),
                        [path],
                        f"{origin}_{'ab'[k]}",
                        [kernel],
                    )
                )
            return self.add(layer, scaled, origin + "_sum")
        if isinstance(layer, ConcatReduce):
            x = self.emit(layer, lambda n: self.tf_keras.layers.Concatenate(name=n), [x], origin + "_concat")
            x = self.relu(layer, self.standard(layer.bn, x, f"{origin}_bn"), origin)
            return self.standard(layer.conv, x, f"{origin}_conv")
        return None

    def aux_cell(self, cell, x, origin):
        """`tfnas.cells.auxcell.AuxCell.call` written with tf_keras layers."""
        pool = [x, self.op(cell.first, x, f"{origin}_op1")]
        for k, ((i_a, i_b, _, _), (op_a, op_b)) in enumerate(zip(cell.cell[1:], cell.branch_ops), start=1):
            a = self.op(op_a, pool[i_a], f"{origin}_branch{k}_op0")
            b = self.op(op_b, pool[i_b], f"{origin}_branch{k}_op1")
            pool += [a, b, self.add(cell, [a, b], f"{origin}_branch{k}_sum")]
        ends = [pool[i] for i in cell.ends]
        return ends[0] if len(ends) == 1 else self.add(cell, ends, f"{origin}_sum")

    def add(self, layer, tensors, origin):
        return self.emit(layer, lambda n: self.tf_keras.layers.Add(name=n), [tensors], origin)

    def fallback(self, layer, x, origin):
        """Any other layer: the Keras 3 layer wrapped for tf_keras, left in float."""
        import keras

        inputs = x if isinstance(x, (list, tuple)) else [x]
        shapes = [tuple(t.shape.as_list()) for t in inputs]

        def make(name):
            return self.custom["Keras3Layer"](keras.saving.serialize_keras_object(layer), shapes, name=name)

        variables = layer.trainable_variables + layer.non_trainable_variables  # the wrapper's order
        out = self.emit(layer, make, [x], origin, [np.asarray(v.value) for v in variables])
        wrapper = self.shared[(id(layer), origin)]
        self.float_layers[wrapper.name] = f"{type(layer).__name__}: {FLOAT_REASONS['Keras3Layer']}"
        return out

    def graph(self, model, inputs):
        """Runs the Keras 3 functional `model` on tf_keras tensors `inputs`, nested models inlined."""

        def call(operation, *args, **kwargs):
            if hasattr(operation, "_run_through_graph"):  # a nested functional model
                return self.graph(operation, args[0] if len(args) == 1 else list(args))
            x = args[0] if len(args) == 1 else list(args)
            return self.op(operation, x, operation.name)

        return model._run_through_graph(inputs, operation_fn=lambda op: op, call_fn=call)  # noqa: SLF001

    def copy_weights(self):
        for layer, weights in self.copies:
            have = layer.get_weights()
            if [w.shape for w in have] != [w.shape for w in weights]:
                raise ValueError(
                    f"cannot copy the weights of {self.source[layer.name]!r} into tf_keras layer "
                    f"{layer.name!r}: shapes {[w.shape for w in weights]} != {[w.shape for w in have]}"
                )
            layer.set_weights(weights)


def _input_shape(input_size):
    from tfnas.serving.onnx_export import parse_input_size

    size = parse_input_size(input_size)
    return (None, None, 3) if size is None else (*size, 3)


def to_tf_keras(model, input_size=None, check=True, atol=1e-4, seed=0):
    """Rebuilds a tfnas Keras 3 model as a flat tf_keras functional model (module docstring).

    Args:
        model: a tfnas Keras 3 functional model (training model: its `"logits"` path only; or
            inference model).
        input_size: `(H, W)` (or "HxW", or an int) of the tf_keras input, default None:
            dynamic height and width.
        check: compare the two models' logits on a random batch, default True.
        atol: largest allowed difference of the logits, default 1e-4.
        seed: seed of the random check batch.

    Returns:
        `TfKerasModel` (`model`, `float_layers`, `source`, `max_abs_diff`).

    Raises:
        ValueError: for a model that is not functional, or outputs that differ by more than `atol`.
    """
    from tfnas.serving.savedmodel import _is_functional, inference_model

    if not _is_functional(model):
        raise ValueError(
            f"to_tf_keras needs a Keras functional model (a tfnas space's build), got {type(model).__name__}"
        )
    model = inference_model(model)
    if len(model.inputs) != 1:
        raise ValueError(f"model {model.name!r} has {len(model.inputs)} inputs; expected one image input")
    rebuilder = _Rebuilder()
    tf_keras = rebuilder.tf_keras
    shape = _input_shape(input_size)
    inputs = tf_keras.Input(shape, name="images")
    rebuilder.names.add("images")
    outputs = rebuilder.graph(model, [inputs])
    outputs = outputs[0] if isinstance(outputs, (list, tuple)) else outputs
    rebuilt = tf_keras.Model(inputs, outputs, name=f"{model.name}_tf_keras")
    rebuilder.copy_weights()
    result = TfKerasModel(rebuilt, rebuilder.float_layers, rebuilder.source)
    if check:
        size = shape[:2] if shape[0] else (64, 64)
        batch = np.random.default_rng(seed).uniform(-1, 1, (2, *size, 3)).astype(np.float32)
        want = np.asarray(model([batch] if isinstance(model.input, list) else batch, training=False))
        got = rebuilt(batch, training=False).numpy()
        result.max_abs_diff = float(np.max(np.abs(want - got)))
        if not result.max_abs_diff <= atol:
            raise ValueError(
                f"the tf_keras rebuild of {model.name!r} differs from the Keras 3 model by "
                f"{result.max_abs_diff:.3g} (allowed {atol}); a layer's config did not carry over"
            )
    return result


def _output_quantize_config():
    """tfmot QuantizeConfig quantizing only a layer's output (the resize layers), as tfmot does for UpSampling2D."""
    if _output_quantize_config.cache is not None:
        return _output_quantize_config.cache
    tfmot = _tfmot()
    quantizers = tfmot.quantization.keras.quantizers

    class OutputQuantizeConfig(tfmot.quantization.keras.QuantizeConfig):
        def get_weights_and_quantizers(self, layer):
            return []

        def get_activations_and_quantizers(self, layer):
            return []

        def set_quantize_weights(self, layer, quantize_weights):
            pass

        def set_quantize_activations(self, layer, quantize_activations):
            pass

        def get_output_quantizers(self, layer):
            return [
                quantizers.MovingAverageQuantizer(
                    num_bits=8, per_axis=False, symmetric=False, narrow_range=False
                )
            ]

        def get_config(self):
            return {}

    _output_quantize_config.cache = OutputQuantizeConfig
    return OutputQuantizeConfig


_output_quantize_config.cache = None


def _folded_batch_norm(layer):
    """Whether `layer` is a BatchNormalization right after a Conv2D, DepthwiseConv2D or Dense layer:
    tfmot's default 8-bit transforms quantize those pairs (the registry itself lists no BN)."""
    if type(layer).__name__ != "BatchNormalization" or len(layer.inbound_nodes) != 1:
        return False
    inbound = layer.inbound_nodes[0].inbound_layers
    return type(inbound).__name__ in ("Conv2D", "DepthwiseConv2D", "Dense")


def quantize_aware(rebuilt):
    """The QAT model of a `to_tf_keras` result: tfmot fake quantization where supported, float elsewhere.

    Every layer tfmot's default 8-bit registry supports is annotated
    (`quantize_annotate_layer`), the resize layers get an output-only config, and
    `quantize_apply` inserts the fake-quant ops; every other layer is left as it is (float).

    Args:
        rebuilt: a `TfKerasModel` from `to_tf_keras` (or a tf_keras functional model).

    Returns:
        `TfKerasModel` with the QAT model; `float_layers` names every layer left in float
        and why.
    """
    tfmot = _tfmot()
    tf_keras = _tf_keras()
    from tensorflow_model_optimization.python.core.quantization.keras.default_8bit import (
        default_8bit_quantize_registry,
    )

    if not isinstance(rebuilt, TfKerasModel):
        rebuilt = TfKerasModel(rebuilt, {}, {})
    custom = _layers()
    output_config = _output_quantize_config()
    registry = default_8bit_quantize_registry.Default8BitQuantizeRegistry()
    annotate = tfmot.quantization.keras.quantize_annotate_layer
    float_layers = dict(rebuilt.float_layers)

    def clone(layer):
        copy = layer.__class__.from_config(layer.get_config())
        if isinstance(layer, (custom["ResizeLike"], custom["UpsampleBy"])):
            return annotate(copy, quantize_config=output_config())
        if registry.supports(layer) or _folded_batch_norm(layer):
            return annotate(copy)
        if not isinstance(layer, tf_keras.layers.InputLayer) and layer.name not in float_layers:
            float_layers[layer.name] = f"{type(layer).__name__}: {FLOAT_REASONS['unsupported']}"
        return copy

    scope = {cls.__name__: cls for cls in custom.values()}
    scope["OutputQuantizeConfig"] = output_config
    with tfmot.quantization.keras.quantize_scope(scope):
        annotated = tf_keras.models.clone_model(rebuilt.model, clone_function=clone)
        annotated.set_weights(rebuilt.model.get_weights())
        qat = tfmot.quantization.keras.quantize_apply(annotated)
    return TfKerasModel(qat, float_layers, rebuilt.source, rebuilt.max_abs_diff)


def fine_tune(qat, data, task=None, epochs=1, learning_rate=1e-4, steps_per_epoch=None):
    """Quantization-aware fine-tuning with the task's loss (Adam).

    Args:
        qat: the QAT model (`TfKerasModel` from `quantize_aware`, or its tf_keras model).
        data: `tf.data.Dataset` (or iterable) of `(float32 images in [-1, 1] (N, H, W, 3),
            targets)` batches, as `task.pipeline` makes them.
        task: the model's task (`Task`, name or config), default None: segmentation with the
            model's classes.
        epochs: passes over `data`, default 1.
        learning_rate: Adam's learning rate, default 1e-4 (fine-tuning a trained model).
        steps_per_epoch: most batches per epoch, default None: all.

    Returns:
        list of the mean loss of each epoch.

    Raises:
        ValueError: if a loss is not finite (the message names the epoch).
    """
    import tensorflow as tf

    from tfnas.serving.savedmodel import resolve_task

    tf_keras = _tf_keras()
    model = qat.model if isinstance(qat, TfKerasModel) else qat
    task = resolve_task(task, int(model.output_shape[-1]))
    optimizer = tf_keras.optimizers.Adam(learning_rate)

    @tf.function
    def step(images, targets):
        with tf.GradientTape() as tape:
            loss = task.loss(targets, model(images, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    history = []
    for epoch in range(int(epochs)):
        losses = []
        for i, (images, targets) in enumerate(data):
            if steps_per_epoch is not None and i >= steps_per_epoch:
                break
            losses.append(
                float(step(tf.convert_to_tensor(images, tf.float32), tf.convert_to_tensor(targets)))
            )
        mean = float(np.mean(losses)) if losses else float("nan")
        if not np.isfinite(mean):
            raise ValueError(f"QAT fine-tuning loss is {mean} in epoch {epoch}; lower learning_rate")
        history.append(mean)
    return history


def _logits_function(model, input_size, batch_size):
    """`images (batch, H, W, 3) float32 -> {"logits": ...}` of a tf_keras model, as a concrete function."""
    import tensorflow as tf

    from tfnas.serving.onnx_export import parse_input_size

    size = parse_input_size(input_size)
    if size is None:
        shape = tuple(model.input_shape[1:3])
        if None in shape:
            raise ValueError(
                "the model has dynamic height and width; pass input_size=(H, W), the deployment size"
            )
        size = shape
    spec = tf.TensorSpec((int(batch_size), *size, 3), tf.float32, name="images")
    fn = tf.function(lambda images: {"logits": model(images, training=False)}, input_signature=[spec])
    return fn.get_concrete_function(), spec


def to_tflite_int8(qat, path, input_size=None, batch_size=1, representative_data=None, check_images=None):
    """Converts the QAT model to a `.tflite` file with the ranges learnt in fine-tuning.

    Ops with fake-quant ranges become int8 kernels; the float fallbacks (module docstring) stay
    float32 with quantize/dequantize around them. Input and output are float32 (images in [-1, 1],
    logits), as `tfnas.serving.tflite.to_tflite`'s int8 files.

    Args:
        qat: `TfKerasModel` from `quantize_aware` (or its tf_keras model).
        path: output `.tflite` file.
        input_size: deployment size `(H, W)`; default None: the model's fixed input size.
        batch_size: fixed batch, default 1.
        representative_data: optional float images in [-1, 1] `(N, H, W, 3)` to calibrate ops
            that have no QAT range (default None: such ops stay float).
        check_images: optional uint8 images `(N, H, W, 3)`: the .tflite is run in the TFLite
            interpreter on them and compared with the QAT model.

    Returns:
        dict: `path`, `size_bytes`, `int8_tensors` (count), `float_tensors`, `op_counts`, and
        with `check_images` `max_abs_diff` / `max_rel_diff` to the QAT model's logits.
    """
    import warnings

    import tensorflow as tf

    from tfnas.serving.tflite import tflite_op_census, tflite_predict

    model = qat.model if isinstance(qat, TfKerasModel) else qat
    concrete, _ = _logits_function(model, input_size, batch_size)
    # The converter saves its trackable object as a SavedModel with the function as its
    # signature, then converts that. The function and the variables it reads are all the
    # SavedModel needs: given the tf_keras model itself, the save traces every layer's call
    # functions again (most of the conversion's time), and the .tflite comes out the same.
    holder = tf.Module()
    holder.model_variables = list(model.variables)
    holder.captured_variables = list(concrete.variables)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([concrete], holder)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if representative_data is not None:
        data = np.asarray(representative_data, np.float32)
        converter.representative_dataset = lambda: ({"images": data[i : i + 1]} for i in range(len(data)))
    flatbuffer = converter.convert()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "wb") as f:
        f.write(flatbuffer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        details = tf.lite.Interpreter(model_path=path).get_tensor_details()
    report = {
        "path": path,
        "size_bytes": os.path.getsize(path),
        "int8_tensors": sum(d["dtype"] == np.int8 for d in details),
        "float_tensors": sum(d["dtype"] == np.float32 for d in details),
        "op_counts": dict(tflite_op_census(path)),
    }
    if check_images is not None:
        report.update(_compare(model, lambda images: tflite_predict(path, images), check_images))
    return report


def _compare(model, predict, images):
    from tfnas.preprocessing import preprocess

    images = np.asarray(images)
    want = model(preprocess(images), training=False).numpy()
    got = np.asarray(predict(images))
    diff = float(np.max(np.abs(want - got)))
    return {"max_abs_diff": diff, "max_rel_diff": diff / max(1.0, float(np.max(np.abs(want))))}


def to_qdq_onnx(qat, path, input_size=None, batch_size=1, opset=17, check_images=None):
    """Converts the QAT model to ONNX with tf2onnx: each fake-quant op becomes a Q/DQ pair.

    Args:
        qat: `TfKerasModel` from `quantize_aware` (or its tf_keras model).
        path: output `.onnx` file.
        input_size: deployment size `(H, W)`; default None: the model's fixed input size.
        batch_size: fixed batch, default 1.
        opset: ONNX opset, default 17.
        check_images: optional uint8 images `(N, H, W, 3)` (N a multiple of `batch_size`): the
            model is run in onnxruntime on them and compared with the QAT model.

    Returns:
        dict: `path`, `quantize_linear`, `dequantize_linear` (node counts), `nodes`, `op_counts`,
        and with `check_images` `max_abs_diff` / `max_rel_diff` to the QAT model's logits.

    Raises:
        ValueError: if the ONNX model holds no Q/DQ nodes.
    """
    import tensorflow as tf
    from tf2onnx import convert

    from tfnas.preprocessing import preprocess
    from tfnas.serving.onnx_export import onnx_predict, op_census

    model = qat.model if isinstance(qat, TfKerasModel) else qat
    concrete, spec = _logits_function(model, input_size, batch_size)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with tf.device("/cpu:0"):
        convert.from_function(tf.function(concrete), input_signature=[spec], opset=opset, output_path=path)
    census = op_census(path)
    if not (census["QuantizeLinear"] and census["DequantizeLinear"]):
        raise ValueError(
            f"tf2onnx wrote no QuantizeLinear/DequantizeLinear into {path} (ops: {dict(census)})"
        )
    report = {
        "path": path,
        "quantize_linear": census["QuantizeLinear"],
        "dequantize_linear": census["DequantizeLinear"],
        "nodes": sum(census.values()),
        "op_counts": dict(census),
    }
    if check_images is not None:

        def predict(images):
            batches = [
                preprocess(images[i : i + batch_size]).numpy() for i in range(0, len(images), batch_size)
            ]
            return np.concatenate([onnx_predict(path, b)["logits"] for b in batches])

        report.update(_compare(model, predict, check_images))
    return report


def qat_export(model, data, out_dir, input_size, task=None, epochs=1, learning_rate=1e-4, check_images=None):
    """The whole path: `to_tf_keras`, `quantize_aware`, `fine_tune`, `to_tflite_int8`, `to_qdq_onnx`.

    Args:
        model: the tfnas Keras 3 model.
        data: training batches for `fine_tune`.
        out_dir: folder for `model_qat_int8.tflite` and `model_qat_qdq.onnx`.
        input_size: deployment size `(H, W)`.
        task, epochs, learning_rate: as `fine_tune`.
        check_images: optional uint8 images to compare the files with the QAT model.

    Returns:
        dict: `float_layers`, `max_abs_diff` (tf_keras vs Keras 3), `losses`, `tflite`, `onnx`,
        and `qat` (the `TfKerasModel`).
    """
    rebuilt = to_tf_keras(model, input_size=input_size)
    qat = quantize_aware(rebuilt)
    losses = fine_tune(qat, data, task=task, epochs=epochs, learning_rate=learning_rate)
    os.makedirs(out_dir, exist_ok=True)
    return {
        "float_layers": qat.float_layers,
        "max_abs_diff": rebuilt.max_abs_diff,
        "losses": losses,
        "tflite": to_tflite_int8(
            qat, os.path.join(out_dir, "model_qat_int8.tflite"), check_images=check_images
        ),
        "onnx": to_qdq_onnx(qat, os.path.join(out_dir, "model_qat_qdq.onnx"), check_images=check_images),
        "qat": qat,
    }


__all__ = [
    "STANDARD_LAYERS",
    "TfKerasModel",
    "fine_tune",
    "qat_export",
    "quantize_aware",
    "to_qdq_onnx",
    "to_tf_keras",
    "to_tflite_int8",
]
