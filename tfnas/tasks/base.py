"""The task abstraction: what a dense-prediction network predicts, and how it is trained and scored.

The CVPR 2019 paper (Nekrasov et al., CVPR 2019, Sec. 4.5, App. B) searches on segmentation and trains the
found architectures for pose and depth; 3M-Pose (Hoang, 3M-Pose thesis 2021) searches directly for bottom-up
pose. A `Task` gathers everything that differs between them, so that spaces, the proxy task,
`tfnas train` and export ask the task instead of assuming segmentation:

- the target: what a data set element's second part is (`target_spec`, `validate_target`);
- the head: `output_channels`, `output_stride` (None when the loss resizes the prediction to
  the target) and `head(features, name, feature_stride)`, the last layer of a decoder;
- `loss` (a Keras loss called as `loss(targets, outputs)`), `metric()` (a streaming Keras
  metric with `scores()`), `scores(metric)` and `reward(scores)` (the search reward);
- `builtin_data(split, image_size, ...)`: offline procedural data to try the task;
- `flip(image, target)` and `pipeline(...)`: augmentation and batching of its data;
- `postprocess(outputs, image_size)`: what an exported model returns.

Data elements are `(uint8 (H, W, 3) image, target)` before batching and
`(float32 (N, H, W, 3) image in [-1, 1], batched target)` after `pipeline`; a target is a
tensor or a dict of tensors (see each task). The main output of a model keeps the name
`"logits"` (`tfnas.spaces.base.MAIN_OUTPUT`) whatever the task: for depth it holds depths,
for pose heatmaps (and tags).
"""

import keras
import numpy as np
import tensorflow as tf

from tfnas.ops import ResizeLike


@keras.saving.register_keras_serializable(package="tfnas")
class UpsampleBy(keras.layers.Layer):
    """Bilinear upsampling by an integer factor, exportable with dynamic sizes.

    Uses `tf.image.resize` (half-pixel centres) rather than `UpSampling2D`, which fails to
    export on dynamic sizes (DESIGN.md). A head uses it to bring a prediction made at the
    features' stride to the task's output stride (e.g. stride-8 logits to stride-4 heatmaps).

    Args:
        factor: int >= 1, the scale factor.
    """

    def __init__(self, factor, **kwargs):
        super().__init__(**kwargs)
        self.factor = int(factor)
        if self.factor < 1:
            raise ValueError(f"factor={factor!r} must be a positive int")

    def call(self, x):
        size = tf.shape(x)[1:3] * self.factor
        return tf.cast(tf.image.resize(x, size, method="bilinear"), x.dtype)

    def compute_output_shape(self, input_shape):
        scale = lambda n: None if n is None else n * self.factor
        return (input_shape[0], scale(input_shape[1]), scale(input_shape[2]), input_shape[3])

    def get_config(self):
        config = super().get_config()
        config.update(factor=self.factor)
        return config


class Task:
    """Base class of the dense prediction tasks (see the module docstring).

    Subclasses set `name`, `output_stride`, `activation`, implement `output_channels`,
    `target_spec`, `validate_target`, `padding_target`, `_make_loss`, `metric`, `reward`,
    `builtin_data`, `postprocess` and, when targets are not per-pixel maps, `flip`.
    """

    #: Registry name of the task.
    name = None
    #: What `reward` computes, in words (search summaries and reports print it).
    reward_description = None
    #: The scores reports show after the reward: `(metric name, display name)` pairs.
    headline_scores = ()
    #: Output names of an exported model's serving signatures (what `postprocess` returns).
    serving_outputs = ()
    #: Stride of the output the loss expects, or None when the loss resizes the prediction
    #: to the target (segmentation, depth).
    output_stride = None
    #: Activation of the head (a Keras activation name) or None for a linear head.
    activation = None

    #: The paper's training recipe for the task (a dict, source named in it) or None; read
    #: by `learning_rate` and meant for `tfnas train`.
    TRAINING = None

    def __init__(self):
        self._loss = None

    def learning_rate(self, steps_per_epoch, group="decoder"):
        """The learning-rate schedule of `TRAINING` as a Keras schedule (per optimizer step).

        `"step"` recipes divide the rate by `1 / drop_factor` at each of `drop_epochs`;
        `"poly"` recipes follow `lr * (1 - epoch / poly_epochs) ** poly_power` (per step).

        Args:
            steps_per_epoch: int, optimizer steps per epoch.
            group: `"encoder"` or `"decoder"` when the recipe gives one rate per group.
                Default `"decoder"`.

        Returns:
            a `keras.optimizers.schedules.LearningRateSchedule`.

        Raises:
            ValueError: if the task has no recipe or `group` is not in it.
        """
        recipe = self.TRAINING
        if recipe is None:
            raise ValueError(f"the {self.name} task has no training recipe of its paper")
        rate = recipe["learning_rate"]
        if isinstance(rate, dict):
            if group not in rate:
                raise ValueError(f"group {group!r} is not in the recipe; use one of {sorted(rate)}")
            rate = rate[group]
        steps = int(steps_per_epoch)
        if recipe["schedule"] == "step":
            # Keras switches after a boundary: epoch e (0-based) starts at step e * steps.
            boundaries = [int(e) * steps - 1 for e in recipe["drop_epochs"]]
            values = [rate * recipe["drop_factor"] ** i for i in range(len(boundaries) + 1)]
            return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)
        return keras.optimizers.schedules.PolynomialDecay(
            rate, recipe["poly_epochs"] * steps, end_learning_rate=0.0, power=recipe["poly_power"]
        )

    # ---- what the network predicts -------------------------------------------------------
    @property
    def output_channels(self):
        """int, channels of the main output."""
        raise NotImplementedError

    def head(self, features, name="logits", feature_stride=None, kernel_size=3, reference=None):
        """The task's output layer on a decoder's last features (a 3x3 conv, as the spaces').

        When the task has an `output_stride` and the features are coarser, the prediction
        is upsampled bilinearly to that stride. A decoder whose last features have no fixed
        stride (a supernet, where the architecture decides it at run time) passes
        `reference`: the prediction is first resized to the size of that tensor (bilinear,
        `tfnas.ops.ResizeLike`), then upsampled from its stride; resizing to the size a
        tensor already has changes nothing, so a supernet computes what the standalone
        architecture computes.

        Args:
            features: symbolic Keras tensor `(N, h, w, C)`.
            name: name of the output layer (default `"logits"`).
            feature_stride: int, stride of `features` relative to the input image; None
                when unknown (no resizing).
            kernel_size: int, kernel of the conv. Default 3.
            reference: optional `(tensor, stride)`: a tensor at a known stride (e.g. the
                finest encoder feature) that the prediction is resized to when its own
                stride differs from it or is None. Ignored by tasks without an
                `output_stride`.

        Returns:
            symbolic tensor `(N, h', w', output_channels)`.

        Raises:
            ValueError: if the features (or the reference) are finer than the output stride.
        """
        align = None
        if self.output_stride is not None and reference is not None:
            reference, reference_stride = reference
            if feature_stride is None or feature_stride != reference_stride:
                align, feature_stride = reference, reference_stride
        upsample = 1
        if self.output_stride is not None and feature_stride is not None:
            if feature_stride % self.output_stride:
                raise ValueError(
                    f"features at stride {feature_stride} cannot give the {self.name} task's "
                    f"stride-{self.output_stride} output; use features at a multiple of "
                    f"{self.output_stride}"
                )
            upsample = feature_stride // self.output_stride
        # The conv's name depends only on the task (not on the strides), so that a supernet
        # and its standalone architectures name their head weights alike; the last layer
        # is always `name` (what `inference_model` and export look up).
        steps = [
            step
            for step, wanted in (
                ("align", align is not None),
                ("up", upsample > 1),
                ("activation", self.activation is not None),
            )
            if wanted
        ]
        conv = self.head_conv_name(name)
        if conv != name and not steps:
            steps = ["identity"]
        x = keras.layers.Conv2D(self.output_channels, kernel_size, padding="same", name=conv)(features)
        for i, step in enumerate(steps):
            layer_name = name if i == len(steps) - 1 else f"{name}_{step}"
            if step == "align":
                x = ResizeLike(name=layer_name)([x, align])
            elif step == "up":
                x = UpsampleBy(upsample, name=layer_name)(x)
            elif step == "activation":
                x = keras.layers.Activation(self.activation, name=layer_name)(x)
            else:
                x = keras.layers.Identity(name=layer_name)(x)
        return x

    def head_conv_name(self, name="logits"):
        """The name of the conv of the head `head(..., name)`: `name` itself when the head is
        a bare conv (tasks without an output stride or activation), else `<name>_conv`."""
        if self.output_stride is None and self.activation is None:
            return name
        return f"{name}_conv"

    def head_conv(self, model, name="logits"):
        """The conv layer of the head `head(..., name)` built in `model` (its weights)."""
        return model.get_layer(self.head_conv_name(name))

    # ---- targets -------------------------------------------------------------------------
    @property
    def target_spec(self):
        """`tf.TensorSpec` (or dict of them) of one unbatched target."""
        raise NotImplementedError

    def validate_target(self, target, image_size=None):
        """Check one unbatched target (numpy) and raise a `ValueError` naming what is wrong.

        Args:
            target: array or dict of arrays, as in `target_spec`.
            image_size: optional `(height, width)` of its image.

        Returns:
            the target, converted to the spec's dtypes.
        """
        raise NotImplementedError

    def padding_target(self, image_size):
        """One target that no metric counts, to pad an evaluation set to whole batches.

        Args:
            image_size: `(height, width)` of the padding image.

        Returns:
            numpy array or dict of arrays, as in `target_spec`.
        """
        raise NotImplementedError

    def validate_dataset(self, dataset, limit=None):
        """Validate the elements of a `tf.data` data set of `(image, target)` pairs.

        Args:
            dataset: unbatched `tf.data.Dataset`.
            limit: int, number of elements to check (None: all).

        Raises:
            ValueError: naming the first bad element.
        """
        for index, (image, target) in enumerate(dataset.as_numpy_iterator()):
            if limit is not None and index >= limit:
                break
            try:
                self.validate_target(target, image_size=np.shape(image)[:2])
            except ValueError as error:
                raise ValueError(f"element {index} of the {self.name} data: {error}") from None

    # ---- training and scoring ------------------------------------------------------------
    @property
    def loss(self):
        """The task's Keras loss; call it as `task.loss(targets, outputs)`."""
        if self._loss is None:
            self._loss = self._make_loss()
        return self._loss

    def _make_loss(self):
        raise NotImplementedError

    def metric(self, name=None):
        """A new streaming Keras metric of the task (`update_state(targets, outputs)`)."""
        raise NotImplementedError

    def scores(self, metric):
        """All scores of a streaming metric as a dict of floats, `reward` included."""
        result = metric.scores()
        result.setdefault("reward", self.reward(result))
        return result

    def reward(self, scores):
        """The search reward of a dict of scores (a float, higher is better)."""
        raise NotImplementedError

    # ---- data ----------------------------------------------------------------------------
    def builtin_data(self, split, image_size=64, num_samples=None, seed=0, **kwargs):
        """The task's built-in offline data set, unbatched `(uint8 image, target)`."""
        raise NotImplementedError

    def flip(self, image, target):
        """Left-right flip of one unbatched `(image, target)` (per-pixel maps by default)."""
        return tf.reverse(image, axis=[1]), tf.reverse(target, axis=[1])

    def pipeline(self, dataset, batch_size, shuffle=False, seed=0, augment=False, drop_remainder=False):
        """Batch `(uint8 image, target)` pairs into model inputs: `tfnas.data.pipeline` with
        this task's `flip`.

        Returns:
            `tf.data.Dataset` of `(float32 (N, H, W, 3) image in [-1, 1], batched target)`.
        """
        from tfnas.data.pipelines import pipeline  # tfnas.data imports tfnas.tasks.keypoints

        return pipeline(
            dataset,
            batch_size,
            shuffle=shuffle,
            seed=seed,
            augment=augment,
            drop_remainder=drop_remainder,
            flip=self.flip,
        )

    # ---- export --------------------------------------------------------------------------
    def postprocess(self, outputs, image_size):
        """What an exported model returns, from the main output (graph ops only).

        Args:
            outputs: the main output tensor `(N, h, w, output_channels)`.
            image_size: `(H, W)` of the input images (int32 tensor or ints).

        Returns:
            dict of named tensors.
        """
        raise NotImplementedError

    def config(self):
        """Constructor arguments (JSON), so that `get_task(name, **config)` rebuilds it."""
        return {}

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"
