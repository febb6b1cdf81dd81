"""Tiny models that follow the tfnas model contract, shared by the serving tests; and the
tests of `inference_model` (training-only outputs stripped)."""

import keras
import numpy as np
import pytest

from tfnas.preprocessing import preprocess
from tfnas.serving.savedmodel import inference_model

NUM_CLASSES = 5


def tiny_model(num_classes=NUM_CLASSES, aux=True, seed=0):
    """Two stride-2 convs and a 1x1 classifier: logits at 1/4 resolution; with aux=True a
    training model (dict with "logits" and "aux_0")."""
    keras.utils.set_random_seed(seed)
    image = keras.Input((None, None, 3), name="image")
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(image)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu")(x)
    logits = keras.layers.Conv2D(num_classes, 1, name="logits")(x)
    if not aux:
        return keras.Model(image, logits, name="tiny")
    aux_0 = keras.layers.Conv2D(num_classes, 3, padding="same", name="aux_0")(x)
    return keras.Model(image, {"logits": logits, "aux_0": aux_0}, name="tiny")


def images(n=2, height=32, width=32, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, height, width, 3), dtype=np.uint8)


def keras_logits(model, batch):
    out = model(preprocess(batch), training=False)
    return np.asarray(out["logits"] if isinstance(out, dict) else out)


def test_inference_model_keeps_only_logits_and_shares_weights():
    model = tiny_model()
    inference = inference_model(model)
    batch = images()
    np.testing.assert_array_equal(np.asarray(inference(preprocess(batch))), keras_logits(model, batch))
    # the aux_0 head (8*9*5 + 5 = 365 weights) is gone
    assert model.count_params() - inference.count_params() == 365
    assert inference_model(tiny_model(aux=False)).count_params() == inference.count_params()


def test_inference_model_rejects_dict_without_logits():
    image = keras.Input((None, None, 3))
    model = keras.Model(image, {"main": keras.layers.Conv2D(3, 1)(image)})
    with pytest.raises(ValueError, match="'logits' output"):
        inference_model(model)
