"""Full training of a found architecture (Nekrasov et al., CVPR 2019, Sec. 4.4 and App. B).

A search ends with proxy-trained networks (a few epochs each); `train` trains one of them
for as long as its paper says, with the recipe of its task (`tfnas.training.recipes`):

- segmentation: `SEGMENTATION_RECIPE`, the CVPR 2019 paper's three stages (Sec. 4.4: 30, 50
  and 100 epochs, learning rates halved after each stage, batch-norm statistics frozen and
  the rates halved again halfway through the last stage, auxiliary-loss weights 0.3, 0.25,
  0.2, 0.15; App. B: SGD with momentum 0.9 at 1e-3 on the encoder, Adam (0.9, 0.99, 1e-3) at
  3e-3 on the decoder, batch 64, random scale in [0.5, 2], mirror, crop);
- depth, pose, multi-person pose: the task's own `Task.TRAINING` and `Task.learning_rate`;

stretched to the epochs asked for (`TrainSettings.epochs`). Tasks with keypoint targets
(pose, multi-person pose) are augmented as HigherHRNet trains (`keypoint_augmentation`:
random scale in [0.75, 1.5], rotation in [-30, 30] degrees, flip with the task's flip
pairs, `tfnas.data.augment`); `TrainSettings(scale=False)` turns that off (flips only).

Mixed precision: under `"mixed_bfloat16"` the steps run as they are; under
`"mixed_float16"` every optimizer group's optimizer is a `keras.optimizers.LossScaleOptimizer`
(`parameter_groups`) and `FullTrainingModel` scales the loss, unscales the gradients and
skips a step whose gradients overflow in any group (each group's scale then halves, so
the scales stay equal); the outputs are cast to float32 before the loss and the metrics.

The model is a tfnas training model (a nested `"encoder"` and `"decoder"`, a dict of
`"logits"` and `"aux_*"` outputs); it is trained by `tfnas.training.stages` (`ProxyModel`
with one `ParameterGroup` per part, `run_stage` once per epoch, `evaluate_reward` on the
validation data), scored on the validation data after every epoch with the task's metric,
and checkpointed after every epoch (`tfnas.training.checkpoints`):

    directory/checkpoint/                      state.json + the last epoch's weights and optimizer state
    directory/tensorboard/{train,validation}   losses, learning rates, aux weight, the task's scores
    directory/model.weights.h5                 the final weights (`tfnas train` puts `directory`
                                               in a one-trial search directory: `tfnas export`)

A run killed at any moment resumes (`resume=True`) from its last whole epoch. Every epoch
draws its shuffle, flips, scales and crops from `(seed, epoch)`, so a resumed run sees the
data an uninterrupted one would, and ends after the same epochs with the same history.

    search = SearchDir("runs/voc")
    settings = TrainSettings(epochs=40)
    with settings.scope():  # the dtype policy and tf.distribute strategy, when set
        model, _ = search.load_trial_model("best")
    scores = train(model, search.space().task, train_data, val_data, "runs/voc-full", settings)
"""

import contextlib
import dataclasses
import os
import shutil
import time

import keras
import numpy as np
import tensorflow as tf

from tfnas.data import as_examples, count_examples
from tfnas.data.augment import RandomAffineTransform
from tfnas.io import atomic_path
from tfnas.report.progress import format_duration
from tfnas.search_dir import MODEL_WEIGHTS
from tfnas.spaces.base import MAIN_OUTPUT
from tfnas.tasks import get_task
from tfnas.training.checkpoints import Checkpoint
from tfnas.training.polyak import ParameterGroup
from tfnas.training.proxy import pad_dataset, task_metrics
from tfnas.training.recipes import DEFAULT_AUX_WEIGHT, SEGMENTATION_RECIPE, Plan, TrainSettings, recipe
from tfnas.training.stages import (
    NonFiniteLossError,
    ProxyModel,
    evaluate_reward,
    run_stage,
    set_batchnorm_momentum,
)

__all__ = [
    "SEGMENTATION_RECIPE",
    "FullTrainingModel",
    "TrainSettings",
    "freeze_batchnorm",
    "keypoint_augmentation",
    "parameter_groups",
    "random_scale_crop",
    "recipe",
    "train",
]

#: Grey that image padding takes (0 after `tfnas.preprocessing.preprocess`).
IMAGE_FILL = 128
#: TensorBoard's folder in a training's directory.
TENSORBOARD_DIR = "tensorboard"


#: The dtype policy whose training needs loss scaling (float16 gradients underflow).
LOSS_SCALED_POLICY = "mixed_float16"


def _float32(outputs):
    """The network's outputs (a dict of logits, or the logits) cast to float32."""
    if isinstance(outputs, dict):
        return {key: tf.cast(value, tf.float32) for key, value in outputs.items()}
    return {MAIN_OUTPUT: tf.cast(outputs, tf.float32)}


class FullTrainingModel(ProxyModel):
    """`ProxyModel` whose auxiliary-loss weight is a variable, so that it can change between
    epochs without tracing the training step again (no teacher, no distillation).

    Outputs are cast to float32 before the loss and the metric (a mixed-precision network
    computes its logits in float16 or bfloat16). When every group's optimizer is a
    `keras.optimizers.LossScaleOptimizer` (`parameter_groups` under `"mixed_float16"`), a
    step multiplies the loss by the loss scale before differentiating; if any gradient of
    any group is not finite, every group skips the step and halves its scale (the groups'
    scales start equal and so stay equal: the loss is scaled by the first group's), else
    each group unscales its gradients and applies them, doubling its scale after
    `dynamic_growth_steps` good steps in a row (Keras' dynamic loss scaling).

    Args:
        network, groups, task: as `ProxyModel`.
        aux_weight: float, the initial weight of each auxiliary output's loss.

    Raises:
        ValueError: if some groups scale the loss and others do not, their scales differ,
            or a `"mixed_float16"` network comes without loss-scaling groups.
    """

    def __init__(self, network, groups, task, aux_weight=DEFAULT_AUX_WEIGHT, **kwargs):
        super().__init__(network, groups, task, aux_weight=0.0, distillation_weight=0.0, **kwargs)
        self.aux_weight = keras.Variable(
            float(aux_weight), dtype="float32", trainable=False, name="aux_weight"
        )
        scaled = [isinstance(g.optimizer, keras.optimizers.LossScaleOptimizer) for g in self.groups]
        self.loss_scaled = bool(scaled) and all(scaled)
        if any(scaled) and not self.loss_scaled:
            raise ValueError(
                f"optimizer groups {[g.flat.name for g in self.groups]} scale the loss as "
                f"{scaled}; either every group's optimizer is a LossScaleOptimizer or none is"
            )
        if self.loss_scaled:
            scales = {float(g.optimizer.dynamic_scale.numpy()) for g in self.groups}
            if len(scales) > 1:
                raise ValueError(
                    f"the groups' loss scales differ ({sorted(scales)}); one loss is scaled "
                    "for all of them, so give every LossScaleOptimizer the same initial_scale"
                )
        policy = network.dtype_policy.name
        if policy == LOSS_SCALED_POLICY and not self.loss_scaled:
            raise ValueError(
                f"the network computes in {policy!r}, whose float16 gradients underflow "
                "without loss scaling; make the groups with parameter_groups (each optimizer "
                "a keras.optimizers.LossScaleOptimizer)"
            )

    def call(self, inputs, training=False):
        """Runs the wrapped network; its outputs as a dict of float32 logits."""
        return _float32(self.network(inputs, training=training))

    def train_step(self, data):
        """One update of every optimizer group on a batch (loss-scaled under float16)."""
        self.traces["train_step"] += 1
        inputs, targets, _ = self._unpack(data)
        variables = [v for group in self.groups for v in group.variables]
        with tf.GradientTape() as tape:
            outputs = _float32(self.network(inputs, training=True))
            total, parts = self.proxy_loss(targets, outputs)
            objective = self.groups[0].optimizer.scale_loss(total) if self.loss_scaled else total
        gradients = tape.gradient(objective, variables)
        if self.loss_scaled:
            # An overflow in one group must skip the step of all of them: NaN gradients
            # everywhere make each LossScaleOptimizer skip and halve its scale.
            finite = tf.reduce_all(
                tf.stack([tf.reduce_all(tf.math.is_finite(g)) for g in gradients if g is not None])
            )
            keep = tf.where(finite, 1.0, float("nan"))
            gradients = [None if g is None else g * tf.cast(keep, g.dtype) for g in gradients]
        return self._apply_and_track(gradients, parts)

    def test_step(self, data):
        """Accumulates the task's metric on the main output (cast to float32)."""
        self.traces["test_step"] += 1
        inputs, targets, _ = self._unpack(data)
        outputs = _float32(self.network(inputs, training=False))
        self.metric.update_state(targets, outputs[MAIN_OUTPUT])
        return {self.metric.name: self.metric.result()}


def freeze_batchnorm(model):
    """Freezes the batch-norm statistics of `model` (PyTorch's `bn.eval()` while training).

    The layers normalise with their moving statistics and stop updating them; their scale
    and offset keep training, because the optimizer groups hold those variables and the
    gradient tape still watches them. Trace the training step again afterwards.

    Returns:
        int, the number of BatchNormalization layers frozen.
    """
    count = 0
    for layer in model._flatten_layers(include_self=True, recursive=True):  # noqa: SLF001
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.trainable = False
            count += 1
    return count


def random_scale_crop(dataset, scale_range, crop_size, target_fill, seed):
    """Random scale, then a random crop padded to `crop_size`, of `(uint8 image, map)` pairs.

    App. B: "randomly scaled in the range of [0.5, 2.0], randomly mirrored, before being
    randomly cropped and padded". The image is resized bilinearly, the target (a class map
    or a depth map) by nearest neighbour, so that labels and missing depths stay what they
    are; a smaller image is padded evenly on both sides, grey for the image and `target_fill`
    (ignored label, missing depth) for the target. Each example's draws come from
    `(seed, its index)`.

    Args:
        dataset: unbatched `tf.data.Dataset` of `(uint8 (H, W, 3), (H, W) map)`.
        scale_range: `(lo, hi)` of the scale factor.
        crop_size: `(height, width)` of the output.
        target_fill: scalar, the target value of padded pixels.
        seed: int.

    Returns:
        the augmented data set, every element `crop_size`.

    Raises:
        ValueError: if the targets are not per-pixel maps.
    """
    target_spec = dataset.element_spec[1]
    if not isinstance(target_spec, tf.TensorSpec) or target_spec.shape.rank != 2:
        raise ValueError(
            f"random scaling and cropping needs per-pixel targets (segmentation, depth), got "
            f"{target_spec}; for keypoint targets train with scale=False (flips only)"
        )
    lo, hi = (float(s) for s in scale_range)
    crop_h, crop_w = (int(s) for s in crop_size)

    def augment(index, pair):
        image, target = pair
        seeds = tf.stack([tf.cast(seed, tf.int64), index])
        factor = tf.random.stateless_uniform([], seed=seeds, minval=lo, maxval=hi)
        size = tf.cast(tf.round(tf.cast(tf.shape(image)[:2], tf.float32) * factor), tf.int32)
        size = tf.maximum(size, 1)
        image = tf.image.resize(image, size, method="bilinear")
        image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
        target = tf.image.resize(target[..., None], size, method="nearest")[..., 0]
        # padded evenly on both sides up to (at least) the crop, then cropped at random
        pad_h, pad_w = tf.maximum((crop_h - size[0] + 1) // 2, 0), tf.maximum((crop_w - size[1] + 1) // 2, 0)
        image = tf.pad(image, [[pad_h, pad_h], [pad_w, pad_w], [0, 0]], constant_values=IMAGE_FILL)
        fill = tf.cast(target_fill, target.dtype)
        target = tf.pad(target, [[pad_h, pad_h], [pad_w, pad_w]], constant_values=fill)
        room = tf.shape(target) - [crop_h, crop_w] + 1
        offset = tf.random.stateless_uniform(
            [2], seed=seeds + [0, 1 << 40], maxval=tf.int32.max, dtype=tf.int32
        )
        top, left = offset[0] % room[0], offset[1] % room[1]
        image = image[top : top + crop_h, left : left + crop_w]
        target = target[top : top + crop_h, left : left + crop_w]
        return tf.ensure_shape(image, [crop_h, crop_w, 3]), tf.ensure_shape(target, [crop_h, crop_w])

    return dataset.enumerate().map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def keypoint_augmentation(task, settings):
    """The random affine augmentation full training gives a keypoint task, or None.

    HigherHRNet's COCO settings (`tfnas.data.augment.RandomAffineTransform`: scale in
    [0.75, 1.5], rotation in [-30, 30] degrees, no shift), the flip with the task's flip
    pairs when `settings.flip`. None for tasks with per-pixel targets (they scale and crop,
    `random_scale_crop`) and when `settings.scale` is False.

    Args:
        task: a `tfnas.tasks.Task`.
        settings: `TrainSettings` as the user gave them (before `resolve`, which turns
            `scale` off for keypoint targets).

    Returns:
        `RandomAffineTransform` or None.
    """
    spec = task.target_spec
    if not (settings.scale and isinstance(spec, dict) and "keypoints" in spec):
        return None
    return RandomAffineTransform(
        flip_probability=0.5 if settings.flip else 0.0, flip_pairs=getattr(task, "flip_pairs", ())
    )


def epoch_seed(seed, epoch):
    """The seed of one epoch's shuffle and augmentations."""
    return int(seed) * 1_000_003 + int(epoch)


def parameter_groups(model, plan, task, steps_per_epoch):
    """`{"encoder": ParameterGroup, "decoder": ParameterGroup}` of their trainable variables.

    Each optimizer is the recipe's (`Plan.optimizer`), wrapped in a
    `keras.optimizers.LossScaleOptimizer` (Keras' defaults: scale 2**15, doubled after 2000
    good steps) when the model computes in `"mixed_float16"`.

    Args:
        model: a tfnas training model (nested `"encoder"` and `"decoder"`).
        plan: the `Plan` of the training.
        task: the `tfnas.tasks.Task`.
        steps_per_epoch: int, optimizer steps per epoch (the schedules count in them).

    Returns:
        dict of `ParameterGroup`, the parts without trainable variables left out.

    Raises:
        ValueError: if the model has no nested encoder and decoder.
    """
    try:
        parts = {name: model.get_layer(name) for name in ("encoder", "decoder")}
    except ValueError:
        raise ValueError(
            f"model {model.name!r} has no nested 'encoder' and 'decoder' models; train a "
            "tfnas training model (space.build_genotype(...) or SearchDir.load_trial_model)"
        ) from None
    scaled = model.dtype_policy.name == LOSS_SCALED_POLICY

    def optimizer(name):
        inner = plan.optimizer(task, name, steps_per_epoch)
        return keras.optimizers.LossScaleOptimizer(inner) if scaled else inner

    return {
        name: ParameterGroup(optimizer(name), part.trainable_variables, name=f"{name}_parameters")
        for name, part in parts.items()
        if part.trainable_variables
    }


def _check_model(model, settings):
    policy = model.dtype_policy.name
    if (settings.mixed_precision or "float32") != policy:
        raise ValueError(
            f"the model was built with the dtype policy {policy!r} but the settings ask for "
            f"{settings.mixed_precision or 'float32'!r}; build it inside `with settings.scope():`"
        )
    strategy = settings.strategy
    if strategy is not None and not strategy.extended.variable_created_in_scope(model.weights[0].value):
        raise ValueError(
            f"the model's variables were not created under the {type(strategy).__name__}; "
            "build the model inside `with settings.scope():`"
        )


def _image_size(dataset):
    shape = dataset.element_spec[0].shape
    if shape[0] is not None and shape[1] is not None:
        return int(shape[0]), int(shape[1])
    image, _ = next(iter(dataset.take(1)))
    return int(image.shape[0]), int(image.shape[1])


def _target_fill(task, dataset, image_size):
    """The target value of padded pixels (the task's padding target), for per-pixel maps."""
    spec = dataset.element_spec[1]
    if not isinstance(spec, tf.TensorSpec) or spec.shape.rank != 2:
        raise ValueError(
            f"random scaling and cropping moves per-pixel targets only (segmentation, depth); "
            f"the {task.name} task's targets are {spec}: train with scale=False (flips only)"
        )
    return np.asarray(task.padding_target(image_size)).flat[0]


def _check_resume(saved, given, path):
    differ = [f"{k}: {saved.get(k)!r} there, {v!r} now" for k, v in given.items() if saved.get(k) != v]
    if differ:
        raise ValueError(
            f"{path} was trained with other settings ({'; '.join(differ)}); resume with the "
            "settings it started with, or train into another directory"
        )


def _headline(task, scores):
    key, label = (task.headline_scores or (("reward", "reward"),))[0]
    value = scores.get(key)
    return f"  {label} {value:.4f}" if isinstance(value, float) else ""


class _Summaries:
    """TensorBoard scalars of each epoch under `directory/tensorboard/{train,validation}`."""

    def __init__(self, directory):
        self.directory = os.path.join(directory, TENSORBOARD_DIR)
        self.writers = {}

    def write(self, step, part, values):
        if part not in self.writers:
            self.writers[part] = tf.summary.create_file_writer(os.path.join(self.directory, part))
        with self.writers[part].as_default(step=step):
            for name, value in values.items():
                tf.summary.scalar(name, value)
        self.writers[part].flush()

    def close(self):
        for writer in self.writers.values():
            writer.close()


def train(model, task, train, val, directory, settings=None, resume=False, verbose=1):
    """Trains a tfnas training model with its task's full recipe (see the module docstring).

    Args:
        model: a tfnas training model (nested `"encoder"` and `"decoder"`, outputs a dict of
            `"logits"` and `"aux_*"`), e.g. from `SearchDir.load_trial_model`; trained in
            place. With `mixed_precision` or a `strategy`, build it inside `settings.scope()`.
        task: the `tfnas.tasks.Task` the model predicts for (its space's `task`), or its name.
        train: the training data: unbatched `tf.data` of `(uint8 image, target)` of one
            size, in a fixed order (or `(images, targets)` arrays).
        val: the validation data, the same form, scored after every epoch.
        directory: str, where checkpoints, TensorBoard logs and the final weights go.
        settings: `TrainSettings`; None: the recipe's.
        resume: bool, continue from the last checkpoint in `directory` (from the start when
            it has none). Default False: `directory` must hold no checkpoint.
        verbose: 0 silent, 1 one line per epoch. Default 1.

    Returns:
        dict, the task's scores on `val` after the last epoch (`reward` included, as a
        search trial records them: `miou`, `fwiou`, ... for segmentation).

    Raises:
        ValueError: for bad settings or data, a checkpoint with other settings, or a
            directory that holds a checkpoint without `resume`.
        FloatingPointError: when the loss or the weights stop being finite.
    """
    task = get_task(task)
    requested = settings or TrainSettings()
    settings = requested.resolve(task)
    affine = keypoint_augmentation(task, requested)
    plan = Plan(settings, task)
    train, val = as_examples(train, "train"), as_examples(val, "val")
    if val is None:
        raise ValueError(
            "train needs validation data (val); hold out a part of the training data with "
            "tfnas.data.split(train, 0.1)"
        )
    for part, data in (("training", train), ("validation", val)):
        try:
            task.validate_dataset(data, limit=8)
        except ValueError as error:
            raise ValueError(f"the {part} data do not fit the {task.name} task: {error}") from None
    _check_model(model, settings)
    image_size = _image_size(train)
    if settings.scale and settings.crop_size is None:
        settings = dataclasses.replace(settings, crop_size=image_size)
    num_train, num_val = count_examples(train), count_examples(val)
    if num_train < 1 or num_val < 1:
        raise ValueError(f"train needs training and validation examples; got {num_train} and {num_val}")
    batch_size = min(settings.batch_size, num_train)
    steps_per_epoch = num_train // batch_size

    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    checkpoint = Checkpoint(directory)
    state = checkpoint.read()
    if state is not None and not resume:
        raise ValueError(
            f"{directory} holds a training checkpoint (epoch {state['epoch']}); pass resume=True "
            "(tfnas train --resume) to continue it, or train into another directory"
        )
    saved_settings = {**settings.to_json(), "keypoint_augmentation": affine and affine.config()}
    if state is not None:
        _check_resume(state["settings"], saved_settings, checkpoint.state_file)

    with settings.strategy.scope() if settings.strategy is not None else contextlib.nullcontext():
        groups = parameter_groups(model, plan, task, steps_per_epoch)
        wrapper = FullTrainingModel(
            model, list(groups.values()), task, plan.aux_weight(0), name="full_training"
        )
    set_batchnorm_momentum(model, settings.bn_momentum)
    history, start = [], 0
    if state is not None:
        checkpoint.restore(state, model, wrapper.groups)
        history, start = list(state["history"]), int(state["epoch"])
        if verbose:
            print(f"resuming after epoch {start}/{settings.epochs} ({checkpoint.state_file})")
    checkpoint.clean(keep=state and state["files"])

    target_fill = _target_fill(task, train, image_size) if settings.scale else None
    val_batches = task.pipeline(pad_dataset(task, val, num_val, batch_size, image_size), batch_size)
    # tf.data's seeded ops combine their seed with the global one: fixing it makes every
    # epoch's data a function of (seed, epoch) alone, in any process (a resumed run).
    keras.utils.set_random_seed(settings.seed)
    summaries = _Summaries(directory)
    frozen = False
    seconds = []
    try:
        for epoch in range(start, settings.epochs):
            began = time.perf_counter()
            wrapper.aux_weight.assign(plan.aux_weight(epoch))
            if plan.bn_frozen(epoch) and not frozen:
                freeze_batchnorm(model)
                wrapper.train_function = None  # trace the step again: batch norms now infer
                frozen = True
            seed = epoch_seed(settings.seed, epoch)
            data = train
            if settings.scale:
                data = random_scale_crop(data, settings.scale_range, settings.crop_size, target_fill, seed)
            if affine is not None:  # keypoint tasks: scale, rotation and flip in one map
                data = affine.map(data, seed)
            batches = task.pipeline(
                data,
                batch_size,
                shuffle=True,
                seed=seed,
                augment=settings.flip and affine is None,
                drop_remainder=True,
            )
            rates = {name: float(group.optimizer.learning_rate) for name, group in groups.items()}
            try:
                fit = run_stage(wrapper, batches, 1, f"epoch {epoch + 1}", verbose=0)
            except NonFiniteLossError:
                raise FloatingPointError(
                    f"epoch {epoch + 1}/{settings.epochs}: the loss or the weights became NaN or "
                    f"infinite; the last good checkpoint is epoch {epoch} in {checkpoint.path}: "
                    "lower the learning rates and train again"
                ) from None
            losses = {k: float(fit.history[k][-1]) for k in ("loss", "task_loss", "aux_loss")}
            scores = task_metrics(evaluate_reward(wrapper, val_batches))
            seconds.append(time.perf_counter() - began)
            record = {
                "epoch": epoch + 1,
                **losses,
                "learning_rate": rates,
                "aux_weight": float(wrapper.aux_weight.numpy()),
                "bn_frozen": frozen,
                "val": scores,
                "seconds": seconds[-1],
            }
            history.append(record)
            summaries.write(
                epoch + 1,
                "train",
                {
                    **losses,
                    **{f"learning_rate/{k}": v for k, v in rates.items()},
                    "aux_weight": record["aux_weight"],
                },
            )
            summaries.write(epoch + 1, "validation", scores)
            checkpoint.save(epoch + 1, model, wrapper.groups, saved_settings, history)
            if verbose:
                left = np.mean(seconds[1:] or seconds) * (settings.epochs - epoch - 1)  # the first traces
                print(
                    f"epoch {epoch + 1}/{settings.epochs}  loss {losses['loss']:.4f}  reward "
                    f"{scores['reward']:.4f}{_headline(task, scores)}  {format_duration(seconds[-1])}"
                    + (f"  ~{format_duration(left)} left" if epoch + 1 < settings.epochs else ""),
                    flush=True,
                )
    finally:
        summaries.close()
    final = os.path.join(directory, MODEL_WEIGHTS)
    if start < settings.epochs or not os.path.exists(final):  # else a finished run, resumed
        # The last checkpoint holds the model's weights as they are now (nothing changes them
        # after it is written, and a finished run resumed has just loaded them from it):
        # copying its file writes what `model.save_weights` would, without walking the model
        # again (about half a second for a small network).
        with atomic_path(final) as tmp:
            shutil.copyfile(checkpoint.network_weights(checkpoint.read()), tmp)
    return dict(history[-1]["val"]) if history else {}
