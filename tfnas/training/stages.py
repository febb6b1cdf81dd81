"""The two proxy-training stages of a search trial (Nekrasov et al., CVPR 2019, Sec. 3.2 and 4.1).

`ProxyModel` wraps a network whose outputs are a dict of logits (`"logits"` and training-
only `"aux_<i>"`): stage 1 wraps the decoder alone, fed with cached encoder outputs; stage
2 wraps the whole network (encoder + decoder), fed with images. Its `train_step` applies
the proxy loss

    task(logits) + aux_weight * sum_i task(aux_i)
                 + distillation_weight * l2(logits, teacher logits)

where `task` is the loss of the `tfnas.tasks.Task` (cross-entropy for segmentation, berHu
for depth, heatmap MSE for pose, heatmaps + associative embedding for multi-person pose),
the teacher term only when the data carry teacher logits (i.e. in stage 1), and updates
each group of variables with its own optimizer (stage 2: SGD on the encoder, Adam on the
decoder). `run_stage` trains with `model.fit` (one trace per stage: batches have a fixed
size), drops the gradient functions TensorFlow registers globally while tracing it (they
would keep every trial's graph and weights in memory, see `release_custom_gradients`),
applies Polyak averaging, and raises `NonFiniteLossError` when the loss or the
weights stop being finite. `evaluate_reward` accumulates the task's metric on the
meta-validation set (padded to whole batches with targets no metric counts, so it traces
once) and returns its scores with the task's reward (segmentation: the geometric mean of
mIoU, frequency-weighted IoU and mean accuracy, background left out).
"""

import contextlib
import logging

import keras
import keras_tuner
import numpy as np
import tensorflow as tf
from tensorflow.python.framework import ops

from tfnas.spaces.base import MAIN_OUTPUT
from tfnas.tasks import Task, get_task
from tfnas.tasks.segmentation import distillation_loss
from tfnas.training.polyak import ParameterGroup


class NonFiniteLossError(keras_tuner.errors.FailedTrialError, FloatingPointError):
    """The loss or the weights of a trial became NaN or infinite; the trial is failed."""


def set_batchnorm_momentum(model, momentum):
    """Sets the moving-statistics momentum of every BatchNormalization layer in `model`.

    Short proxy stages update batch-norm statistics over few steps; Keras' default
    momentum (0.99) would leave them near their initial values, so tfnas trains with the
    PyTorch default the authors used (0.1 there, 0.9 in Keras terms). The momentum is a
    training setting only: it is not part of the saved weights.

    Args:
        model: a Keras model or layer (nested layers are included).
        momentum: float in [0, 1).
    """
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = float(momentum)


def _as_dict(outputs):
    return outputs if isinstance(outputs, dict) else {MAIN_OUTPUT: outputs}


class ProxyModel(keras.Model):
    """A training wrapper that trains `network` with the proxy loss and several optimizers.

    Data elements are `(inputs, targets)` or `(inputs, (targets, teacher_logits))`; a target
    is what the task's loss takes (a class map, a depth map, a dict of keypoints).

    Args:
        network: a Keras model mapping inputs to a dict of logits (`"logits"`, `"aux_*"`)
            or to the logits alone.
        groups: sequence of `tfnas.training.polyak.ParameterGroup` (an optimizer and the
            variables it trains); a variable may be in one group at most, variables in no
            group stay fixed.
        task: the `tfnas.tasks.Task` (or its name), or an int: the classes of a
            segmentation task (`SegmentationTask(num_classes)`).
        aux_weight: float, weight of each auxiliary output's task loss. Default 0.15.
        distillation_weight: float, weight of the l2 loss to the teacher logits. Default 0.3.

    Attributes:
        task: the `Task`.
        metric: the task's streaming metric on the main output (`task.metric()`).
        traces: dict `train_step` / `test_step` -> how many times Keras traced the step.

    Raises:
        ValueError: if a variable belongs to two groups.
    """

    def __init__(self, network, groups, task, aux_weight=0.15, distillation_weight=0.3, **kwargs):
        super().__init__(name=kwargs.pop("name", f"proxy_{network.name}"), **kwargs)
        self.network = network
        self.groups = list(groups)
        seen = {}
        for g, group in enumerate(self.groups):
            if not isinstance(group, ParameterGroup):
                raise ValueError(f"groups[{g}] is {group!r}; expected a ParameterGroup")
            for v in group.variables:
                if id(v) in seen:
                    raise ValueError(
                        f"variable {v.path!r} is in optimizer groups {seen[id(v)]} "
                        f"and {g}; give each variable to one optimizer"
                    )
                seen[id(v)] = g
        if not isinstance(task, (Task, str)):
            task = get_task("segmentation", num_classes=int(task))
        self.task = get_task(task)
        self.aux_weight = float(aux_weight)
        self.distillation_weight = float(distillation_weight)
        self.trackers = {
            name: keras.metrics.Mean(name=name)
            for name in ("loss", "task_loss", "aux_loss", "distillation_loss")
        }
        self.metric = self.task.metric()
        # Python runs inside a tf.function only while it is traced, so these count traces.
        self.traces = {"train_step": 0, "test_step": 0}

    def call(self, inputs, training=False):
        """Runs the wrapped network."""
        return self.network(inputs, training=training)

    @property
    def metrics(self):
        """Loss trackers and the task's metric (reset by Keras at each epoch)."""
        return list(self.trackers.values()) + [self.metric]

    def proxy_loss(self, targets, outputs, teacher=None):
        """The proxy loss of a batch and its parts.

        Args:
            targets: the batch's targets (what the task's loss takes).
            outputs: the network's dict of logits.
            teacher: optional teacher logits `(N, h, w, C)`.

        Returns:
            `(total, parts)`: scalar tensor and dict of scalar tensors.
        """
        outputs = _as_dict(outputs)
        loss = self.task.loss
        main = loss(targets, outputs[MAIN_OUTPUT])
        aux = [loss(targets, value) for key, value in outputs.items() if key != MAIN_OUTPUT]
        aux = tf.add_n(aux) if aux else tf.constant(0.0)
        total = main + self.aux_weight * aux
        kd = tf.constant(0.0)
        if teacher is not None:
            kd = distillation_loss(outputs[MAIN_OUTPUT], teacher)
            total = total + self.distillation_weight * kd
        return total, {"loss": total, "task_loss": main, "aux_loss": aux, "distillation_loss": kd}

    @staticmethod
    def _unpack(data):
        inputs, targets = data
        if isinstance(targets, (tuple, list)):
            return inputs, targets[0], targets[1]
        return inputs, targets, None

    def train_step(self, data):
        """One update of every optimizer group on a batch."""
        self.traces["train_step"] += 1
        inputs, targets, teacher = self._unpack(data)
        variables = [v for group in self.groups for v in group.variables]
        with tf.GradientTape() as tape:
            outputs = self.network(inputs, training=True)
            total, parts = self.proxy_loss(targets, outputs, teacher)
        return self._apply_and_track(tape.gradient(total, variables), parts)

    def _apply_and_track(self, gradients, parts):
        """Applies `gradients` (aligned with the groups' variables, in order) group by group,
        updates the loss trackers with `parts`; returns the trackers' results."""
        start = 0
        for group in self.groups:
            group.apply(gradients[start : start + len(group.variables)])
            start += len(group.variables)
        for name, value in parts.items():
            self.trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self.trackers.items()}

    def test_step(self, data):
        """Accumulates the task's metric on the main output; returns its running result."""
        self.traces["test_step"] += 1
        inputs, targets, _ = self._unpack(data)
        outputs = _as_dict(self.network(inputs, training=False))
        self.metric.update_state(targets, outputs[MAIN_OUTPUT])
        return {self.metric.name: self.metric.result()}


@contextlib.contextmanager
def quiet_retracing():
    """Silences TensorFlow's "excessive retracing" warning inside the block.

    A search traces new step functions for every trial by design, which that warning
    (logged by the `tensorflow` logger) misreads as a bug.
    """
    logger = logging.getLogger("tensorflow")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


@contextlib.contextmanager
def release_custom_gradients():
    """Drops the gradient functions that `tf.custom_gradient` registers inside the block.

    In graph mode (inside a traced `tf.function`) `tf.custom_gradient` registers the
    gradient as `CustomGradient-<n>` in TensorFlow's global gradient registry, which is
    never cleared, and that closure holds tensors of the traced graph, so the whole graph
    and every variable it captures (the trial's weights, optimizer slots and Polyak
    averages) stay in memory after the model is gone. Keras' TensorFlow optimizer adds one
    per traced train step (its `all_reduce` of the gradients goes through a custom
    gradient), so a search kept every trial's training graphs (issue 16: ~170 MB per trial
    on a tiny search; see `benchmarks/bench_memory.py` and benchmarks/RESULTS.md). Upstream:
    tensorflow/tensorflow#27492 and #97697, keras-team/tf-keras#286 and PR #898.

    The registry is read only while a gradient is being built (at trace time), so once
    `fit` has returned the entries added by its traces are never used again. Only entries
    added inside the block are removed; the block must not run concurrently with other
    tracing in the process.
    """
    registry = ops._gradient_registry._registry  # noqa: SLF001 (no public way to unregister)
    before = set(registry)
    try:
        yield
    finally:
        for name in [key for key in registry if key not in before]:
            if name.startswith("CustomGradient-"):
                del registry[name]


def _check_finite(model, history, stage):
    losses = history.history.get("loss", [])
    bad_loss = [i for i, value in enumerate(losses) if not np.isfinite(value)]
    if bad_loss or model.stop_training and not losses:
        value = losses[bad_loss[0]] if bad_loss else float("nan")
        raise NonFiniteLossError(
            f"{stage}: the training loss became {'NaN' if np.isnan(value) else value} in epoch "
            f"{bad_loss[0] + 1 if bad_loss else 1}; the architecture or its learning rate is "
            "unstable, so the trial is recorded as failed"
        )
    if all(group.all_finite() for group in model.groups):  # one check per group, not per weight
        return
    bad = [v.path for v in model.network.trainable_variables if not np.all(np.isfinite(v.numpy()))]
    if bad:
        raise NonFiniteLossError(
            f"{stage}: weights {bad[:3]} became NaN or infinite; the trial is recorded as failed"
        )


def run_stage(model, dataset, epochs, stage, callbacks=(), verbose=1):
    """Trains a `ProxyModel` for `epochs`, then applies Polyak averaging.

    Args:
        model: a `ProxyModel` (compiled by this function the first time; a supernet's
            stage model is trained again for every trial with the step traced once).
        dataset: `tf.data` of batches of a fixed size (drop the remainder).
        epochs: int >= 1.
        stage: str naming the stage in messages, e.g. `"stage 1"`.
        callbacks: extra Keras callbacks (e.g. TensorBoard).
        verbose: Keras verbosity (0, 1 or 2).

    Returns:
        The `keras.callbacks.History` of the fit.

    Raises:
        NonFiniteLossError: when the loss or the weights stop being finite.
    """
    if not model.compiled:  # compiling again would drop the traced step (a supernet reuses it)
        model.compile(optimizer=None, jit_compile=False)
    for group in model.groups:
        group.sync()
    if verbose:
        print(f"{stage}: {epochs} epoch(s)")
    with quiet_retracing(), release_custom_gradients():
        history = model.fit(
            dataset,
            epochs=int(epochs),
            verbose=verbose,
            shuffle=False,
            callbacks=[keras.callbacks.TerminateOnNaN(), *callbacks],
        )
    _check_finite(model, history, stage)
    for group in model.groups:
        group.apply_polyak()
    _check_finite(model, history, stage)
    return history


def evaluate_reward(model, dataset):
    """Scores a `ProxyModel` on meta-validation batches; returns the task's scores.

    Args:
        model: a `ProxyModel`.
        dataset: `tf.data` of `(inputs, targets)` batches of one size (pad with
            `pad_to_batches`).

    Returns:
        dict from `model.task.scores`, `reward` included; for segmentation `miou`,
        `fwiou`, `mean_accuracy`, `pixel_accuracy`, `per_class_iou`.
    """
    if not model.compiled:
        model.compile(optimizer=None, jit_compile=False)
    model.evaluate(dataset, verbose=0)
    return model.task.scores(model.metric)


def pad_to_batches(arrays, targets, batch_size, padding):
    """Pads arrays with zeros and targets with `padding` to a multiple of `batch_size` rows.

    The padding target is one that no metric counts (`Task.padding_target`: ignored pixels,
    missing depth, unlabelled joints), so whole batches keep one traced evaluation step and
    change no score.

    Args:
        arrays: list of numpy arrays with the same first dimension N.
        targets: numpy array, or dict of arrays, with first dimension N.
        batch_size: int.
        padding: one unbatched target (array or dict of arrays, like `targets`' rows).

    Returns:
        `(arrays, targets)` padded to `ceil(N / batch_size) * batch_size` rows.
    """
    count = len(keras.tree.flatten(targets)[0])
    extra = -count % int(batch_size)
    if not extra:
        return list(arrays), targets
    pad = lambda a, row: np.concatenate(
        [a, np.broadcast_to(np.asarray(row, a.dtype), (extra,) + a.shape[1:])]
    )
    arrays = [pad(a, 0) for a in arrays]
    return arrays, keras.tree.map_structure(pad, targets, padding)
