"""Export for every task (issue 12): the serving signatures return `task.postprocess` of the
network, the metadata records the task, `tfnas export RUN_DIR` exports for the run's task, ONNX
parity, the TFLite comparison, the INT8 refusals and the preview server.

Tiny auxcell networks (width 8, alpha 0.35) give the real spaces' graphs; a three-conv network
with the task's head gives the same export path in a second, for the conversion tests.
"""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_serving_common import NUM_CLASSES, tiny_model

from tfnas.cli import main
from tfnas.preprocessing import preprocess
from tfnas.serving import (
    SIGNATURES,
    TASK_OUTPUTS,
    PreviewServer,
    ServingClient,
    export,
    onnx_predict,
    quantize_onnx,
    read_metadata,
    read_task,
    to_onnx,
    to_tflite,
)
from tfnas.serving.cli import run_task
from tfnas.serving.savedmodel import signatures
from tfnas.serving.tflite import compare
from tfnas.serving.tftrt import to_tftrt
from tfnas.spaces import get_space
from tfnas.tasks import get_task

TASKS = ["depth", "pose", "pose-multi"]
#: (H, W): not square, so that a swapped x / y or a stride read from the wrong side shows; a
#: multiple of 32, the auxcell networks' output stride (what a fixed-size ONNX conversion needs).
SIZE = (32, 64)


def images(n=2, size=SIZE, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, *size, 3), dtype=np.uint8)


def scale_head(model, task, factor):
    """Scales the head's kernel so that outputs are of order 1 (depths of metres), not 1e-3."""
    name = task.head_conv_name()
    (conv,) = [layer for layer in model._flatten_layers() if layer.name == name]  # noqa: SLF001
    kernel, bias = conv.get_weights()
    conv.set_weights([kernel * factor, bias])


def auxcell(task_name, seed=0):
    """A tiny auxcell arch0 training model for a task, with outputs of order 1."""
    keras.utils.set_random_seed(seed)
    space = get_space("auxcell")(task=task_name, width=8, alpha=0.35)
    model = space.build_genotype("arch0")
    scale_head(model, space.task, 1000.0)
    return space, model


def tiny(task, seed=0):
    """Three stride-2 convs and the task's head (stride-4 heads upsample the stride-8 features)."""
    keras.utils.set_random_seed(seed)
    image = keras.Input((None, None, 3), name="image")
    x = image
    for _ in range(3):
        x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    model = keras.Model(image, task.head(x, feature_stride=8), name=f"tiny_{task.name}")
    scale_head(model, task, 30.0)
    return model


def postprocessed(task, model, batch):
    """`task.postprocess` of the Keras model's main output, as numpy."""
    out = model(preprocess(batch), training=False)
    logits = out["logits"] if isinstance(out, dict) else out
    return {k: v.numpy() for k, v in task.postprocess(logits, batch.shape[1:3]).items()}


def assert_outputs_close(got, want, atol=1e-4):
    assert sorted(got) == sorted(want)
    for key, value in want.items():
        assert got[key].shape == value.shape and got[key].dtype == value.dtype, key
        np.testing.assert_allclose(got[key], value, atol=atol * max(1.0, np.abs(value).max()), err_msg=key)


def expected_shapes(task_name, n=2, size=SIZE):
    h, w = size[0] // 4, size[1] // 4
    return {
        "depth": {"depth": (n, *size)},
        "pose": {"heatmaps": (n, h, w, 17), "keypoints": (n, 17, 3)},
        "pose-multi": {
            "heatmaps": (n, h, w, 17),
            "tags": (n, h, w, 17),
            "peak_scores": (n, 17, 30),
            "peak_positions": (n, 17, 30, 2),
            "peak_tags": (n, 17, 30, 1),
        },
    }[task_name]


def check_task_outputs(task_name, out, n=2):
    """Names, shapes, dtypes and ranges of one run of `serving_default` on `n` images."""
    assert sorted(out) == TASK_OUTPUTS[task_name]
    assert {k: v.shape for k, v in out.items()} == expected_shapes(task_name, n)
    assert all(v.dtype == np.float32 for v in out.values())
    height, width = SIZE
    if task_name == "depth":
        assert out["depth"].min() >= 0 and out["depth"].max() > 0.1
    else:
        points = out["keypoints"] if task_name == "pose" else out["peak_positions"]
        assert 0 <= points[..., 0].min() and points[..., 0].max() < width  # x in input pixels
        assert 0 <= points[..., 1].min() and points[..., 1].max() < height  # y
        assert points[..., 0].max() > height  # x spans the wider side: not a swapped axis


# --- SavedModel of the auxcell space ------------------------------------------------------
# An auxcell export takes about 15 s and its ONNX conversion 30 s, so the auxcell network is
# exported for pose-multi (the largest serving graph) only: `tfnas export RUN_DIR` below
# exports an auxcell depth network, tests/test_tasks_search.py exports every task's searched
# network, and the tiny models further down cover ONNX, TFLite and serving for every task.
@pytest.fixture(scope="module", params=["pose-multi"])
def exported(request, tmp_path_factory):
    space, model = auxcell(request.param)
    path = export(model, str(tmp_path_factory.mktemp("exports")), request.param, task=space.task)
    return space, model, path, tf.saved_model.load(path)


def test_serving_signatures_return_the_task_postprocess_of_the_network(exported):
    space, model, _, loaded = exported
    batch = images()
    out = {k: v.numpy() for k, v in loaded.signatures["serving_default"](images=tf.constant(batch)).items()}
    check_task_outputs(space.task.name, out)
    assert_outputs_close(out, postprocessed(space.task, model, batch))
    floats = loaded.signatures["serving_float"](images=tf.constant(batch.astype(np.float32)))
    assert_outputs_close({k: v.numpy() for k, v in floats.items()}, out, atol=1e-6)
    logits = loaded.signatures["logits"](images=preprocess(batch))["logits"].numpy()
    want = model(preprocess(batch), training=False)["logits"].numpy()
    assert logits.shape[-1] == space.task.output_channels
    np.testing.assert_allclose(logits, want, atol=1e-4 * np.abs(want).max())


def test_metadata_records_the_task(exported):
    space, _, path, _ = exported
    meta = read_metadata(path)
    assert meta["task"] == json.loads(json.dumps({"name": space.task.name, **space.task.config()}))
    assert meta["num_classes"] is None and meta["output_channels"] == space.task.output_channels
    assert meta["signatures"] == signatures(space.task)
    task = read_task(path)
    assert type(task) is type(space.task) and task.config() == space.task.config()


# --- tfnas export RUN_DIR -----------------------------------------------------------------
def write_run(run_dir, space, model, space_config):
    """A search directory with one COMPLETED trial of arch0 and its weights."""
    os.makedirs(os.path.join(run_dir, "trial_00"))
    with open(os.path.join(run_dir, "run.json"), "w") as f:
        json.dump({"space": "auxcell", "space_config": space_config}, f)
    values = space.values(space.PUBLISHED["arch0"])
    trial = {"trial_id": "00", "status": "COMPLETED", "score": 0.5, "hyperparameters": {"values": values}}
    with open(os.path.join(run_dir, "trial_00", "trial.json"), "w") as f:
        json.dump(trial, f)
    model.save_weights(os.path.join(run_dir, "trial_00", "model.weights.h5"))


def test_tfnas_export_run_dir_exports_for_the_run_task(tmp_path, capsys):
    space, model = auxcell("depth")
    run_dir = str(tmp_path / "run")
    write_run(run_dir, space, model, space.config())
    assert main(["export", run_dir, "--base", str(tmp_path / "exports"), "--name", "depth"]) == 0
    path = capsys.readouterr().out.strip().splitlines()[-1]
    assert read_metadata(path)["task"]["name"] == "depth"
    batch = images(1)
    out = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(batch))
    assert_outputs_close({k: v.numpy() for k, v in out.items()}, postprocessed(space.task, model, batch))


def test_run_json_without_task_is_segmentation(tmp_path):
    config = {"num_classes": 5, "width": 8, "alpha": 0.35}  # a run.json from before tasks
    os.makedirs(tmp_path / "run")
    with open(tmp_path / "run" / "run.json", "w") as f:
        json.dump({"space": "auxcell", "space_config": config}, f)
    task = run_task(str(tmp_path / "run"))
    assert task.name == "segmentation" and task.num_classes == 5


# --- the export path with tiny networks: checks, ONNX, TFLite, INT8, preview ---------------
@pytest.fixture(scope="module")
def tiny_exports(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("tiny_exports"))
    found = {}
    for name in TASKS:
        task = get_task(name)
        model = tiny(task)
        found[name] = (task, model, export(model, base, name, task=name))
    return base, found


def test_export_refuses_a_task_that_does_not_fit_the_model(tiny_exports, tmp_path):
    _, found = tiny_exports
    depth_model, pose_model = found["depth"][1], found["pose"][1]
    with pytest.raises(ValueError, match=r"predicts 1 channel\(s\), but a segmentation model"):
        export(depth_model, str(tmp_path), "m")  # task left out: segmentation
    with pytest.raises(ValueError, match="predicts 17 channels, but the task DepthTask"):
        export(pose_model, str(tmp_path), "m", task="depth")
    with pytest.raises(ValueError, match="'classify' is unknown"):
        export(pose_model, str(tmp_path), "m", task="classify")
    assert not os.listdir(tmp_path)


def test_segmentation_export_is_unchanged_and_old_metadata_reads_as_segmentation(tmp_path):
    path = export(tiny_model(), str(tmp_path), "segmenter")  # task left out: segmentation
    meta = read_metadata(path)
    assert meta["task"]["name"] == "segmentation" and meta["task"]["num_classes"] == NUM_CLASSES
    assert meta["num_classes"] == NUM_CLASSES and meta["signatures"] == SIGNATURES
    del meta["task"]  # what an export from before tasks holds
    with open(os.path.join(path, "assets.extra", "tfnas.json"), "w") as f:
        json.dump(meta, f)
    task = read_task(path)
    assert task.name == "segmentation" and task.num_classes == NUM_CLASSES


@pytest.mark.parametrize("task_name", TASKS)
def test_onnx_serving_default_matches_keras_and_decodes_its_own_heatmaps(tiny_exports, task_name, tmp_path):
    _, found = tiny_exports
    task, model, path = found[task_name]
    batch = images(1)
    report = to_onnx(path, str(tmp_path / "m.onnx"), input_size=SIZE, sample_inputs=batch)
    assert report["task"] == task_name and report["output_names"] == TASK_OUTPUTS[task_name]
    got = onnx_predict(str(tmp_path / "m.onnx"), batch)
    check_task_outputs(task_name, got, n=1)
    want = postprocessed(task, model, batch)
    assert_outputs_close(got, want)
    for key, tolerance in report["tolerance"].items():  # relative to the output's scale
        assert tolerance == pytest.approx(1e-4 * max(1.0, np.abs(want[key]).max()))
    decoded = {
        "depth": [],
        "pose": ["keypoints"],
        "pose-multi": ["peak_positions", "peak_scores", "peak_tags"],
    }
    assert sorted(report["decode_max_abs_diff"]) == decoded[task_name]


def test_onnx_logits_of_a_keras_source_with_its_task(tiny_exports, tmp_path):
    _, found = tiny_exports
    task, model, _ = found["pose-multi"]
    batch = images(2, size=(16, 16), seed=1)
    report = to_onnx(model, str(tmp_path / "m.onnx"), signature="logits", task=task)  # dynamic size
    assert report["task"] == "pose-multi" and report["output_names"] == ["logits"]
    got = onnx_predict(str(tmp_path / "m.onnx"), preprocess(batch).numpy())["logits"]
    want = model(preprocess(batch)).numpy()
    assert got.shape == (2, 4, 4, 34)
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max())


def test_tflite_compare_reports_the_task_errors(tiny_exports, tmp_path):
    _, found = tiny_exports
    batch = images(2)
    reports = {}
    for name in ("depth", "pose"):
        path = found[name][2]
        to_tflite(path, str(tmp_path / f"{name}.tflite"))
        reports[name] = compare(path, str(tmp_path / f"{name}.tflite"), batch)
    depth, pose = reports["depth"], reports["pose"]
    assert depth["task"] == "depth" and "pixel_agreement" not in depth
    assert depth["max_rel_diff"] < 1e-5 and depth["depth_max_abs_diff"] < 1e-4
    assert depth["depth_mean_abs_diff"] <= depth["depth_max_abs_diff"]
    assert (
        pose["task"] == "pose" and pose["keypoint_agreement"] == 1.0 and pose["keypoint_max_distance"] < 1e-3
    )


def test_int8_refuses_graphs_that_decode_heatmaps(tiny_exports, tmp_path):
    _, found = tiny_exports
    path = found["pose"][2]
    to_onnx(path, str(tmp_path / "pose.onnx"), input_size=SIZE)
    with pytest.raises(ValueError, match=r"decodes pose heatmaps in the graph \(outputs \['keypoints'\]\)"):
        quantize_onnx(str(tmp_path / "pose.onnx"), str(tmp_path / "pose_int8.onnx"), images(4))
    with pytest.raises(ValueError, match="INT8 of the pose export's 'serving_default' signature"):
        to_tftrt(path, str(tmp_path / "trt"), "INT8", calibration_data=[images(1)])
    assert not os.path.exists(tmp_path / "pose_int8.onnx")


def test_preview_server_and_client_return_the_task_outputs(tiny_exports):
    base, found = tiny_exports
    batch = images(2, seed=3)
    with PreviewServer(base, rest_port=0, grpc_port=0) as server:
        client = ServingClient(server.rest_url, server.grpc_target)
        for name in ("depth", "pose-multi"):
            task, model, _ = found[name]
            want = postprocessed(task, model, batch)
            for got in (
                client.predict(name, batch),  # row format; depth is a single-output signature
                client.predict(name, batch, form="inputs"),
                client.predict_grpc(name, batch),
            ):
                assert_outputs_close(got, want)
        client.close()


# --- ONNX of the auxcell space ------------------------------------------------------------
@pytest.mark.slow
def test_onnx_of_auxcell_exports_matches_keras(exported, tmp_path):
    """The serving signature's graph, network and postprocess together, against Keras.

    One conversion (each costs about 15 s): the `logits` signature's conversion is checked
    against Keras in tests/test_serving_deploy_graphs.py for every published network, and the
    postprocessed outputs compared here are a function of the logits.
    """
    space, model, path, _ = exported
    batch = images(1, seed=5)
    report = to_onnx(path, str(tmp_path / "default.onnx"), input_size=SIZE, sample_inputs=batch)
    assert report["output_names"] == TASK_OUTPUTS[space.task.name]
    got = onnx_predict(str(tmp_path / "default.onnx"), batch)
    check_task_outputs(space.task.name, got, n=1)
    assert_outputs_close(got, postprocessed(space.task, model, batch))
