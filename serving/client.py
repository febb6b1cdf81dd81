"""Client for TF Serving (and `tfnas serve`): REST with the standard library, gRPC Predict.

    client = ServingClient("http://localhost:8501", "localhost:8500")
    out = client.predict("segmenter", images)            # REST, row ("instances") format
    out = client.predict("segmenter", images, form="inputs")  # REST, columnar format
    out = client.predict_grpc("segmenter", images)       # gRPC PredictionService.Predict
    out["classes"]  # numpy int32 (N, H, W)

The client returns whatever the signature returns, by name, so it serves every task alike:
`classes` and `probabilities` for segmentation, `depth` for depth, `heatmaps` and `keypoints`
for pose, `heatmaps`, `tags` and `peak_*` for pose-multi (the table in
`tfnas.serving.savedmodel`; an export's task is in its `assets.extra/tfnas.json`,
`tfnas.serving.savedmodel.read_task`).

REST paths: `/v1/models/NAME[/versions/V | /labels/L][:predict | /metadata]`.
"""

import json
import socket
import urllib.error
import urllib.request

import numpy as np

_START_A_SERVER = (
    "Start one with `tfnas serve EXPORT_DIR` (local preview) or "
    "`docker compose -f serving/docker-compose.yml up` (TF Serving)."
)

_JSON_DTYPES = {
    "DT_FLOAT": np.float32,
    "DT_DOUBLE": np.float64,
    "DT_INT32": np.int32,
    "DT_INT64": np.int64,
    "DT_UINT8": np.uint8,
    "DT_INT8": np.int8,
    "DT_INT16": np.int16,
    "DT_HALF": np.float16,
    "DT_BOOL": np.bool_,
}


class ServingError(RuntimeError):
    """The server answered with an error.

    Args:
        message: what went wrong, with the server's own `error` message.
        status: HTTP status or gRPC status code name, or None.
    """

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class ServingConnectionError(ServingError):
    """No answer: connection refused, unreachable host, or timeout."""


class ServingClient:
    """Talks to a TF Serving (or `tfnas serve`) server and returns numpy arrays.

    Args:
        rest_url: base URL of the REST API, default "http://localhost:8501".
        grpc_target: `host:port` of the gRPC API, default "localhost:8500".
        timeout: seconds to wait for each answer, default 30.
    """

    def __init__(self, rest_url="http://localhost:8501", grpc_target="localhost:8500", timeout=30.0):
        self.rest_url = rest_url.rstrip("/")
        self.grpc_target = grpc_target
        self.timeout = timeout
        self._output_dtypes = {}
        self._channel = None

    # REST ---------------------------------------------------------------------------------
    def _url(self, name, version=None, label=None, suffix=""):
        if version is not None and label is not None:
            raise ValueError(f"pass version ({version}) or label ({label!r}), not both")
        path = f"{self.rest_url}/v1/models/{name}"
        if version is not None:
            path += f"/versions/{int(version)}"
        elif label is not None:
            path += f"/labels/{label}"
        return path + suffix

    def _request(self, url, body=None):
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            url,
            data=data,
            method="GET" if data is None else "POST",
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return json.loads(response.read())
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                message = json.loads(raw)["error"]
            except (ValueError, KeyError, TypeError):
                message = raw.decode(errors="replace")[:500]
            raise ServingError(f"HTTP {e.code} from {url}: {message}", status=e.code) from None
        except TimeoutError:
            raise ServingConnectionError(
                f"no answer from {url} within {self.timeout} s; raise timeout= or check the server's load"
            ) from None
        except urllib.error.URLError as e:
            if isinstance(e.reason, (socket.timeout, TimeoutError)):
                raise ServingConnectionError(
                    f"no answer from {url} within {self.timeout} s; raise timeout= or check the server's load"
                ) from None
            raise ServingConnectionError(
                f"cannot reach {url} ({e.reason}). Is a model server running there? {_START_A_SERVER}"
            ) from None
        except ConnectionError as e:
            raise ServingConnectionError(
                f"cannot reach {url} ({e}). Is a model server running there? {_START_A_SERVER}"
            ) from None

    def status(self, name, version=None, label=None):
        """`GET /v1/models/NAME`: the model's version status.

        Args:
            name: model name.
            version: int version or None.
            label: version label or None.

        Returns:
            dict as TF Serving returns it (`{"model_version_status": [...]}`).

        Raises:
            ServingError: the server's error; ServingConnectionError: no server.
        """
        return self._request(self._url(name, version, label))

    def metadata(self, name, version=None, label=None):
        """`GET /v1/models/NAME/metadata`: model spec and signature definitions.

        Args:
            name: model name.
            version: int version or None.
            label: version label or None.

        Returns:
            dict with `model_spec` and `metadata.signature_def.signature_def`.

        Raises:
            ServingError: the server's error; ServingConnectionError: no server.
        """
        return self._request(self._url(name, version, label, "/metadata"))

    def _dtypes(self, name, version, label, signature_name):
        key = (name, version, label, signature_name)
        if key not in self._output_dtypes:
            signatures = self.metadata(name, version, label)["metadata"]["signature_def"]["signature_def"]
            outputs = signatures.get(signature_name, {}).get("outputs", {})
            self._output_dtypes[key] = {k: _JSON_DTYPES.get(v.get("dtype")) for k, v in outputs.items()}
        return self._output_dtypes[key]

    def predict(
        self, name, inputs, version=None, label=None, signature_name="serving_default", form="instances"
    ):
        """`POST /v1/models/NAME:predict` over REST.

        Args:
            name: model name.
            inputs: array `(N, ...)` for a single-input signature, or dict input name -> array.
            version: int version or None (latest).
            label: version label or None.
            signature_name: signature, default "serving_default".
            form: "instances" (row format) or "inputs" (columnar format).

        Returns:
            dict output name -> numpy array, cast to the signature's dtypes (from metadata).

        Raises:
            ValueError: for a bad `form`.
            ServingError: the server's error; ServingConnectionError: no server.
        """
        if form not in ("instances", "inputs"):
            raise ValueError(f"form {form!r} must be 'instances' (row) or 'inputs' (columnar)")
        named = isinstance(inputs, dict)
        arrays = {k: np.asarray(v) for k, v in inputs.items()} if named else np.asarray(inputs)
        if form == "instances":
            if named:
                n = len(next(iter(arrays.values())))
                payload = [{k: v[i].tolist() for k, v in arrays.items()} for i in range(n)]
            else:
                payload = arrays.tolist()
        else:
            payload = {k: v.tolist() for k, v in arrays.items()} if named else arrays.tolist()
        body = {"signature_name": signature_name, form: payload}
        answer = self._request(self._url(name, version, label, ":predict"), body)
        dtypes = self._dtypes(name, version, label, signature_name)
        if form == "instances":
            rows = answer["predictions"]
            if rows and isinstance(rows[0], dict):
                columns = {k: [row[k] for row in rows] for k in rows[0]}
            else:
                columns = {next(iter(dtypes), "outputs"): rows}
        else:
            outputs = answer["outputs"]
            columns = outputs if isinstance(outputs, dict) else {next(iter(dtypes), "outputs"): outputs}
        return {k: np.asarray(v, dtype=dtypes.get(k)) for k, v in columns.items()}

    # gRPC ---------------------------------------------------------------------------------
    def _stub(self):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        if self._channel is None:
            self._channel = grpc.insecure_channel(self.grpc_target)
        return prediction_service_pb2_grpc.PredictionServiceStub(self._channel)

    def _call(self, method, request):
        import grpc

        try:
            return getattr(self._stub(), method)(request, timeout=self.timeout)
        except grpc.RpcError as e:
            code = e.code()
            where = f"gRPC {method} at {self.grpc_target}"
            if code == grpc.StatusCode.UNAVAILABLE:
                raise ServingConnectionError(
                    f"cannot reach {where} ({e.details()}). Is a model server running there? {_START_A_SERVER}",
                    status=code.name,
                ) from None
            if code == grpc.StatusCode.DEADLINE_EXCEEDED:
                raise ServingConnectionError(
                    f"no answer from {where} within {self.timeout} s", status=code.name
                ) from None
            raise ServingError(f"{where} failed with {code.name}: {e.details()}", status=code.name) from None

    def predict_grpc(self, name, inputs, version=None, label=None, signature_name="serving_default"):
        """`PredictionService.Predict` over gRPC.

        Args:
            name: model name.
            inputs: array for a single-input signature (sent as "images"), or dict name -> array.
            version: int version or None (latest).
            label: version label or None.
            signature_name: signature, default "serving_default".

        Returns:
            dict output name -> numpy array.

        Raises:
            ServingError: the server's error; ServingConnectionError: no server.
        """
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        if version is not None and label is not None:
            raise ValueError(f"pass version ({version}) or label ({label!r}), not both")
        request = predict_pb2.PredictRequest()
        request.model_spec.name = name
        request.model_spec.signature_name = signature_name
        if version is not None:
            request.model_spec.version.value = int(version)
        if label is not None:
            request.model_spec.version_label = label
        if not isinstance(inputs, dict):
            inputs = {"images": inputs}
        for key, value in inputs.items():
            request.inputs[key].CopyFrom(tf.make_tensor_proto(np.asarray(value)))
        response = self._call("Predict", request)
        return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}

    def metadata_grpc(self, name, version=None, label=None):
        """`PredictionService.GetModelMetadata` over gRPC.

        Args:
            name: model name.
            version: int version or None.
            label: version label or None.

        Returns:
            `SignatureDefMap` proto of the served version.

        Raises:
            ServingError: the server's error; ServingConnectionError: no server.
        """
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = name
        if version is not None:
            request.model_spec.version.value = int(version)
        if label is not None:
            request.model_spec.version_label = label
        response = self._call("GetModelMetadata", request)
        signature_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(signature_map)
        return signature_map

    def close(self):
        """Closes the gRPC channel."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
