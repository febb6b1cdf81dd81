"""The shared shape of every tfnas search space: a keras-tuner HyperModel split in two parts.

A space declares its decisions with `hp.Choice` in the order the paper's controller emits
them, so any Oracle that walks `hp.space` in order (the PPO controller) learns them in the
paper's order. It builds a *training model* (image -> dict of logits, `"logits"` first and
training-only heads such as `"aux_0"` after it) from a frozen *encoder* (image -> list of
features, the same for every architecture) and a searched *decoder* (features -> dict of
logits), so that stage 1 of the proxy task can train the decoder alone on cached features.
"""

import random

import keras
import keras_tuner

from tfnas import encoders
from tfnas.ops import ResizeLike
from tfnas.tasks import Task, get_task

#: Output key of the main classifier; every other output key is a training-only head.
MAIN_OUTPUT = "logits"


class DecoderSpace(keras_tuner.HyperModel):
    """Base class of the search spaces (a `keras_tuner.HyperModel`).

    Subclasses set `PUBLISHED` (name -> genotype) and implement `declare_hyperparameters(hp)` (declare the
    decisions, return their values), `encode(values)` (values -> genotype; `genotype(values)`
    adds the checks), `values(genotype)` (validating) and
    `decoder_from_values(values, features, strides)`.

    Every space predicts for a `tfnas.tasks.Task` (segmentation unless told otherwise): the
    task's `head` is the decoder's last layer (`"logits"`, and the auxiliary heads), so the
    published genotypes build depth and pose networks too (Nekrasov et al., CVPR 2019,
    Sec. 4.5).

    Args:
        num_classes: int, number of output classes (segmentation only; None for the
            other tasks).
        width: int, decoder channels.
        encoder: str, `"mobilenetv2"` or `"resnet50"`.
        encoder_weights: `None`, `"imagenet"` or a weights path (see `tfnas.encoders`).
        alpha: float, MobileNetV2 width multiplier.
        output_stride: int, encoder output stride (MobileNetV2 only).
        input_shape: tuple, default `(None, None, 3)`: any image size.
        name: str, the space's registry name.
        task: the task the networks predict for: a `tfnas.tasks.TASKS` name
            (`"segmentation"`, `"depth"`, `"pose"`, `"pose-multi"`), a `Task`, or a dict
            `{"name": ..., **constructor arguments}` (what `config()` saves). Default
            `"segmentation"` with `num_classes` classes. A segmentation task built from a
            name or a dict takes the space's paper's reward (`SEGMENTATION_REWARD`) where
            it does not say `omit` / `reward_metric`; a `Task` is used as it is.
    """

    PUBLISHED = {}
    TAPS = encoders.MOBILENET_V2_TAPS
    #: The Oracle `tfnas search` uses for this space unless told otherwise.
    DEFAULT_ORACLE = "ppo"
    #: The proxy task of the space's paper, a name in `tfnas.training.proxy.PROTOCOLS`
    #: (`ProxySettings.for_space`): the CVPR 2019 one (Nekrasov et al., Sec. 3.2 and 4.1).
    PROXY_PROTOCOL = "cvpr2019"
    #: The reward of the space's paper: `SegmentationTask` arguments (`omit`,
    #: `reward_metric`) a segmentation task built from a name or a config dict takes
    #: unless they are given; `{}`: the task's defaults (CVPR 2019, Sec. 4.1: geometric
    #: mean of mIoU, fwIoU and mean accuracy, background left out).
    SEGMENTATION_REWARD = {}

    def __init__(
        self,
        num_classes,
        width,
        encoder="mobilenetv2",
        encoder_weights=None,
        alpha=1.0,
        output_stride=32,
        input_shape=(None, None, 3),
        name=None,
        tunable=True,
        task="segmentation",
    ):
        super().__init__(name=name, tunable=tunable)
        if int(width) < 1:
            raise ValueError(f"width must be a positive number of channels, got {width!r}")
        self.task = space_task(task, num_classes, self.SEGMENTATION_REWARD)
        #: classes of a segmentation space, None for the other tasks
        self.num_classes = getattr(self.task, "num_classes", None)
        self.width = int(width)
        self.encoder = encoder
        self.encoder_weights = encoder_weights
        self.alpha = alpha
        self.output_stride = output_stride
        self.input_shape = tuple(input_shape)

    # --- what a subclass provides -------------------------------------------------------
    def declare_hyperparameters(self, hp):
        """Declares every decision on `hp` in controller order and returns their values."""
        raise NotImplementedError

    def encode(self, values):
        """Hyperparameter values (dict) -> genotype, unvalidated; a missing key raises KeyError."""
        raise NotImplementedError

    def genotype(self, values):
        """Hyperparameter values (dict) -> genotype in the paper's integer-list form.

        Raises:
            ValueError: naming the missing decision or the out-of-range genotype position.
        """
        try:
            genotype = self.encode(values)
        except KeyError as err:
            raise ValueError(
                f"values lack the decision {err.args[0]!r}; expected the keys of "
                f"{type(self).__name__}.hyperparameters().values"
            ) from None
        self.values(genotype)  # validates the ranges
        return genotype

    def values(self, genotype):
        """Genotype in the paper's form -> hyperparameter values (dict). Validates it."""
        raise NotImplementedError

    def decoder_from_values(self, values, features, strides):
        """Builds the decoder on symbolic `features` (with `strides`); returns a dict of logits."""
        raise NotImplementedError

    def supernet_from_features(self, features, strides):
        """Builds the supernet decoder (every architecture, `tfnas.choice.Choice` layers) on
        symbolic `features`; returns a dict of logits with the standalone decoder's keys."""
        raise NotImplementedError

    def supernet_selection(self, values, strides):
        """dict Choice path -> index that makes the supernet compute the architecture `values`
        (`strides`: the encoder features' strides)."""
        raise NotImplementedError

    def supernet_uses(self, decoder, values, strides):
        """The supernet layers architecture `values` uses: `tfnas.supernet.Use` records."""
        raise NotImplementedError

    # --- shared machinery ---------------------------------------------------------------
    def config(self):
        """Constructor arguments, JSON-able, to rebuild this space (`get_space(name)(**config)`)."""
        return {
            "num_classes": self.num_classes,
            "task": {"name": self.task.name, **self.task.config()},
            "width": self.width,
            "encoder": self.encoder,
            "encoder_weights": self.encoder_weights,
            "alpha": self.alpha,
            "output_stride": self.output_stride,
            "input_shape": list(self.input_shape),
        }

    def build_encoder(self):
        """The frozen part: image -> list of feature maps, with `tap_strides`."""
        kwargs = {"weights": self.encoder_weights, "input_shape": self.input_shape}
        if self.encoder == "mobilenetv2":
            kwargs.update(alpha=self.alpha, output_stride=self.output_stride, taps=self.TAPS)
        return encoders.build_encoder(self.encoder, **kwargs)

    def feature_specs(self, encoder=None):
        """(channels, stride) of each encoder output."""
        encoder = encoder or self.build_encoder()
        return [(t.shape[-1], s) for t, s in zip(encoder.outputs, encoder.tap_strides)]

    def decoder_from_genotype_values(self, values, specs):
        """A decoder `keras.Model` (list of features -> dict of logits) for fixed values."""
        inputs = [keras.Input((None, None, c), name=f"feature_{i}") for i, (c, _) in enumerate(specs)]
        outputs = self.decoder_from_values(values, list(inputs), [s for _, s in specs])
        return keras.Model(inputs, outputs, name="decoder")

    def build_decoder(self, hp, specs=None):
        """The searched part: declares the decisions on `hp` and builds the decoder model."""
        values = self.declare_hyperparameters(hp)
        return self.decoder_from_genotype_values(values, specs or self.feature_specs())

    @classmethod
    def supports_supernet(cls):
        """Whether the space builds a supernet (`build_supernet`; issue 10)."""
        return cls.supernet_from_features is not DecoderSpace.supernet_from_features

    def build_supernet(self, encoder=None):
        """The space's supernet: one decoder graph for every architecture (`tfnas.supernet`).

        Args:
            encoder: the encoder model (default: `build_encoder()`); its feature specs shape
                the supernet and it is used to account parameters and multiply-adds.

        Returns:
            a `tfnas.supernet.Supernet`; its `decoder` maps the encoder features to the dict
            of logits of the standalone decoders.
        """
        from tfnas.supernet import Supernet

        encoder = encoder or self.build_encoder()
        specs = self.feature_specs(encoder)
        inputs = [keras.Input((None, None, c), name=f"feature_{i}") for i, (c, _) in enumerate(specs)]
        outputs = self.supernet_from_features(list(inputs), [s for _, s in specs])
        return Supernet(self, keras.Model(inputs, outputs, name="decoder"), encoder)

    def assemble(self, encoder, decoder):
        """image -> encoder -> decoder: the training model (outputs: dict of logits)."""
        inputs = keras.Input(self.input_shape, name="image")
        outputs = decoder(keras.tree.flatten(encoder(inputs)))
        return keras.Model(inputs, outputs, name=self.name or "tfnas")

    def build(self, hp):
        """keras-tuner entry point: a fresh training model for the values of `hp`."""
        encoder = self.build_encoder()
        return self.assemble(encoder, self.build_decoder(hp, self.feature_specs(encoder)))

    def hyperparameters(self, values=None):
        """`keras_tuner.HyperParameters` with every decision declared, set to `values` if given."""
        hp = keras_tuner.HyperParameters()
        self.declare_hyperparameters(hp)
        for key, value in (values or {}).items():
            hp.values[key] = value
        return hp

    def build_genotype(self, genotype, task=None):
        """The training model of a genotype given in the paper's form (or a `PUBLISHED` name).

        Args:
            genotype: the genotype, or a name in `PUBLISHED`.
            task: None for the space's task, or another task (a name, `Task` or config
                dict, as the constructor's `task`): the same network with that task's head,
                e.g. the CVPR 2019 arch0 for depth (Sec. 4.5.2).

        Raises:
            ValueError: for an unknown name, an invalid genotype or task.
        """
        if task is not None:
            config = {**self.config(), "num_classes": None, "task": task}
            return type(self)(**config).build_genotype(genotype)
        if isinstance(genotype, str):
            if genotype not in self.PUBLISHED:
                raise ValueError(
                    f"unknown published architecture {genotype!r}; expected one of {sorted(self.PUBLISHED)}"
                )
            genotype = self.PUBLISHED[genotype]
        return self.build(self.hyperparameters(self.values(genotype)))

    def inference_model(self, model):
        """The deployable model: image -> main logits, training-only heads removed.

        Shares weights with `model` (a training model built by this space).
        """
        encoder, decoder = model.get_layer("encoder"), model.get_layer("decoder")
        main = keras.Model(decoder.inputs, decoder.get_layer(MAIN_OUTPUT).output, name="decoder_inference")
        inputs = keras.Input(self.input_shape, name="image")
        return keras.Model(inputs, main(keras.tree.flatten(encoder(inputs))), name=f"{model.name}_inference")

    def random_values(self, seed=None):
        """Uniformly random decision values (for tests and benchmarks)."""
        rng = random.Random(seed)
        hp = self.hyperparameters()
        return {p.name: rng.choice(list(p.values)) for p in hp.space}

    def size(self):
        """Number of distinct decision sequences (architectures before symmetries)."""
        total = 1
        for p in self.hyperparameters().space:
            total *= len(p.values)
        return total


def space_task(task, num_classes=None, segmentation_reward=None):
    """The `Task` of a space from its `task` and `num_classes` arguments (see `DecoderSpace`).

    Args:
        task: a task name, a `Task` (returned as it is) or a config dict.
        num_classes: int or None, the classes of a segmentation task.
        segmentation_reward: dict of `SegmentationTask` arguments (`omit`, `reward_metric`)
            for a segmentation task built from a name or a dict, under the dict's own
            (the space's `SEGMENTATION_REWARD`). Default None: the task's defaults.

    Returns:
        a `Task`.

    Raises:
        ValueError: naming the argument: a segmentation space without `num_classes` (or
            fewer than 2), `num_classes` that contradicts the task's, or `num_classes` given
            to a task that has no classes.
    """
    if isinstance(task, dict):
        task = dict(task)
        name = task.pop("name", None)
        if name is None:
            raise ValueError(f"task {task!r} must name its task: {{'name': 'depth', ...}}")
        if name == "segmentation":
            task = {**(segmentation_reward or {}), **task}
        task = get_task(name, **task)
    elif not isinstance(task, Task):
        if task == "segmentation":
            if num_classes is None:
                raise ValueError(
                    "a segmentation space needs num_classes (e.g. num_classes=21 for PASCAL VOC)"
                )
            if int(num_classes) < 2:
                raise ValueError(f"num_classes must be at least 2, got {num_classes!r}")
            return get_task(task, num_classes=int(num_classes), **(segmentation_reward or {}))
        task = get_task(task)
    own = getattr(task, "num_classes", None)
    if num_classes is not None and own is None:
        raise ValueError(
            f"num_classes={num_classes!r} is for segmentation; the {task.name} task has no classes "
            "(leave num_classes out)"
        )
    if num_classes is not None and int(num_classes) != own:
        raise ValueError(f"num_classes={num_classes!r} contradicts the task's num_classes={own}")
    return task


def resize_to_finest(tensors, strides):
    """Resizes tensors of different strides to the finest one's size (bilinear)."""
    finest = min(range(len(tensors)), key=lambda i: strides[i])
    ref = tensors[finest]
    return [t if s == strides[finest] else ResizeLike()([t, ref]) for t, s in zip(tensors, strides)], strides[
        finest
    ]


def check_index(value, limit, where, why):
    """Raises a ValueError naming the genotype position unless `value` is an int in 0..limit-1.

    Args:
        value: the genotype entry.
        limit: int, the number of values allowed at that position.
        where: str, the position, e.g. "genotype block 2 loc1".
        why: str, what the allowed values are.
    """
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < limit:
        raise ValueError(f"{where} is {value!r}, but only 0..{limit - 1} exist at that point ({why})")
