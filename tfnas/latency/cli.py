"""The `tfnas latency` commands and the hardware-aware flags of `tfnas search`.

    tfnas latency measure --space auxcell --image-size 512 --runtime tensorflow --out tf.json
    tfnas latency measure --run runs/search --image-size 512 --runtime onnxruntime --out ort.json
    tfnas latency bundle --run runs/search --image-size 512 --out bundle/   # then, on the Jetson:
        python3 bundle/device_latency.py bundle --runtime tensorrt --precision fp16 --out jetson.json
    tfnas latency check tf.json runs/search --top 5      # the table's error on the best trials
    tfnas search --latency-table jetson.json --latency-target 33ms [--hard-constraint]
    tfnas search --madds-target 2G --latency-weight -0.07

`register(subparsers)` adds `latency`; `add_objective_options(parser)` and
`objective_from_args(args)` are the search flags (`tfnas.objectives`).
"""

import argparse
import json
import os

from tfnas.objectives import HardwareObjective, parse_count, parse_latency


def _argument_type(parse):
    def convert(text):
        try:
            return parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    convert.__name__ = parse.__name__
    return convert


def add_objective_options(parser):
    """Adds the hardware-aware objective flags to a `tfnas search` parser."""
    group = parser.add_argument_group(
        "hardware-aware objective (MnasNet: reward = score * (latency / target) ** w; see docs/latency.md)"
    )
    group.add_argument(
        "--latency-target",
        type=_argument_type(parse_latency),
        default=None,
        help="latency target with its unit, e.g. 33ms or 0.033s (measured per trial, or "
        "predicted with --latency-table)",
    )
    group.add_argument(
        "--latency-table",
        default=None,
        help="per-op latency table (tfnas latency measure, or tools/device_latency.py on the "
        "device): each trial's latency_ms is predicted from it at the table's image size",
    )
    group.add_argument(
        "--madds-target",
        type=_argument_type(parse_count),
        default=None,
        help="multiply-adds target instead of latency, e.g. 2G or 500M",
    )
    group.add_argument(
        "--latency-weight",
        type=float,
        default=-0.07,
        help="exponent w of the soft term (also for --madds-target); 0: no soft term",
    )
    group.add_argument(
        "--hard-constraint",
        action="store_true",
        help="trials over the target are recorded with over_budget=1 and score 0",
    )
    group.add_argument(
        "--penalize-only-above",
        action="store_true",
        help="the soft term applies only above the target (MnasNet's alpha=0)",
    )


def objective_from_args(args):
    """The `HardwareObjective` of parsed `tfnas search` arguments, or None.

    Makes `args.latency_table` absolute, so that `--resume` finds it from anywhere.

    Raises:
        ValueError: for contradicting flags or a missing table file.
    """
    latency, madds = getattr(args, "latency_target", None), getattr(args, "madds_target", None)
    table = getattr(args, "latency_table", None)
    if latency is not None and madds is not None:
        raise ValueError("give one target: --latency-target or --madds-target, not both")
    if table is not None:
        if latency is None:
            raise ValueError("--latency-table predicts latency for --latency-target; add --latency-target")
        if not os.path.isfile(table):
            raise ValueError(
                f"--latency-table {table!r} is not a file; measure one with tfnas latency measure"
            )
        args.latency_table = table = os.path.abspath(table)
    if latency is None and madds is None:
        if args.hard_constraint or args.penalize_only_above:
            raise ValueError(
                "--hard-constraint and --penalize-only-above need --latency-target or --madds-target"
            )
        return None
    metric, target = ("latency_ms", latency) if latency is not None else ("madds", madds)
    return HardwareObjective(
        metric,
        target,
        weight=args.latency_weight,
        hard=args.hard_constraint,
        penalize_only_above=args.penalize_only_above,
        table=table,
    )


# --- tfnas latency ----------------------------------------------------------------------------
def _space_of(args):
    """The space of `--run RUN_DIR`, or of `--space` and its settings."""
    from tfnas.search_dir import SearchDir
    from tfnas.spaces import get_space

    if args.run:
        return SearchDir(args.run).space(encoder_weights=None)
    kwargs = {"task": args.task}
    if args.task == "segmentation":
        kwargs["num_classes"] = args.num_classes
    for key in ("width", "alpha"):
        if getattr(args, key) is not None:
            kwargs[key] = getattr(args, key)
    return get_space(args.space)(**kwargs)


def _shape(args):
    return (args.image_size, args.image_size, 3)


def _log(args):
    return (lambda line: print(line, flush=True)) if args.verbose else None


def run_measure(args):
    """Handler of `tfnas latency measure`."""
    from tfnas.latency.measure import measure_table

    runtime = "tensorflow" if args.runtime == "tf" else args.runtime
    table = measure_table(
        _space_of(args),
        _shape(args),
        runtime,
        args.warmup,
        args.runs,
        args.networks,
        args.seed,
        log=_log(args),
        architectures=args.architectures,
    )
    table.save(args.out)
    print(
        f"wrote {args.out}: {len(table.entries)} entries ({table.runtime}, {table.device}), "
        f"correction {table.correction_ms:+.3f} ms on {len(table.calibration)} network(s)"
    )
    return 0


def run_bundle(args):
    """Handler of `tfnas latency bundle`."""
    from tfnas.latency.measure import write_bundle

    write_bundle(
        _space_of(args),
        _shape(args),
        args.out,
        networks=args.networks,
        seed=args.seed,
        log=_log(args),
        architectures=args.architectures,
    )
    print(
        f"wrote {args.out}; copy it to the device and run there:\n"
        f"  python3 {os.path.join(args.out, 'device_latency.py')} {args.out} --runtime tensorrt "
        "--precision fp16 --out table.json"
    )
    return 0


def _trial_values(run_dir, top):
    """Hyperparameter values of the best `top` completed trials of a search."""
    from tfnas.search_dir import SearchDir

    trials = [t for t in SearchDir(run_dir).trials().values() if t.get("status") == "COMPLETED"]
    trials.sort(key=lambda t: -(t.get("score") if t.get("score") is not None else float("-inf")))
    if not trials:
        raise ValueError(f"{run_dir!r} has no COMPLETED trial to check the table on")
    return [t["hyperparameters"]["values"] for t in trials[:top]]


def run_check(args):
    """Handler of `tfnas latency check`: predicted against measured latency."""
    from tfnas.latency.predict import table_error
    from tfnas.latency.table import LatencyTable
    from tfnas.report.runs import format_genotype
    from tfnas.spaces import get_space

    table = LatencyTable.load(args.table)
    space = get_space(table.space)(**{**table.space_config, "encoder_weights": None})
    if args.run_dir:
        values = _trial_values(args.run_dir, args.top)
    else:
        values = [space.random_values(seed=args.seed + i) for i in range(args.top)]

    def show(index, row):
        print(
            f"{index + 1}/{len(values)}  predicted {row['predicted_ms']:8.3f} ms  measured "
            f"{row['measured_ms']:8.3f} ms  error {row['error_pct']:+6.1f} %  {format_genotype(row['genotype'])}",
            flush=True,
        )

    report = table_error(table, space, values, on_network=None if args.json else show)
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    rho, tau = report["spearman"], report["kendall_tau"]
    print(
        f"mean |error| {report['mean_abs_error_pct']:.1f} %, max {report['max_abs_error_pct']:.1f} %, "
        f"{100 * report['within_10pct']:.0f} % within +-10 %"
        + (f", Spearman {rho:.2f}, Kendall tau {tau:.2f}" if rho is not None and tau is not None else "")
    )
    return 0


def _space_options(parser):
    from tfnas.spaces import SPACES

    parser.add_argument(
        "--run", default=None, metavar="RUN_DIR", help="take the space and its settings from a search"
    )
    parser.add_argument("--space", default="auxcell", help=f"search space, one of {sorted(SPACES)}")
    parser.add_argument("--task", default="segmentation", help="the task the space predicts for")
    parser.add_argument(
        "--num-classes", type=int, default=11, help="segmentation classes (11: built-in data)"
    )
    parser.add_argument("--width", type=int, default=None, help="decoder channels; default: the space's")
    parser.add_argument("--alpha", type=float, default=None, help="MobileNetV2 width multiplier")
    parser.add_argument(
        "--image-size", type=int, default=512, help="square image size to predict for (the deployment size)"
    )
    parser.add_argument(
        "--networks", type=int, default=3, help="random networks timed whole for the correction"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of those networks")
    parser.add_argument(
        "--architectures",
        type=int,
        default=20,
        help="for the template space, whose shapes cannot be listed: measure the layers of this "
        "many random architectures (a table measured here grows during a search)",
    )
    parser.add_argument("--verbose", action="store_true", help="one line per measured layer")


def register(subparsers):
    """Adds `tfnas latency` (`measure`, `bundle`, `check`) to a `tfnas` argparse parser.

    Args:
        subparsers: the object returned by `parser.add_subparsers()`.

    Returns:
        the `latency` `ArgumentParser`.
    """
    fmt = argparse.ArgumentDefaultsHelpFormatter
    latency = subparsers.add_parser(
        "latency",
        formatter_class=fmt,
        help="per-op latency tables: measure, bundle for the device, check",
        description="Per-op latency tables for hardware-aware search (docs/latency.md).",
    )
    commands = latency.add_subparsers(dest="latency_command", metavar="COMMAND", parser_class=type(latency))
    measure = commands.add_parser(
        "measure", formatter_class=fmt, help="measure a table here (TensorFlow or onnxruntime)"
    )
    _space_options(measure)
    measure.add_argument("--runtime", choices=("tensorflow", "tf", "onnxruntime"), default="tensorflow")
    measure.add_argument("--warmup", type=int, default=5, help="untimed calls per layer")
    measure.add_argument("--runs", type=int, default=20, help="timed calls per layer (the median is kept)")
    measure.add_argument("--out", required=True, help="the table JSON to write")
    measure.set_defaults(func=run_measure)
    bundle = commands.add_parser(
        "bundle", formatter_class=fmt, help="write per-op ONNX models and the device script for a device"
    )
    _space_options(bundle)
    bundle.add_argument("--out", required=True, help="the folder to write (copy it to the device)")
    bundle.set_defaults(func=run_bundle)
    check = commands.add_parser(
        "check", formatter_class=fmt, help="a table's error: predicted against measured latency here"
    )
    check.add_argument("table", help="the table JSON (TensorFlow or onnxruntime, measured on this machine)")
    check.add_argument(
        "run_dir", nargs="?", default=None, metavar="RUN_DIR", help="check the best trials of a search"
    )
    check.add_argument("--top", type=int, default=5, help="networks to check (best trials, or random ones)")
    check.add_argument("--seed", type=int, default=100, help="seed of the random networks without RUN_DIR")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.set_defaults(func=run_check)
    latency.set_defaults(func=lambda args: (latency.print_help(), 2)[1])
    return latency


__all__ = ["add_objective_options", "objective_from_args", "register"]
