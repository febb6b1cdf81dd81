"""The `tfnas results` and `tfnas report` commands.

`register(subparsers)` adds both to the `tfnas` argparse parser. Both read the search
directory as it is on disk, so they work while the search runs and after it was killed.

    tfnas results runs/search                      # trials, best reward first
    tfnas results runs/search --sort latency_ms --csv > trials.csv
    tfnas results runs/search --pareto madds       # the front of reward vs multiply-adds
    tfnas report runs/search --out report/         # report/index.html with its plots
"""

import argparse
import os
import sys

from tfnas.report.pareto import COSTS


def run_results(args):
    """Handler of `tfnas results`; returns the exit status."""
    from tfnas.report.pareto import pareto_front
    from tfnas.report.runs import load_run
    from tfnas.report.table import TEXT_COLUMNS, csv_table, json_table, text_table, trial_rows

    run = load_run(args.run_dir)
    trials = run.trials
    title = f"{len(trials)} trial(s) of {run.max_trials or '?'} in {args.run_dir}"
    if args.pareto:
        costs = [c.strip() for c in args.pareto.split(",") if c.strip()]
        trials = pareto_front(trials, cost=costs, include_terminated=args.include_terminated)
        title = (
            f"Pareto front of reward (max) vs {' and '.join(costs)} (min): {len(trials)} of "
            f"{len(run.trials)} trial(s)"
        )
    sort = args.sort or ("order" if args.pareto else "reward")
    rows, columns = trial_rows(trials, sort=sort, descending=args.descending)
    if args.pareto:  # the front in cost order unless asked otherwise
        rows = rows if args.sort else [t.row() for t in trials]
    if args.top:
        rows = rows[: args.top]
    if args.json:
        print(json_table(rows))
    elif args.csv:
        sys.stdout.write(csv_table(rows, columns))
    else:
        for why in run.skipped:
            print(f"note: left out {why}", file=sys.stderr)
        print(title)
        shown = list(TEXT_COLUMNS)
        if sort in columns and sort not in shown:  # show the metric the rows are sorted by
            shown.insert(shown.index("genotype"), sort)
        print(text_table(rows, shown))
    return 0


def run_report(args):
    """Handler of `tfnas report`; returns the exit status."""
    from tfnas.report.html import write_report

    path = write_report(args.run_dir, args.out, top=args.top)
    print(f"wrote {path}")
    if args.tensorboard:
        from tfnas.report.runs import load_run
        from tfnas.report.tensorboard import HParamsWriter

        logdir = (
            args.tensorboard if args.tensorboard is not True else os.path.join(args.run_dir, "tensorboard")
        )
        sessions = HParamsWriter(logdir).write_run(load_run(args.run_dir))
        print(f"wrote {len(sessions)} trial(s) for TensorBoard's HParams tab: tensorboard --logdir {logdir}")
    return 0


def register(subparsers):
    """Adds the `results` and `report` subcommands to a `tfnas` argparse parser.

    Args:
        subparsers: the object returned by `parser.add_subparsers()`.

    Returns:
        dict name -> the subcommand's `ArgumentParser` (each has `func` set to its handler).
    """
    fmt = argparse.ArgumentDefaultsHelpFormatter
    results = subparsers.add_parser(
        "results",
        formatter_class=fmt,
        help="the table of trials of a search (also while it runs)",
        description="Print the trials of a search directory: reward, stage-1 reward, cost and "
        "genotype, sorted by any metric; as text, JSON or CSV; or only the Pareto front.",
    )
    results.add_argument("run_dir", metavar="RUN_DIR", help="search directory (the --out of tfnas search)")
    results.add_argument(
        "--sort",
        default=None,
        help="column to sort by: order, trial_id or any metric (reward, latency_ms, "
        "madds, params, ...); default reward (with --pareto: the first cost)",
    )
    order = results.add_mutually_exclusive_group()
    order.add_argument(
        "--descending",
        dest="descending",
        action="store_true",
        default=None,
        help="largest first (default for scores)",
    )
    order.add_argument(
        "--ascending", dest="descending", action="store_false", help="smallest first (default for costs)"
    )
    results.add_argument("--top", type=int, default=None, help="print only the first N rows")
    fmt_group = results.add_mutually_exclusive_group()
    fmt_group.add_argument("--json", action="store_true", help="JSON: a list of objects, every metric")
    fmt_group.add_argument("--csv", action="store_true", help="CSV with a header row")
    results.add_argument(
        "--pareto",
        nargs="?",
        const="latency_ms",
        default=None,
        metavar="COSTS",
        help=f"only the Pareto front of reward (max) vs these costs (min), comma "
        f"separated, from {sorted(COSTS)} or any metric; alone: latency_ms",
    )
    results.add_argument(
        "--include-terminated",
        action="store_true",
        help="let trials stopped after stage 1 join the front (their reward is the stage-1 reward)",
    )
    results.set_defaults(func=run_results)

    report = subparsers.add_parser(
        "report",
        formatter_class=fmt,
        help="an HTML page with the plots of a search",
        description="Write an HTML page with PNG plots (rewards, Pareto fronts, the best "
        "architectures drawn as graphs, the controller, the run's settings) for a "
        "search directory, running, finished or stopped.",
    )
    report.add_argument("run_dir", metavar="RUN_DIR", help="search directory (the --out of tfnas search)")
    report.add_argument("--out", default=None, help="folder of the page (default: RUN_DIR/report)")
    report.add_argument("--top", type=int, default=3, help="how many of the best architectures to draw")
    report.add_argument(
        "--tensorboard",
        nargs="?",
        const=True,
        default=None,
        metavar="LOGDIR",
        help="also write the trials for TensorBoard's HParams tab (default LOGDIR: RUN_DIR/tensorboard)",
    )
    report.set_defaults(func=run_report)
    return {"results": results, "report": report}
