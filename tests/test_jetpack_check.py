"""tools/jetpack_check.py up to the second TensorFlow: exports and references, the comparison,
the report and its exit status, with this venv's TensorFlow standing in for JetPack's.

The runs in TensorFlow 2.16.1 / 2.17.1 themselves need their venvs (minutes of pip); they are
run by hand and reported in docs/serving.md. One tiny network (DPC top1_cityscapes at width 8,
alpha 0.35) is exported once for the module.
"""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

import jetpack_check  # noqa: E402

MODEL = "dpc-top1_cityscapes-segmentation"  # the quickest to export


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A work folder with one tiny export, its inputs and references (as the script writes it)."""
    path = str(tmp_path_factory.mktemp("jetpack"))
    jetpack_check.export_models(path, [MODEL], size=(32, 64), batch=1, tiny=True, log=lambda line: None)
    return path


def test_export_writes_manifest_inputs_and_the_references_of_every_signature(work):
    with open(os.path.join(work, jetpack_check.MANIFEST)) as f:
        manifest = json.load(f)
    (model,) = manifest["models"]
    assert model["name"] == MODEL and model["task"] == "segmentation" and manifest["tiny"]
    assert manifest["input"] == [1, 32, 64, 3]
    assert model["signatures"] == {
        "serving_default": ["classes", "probabilities"],
        "serving_float": ["classes", "probabilities"],
        "logits": ["logits"],
    }
    assert os.path.exists(os.path.join(work, model["saved_model"], "saved_model.pb"))
    inputs = np.load(os.path.join(work, f"{MODEL}.inputs.npz"))
    assert inputs["serving_default"].dtype == np.uint8 and inputs["serving_default"].shape == (1, 32, 64, 3)
    np.testing.assert_allclose(inputs["logits"], inputs["serving_default"] / 127.5 - 1.0, atol=1e-6)
    reference = np.load(os.path.join(work, f"{MODEL}.reference.npz"))
    probabilities = reference["serving_default/probabilities"]
    assert probabilities.shape == (1, 32, 64, 19)  # 19 classes, at input size
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(reference["serving_default/classes"], probabilities.argmax(-1))
    # The uint8 and float signatures preprocess the same way.
    np.testing.assert_allclose(reference["serving_float/probabilities"], probabilities, atol=1e-6)
    assert reference["logits/logits"].shape[1:3] == (2, 4)  # stride 16
    # Batch norm set from real activations: logits of order 1, not the 1e-3 of a fresh network
    # that any tolerance would accept.
    assert reference["logits/logits"].std() > 0.1
    assert len(np.unique(reference["serving_default/classes"])) > 1


def test_compare_floats_with_tolerance_and_class_maps_exactly():
    ref = np.array([[0.0, 1.0], [10.0, -2.0]], np.float32)
    ok = jetpack_check.compare(ref + 5e-5, ref)
    assert ok["pass"] and ok["mismatches"] == 0 and ok["max_abs_diff"] == pytest.approx(5e-5, rel=1e-2)
    assert ok["max_abs_reference"] == 10.0
    # 1e-3 off at 10.0 is within atol + rtol * 10 = 1.1e-3; at 0.0 it is not.
    off = ref.copy()
    off[1, 0] += 1e-3
    assert jetpack_check.compare(off, ref)["pass"]
    off[0, 0] += 1e-3
    result = jetpack_check.compare(off, ref)
    assert not result["pass"] and result["mismatches"] == 1
    nan = ref.copy()
    nan[0, 1] = np.nan
    assert jetpack_check.compare(nan, ref) == {
        "max_abs_diff": float("inf"),
        "max_abs_reference": 10.0,
        "mismatches": 1,
        "pass": False,
    }
    classes = np.array([[1, 2, 3]], np.int32)
    assert jetpack_check.compare(classes, classes)["pass"]
    moved = jetpack_check.compare(np.array([[1, 5, 3]], np.int32), classes)
    assert (moved["pass"], moved["mismatches"], moved["max_abs_diff"]) == (False, 1, 3.0)
    shape = jetpack_check.compare(np.zeros((1, 2), np.int32), classes)
    assert not shape["pass"] and "expected int32[1, 3]" in shape["error"]


def test_a_flipped_class_passes_only_where_the_reference_probabilities_tie():
    probabilities = np.array([[[0.5, 0.5, 0.0], [0.7, 0.2, 0.1]]], np.float32)  # (1, 2, 3)
    reference = np.array([[0, 0]], np.int32)
    tie = jetpack_check.compare_classes(np.array([[1, 0]], np.int32), reference, probabilities)
    assert tie["pass"] and (tie["mismatches"], tie["ties"]) == (1, 1)
    flip = jetpack_check.compare_classes(np.array([[0, 1]], np.int32), reference, probabilities)
    assert not flip["pass"] and (flip["mismatches"], flip["ties"]) == (1, 0)
    out_of_range = jetpack_check.compare_classes(np.array([[7, 0]], np.int32), reference, probabilities)
    assert not out_of_range["pass"]
    same = jetpack_check.compare_classes(reference, reference, probabilities)
    assert same["pass"] and same["ties"] == 0


def test_the_script_with_an_existing_interpreter_passes_reports_differences_and_load_errors(work, tmp_path):
    """`--python`: no venv, the loader runs this file in a child process. The work folder holds
    the export twice: with its `logits` reference off by 1.0 in one element (only that output
    may fail; the other outputs agree, the same TensorFlow), and as a `saved_model.pb` that does
    not parse (a load error in the report, not a crash); exit 1."""
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    with open(copy / jetpack_check.MANIFEST) as f:
        manifest = json.load(f)
    (model,) = manifest["models"]
    reference = dict(np.load(copy / f"{MODEL}.reference.npz"))
    reference["logits/logits"][0, 1, 2, 7] += 1.0
    np.savez(copy / "off.reference.npz", **reference)
    os.makedirs(copy / "exports" / "broken" / "1")
    (copy / "exports" / "broken" / "1" / "saved_model.pb").write_bytes(b"not a protobuf")
    shutil.copy(copy / f"{MODEL}.reference.npz", copy / "broken.reference.npz")
    for name in ("off", "broken"):
        shutil.copy(copy / f"{MODEL}.inputs.npz", copy / f"{name}.inputs.npz")
    manifest["models"] = [
        {**model, "name": "off"},
        {**model, "name": "broken", "saved_model": os.path.join("exports", "broken", "1")},
    ]
    with open(copy / jetpack_check.MANIFEST, "w") as f:
        json.dump(manifest, f)

    out = tmp_path / "report.json"
    completed = subprocess.run(
        [sys.executable, os.path.join(ROOT, "tools", "jetpack_check.py"), "--python", sys.executable]
        + ["--work", str(copy), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 1, completed.stdout + completed.stderr
    with open(out) as f:
        report = json.load(f)
    assert report["pass"] is False and [m["name"] for m in report["models"]] == ["off", "broken"]
    (run,) = report["runs"]
    assert run["status"] == "ok" and run["tensorflow"] == tf.__version__
    off, broken = run["models"]["off"], run["models"]["broken"]
    assert off["load"] == "ok" and not off["pass"]
    assert set(off["signatures"]) == {"serving_default", "serving_float", "logits"}
    assert off["signatures"]["logits"]["logits"]["mismatches"] == 1
    assert off["signatures"]["logits"]["logits"]["max_abs_diff"] == pytest.approx(1.0, abs=1e-5)
    for sig in ("serving_default", "serving_float"):
        for check in off["signatures"][sig].values():
            assert check["pass"] and check["mismatches"] == 0 and check["max_abs_diff"] < 1e-5, (sig, check)
    assert not broken["pass"] and broken["signatures"] == {} and broken["max_abs_diff"] is None
    assert "saved_model" in broken["load"].lower() or "pars" in broken["load"].lower(), broken["load"]
    assert "| off |" in completed.stdout and "FAIL, max diff 1.0e+00" in completed.stdout
    assert "| broken |" in completed.stdout and "load FAILED" in completed.stdout


def test_a_venv_that_cannot_be_made_names_the_version(tmp_path):
    (tmp_path / "file").write_text("a file where the venv folder should go")
    with pytest.raises(jetpack_check.SetupError, match=r"TensorFlow 2\.16\.1: .*-m venv .* failed"):
        jetpack_check.ensure_venv("2.16.1", str(tmp_path / "file"), log=lambda line: None)


def test_a_pip_failure_names_the_version_and_shows_the_end_of_its_output(tmp_path):
    """A venv without pip (made here, as a user's half-made one would be) is reused as it is,
    so the install itself fails: the error names version, requirement and pip's last words."""
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([base, "-m", "venv", "--without-pip", str(tmp_path / "tf-2.17.1")], check=True)
    with pytest.raises(jetpack_check.SetupError) as error:
        jetpack_check.ensure_venv("2.17.1", str(tmp_path), log=lambda line: None)
    text = str(error.value)
    assert text.startswith("TensorFlow 2.17.1: `pip install tensorflow-cpu==2.17.1` into ")
    assert "No module named pip" in text
    assert not (tmp_path / "tf-2.17.1" / jetpack_check.VENV_MARKER).exists()


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--versions", "2.16"], "not a TensorFlow version"),
        (["--models", "auxcell-arch9"], "unknown"),
        (["--size", "50x64"], "multiples of 32"),
        (["--load-only", "/nonexistent"], "manifest.json"),
    ],
)
def test_bad_arguments_exit_2_naming_the_value(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        jetpack_check.main(argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
