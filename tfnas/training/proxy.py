"""The proxy task that scores an architecture (Nekrasov et al., CVPR 2019, Sec. 3.2 and 4.1).

`ProxyTask` is the search's measuring instrument, apart from keras-tuner: `NASTuner` calls
`prepare` once per search and `run_trial` once per architecture, and the benchmarks call the
same two methods.

- `prepare(train, val)`: splits meta-train / meta-val, warms up the encoder when it has no
  pretrained weights (the warmed model becomes the default distillation teacher), caches
  the encoder's (and teacher's) outputs for stage 1, pads meta-val to whole batches, and
  returns the `PreparedData` every trial reads.
- `run_trial(values, trial_id)`: builds the architecture on the search's encoder (with
  `supernet=True`: selects it in the search's supernet, `SupernetTrials`), trains
  the decoder on the cached features (stage 1: Adam 3e-3, 5 epochs, distillation 0.3,
  Polyak 0.9), scores it on meta-val, applies progressive termination, trains end to end
  (stage 2: SGD 1e-3 momentum 0.9 on the encoder, Adam on the decoder, 1 epoch, Polyak 0.99),
  scores it again and profiles the inference model.

Those are the CVPR 2019 values, `ProxySettings`' defaults. Each space searches with its own
paper's protocol (`PROTOCOLS`, the space's `PROXY_PROTOCOL`, `ProxySettings.for_space`):
the template space with the WACV 2020 one (5 + 5 epochs, Adam 7e-3 on encoder and decoder,
batches of 32, no distillation or Polyak averaging), the DPC space with the Dense
Prediction Cell one (cached features only, SGD with a polynomial learning rate from 0.01,
batches of 8, no distillation or termination). Any setting given explicitly overrides the
protocol's value.

The loss, the metric and the reward are the space's task's (`space.task`, a
`tfnas.tasks.Task`): for segmentation the reward is the geometric mean of mIoU,
frequency-weighted IoU and mean accuracy on meta-val, background left out (Sec. 4.1); depth
and pose have their own (`tfnas.tasks.depth`, `tfnas.tasks.pose`, `tfnas.tasks.pose_multi`).
Auxiliary outputs get the task loss with weight 0.15 each (the authors' code).
"""

import dataclasses
import hashlib
import os
import time
from collections.abc import Callable
from typing import NamedTuple

import keras
import keras_tuner
import numpy as np
import tensorflow as tf

from tfnas import profile
from tfnas.data import count_examples, split
from tfnas.io import atomic_path
from tfnas.search_dir import SearchDir
from tfnas.training.cache import FeatureCache
from tfnas.training.polyak import OPTIMIZERS, ParameterGroup, make_optimizer
from tfnas.training.stages import (
    ProxyModel,
    evaluate_reward,
    pad_to_batches,
    run_stage,
    set_batchnorm_momentum,
)
from tfnas.training.supernet_trials import SupernetTrials
from tfnas.training.termination import ProgressiveTermination
from tfnas.training.warmup import warm_up

#: The proxy protocols of the papers: for each, where it comes from and the `ProxySettings`
#: values that differ from the defaults (which are CVPR 2019's). A space names its paper's
#: protocol in `PROXY_PROTOCOL`; `ProxySettings.for_space` applies it.
PROTOCOLS = {
    "cvpr2019": {
        "source": "Nekrasov et al., CVPR 2019, Sec. 3.2 and 4.1",
        "settings": {},
    },
    "wacv2020": {
        "source": "Nekrasov et al., WACV 2020, Sec. 2 and 4.1",
        "settings": {
            # Sec. 4.1: "trained for 10 epochs ... For the first five epochs, we pre-compute
            # stem outputs and only train the generated part ...; for the second five, the
            # whole network is trained end-to-end"
            "stage1_epochs": 5,
            "stage2_epochs": 5,
            # "we rely on Adam with the learning rate of 7e-3, used on mini-batches of 32"
            # (the authors' search_wacv.sh uses Adam too, with 1e-3/5e-4 on the stem and
            # 7e-3/2e-3 on the decoder per stage; tfnas follows the paper)
            "batch_size": 32,
            "encoder_optimizer": "adam",
            "encoder_learning_rate": 7e-3,
            "decoder_learning_rate": 7e-3,
            # Sec. 2: "without relying on expensive tricks such as knowledge distillation and
            # Polyak averaging as in [16]"; no auxiliary cells (search_wacv.sh:
            # --dec-aux-weight 0). Progressive termination, of which the paper says nothing,
            # stays on, as in the authors' code, which applies it to every search.
            "distillation_weight": 0.0,
            "stage1_polyak": None,
            "stage2_polyak": None,
            "aux_weight": 0.0,
        },
    },
    "dpc2018": {
        "source": "Chen et al., NeurIPS 2018 (Dense Prediction Cell), Sec. 3.3 and 4",
        "settings": {
            # Sec. 3.3: "caching the feature maps produced by the network backbone on the
            # training set and directly building a single DPC on top of it": stage 1 only,
            # no distillation, no early termination (each candidate trains its 30K
            # iterations), no Polyak averaging (the paper uses none).
            "stage2_epochs": 0,
            "distillation_weight": 0.0,
            "termination": False,
            "stage1_polyak": None,
            "stage2_polyak": None,
            # Sec. 4: "a polynomial learning rate [56] with an initial learning rate of 0.01
            # ... fine-tuned batch normalization ... batch size = 8 ... for proxy"; the
            # optimizer is DeepLab's ([12, 14]): SGD, momentum 0.9, power 0.9. The encoder's
            # values apply only when stage 2 is turned back on (DeepLab's end-to-end training).
            "batch_size": 8,
            "decoder_optimizer": "sgd",
            "decoder_learning_rate": 0.01,
            "decoder_momentum": 0.9,
            "encoder_learning_rate": 0.01,
            "learning_rate_schedule": "poly",
            "poly_power": 0.9,
            # Sec. 3.3: "30K iterations" of batches of 8 on Cityscapes' 2,975 training
            # images are 30,000 * 8 / 2,975 = 80.7 passes over the data: tfnas keeps the
            # passes (81 epochs) whatever the size of the data, and the polynomial decay
            # reaches 0 at the end of them.
            "stage1_epochs": 81,
        },
    },
}

#: Learning-rate schedules of the proxy stages (`ProxySettings.learning_rate_schedule`).
LEARNING_RATE_SCHEDULES = ("constant", "poly")


@dataclasses.dataclass
class ProxySettings:
    """Settings of the proxy task; saved whole into `run.json`.

    Defaults are the CVPR 2019 paper's (Sec. 4.1) and, where it is silent, its authors'
    code (`DrSleep/nas-segm-pytorch`). `for_space(space, **overrides)` starts from the
    space's paper's protocol instead (`PROTOCOLS`), which is what `NASTuner` and
    `tfnas search` do.

    Attributes:
        protocol: str, the name in `PROTOCOLS` of the protocol the values start from
            (`for_protocol` / `for_space` set it; overrides keep it). Default `"cvpr2019"`.
        seed: int, seeds the data split, weights, shuffling and termination. Default 0.
        stage1_epochs: int >= 1, decoder epochs on cached features. Default 5.
        stage2_epochs: int >= 0, end-to-end epochs (0 skips stage 2). Default 1.
        batch_size: int >= 1. Default 16.
        decoder_optimizer: `"adam"` or `"sgd"`, the decoder's optimizer (both stages).
            Default `"adam"`.
        decoder_learning_rate: float, initial learning rate of the decoder (both stages).
            Default 3e-3.
        decoder_momentum: float, momentum of an SGD decoder optimizer. Default 0.9.
        encoder_optimizer: `"sgd"` or `"adam"`, the encoder's optimizer in stage 2.
            Default `"sgd"`.
        encoder_learning_rate: float, initial learning rate of the encoder in stage 2.
            Default 1e-3.
        encoder_momentum: float, momentum of an SGD encoder optimizer. Default 0.9.
        learning_rate_schedule: `"constant"` (default) or `"poly"`: each stage decays
            both learning rates as `lr * (1 - step / steps) ** poly_power` over its
            optimizer steps, to 0 at its end (DeepLab's "poly").
        poly_power: float > 0, the power of the `"poly"` schedule. Default 0.9.
        stage1_polyak: float or None, Polyak decay in stage 1. Default 0.9.
        stage2_polyak: float or None, Polyak decay in stage 2. Default 0.99.
        aux_weight: float, weight of each auxiliary output's loss. Default 0.15.
        distillation_weight: float >= 0, weight of the l2 loss to the teacher logits in
            stage 1; 0 distils nothing (no teacher logits are computed). Default 0.3.
        cache_images: int or None, meta-train images whose encoder outputs are cached for
            stage 1 (None: all). Default 4000 (the paper's).
        validation_fraction: float in (0, 1), share of the training data held out as
            meta-val when no validation data is given. Default 0.1.
        termination: bool, apply progressive termination after stage 1. Default True.
        termination_decay: float, decay of the rewards' moving average. Default 0.99.
        termination_delta: float, initial tolerance. Default 0.9.
        warmup_epochs: int or None, encoder warm-up epochs before the search; None: 10 when
            the space has no pretrained `encoder_weights`, else 0.
        warmup_learning_rate: float, Adam learning rate of the warm-up. Default 1e-2.
        bn_momentum: float, batch-norm momentum while training (PyTorch's 0.1). Default 0.9.
        latency_runs: int >= 0, timed forward passes per trial (0: no latency). Default 10.
        latency_warmup: int >= 0, untimed passes before them. Default 2.
        supernet: bool, run every trial in the space's supernet (`SupernetTrials`): the
            models are built and their steps traced once per search instead of once per
            trial; a trial computes what its standalone architecture computes, from fresh
            weights (issue 10). Default False (a standalone model per trial).
        weight_sharing: bool, with `supernet`: trials start from the decoder weights earlier
            trials trained (ENAS-style) instead of fresh ones; faster to score, less
            faithful. Default False.
    """

    protocol: str = "cvpr2019"
    seed: int = 0
    stage1_epochs: int = 5
    stage2_epochs: int = 1
    batch_size: int = 16
    decoder_optimizer: str = "adam"
    decoder_learning_rate: float = 3e-3
    decoder_momentum: float = 0.9
    encoder_optimizer: str = "sgd"
    encoder_learning_rate: float = 1e-3
    encoder_momentum: float = 0.9
    learning_rate_schedule: str = "constant"
    poly_power: float = 0.9
    stage1_polyak: float = 0.9
    stage2_polyak: float = 0.99
    aux_weight: float = 0.15
    distillation_weight: float = 0.3
    cache_images: int = 4000
    validation_fraction: float = 0.1
    termination: bool = True
    termination_decay: float = 0.99
    termination_delta: float = 0.9
    warmup_epochs: int = None
    warmup_learning_rate: float = 1e-2
    bn_momentum: float = 0.9
    latency_runs: int = 10
    latency_warmup: int = 2
    supernet: bool = False
    weight_sharing: bool = False

    def __post_init__(self):
        for name, minimum in (
            ("stage1_epochs", 1),
            ("stage2_epochs", 0),
            ("batch_size", 1),
            ("latency_runs", 0),
            ("latency_warmup", 0),
        ):
            value = getattr(self, name)
            if int(value) != value or value < minimum:
                raise ValueError(f"{name}={value!r} must be an integer >= {minimum}")
            setattr(self, name, int(value))
        if self.cache_images is not None and (int(self.cache_images) < 1):
            raise ValueError(f"cache_images={self.cache_images!r} must be a positive int or None")
        if self.warmup_epochs is not None and int(self.warmup_epochs) < 0:
            raise ValueError(f"warmup_epochs={self.warmup_epochs!r} must be 0 or more, or None")
        if not 0.0 < float(self.validation_fraction) < 1.0:
            raise ValueError(f"validation_fraction={self.validation_fraction!r} must be between 0 and 1")
        if self.weight_sharing and not self.supernet:
            raise ValueError("weight_sharing=True shares the weights of a supernet; set supernet=True too")
        for name in ("stage1_polyak", "stage2_polyak"):
            value = getattr(self, name)
            if value is not None and not 0.0 <= float(value) < 1.0:
                raise ValueError(f"{name}={value!r} must be a decay in [0, 1) or None")
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol={self.protocol!r} is unknown; expected one of {sorted(PROTOCOLS)}")
        for name in ("encoder_optimizer", "decoder_optimizer"):
            if getattr(self, name) not in OPTIMIZERS:
                raise ValueError(f"{name}={getattr(self, name)!r}; expected one of {list(OPTIMIZERS)}")
        if self.learning_rate_schedule not in LEARNING_RATE_SCHEDULES:
            raise ValueError(
                f"learning_rate_schedule={self.learning_rate_schedule!r}; expected one of "
                f"{list(LEARNING_RATE_SCHEDULES)}"
            )
        for name in ("encoder_learning_rate", "decoder_learning_rate", "poly_power"):
            if not float(getattr(self, name)) > 0.0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be a positive float")
        if float(self.distillation_weight) < 0.0:
            raise ValueError(f"distillation_weight={self.distillation_weight!r} must be 0 or more")

    @classmethod
    def field_names(cls):
        """The names of the settings (the keyword arguments `NASTuner` forwards here)."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def for_protocol(cls, protocol="cvpr2019", **overrides):
        """The settings of a paper's proxy protocol, then `overrides` on top.

        Args:
            protocol: a name in `PROTOCOLS`: `"cvpr2019"`, `"wacv2020"` or `"dpc2018"`.
            **overrides: settings that replace the protocol's values.

        Returns:
            `ProxySettings` with `protocol` set.

        Raises:
            ValueError: for an unknown protocol or setting, or an invalid value.
        """
        if protocol not in PROTOCOLS:
            raise ValueError(f"protocol={protocol!r} is unknown; expected one of {sorted(PROTOCOLS)}")
        unknown = sorted(set(overrides) - set(cls.field_names()))
        if unknown:
            raise ValueError(f"unknown proxy settings {unknown}; expected some of {cls.field_names()}")
        return cls(**{**PROTOCOLS[protocol]["settings"], **overrides, "protocol": protocol})

    @classmethod
    def for_space(cls, space, protocol=None, **overrides):
        """The settings a search of `space` uses: its paper's protocol, then `overrides`.

        Args:
            space: a tfnas space (instance or class); its `PROXY_PROTOCOL` names the
                protocol (`"cvpr2019"` when it names none).
            protocol: None for the space's, or a name in `PROTOCOLS` to search with another
                paper's protocol.
            **overrides: settings that replace the protocol's values.

        Returns:
            `ProxySettings`.

        Raises:
            ValueError: for an unknown protocol or setting, or an invalid value.
        """
        return cls.for_protocol(protocol or getattr(space, "PROXY_PROTOCOL", "cvpr2019"), **overrides)

    def describe_protocol(self):
        """One line naming the protocol and the values that differ from it, e.g.
        `"wacv2020 (Nekrasov et al., WACV 2020, Sec. 2 and 4.1); changed: batch_size=16"`
        (the seed, and settings the protocol leaves to the search (None), are not listed)."""
        base = type(self).for_protocol(self.protocol).to_json()
        changed = [
            f"{k}={v!r}"
            for k, v in self.to_json().items()
            if k != "seed" and base[k] is not None and base[k] != v
        ]
        line = f"{self.protocol} ({PROTOCOLS[self.protocol]['source']})"
        return line + (f"; changed: {', '.join(changed)}" if changed else "")

    def to_json(self):
        """The settings as a JSON-able dict (what `run.json` keeps under `settings`)."""
        return dataclasses.asdict(self)


@dataclasses.dataclass
class PreparedData:
    """What `ProxyTask.prepare` computes once per search and every trial reads.

    Attributes:
        image_size: [height, width] of the search images.
        encoder_weights: list of arrays, the encoder every trial starts from.
        meta_train: unbatched tf.data of (image, target), the stage-2 training data.
        stage1_train: tf.data of (cached features, target[, teacher logits]), unbatched.
        stage1_count: int, number of cached stage-1 examples.
        stage1_val: batched tf.data of (cached meta-val features, target), padded.
        stage2_val: batched tf.data of meta-val (image, target), padded to whole batches.
        termination: the `ProgressiveTermination` rule, with its state on disk.
        meta_train_images, meta_val_images: ints, sizes of the split.
        distillation: bool, whether teacher logits were cached.
        encoder_source, teacher_source: str, which encoder and teacher the search uses.
    """

    image_size: list
    encoder_weights: list
    meta_train: tf.data.Dataset
    stage1_train: tf.data.Dataset
    stage1_count: int
    stage1_val: tf.data.Dataset
    stage2_val: tf.data.Dataset
    termination: ProgressiveTermination
    meta_train_images: int
    meta_val_images: int
    distillation: bool
    encoder_source: str
    teacher_source: str


class _Trial(NamedTuple):
    """One trial's models, standalone or in the supernet.

    Attributes:
        stage1: the stage-1 `ProxyModel`.
        stage2: callable returning the stage-2 `ProxyModel` (built only when stage 2 runs).
        trained: callable returning `(standalone training model with the trained weights,
            dict of params / training_params / madds / latency)`, after the stages.
    """

    stage1: ProxyModel
    stage2: Callable
    trained: Callable


def trial_seed(seed, trial_id):
    """A per-trial seed: the same trial id gives the same weights and order after a resume."""
    digest = int(hashlib.sha256(str(trial_id).encode()).hexdigest()[:8], 16)
    return (int(seed) * 1_000_003 + digest) % 2**31


class ProxyTask:
    """Scores architectures of a space with the two-stage proxy task (see the module doc).

    Args:
        space: a tfnas space (`tfnas.spaces.DecoderSpace`); its `task` decides the loss,
            the metric and the reward.
        search_dir: str or `SearchDir`, where the warm-up, encoder weights, feature cache
            and termination state live.
        settings: `ProxySettings` (default: the space's paper's protocol,
            `ProxySettings.for_space(space)`).
        teacher: `"auto"` (the warmed-up model when the encoder is warmed up, else none),
            None, a Keras model mapping images in [-1, 1] to logits (or a dict with
            `"logits"`), or the path of a SavedModel (`serving_default`) or `.keras` file.
            With `distillation_weight=0` (the WACV 2020 and DPC protocols) no teacher is
            used, whatever is given (`run.json`'s `teacher` says so).
        verbose: Keras verbosity of the stages (0, 1 or 2). Default 1.

    Raises:
        ValueError: if `supernet=True` and the space has no supernet.
    """

    def __init__(self, space, search_dir, settings=None, teacher="auto", verbose=1):
        self.space = space
        self.search_dir = search_dir if isinstance(search_dir, SearchDir) else SearchDir(search_dir)
        settings = settings or ProxySettings.for_space(space)
        if settings.warmup_epochs is None:  # warm up only an encoder without pretrained weights
            pretrained = getattr(space, "encoder_weights", None) is not None
            settings = dataclasses.replace(settings, warmup_epochs=0 if pretrained else 10)
        self.settings = settings
        self.teacher = teacher
        self.verbose = verbose
        # Trials start from the search's own encoder weights: a fresh space from the same
        # config, without the pretrained-weights source, so that no trial re-reads or
        # re-downloads them.
        config = space.config()
        if "encoder_weights" in config:
            config["encoder_weights"] = None
        self.trial_space = type(space)(**config)
        if settings.supernet and not space.supports_supernet():
            raise ValueError(
                f"supernet=True: the {type(space).__name__} has no supernet yet; "
                "search it with supernet=False"
            )
        self.data = None
        self.supernet_trials = None  # built on the first supernet trial
        #: None, or a callable `(hp, decoder)` that sets a standalone trial's fresh decoder
        #: weights before stage 1 (the one-shot search's `inherit_weights`: the supernet's).
        self.initialize_decoder = None

    # --- once per search ---------------------------------------------------------------------
    def prepare(self, train, val=None):
        """Splits the data, warms up the encoder, fills the feature cache.

        Args:
            train: unbatched tf.data of (uint8 image, target), one image size; a target is
                what the space's task expects (`space.task.target_spec`).
            val: the same, or None to hold out `settings.validation_fraction` of `train`.

        Returns:
            `PreparedData` (also kept as `self.data`).

        Raises:
            ValueError: if meta-train or meta-val is empty, their first elements are not
                targets of the task, or the teacher is not usable.
        """
        s, run_dir, task = self.settings, self.search_dir, self.space.task
        for part, data in (("training", train), ("validation", val)):
            if data is not None:
                _check_targets(task, data, part)
        os.makedirs(run_dir.path, exist_ok=True)
        if val is None:
            train, val = split(train, fraction=s.validation_fraction, seed=s.seed)
        image_spec = train.element_spec[0]
        image_size = [int(d) if d is not None else None for d in image_spec.shape[:2]]
        if None in image_size:
            image, _ = next(iter(train.take(1)))
            image_size = [int(d) for d in image.shape[:2]]
        num_train, num_val = count_examples(train), count_examples(val)
        if num_train < 1 or num_val < 1:
            raise ValueError(
                f"the search needs meta-train and meta-val images; got {num_train} and {num_val}"
            )

        warmed = None
        teacher = self.teacher if s.distillation_weight else None  # no teacher logits to cache
        if s.warmup_epochs and (teacher == "auto" or not os.path.exists(run_dir.encoder_weights)):
            warmed, _ = warm_up(
                self.space,
                train,
                run_dir.path,
                epochs=s.warmup_epochs,
                batch_size=s.batch_size,
                learning_rate=s.warmup_learning_rate,
                aux_weight=s.aux_weight,
                bn_momentum=s.bn_momentum,
                seed=s.seed,
                verbose=self.verbose,
            )
        encoder = self.trial_space.build_encoder()
        if os.path.exists(run_dir.encoder_weights):
            encoder.load_weights(run_dir.encoder_weights)
        else:
            source = warmed.get_layer("encoder") if warmed is not None else self.space.build_encoder()
            encoder.set_weights(source.get_weights())
            with atomic_path(run_dir.encoder_weights) as tmp:
                encoder.save_weights(tmp)
        teacher = self._resolve_teacher(teacher, warmed)

        cache = FeatureCache(run_dir.cache_dir, verbose=self.verbose)
        stage1 = cache.load_or_compute("train", encoder, train, s.cache_images, teacher, s.batch_size)
        val_cache = cache.load_or_compute("val", encoder, val, None, None, s.batch_size)
        inputs = tuple(tf.constant(np.asarray(f)) for f in stage1.features)
        targets = keras.tree.map_structure(lambda a: tf.constant(np.asarray(a)), stage1.targets)
        if stage1.teacher_logits is not None:
            targets = (targets, tf.constant(np.asarray(stage1.teacher_logits)))
        val_features, val_targets = pad_to_batches(
            [np.asarray(f) for f in val_cache.features],
            keras.tree.map_structure(np.asarray, val_cache.targets),
            s.batch_size,
            task.padding_target(image_size),
        )
        self.data = PreparedData(
            image_size=image_size,
            encoder_weights=encoder.get_weights(),
            meta_train=train,
            stage1_train=tf.data.Dataset.from_tensor_slices((inputs, targets)),
            stage1_count=len(stage1.features[0]),
            stage1_val=tf.data.Dataset.from_tensor_slices((tuple(val_features), val_targets)).batch(
                s.batch_size
            ),
            stage2_val=task.pipeline(pad_dataset(task, val, num_val, s.batch_size, image_size), s.batch_size),
            termination=ProgressiveTermination(
                s.termination_decay, s.termination_delta, seed=s.seed, path=run_dir.termination_file
            ),
            meta_train_images=num_train,
            meta_val_images=num_val,
            distillation=stage1.teacher_logits is not None,
            encoder_source=self._encoder_source(warmed),
            teacher_source=self._teacher_source(teacher, warmed),
        )
        return self.data

    def describe(self):
        """What `run.json` records about the prepared search (JSON-able dict)."""
        d = self.data
        return {
            "image_size": d.image_size,
            "meta_train_images": d.meta_train_images,
            "meta_val_images": d.meta_val_images,
            "cached_images": d.stage1_count,
            "distillation": d.distillation,
            "encoder": d.encoder_source,
            "teacher": d.teacher_source,
            "protocol": PROTOCOLS[self.settings.protocol]["source"],
            "settings": self.settings.to_json(),
        }

    def _encoder_source(self, warmed):
        weights = getattr(self.space, "encoder_weights", None)
        if weights is not None:
            return f"pretrained ({weights})"
        if warmed is not None or os.path.exists(self.search_dir.warmup_weights):
            return f"warmed up on the search data ({self.settings.warmup_epochs} epochs)"
        return "random initialisation (no pretrained weights, no warm-up)"

    def _teacher_source(self, teacher, warmed):
        if not self.settings.distillation_weight and self.teacher is not None:
            return "none (distillation_weight=0)"
        if teacher is None:
            return "none"
        if teacher is warmed:
            return "the warmed-up model"
        if isinstance(self.teacher, str) and self.teacher != "auto":
            return f"file {self.teacher}"
        return f"Keras model {getattr(teacher, 'name', type(teacher).__name__)!r}"

    @staticmethod
    def _resolve_teacher(teacher, warmed):
        if teacher == "auto":
            return warmed
        if teacher is None or isinstance(teacher, keras.layers.Layer):
            return teacher
        if isinstance(teacher, str):
            if teacher.endswith(".keras"):
                return keras.models.load_model(teacher)
            if os.path.isdir(teacher):
                return keras.layers.TFSMLayer(teacher, call_endpoint="serving_default")
            raise ValueError(
                f"teacher {teacher!r} is neither a .keras file nor a SavedModel "
                "folder; pass a Keras model, a path, 'auto' or None"
            )
        raise ValueError(
            f"teacher is a {type(teacher).__name__}; expected a Keras model, a "
            "SavedModel path, 'auto' or None"
        )

    # --- once per architecture ------------------------------------------------------------------
    def run_trial(self, hp, trial_id, callbacks=(), log=print):
        """Trains and scores one architecture.

        Args:
            hp: `keras_tuner.HyperParameters` holding the architecture's values.
            trial_id: str, seeds the trial (`trial_seed`) and names its progress output.
            callbacks: Keras callbacks for every stage's `fit`.
            log: callable for one-line messages (termination). Default `print`.

        Returns:
            (metrics dict, trained training model). Metrics: `reward`, `stage1_reward`,
            the task's scores (segmentation: `miou`, `fwiou`, `mean_accuracy`,
            `pixel_accuracy`, `iou_class_<k>`; depth: `rmse`, `abs_rel`, `delta1`, ...;
            pose: `pckh@0.5`, `pckh@0.1`; multi-person pose: COCO `ap`, `ar`, ...),
            `terminated`, `params`, `training_params`, `madds`, `latency_ms` /
            `latency_std_ms` (when timed), and seconds spent.

        Raises:
            RuntimeError: if `prepare` has not run.
            keras_tuner.errors.FailedTrialError: when the architecture cannot be built.
            NonFiniteLossError: when the loss or the weights stop being finite.
        """
        if self.data is None:
            raise RuntimeError("run_trial needs the data of ProxyTask.prepare(train, val); call it first")
        d, s = self.data, self.settings
        seed = trial_seed(s.seed, trial_id)
        start = time.perf_counter()
        trial = self._supernet_trial(hp, seed) if s.supernet else self._standalone_trial(hp, trial_id, seed)
        stage1 = trial.stage1

        # Stage 1: the decoder alone on cached encoder outputs.
        run_stage(
            stage1,
            self.stage1_batches(seed),
            s.stage1_epochs,
            f"trial {trial_id} stage 1",
            callbacks,
            self.verbose,
        )
        scores = evaluate_reward(stage1, d.stage1_val)
        stage1_reward = scores["reward"]
        stage1_seconds = time.perf_counter() - start

        terminated = s.termination and not d.termination.should_continue(trial_id, stage1_reward)
        stage2_start = time.perf_counter()
        if terminated:
            log(
                f"trial {trial_id}: terminated after stage 1 (reward {stage1_reward:.4f} vs "
                f"moving average {d.termination.average:.4f})"
            )
        elif s.stage2_epochs:
            # Stage 2: the whole network end to end (CVPR 2019: SGD on the encoder, Adam on the decoder).
            stage2 = trial.stage2()
            run_stage(
                stage2,
                self.stage2_batches(seed),
                s.stage2_epochs,
                f"trial {trial_id} stage 2",
                callbacks,
                self.verbose,
            )
            scores = evaluate_reward(stage2, d.stage2_val)
        stage2_seconds = time.perf_counter() - stage2_start

        profile_start = time.perf_counter()
        network, counts = trial.trained()
        metrics = {
            **task_metrics(scores),
            "stage1_reward": stage1_reward,
            "terminated": float(terminated),
            **counts,
            "stage1_seconds": stage1_seconds,
            "stage2_seconds": stage2_seconds,
        }
        metrics["profile_seconds"] = time.perf_counter() - profile_start
        metrics["trial_seconds"] = time.perf_counter() - start
        return metrics, network

    def _standalone_trial(self, hp, trial_id, seed):
        """Builds the architecture as its own model (`_Trial`)."""
        space = self.trial_space
        keras.backend.clear_session()  # collects garbage too (free_memory=True)
        keras.utils.set_random_seed(seed)
        encoder = space.build_encoder()
        encoder.set_weights(self.data.encoder_weights)
        try:
            decoder = space.build_decoder(hp, space.feature_specs(encoder))
        except Exception as err:  # any build error of a sampled architecture fails the trial
            raise keras_tuner.errors.FailedTrialError(
                f"trial {trial_id}: building the architecture {hp.values} failed: {type(err).__name__}: {err}"
            ) from err
        if self.initialize_decoder is not None:
            self.initialize_decoder(hp, decoder)
        network = space.assemble(encoder, decoder)
        return _Trial(
            stage1=self.stage1_model(decoder),
            stage2=lambda: self.stage2_model(encoder, decoder, network),
            trained=lambda: (network, self._profile(network)),
        )

    def _supernet_trial(self, hp, seed):
        """Selects the architecture in the search's supernet, built on the first trial (`_Trial`)."""
        if self.supernet_trials is None:
            if self.verbose:
                print(f"building the {type(self.trial_space).__name__} supernet (once per search)")
            self.supernet_trials = SupernetTrials(self)
        trials = self.supernet_trials
        # No keras.utils.set_random_seed here: tf.random.set_seed clears TensorFlow's kernel
        # cache, so every traced step would be instantiated (and optimised) again. Nothing
        # in a supernet trial draws from the global seed: the re-initialisation and the
        # shuffles are seeded explicitly.
        values = self.trial_space.declare_hyperparameters(hp)
        trials.prepare(values, seed, self.data.encoder_weights, self.settings.weight_sharing)

        def trained():
            network = trials.standalone(hp)
            cost = trials.cost(values, tuple(self.data.image_size) + (3,))
            counts = {"params": cost["params"]["total"], "madds": cost["madds"]}
            counts["training_params"] = profile.params(network)["total"]
            return network, {**counts, **self._latency(network)}

        return _Trial(stage1=trials.stage1, stage2=trials.stage2, trained=trained)

    def _latency(self, network):
        """Latency of the inference model, when the settings ask for timed runs."""
        s = self.settings
        if not s.latency_runs:
            return {}
        inference = self.trial_space.inference_model(network)
        shape = tuple(self.data.image_size) + (3,)
        mean_ms, std_ms = profile.latency(inference, shape, runs=s.latency_runs, warmup=s.latency_warmup)
        return {"latency_ms": mean_ms, "latency_std_ms": std_ms}

    def _profile(self, network):
        """Parameters, multiply-adds (traced) and latency of a standalone trial's model."""
        inference = self.trial_space.inference_model(network)
        shape = tuple(self.data.image_size) + (3,)
        return {
            "params": profile.params(inference)["total"],
            "training_params": profile.params(network)["total"],
            "madds": profile.madds(inference, shape),
            **self._latency(network),
        }

    def stage1_model(self, decoder):
        """Stage 1's trainable: the decoder on cached features (`decoder_optimizer`, Polyak
        `stage1_polyak`)."""
        s = self.settings
        set_batchnorm_momentum(decoder, s.bn_momentum)
        steps = lambda: s.stage1_epochs * self._steps_per_epoch(self.data.stage1_count)
        group = self.parameter_group("decoder", decoder.trainable_variables, s.stage1_polyak, steps)
        return ProxyModel(
            decoder, [group], self.space.task, s.aux_weight, s.distillation_weight, name="stage1"
        )

    def parameter_group(self, part, variables, polyak_decay, steps):
        """The `ParameterGroup` of the `"encoder"` or the `"decoder"`: its optimizer, learning
        rate and momentum from the settings, on the settings' schedule.

        Args:
            part: `"encoder"` or `"decoder"`.
            variables: the variables it trains.
            polyak_decay: float or None, the stage's Polyak decay.
            steps: callable returning the stage's optimizer steps (read for `"poly"` only).

        Returns:
            `ParameterGroup`.

        Raises:
            RuntimeError: for a `"poly"` schedule before `prepare` (the steps depend on the data).
        """
        s = self.settings
        name, rate, momentum = {
            "encoder": (s.encoder_optimizer, s.encoder_learning_rate, s.encoder_momentum),
            "decoder": (s.decoder_optimizer, s.decoder_learning_rate, s.decoder_momentum),
        }[part]
        if s.learning_rate_schedule == "poly":
            if self.data is None:
                raise RuntimeError(
                    "a 'poly' learning-rate schedule needs the data's size: call prepare first"
                )
            rate = keras.optimizers.schedules.PolynomialDecay(
                rate, max(1, int(steps())), end_learning_rate=0.0, power=s.poly_power
            )
        return ParameterGroup(
            make_optimizer(name, rate, polyak_decay, momentum=momentum), variables, name=f"{part}_parameters"
        )

    def _steps_per_epoch(self, count):
        """Optimizer steps of one epoch over `count` examples (whole batches only)."""
        return count // min(self.settings.batch_size, count)

    def stage1_batches(self, seed):
        """Stage 1's data: the cached features (and teacher logits), shuffled by `seed`."""
        d = self.data
        return d.stage1_train.shuffle(d.stage1_count, seed=seed).batch(
            min(self.settings.batch_size, d.stage1_count), drop_remainder=True
        )

    def stage2_model(self, encoder, decoder, network):
        """Stage 2's trainable: the whole network, `encoder_optimizer` on the encoder and
        `decoder_optimizer` on the decoder (Polyak `stage2_polyak`)."""
        s = self.settings
        set_batchnorm_momentum(network, s.bn_momentum)
        steps = lambda: s.stage2_epochs * self._steps_per_epoch(self.data.meta_train_images)
        groups = [
            self.parameter_group("encoder", encoder.trainable_variables, s.stage2_polyak, steps),
            self.parameter_group("decoder", decoder.trainable_variables, s.stage2_polyak, steps),
        ]
        return ProxyModel(network, groups, self.space.task, s.aux_weight, name="stage2")

    def stage2_batches(self, seed):
        """Stage 2's data: meta-train images, preprocessed, shuffled by `seed`."""
        d = self.data
        return self.space.task.pipeline(
            d.meta_train,
            min(self.settings.batch_size, d.meta_train_images),
            shuffle=True,
            seed=seed,
            drop_remainder=True,
        )


def task_metrics(scores):
    """The metrics a trial records from a task's scores: every scalar score, and per-class
    IoU as `iou_class_<k>` (classes absent from meta-val have none), for the reports."""
    metrics = {}
    for key, value in scores.items():
        if key == "per_class_iou":
            metrics.update({f"iou_class_{k}": float(v) for k, v in enumerate(value) if v == v})
        elif np.ndim(value) == 0:
            metrics[key] = float(value)
    return metrics


def _check_targets(task, dataset, part, limit=8):
    """Checks the first elements of a search's data against the task (a clear error early,
    instead of a shape error deep inside a trial)."""
    try:
        task.validate_dataset(dataset, limit=limit)
    except ValueError as error:
        raise ValueError(f"the {part} data do not fit the space's task: {error}") from None


def _padding_like(task, spec, image_size):
    """The task's padding target, broadcast to the shapes of the data's targets (`spec`)."""

    def like(value, leaf):
        value = np.asarray(value, leaf.dtype.as_numpy_dtype)
        shape = leaf.shape
        return np.broadcast_to(value, shape).copy() if shape.is_fully_defined() else value

    return keras.tree.map_structure(like, task.padding_target(image_size), spec)


def pad_dataset(task, dataset, count, batch_size, image_size):
    """`dataset` followed by filler examples up to a multiple of `batch_size`.

    Meta-val is scored in whole batches (one traced shape); filler targets are the task's
    padding target (ignored pixels, missing depth, unlabelled joints), so they change no score.
    """
    pad = -count % batch_size
    if not pad:
        return dataset
    image_spec, target_spec = dataset.element_spec
    image = tf.zeros(list(image_size) + [3], image_spec.dtype)
    filler = tf.data.Dataset.from_tensors((image, _padding_like(task, target_spec, image_size)))
    return dataset.concatenate(filler.repeat(pad))
