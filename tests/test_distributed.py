"""Tests PPOOracle as the chief of keras-tuner's distributed tuning: one chief, two workers."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import _oracle_worker as worker  # noqa: E402

WORKER = os.path.join(os.path.dirname(__file__), "_oracle_worker.py")


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(tuner_id, directory, port, max_trials):
    env = dict(
        os.environ,
        KERASTUNER_TUNER_ID=tuner_id,
        KERASTUNER_ORACLE_IP="127.0.0.1",
        KERASTUNER_ORACLE_PORT=str(port),
        TF_CPP_MIN_LOG_LEVEL="2",
    )
    log = open(os.path.join(directory, f"{tuner_id}.log"), "w")
    proc = subprocess.Popen(
        [
            sys.executable,
            WORKER,
            "--oracle",
            "ppo",
            "--directory",
            str(directory),
            "--max-trials",
            str(max_trials),
            "--sleep",
            "0.4",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    return proc


def test_ppo_oracle_as_chief_with_two_workers(tmp_path):
    max_trials = 10
    port = _free_port()
    procs = {}
    try:
        procs["chief"] = _start("chief", tmp_path, port, max_trials)
        for tuner_id in ("tuner0", "tuner1"):
            procs[tuner_id] = _start(tuner_id, tmp_path, port, max_trials)
        deadline = time.monotonic() + 80
        for tuner_id in ("tuner0", "tuner1", "chief"):
            # The chief polls every 20 s once a worker stopped while another still ran.
            remaining = max(1.0, deadline - time.monotonic())
            rc = procs[tuner_id].wait(timeout=remaining)
            output = (tmp_path / f"{tuner_id}.log").read_text()[-3000:]
            assert rc == 0, f"{tuner_id} exited with {rc}:\n{output}"
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=30)

    project = tmp_path / worker.PROJECT
    trial_ids = [f"{i:02d}" for i in range(max_trials)]  # keras-tuner pads to len("10")
    state = json.loads((project / "oracle.json").read_text())
    assert state["controller"]["updates"] == max_trials
    assert state["controller"]["samples"] == {}
    assert (project / f"controller_{max_trials:06d}.npz").exists()
    trials = [json.loads((project / f"trial_{i}" / "trial.json").read_text()) for i in trial_ids]
    assert [t["status"] for t in trials] == ["COMPLETED"] * max_trials
    for t in trials:
        values = t["hyperparameters"]["values"]
        assert t["score"] == pytest.approx(worker.synthetic_score(values))

    log = [line.split() for line in (project / "runs.log").read_text().splitlines()]
    done = [(trial_id, tuner_id) for event, trial_id, tuner_id in log if event == "done"]
    assert sorted(trial_id for trial_id, _ in done) == trial_ids
    assert {tuner_id for _, tuner_id in done} == {"tuner0", "tuner1"}
