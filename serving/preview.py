"""`tfnas serve`: a local preview server speaking TF Serving's REST and gRPC predict APIs.

A development aid, not a production server: it loads the exported SavedModels under one base
directory with TensorFlow in this Python process and answers the same requests as
`tensorflow_model_server`, so that clients, notebooks and tests can be written before a TF
Serving container is at hand. For production use `serving/docker-compose.yml` (the official
`tensorflow/serving` image). What it speaks:

- REST (`http.server.ThreadingHTTPServer`): `GET /v1/models/NAME` (status),
  `GET /v1/models/NAME/metadata`, `POST /v1/models/NAME:predict` (also without `:predict`),
  each optionally with `/versions/V` or `/labels/L` after NAME; "instances" (row) and
  "inputs" (columnar) requests; errors as `{"error": "..."}` with HTTP 400 or 404.
- gRPC (`grpc.server`): `PredictionService.Predict` and `PredictionService.GetModelMetadata`.

The server runs the signatures as they are and returns their outputs by name, whatever the
export's task (segmentation `classes`/`probabilities`, `depth`, pose `heatmaps`/`keypoints`, ...;
`tfnas.serving.savedmodel`); it draws nothing.

Models are the folders `BASE_DIR/NAME/<version>/`; if `BASE_DIR/models.config` exists its
version policies and labels are used (a `base_path` that does not exist here, such as the
container path `/models/NAME`, is read as `BASE_DIR/NAME`). New versions are picked up on the
next request, like TF Serving's file-system polling.
"""

import http.server
import json
import os
import re
import threading
from concurrent import futures

import numpy as np

from tfnas.serving.config import ModelConfig, read_models_config

_PATH = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<suffix>/metadata|:predict|:classify|:regress)?/?$"
)


class ServingRequestError(Exception):
    """A request the server refuses; carries the HTTP status and TF Serving's message.

    Args:
        status: HTTP status (400 invalid argument, 404 not found).
        message: the error text returned as `{"error": message}`.
    """

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message

    @property
    def grpc_code(self):
        """The matching `grpc.StatusCode`."""
        import grpc

        return {404: grpc.StatusCode.NOT_FOUND, 400: grpc.StatusCode.INVALID_ARGUMENT}.get(
            self.status, grpc.StatusCode.INTERNAL
        )


class ModelRepository:
    """The exported models under a base directory, loaded lazily and cached.

    Args:
        base_dir: directory with `NAME/<version>/` SavedModels (and optionally `models.config`).
    """

    def __init__(self, base_dir):
        if not os.path.isdir(base_dir):
            raise FileNotFoundError(
                f"model base directory {base_dir!r} does not exist; export a model there first"
            )
        self.base_dir = base_dir
        self._loaded = {}
        self._lock = threading.Lock()

    def configs(self):
        """Returns dict name -> `ModelConfig` (from models.config, else one per model folder)."""
        path = os.path.join(self.base_dir, "models.config")
        if os.path.exists(path):
            configs = read_models_config(path)
            for config in configs:
                if not os.path.isdir(config.base_path):
                    config.base_path = os.path.join(self.base_dir, config.name)
            return {c.name: c for c in configs}
        names = sorted(d for d in os.listdir(self.base_dir) if os.path.isdir(os.path.join(self.base_dir, d)))
        return {n: ModelConfig(n, base_path=os.path.join(self.base_dir, n)) for n in names}

    def versions(self, name):
        """The served versions of `name` (the version policy applied to the folders on disk).

        Raises:
            ServingRequestError: 404 if there is no such model or it has no version.
        """
        config = self.configs().get(name)
        if config is None:
            raise ServingRequestError(404, f"Servable not found for request: Latest({name})")
        on_disk = sorted(
            int(d)
            for d in os.listdir(config.base_path)
            if d.isdigit() and os.path.exists(os.path.join(config.base_path, d, "saved_model.pb"))
        )
        if config.version_policy == "latest":
            served = on_disk[-config.num_versions :]
        elif config.version_policy == "specific":
            served = [v for v in on_disk if v in config.versions]
        else:
            served = on_disk
        if not served:
            raise ServingRequestError(404, f"Servable not found for request: Latest({name})")
        return config, served

    def resolve(self, name, version=None, label=None):
        """Picks the version a request asks for.

        Args:
            name: model name.
            version: int or digit string, or None for the latest served version.
            label: version label from models.config, or None.

        Returns:
            (int version, str version directory).

        Raises:
            ServingRequestError: 404 for an unknown model, version or label; 400 for a
                version that is not an integer.
        """
        config, served = self.versions(name)
        if label is not None:
            if label not in config.version_labels:
                raise ServingRequestError(
                    404,
                    f"Unrecognized servable version label: {label} (model {name} has labels "
                    f"{sorted(config.version_labels)})",
                )
            version = config.version_labels[label]
        if version is None:
            version = served[-1]
        try:
            version = int(version)
        except (TypeError, ValueError):
            raise ServingRequestError(400, f"Version {version!r} of model {name} is not an integer") from None
        if version not in served:
            raise ServingRequestError(
                404, f"Servable not found for request: Specific({name}, {version}); served versions: {served}"
            )
        return version, os.path.join(config.base_path, str(version))

    def load(self, version_dir):
        """The loaded SavedModel at `version_dir` (loaded once, then cached)."""
        with self._lock:
            if version_dir not in self._loaded:
                import tensorflow as tf

                self._loaded[version_dir] = tf.saved_model.load(version_dir)
            return self._loaded[version_dir]

    def signature(self, version_dir, signature_name):
        """The concrete function of a signature, or a 400 error naming the ones that exist."""
        signatures = self.load(version_dir).signatures
        name = signature_name or "serving_default"
        if name not in signatures:
            raise ServingRequestError(
                400,
                f'Serving signature name: "{name}" not found in signature def; '
                f"available: {sorted(signatures)}",
            )
        return signatures[name]

    def predict(self, name, inputs, version=None, label=None, signature_name=None):
        """Runs a signature on numpy-convertible inputs.

        Args:
            name: model name.
            inputs: dict input name -> array-like, or one array-like for a single-input signature.
            version: version (int or str) or None.
            label: version label or None.
            signature_name: signature, default `serving_default`.

        Returns:
            (int version, dict output name -> numpy array).

        Raises:
            ServingRequestError: for unknown models/signatures/inputs and bad dtypes or shapes.
        """
        import tensorflow as tf

        version, version_dir = self.resolve(name, version, label)
        fn = self.signature(version_dir, signature_name)
        specs = fn.structured_input_signature[1]
        if not isinstance(inputs, dict):
            if len(specs) != 1:
                raise ServingRequestError(
                    400, f"signature has inputs {sorted(specs)}; pass them by name as a JSON object"
                )
            inputs = {next(iter(specs)): inputs}
        unknown = sorted(set(inputs) - set(specs))
        missing = sorted(set(specs) - set(inputs))
        if unknown or missing:
            raise ServingRequestError(
                400, f"input names {sorted(inputs)} do not match the signature's inputs {sorted(specs)}"
            )
        tensors = {k: tf.constant(_to_array(k, v, specs[k])) for k, v in inputs.items()}
        outputs = fn(**tensors)
        return version, {k: v.numpy() for k, v in outputs.items()}

    def signature_def_map(self, version_dir):
        """The `SignatureDefMap` proto of a version, read from its saved_model.pb."""
        from tensorflow.core.protobuf import saved_model_pb2
        from tensorflow_serving.apis import get_model_metadata_pb2

        saved_model = saved_model_pb2.SavedModel()
        with open(os.path.join(version_dir, "saved_model.pb"), "rb") as f:
            saved_model.ParseFromString(f.read())
        result = get_model_metadata_pb2.SignatureDefMap()
        for key, sig in saved_model.meta_graphs[0].signature_def.items():
            if not key.startswith("__"):
                result.signature_def[key].CopyFrom(sig)
        return result


def _to_array(name, value, spec):
    dtype = spec.dtype.as_numpy_dtype
    try:
        array = np.asarray(value)
    except ValueError as e:
        raise ServingRequestError(400, f"input {name!r} is not a rectangular array: {e}") from None
    if array.dtype.kind not in "biuf":
        raise ServingRequestError(
            400, f"input {name!r} has values of type {array.dtype}; expected numbers ({spec.dtype.name})"
        )
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        if array.size and (
            array.dtype.kind == "f"
            and not np.all(np.mod(array, 1) == 0)
            or array.min() < info.min
            or array.max() > info.max
        ):
            raise ServingRequestError(
                400,
                f"input {name!r} must be {spec.dtype.name} (integers in [{info.min}, {info.max}]), "
                f"got values in [{array.min()}, {array.max()}]",
            )
    array = array.astype(dtype)
    if not spec.shape.is_compatible_with(array.shape):
        expected = tuple(-1 if d is None else d for d in spec.shape.as_list())
        raise ServingRequestError(
            400, f"input {name!r} has shape {array.shape} but the signature expects {expected}"
        )
    return array


def _columns(instances):
    """Row-format instances -> dict of stacked columns, or one stacked array."""
    if not isinstance(instances, list) or not instances:
        raise ServingRequestError(400, '"instances" must be a non-empty list')
    if all(isinstance(row, dict) for row in instances):
        keys = set(instances[0])
        if any(set(row) != keys for row in instances):
            raise ServingRequestError(400, "all instances must have the same named inputs")
        return {k: [row[k] for row in instances] for k in keys}
    if any(isinstance(row, dict) for row in instances):
        raise ServingRequestError(400, "instances mix named (objects) and unnamed rows")
    return instances


def _rows(outputs):
    """dict of output arrays -> TF Serving row-format predictions."""
    if len(outputs) == 1:
        return next(iter(outputs.values())).tolist()
    n = len(next(iter(outputs.values())))
    return [{k: v[i].tolist() for k, v in outputs.items()} for i in range(n)]


def _rest_handler(repository):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "tfnas-preview"

        def log_message(self, format, *args):  # noqa: A002 - stdlib signature
            pass

        def _send(self, status, body):
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _route(self, method):
            match = _PATH.match(self.path.split("?")[0])
            if not match:
                raise ServingRequestError(404, f"Malformed request: {method} {self.path}")
            return match.group("name"), match.group("version"), match.group("label"), match.group("suffix")

        def _handle(self, method):
            length = int(self.headers.get("Content-Length") or 0)
            self._body = self.rfile.read(length) if length else b""
            try:
                name, version, label, suffix = self._route(method)
                if method == "GET" and suffix is None:
                    self._send(200, _status(repository, name, version, label))
                elif method == "GET" and suffix == "/metadata":
                    self._send(200, _metadata(repository, name, version, label))
                elif method == "POST" and suffix in (None, ":predict"):
                    self._send(200, self._predict(name, version, label))
                else:
                    raise ServingRequestError(
                        404 if suffix in (None, "/metadata", ":predict") else 400,
                        f"Malformed request: {method} {self.path} (the preview server supports GET status, "
                        "GET /metadata and POST :predict)",
                    )
            except ServingRequestError as e:
                self._send(e.status, {"error": e.message})
            except Exception as e:  # a bug or a TensorFlow runtime error: report, keep serving
                self._send(500, {"error": f"{type(e).__name__}: {e}"})

        def _predict(self, name, version, label):
            try:
                body = json.loads(self._body or b"null")
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise ServingRequestError(400, f"JSON Parse error: {e}") from None
            if not isinstance(body, dict):
                raise ServingRequestError(400, "JSON Value: request body must be a JSON object")
            if ("instances" in body) == ("inputs" in body):
                raise ServingRequestError(
                    400,
                    'JSON Value: request must have exactly one of "instances" (row format) or '
                    '"inputs" (columnar format)',
                )
            signature = body.get("signature_name")
            if "instances" in body:
                _, outputs = repository.predict(name, _columns(body["instances"]), version, label, signature)
                return {"predictions": _rows(outputs)}
            _, outputs = repository.predict(name, body["inputs"], version, label, signature)
            if len(outputs) == 1:
                return {"outputs": next(iter(outputs.values())).tolist()}
            return {"outputs": {k: v.tolist() for k, v in outputs.items()}}

        def do_GET(self):  # noqa: N802 - http.server naming
            self._handle("GET")

        def do_POST(self):  # noqa: N802 - http.server naming
            self._handle("POST")

    return Handler


def _status(repository, name, version, label):
    if version is None and label is None:
        _, versions = repository.versions(name)
    else:
        versions = [repository.resolve(name, version, label)[0]]
    return {
        "model_version_status": [
            {"version": str(v), "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
            for v in reversed(versions)
        ]
    }


def _metadata(repository, name, version, label):
    from google.protobuf import json_format

    version, version_dir = repository.resolve(name, version, label)
    signature_map = json_format.MessageToDict(
        repository.signature_def_map(version_dir), preserving_proto_field_name=True
    )
    return {
        "model_spec": {"name": name, "signature_name": "", "version": str(version)},
        "metadata": {"signature_def": signature_map},
    }


def _grpc_servicer(repository):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2, prediction_service_pb2_grpc

    def spec_args(spec):
        version = spec.version.value if spec.HasField("version") else None
        return spec.name, version, spec.version_label or None

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):  # noqa: N802 - gRPC naming
            try:
                name, version, label = spec_args(request.model_spec)
                inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
                version, outputs = repository.predict(
                    name, inputs, version, label, request.model_spec.signature_name or None
                )
            except ServingRequestError as e:
                context.abort(e.grpc_code, e.message)
            response = predict_pb2.PredictResponse()
            response.model_spec.name = name
            response.model_spec.version.value = version
            response.model_spec.signature_name = request.model_spec.signature_name or "serving_default"
            wanted = set(request.output_filter) or set(outputs)
            for key, value in outputs.items():
                if key in wanted:
                    response.outputs[key].CopyFrom(tf.make_tensor_proto(value))
            return response

        def GetModelMetadata(self, request, context):  # noqa: N802 - gRPC naming
            if list(request.metadata_field) != ["signature_def"]:
                context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT,
                    f"Metadata field {list(request.metadata_field)} is not supported; ask for ['signature_def']",
                )
            try:
                name, version, label = spec_args(request.model_spec)
                version, version_dir = repository.resolve(name, version, label)
            except ServingRequestError as e:
                context.abort(e.grpc_code, e.message)
            response = get_model_metadata_pb2.GetModelMetadataResponse()
            response.model_spec.name = name
            response.model_spec.version.value = version
            response.metadata["signature_def"].Pack(repository.signature_def_map(version_dir))
            return response

    return Servicer()


class PreviewServer:
    """Serves the exports under `base_dir` over REST and gRPC, like TF Serving (for development).

    Usage:

        with PreviewServer("exports", rest_port=0, grpc_port=0) as server:
            ServingClient(server.rest_url, server.grpc_target).predict("tiny", images)

    Args:
        base_dir: export base directory (`NAME/<version>/` folders, optional `models.config`).
        host: address to bind, default "127.0.0.1" (loopback only).
        rest_port: REST port, default 8501 (TF Serving's); 0 picks a free port.
        grpc_port: gRPC port, default 8500 (TF Serving's); 0 picks a free port; None: no gRPC.
        workers: gRPC worker threads, default 4.
    """

    def __init__(self, base_dir, host="127.0.0.1", rest_port=8501, grpc_port=8500, workers=4):
        self.repository = ModelRepository(base_dir)
        self.host = host
        self.rest_port = rest_port
        self.grpc_port = grpc_port
        self.workers = workers
        self._http = None
        self._grpc = None
        self._thread = None

    @property
    def rest_url(self):
        """Base URL of the REST API, e.g. `http://127.0.0.1:8501`."""
        return f"http://{self.host}:{self.rest_port}"

    @property
    def grpc_target(self):
        """`host:port` of the gRPC API, or None when gRPC is off."""
        return None if self.grpc_port is None else f"{self.host}:{self.grpc_port}"

    def start(self):
        """Starts both servers in background threads and returns self (ports are then bound).

        Raises:
            OSError: if a port is taken (the message names it).
        """
        try:
            self._http = http.server.ThreadingHTTPServer(
                (self.host, self.rest_port), _rest_handler(self.repository)
            )
        except OSError as e:
            raise OSError(
                f"cannot bind REST port {self.host}:{self.rest_port} ({e}); pass another --rest-port"
            ) from e
        self._http.daemon_threads = True
        self.rest_port = self._http.server_address[1]
        self._thread = threading.Thread(
            target=self._http.serve_forever, name="tfnas-preview-rest", daemon=True
        )
        self._thread.start()
        if self.grpc_port is not None:
            import grpc
            from tensorflow_serving.apis import prediction_service_pb2_grpc

            self._grpc = grpc.server(futures.ThreadPoolExecutor(max_workers=self.workers))
            prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
                _grpc_servicer(self.repository), self._grpc
            )
            try:
                port = self._grpc.add_insecure_port(f"{self.host}:{self.grpc_port}")
            except RuntimeError as e:
                self.stop()
                raise OSError(
                    f"cannot bind gRPC port {self.host}:{self.grpc_port} ({e}); pass another --grpc-port"
                ) from e
            self.grpc_port = port
            self._grpc.start()
        return self

    def stop(self):
        """Stops both servers."""
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
        if self._grpc is not None:
            self._grpc.stop(grace=None)
            self._grpc = None

    def wait(self):
        """Blocks until the REST server stops (Ctrl-C raises `KeyboardInterrupt` here)."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=0.5)

    def serve_forever(self):
        """Starts, blocks until Ctrl-C, then stops."""
        self.start()
        try:
            self.wait()
        except KeyboardInterrupt:
            pass
        finally:
            self.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
