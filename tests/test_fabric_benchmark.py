"""`benchmarks/bench_fabric.py --quick` runs and writes counts that agree with the analytic costs."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_bench_fabric_quick(tmp_path):
    output = tmp_path / "fabric.json"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    completed = subprocess.run(
        [
            sys.executable,
            os.path.join(ROOT, "benchmarks", "bench_fabric.py"),
            "--quick",
            "--output",
            str(output),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    result = json.loads(output.read_text())
    row = result["sizes"]["64"]
    assert row["counted_all_heads"] == row["analytic_all_heads"] > 0
    assert (
        0 < row["eel_4"]["madds"] < row["eel_7"]["madds"] < row["logits"]["madds"] < row["counted_all_heads"]
    )
    assert result["params"]["total"] == sum(result["param_groups"].values())
