"""Per-trial cost of switching architecture: supernet (select + re-init) vs a standalone build.

Issue 10: a trial in the supernet re-initialises what its architecture uses and runs the
already-traced training step; a standalone trial builds its decoder and traces a new step.
Side by side in one run, at the demo's size (auxiliary-cell space, width 16, MobileNetV2
alpha 0.35, 48x48 images, 4 classes, batch 16), on cached encoder features as in stage 1:

1. `supernet`: once, the supernet's build and its first (traced) training step; then per
   trial `Supernet.prepare(values, seed)` (select + re-initialise) and one training step.
2. `standalone`: per trial, `space.decoder_from_genotype_values` (build), a new
   `tf.function` training step (trace) and its first call.
3. `accounting`: per trial, `Supernet.cost` (after the per-layer counts are cached) vs
   `tfnas.profile.params` + `tfnas.profile.madds` of the standalone inference model.
4. `signatures`: traced graphs that 100 random trials need per space: the auxiliary-cell
   and DPC supernets have one fixed-shape graph; for the template space, the number of
   distinct shape signatures (channels and stride of every pool entry read or collected,
   and of every block's inputs and output) among 100 random genotypes.

The same random genotypes are used by both paths, which alternate trial by trial so load
from other processes hits both alike. The training step is forward (training mode),
segmentation loss on every output, gradients and an Adam update of all decoder variables.
Writes `benchmarks/results/supernet.json`.

    nice -n 10 .venv/bin/python benchmarks/bench_supernet.py             # 6 trials
    nice -n 10 .venv/bin/python benchmarks/bench_supernet.py --trials 3 --no-aux-cells  # quicker
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
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfnas import profile  # noqa: E402
from tfnas.spaces import AuxCellSpace, TemplateSpace  # noqa: E402
from tfnas.spaces.template import NUM_STEM_OUTPUTS  # noqa: E402
from tfnas.tasks.segmentation import segmentation_loss  # noqa: E402

DEMO = dict(num_classes=4, width=16, alpha=0.35)
IMAGE = (48, 48, 3)
BATCH = 16


def make_step(decoder):
    """A traced training step of `decoder` on (features, labels) with its own Adam."""
    optimizer = keras.optimizers.Adam(3e-3)
    variables = decoder.trainable_variables
    optimizer.build(variables)

    @tf.function
    def step(features, labels):
        with tf.GradientTape() as tape:
            outputs = decoder(features, training=True)
            loss = tf.add_n([segmentation_loss(labels, logits) for logits in outputs.values()])
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    return step


def timed(function):
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def template_signatures(n=100):
    """Distinct shape signatures among `n` random template-space genotypes (no model built)."""
    space = TemplateSpace(num_classes=19)
    channels, strides = [24, 32], [4, 8]  # MobileNetV2 stages 1 and 2 at width 1.0
    signatures = set()
    for seed in range(n):
        templates, blocks = space.genotype(space.random_values(seed))
        c, s, signature, used = list(channels), list(strides), [], set()
        for b, (loc1, loc2, _, _, log2_stride) in enumerate(blocks):
            stride = 2**log2_stride
            filters = [
                c[loc1] * (space.channel_factor if stride > 1 else 1),
                c[loc2] * (space.channel_factor if stride > 1 else 1),
            ]
            out = [s[loc1] * stride, s[loc2] * stride]
            c.append(max(filters))
            s.append(max(out) if space.strided(b) else min(out))
            signature.append((c[loc1], s[loc1], c[loc2], s[loc2], stride))
            used.update((loc1, loc2))
        unused = tuple((c[i], s[i]) for i in range(NUM_STEM_OUTPUTS, len(c)) if i not in used)
        signatures.add((tuple(signature), unused))
    return len(signatures)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument(
        "--no-aux-cells",
        dest="aux_cells",
        action="store_false",
        help="auxiliary heads without their cell (6 searched cells instead of 9: "
        "a smaller supernet, quicker to build and trace)",
    )
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results", "supernet.json"))
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    space = AuxCellSpace(**DEMO, aux_cells=args.aux_cells)
    build_s, supernet = timed(space.build_supernet)
    encoder = supernet.encoder
    specs = space.feature_specs(encoder)
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (BATCH, *IMAGE)).astype("float32")
    labels = tf.constant(rng.integers(0, DEMO["num_classes"], (BATCH, *IMAGE[:2])), tf.int32)
    features = [tf.constant(f) for f in encoder(images)]
    step = make_step(supernet.decoder)
    values = [space.random_values(1000 + t) for t in range(args.trials + 1)]
    supernet.prepare(values[0], seed=0)
    first_step_s, _ = timed(lambda: float(step(features, labels)))
    supernet.cost(values[0], IMAGE)  # fills the per-layer count cache for the common layers

    rows = []
    for t in range(1, args.trials + 1):
        v = values[t]
        row = {"trial": t, "genotype": space.genotype(v)}
        prepare_s, _ = timed(lambda: supernet.prepare(v, seed=t))
        step_s, _ = timed(lambda: float(step(features, labels)))
        row["supernet"] = {"prepare_s": prepare_s, "step_s": step_s, "total_s": prepare_s + step_s}
        build_standalone_s, decoder = timed(lambda: space.decoder_from_genotype_values(v, specs))
        own_step = make_step(decoder)
        trace_s, _ = timed(lambda: float(own_step(features, labels)))
        row["standalone"] = {
            "build_s": build_standalone_s,
            "trace_and_step_s": trace_s,
            "total_s": build_standalone_s + trace_s,
        }
        cost_s, cost = timed(lambda: supernet.cost(v, IMAGE))
        model = space.build_genotype(space.genotype(v))
        inference = space.inference_model(model)
        profile_s, counted = timed(
            lambda: {"params": profile.params(inference), "madds": profile.madds(inference, IMAGE)}
        )
        row["accounting"] = {"cost_s": cost_s, "profile_s": profile_s, "equal": cost == counted}
        row["traces_so_far"] = step.experimental_get_tracing_count()
        rows.append(row)
        print(json.dumps({k: row[k] for k in ("trial", "supernet", "standalone", "accounting")}), flush=True)

    def median(path):
        values = [r[path[0]][path[1]] for r in rows]
        return statistics.median(values)

    summary = {
        "supernet_build_s": build_s,
        "supernet_first_step_s": first_step_s,
        "supernet_per_trial_s": median(("supernet", "total_s")),
        "supernet_prepare_s": median(("supernet", "prepare_s")),
        "supernet_step_s": median(("supernet", "step_s")),
        "standalone_per_trial_s": median(("standalone", "total_s")),
        "standalone_build_s": median(("standalone", "build_s")),
        "standalone_trace_and_step_s": median(("standalone", "trace_and_step_s")),
        "cost_s": median(("accounting", "cost_s")),
        "profile_s": median(("accounting", "profile_s")),
        "cost_equal_profile": all(r["accounting"]["equal"] for r in rows),
        "supernet_traces": step.experimental_get_tracing_count(),
        "trials": args.trials,
        "signatures_per_100_trials": {"auxcell": 1, "dpc": 1, "template": template_signatures(100)},
    }
    summary["speedup_per_trial"] = summary["standalone_per_trial_s"] / summary["supernet_per_trial_s"]
    settings = {**DEMO, "aux_cells": args.aux_cells, "image": IMAGE, "batch": BATCH}
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "load_average": os.getloadavg(),
        "settings": settings,
        "summary": summary,
        "trials": rows,
    }
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
