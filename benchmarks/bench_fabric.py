"""Parameters and multiply-adds of the published 3M-Pose network (Table A.1) next to the thesis' figures.

Builds `FabricSpace(width=32)` (4 rows, 10 columns, EELs at columns 4 and 7, HRNet stem, 17
joints with scalar tags) with `PUBLISHED["3m_pose"]`, counts its parameters
(`tfnas.profile.params`, split into stem, cells, macro resampling and fuse-split-heads) and its
multiply-adds for one image (`tfnas.profile.madds`, counted from the traced graph) up to each
exit (column 4, 7 and 10), at 512x512 and 640x640, and checks the count against the analytic
`tfnas.oneshot.FabricCosts`. Writes benchmarks/results/fabric.json and prints a markdown table.

    python benchmarks/bench_fabric.py                     # 512 and 640, width 32
    python benchmarks/bench_fabric.py --quick              # smoke run: 64x64, width 8
"""

import argparse
import datetime
import json
import os
import platform
import time

HERE = os.path.dirname(os.path.abspath(__file__))

#: Table 4.1 and 4.3 of the thesis: input -> (params M, GFLOPs at columns 4, 7, 10).
THESIS = {
    512: {"params_m": 17.79, "gflops": {"eel_4": 10.14, "eel_7": 12.38, "logits": 16.63}},
    640: {"params_m": 17.85, "gflops": {"eel_4": 15.85, "eel_7": 19.34, "logits": 25.98}},
}


def exit_model(space, model, key):
    """image -> one head's output, sharing the weights of `model`."""
    import keras

    encoder, decoder = model.get_layer("encoder"), model.get_layer("decoder")
    part = keras.Model(decoder.inputs, decoder.get_layer(key).output)
    inputs = keras.Input(space.input_shape)
    return keras.Model(inputs, part(keras.tree.flatten(encoder(inputs))))


def param_groups(model):
    """Parameters of the stem, the cells, the macro resampling and the fuse/split/heads."""
    from tfnas.profile import params

    decoder = model.get_layer("decoder")
    groups = {
        "stem": params(model.get_layer("encoder"))["total"],
        "cells": 0,
        "resample": 0,
        "fuse_split_heads": 0,
    }
    for layer in decoder.layers:
        if not layer.weights:
            continue
        n = params(layer)["total"]
        if layer.name.startswith("cell") and ("_above" in layer.name or "_below" in layer.name):
            groups["resample"] += n
        elif layer.name.startswith("cell"):
            groups["cells"] += n
        else:
            groups["fuse_split_heads"] += n
    return groups


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[512, 640])
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--output", default=os.path.join(HERE, "results", "fabric.json"))
    parser.add_argument("--quick", action="store_true", help="64x64 at width 8 (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.width = [64], 8

    from tfnas.oneshot import FabricCosts
    from tfnas.profile import madds, params
    from tfnas.spaces.fabric import FabricSpace

    space = FabricSpace(width=args.width)
    start = time.perf_counter()
    model = space.build_genotype("3m_pose")
    build_s = time.perf_counter() - start
    counts = params(model)
    result = {
        "date": datetime.date.today().isoformat(),
        "machine": platform.platform(),
        "space": space.config(),
        "genotype": space.PUBLISHED["3m_pose"],
        "build_s": round(build_s, 1),
        "params": counts,
        "param_groups": param_groups(model),
        "sizes": {},
    }
    for size in args.sizes:
        row = {}
        for key in ("eel_4", "eel_7", "logits"):
            counted = madds(exit_model(space, model, key), (size, size, 3))
            row[key] = {"madds": counted}
        costs = FabricCosts(space, (size, size))
        row["analytic_all_heads"] = costs.madds(space.PUBLISHED["3m_pose"])
        row["counted_all_heads"] = madds(model, (size, size, 3))
        result["sizes"][str(size)] = row
        thesis = THESIS.get(size)
        print(
            f"\n{size}x{size}: {counts['total'] / 1e6:.2f} M params"
            + (f" (thesis {thesis['params_m']} M)" if thesis else "")
        )
        print("| exit | GMACs counted | thesis GFLOPs | difference |")
        print("|---|---|---|---|")
        for key in ("eel_4", "eel_7", "logits"):
            g = row[key]["madds"] / 1e9
            t = thesis["gflops"][key] if thesis else None
            diff = f"{(g - t) / t * 100:+.1f} %" if t else "-"
            print(f"| {key} | {g:.2f} | {t if t else '-'} | {diff} |")
        print(f"all heads, counted {row['counted_all_heads']}, analytic {row['analytic_all_heads']}")
    print("param groups:", result["param_groups"])
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=1)
    print("wrote", args.output)


if __name__ == "__main__":
    main()
