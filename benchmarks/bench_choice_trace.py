"""One-off cost of a supernet training step: `Choice(tracing="inline")` vs `"shared"`.

Tracing a training step through a supernet of `Choice` layers built each `tf.switch_case`
in place: every branch takes every other branch's captured variables, the Case gradient
makes every branch output every other branch's intermediates, and Grappler optimises the
resulting graph on the first call. `tfnas.choice` now calls one out-of-line `tf.function`
per family of choices with equal candidates (`tracing="shared"`, the default; see its module
docstring). Side by side in one run, the same layer and data through both paths (`tracing`
set on every `Choice`):

1. `cell`: one `SuperAuxCell` (filters 16, input 4x12x12x16), the cell of the published
   `arch0` selected; loss `sum(y^2)`.
2. `supernet`: the auxiliary-cell supernet decoder at the demo's size
   (`AuxCellSpace(num_classes=4, width=16, alpha=0.35)`, 48x48 images, batch 16, features
   from `supernet.encoder`), `arch0` selected; loss: segmentation loss of every output
   (as in `bench_supernet.py`). `--no-aux-cells` drops the three auxiliary cells.

For each path, one after the other, a fresh model (the same initial weights) and a fresh
training step (forward in training mode under a `tf.GradientTape`, gradients of every
trainable variable; no optimizer update): traced with `get_concrete_function` (`trace_s`),
called once (`first_call_s`: graph optimisation, function instantiation and the step), then
`STEADY_CALLS` times more (`step_s`: the median). The model is freed before the next path,
so no traced function (of a choice family, or of a cell configuration) carries over; the
shared path runs first, so process warm-up counts against it. `graph_ops` counts the ops of
the traced step (`outer`) and with those of its function library (`total`: Case branches
and shared functions). `difference` compares the first calls: loss, every gradient, and
every non-trainable variable (batch-norm moving statistics) after the step, as max absolute
and max relative (to the largest magnitude of that tensor) differences.

Writes `benchmarks/results/choice_trace.json`. (Its `runs` with `cell_sharing: true` were
measured at commit b411066, which also shared one traced function per `SuperAuxCell`
configuration; that was removed because the choices' sharing made it redundant.)

    taskset -c 0 .venv/bin/python benchmarks/bench_choice_trace.py
    taskset -c 0 .venv/bin/python benchmarks/bench_choice_trace.py --no-aux-cells --parts supernet
"""

import argparse
import datetime
import gc
import json
import os
import platform
import statistics
import time
import weakref

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfnas.cells.auxcell import SuperAuxCell  # noqa: E402
from tfnas.spaces import AuxCellSpace  # noqa: E402
from tfnas.supernet import choice_layers  # noqa: E402
from tfnas.tasks.segmentation import segmentation_loss  # noqa: E402

DEMO = dict(num_classes=4, width=16, alpha=0.35)
IMAGE = (48, 48, 3)
BATCH = 16
CELL_FILTERS = 16
CELL_INPUT = (4, 12, 12, CELL_FILTERS)
STEADY_CALLS = 20
PATHS = ("shared", "inline")  # the new path first: warm-up costs count against it
ARCH = AuxCellSpace.PUBLISHED["arch0"]


def log(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def timed(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def graph_ops(concrete):
    """Ops of a traced graph: its own, and with every function of its library."""
    graph_def = concrete.graph.as_graph_def()
    library = sum(len(f.node_def) for f in graph_def.library.function)
    return {"outer": len(graph_def.node), "total": len(graph_def.node) + library}


def make_step(model, loss_fn):
    variables = model.trainable_variables

    @tf.function
    def step(*args):
        with tf.GradientTape() as tape:
            loss = loss_fn(model, *args)
        return loss, tape.gradient(loss, variables)

    return step


def measure(build, initial, tracing):
    """A fresh model and training step through `tracing`: trace, first call, steady calls.

    Returns the record, what the first call computed, and a weak reference to the model
    (dead once it is freed: functions shared per configuration then go with it).
    """
    model, loss_fn, args = build()
    model.set_weights(initial)
    for choice in choice_layers(model).values():
        choice.tracing = tracing
    step = make_step(model, loss_fn)
    log(f"  {tracing}: tracing the training step")
    trace_s, concrete = timed(lambda: step.get_concrete_function(*args))
    ops = graph_ops(concrete)
    log(
        f"  {tracing}: traced in {trace_s:.2f} s, {ops['outer']} ops ({ops['total']} with the library); first call"
    )
    first_s, (loss, grads) = timed(lambda: step(*args))
    computed = {
        "loss": float(loss),
        "gradients": [g.numpy() for g in grads],
        "non_trainable": [v.numpy() for v in model.non_trainable_variables],
    }
    log(f"  {tracing}: first call {first_s:.2f} s; {STEADY_CALLS} steady calls")
    times = []
    for _ in range(STEADY_CALLS):
        seconds, (loss, _) = timed(lambda: step(*args))
        float(loss)
        times.append(seconds)
    record = {
        "trace_s": round(trace_s, 3),
        "first_call_s": round(first_s, 3),
        "step_s": round(statistics.median(times), 5),
        "graph_ops": ops,
        "tracing_count": int(step.experimental_get_tracing_count()),
    }
    log(f"  {tracing}: steady step {record['step_s'] * 1e3:.1f} ms (median)")
    return record, computed, weakref.ref(model)


def difference(a, b):
    """Max absolute and relative differences between the two paths' first calls."""

    def worst(pairs):
        absolute = relative = 0.0
        for x, y in pairs:
            delta = float(np.max(np.abs(x - y))) if x.size else 0.0
            scale = float(np.max(np.abs(x))) if x.size else 0.0
            absolute = max(absolute, delta)
            relative = max(relative, delta / scale if scale > 0 else (0.0 if delta == 0 else float("inf")))
        return absolute, relative

    loss_abs = abs(a["loss"] - b["loss"])
    grad_abs, grad_rel = worst(zip(a["gradients"], b["gradients"]))
    stat_abs, stat_rel = worst(zip(a["non_trainable"], b["non_trainable"]))
    return {
        "loss_abs": loss_abs,
        "loss_rel": loss_abs / max(abs(a["loss"]), 1e-30),
        "gradients": len(a["gradients"]),
        "gradient_abs": grad_abs,
        "gradient_rel": grad_rel,
        "non_trainable_variables": len(a["non_trainable"]),
        "non_trainable_abs": stat_abs,
        "non_trainable_rel": stat_rel,
        "non_trainable_identical": all(
            np.array_equal(x, y) for x, y in zip(a["non_trainable"], b["non_trainable"])
        ),
    }


def compare(name, build, paths):
    """Each path on a fresh model from the same initial weights, one after the other."""
    model, _, _ = build()
    initial = model.get_weights()
    del model
    records, computed = {}, {}
    for tracing in paths:
        records[tracing], computed[tracing], model = measure(build, initial, tracing)
        gc.collect()
        if model() is not None:
            raise RuntimeError(
                f"the {tracing} model outlived its measurement; the next path could reuse its traces"
            )
    entry = {"paths": records}
    if len(paths) == 2:
        shared, inline = records["shared"], records["inline"]
        ratios = {key: round(inline[key] / shared[key], 2) for key in ("trace_s", "first_call_s", "step_s")}
        ratios["graph_ops_total"] = round(inline["graph_ops"]["total"] / shared["graph_ops"]["total"], 2)
        entry["ratio_inline_over_shared"] = ratios
        entry["difference"] = difference(computed["inline"], computed["shared"])
        log(f"{name}: inline/shared ratios {ratios}")
        log(f"{name}: differences {entry['difference']}")
    return entry


def cell_part(paths):
    log("cell: one SuperAuxCell")
    x = tf.random.stateless_normal(CELL_INPUT, seed=(0, 1))

    def loss_fn(model, x):
        y = model(x, training=True)
        return tf.reduce_sum(y * y)

    def build():
        inputs = keras.Input(CELL_INPUT[1:])
        model = keras.Model(inputs, SuperAuxCell(CELL_FILTERS, name="cell")(inputs))
        choices = choice_layers(model)
        for path, index in SuperAuxCell.selection(ARCH[1], prefix="cell/").items():
            choices[path].index.assign(index)
        return model, loss_fn, (x,)

    keras.utils.set_random_seed(0)
    model, _, _ = build()
    entry = {
        "choices": len(choice_layers(model)),
        "input": list(CELL_INPUT),
        "trainable_variables": len(model.trainable_variables),
    }
    del model
    entry.update(compare("cell", build, paths))
    return entry


def supernet_part(aux_cells, paths):
    log(f"supernet: the auxiliary-cell supernet (aux_cells={aux_cells})")
    keras.utils.set_random_seed(0)
    space = AuxCellSpace(**DEMO, aux_cells=aux_cells)
    encoder = space.build_encoder()
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (BATCH, *IMAGE)).astype("float32")
    labels = tf.constant(rng.integers(0, DEMO["num_classes"], (BATCH, *IMAGE[:2])), tf.int32)
    features = [tf.constant(f) for f in encoder(images)]
    values = space.values(ARCH)
    sizes = {}

    def loss_fn(model, labels, *features):
        outputs = model(list(features), training=True)
        return tf.add_n([segmentation_loss(labels, logits) for logits in outputs.values()])

    def build():
        supernet = space.build_supernet(encoder)
        supernet.select(values)
        sizes.update(
            choices=len(supernet.choices), trainable_variables=len(supernet.decoder.trainable_variables)
        )
        return supernet.decoder, loss_fn, (labels, *features)

    entry = compare("supernet", build, paths)
    entry.update(
        sizes,
        aux_cells=aux_cells,
        images=[BATCH, *IMAGE],
        features=[list(f.shape) for f in features],
    )
    return entry


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", default=["cell", "supernet"], choices=["cell", "supernet"])
    parser.add_argument("--paths", nargs="+", default=list(PATHS), choices=list(PATHS))
    parser.add_argument("--no-aux-cells", dest="aux_cells", action="store_false")
    parser.add_argument(
        "--out", default=os.path.join(os.path.dirname(__file__), "results", "choice_trace.json")
    )
    args = parser.parse_args()
    report = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {
            "platform": platform.platform(),
            "cpus_allowed": len(os.sched_getaffinity(0)),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        },
        "steady_calls": STEADY_CALLS,
        "arch": ARCH,
        "runs": [],
    }
    run = {"cell_sharing": False}
    if "cell" in args.parts:
        run["cell"] = cell_part(args.paths)
    if "supernet" in args.parts:
        run["supernet"] = supernet_part(args.aux_cells, args.paths)
    report["runs"].append(run)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2)
    log(f"wrote {args.out}")


if __name__ == "__main__":
    main()
