"""The preview server (`tfnas serve`) and the client: REST rows/columns, gRPC, versions,
labels, metadata, TF Serving's error format."""

import json
import os
import urllib.error
import urllib.request

import numpy as np
import pytest
import tensorflow as tf
from test_serving_common import images, tiny_model

from tfnas.serving import (
    ModelConfig,
    PreviewServer,
    ServingClient,
    ServingConnectionError,
    ServingError,
    export,
    write_models_config,
)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    base = str(tmp_path_factory.mktemp("exports"))
    export(tiny_model(seed=1), base, "tiny")  # version 1
    export(tiny_model(seed=2), base, "tiny")  # version 2, other weights
    write_models_config(
        os.path.join(base, "models.config"),
        [ModelConfig("tiny", version_policy="all", version_labels={"stable": 1, "canary": 2})],
    )
    with PreviewServer(base, host="127.0.0.1", rest_port=0, grpc_port=0) as running:
        yield running, base


@pytest.fixture(scope="module")
def client(server):
    running, _ = server
    client = ServingClient(running.rest_url, running.grpc_target, timeout=60)
    yield client
    client.close()


def direct(base, version, batch, signature="serving_default"):
    loaded = tf.saved_model.load(os.path.join(base, "tiny", str(version)))
    return {k: v.numpy() for k, v in loaded.signatures[signature](images=tf.constant(batch)).items()}


def assert_same(got, want):
    assert sorted(got) == sorted(want)
    for key in want:
        assert got[key].dtype == want[key].dtype, key
        np.testing.assert_array_equal(got[key], want[key])


def test_rest_and_grpc_predictions_equal_direct_calls(server, client):
    _, base = server
    batch = images(2, 32, 24, seed=5)
    want = direct(base, 2, batch)
    assert_same(client.predict("tiny", batch), want)
    assert_same(client.predict("tiny", batch, form="inputs"), want)
    assert_same(client.predict_grpc("tiny", batch), want)


def test_versions_labels_and_signatures(server, client):
    _, base = server
    batch = images(1, 16, 16, seed=6)
    v1 = direct(base, 1, batch)
    assert not np.array_equal(v1["probabilities"], direct(base, 2, batch)["probabilities"])
    assert_same(client.predict("tiny", batch, version=1), v1)
    assert_same(client.predict("tiny", batch, label="stable"), v1)
    assert_same(client.predict_grpc("tiny", batch, version=1), v1)
    assert_same(client.predict_grpc("tiny", batch, label="stable"), v1)
    floats = batch.astype(np.float32) / 127.5 - 1
    assert_same(
        client.predict("tiny", floats, signature_name="logits", form="inputs"),
        direct(base, 2, floats, "logits"),
    )


def test_status_and_metadata(client):
    status = client.status("tiny")
    assert [s["version"] for s in status["model_version_status"]] == ["2", "1"]
    assert status["model_version_status"][0]["state"] == "AVAILABLE"
    meta = client.metadata("tiny", label="stable")
    assert meta["model_spec"] == {"name": "tiny", "signature_name": "", "version": "1"}
    signatures = meta["metadata"]["signature_def"]["signature_def"]
    assert sorted(signatures) == ["logits", "serving_default", "serving_float"]
    assert signatures["serving_default"]["inputs"]["images"]["dtype"] == "DT_UINT8"
    assert signatures["serving_default"]["outputs"]["classes"]["dtype"] == "DT_INT32"
    grpc_meta = client.metadata_grpc("tiny")
    assert sorted(grpc_meta.signature_def) == ["logits", "serving_default", "serving_float"]


def raw(running, method, path, body=None):
    data = body.encode() if isinstance(body, str) else body
    request = urllib.request.Request(running.rest_url + path, data=data, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@pytest.mark.parametrize(
    "method,path,body,status,message",
    [
        ("POST", "/v1/models/tiny:predict", "{not json", 400, "JSON Parse error"),
        ("POST", "/v1/models/tiny:predict", '{"signature_name": "serving_default"}', 400, '"instances"'),
        ("POST", "/v1/models/tiny:predict", '{"instances": [], "inputs": []}', 400, "exactly one"),
        ("POST", "/v1/models/nope:predict", '{"instances": [[[[0, 0, 0]]]]}', 404, "Servable not found"),
        (
            "POST",
            "/v1/models/tiny/versions/9:predict",
            '{"instances": [[[[0, 0, 0]]]]}',
            404,
            "Specific(tiny, 9)",
        ),
        ("POST", "/v1/models/tiny/labels/beta:predict", '{"instances": [[[[0, 0, 0]]]]}', 404, "label: beta"),
        ("POST", "/v1/models/tiny:predict", '{"instances": [[[[0.5, 0, 0]]]]}', 400, "must be uint8"),
        ("POST", "/v1/models/tiny:predict", '{"instances": [[[[0, 0]]]]}', 400, "expects (-1, -1, -1, 3)"),
        ("POST", "/v1/models/tiny:predict", '{"instances": [[[[0, 0, 0]]], [[0]]]}', 400, "rectangular"),
        ("POST", "/v1/models/tiny:predict", '{"inputs": {"pixels": [[[[0, 0, 0]]]]}}', 400, "do not match"),
        (
            "POST",
            "/v1/models/tiny:predict",
            '{"signature_name": "x", "inputs": [[[[0, 0, 0]]]]}',
            400,
            '"x" not found',
        ),
        ("GET", "/v1/models/nope", None, 404, "Servable not found"),
        ("GET", "/v2/anything", None, 404, "Malformed request"),
    ],
)
def test_malformed_requests_get_tf_serving_errors(server, method, path, body, status, message):
    running, _ = server
    code, answer = raw(running, method, path, body)
    assert code == status and list(answer) == ["error"] and message in answer["error"]
    assert raw(running, "GET", "/v1/models/tiny")[0] == 200  # still serving


def test_client_errors(server, client):
    with pytest.raises(
        ServingError, match=r"HTTP 404 from .*/v1/models/nope:predict: Servable not found"
    ) as info:
        client.predict("nope", images(1, 8, 8))
    assert info.value.status == 404
    with pytest.raises(ServingError, match="INVALID_ARGUMENT: input 'images' has shape"):
        client.predict_grpc("tiny", np.zeros((1, 8, 8, 2), np.uint8))
    with pytest.raises(ValueError, match="form 'rows'"):
        client.predict("tiny", images(1, 8, 8), form="rows")


def test_connection_refused_names_url_and_what_to_start(server):
    running, base = server
    closed = PreviewServer(base, rest_port=0, grpc_port=0).start()
    rest_url, grpc_target = closed.rest_url, closed.grpc_target
    closed.stop()
    dead = ServingClient(rest_url, grpc_target, timeout=5)
    with pytest.raises(
        ServingConnectionError,
        match=rf"cannot reach {rest_url}/v1/models/tiny:predict .*tfnas serve.*docker-compose",
    ):
        dead.predict("tiny", images(1, 8, 8))
    with pytest.raises(
        ServingConnectionError, match=rf"cannot reach gRPC Predict at {grpc_target} .*tfnas serve"
    ):
        dead.predict_grpc("tiny", images(1, 8, 8))
