"""TF Serving `models.config`: several models, version policies and version labels.

The file is the protobuf text format of `tensorflow_serving.config.ModelServerConfig`, built
with the official proto and passed to `tensorflow_model_server --model_config_file=...`:

    write_models_config("exports/models.config", [
        ModelConfig("segmenter", version_policy="specific", versions=[1, 2],
                    version_labels={"stable": 1, "canary": 2}),
        ModelConfig("tiny", version_policy="latest", num_versions=2),
    ])
"""

import dataclasses
import os

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

VERSION_POLICIES = ("latest", "specific", "all")


@dataclasses.dataclass
class ModelConfig:
    """One model served by TF Serving.

    Args:
        name: model name (the folder under the export base directory).
        base_path: the folder of its versions as the server sees it; default
            `/models/<name>`, where `serving/docker-compose.yml` mounts the export directory.
        version_policy: "latest" (the `num_versions` highest versions), "specific"
            (`versions`), or "all".
        num_versions: how many of the latest versions to serve (policy "latest"), default 1.
        versions: versions to serve (policy "specific").
        version_labels: dict label -> version, e.g. `{"stable": 1, "canary": 2}`; clients
            can ask for `/v1/models/NAME/labels/stable`.
    """

    name: str
    base_path: str = None
    version_policy: str = "latest"
    num_versions: int = 1
    versions: list = dataclasses.field(default_factory=list)
    version_labels: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        if not self.name or "/" in self.name:
            raise ValueError(f"model name {self.name!r} must be a non-empty folder name without '/'")
        if self.base_path is None:
            self.base_path = f"/models/{self.name}"
        if self.version_policy not in VERSION_POLICIES:
            raise ValueError(
                f"model {self.name!r}: version_policy {self.version_policy!r} must be one of {VERSION_POLICIES}"
            )
        if self.version_policy == "latest" and int(self.num_versions) < 1:
            raise ValueError(f"model {self.name!r}: num_versions {self.num_versions} must be >= 1")
        if self.version_policy == "specific" and not self.versions:
            raise ValueError(f"model {self.name!r}: version_policy 'specific' needs versions=[...]")
        self.versions = [int(v) for v in self.versions]
        self.version_labels = {str(k): int(v) for k, v in self.version_labels.items()}
        if self.version_policy == "specific":
            for label, version in self.version_labels.items():
                if version not in self.versions:
                    raise ValueError(
                        f"model {self.name!r}: label {label!r} points to version {version}, which is "
                        f"not served (versions={self.versions}); add it to versions"
                    )

    def to_proto(self):
        """Returns the `tensorflow.serving.ModelConfig` proto."""
        proto = model_server_config_pb2.ModelConfig(
            name=self.name, base_path=self.base_path, model_platform="tensorflow"
        )
        policy = proto.model_version_policy
        if self.version_policy == "latest":
            policy.latest.num_versions = int(self.num_versions)
        elif self.version_policy == "specific":
            policy.specific.versions.extend(self.versions)
        else:
            policy.all.SetInParent()
        for label, version in self.version_labels.items():
            proto.version_labels[label] = version
        return proto

    @classmethod
    def from_proto(cls, proto):
        """Builds a `ModelConfig` from a `tensorflow.serving.ModelConfig` proto."""
        which = proto.model_version_policy.WhichOneof("policy_choice") or "latest"
        policy = proto.model_version_policy
        return cls(
            name=proto.name,
            base_path=proto.base_path,
            version_policy=which,
            num_versions=policy.latest.num_versions or 1,
            versions=list(policy.specific.versions),
            version_labels=dict(proto.version_labels),
        )


def models_config_text(models):
    """The `models.config` text for a list of models.

    Args:
        models: list of `ModelConfig` (or dicts of its arguments).

    Returns:
        str in protobuf text format, checked by parsing it back with `ModelServerConfig`.

    Raises:
        ValueError: on duplicate names or an empty list.
    """
    models = [m if isinstance(m, ModelConfig) else ModelConfig(**m) for m in models]
    if not models:
        raise ValueError("models.config needs at least one model")
    names = [m.name for m in models]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(
            f"model names {duplicates} appear more than once in models.config; names must be unique"
        )
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.config.extend(m.to_proto() for m in models)
    text = text_format.MessageToString(config)
    if text_format.Parse(text, model_server_config_pb2.ModelServerConfig()) != config:
        raise RuntimeError(
            "models.config text does not parse back into the same ModelServerConfig "
            "(a protobuf / tensorflow-serving-api version mismatch?); "
            f"check the installed versions: {text!r}"
        )
    return text


def write_models_config(path, models):
    """Writes `models.config` for `tensorflow_model_server --model_config_file`.

    Args:
        path: output file.
        models: list of `ModelConfig` (or dicts of its arguments).

    Returns:
        str, the path written.
    """
    text = models_config_text(models)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def read_models_config(path):
    """Parses a `models.config` file with the official proto.

    Args:
        path: a models.config file.

    Returns:
        list of `ModelConfig`.

    Raises:
        ValueError: if the file is not a valid `ModelServerConfig` text proto.
    """
    with open(path) as f:
        text = f.read()
    try:
        config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
    except text_format.ParseError as e:
        raise ValueError(f"{path} is not a valid TF Serving models.config: {e}") from e
    return [ModelConfig.from_proto(c) for c in config.model_config_list.config]
