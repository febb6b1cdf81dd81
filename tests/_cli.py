"""Test helper: run the `tfnas` command in-process and return its exit status."""

from tfnas.cli import main


def run_cli(argv):
    """`tfnas ARGV` through `tfnas.cli.main`; the exit status, also when argparse exits."""
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code
