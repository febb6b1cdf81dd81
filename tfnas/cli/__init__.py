"""The `tfnas` command: `search` and `demo` here, `results` / `report` from tfnas.report,
`train` from tfnas.training, `export` / `convert` / `serve` from tfnas.serving.

    tfnas search --space auxcell --oracle ppo --trials 20 --out runs/voc \\
        --images data/images --masks data/masks --num-classes 21
    tfnas search --out runs/voc --resume        # continue a stopped search
    tfnas train runs/voc --trial best --epochs 40   # train the best found network fully
    tfnas demo                                  # a small search on the built-in data, a few CPU minutes

`search` runs `tfnas.tuners.NASTuner` (the two-stage proxy task of Nekrasov et al., CVPR
2019, Sec. 3.2) and prints a table of the best architectures. The search directory `--out`
is described in `tfnas.search_dir`; its `run.json` also keeps the command's arguments, so
`--resume` needs only `--out` (and may raise `--trials`).

One error policy for every subcommand (`main`): a bad argument prints one line and exits
with status 2; any other error (a missing file, a bad value found later, a missing package,
TensorRT absent) prints one line naming the value and what to do, and exits with status 1.
`--debug` shows the traceback instead.

The package, by concern: `options` (the argument types, the one-line-error `Parser` and the
options of `search` / `demo`), `data` (a search's data from its arguments), `search`
(`run_search`, `results_table`) and `errors` (`UsageError`, `describe_error`); here are the
parser of every subcommand (`build_parser`) and the entry point (`main`). TensorFlow is
imported only when a command needs it.
"""

import argparse
import os
import sys
import tempfile

from tfnas.cli.errors import UsageError, describe_error
from tfnas.cli.options import Parser, add_search_options
from tfnas.cli.search import run_search

__all__ = ["UsageError", "build_parser", "describe_error", "main"]


def build_parser():
    """The `tfnas` argument parser with every subcommand.

    Returns:
        `argparse.ArgumentParser`.
    """
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = Parser(
        prog="tfnas",
        formatter_class=fmt,
        description="Neural architecture search for compact, fast segmentation "
        "networks, and their export to TF Serving and Jetson.",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the full traceback of an error (also accepted after the subcommand)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)
    search = subparsers.add_parser(
        "search",
        formatter_class=fmt,
        help="search for architectures (NASTuner)",
        description="Search a space with the two-stage proxy task and print the best architectures.",
    )
    add_search_options(search)
    search.set_defaults(func=run_search)
    demo = subparsers.add_parser(
        "demo",
        formatter_class=fmt,
        help="a small search on the built-in data (a few CPU minutes)",
        description="A search small enough for a laptop CPU on 64x64 digit scenes; prints the "
        "table of the best architectures.",
    )
    add_search_options(demo, demo=True)
    demo.set_defaults(func=run_search)
    from tfnas.report.cli import register as register_report

    register_report(subparsers)
    from tfnas.training.train_cli import register as register_train

    register_train(subparsers)
    from tfnas.latency.cli import register as register_latency

    register_latency(subparsers)
    from tfnas.training.rerank_cli import register as register_rerank

    register_rerank(subparsers)
    try:
        from tfnas.serving.cli import register
    except ImportError as err:
        message = (
            f"the export/convert/serve commands are unavailable: importing tfnas.serving.cli "
            f"failed ({err}); reinstall tfnas (pip install -e .)"
        )
        for name in ("export", "convert", "serve"):
            sub = subparsers.add_parser(name, help="unavailable: " + message)
            sub.set_defaults(func=lambda args, message=message: _unavailable(message))
    else:
        register(subparsers)
    return parser


def _unavailable(message):
    print(f"tfnas: error: {message}", file=sys.stderr)
    return 2


#: What TensorFlow 2.21 writes on import, before its log level applies: it logs these through
#: absl before absl::InitializeLog, whatever TF_CPP_MIN_LOG_LEVEL says (tensorflow#100442).
_IMPORT_NOISE = (
    "All log messages before absl::InitializeLog() is called",
    "oneDNN custom operations are on",
    "Could not find cuda drivers on your machine",
)


def _import_tensorflow_quietly():
    """Imports TensorFlow, keeping its start-up notices (`_IMPORT_NOISE`) off the terminal.

    They appear before any command's output, `--help` included, and say nothing a user of
    the command acts on. Everything else TensorFlow writes while importing is passed on.
    TF_CPP_MIN_LOG_LEVEL=0 (asking for TensorFlow's logs) keeps them too, and is the way to
    see what a process that dies inside TensorFlow's import (an abort, not an exception)
    printed: here that stays in the discarded capture.
    """
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "0":
        return
    sys.stderr.flush()
    with tempfile.TemporaryFile() as captured:  # a file, not a pipe: no size to block on
        saved = os.dup(2)
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode("utf-8", "replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not any(n in line for n in _IMPORT_NOISE)))
            sys.stderr.flush()


def main(argv=None):
    """Entry point of the `tfnas` command.

    Args:
        argv: list of arguments (default `sys.argv[1:]`).

    Returns:
        int exit status: 0 on success, 1 for an error, 2 for bad arguments, 130 when
        interrupted.
    """
    # TensorFlow's C++ log lines (a CPU-only machine's "failed call to cuInit" among them)
    # are not for users of the command; TF_CPP_MIN_LOG_LEVEL=0 brings them back.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    _import_tensorflow_quietly()  # the parser lists the spaces, which import TensorFlow
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    args.trials_given = "--trials" in argv or any(a.startswith("--trials=") for a in argv)
    args.argv = argv
    threads = os.environ.get("TFNAS_THREADS")  # set by `--workers` for each worker
    if threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(int(threads))
    try:
        return args.func(args)
    except UsageError as err:
        print(f"tfnas {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tfnas {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if debug:
            raise
        print(f"tfnas {args.command}: error: {describe_error(err)}", file=sys.stderr)
        return 1
