"""`tfnas search`: bad arguments and --help (a killed and resumed search: `test_crash_resume.py`)."""

import os

import pytest
from _cli import run_cli


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--space", "nope"], "unknown space 'nope'"),
        (["--trials", "0"], "--trials: 0 must be at least 1"),
        (["--oracle", "annealing"], "unknown oracle 'annealing'"),
        (
            ["--images", "/no/such/folder", "--masks", "/no/such/masks", "--num-classes", "3"],
            "--images '/no/such/folder' is not a readable folder",
        ),
        (["--images", "."], "--images needs --masks and --num-classes"),
    ],
)
def test_bad_arguments_give_one_line_and_exit_code_2(tmp_path, capsys, argv, message):
    assert run_cli(["search", "--out", str(tmp_path / "run")] + argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not os.path.exists(tmp_path / "run" / "run.json")


def test_existing_directory_needs_resume(tmp_path, capsys):
    (tmp_path / "old.txt").write_text("x")
    assert run_cli(["search", "--out", str(tmp_path)]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert run_cli(["search", "--out", str(tmp_path / "empty"), "--resume"]) == 2
    assert "holds no search" in capsys.readouterr().err


def test_help_documents_every_option_with_its_default(capsys):
    assert run_cli(["search", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    for option, default in [
        ("--space", "auxcell"),
        ("--trials", "20"),
        ("--out", "runs/search"),
        ("--stage1-epochs", "5"),
        ("--stage2-epochs", "1"),
        ("--cache-images", "4000"),
        ("--latency-runs", "10"),
        ("--image-size", "64"),
        ("--teacher", "auto"),
    ]:
        assert option in text
        after = text[text.rindex(option + " ") :]
        assert f"(default: {default})" in after[:400], option
    for option in ("--oracle", "--resume", "--images", "--masks", "--num-classes", "--tfds"):
        assert option in text
    assert run_cli(["--help"]) == 0
    commands = capsys.readouterr().out
    assert "search" in commands and "demo" in commands and "export" in commands
