"""Encoder warm-up for searches without pretrained encoder weights (Nekrasov et al., CVPR 2019, Sec. 4).

The paper's encoder is pretrained (MobileNetV2 trained on COCO segmentation), so stage 1
trains decoders on meaningful features. Where no pretrained weights exist (no network
here, or a new domain such as the built-in digit scenes), tfnas first trains the encoder
with a fixed *reference decoder* on the search data: by default a small head (a 1x1
conv-BN-ReLU on each encoder output, resized to the finest and summed, then a 3x3
classifier), or one of the space's published architectures. The small head traces and
trains several times faster than a searched decoder, which matters because training from
scratch needs many steps to get past predicting background everywhere (measured on the
digit scenes: ~40 epochs of 320 scenes at lr 1e-2 to a reward of 0.07, 80 s on 2 cores).
The warmed model is saved in the search directory, reused when the search resumes, and
serves as the default distillation teacher.

    >>> model, reused = warm_up(space, meta_train, "runs/search", epochs=3)
"""

import os

import keras

from tfnas.data import count_examples
from tfnas.io import atomic_path
from tfnas.ops import ConvBN
from tfnas.search_dir import WARMUP_WEIGHTS
from tfnas.spaces.base import MAIN_OUTPUT, resize_to_finest
from tfnas.training.polyak import ParameterGroup, make_optimizer
from tfnas.training.stages import ProxyModel, run_stage, set_batchnorm_momentum


def simple_head(space, specs, width=None):
    """The small reference decoder: features -> `{"logits": ...}` at the finest stride.

    Args:
        space: the search space (gives the task's head and `width`).
        specs: list of `(channels, stride)` of the encoder outputs.
        width: int, channels of the head; defaults to `space.width`.

    Returns:
        A `keras.Model` named `"decoder"`.
    """
    width = int(width or space.width)
    inputs = [keras.Input((None, None, c), name=f"feature_{i}") for i, (c, _) in enumerate(specs)]
    adapted = [ConvBN(width, 1, name=f"head_adapt{i}")(x) for i, x in enumerate(inputs)]
    resized, stride = resize_to_finest(adapted, [s for _, s in specs])
    x = resized[0] if len(resized) == 1 else keras.layers.Add(name="head_sum")(resized)
    logits = space.task.head(x, MAIN_OUTPUT, stride)
    return keras.Model(inputs, {MAIN_OUTPUT: logits}, name="decoder")


def reference_decoder(space, specs, genotype=None):
    """The fixed decoder the encoder is warmed up with (see the module docstring).

    Args:
        space: the search space.
        specs: list of `(channels, stride)` of the encoder outputs.
        genotype: None for `simple_head`, or a genotype (or `PUBLISHED` name) of the space.

    Returns:
        A `keras.Model` named `"decoder"` mapping the features to a dict of logits.

    Raises:
        ValueError: for an unknown published name or an invalid genotype.
    """
    if genotype is None:
        return simple_head(space, specs)
    if isinstance(genotype, str):
        if genotype not in space.PUBLISHED:
            raise ValueError(
                f"unknown published architecture {genotype!r}; expected one of "
                f"{sorted(space.PUBLISHED)} or None for the simple head"
            )
        genotype = space.PUBLISHED[genotype]
    return space.decoder_from_genotype_values(space.values(genotype), specs)


def build_reference_model(space, genotype=None):
    """The warm-up model: the space's encoder with `reference_decoder` (a training model)."""
    encoder = space.build_encoder()
    return space.assemble(encoder, reference_decoder(space, space.feature_specs(encoder), genotype))


def warm_up(
    space,
    dataset,
    directory,
    epochs=10,
    batch_size=16,
    learning_rate=1e-2,
    aux_weight=0.15,
    bn_momentum=0.9,
    genotype=None,
    seed=0,
    verbose=1,
    callbacks=(),
):
    """Trains (or reloads) the space's encoder with the reference decoder.

    Args:
        space: the search space (a `DecoderSpace`).
        dataset: unbatched `tf.data` of `(uint8 image, target)`, the meta-train data.
        directory: str, the search directory; the weights go to `WARMUP_WEIGHTS` in it and
            are reloaded from there when present.
        epochs: int >= 1, warm-up epochs. Default 10.
        batch_size: int. Default 16.
        learning_rate: float, Adam learning rate for the whole model. Default 1e-2.
        aux_weight: float, weight of the auxiliary outputs' loss. Default 0.15.
        bn_momentum: float, batch-norm momentum while training. Default 0.9.
        genotype: the reference decoder (see `reference_decoder`); None for the simple head.
        seed: int, seeds the initial weights and the shuffling. Default 0.
        verbose: Keras verbosity.
        callbacks: extra Keras callbacks.

    Returns:
        `(model, reused)`: the warmed training model (with layers `"encoder"` and
        `"decoder"`) and whether it was loaded from `directory`.
    """
    path = os.path.join(directory, WARMUP_WEIGHTS)
    keras.utils.set_random_seed(int(seed))
    model = build_reference_model(space, genotype)
    if os.path.exists(path):
        model.load_weights(path)
        if verbose:
            print(f"warm-up: reusing {path}")
        return model, True
    if verbose:
        print(f"warm-up: training the encoder with a reference decoder for {epochs} epoch(s)")
    count = count_examples(dataset)
    batches = space.task.pipeline(
        dataset, min(int(batch_size), count), shuffle=True, seed=seed, augment=True, drop_remainder=True
    )
    set_batchnorm_momentum(model, bn_momentum)
    group = ParameterGroup(make_optimizer("adam", learning_rate), model.trainable_variables)
    proxy = ProxyModel(model, [group], space.task, aux_weight=aux_weight, name="warmup")
    run_stage(proxy, batches, epochs, "warm-up", callbacks=callbacks, verbose=verbose)
    with atomic_path(path) as tmp:
        model.save_weights(tmp)
    return model, False
