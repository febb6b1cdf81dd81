"""Supernets: one decoder graph per search space that holds every architecture (issue 10).

A space's supernet is a decoder `keras.Model` (list of encoder features -> dict of logits,
the same contract as a standalone decoder) in which every decision is a `tfnas.choice.Choice`
layer. An architecture is the value of the choices' indices (`Supernet.select(values)`), so a
`tf.function` over the supernet is traced once and serves every trial.

Around the graph, `Supernet` keeps what a trial needs without building or tracing anything:

- `select(values)`: assigns the indices of an architecture (hyperparameter values);
- `reinitialize(values, seed)`: re-draws every weight the architecture uses with the
  standalone model's initialisers and fan-ins (batch-norm statistics included), from a
  seed; leaving it out is ENAS-style weight sharing (`prepare(..., weight_sharing=True)`);
- `transfer(values, model)`: copies the architecture's weights into the standalone model
  `space.build_genotype(...)` (export, `get_best_models`), which then computes the same
  outputs; `load(values, model)` copies the other way;
- `cost(values, input_shape)`: parameters and multiply-adds of the standalone *inference*
  model, summed from per-layer counts computed once per layer configuration and input size
  (`tfnas.profile` on that layer alone) and cached: the sums equal `tfnas.profile.params`
  and `tfnas.profile.madds` of the standalone inference model.

Each space says which supernet layers an architecture uses, and where each one sits in the
standalone model, as a list of `Use` records (`space.supernet_uses(decoder, values, strides)`).

    >>> space = AuxCellSpace(num_classes=21)
    >>> supernet = space.build_supernet()
    >>> values = space.random_values(seed=0)
    >>> supernet.prepare(values, seed=0)          # select + re-initialise
    >>> logits = supernet.decoder(features)["logits"]
    >>> supernet.cost(values, (512, 512, 3))      # {"params": {...}, "madds": ...}
"""

import json
import math
import zlib
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf

from tfnas import profile
from tfnas.choice import Choice


class Use(NamedTuple):
    """One supernet layer that an architecture uses, and its place in the standalone model.

    Attributes:
        layer: the supernet layer (a candidate of a `Choice`, or a fixed layer).
        standalone: tuple path of the same layer in the standalone decoder: a layer name,
            then attribute names (str) and list positions (int), e.g.
            `("block0_cell1", "branch_ops", 2, 0)`.
        stride: int, stride (relative to the image) of the layer's input.
        channels: int or tuple of ints, channels of the layer's input in the standalone
            model (a tuple for a layer on a list of same-size inputs).
        rows: None, or the input channels of the supernet layer's conv kernels that the
            standalone layer has (a 1x1 conv over a masked concatenation), in order.
        inference: bool, whether the standalone *inference* model holds the layer
            (False for training-only heads and for adapters of unread encoder taps).
    """

    layer: keras.layers.Layer
    standalone: tuple
    stride: int
    channels: object
    rows: tuple = None
    inference: bool = True


def choice_layers(model):
    """Every `Choice` in `model`, keyed by its path of layer names (`"block0_cell0/op1"`)."""
    found = {}

    def walk(layer, prefix):
        for child in layer._flatten_layers(include_self=False, recursive=False):
            path = f"{prefix}{child.name}"
            if isinstance(child, Choice):
                found[path] = child
            walk(child, path + "/")

    walk(model, "")
    return found


def resolve(model, path):
    """The layer at a `Use.standalone` path in a standalone decoder model."""
    layer = model.get_layer(path[0])
    for step in path[1:]:
        layer = layer[step] if isinstance(step, int) else getattr(layer, step)
    return layer


def _leaf_variables(layer):
    """(owning layer, variable) for every variable of `layer` and its sublayers."""
    pairs, seen = [], set()
    for sub in layer._flatten_layers(include_self=True, recursive=True):
        if isinstance(sub, Choice):
            raise ValueError(
                f"use {layer.name!r} contains the choice {sub.name!r}; a Use must name "
                "a candidate, not a choice"
            )
        for variable in list(sub._trainable_variables) + list(sub._non_trainable_variables):
            if id(variable) not in seen:
                seen.add(id(variable))
                pairs.append((sub, variable))
    return pairs


def _initializer(layer, variable):
    """The initializer a layer gave `variable` (from the layer's `<name>_initializer`)."""
    name = variable.name
    if isinstance(layer, keras.layers.DepthwiseConv2D) and name == "kernel":
        name = "depthwise"
    init = getattr(layer, f"{name}_initializer", None)
    if init is None:
        raise ValueError(
            f"cannot re-initialise {variable.path!r}: layer {type(layer).__name__} "
            f"has no attribute {name}_initializer naming its initializer"
        )
    return keras.initializers.get(init)


def _seeded(init, seed):
    config = init.get_config()
    if "seed" not in config:
        return init  # constant initializers (zeros, ones)
    return type(init).from_config({**config, "seed": seed})


def _sliced(variable, rows):
    return rows is not None and len(variable.shape) == 4


class Supernet:
    """A space's supernet decoder with selection, re-initialisation, transfer and accounting.

    Built by `space.build_supernet(...)`; see the module docstring.

    Args:
        space: the `tfnas.spaces.base.DecoderSpace` that built it.
        decoder: the supernet decoder `keras.Model` (features -> dict of logits).
        encoder: the space's encoder model (for `cost`: its parameters, multiply-adds and
            feature sizes).

    Attributes:
        choices: dict path -> `Choice`, every decision of the graph.
    """

    def __init__(self, space, decoder, encoder):
        self.space = space
        self.decoder = decoder
        self.encoder = encoder
        self.strides = [int(s) for s in encoder.tap_strides]
        self.choices = choice_layers(decoder)
        self._layer_costs = {}
        self._encoder_costs = {}

    # --- selection ------------------------------------------------------------------------
    def selection(self, values):
        """dict Choice path -> index of the architecture `values`; validated."""
        selection = self.space.supernet_selection(values, self.strides)
        missing = sorted(set(self.choices) - set(selection))
        unknown = sorted(set(selection) - set(self.choices))
        if missing or unknown:
            raise ValueError(
                f"{type(self.space).__name__}.supernet_selection gave no index for "
                f"{missing} and indices for unknown choices {unknown}"
            )
        for path, index in selection.items():
            size = self.choices[path]._size
            if not 0 <= int(index) < size:
                raise ValueError(f"choice {path!r} gets index {index}, but only 0..{size - 1} exist")
        return selection

    def select(self, values):
        """Makes the supernet compute the architecture `values` (no retracing)."""
        for path, index in self.selection(values).items():
            self.choices[path].index.assign(int(index))

    def selected(self):
        """dict Choice path -> the index currently assigned."""
        return {path: int(choice.index.numpy()) for path, choice in self.choices.items()}

    def uses(self, values):
        """The supernet layers the architecture `values` uses (`Use` records)."""
        return self.space.supernet_uses(self.decoder, values, self.strides)

    def prepare(self, values, seed=None, weight_sharing=False):
        """Selects `values` and, unless `weight_sharing`, re-initialises what they use.

        Args:
            values: dict, hyperparameter values of the architecture.
            seed: int, seed of the re-initialisation (derive it from the trial). Required
                unless `weight_sharing`.
            weight_sharing: bool, ENAS-style: keep the weights earlier trials trained.
                Default False (every trial starts from fresh weights, as a standalone one).
        """
        self.select(values)
        if not weight_sharing:
            if seed is None:
                raise ValueError(
                    "prepare needs a seed unless weight_sharing=True; derive one from the trial id"
                )
            self.reinitialize(values, seed)

    # --- weights --------------------------------------------------------------------------
    def reinitialize(self, values, seed):
        """Re-draws every weight the architecture uses, as a fresh standalone model would.

        Each variable gets its layer's initializer, seeded from `seed` and the variable's
        path, on the standalone shape (so Glorot fan-ins are those of the standalone layer:
        a 1x1 conv over a masked concatenation is drawn for the inputs it really has).
        Batch-norm moving statistics go back to 0 and 1. Weights of unused candidates are
        left as they are.

        Args:
            values: dict, hyperparameter values.
            seed: int.
        """
        for use in self.uses(values):
            for owner, variable in _leaf_variables(use.layer):
                init = _seeded(
                    _initializer(owner, variable), zlib.crc32(f"{int(seed)}/{variable.path}".encode())
                )
                if _sliced(variable, use.rows):
                    shape = (*variable.shape[:2], len(use.rows), variable.shape[3])
                    value = np.array(variable.numpy())
                    value[:, :, list(use.rows), :] = keras.ops.convert_to_numpy(init(shape, variable.dtype))
                    variable.assign(value)
                else:
                    variable.assign(init(tuple(variable.shape), variable.dtype))

    def _pairs(self, values, model):
        decoder = model.get_layer("decoder") if "decoder" in [layer.name for layer in model.layers] else model
        pairs, covered = [], set()
        for use in self.uses(values):
            target = resolve(decoder, use.standalone)
            source_vars = [v for _, v in _leaf_variables(use.layer)]
            target_vars = [v for _, v in _leaf_variables(target)]
            if len(source_vars) != len(target_vars):
                raise ValueError(
                    f"supernet layer {use.layer.name!r} has {len(source_vars)} variables, "
                    f"standalone {'/'.join(map(str, use.standalone))} has {len(target_vars)}"
                )
            for s, t in zip(source_vars, target_vars):
                pairs.append((s, t, use.rows if _sliced(s, use.rows) else None))
                covered.add(id(t))
        left = [v.path for v in decoder.weights if id(v) not in covered]
        if left:
            raise ValueError(f"the supernet's uses leave standalone weights without a source: {left[:5]}")
        return pairs

    def transfer(self, values, model):
        """Copies the architecture's supernet weights into its standalone model.

        Args:
            values: dict, hyperparameter values of the architecture.
            model: the standalone training model (`space.build_genotype(...)`, with a
                nested `"decoder"`) or its decoder.

        Raises:
            ValueError: if a standalone weight has no supernet source or shapes differ.
        """
        for source, target, rows in self._pairs(values, model):
            value = source.numpy()
            if rows is not None:
                value = value[:, :, list(rows), :]
            if tuple(value.shape) != tuple(target.shape):
                raise ValueError(
                    f"supernet weight {source.path!r} {value.shape} does not fit "
                    f"standalone {target.path!r} {tuple(target.shape)}"
                )
            target.assign(value)

    def load(self, values, model):
        """Copies a standalone model's weights into the supernet (the inverse of `transfer`)."""
        for source, target, rows in self._pairs(values, model):
            if rows is None:
                source.assign(target.numpy())
            else:
                value = np.array(source.numpy())
                value[:, :, list(rows), :] = target.numpy()
                source.assign(value)

    # --- accounting -----------------------------------------------------------------------
    def _sizes(self, input_shape):
        """Spatial size at each encoder stride for an image of `input_shape`."""
        height, width, channels = input_shape
        features = keras.tree.flatten(self.encoder(np.zeros((1, height, width, channels), "float32")))
        return {s: tuple(int(d) for d in f.shape[1:3]) for f, s in zip(features, self.encoder.tap_strides)}

    def _size_at(self, sizes, stride):
        if stride in sizes:
            return sizes[stride]
        coarser = max(s for s in sizes if s < stride)
        h, w = sizes[coarser]
        while coarser < stride:  # strided ops take every second pixel: ceil(size / 2)
            h, w, coarser = math.ceil(h / 2), math.ceil(w / 2), coarser * 2
        if coarser != stride:
            raise ValueError(f"stride {stride} is not a power-of-two multiple of an encoder stride")
        return h, w

    def _layer_cost(self, use, size):
        channels = use.channels if isinstance(use.channels, tuple) else (use.channels,)
        config = use.layer.get_config()
        config.pop("name", None)
        key = (type(use.layer).__name__, json.dumps(config, sort_keys=True, default=str), size, channels)
        if key not in self._layer_costs:
            clone = type(use.layer).from_config(config)
            shapes = [(1, *size, c) for c in channels]
            clone.build(shapes if len(shapes) > 1 else shapes[0])

            def forward(x, training=False):
                if len(channels) == 1:
                    return clone(x, training=training)
                parts = tf.split(x, list(channels), axis=-1)
                return clone(parts, training=training)

            counts = profile.params(clone)
            self._layer_costs[key] = (
                counts["trainable"],
                counts["non_trainable"],
                profile.madds(forward, (*size, sum(channels))),
            )
        return self._layer_costs[key]

    def cost(self, values, input_shape):
        """Parameters and multiply-adds of the architecture's standalone inference model.

        Per-layer counts are computed the first time a layer configuration is seen at an
        input size and cached, so after the first trials no graph is traced.

        Args:
            values: dict, hyperparameter values.
            input_shape: `(H, W, C)` of one image.

        Returns:
            dict `{"params": {"trainable", "non_trainable", "total"}, "madds": int}`, equal
            to `tfnas.profile.params(m)` and `tfnas.profile.madds(m, input_shape)` for the
            inference model `m` of the standalone architecture.
        """
        input_shape = tuple(int(d) for d in input_shape)
        if input_shape not in self._encoder_costs:
            counts = profile.params(self.encoder)
            self._encoder_costs[input_shape] = (
                counts["trainable"],
                counts["non_trainable"],
                profile.madds(self.encoder, input_shape),
                self._sizes(input_shape),
            )
        trainable, non_trainable, madds, sizes = self._encoder_costs[input_shape]
        for use in self.uses(values):
            if use.inference:
                t, n, m = self._layer_cost(use, self._size_at(sizes, use.stride))
                trainable, non_trainable, madds = trainable + t, non_trainable + n, madds + m
        return {
            "params": {
                "trainable": trainable,
                "non_trainable": non_trainable,
                "total": trainable + non_trainable,
            },
            "madds": int(madds),
        }


__all__ = ["Supernet", "Use", "choice_layers", "resolve"]
