"""Full-training recipes: the papers' schedules and `TrainSettings` (Nekrasov et al., CVPR 2019, App. B).

`recipe(task)` is the recipe `tfnas.training.full.train` follows: the task's own
`Task.TRAINING` (depth, pose, multi-person pose), or for segmentation `SEGMENTATION_RECIPE`
below (the tasks module holds none). `TrainSettings` overrides any part of it;
`TrainSettings.resolve(task)` fills in the rest, and `Plan` says what they give for each
epoch and step. A run of fewer (or more) epochs than the recipe's stretches it:
optimizer step `t` of `epochs` reads the recipe's step `floor(t * recipe_epochs / epochs)`
(`RecipeSchedule`), so the learning-rate drops, the auxiliary weights and the batch-norm
freeze keep their places relative to the whole run.
"""

import contextlib
import copy
import dataclasses

import keras
import numpy as np
import tensorflow as tf

from tfnas.tasks import get_task

#: The segmentation recipe of Nekrasov et al. (CVPR 2019), in the form of `Task.TRAINING`.
#: Sec. 4.4: "the first stage being trained for 30 epochs (on COCO+BSD+VOC), the second
#: stage - for 50 (BSD+VOC), and the last one - for 100 (VOC only). After each stage, the
#: learning rates are halved. Additionally, halfway through the last stage we freeze the
#: batch norm statistics and divide the learning rate in half. We exploit intermediate
#: supervision via auxiliary cells with coefficients of 0.3, 0.25, 0.2, 0.15 across the
#: stages." App. B: "learning rates of 1e-3 and 3e-3 - for the encoder and the decoder ...
#: SGD with the momentum value of 0.9 ... Adam with ... beta_1=0.9, beta_2=0.99 and
#: epsilon=0.001 ... batch size of 64 ... randomly scaled in the range of [0.5, 2.0],
#: randomly mirrored, before being randomly cropped and padded to the size of 450x450".
#: The three stages' data sets become one here (the data of the search); the four
#: auxiliary weights are the four phases that the three halvings and the freeze make.
SEGMENTATION_RECIPE = {
    "source": "Nekrasov et al. (CVPR 2019), Sec. 4.4 and App. B (PASCAL VOC)",
    "optimizer": {"encoder": "sgd", "decoder": "adam"},
    "momentum": 0.9,
    "adam": {"beta_1": 0.9, "beta_2": 0.99, "epsilon": 1e-3},
    "learning_rate": {"encoder": 1e-3, "decoder": 3e-3},
    "schedule": "step",
    "drop_epochs": [30, 80, 130],
    "drop_factor": 0.5,
    "bn_freeze_epoch": 130,
    "aux_weights": [0.3, 0.15],
    "epochs": 180,
    "batch_size": 64,
    "augment": {"scale": [0.5, 2.0], "flip": True, "crop": 450},
}

#: Auxiliary-loss weight of recipes that give none (the proxy task's, the authors' code).
DEFAULT_AUX_WEIGHT = 0.15
#: Batch size of recipes that give none.
DEFAULT_BATCH_SIZE = 16
#: Mixed-precision policies `TrainSettings.mixed_precision` accepts.
MIXED_PRECISION = ("mixed_bfloat16", "mixed_float16")


def recipe(task):
    """The full-training recipe of a task: `SEGMENTATION_RECIPE` or the task's `TRAINING`.

    Args:
        task: a `tfnas.tasks.Task` or its name.

    Returns:
        dict in the form of `Task.TRAINING`.

    Raises:
        ValueError: if the task has no recipe.
    """
    task = get_task(task)
    if task.TRAINING is not None:
        return task.TRAINING
    if task.name == "segmentation":
        return SEGMENTATION_RECIPE
    raise ValueError(
        f"the {task.name} task has no training recipe (Task.TRAINING); give it one, "
        "in the form of tfnas.training.recipes.SEGMENTATION_RECIPE"
    )


def _per_group(value, group):
    return value[group] if isinstance(value, dict) else value


def _recipe_scale(value):
    """The recipe's scale range `[lo, hi]`, or None (pose recipes give +-% per data set)."""
    scale = (value or {}).get("scale")
    if isinstance(scale, (list, tuple)) and len(scale) == 2:
        return tuple(float(s) for s in scale)
    return None


@dataclasses.dataclass
class TrainSettings:
    """Settings of `train`; None takes the task's recipe (`recipe(task)`), scaled to `epochs`.

    Attributes:
        epochs: int >= 1, epochs to train. None: the recipe's (180 for segmentation, 300
            for depth, 140 for pose).
        batch_size: int >= 1 (the global batch under a strategy). None: the recipe's (64 for
            segmentation, 32 depth, 128 pose, else 16).
        encoder_learning_rate, decoder_learning_rate: floats, the initial learning rates of
            the two optimizers. None: the recipe's (segmentation 1e-3 and 3e-3).
        aux_weight_start, aux_weight_end: floats, the auxiliary-loss weight in the first and
            the last phase of the recipe's schedule (linear between; with no phases, over
            the epochs). None: the recipe's (segmentation 0.3 and 0.15), else 0.15.
        bn_freeze_epoch: int >= 0, the first epoch (0-based) whose batch norms normalise with
            their moving statistics and stop updating them (PyTorch's `bn.eval()`; their
            scale and offset still train); `epochs` or more never freezes. None: the
            recipe's point scaled (segmentation: halfway through its last stage, epoch 130
            of 180), else never.
        flip: bool, mirror each example with probability 1/2 (keypoints move with it, their
            left and right joints swapped). Default True.
        scale: bool, the recipe's geometric augmentation: random scale and crop for
            per-pixel targets (segmentation, depth); for keypoint targets (pose, multi-person
            pose) HigherHRNet's random scale in [0.75, 1.5] and rotation in [-30, 30]
            degrees (`tfnas.training.full.keypoint_augmentation`). Default True.
        scale_range: `(lo, hi)`, scale factors drawn uniformly. None: the recipe's
            ((0.5, 2.0)).
        crop_size: int or `(height, width)` of the crops (padded where the scaled image is
            smaller). None: the training images' size (the recipe's 450 is for ~500-pixel
            VOC images, and batches need one size).
        bn_momentum: float, batch-norm momentum while the statistics train (PyTorch's 0.1
            is 0.9 in Keras). Default 0.9.
        seed: int, seeds the shuffles and augmentations of every epoch (`train` sets the
            global seed to it, `keras.utils.set_random_seed`). Default 0.
        mixed_precision: None, `"mixed_bfloat16"` or `"mixed_float16"`: the Keras dtype
            policy to build and train in (build the model inside `scope()`). Under
            `"mixed_float16"` every optimizer is a `keras.optimizers.LossScaleOptimizer` and
            the training step scales the loss (`tfnas.training.full.FullTrainingModel`).
        strategy: None or a `tf.distribute.Strategy`; `tf.distribute.MirroredStrategy()`
            trains on every GPU of one machine (build the model inside `scope()`). Default
            None: the default device. Not saved in checkpoints.
    """

    epochs: int = None
    batch_size: int = None
    encoder_learning_rate: float = None
    decoder_learning_rate: float = None
    aux_weight_start: float = None
    aux_weight_end: float = None
    bn_freeze_epoch: int = None
    flip: bool = True
    scale: bool = True
    scale_range: tuple = None
    crop_size: tuple = None
    bn_momentum: float = 0.9
    seed: int = 0
    mixed_precision: str = None
    strategy: object = dataclasses.field(default=None, compare=False)

    def __post_init__(self):
        for name, minimum in (("epochs", 1), ("batch_size", 1), ("bn_freeze_epoch", 0)):
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or int(value) != value or value < minimum:
                raise ValueError(f"{name}={value!r} must be an integer >= {minimum}")
            setattr(self, name, int(value))
        for name in ("encoder_learning_rate", "decoder_learning_rate"):
            value = getattr(self, name)
            if value is not None and not float(value) > 0:
                raise ValueError(f"{name}={value!r} must be a positive float")
        for name in ("aux_weight_start", "aux_weight_end"):
            value = getattr(self, name)
            if value is not None and not float(value) >= 0:
                raise ValueError(f"{name}={value!r} must be a float >= 0")
        if self.scale_range is not None:
            lo, hi = (float(s) for s in self.scale_range)
            if not 0 < lo <= hi:
                raise ValueError(f"scale_range={self.scale_range!r} must be (lo, hi) with 0 < lo <= hi")
            self.scale_range = (lo, hi)
        if self.crop_size is not None:
            size = (self.crop_size,) * 2 if np.ndim(self.crop_size) == 0 else tuple(self.crop_size)
            if len(size) != 2 or any(int(s) != s or s < 1 for s in size):
                raise ValueError(f"crop_size={self.crop_size!r} must be a positive int or (height, width)")
            self.crop_size = tuple(int(s) for s in size)
        if not 0.0 <= float(self.bn_momentum) < 1.0:
            raise ValueError(f"bn_momentum={self.bn_momentum!r} must be in [0, 1)")
        if self.mixed_precision not in (None, *MIXED_PRECISION):
            raise ValueError(
                f"mixed_precision={self.mixed_precision!r}; expected None or one of {list(MIXED_PRECISION)}"
            )
        if self.strategy is not None and not isinstance(self.strategy, tf.distribute.Strategy):
            raise ValueError(
                f"strategy is a {type(self.strategy).__name__}; expected a tf.distribute.Strategy "
                "(e.g. tf.distribute.MirroredStrategy() for the GPUs of one machine) or None"
            )

    def resolve(self, task):
        """These settings with every None replaced by the task's recipe (crop size aside).

        Tasks with keypoint targets get no scale range (their scale and rotation are
        HigherHRNet's, `tfnas.training.full.keypoint_augmentation`, which moves the
        keypoints); `scale` here stays the scale-and-crop of per-pixel targets.

        Args:
            task: a `tfnas.tasks.Task` or its name.

        Returns:
            a new `TrainSettings`.
        """
        task = get_task(task)
        r = recipe(task)
        epochs = self.epochs or int(r["epochs"])
        learning_rate = r["learning_rate"]
        aux = r.get("aux_weights", [DEFAULT_AUX_WEIGHT, DEFAULT_AUX_WEIGHT])
        freeze = self.bn_freeze_epoch
        if freeze is None:
            point = r.get("bn_freeze_epoch")
            # the first epoch that starts at or after the recipe's point, stretched to `epochs`
            freeze = epochs if point is None else -(-int(point) * epochs // int(r["epochs"]))
        spec = task.target_spec
        maps = isinstance(spec, tf.TensorSpec) and spec.shape.rank == 2  # scaling moves maps only
        if self.scale and self.scale_range is not None and not maps:
            raise ValueError(
                f"scale_range: random scaling and cropping moves per-pixel targets only "
                f"(segmentation, depth), not the {task.name} task's keypoints; leave it out"
            )
        scale_range = self.scale_range or (_recipe_scale(r.get("augment")) if maps else None)
        return dataclasses.replace(
            self,
            epochs=epochs,
            batch_size=self.batch_size or int(r.get("batch_size", DEFAULT_BATCH_SIZE)),
            encoder_learning_rate=self.encoder_learning_rate or float(_per_group(learning_rate, "encoder")),
            decoder_learning_rate=self.decoder_learning_rate or float(_per_group(learning_rate, "decoder")),
            aux_weight_start=float(aux[0] if self.aux_weight_start is None else self.aux_weight_start),
            aux_weight_end=float(aux[-1] if self.aux_weight_end is None else self.aux_weight_end),
            bn_freeze_epoch=min(int(freeze), epochs),
            scale=bool(self.scale and scale_range),
            scale_range=scale_range if self.scale else None,
        )

    def to_json(self):
        """The settings as a JSON-able dict (the strategy left out)."""
        data = dataclasses.asdict(dataclasses.replace(self, strategy=None))
        data.pop("strategy")
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}

    @contextlib.contextmanager
    def scope(self):
        """Build the model to train inside this: the dtype policy and the strategy's scope."""
        previous = keras.config.dtype_policy()
        if self.mixed_precision:
            keras.config.set_dtype_policy(self.mixed_precision)
        try:
            with self.strategy.scope() if self.strategy is not None else contextlib.nullcontext():
                yield
        finally:
            keras.config.set_dtype_policy(previous)


class RecipeSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """A recipe's learning-rate schedule stretched from `recipe_epochs` to `epochs`.

    Step `t` reads the recipe schedule at step `floor(t * recipe_epochs / epochs)` (integer
    arithmetic): the schedule is `Task.learning_rate(steps_per_epoch)`, so a drop at recipe
    epoch `e` happens once `e * epochs / recipe_epochs` epochs are done.

    Args:
        schedule: a Keras schedule over the recipe's steps.
        recipe_epochs: int, the recipe's epochs.
        epochs: int, this training's epochs.
    """

    def __init__(self, schedule, recipe_epochs, epochs):
        self.schedule = schedule
        self.recipe_epochs = int(recipe_epochs)
        self.epochs = int(epochs)

    def __call__(self, step):
        step = keras.ops.cast(step, "int64")
        return self.schedule(step * self.recipe_epochs // self.epochs)

    def get_config(self):
        return {
            "schedule": keras.saving.serialize_keras_object(self.schedule),
            "recipe_epochs": self.recipe_epochs,
            "epochs": self.epochs,
        }


class Plan:
    """What resolved settings and their task's recipe say for each epoch and step.

    The auxiliary weight and the batch-norm freeze change at the first epoch that starts at
    or after their (stretched) point of the recipe; the learning rate follows the recipe per
    optimizer step (`RecipeSchedule`).

    Args:
        settings: `TrainSettings` resolved for the task (`TrainSettings.resolve`).
        task: the `tfnas.tasks.Task` or its name.
    """

    def __init__(self, settings, task):
        self.settings = settings
        self.recipe = recipe(task)
        self.recipe_epochs = int(self.recipe["epochs"])
        self.drops = list(self.recipe.get("drop_epochs", [])) if self.recipe["schedule"] == "step" else []

    def aux_weight(self, epoch):
        """float, the weight of each auxiliary output's loss in epoch `epoch` (0-based)."""
        s = self.settings
        if self.drops:  # the phase of the recipe that epoch `epoch` starts in
            fraction = sum(epoch * self.recipe_epochs >= d * s.epochs for d in self.drops) / len(self.drops)
        else:
            fraction = epoch / max(s.epochs - 1, 1)
        return s.aux_weight_start + (s.aux_weight_end - s.aux_weight_start) * fraction

    def bn_frozen(self, epoch):
        """bool, whether epoch `epoch` trains with frozen batch-norm statistics."""
        return epoch >= self.settings.bn_freeze_epoch

    def schedule(self, task, group, steps_per_epoch):
        """The `RecipeSchedule` of the `"encoder"` or `"decoder"` optimizer."""
        rates = {
            "encoder": self.settings.encoder_learning_rate,
            "decoder": self.settings.decoder_learning_rate,
        }
        scaled = copy.copy(task)  # the task's learning_rate, reading this plan's recipe and rates
        scaled.TRAINING = {**self.recipe, "learning_rate": rates}
        return RecipeSchedule(
            scaled.learning_rate(steps_per_epoch, group), self.recipe_epochs, self.settings.epochs
        )

    def optimizer(self, task, group, steps_per_epoch):
        """A fresh Keras optimizer of the recipe for `group`, on its schedule."""
        name = _per_group(self.recipe["optimizer"], group)
        schedule = self.schedule(task, group, steps_per_epoch)
        if name == "sgd":
            return keras.optimizers.SGD(
                learning_rate=schedule, momentum=float(self.recipe.get("momentum", 0.9))
            )
        if name == "adam":
            return keras.optimizers.Adam(learning_rate=schedule, **self.recipe.get("adam", {}))
        raise ValueError(f"the recipe's optimizer {name!r} is not one of 'sgd', 'adam'")
