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

How the index mode is traced (`tracing="shared"`, the default). A `tf.switch_case` built in
place is large: every branch takes a placeholder for each variable that any other branch
reads, and the Case gradient makes every branch output what any branch's gradient needs. For
the 17 choices of one `SuperAuxCell` that is ~23,000 graph ops (13 s to trace a training step,
8 s more for Grappler on the first call); for the auxiliary-cell supernet ~267,000 (about three
minutes each; `benchmarks/bench_choice_trace.py`, `benchmarks/results/choice_trace.json`).
But the 7 op choices of a cell, and those of every cell of a supernet, have the same
candidates. So inside a traced function (`tf.inside_function()`) the index mode calls one
`tf.function` per *family* of choices (candidates of the same classes, configurations and
variable shapes; the same routes), traced once per input signature and `training` value on
the family's calling choice as prototype, and kept out of line (`_noinline`: Grappler
optimises it and TensorFlow instantiates it once, not once per call site). Its arguments are
the choice's index, its inputs and its candidates' variables, which TensorFlow traces by shape
and dtype, not identity: in branch k, candidate k of the prototype runs in a
`keras.StatelessScope` mapping its variables to the ones passed in, and what the call
assigns there (batch-norm moving statistics, seed states) is assigned to those variables,
once. Gradients are TensorFlow's own, built once per family, and reach the variables passed
in. Only the chosen candidate runs, as before; outputs, gradients and state updates are
those of the inline Case up to float rounding (Grappler fuses differently across a function
boundary: <= 2e-6 relative in the benchmark, batch-norm statistics identical), and a step
takes about as long. The supernet's step then traces in 7-8 s, and its first call takes 13-17 s.
The weighted mode goes through the same family function (`weighted_sum` in place of the
Case), which is what makes the one-shot fabric supernet's step trace in a fraction of the
time its nine ops per edge would take inline (`benchmarks/bench_oneshot_step.py`).
`tracing="inline"` builds the Case (or the weighted sum) in place (the old behaviour), as do
eager calls, mixed-precision policies and calls inside another `keras.StatelessScope`.
A family must compute the same function of its variables: a candidate whose computation
depends on something its `get_config` leaves out must not sit in two choices whose
candidates' configurations are equal. (A custom gradient that re-runs the chosen candidate in
the backward pass, with the Case still built per choice, was tried first: it traced no faster,
since building the forward Case alone costs about as much as its gradient.)

    >>> choice = Choice([ConvBN(8, 1), SepConv(8, 3), Identity()])
    >>> choice.index.assign(1)   # runs SepConv only
    >>> y = choice(x)
"""

import json
import weakref

import keras
import tensorflow as tf

_PACKAGE = "tfnas"

#: Values of `Choice(tracing=...)`, see the module docstring.
TRACINGS = ("shared", "inline")

#: family key -> `_Program`; an entry lives while a choice of the family refers to it.
_PROGRAMS = weakref.WeakValueDictionary()


def _merge_shapes(shapes):
    """One shape for several: a dimension that differs between them becomes None."""
    first = tuple(shapes[0])
    for shape in shapes[1:]:
        if len(shape) != len(first):
            raise ValueError(f"choice candidates give outputs of different ranks: {shapes}")
    return tuple(d if all(s[i] == d for s in shapes) else None for i, d in enumerate(first))


def _variable_specs(variables):
    return tuple((tuple(v.shape), str(v.dtype), bool(v.trainable)) for v in variables)


def _family(choice):
    """What the index mode of `choice` computes from its arguments, as a hashable key."""
    if choice.candidates is None:
        return ("inputs",)
    key = [None if choice.routes is None else tuple(choice.routes)]
    for candidate in choice.candidates:
        try:
            config = dict(candidate.get_config())
        except NotImplementedError:
            return ("unshared", id(choice))  # a program of its own: traced once, not shared
        config.pop("name", None)
        key.append(
            (
                type(candidate).__module__,
                type(candidate).__qualname__,
                json.dumps(config, sort_keys=True, default=str),
                _variable_specs(candidate.variables),
            )
        )
    return tuple(key)


class _Program:
    """The index mode of a family of choices as one out-of-line `tf.function`.

    `prototype` is the first choice of the family that called it: its candidates are
    traced, on the variables passed in. It is held for as long as the program lives (while
    any choice of the family does): TensorFlow records the variables a traced graph
    touched, the prototype's among them though the graph never reads them, and refuses to
    call a function whose recorded variables were deleted. Holding the prototype is what
    lets a supernet built later keep using the program after the first one is freed.
    """

    def __init__(self):
        self.prototype = None
        options = dict(autograph=False, reduce_retracing=True, experimental_attributes={"_noinline": True})
        self.function = tf.function(self._case, **options)
        self.weighted = tf.function(self._weighted, **options)

    def _case(self, index, flat, variables, structure, training):
        """The index mode: `tf.switch_case` on the index."""
        return tf.switch_case(index, self._branches(flat, variables, structure, training))

    def _weighted(self, mixture, flat, variables, structure, training):
        """The weighted mode: `weighted_sum` of the candidates."""
        return weighted_sum(self._branches(flat, variables, structure, training), mixture)

    def _branches(self, flat, variables, structure, training):
        """One callable per candidate of the prototype, on the variables passed in."""
        choice = self.prototype
        inputs = tf.nest.pack_sequence_as(structure, flat)
        if choice.candidates is None:
            return [lambda x=x: x for x in inputs]
        branches, start = [], 0
        for k, candidate in enumerate(choice.candidates):
            own = candidate.variables
            passed = variables[start : start + len(own)]
            start += len(own)
            branches.append(
                lambda k=k, own=own, passed=passed: self._branch(choice, k, inputs, training, own, passed)
            )
        return branches

    @staticmethod
    def _branch(choice, k, inputs, training, own, passed):
        """Candidate k of the prototype on the variables passed in; its state updates applied."""
        with keras.StatelessScope(list(zip(own, passed))) as scope:
            before = [scope.get_current_value(v) for v in own]
            outputs = choice._run(k, inputs, training)
            after = [scope.get_current_value(v) for v in own]
        for variable, old, new in zip(passed, before, after):
            if new is not old:  # assigned in the call (batch-norm statistics, seed state)
                variable.assign(new)
        return outputs


def weighted_sum(branches, mixture):
    """`sum_k mixture[k] * branches[k]()`, calling a branch only where its weight is not 0.

    The largest weight's branch always runs (its output fixes the shape of the sum); every
    other branch runs, under a `tf.cond`, only where its weight is non-zero. A branch that
    does not run gives no gradient to its weight.

    Args:
        branches: list of callables returning tensors of one shape.
        mixture: float tensor `(len(branches),)`.
    """
    first = tf.argmax(mixture, output_type=tf.int32)
    out = tf.switch_case(first, [lambda k=k, b=b: mixture[k] * b() for k, b in enumerate(branches)])
    for k, branch in enumerate(branches):
        run = tf.logical_and(tf.not_equal(mixture[k], 0.0), tf.not_equal(first, k))
        out = tf.cond(run, lambda k=k, b=branch, acc=out: acc + mixture[k] * b(), lambda acc=out: acc)
    return out


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
        tracing: how the index mode is traced in a `tf.function`: "shared" (default), one
            out-of-line function per family of choices with equal candidates, or "inline",
            the `tf.switch_case` built in place (same values; far larger graphs, slow to
            trace and to optimise on the first call). See the module docstring.
        **kwargs: `keras.layers.Layer` arguments (`name`, ...).

    Attributes:
        index: non-trainable int32 scalar variable, the chosen candidate (default 0).
        tracing: the `tracing` argument; it may be reassigned, and is read when a function
            calling the choice is traced.

    Input shape: what the candidates take (a list when `candidates` is None or `routes` is
    set). Output shape: the candidates' output shape; a dimension on which candidates differ
    is None (a choice among inputs at several resolutions).

    Raises:
        ValueError: for no candidates, `routes` of the wrong length, or an unknown `tracing`.
    """

    def __init__(self, candidates=None, routes=None, tracing="shared", **kwargs):
        super().__init__(**kwargs)
        if tracing not in TRACINGS:
            raise ValueError(f"choice {self.name!r} gets tracing={tracing!r}; expected one of {TRACINGS}")
        self.tracing = tracing
        self._program = None  # the family's `_Program`, held while this choice lives
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

    def _run(self, k, inputs, training):
        """Candidate k on the choice's (whole) input."""
        return self.candidates[k](self._candidate_input(inputs, k), training=training)

    def _branches(self, inputs, training):
        if self.candidates is None:
            return [lambda x=x: x for x in inputs]
        return [lambda k=k: self._run(k, inputs, training) for k in range(len(self.candidates))]

    def _shared_call(self, inputs, training, mixture=None):
        """The index (or weighted) mode through the family's traced function; None where it cannot be used."""
        layers = [self, *(self.candidates or [])]
        if any(layer.compute_dtype != layer.variable_dtype for layer in layers):
            return None  # mixed precision: values would be read autocast
        variables = [v.value for c in self.candidates or [] for v in c.variables]
        if not all(isinstance(variable, tf.Variable) for variable in variables):
            return None  # inside another StatelessScope: values, not variables
        key = _family(self)
        program = _PROGRAMS.get(key)
        if program is None:
            program = _PROGRAMS[key] = _Program()
        self._program = program
        if program.prototype is None:
            program.prototype = self
        structure = tf.nest.map_structure(lambda _: 0, inputs)
        if mixture is not None:
            return program.weighted(mixture, tf.nest.flatten(inputs), variables, structure, training)
        return program.function(
            tf.convert_to_tensor(self.index), tf.nest.flatten(inputs), variables, structure, training
        )

    def call(self, inputs, training=None, mixture=None):
        """Runs the chosen candidate, or mixes them.

        Args:
            inputs: a tensor, or a list of tensors (choice among inputs, or `routes`).
            training: bool, passed to the candidates (batch normalisation).
            mixture: optional float tensor `(num_candidates,)`: weighted mode, see the module
                docstring. Default None: index mode.
        """
        branches = self._branches(inputs, training)
        if mixture is None and len(branches) == 1:
            return branches[0]()
        if mixture is not None:
            mixture = tf.cast(tf.convert_to_tensor(mixture), self.compute_dtype)
        if self.tracing == "shared" and tf.inside_function():
            outputs = self._shared_call(inputs, training, mixture)
            if outputs is not None:
                return outputs
        if mixture is None:
            return tf.switch_case(tf.convert_to_tensor(self.index), branches)
        return weighted_sum(branches, mixture)

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
        config = {**super().get_config(), "candidates": candidates, "routes": self.routes}
        if self.tracing != "shared":  # the default stays out: configurations read as before
            config["tracing"] = self.tracing
        return config

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


__all__ = ["Choice", "Take", "ZerosLike", "weighted_sum"]
