"""A one-shot search step through `Choice`'s weighted mode, against the dense sum it replaced.

`FabricSupernet` mixes each edge's nine ops and each cell's macro inputs through
`tfnas.choice.Choice` in weighted mode: `weighted_sum` computes a candidate only where its
weight is not zero (Dyn-EGS weights are 0/1 forward, so an edge computes its 1-2 kept ops), and
inside a traced step every choice of one family (equal candidates: the edges of one row width)
calls one shared out-of-line function. Before, the supernet summed all nine ops times their
weights in place. Three ways to run the same supernet, side by side in one process:

- `choice_shared`: the default (`tracing="shared"`, zero weights skipped);
- `choice_inline`: `Choice(tracing="inline")`, the same skipping built in place per choice;
- `dense_inline`: how the supernet mixed before: every candidate computed, weighted and
  summed in place (this script swaps `tfnas.choice.weighted_sum` for that sum and traces
  inline; nothing in the library computes it any more).

Each variant traces the step of `SupernetSearch` reduced to what costs (Dyn-EGS sample, forward
in training mode, heatmap MSE on every head, gradients of the weights and of {alpha, beta, m}),
with fresh shared functions (`trace_s`: `get_concrete_function`; `first_call_s`: Grappler and
the first step), then `--steps` calls of each, the variants alternated so that machine noise
falls on all (`step_s`: median). The ratios are the figures; absolute times depend on the
shared machine.

Writes `benchmarks/results/oneshot_step.json`.

    taskset -c 0 .venv/bin/python benchmarks/bench_oneshot_step.py              # 3x4 fabric, width 16, 64x64
    taskset -c 0 .venv/bin/python benchmarks/bench_oneshot_step.py --no-inline  # leave out choice_inline
"""

import argparse
import datetime
import json
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

import tfnas.choice as choice_module  # noqa: E402
from tfnas.choice import Choice  # noqa: E402
from tfnas.oneshot import ArchitectureParameters, FabricSupernet  # noqa: E402
from tfnas.spaces.fabric import FabricSpace  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))


def dense_weighted_sum(branches, mixture):
    """The supernet's mixing before `Choice`: every candidate computed, `sum_k w_k * candidate_k`."""
    out = mixture[0] * branches[0]()
    for k in range(1, len(branches)):
        out = out + mixture[k] * branches[k]()
    return out


#: variant -> (`Choice.tracing`, the weighted sum used)
VARIANTS = {
    "choice_shared": ("shared", choice_module.weighted_sum),
    "choice_inline": ("inline", choice_module.weighted_sum),
    "dense_inline": ("inline", dense_weighted_sum),
}


def make_step(net, params, seed):
    weights = net.trainable_variables

    @tf.function
    def step(images, targets):
        with tf.GradientTape() as tape:
            ops, inputs = params.sample(1.0, seed=seed)
            outputs = net(images, ops, inputs, training=True)
            loss = tf.add_n([tf.reduce_mean(tf.square(y - targets)) for y in outputs.values()])
        return loss, tape.gradient(loss, weights + params.variables)

    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=3)
    parser.add_argument("--columns", type=int, default=4)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--no-inline", action="store_true", help="leave out choice_inline (minutes to trace)")
    parser.add_argument("--out", default=os.path.join(HERE, "results", "oneshot_step.json"))
    args = parser.parse_args()
    variants = {k: v for k, v in VARIANTS.items() if not (args.no_inline and k == "choice_inline")}
    eel = (args.columns // 2,) if args.columns > 2 else ()
    space = FabricSpace(num_joints=4, rows=args.rows, columns=args.columns, width=args.width, eel_columns=eel)
    keras.utils.set_random_seed(0)
    net = FabricSupernet(space)
    params = ArchitectureParameters(space)
    images = tf.random.uniform((args.batch, args.size, args.size, 3), seed=1)
    targets = tf.random.uniform((args.batch, args.size // 4, args.size // 4, 2 * space.num_joints), seed=2)
    net(images[:1], *params.sample(1.0, seed=0))  # builds every layer
    choices = [layer for layer in net._flatten_layers() if isinstance(layer, Choice)]
    kept = params.sample(1.0, seed=3)[0]

    results, steps = {}, {}
    library_sum = choice_module.weighted_sum
    try:
        for name, (tracing, weighted_sum) in variants.items():
            choice_module._PROGRAMS.clear()  # fresh shared functions: each variant pays its tracing
            for choice in choices:
                choice.tracing, choice._program = tracing, None
            choice_module.weighted_sum = weighted_sum
            step = make_step(net, params, keras.random.SeedGenerator(0))
            start = time.perf_counter()
            step.get_concrete_function(images, targets)
            traced = time.perf_counter() - start
            start = time.perf_counter()
            float(step(images, targets)[0])
            first = time.perf_counter() - start
            steps[name] = step
            results[name] = {"trace_s": traced, "first_call_s": first, "times": []}
            print(f"{name}: traced in {traced:.1f} s, first call {first:.1f} s", flush=True)
    finally:
        choice_module.weighted_sum = library_sum
    for _ in range(args.steps):
        for name, step in steps.items():
            start = time.perf_counter()
            float(step(images, targets)[0])
            results[name]["times"].append(time.perf_counter() - start)
    for name, r in results.items():
        r["step_s"] = statistics.median(r.pop("times"))
        print(f"{name}: {r['step_s']:.3f} s per step (median of {args.steps})", flush=True)
    base = results["choice_shared"]
    ratios = {
        f"{name}_over_choice_shared": {
            "start_s": (r["trace_s"] + r["first_call_s"]) / (base["trace_s"] + base["first_call_s"]),
            "step_s": r["step_s"] / base["step_s"],
        }
        for name, r in results.items()
        if name != "choice_shared"
    }
    for name, ratio in ratios.items():
        print(f"{name}: start x{ratio['start_s']:.2f}, step x{ratio['step_s']:.2f}")
    record = {
        "date": datetime.date.today().isoformat(),
        "machine": platform.platform(),
        "cpus": len(os.sched_getaffinity(0)),
        "space": {
            "rows": space.rows,
            "columns": space.columns,
            "width": space.width,
            "cells": len(space.cells),
        },
        "image_size": args.size,
        "batch": args.batch,
        "steps": args.steps,
        "ops_kept_per_edge": float(tf.reduce_mean(tf.reduce_sum(tf.cast(kept > 0, tf.float32), -1))),
        "choices": len(choices),
        "results": results,
        "ratios": ratios,
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(record, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
