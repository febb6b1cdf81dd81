"""Where a supernet step's time goes: forward, gradients and optimizer, supernet vs standalone.

A search in the supernet traces nothing after its first trial, yet its epochs take about as
long as a standalone trial's (benchmarks/RESULTS.md, issue 10). This splits one training
step of the demo's decoder (`AuxCellSpace(num_classes=4, width=16, alpha=0.35)`, 48x48
images, batch 16, random genotype `random_values(3)`) on cached encoder features into

- `forward`: the decoder in training mode;
- `forward+gradients`: plus the gradients of the proxy loss (segmentation loss of every
  output) with respect to every trainable variable, flattened into one vector as the
  optimizer takes them (only their sum is fetched: fetching thousands of gradient tensors
  would time the fetch);
- `full step`: plus the `ParameterGroup` Adam update with Polyak averaging (as stage 1);
- `full step, 8 per call`: the same step 8 times in a `tf.range` loop inside one call (what
  Keras' `steps_per_execution=8` does), per step: what the per-call cost of a function with
  thousands of captured variables comes to;

for the standalone decoder of the genotype and for the supernet with the genotype
selected. Each is a `tf.function` traced once, then called 15 times, the two models' calls
interleaved so that a change in the machine's load falls on both (median, outputs fetched).
Run it pinned to one core. Writes `benchmarks/results/supernet_step.json`.

    taskset -c 1 .venv/bin/python benchmarks/bench_supernet_step.py
"""

import argparse
import datetime
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfnas.spaces import AuxCellSpace  # noqa: E402
from tfnas.tasks.segmentation import segmentation_loss  # noqa: E402
from tfnas.training.polyak import ParameterGroup, make_optimizer  # noqa: E402

CALLS = 15
#: Steps per call of the `full step, 8 per call` part.
STEPS_PER_CALL = 8


def _fetch(result):
    tf.nest.map_structure(lambda a: None if a is None else a.numpy(), result)


def step_functions(decoder, features, masks):
    """(counts, [(part name, traced function, steps per call)]) of the step parts for `decoder`."""
    variables = decoder.trainable_variables
    group = ParameterGroup(make_optimizer("adam", 3e-3, 0.9), variables)

    def loss_of(outputs):
        return tf.add_n([segmentation_loss(masks, v) for v in outputs.values()])

    @tf.function
    def forward(f):
        return decoder(f, training=True)["logits"]

    @tf.function
    def gradients(f):
        with tf.GradientTape() as tape:
            loss = loss_of(decoder(f, training=True))
        grads = tape.gradient(loss, variables)
        flat = tf.concat(
            [tf.zeros([s]) if g is None else tf.reshape(g, [-1]) for g, s in zip(grads, group.sizes)], 0
        )
        return tf.reduce_sum(flat)

    def one_step(f):
        with tf.GradientTape() as tape:
            loss = loss_of(decoder(f, training=True))
        group.apply(tape.gradient(loss, variables))
        return loss

    step = tf.function(one_step)

    @tf.function
    def steps(f):
        total = tf.constant(0.0)
        for _ in tf.range(STEPS_PER_CALL):
            total += one_step(f)
        return total

    counts = {
        "trainable_variables": len(variables),
        "parameters": int(sum(np.prod(v.shape) for v in variables)),
    }
    timed = [
        ("forward", forward, 1),
        ("forward+gradients", gradients, 1),
        ("full step", step, 1),
        (f"full step, {STEPS_PER_CALL} per call", steps, STEPS_PER_CALL),
    ]
    return counts, timed


def measure(variants, features):
    """Per variant and part: the first call's seconds and the median of `CALLS` calls, in ms.

    The calls are interleaved (one call of every variant's part per round), so that a
    change in the machine's load falls on every variant alike.
    """
    results, times = {}, {}
    for name, (counts, timed) in variants.items():
        results[name] = dict(counts)
        for part, function, _ in timed:
            start = time.perf_counter()
            _fetch(function(features))
            results[name][part] = {"first_call_s": time.perf_counter() - start}
            times[name, part] = []
            print(f"  {name}: {part}: first call {results[name][part]['first_call_s']:.1f} s", flush=True)
    for _ in range(CALLS):
        for name, (_, timed) in variants.items():
            for part, function, per_call in timed:
                start = time.perf_counter()
                _fetch(function(features))
                times[name, part].append((time.perf_counter() - start) / per_call)
    for (name, part), values in times.items():
        results[name][part]["median_ms"] = 1000 * statistics.median(values)
        print(f"  {name}: {part}: median {results[name][part]['median_ms']:.1f} ms", flush=True)
    return results


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--output", default=os.path.join(os.path.dirname(__file__), "results", "supernet_step.json")
    )
    args = parser.parse_args(argv)
    space = AuxCellSpace(num_classes=4, width=16, alpha=0.35)
    values = space.random_values(3)
    supernet = space.build_supernet()
    supernet.prepare(values, seed=1)
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (16, 48, 48, 3)).astype("float32")
    features = [tf.constant(f) for f in supernet.encoder(images)]
    masks = tf.constant(rng.integers(0, 4, (16, 48, 48)), tf.int32)
    standalone = space.decoder_from_genotype_values(values, space.feature_specs(supernet.encoder))
    result = {
        "date": datetime.date.today().isoformat(),
        "affinity": sorted(os.sched_getaffinity(0)),
        "genotype": space.genotype(values),
    }
    variants = (("standalone", standalone), ("supernet", supernet.decoder))
    result.update(
        measure(
            {name: step_functions(decoder, features, masks) for name, decoder in variants},
            features,
        )
    )
    parts = ("forward", "forward+gradients", "full step", f"full step, {STEPS_PER_CALL} per call")
    result["ratio_supernet_to_standalone"] = {
        part: result["supernet"][part]["median_ms"] / result["standalone"][part]["median_ms"]
        for part in parts
    }
    with open(args.output, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result["ratio_supernet_to_standalone"], indent=1))


if __name__ == "__main__":
    main()
