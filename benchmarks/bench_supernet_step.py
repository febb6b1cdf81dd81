"""Where a supernet step's time goes: forward, gradients and optimizer, supernet vs standalone.

A search in the supernet traces nothing after its first trial, yet its epochs take about as
long as a standalone trial's (benchmarks/RESULTS.md, issue 10). This splits one training
step of the demo's decoder (`AuxCellSpace(num_classes=4, width=16, alpha=0.35)`, 48x48
images, batch 16, random genotype `random_values(3)`) on cached encoder features into

- `forward`: the decoder in training mode;
- `forward+gradients`: plus the gradients of the proxy loss (segmentation loss of every
  output) with respect to every trainable variable;
- `full step`: plus the `ParameterGroup` Adam update with Polyak averaging (as stage 1);

for the standalone decoder of the genotype and for the supernet with the genotype
selected, each a `tf.function` traced once, then timed over 15 calls (median, outputs
fetched). Run it pinned to one core; both models are measured in the same process, one
after the other. Writes `benchmarks/results/supernet_step.json`.

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


def _fetch(result):
    tf.nest.map_structure(lambda a: None if a is None else a.numpy(), result)


def measure(decoder, features, masks):
    """First-call and median seconds of the three step parts for `decoder`."""
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
        return tape.gradient(loss, variables)

    @tf.function
    def step(f):
        with tf.GradientTape() as tape:
            loss = loss_of(decoder(f, training=True))
        group.apply(tape.gradient(loss, variables))
        return loss

    parts = {
        "trainable_variables": len(variables),
        "parameters": int(sum(np.prod(v.shape) for v in variables)),
    }
    for name, function in (("forward", forward), ("forward+gradients", gradients), ("full step", step)):
        start = time.perf_counter()
        _fetch(function(features))
        first = time.perf_counter() - start
        times = []
        for _ in range(CALLS):
            start = time.perf_counter()
            _fetch(function(features))
            times.append(time.perf_counter() - start)
        parts[name] = {"first_call_s": first, "median_ms": 1000 * statistics.median(times)}
        print(f"  {name}: first call {first:.1f} s, median {parts[name]['median_ms']:.1f} ms", flush=True)
    return parts


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
    for name, decoder in (("standalone", standalone), ("supernet", supernet.decoder)):
        print(name, flush=True)
        result[name] = measure(decoder, features, masks)
    result["ratio_supernet_to_standalone"] = {
        part: result["supernet"][part]["median_ms"] / result["standalone"][part]["median_ms"]
        for part in ("forward", "forward+gradients", "full step")
    }
    with open(args.output, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(result["ratio_supernet_to_standalone"], indent=1))


if __name__ == "__main__":
    main()
