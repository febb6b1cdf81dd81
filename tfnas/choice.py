"""A choice among candidate ops or inputs as one Keras layer: the building block of the supernets.

A supernet (`tfnas.supernet`) holds every decision of a search space as a `Choice` layer, so
one traced graph serves every architecture: the architecture is the value of the choices'
indices, not the structure of the graph.

Two modes, one layer:

- **index mode** (default): `tf.switch_case` on the layer's `index` runs only the chosen
  candidate, so a trial costs the compute of its standalone architecture (tfnas's random and
  PPO searches, issue 10).
- **weighted mode** (`call(..., mixture=w)`): the sum of `w[k] * candidate_k(x)` over the
  candidates, each candidate skipped (not computed) where `w[k]` is exactly 0. This is the
  mixed op of one-shot searches: DARTS-style soft weights, or the 3M-Pose thesis' Gumbel-softmax
  weights restricted to the top-k candidates by Dyn-EGS with straight-through gradients
  (`hard - stop_gradient(soft) + soft`; 3M-POSE.md sections 6-7). A skipped candidate
  contributes no gradient to its weight, as in GDAS. Index `i` equals the weighted mode with
  the one-hot `w = e_i` (the layer's tests check it).

Why the index lives in a non-trainable `tf.Variable` owned by the layer, not in a model input:
a `tf.function` that calls the supernet reads the variable's value at run time, so assigning a
new architecture (`Supernet.select`) neither retraces nor changes the model's contract
(features -> dict of logits): the proxy task's training steps, distillation, Polyak averaging
and checkpoints work on a supernet as on a standalone decoder, and a checkpoint records the
selection with the weights. An index input would have to be threaded, with a batch
dimension, through every step, loss and export signature.

    >>> choice = Choice([ConvBN(8, 1), SepConv(8, 3), Identity()])
    >>> choice.index.assign(1)   # runs SepConv only
    >>> y = choice(x)
"""

import keras
import tensorflow as tf

_PACKAGE = "tfnas"


def _merge_shapes(shapes):
    """One shape for several: a dimension that differs between them becomes None."""
    first = tuple(shapes[0])
    for shape in shapes[1:]:
        if len(shape) != len(first):
            raise ValueError(f"choice candidates give outputs of different ranks: {shapes}")
    return tuple(d if all(s[i] == d for s in shapes) else None for i, d in enumerate(first))


def _output_shape(layer, input_shape):
    try:
        return tuple(layer.compute_output_shape(input_shape))
    except NotImplementedError:
        if isinstance(input_shape, list):
            spec = [keras.KerasTensor(s) for s in input_shape]
        else:
            spec = keras.KerasTensor(input_shape)
        return tuple(layer.compute_output_spec(spec).shape)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Choice(keras.layers.Layer):
    """Runs one of its candidates (index mode) or a weighted sum of them (weighted mode).

    Args:
        candidates: list of Keras layers, or None for a choice among the *inputs*: then the
            layer takes a list of tensors and returns `inputs[index]` (weighted mode: the
            weighted sum of the inputs, which must then have one shape).
        routes: optional list of ints, one per candidate: candidate k reads
            `inputs[routes[k]]` of a list input (e.g. candidates that read the backbone
            features and candidates that read an earlier branch). Default None: every
            candidate reads the whole input.
        **kwargs: `keras.layers.Layer` arguments (`name`, ...).

    Attributes:
        index: non-trainable int32 scalar variable, the chosen candidate (default 0).

    Input shape: what the candidates take (a list when `candidates` is None or `routes` is
    set). Output shape: the candidates' output shape; a dimension on which candidates differ
    is None (a choice among inputs at several resolutions).

    Raises:
        ValueError: for no candidates, or `routes` of the wrong length.
    """

    def __init__(self, candidates=None, routes=None, **kwargs):
        super().__init__(**kwargs)
        if candidates is not None and not candidates:
            raise ValueError(
                f"choice {self.name!r} has no candidates; give at least one layer, "
                "or None to choose among the inputs"
            )
        self.candidates = None if candidates is None else list(candidates)
        if routes is not None:
            routes = [int(r) for r in routes]
            if self.candidates is None or len(routes) != len(self.candidates):
                raise ValueError(
                    f"choice {self.name!r} has {len(routes)} routes for "
                    f"{0 if self.candidates is None else len(self.candidates)} "
                    "candidates; give one input index per candidate"
                )
        self.routes = routes
        self._size = None if self.candidates is None else len(self.candidates)
        self.index = self.add_weight(
            shape=(), dtype="int32", initializer="zeros", trainable=False, name="index"
        )

    def num_candidates(self, input_shape=None):
        """How many values `index` may take (for a choice among inputs: the inputs given)."""
        if self.candidates is not None:
            return len(self.candidates)
        if input_shape is None:
            raise ValueError(
                f"choice {self.name!r} chooses among its inputs; their number is "
                "known only from an input shape"
            )
        return len(input_shape)

    def _candidate_input(self, inputs, k):
        return inputs if self.routes is None else inputs[self.routes[k]]

    def build(self, input_shape):
        self._size = self.num_candidates(input_shape)
        for k, candidate in enumerate(self.candidates or []):
            if not candidate.built:
                candidate.build(self._candidate_input(input_shape, k))

    def _branches(self, inputs, training):
        if self.candidates is None:
            return [lambda x=x: x for x in inputs]
        branches = []
        for k, candidate in enumerate(self.candidates):
            x = self._candidate_input(inputs, k)
            branches.append(lambda c=candidate, x=x: c(x, training=training))
        return branches

    def call(self, inputs, training=None, mixture=None):
        """Runs the chosen candidate, or mixes them.

        Args:
            inputs: a tensor, or a list of tensors (choice among inputs, or `routes`).
            training: bool, passed to the candidates (batch normalisation).
            mixture: optional float tensor `(num_candidates,)`: weighted mode, see the module
                docstring. Default None: index mode.
        """
        branches = self._branches(inputs, training)
        if mixture is None:
            if len(branches) == 1:
                return branches[0]()
            return tf.switch_case(tf.convert_to_tensor(self.index), branches)
        mixture = tf.cast(tf.convert_to_tensor(mixture), self.compute_dtype)
        # The largest weight's candidate always runs (its output fixes the shape of the sum);
        # every other candidate runs only where its weight is non-zero.
        first = tf.argmax(mixture, output_type=tf.int32)
        out = tf.switch_case(first, [lambda k=k, b=b: mixture[k] * b() for k, b in enumerate(branches)])
        for k, branch in enumerate(branches):
            run = tf.logical_and(tf.not_equal(mixture[k], 0.0), tf.not_equal(first, k))
            out = tf.cond(run, lambda k=k, b=branch, acc=out: acc + mixture[k] * b(), lambda acc=out: acc)
        return out

    def compute_output_shape(self, input_shape):
        if self.candidates is None:
            return _merge_shapes([tuple(s) for s in input_shape])
        return _merge_shapes(
            [_output_shape(c, self._candidate_input(input_shape, k)) for k, c in enumerate(self.candidates)]
        )

    def get_config(self):
        candidates = (
            None
            if self.candidates is None
            else [keras.saving.serialize_keras_object(c) for c in self.candidates]
        )
        return {**super().get_config(), "candidates": candidates, "routes": self.routes}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if config.get("candidates") is not None:
            config["candidates"] = [keras.saving.deserialize_keras_object(c) for c in config["candidates"]]
        return cls(**config)


@keras.saving.register_keras_serializable(package=_PACKAGE)
class Take(keras.layers.Layer):
    """Returns `inputs[position]` of a list input: the "keep this path" candidate of a choice.

    Args:
        position: int, which input to return. Default 0.
    """

    def __init__(self, position=0, **kwargs):
        super().__init__(**kwargs)
        self.position = int(position)

    def call(self, inputs):
        return inputs[self.position]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[self.position])

    def get_config(self):
        return {**super().get_config(), "position": self.position}


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ZerosLike(keras.layers.Layer):
    """Zeros shaped like `inputs[position]` of a list input (or like a single input).

    The "drop this path" candidate of a choice: a masked input of a sum or of a 1x1 conv
    contributes exactly nothing, so the fixed-shape supernet computes the same function as
    the standalone network that leaves the input out.

    Args:
        position: int or None, which input of a list to take the shape of; None for a single
            tensor input. Default None.
    """

    def __init__(self, position=None, **kwargs):
        super().__init__(**kwargs)
        self.position = None if position is None else int(position)

    def call(self, inputs):
        x = inputs if self.position is None else inputs[self.position]
        return keras.ops.zeros_like(x)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape if self.position is None else input_shape[self.position])

    def get_config(self):
        return {**super().get_config(), "position": self.position}


__all__ = ["Choice", "Take", "ZerosLike"]
