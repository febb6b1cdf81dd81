"""One traced function for all layers of one configuration: how a supernet traces quickly (issue 10).

A supernet holds every candidate of every decision, so its training step is a large graph:
one CVPR 2019 `SuperAuxCell` (77 candidate ops) is about 23,000 graph ops once its gradient
is built, which took 12-16 s to trace and as long again for TensorFlow to optimise and
instantiate on the first call (benchmarks/RESULTS.md). The auxiliary-cell supernet has nine
such cells, all of the same configuration and differing only in their weights, so tracing
each of them separately repeats the same work nine times, in every step function.

`call_shared(layer, body, inputs, training)` traces `body(layer, inputs, training)` once per configuration
and training flag as a `tf.function` whose arguments are the layer's *variables*: every layer
of that configuration then calls the same traced function with its own variables (reads,
batch-norm updates and gradients go to the variables passed in). TensorFlow traces a
function with variable arguments by their shapes and dtypes, not their identity, so nine
cells cost one trace, and the step functions of both proxy stages and of validation reuse
it. The function is kept out of line (`_noinline`): inlined, Grappler would optimise a copy
per call site, and the first call would cost as much as before. Measured with three and
six cells in one step: 16 s and 18 s to trace, 25 s and 28 s for the first call, against
41 s and 46 s for three separately traced cells; a step runs about 10 % slower, since
TensorFlow optimises across the call boundary no more.

How the layer computes with another layer's variables: while the shared function is being
traced, the variables of a *prototype* (the first layer of the configuration that was
called) have their TensorFlow variable (`keras.Variable._value`, Keras' TensorFlow backend)
swapped for the function's variable arguments, and the computation runs on the prototype;
the swap is undone when tracing ends. Keras has no public way to run a layer on other variables that
keeps state updates inside control flow (`stateless_call` returns the updates instead,
which cannot leave the branches of a `tf.switch_case`), hence this. Eagerly (nothing to
trace) the layer runs as usual.
"""

import json
import weakref

import tensorflow as tf

#: (class, configuration, training) -> prototype layer; an entry goes with its prototype.
_PROTOTYPES = weakref.WeakValueDictionary()


def _key(layer, body, training):
    config = layer.get_config()
    config.pop("name", None)
    config.pop("trainable", None)
    return type(layer), body.__qualname__, json.dumps(config, sort_keys=True, default=str), bool(training)


def _tensorflow_variables(layer):
    variables = []
    for variable in layer.variables:
        value = getattr(variable, "_value", None)
        if not isinstance(value, tf.Variable):
            raise TypeError(
                f"shared tracing needs Keras' TensorFlow backend; variable {variable.path!r} "
                f"of layer {layer.name!r} holds {type(value).__name__}"
            )
        variables.append(value)
    return variables


def _shared_function(prototype, body, training):
    """`body` on the prototype as a `tf.function` of (its variables' stand-ins, inputs)."""
    own = list(prototype.variables)

    def run(variables, inputs):
        saved = [v._value for v in own]
        try:
            for variable, stand_in in zip(own, variables):
                variable._value = stand_in
            return body(prototype, inputs, training=training)
        finally:
            for variable, value in zip(own, saved):
                variable._value = value

    return tf.function(
        run, autograph=False, reduce_retracing=True, experimental_attributes={"_noinline": True}
    )


def call_shared(layer, body, inputs, training=None):
    """`body(layer, inputs, training)` through the traced function its configuration shares.

    Args:
        layer: a built Keras layer whose `get_config()` determines its variables (their
            number, order, shapes) and computation; layers with equal configurations share.
        body: the computation, a function `(layer, inputs, training=...) -> outputs` (the
            layer's own call, e.g. `SuperAuxCell.forward`); it must not call `call_shared`
            for the same layer.
        inputs: the layer's inputs.
        training: bool, Python value (a separate function per value).

    Returns:
        What `body(layer, inputs, training=training)` returns.
    """
    if not tf.inside_function():
        return body(layer, inputs, training=training)
    key = _key(layer, body, training)
    prototype = _PROTOTYPES.get(key)
    if prototype is None:
        prototype = _PROTOTYPES[key] = layer
    # Kept on the prototype (a cycle through the function's closure, freed with it by gc),
    # not in a module-level dict whose values would keep every prototype alive.
    functions = prototype.__dict__.setdefault("_shared_functions", {})
    if key not in functions:
        functions[key] = _shared_function(prototype, body, bool(training))
    return functions[key](_tensorflow_variables(layer), inputs)


def traces(layer, body, training):
    """How many times the function shared by `layer`'s configuration was traced (0: none yet)."""
    key = _key(layer, body, training)
    prototype = _PROTOTYPES.get(key)
    function = None if prototype is None else prototype.__dict__.get("_shared_functions", {}).get(key)
    return 0 if function is None else function.experimental_get_tracing_count()


__all__ = ["call_shared", "traces"]
