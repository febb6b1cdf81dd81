"""`tfnas export | convert | serve` argument parsing, help and the convert handler."""

import argparse
import json
import os

import pytest
from test_serving_common import tiny_model

from tfnas.cli import main
from tfnas.serving import export
from tfnas.serving.cli import register


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    return export(tiny_model(), str(tmp_path_factory.mktemp("exports")), "tiny")


def parsers():
    parser = argparse.ArgumentParser(prog="tfnas")
    return parser, register(parser.add_subparsers(dest="command"))


def test_help_documents_every_option_with_default():
    _, subs = parsers()
    assert sorted(subs) == ["convert", "export", "serve"]
    texts = {name: " ".join(p.format_help().split()) for name, p in subs.items()}
    for text in [
        "--trial TRIAL",
        "(default: best)",
        "--base BASE",
        "(default: exports)",
        "--name NAME",
        "--version",
    ]:
        assert text in texts["export"]
    for text in [
        "--to {onnx,tensorrt,tftrt,tflite}",
        "--precision {fp32,fp16,int8}",
        "--calibration-images",
        "--out OUT",
        "(default: 17)",
        "(default: 512x512)",
    ]:
        assert text in texts["convert"]
    for text in ["(default: 8501)", "(default: 8500)", "(default: 127.0.0.1)", "not a production server"]:
        assert text in texts["serve"]
    parser, _ = parsers()
    args = parser.parse_args(["serve", "exports"])
    assert (args.base_dir, args.rest_port, args.grpc_port, args.host) == ("exports", 8501, 8500, "127.0.0.1")
    assert args.func.__name__ == "run_serve"


def test_convert_onnx_and_tflite(saved_model, tmp_path, capsys):
    assert main(["convert", saved_model, "--to", "onnx", "--out", str(tmp_path / "m.onnx")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (
        report["output_names"] == ["classes", "probabilities"]
        and report["max_abs_diff"]["probabilities"] < 1e-4
    )
    assert (
        main(
            [
                "convert",
                saved_model,
                "--to",
                "tflite",
                "--precision",
                "fp16",
                "--out",
                str(tmp_path / "m.tflite"),
            ]
        )
        == 0
    )
    assert os.path.getsize(tmp_path / "m.tflite") > 0
    assert main(["convert", saved_model, "--to", "tflite", "--precision", "int8"]) == 1
    assert "int8 needs --calibration-images" in capsys.readouterr().err


def test_convert_tensorrt_writes_jetson_folder_and_tftrt_fails_clearly(saved_model, tmp_path, capsys):
    out = str(tmp_path / "jetson")
    assert main(["convert", saved_model, "--to", "tensorrt", "--out", out, "--input-size", "64x64"]) == 0
    assert sorted(os.listdir(out)) == ["build_engine.sh", "model.onnx"]
    text = open(os.path.join(out, "build_engine.sh")).read()
    assert "# Input images: 1x64x64x3 (fixed in the model)" in text and "--shapes" not in text
    assert "TensorRT is not installed here" in capsys.readouterr().err
    assert main(["convert", saved_model, "--to", "tftrt", "--out", str(tmp_path / "trt")]) == 1
    assert "TF-TRT is not available" in capsys.readouterr().err


def test_export_of_a_missing_run_dir(tmp_path, capsys):
    assert main(["export", str(tmp_path / "nothing")]) == 1
    assert capsys.readouterr().err.strip() == (
        f"tfnas export: error: {str(tmp_path / 'nothing')!r} is not a folder; expected a tfnas "
        "search directory (tfnas search --out)"
    )
    os.makedirs(tmp_path / "empty")
    assert main(["export", str(tmp_path / "empty")]) == 1
    err = capsys.readouterr().err
    assert "run.json does not exist" in err and err.count("\n") == 1
