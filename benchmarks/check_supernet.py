"""Supernet correctness at scale: accounting and outputs against the standalone models (issue 10).

For N random genotypes per space (default 50), builds the standalone model, transfers the
supernet's (freshly re-initialised) weights into it and records:

- whether `Supernet.cost(values, shape)` equals `tfnas.profile.params` and
  `tfnas.profile.madds` of the standalone inference model (exact integers);
- for the first `--outputs` genotypes, the largest |difference| between the supernet's and
  the standalone decoder's outputs (training and inference mode), which must be <= 1e-5.

Tiny widths and images (what is checked does not depend on size). Writes
`benchmarks/results/supernet_check_<space>.json` after every genotype. It is a check, not a timing; the tests run a few
genotypes of the same comparison.

    nice -n 10 .venv/bin/python benchmarks/check_supernet.py            # 50 per space
    nice -n 10 .venv/bin/python benchmarks/check_supernet.py --n 5 --spaces dpc
"""

import argparse
import datetime
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from tfnas import profile  # noqa: E402
from tfnas.spaces import AuxCellSpace, DPCSpace  # noqa: E402

SPACES = {
    "auxcell": lambda: AuxCellSpace(num_classes=3, width=4, alpha=0.35, aux_cells=True),
    "dpc": lambda: DPCSpace(num_classes=3, width=4, num_branches=5, alpha=0.35),
}
SHAPES = {"auxcell": (64, 64, 3), "dpc": (48, 48, 3)}


def summarize(name, space, shape, rows, build_s):
    checked = [r for r in rows if "max_abs_diff" in r]
    return {
        "space": name,
        "config": space.config(),
        "input_shape": list(shape),
        "genotypes": len(rows),
        "cost_equal": sum(r["equal"] for r in rows),
        "outputs_checked": len(checked),
        "max_abs_diff": max((r["max_abs_diff"] for r in checked), default=None),
        "supernet_build_s": round(build_s, 1),
        "rows": rows,
    }


def check_space(name, n, outputs, out):
    """Checks `n` random genotypes of space `name`; rewrites `out` after each one."""
    keras.utils.set_random_seed(0)
    space = SPACES[name]()
    start = time.perf_counter()
    supernet = space.build_supernet()
    build_s = time.perf_counter() - start
    shape = SHAPES[name]
    x = np.random.default_rng(0).uniform(-1, 1, (2, *shape)).astype("float32")
    features = supernet.encoder(x)
    rows = []
    for seed in range(n):
        values = space.random_values(seed)
        supernet.prepare(values, seed=seed)
        model = space.build_genotype(space.genotype(values))
        supernet.transfer(values, model)
        inference = space.inference_model(model)
        cost = supernet.cost(values, shape)
        row = {
            "seed": seed,
            "genotype": space.genotype(values),
            "cost": cost,
            "profile": {"params": profile.params(inference), "madds": profile.madds(inference, shape)},
        }
        row["equal"] = row["cost"] == row["profile"]
        if seed < outputs:
            diff = 0.0
            for training in (False, True):
                ours = supernet.decoder(features, training=training)
                theirs = model.get_layer("decoder")(features, training=training)
                diff = max(diff, *(float(np.max(np.abs(ours[k] - theirs[k]))) for k in ours))
            row["max_abs_diff"] = diff
        rows.append(row)
        print(name, seed, row["equal"], row.get("max_abs_diff"), flush=True)
        result = {"date": datetime.date.today().isoformat(), **summarize(name, space, shape, rows, build_s)}
        with open(out, "w") as f:  # after every genotype, so an interrupted run keeps its rows
            json.dump(result, f, indent=1)
    return result


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=50, help="random genotypes per space")
    parser.add_argument("--outputs", type=int, default=10, help="of which outputs are compared")
    parser.add_argument("--spaces", nargs="+", default=sorted(SPACES), choices=sorted(SPACES))
    parser.add_argument(
        "--out",
        default=os.path.join(os.path.dirname(__file__), "results"),
        help="folder for supernet_check_<space>.json",
    )
    args = parser.parse_args()
    for name in args.spaces:
        r = check_space(name, args.n, args.outputs, os.path.join(args.out, f"supernet_check_{name}.json"))
        print(
            f"{r['space']}: cost == profile for {r['cost_equal']}/{r['genotypes']} genotypes; "
            f"max |diff| over {r['outputs_checked']}: {r['max_abs_diff']:.2e}"
        )


if __name__ == "__main__":
    main()
