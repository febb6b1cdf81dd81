"""Edge targets: ONNX parity in onnxruntime, TFLite float16/int8, and the TensorRT / TF-TRT
paths (scripts here, clear errors where TensorRT is missing)."""

import os
import subprocess
import sys

import keras
import numpy as np
import onnx
import pytest
import tensorflow as tf
from test_serving_common import images, tiny_model

from tfnas.data import NUM_CLASSES, digit_scene_arrays
from tfnas.preprocessing import preprocess
from tfnas.serving import (
    build_engine,
    compare,
    export,
    onnx_predict,
    tflite_predict,
    time_engine,
    to_onnx,
    to_tflite,
)
from tfnas.serving.onnx_export import op_census
from tfnas.serving.quantize import calibration_images, is_qdq_model, quantize_onnx
from tfnas.serving.tensorrt import needs_explicit_quantization, write_trtexec_script
from tfnas.serving.tflite import tflite_input_details
from tfnas.serving.tftrt import has_tensorrt, to_tftrt

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def digits():
    return digit_scene_arrays("train", image_size=32, num_scenes=64, seed=0)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, digits):
    """The tiny model trained a few steps on digit scenes, so its class maps mean something."""
    x, masks = digits
    model = tiny_model(num_classes=NUM_CLASSES, aux=False)
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(preprocess(x), masks[:, 2::4, 2::4], batch_size=16, epochs=4, verbose=0)
    return export(model, str(tmp_path_factory.mktemp("exports")), "digits", warmup_images=x[:1])


@pytest.mark.parametrize("signature", ["serving_default", "logits"])
def test_onnx_parity_and_names(trained, tmp_path, signature):
    path = str(tmp_path / "model.onnx")
    report = to_onnx(trained, path, signature=signature)
    graph = onnx.load(path).graph
    assert [i.name for i in graph.input] == ["images"]
    expected = ["classes", "probabilities"] if signature == "serving_default" else ["logits"]
    assert sorted(o.name for o in graph.output) == expected == report["output_names"]
    assert report["max_abs_diff"] and all(d < 1e-4 for d in report["max_abs_diff"].values())
    assert all(f == 0.0 for f in report["mismatch_fraction"].values())
    # dynamic sizes: another image size runs too
    out = onnx_predict(
        path, images(1, 40, 24) if signature == "serving_default" else preprocess(images(1, 40, 24)).numpy()
    )
    assert out[expected[0]].shape[:3] == ((1, 40, 24) if signature == "serving_default" else (1, 10, 6))


def test_onnx_unknown_signature(trained, tmp_path):
    with pytest.raises(
        ValueError, match=r"signature 'probs' is not in .* it has \['logits', 'serving_default'"
    ):
        to_onnx(trained, str(tmp_path / "m.onnx"), signature="probs")


def test_tflite_float32_float16_and_int8(trained, tmp_path, digits):
    x, _ = digits
    sample = x[-8:]
    fp32 = compare(trained, to_tflite(trained, str(tmp_path / "fp32.tflite")), sample)
    assert fp32["max_abs_diff"] < 1e-4 and fp32["pixel_agreement"] == 1.0
    fp16 = compare(trained, to_tflite(trained, str(tmp_path / "fp16.tflite"), "float16"), sample)
    assert fp16["max_abs_diff"] < 2e-2 and fp16["pixel_agreement"] > 0.99
    int8_path = to_tflite(trained, str(tmp_path / "int8.tflite"), "int8", representative_data=x[:32])
    int8 = compare(trained, int8_path, sample)
    # Score drop of full-integer quantization on a model trained for a few steps: the class maps
    # agree with TensorFlow's on most pixels (measured ~0.97-1.0); the floor is deliberately loose.
    assert np.isfinite(int8["max_abs_diff"]) and int8["pixel_agreement"] > 0.9 and int8["miou_vs_tf"] > 0.5
    assert int8["size_bytes"] < fp32["size_bytes"]
    assert tflite_predict(int8_path, x[:2]).shape == (2, 8, 8, NUM_CLASSES)


def test_tflite_from_keras_model_and_errors(tmp_path):
    path = to_tflite(tiny_model(), str(tmp_path / "k.tflite"))  # dict training model accepted
    logits = tflite_predict(path, images(1, 16, 16))
    expected = tiny_model()(preprocess(images(1, 16, 16)))["logits"]
    np.testing.assert_allclose(logits, expected, atol=1e-5)
    with pytest.raises(ValueError, match="int8 quantization needs representative_data"):
        to_tflite(tiny_model(), str(tmp_path / "q.tflite"), "int8")
    with pytest.raises(ValueError, match="quantization 'int4' must be one of"):
        to_tflite(tiny_model(), str(tmp_path / "q.tflite"), "int4")


def test_tensorrt_not_installed_here_says_what_to_do(tmp_path):
    with pytest.raises(RuntimeError, match="TensorRT is not installed here.*Jetson.*trtexec"):
        build_engine(str(tmp_path / "m.onnx"), str(tmp_path / "m.engine"))
    with pytest.raises(RuntimeError, match="TensorRT is not installed here"):
        time_engine(str(tmp_path / "m.engine"))
    with pytest.raises(ValueError, match="precision 'fp8' must be one of"):
        build_engine(str(tmp_path / "m.onnx"), str(tmp_path / "m.engine"), precision="fp8")


def test_trtexec_script(trained, tmp_path):
    onnx_path = str(tmp_path / "logits.onnx")
    to_onnx(trained, onnx_path, signature="logits")
    (tmp_path / "cache").write_bytes(b"TRT-calibration")
    script = write_trtexec_script(
        onnx_path, str(tmp_path / "jetson"), "int8", (1, 64, 96, 3), calibration_cache=str(tmp_path / "cache")
    )
    text = open(script).read()
    assert '--onnx="$HERE/model.onnx" --saveEngine="$HERE/model_int8.engine" --int8 --fp16' in text
    assert '--calib="$HERE/calibration.cache"' in text and "--shapes=images:1x64x96x3" in text
    assert '--loadEngine="$HERE/model_int8.engine"' in text and "--iterations=200" in text
    assert sorted(os.listdir(tmp_path / "jetson")) == ["build_engine.sh", "calibration.cache", "model.onnx"]
    assert os.access(script, os.X_OK)
    subprocess.run(["sh", "-n", script], check=True)  # valid shell
    fp16 = open(write_trtexec_script(onnx_path, str(tmp_path / "j16"), "fp16")).read()
    assert " --fp16 --shapes=images:1x512x512x3" in fp16 and "--int8" not in fp16


def test_tftrt_error_points_to_onnx(trained, tmp_path):
    assert not has_tensorrt()
    with pytest.raises(RuntimeError, match=r"TF-TRT is not available.*tfnas convert SAVED_MODEL --to onnx"):
        to_tftrt(trained, str(tmp_path / "trt"))
    with pytest.raises(ValueError, match="precision 'FP4' must be one of"):
        to_tftrt(trained, str(tmp_path / "trt"), precision="fp4")


def test_tftrt_runs_as_a_script_without_tfnas_dependencies(trained, tmp_path):
    code = (
        "import runpy, sys\n"
        "sys.argv = ['serving/tftrt.py'] + sys.argv[1:]\n"
        "try:\n    runpy.run_path('serving/tftrt.py', run_name='__main__')\n"
        "except SystemExit as e:\n"
        "    print('rc', e.code, sorted(m for m in ('keras_tuner', 'tf2onnx', 'onnx', 'tfnas') if m in sys.modules))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, trained, str(tmp_path / "out")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "rc 1 []" in result.stdout, result.stdout + result.stderr[-2000:]
    assert "TF-TRT is not available" in result.stderr


# --- the deployment size ---------------------------------------------------------------------
def test_onnx_fixed_size_parity_and_shapes(trained, tmp_path):
    path = str(tmp_path / "fixed.onnx")
    report = to_onnx(trained, path, signature="serving_default", input_size="32x48", batch_size=2)
    assert report["input_shape"] == [2, 32, 48, 3] and report["output_stride"] == [4, 4]
    graph = onnx.load(path).graph
    dims = [[d.dim_value for d in v.type.tensor_type.shape.dim] for v in graph.input]
    assert dims == [[2, 32, 48, 3]]
    assert (
        all(d < 1e-4 for d in report["max_abs_diff"].values())
        and report["mismatch_fraction"]["classes"] == 0.0
    )
    # native ops only: one NCHW transpose in, one out (the class map and probabilities share it)
    census = op_census(path)
    assert census["Transpose"] <= 2 and census["Shape"] == 0 and census["Resize"] == 1
    assert report["nodes"] == sum(census.values())


def test_onnx_size_not_divisible_by_the_output_stride(trained, tmp_path):
    with pytest.raises(
        ValueError,
        match=r"input size 30x32 does not fit.*height 30 is not divisible by the "
        r"network's output stride 4.*e\.g\. 32x32",
    ):
        to_onnx(trained, str(tmp_path / "m.onnx"), input_size=(30, 32))
    with pytest.raises(ValueError, match="input size '512' must be HxW"):
        to_onnx(trained, str(tmp_path / "m.onnx"), input_size="512")


def test_tflite_at_fixed_size(trained, tmp_path, digits):
    x, _ = digits
    path = to_tflite(trained, str(tmp_path / "fixed.tflite"), input_size=(32, 32), batch_size=4)
    details = tflite_input_details(path)
    assert list(details["shape"]) == [4, 32, 32, 3]
    got = tflite_predict(path, x[:4])
    expected = tf.saved_model.load(trained).signatures["logits"](images=preprocess(x[:4]))["logits"]
    np.testing.assert_allclose(got, expected, atol=1e-4)
    int8 = to_tflite(
        trained, str(tmp_path / "int8.tflite"), "int8", representative_data=x[:8], input_size=(32, 32)
    )
    assert tflite_predict(int8, x[:1]).shape == (1, 8, 8, NUM_CLASSES)
    with pytest.raises(ValueError, match="height 30 is not divisible by the network's output stride 4"):
        to_tflite(trained, str(tmp_path / "bad.tflite"), input_size=(30, 32))


def test_int8_qdq_onnx_runs_and_agrees_with_float(trained, tmp_path, digits):
    x, _ = digits
    float_path = str(tmp_path / "logits.onnx")
    to_onnx(trained, float_path, signature="logits", input_size=(32, 32))
    assert not is_qdq_model(float_path)
    report = quantize_onnx(float_path, str(tmp_path / "int8.onnx"), x[:32])
    assert report["calibration_images"] == 32 and is_qdq_model(report["path"])
    census = op_census(report["path"])
    assert (
        census["QuantizeLinear"] >= census["Conv"] > 0
        and census["DequantizeLinear"] > census["QuantizeLinear"]
    )
    sample = x[-8:]
    want = np.concatenate(
        [onnx_predict(float_path, preprocess(sample[i : i + 1]).numpy())["logits"] for i in range(8)]
    )
    got = np.concatenate(
        [onnx_predict(report["path"], preprocess(sample[i : i + 1]).numpy())["logits"] for i in range(8)]
    )
    agreement = float(np.mean(want.argmax(-1) == got.argmax(-1)))
    # symmetric per-channel int8 on a model trained a few steps: measured ~0.97-1.0
    assert agreement > 0.9, agreement
    assert not np.array_equal(want, got)  # it really computes in int8


def test_quantize_errors(trained, tmp_path):
    with pytest.raises(ValueError, match="calibration method 'kl' must be one of"):
        quantize_onnx(str(tmp_path / "m.onnx"), str(tmp_path / "q.onnx"), images(2), method="kl")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        quantize_onnx(str(tmp_path / "m.onnx"), str(tmp_path / "q.onnx"), images(2))
    with pytest.raises(FileNotFoundError, match="calibration image folder"):
        calibration_images(str(tmp_path / "nope"))
    resized = calibration_images([images(1, 16, 16), images(2, 40, 24)], size=(32, 32))
    assert resized.shape == (3, 32, 32, 3) and resized.dtype == np.uint8


def test_tensorrt_int8_needs_qdq_on_tensorrt_10(tmp_path):
    # No TensorRT here: the version rule is checked on its own.
    assert needs_explicit_quantization("10.3.0") and not needs_explicit_quantization("8.6.2")


def test_trtexec_script_and_builder_for_the_fixed_size_qdq_model(trained, tmp_path, digits):
    x, _ = digits
    fixed = str(tmp_path / "logits.onnx")
    to_onnx(trained, fixed, signature="logits", input_size=(32, 32))
    qdq = quantize_onnx(fixed, str(tmp_path / "int8.onnx"), x[:8])["path"]
    text = open(write_trtexec_script(qdq, str(tmp_path / "jetson"), "int8")).read()
    # the shape is in the model (trtexec rejects --shapes for static models); scales come from Q/DQ
    assert '--saveEngine="$HERE/model_int8.engine" --int8 --fp16 --memPoolSize' in text
    assert "--shapes" not in text and "--calib" not in text and "placeholders" not in text
    assert "Input images: 1x32x32x3 (fixed in the model)" in text and "explicit quantization" in text
    subprocess.run(["sh", "-n", str(tmp_path / "jetson" / "build_engine.sh")], check=True)
    with pytest.raises(ValueError, match=r"fixed input shape \(1, 32, 32, 3\), not \(1, 64, 64, 3\)"):
        write_trtexec_script(fixed, str(tmp_path / "j2"), "fp16", (1, 64, 64, 3))
    # a float model without calibration data: quantize it (checked before TensorRT is imported)
    with pytest.raises(ValueError, match="int8 needs a Q/DQ model.*quantize_onnx"):
        build_engine(fixed, str(tmp_path / "m.engine"), precision="int8")
    with pytest.raises(RuntimeError, match="TensorRT is not installed here"):
        build_engine(qdq, str(tmp_path / "m.engine"), precision="int8")  # Q/DQ needs no calibration data
