"""SavedModel export for TF Serving: signatures, parity with Keras, versions, metadata,
warm-up requests, saved_model_cli, models.config."""

import datetime
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2
from test_serving_common import NUM_CLASSES, images, keras_logits, tiny_model

from tfnas.preprocessing import preprocess
from tfnas.serving import (
    ModelConfig,
    export,
    models_config_text,
    next_version,
    read_metadata,
    read_models_config,
    read_warmup_requests,
    write_models_config,
)

SAVED_MODEL_CLI = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("exports"))
    model = tiny_model()
    path = export(
        model, base, "tiny", metadata={"space": "test", "genotype": [[1, 2], [3]], "miou": np.float32(0.5)}
    )
    return model, base, path


def test_export_writes_version_one_with_three_signatures(exported):
    model, base, path = exported
    assert path == os.path.join(base, "tiny", "1")
    assert os.path.exists(os.path.join(path, "saved_model.pb"))
    loaded = tf.saved_model.load(path)
    assert sorted(loaded.signatures) == ["logits", "serving_default", "serving_float"]
    spec = loaded.signatures["serving_default"].structured_input_signature[1]["images"]
    assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, None, None, 3]
    # training-only aux_0 head is not in the SavedModel: 3 conv kernels + 3 biases only
    assert len(loaded.model_variables) == 6


@pytest.mark.parametrize("height,width", [(32, 32), (48, 40)])
def test_loaded_savedmodel_matches_keras(exported, height, width):
    model, _, path = exported
    loaded = tf.saved_model.load(path)
    batch = images(2, height, width, seed=height)
    logits = keras_logits(model, batch)
    got = loaded.signatures["logits"](images=preprocess(batch))["logits"].numpy()
    np.testing.assert_allclose(got, logits, atol=1e-5)
    assert got.shape == (2, (height + 3) // 4, (width + 3) // 4, NUM_CLASSES)

    resized = tf.image.resize(logits, (height, width), method="bilinear")
    want_probabilities = tf.nn.softmax(resized).numpy()
    for signature, inputs in [("serving_default", batch), ("serving_float", batch.astype(np.float32))]:
        out = loaded.signatures[signature](images=tf.constant(inputs))
        assert out["classes"].dtype == tf.int32 and out["classes"].shape == (2, height, width)
        np.testing.assert_allclose(out["probabilities"].numpy(), want_probabilities, atol=1e-5)
        np.testing.assert_array_equal(out["classes"].numpy(), np.argmax(resized, axis=-1))


def test_metadata_has_user_and_computed_fields(exported):
    model, _, path = exported
    meta = read_metadata(path)
    assert meta["space"] == "test" and meta["genotype"] == [[1, 2], [3]] and meta["miou"] == 0.5
    assert meta["num_classes"] == NUM_CLASSES
    assert meta["params"] == model.count_params() - 365  # aux head excluded
    assert meta["tfnas_version"] and meta["version"] == 1 and meta["name"] == "tiny"
    when = datetime.datetime.fromisoformat(meta["export_time"])
    assert abs((datetime.datetime.now(datetime.timezone.utc) - when).total_seconds()) < 3600


def test_warmup_file_parses_as_prediction_log(exported):
    _, _, path = exported
    requests = read_warmup_requests(path)
    assert len(requests) == 1
    request = requests[0]
    assert request.model_spec.name == "tiny" and request.model_spec.signature_name == "serving_default"
    array = tf.make_ndarray(request.inputs["images"])
    assert array.dtype == np.uint8 and array.shape == (1, 64, 64, 3)


def test_next_free_version_custom_warmup_and_existing_version(exported, tmp_path):
    model, _, _ = exported
    base = str(tmp_path)
    assert next_version(base, "m") == 1
    os.makedirs(os.path.join(base, "m", "7"))
    os.makedirs(os.path.join(base, "m", "not-a-version"))
    assert next_version(base, "m") == 8
    warm = [images(1, 16, 24), images(3, 8, 8)[0]]
    path = export(model, base, "m", warmup_images=warm)
    assert path.endswith(os.path.join("m", "8"))
    shapes = [tf.make_ndarray(r.inputs["images"]).shape for r in read_warmup_requests(path)]
    assert shapes == [(1, 16, 24, 3), (1, 8, 8, 3)]
    with pytest.raises(FileExistsError, match="already exists"):
        export(model, base, "m", version=8)
    with pytest.raises(ValueError, match="positive integer"):
        export(model, base, "m", version=0)
    with pytest.raises(ValueError, match=r"warm-up image 0 has shape \(4, 4\)"):
        export(model, base, "m", warmup_images=[np.zeros((4, 4))])
    assert sorted(os.listdir(os.path.join(base, "m"))) == ["7", "8", "not-a-version"]  # no temp dirs left


def test_saved_model_cli_show_and_run(exported, tmp_path):
    _, _, path = exported
    show = subprocess.run(
        [SAVED_MODEL_CLI, "show", "--dir", path, "--all"], capture_output=True, text=True, check=True
    )
    for text in [
        "signature_def['serving_default']",
        "signature_def['serving_float']",
        "signature_def['logits']",
        "DT_UINT8",
        "outputs['classes']",
        "outputs['probabilities']",
    ]:
        assert text in show.stdout
    batch = images(1, 16, 16, seed=3)
    np.save(tmp_path / "in.npy", batch)
    subprocess.run(
        [
            SAVED_MODEL_CLI,
            "run",
            "--dir",
            path,
            "--tag_set",
            "serve",
            "--signature_def",
            "serving_default",
            "--inputs",
            f"images={tmp_path / 'in.npy'}",
            "--outdir",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    direct = tf.saved_model.load(path).signatures["serving_default"](images=tf.constant(batch))
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "classes.npy"), direct["classes"].numpy())
    np.testing.assert_allclose(
        np.load(tmp_path / "out" / "probabilities.npy"), direct["probabilities"].numpy(), atol=1e-6
    )


def test_models_config_parses_with_official_proto(tmp_path):
    path = write_models_config(
        tmp_path / "models.config",
        [
            ModelConfig(
                "seg", version_policy="specific", versions=[1, 2], version_labels={"stable": 1, "canary": 2}
            ),
            ModelConfig("tiny", version_policy="latest", num_versions=2),
            {"name": "all", "base_path": "/data/all", "version_policy": "all"},
        ],
    )
    config = text_format.Parse(open(path).read(), model_server_config_pb2.ModelServerConfig())
    seg, tiny, every = config.model_config_list.config
    assert (seg.name, seg.base_path, seg.model_platform) == ("seg", "/models/seg", "tensorflow")
    assert list(seg.model_version_policy.specific.versions) == [1, 2]
    assert dict(seg.version_labels) == {"stable": 1, "canary": 2}
    assert tiny.model_version_policy.latest.num_versions == 2
    assert every.model_version_policy.WhichOneof("policy_choice") == "all" and every.base_path == "/data/all"
    assert read_models_config(path)[0] == ModelConfig(
        "seg", version_policy="specific", versions=[1, 2], version_labels={"stable": 1, "canary": 2}
    )


def test_models_config_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="label 'canary' points to version 3"):
        ModelConfig("seg", version_policy="specific", versions=[1, 2], version_labels={"canary": 3})
    with pytest.raises(ValueError, match=r"names \['a'\] appear more than once"):
        models_config_text([ModelConfig("a"), ModelConfig("a")])
    with pytest.raises(ValueError, match="version_policy 'newest' must be one of"):
        ModelConfig("a", version_policy="newest")
    (tmp_path / "bad.config").write_text("model_config_list { config { nme: 'x' } }")
    with pytest.raises(ValueError, match="not a valid TF Serving models.config"):
        read_models_config(tmp_path / "bad.config")
