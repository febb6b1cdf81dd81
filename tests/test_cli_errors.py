"""One error policy for every `tfnas` subcommand, through the entry point users run.

A missing path, a bad number or an unknown name prints one line naming the value, with no
traceback: exit status 2 for argument errors, 1 for errors found while running.
`--debug` shows the traceback instead.
"""

import os
import subprocess
import sys

import pytest
from _cli import run_cli

from tfnas.cli import describe_error, main


@pytest.mark.parametrize(
    "argv, status, message",
    [
        # missing paths
        (["export", "{tmp}/no-run"], 1, "'{tmp}/no-run' is not a folder; expected a tfnas search directory"),
        (["export", "{tmp}"], 1, "run.json does not exist"),
        (["convert", "{tmp}/no-model", "--to", "onnx"], 1, "{tmp}/no-model"),
        (["serve", "{tmp}/no-exports", "--rest-port", "0", "--grpc-port", "-1"], 1, "{tmp}/no-exports"),
        (["search", "--resume", "--out", "{tmp}/no-run"], 2, "holds no search (no run.json)"),
        (
            ["search", "--out", "{tmp}/r", "--teacher", "{tmp}/no-teacher.keras"],
            2,
            "--teacher '{tmp}/no-teacher.keras' does not exist",
        ),
        # bad numbers
        (["search", "--out", "{tmp}/r", "--trials", "-3"], 2, "--trials: -3 must be at least 1"),
        (["search", "--out", "{tmp}/r", "--batch-size", "x"], 2, "--batch-size: 'x' is not an integer"),
        (
            ["search", "--out", "{tmp}/r", "--val-fraction", "1.5"],
            2,
            "--val-fraction 1.5 must be between 0 and 1",
        ),
        (["export", "{tmp}", "--version", "two"], 2, "argument --version: invalid int value: 'two'"),
        (["convert", "{tmp}", "--to", "onnx", "--opset", "x"], 2, "argument --opset: invalid int value: 'x'"),
        (["serve", "{tmp}", "--rest-port", "http"], 2, "argument --rest-port: invalid int value: 'http'"),
        # unknown names
        (["search", "--out", "{tmp}/r", "--space", "nasnet"], 2, "unknown space 'nasnet'"),
        (["search", "--out", "{tmp}/r", "--oracle", "bayes"], 2, "unknown oracle 'bayes'"),
        (["convert", "{tmp}", "--to", "coreml"], 2, "argument --to: invalid choice: 'coreml'"),
        (["frobnicate"], 2, "invalid choice: 'frobnicate'"),
        # settings that do not go together
        (
            ["search", "--out", "{tmp}/r", "--space", "template", "--supernet"],
            2,
            "--supernet: the template space has no supernet yet; leave --supernet out",
        ),
        (
            ["search", "--out", "{tmp}/r", "--weight-sharing"],
            2,
            "--weight-sharing shares the weights of a supernet; add --supernet",
        ),
    ],
)
def test_every_subcommand_reports_one_line(tmp_path, capsys, argv, status, message):
    tmp = str(tmp_path)
    assert run_cli([a.format(tmp=tmp) for a in argv]) == status
    err = capsys.readouterr().err
    assert message.format(tmp=tmp) in err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a folder"):
        main(["export", str(tmp_path / "no-run"), "--debug"])


def test_missing_packages_say_what_to_install():
    err = ModuleNotFoundError("No module named 'tensorflow_serving'", name="tensorflow_serving.apis")
    assert describe_error(err) == (
        "the Python package 'tensorflow_serving' is not installed; install "
        "it: pip install tensorflow-serving-api==2.21.0"
    )
    err = ModuleNotFoundError("No module named 'tensorrt'", name="tensorrt")
    assert "JetPack" in describe_error(err)


def test_internal_errors_point_to_debug():
    text = describe_error(TypeError("unsupported operand"))
    assert text.startswith("TypeError: unsupported operand") and "--debug" in text


def test_the_command_shows_no_tensorflow_start_up_lines():
    """TensorFlow 2.21's import notices (absl, oneDNN, CUDA) ignore TF_CPP_MIN_LOG_LEVEL; the
    command keeps them off the terminal, so a usage error is the only line a user sees."""
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run(
        [sys.executable, "-m", "tfnas.cli", "search", "--trials", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 2
    assert done.stderr == "tfnas search: error: argument --trials: 0 must be at least 1\n"
