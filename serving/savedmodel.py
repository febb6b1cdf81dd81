"""SavedModel export for TF Serving: serving signatures, metadata and warm-up requests.

`export(model, base_dir, name, task=...)` writes `base_dir/name/<version>/`, the layout TF
Serving watches. The SavedModel holds three signatures over the *inference model* (training-only
outputs such as auxiliary heads removed):

| signature | input `images` | outputs |
| --- | --- | --- |
| `serving_default` | uint8 `(N, H, W, 3)` | the task's outputs (below) |
| `serving_float` | float32 `(N, H, W, 3)` in [0, 255] | same as `serving_default` |
| `logits` | float32 `(N, H, W, 3)` in [-1, 1] (already preprocessed) | `logits` float32 `(N, h, w, C)` |

The first two do the training preprocessing (`tfnas.preprocessing.preprocess`) in the graph,
run the network and return `task.postprocess(logits, (H, W))` (`tfnas.tasks`), which for
each task is (`TASK_OUTPUTS`; `(h, w)` the stride-4 heatmap size, J joints, k = min(max_people,
h * w) peaks per joint):

| task | outputs of `serving_default` / `serving_float` |
| --- | --- |
| `segmentation` | `classes` int32 `(N, H, W)`, `probabilities` float32 `(N, H, W, C)` (logits resized bilinearly, softmax, argmax) |
| `depth` | `depth` float32 `(N, H, W)`: metres, resized bilinearly, clamped at 0 |
| `pose` | `heatmaps` float32 `(N, h, w, J)`, `keypoints` float32 `(N, J, 3)`: x, y in input pixels and the heatmap maximum |
| `pose-multi` | `heatmaps`, `tags` float32 `(N, h, w, J)`; `peak_scores` `(N, J, k)`, `peak_positions` `(N, J, k, 2)` (x, y in input pixels), `peak_tags` `(N, J, k, 1)`, which `tfnas.tasks.group` turns into people |

`logits` is the raw network whatever the task (C = `task.output_channels`: classes, 1 depth,
J heatmaps, or J heatmaps then J tags), the best starting point for ONNX, TensorRT and TFLite
conversion. `assets.extra/tfnas.json` records the task (`read_task` rebuilds it), so a loader
knows what the outputs are.
"""

import datetime
import json
import os
import shutil

import numpy as np
import tensorflow as tf

import tfnas
from tfnas.preprocessing import preprocess
from tfnas.serving._images import image_batch
from tfnas.tasks import TASKS

#: Name of the input tensor of every signature.
INPUT_NAME = "images"
#: Output names of `serving_default` and `serving_float` for each task: what
#: `task.postprocess` returns (shapes and dtypes in the module docstring).
TASK_OUTPUTS = {name: sorted(task.serving_outputs) for name, task in TASKS.items()}


def signatures(task="segmentation"):
    """The signatures `export` writes for a task: name -> input dtype and output names.

    Args:
        task: a task name in `TASK_OUTPUTS` or a `tfnas.tasks.Task`. Default "segmentation".

    Returns:
        dict signature name -> `{"dtype": str, "outputs": [names]}`.
    """
    name = getattr(task, "name", task)
    if name not in TASK_OUTPUTS:
        raise ValueError(f"task {name!r} has no serving outputs here; use one of {', '.join(TASK_OUTPUTS)}")
    outputs = TASK_OUTPUTS[name]
    return {
        "serving_default": {"dtype": "uint8", "outputs": list(outputs)},
        "serving_float": {"dtype": "float32", "outputs": list(outputs)},
        "logits": {"dtype": "float32", "outputs": ["logits"]},
    }


#: The signatures of a segmentation export (`signatures(task)` for the other tasks).
SIGNATURES = signatures("segmentation")
#: Where TF Serving looks for extra files of a version (not loaded as assets by TensorFlow).
ASSETS_EXTRA = "assets.extra"
METADATA_FILE = "tfnas.json"
WARMUP_FILE = "tf_serving_warmup_requests"


def _image_spec(dtype):
    return tf.TensorSpec([None, None, None, 3], dtype, name=INPUT_NAME)


class ServingModule(tf.Module):
    """The exported graph: preprocessing, the inference model and the task's `postprocess`.

    Like `keras.export.ExportArchive`, it tracks the model's variables, not its layers, so
    saving traces the network once (in the shared `logits` function) instead of once per layer.

    Args:
        model: Keras inference model mapping float32 images in [-1, 1] `(N, H, W, 3)` to
            its main output `(N, h, w, C)`.
        task: the `tfnas.tasks.Task` the model predicts for (its `postprocess` makes the
            outputs of `serving_default` and `serving_float`), a task name or a task config
            dict; default None: segmentation with the model's C channels as classes.
    """

    def __init__(self, model, task=None):
        super().__init__(name="tfnas_serving")
        if task is None or not hasattr(task, "postprocess"):
            task = resolve_task(task, _output_channels(model))
        run_model = tf.function(
            lambda images: model(images, training=False),
            input_signature=[_image_spec(tf.float32)],
            autograph=False,
        )

        def predict(images):
            return task.postprocess(run_model(preprocess(images)), tf.shape(images)[1:3])

        def logits(images):
            return {"logits": run_model(images)}

        self._trace_signatures(predict, logits)

    def _trace_signatures(self, predict, logits):
        """Traces the three signatures from `predict` (images -> serving outputs) and `logits`."""
        functions = {
            "serving_default": tf.function(predict, input_signature=[_image_spec(tf.uint8)], autograph=False),
            "serving_float": tf.function(predict, input_signature=[_image_spec(tf.float32)], autograph=False),
            "logits": tf.function(logits, input_signature=[_image_spec(tf.float32)], autograph=False),
        }
        concrete = {name: fn.get_concrete_function() for name, fn in functions.items()}
        # The tf.Variables the traced graphs read (not the Keras wrappers, and not the layers:
        # tracked layers make saving re-trace every layer, and TF1-style loaders such as
        # `saved_model_cli run`, TF Serving and the TFLite converter need these exact variables).
        seen, variables = set(), []
        for fn in concrete.values():
            for variable in fn.variables:
                if id(variable) not in seen:
                    seen.add(id(variable))
                    variables.append(variable)
        self.model_variables = variables
        self._signatures = lambda: concrete  # a lambda keeps the functions out of attribute tracking

    def signatures(self):
        """Returns the `signatures` dict for `tf.saved_model.save` (see `signatures(task)`)."""
        return dict(self._signatures())

    def signature_info(self):
        """What the traced signatures take and return, as `signatures(task)` describes them.

        Returns:
            dict signature name -> `{"dtype": input dtype, "outputs": sorted output names}`.
        """
        return {
            name: {
                "dtype": tf.nest.flatten(fn.structured_input_signature)[0].dtype.name,
                "outputs": sorted(fn.structured_outputs),
            }
            for name, fn in self._signatures().items()
        }


def inference_model(model):
    """Strips training-only outputs: a model whose outputs are a dict keeps only `"logits"`.

    Args:
        model: a Keras tfnas training model (dict output with `"logits"`) or inference model
            (a single logits tensor).

    Returns:
        A Keras model mapping images to the main logits only, sharing weights with `model`.

    Raises:
        ValueError: if the model outputs a dict without `"logits"`, or a list of tensors.
    """
    import keras

    outputs = getattr(model, "output", None) if _is_functional(model) else None
    if isinstance(outputs, dict):
        if "logits" not in outputs:
            raise ValueError(
                f"model {model.name!r} outputs a dict with keys {sorted(outputs)}, but a tfnas "
                "training model must have a 'logits' output; pass space.inference_model(model)"
            )
        return keras.Model(model.inputs, _main_output(outputs["logits"]), name=f"{model.name}_inference")
    if isinstance(outputs, (list, tuple)):
        raise ValueError(
            f"model {model.name!r} has {len(outputs)} outputs; expected one logits tensor or a "
            "dict with 'logits' (the tfnas model contract)"
        )
    if outputs is None:  # subclassed model: select the logits at call time.
        return _LogitsOnly(model)
    return model


def _main_output(tensor):
    """Rewires a symbolic output so that nested dict-output models compute only that output.

    In `encoder -> decoder` models (tfnas spaces) the auxiliary heads live inside the nested
    decoder model, so `keras.Model(inputs, outputs["logits"])` would still run (and save) them.
    This calls a pruned copy of the nested model, sharing its layers, on the same inputs.
    """
    import keras

    operation, node_index, _ = tensor._keras_history
    nested = getattr(operation, "output", None) if _is_functional(operation) else None
    if not isinstance(nested, dict) or len(nested) < 2:
        return tensor
    node = operation._inbound_nodes[node_index]
    index = [id(t) for t in node.outputs].index(id(tensor))
    inner = keras.tree.flatten(nested)[index]
    key = next(k for k, v in nested.items() if v is inner)
    pruned = keras.Model(operation.inputs, _main_output(inner), name=f"{operation.name}_{key}")
    return pruned(*node.arguments.args, **node.arguments.kwargs)


def _is_functional(model):
    return hasattr(model, "inputs") and getattr(model, "_outputs_struct", None) is not None


class _LogitsOnly:
    """Call wrapper for a subclassed model that may return a dict with `"logits"`."""

    def __init__(self, model):
        self.inner = model
        self.name = getattr(model, "name", "model")

    @property
    def variables(self):
        return self.inner.variables

    def __call__(self, images, training=False):
        out = self.inner(images, training=training)
        if isinstance(out, dict):
            if "logits" not in out:
                raise ValueError(f"model {self.name!r} returned keys {sorted(out)}; expected 'logits'")
            out = out["logits"]
        return out

    def count_params(self):
        return int(sum(np.prod(v.shape) for v in self.inner.variables))


def next_version(base_dir, name):
    """The next free integer version of model `name` under `base_dir` (1 for a new model).

    Args:
        base_dir: directory holding one folder per model (the TF Serving model base).
        name: model name.

    Returns:
        int, one more than the largest integer version folder, or 1.
    """
    model_dir = os.path.join(base_dir, name)
    if not os.path.isdir(model_dir):
        return 1
    versions = [int(d) for d in os.listdir(model_dir) if d.isdigit()]
    return max(versions, default=0) + 1


def _output_channels(model):
    out = model(tf.zeros([1, 32, 32, 3]), training=False)
    if len(out.shape) != 4:
        raise ValueError(
            f"inference model returns shape {tuple(out.shape)} for a (1, 32, 32, 3) image; expected "
            "its main output (N, h, w, channels): logits, depths or heatmaps"
        )
    return int(out.shape[-1])


def resolve_task(task, channels):
    """The task of an export, checked against the channels the model predicts.

    Args:
        task: None or "segmentation" (segmentation with `channels` classes), a task name, a
            config dict `{"name": ..., **arguments}` (what `space.config()["task"]` and the
            metadata hold), or a `tfnas.tasks.Task`.
        channels: int, channels of the model's main output.

    Returns:
        a `tfnas.tasks.Task`.

    Raises:
        ValueError: if the task is unknown, or its head has another number of channels than
            the model (e.g. a 1-channel depth model exported as segmentation).
    """
    from tfnas.spaces.base import space_task
    from tfnas.tasks import get_task

    if task is None or task == "segmentation":
        if channels < 2:
            raise ValueError(
                f"the model predicts {channels} channel(s), but a segmentation model has one per class "
                "(at least 2); pass the task the model was built for, e.g. export(..., task=space.task) "
                "or task='depth'"
            )
        return get_task("segmentation", num_classes=channels)
    task = space_task(task)
    if task.output_channels != channels:
        raise ValueError(
            f"the model predicts {channels} channels, but the task {task!r} has "
            f"{task.output_channels}; pass the task the model was built for (space.task)"
        )
    return task


def read_task(version_dir):
    """The task of an exported version, from its metadata: what its serving outputs are.

    Versions exported before tasks existed (metadata without `task`) are segmentation with
    the recorded `num_classes`.

    Args:
        version_dir: a `base_dir/name/<version>` directory written by `export`.

    Returns:
        a `tfnas.tasks.Task`.

    Raises:
        FileNotFoundError: if the directory holds no tfnas metadata.
    """
    from tfnas.spaces.base import space_task

    metadata = read_metadata(version_dir)
    if "task" in metadata:
        return space_task(metadata["task"])
    return space_task("segmentation", metadata.get("num_classes"))


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(
        f"metadata value {value!r} of type {type(value).__name__} is not JSON serializable; "
        "pass numbers, strings, lists and dicts"
    )


def _as_batches(warmup_images):
    if warmup_images is None:
        ramp = np.linspace(0, 255, 64, dtype=np.float32)
        image = np.stack([*np.meshgrid(ramp, ramp[::-1]), np.full((64, 64), 128.0)], axis=-1)
        return [image.astype(np.uint8)[None]]
    if isinstance(warmup_images, np.ndarray) or tf.is_tensor(warmup_images):
        warmup_images = [np.asarray(warmup_images)]
    batches = []
    for i, images in enumerate(warmup_images):
        images = image_batch(images, f"warm-up image {i}")
        if images.dtype != np.uint8:
            if images.min() < 0 or images.max() > 255:
                raise ValueError(
                    f"warm-up image {i} has values in [{images.min()}, {images.max()}]; expected "
                    "uint8 or floats in [0, 255]"
                )
            images = images.astype(np.uint8)
        batches.append(images)
    return batches


def write_warmup_requests(path, name, warmup_images=None):
    """Writes TF Serving warm-up requests: a TFRecord of `PredictionLog` for `serving_default`.

    Args:
        path: output file, normally `<version>/assets.extra/tf_serving_warmup_requests`.
        name: model name put in each request's `model_spec`.
        warmup_images: uint8 images: an array `(N, H, W, 3)` or `(H, W, 3)` (one request), or
            an iterable of such arrays (one request each). Default None: one 64x64 ramp image.

    Returns:
        int, the number of requests written.
    """
    from tensorflow_serving.apis import model_pb2, predict_pb2, prediction_log_pb2

    batches = _as_batches(warmup_images)
    with tf.io.TFRecordWriter(path) as writer:
        for images in batches:
            request = predict_pb2.PredictRequest(
                model_spec=model_pb2.ModelSpec(name=name, signature_name="serving_default")
            )
            request.inputs[INPUT_NAME].CopyFrom(tf.make_tensor_proto(images, dtype=tf.uint8))
            log = prediction_log_pb2.PredictionLog(predict_log=prediction_log_pb2.PredictLog(request=request))
            writer.write(log.SerializeToString())
    return len(batches)


def read_warmup_requests(version_dir):
    """Reads back the warm-up requests of an exported version.

    Args:
        version_dir: a `base_dir/name/<version>` directory written by `export`.

    Returns:
        list of `PredictRequest` protos.
    """
    from tensorflow_serving.apis import prediction_log_pb2

    path = os.path.join(version_dir, ASSETS_EXTRA, WARMUP_FILE)
    requests = []
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog.FromString(record)
        requests.append(log.predict_log.request)
    return requests


def read_metadata(version_dir):
    """Reads `assets.extra/tfnas.json` of an exported version.

    Args:
        version_dir: a `base_dir/name/<version>` directory written by `export`.

    Returns:
        dict of metadata.

    Raises:
        FileNotFoundError: if the directory holds no tfnas metadata.
    """
    path = os.path.join(version_dir, ASSETS_EXTRA, METADATA_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist; is {version_dir!r} a tfnas export?")
    with open(path) as f:
        return json.load(f)


def export(model, base_dir, name, version=None, metadata=None, warmup_images=None, task=None):
    """Exports a tfnas model as a TF Serving SavedModel in `base_dir/name/<version>/`.

    The version directory is written under a temporary name and renamed at the end, so a
    running TF Serving never loads a half-written version.

    Args:
        model: Keras training model (dict with `"logits"`; other outputs are dropped) or
            inference model (images in [-1, 1] -> logits).
        base_dir: TF Serving model base directory (one folder per model name).
        name: model name, the folder under `base_dir` and the name clients ask for.
        version: positive int; default None takes the next free version.
        metadata: JSON-serializable dict stored in `assets.extra/tfnas.json` (space, genotype,
            class names, params, multiply-adds, scores, ...). `task` (`{"name": ..., **config}`,
            see `read_task`), `num_classes` (None for tasks without classes),
            `output_channels`, `tfnas_version`, `tensorflow_version`, `export_time`, `name`,
            `version` and `signatures` are added; `params` is added when not given.
        warmup_images: uint8 images for the warm-up requests (see `write_warmup_requests`);
            default None writes one 64x64 image.
        task: the `tfnas.tasks.Task` the model predicts for (`space.task`), a task name or a
            task config dict; it sets the outputs of `serving_default` and `serving_float`
            (module docstring). Default None: segmentation, the model's channels its classes.

    Returns:
        str, the path of the version directory.

    Raises:
        ValueError: for a bad name, version, model, task (one whose channels differ from the
            model's) or warm-up images.
        FileExistsError: if the version already exists.
    """
    version = version_dir(base_dir, name, version)[0]  # checked before the model is traced
    _as_batches(warmup_images)
    inference = inference_model(model)
    channels = _output_channels(inference)
    task = resolve_task(task, channels)
    module = ServingModule(inference, task)
    info = dict(metadata or {})
    info.setdefault("params", int(inference.count_params()))
    return write_version(module, base_dir, name, version, info, task, channels, warmup_images)


def version_dir(base_dir, name, version=None):
    """The checked version and the path of a new version directory `base_dir/name/<version>`.

    Args:
        base_dir: TF Serving model base directory.
        name: model name.
        version: positive int, or None for the next free version.

    Returns:
        `(version, path)`.

    Raises:
        ValueError: for a bad name or version.
        FileExistsError: if the version already exists.
    """
    if not name or os.sep in name or name.startswith("."):
        raise ValueError(f"model name {name!r} must be a non-empty folder name without '/'")
    if version is None:
        version = next_version(base_dir, name)
    if isinstance(version, bool) or not isinstance(version, (int, np.integer)) or version < 1:
        raise ValueError(
            f"version {version!r} must be a positive integer (TF Serving versions are folders 1, 2, ...)"
        )
    version = int(version)
    model_dir = os.path.join(base_dir, name)
    final_dir = os.path.join(model_dir, str(version))
    if os.path.exists(final_dir):
        raise FileExistsError(
            f"{final_dir} already exists; pass another version or version=None for the next free one "
            f"({next_version(base_dir, name)})"
        )
    return version, final_dir


def write_version(module, base_dir, name, version, info, task, channels, warmup_images=None):
    """Writes a serving module as `base_dir/name/<version>/`: SavedModel, metadata, warm-up requests.

    The version directory is written under a temporary name and renamed at the end, so a
    running TF Serving never loads a half-written version. `export` and
    `tfnas.serving.dynamic.export_dynamic` write through it.

    Args:
        module: a `ServingModule` (or a module with its `signatures()` and `signature_info()`).
        base_dir, name, version, warmup_images: as in `export`.
        info: dict of metadata; the fields `export` lists are added (a copy is changed).
        task: the `tfnas.tasks.Task` of the export.
        channels: int, channels of the network's main output.

    Returns:
        str, the path of the version directory.

    Raises:
        ValueError: for a bad name, version or warm-up images.
        FileExistsError: if the version already exists.
    """
    version, final_dir = version_dir(base_dir, name, version)
    model_dir = os.path.dirname(final_dir)
    batches = _as_batches(warmup_images)
    info = dict(info)
    info.update(
        {
            "name": name,
            "version": version,
            "task": {"name": task.name, **task.config()},
            "num_classes": getattr(task, "num_classes", None),
            "output_channels": channels,
            "tfnas_version": tfnas.__version__,
            "tensorflow_version": tf.__version__,
            "export_time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "signatures": module.signature_info(),
        }
    )
    text = json.dumps(info, indent=2, default=_json_default)

    os.makedirs(model_dir, exist_ok=True)
    tmp_dir = os.path.join(model_dir, f".tmp-{version}-{os.getpid()}")
    shutil.rmtree(tmp_dir, ignore_errors=True)
    try:
        tf.saved_model.save(module, tmp_dir, signatures=module.signatures())
        os.makedirs(os.path.join(tmp_dir, ASSETS_EXTRA), exist_ok=True)
        with open(os.path.join(tmp_dir, ASSETS_EXTRA, METADATA_FILE), "w") as f:
            f.write(text + "\n")
        write_warmup_requests(os.path.join(tmp_dir, ASSETS_EXTRA, WARMUP_FILE), name, batches)
        os.rename(tmp_dir, final_dir)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return final_dir


def latest_version_dir(model_dir):
    """The highest integer version folder in `model_dir`.

    Args:
        model_dir: `base_dir/name`.

    Returns:
        str path of the latest version.

    Raises:
        FileNotFoundError: if there is no version folder.
    """
    versions = [int(d) for d in os.listdir(model_dir) if d.isdigit()] if os.path.isdir(model_dir) else []
    if not versions:
        raise FileNotFoundError(
            f"no version folders (1, 2, ...) in {model_dir!r}; export a model there first"
        )
    return os.path.join(model_dir, str(max(versions)))


def saved_model_dir(source, tmp_dir, task=None):
    """The SavedModel directory of a conversion source: a version directory, or a Keras model.

    Args:
        source: a SavedModel version directory written by `export`, or a Keras tfnas model
            (training or inference model), which is exported to `tmp_dir` first.
        tmp_dir: scratch directory for the Keras case (the caller removes it).
        task: for a Keras `source`, the task it predicts for (as in `export`; default None:
            segmentation). Must be None for a version directory, whose metadata holds it.

    Returns:
        str, a SavedModel directory with the signatures of `signatures(task)`.

    Raises:
        FileNotFoundError: if `source` is a path without `saved_model.pb`.
        ValueError: if `task` is given with a version directory.
    """
    if isinstance(source, (str, os.PathLike)):
        if not os.path.exists(os.path.join(source, "saved_model.pb")):
            raise FileNotFoundError(
                f"{source!r} is not a SavedModel directory (no saved_model.pb); pass a version directory "
                "written by tfnas.serving.export, or a Keras model"
            )
        if task is not None:
            raise ValueError(
                f"task={task!r} is for a Keras model; the SavedModel {os.fspath(source)!r} was exported "
                "with its task already (leave task out)"
            )
        return os.fspath(source)
    return export(source, tmp_dir, "model", warmup_images=np.zeros((1, 8, 8, 3), np.uint8), task=task)
