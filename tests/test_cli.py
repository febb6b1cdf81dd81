"""`tfnas search`: bad arguments, --help, and a search killed with SIGKILL then resumed."""

import glob
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tfnas.cli import main
from tfnas.search_dir import SearchDir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(argv):
    try:
        return main(argv)
    except SystemExit as exit_:
        return exit_.code


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
    assert _run(["search", "--out", str(tmp_path / "run")] + argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not os.path.exists(tmp_path / "run" / "run.json")


def test_existing_directory_needs_resume(tmp_path, capsys):
    (tmp_path / "old.txt").write_text("x")
    assert _run(["search", "--out", str(tmp_path)]) == 2
    assert "pass --resume" in capsys.readouterr().err
    assert _run(["search", "--out", str(tmp_path / "empty"), "--resume"]) == 2
    assert "holds no search" in capsys.readouterr().err


def test_help_documents_every_option_with_its_default(capsys):
    assert _run(["search", "--help"]) == 0
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
    assert _run(["--help"]) == 0
    commands = capsys.readouterr().out
    assert "search" in commands and "demo" in commands and "export" in commands


def _trial_states(out):
    """Trial id -> status, from the trial files a running search has written so far."""
    return {trial_id: trial["status"] for trial_id, trial in SearchDir(out).trials(skipped=[]).items()}


def test_killed_search_resumes_without_losing_or_repeating_trials(tmp_path):
    out = str(tmp_path / "run")
    command = [
        sys.executable,
        "-m",
        "tfnas.cli",
        "search",
        "--space",
        "auxcell",
        "--oracle",
        "random",
        "--trials",
        "3",
        "--out",
        out,
        "--image-size",
        "32",
        "--scenes",
        "20",
        "--width",
        "8",
        "--alpha",
        "0.35",
        "--stage1-epochs",
        "1",
        "--stage2-epochs",
        "0",
        "--warmup-epochs",
        "0",
        "--cache-images",
        "16",
        "--batch-size",
        "8",
        "--latency-runs",
        "2",
        "--verbose",
        "2",
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    log = open(tmp_path / "first.log", "w")
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    try:
        # Kill once trial 0 completed and the oracle has moved on to the next trial.
        while time.time() < deadline and process.poll() is None:
            states = _trial_states(out)
            if "COMPLETED" in states.values() and len(states) >= 2:
                break
            time.sleep(0.3)
        assert process.poll() is None, open(tmp_path / "first.log").read()[-3000:]
        process.send_signal(signal.SIGKILL)
        process.wait(30)
    finally:
        if process.poll() is None:
            process.kill()
    before = _trial_states(out)
    done_first = [t for t, s in before.items() if s == "COMPLETED"]
    assert 1 <= len(done_first) < 3
    weights = {
        t: os.stat(os.path.join(out, f"trial_{t}", "model.weights.h5")).st_mtime_ns for t in done_first
    }
    (cache_meta,) = glob.glob(os.path.join(out, "cache", "train-*", "meta.json"))
    cache_mtime = os.stat(cache_meta).st_mtime_ns

    resumed = subprocess.run(
        [sys.executable, "-m", "tfnas.cli", "search", "--out", out, "--resume", "--verbose", "2"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    after = _trial_states(out)
    assert sorted(after) == ["0", "1", "2"] and set(after.values()) == {"COMPLETED"}
    for trial_id, mtime in weights.items():  # completed trials were not run again
        assert os.stat(os.path.join(out, f"trial_{trial_id}", "model.weights.h5")).st_mtime_ns == mtime
    assert "feature cache: reusing" in resumed.stdout
    assert os.stat(cache_meta).st_mtime_ns == cache_mtime
    assert "best 3 of 3 trial(s)" in resumed.stdout and "genotype" in resumed.stdout
    run = json.load(open(os.path.join(out, "run.json")))
    assert run["space"] == "auxcell" and run["space_config"]["width"] == 8
    assert run["cli"]["trials"] == 3
