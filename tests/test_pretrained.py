"""The encoder and teacher shipped for the built-in digit scenes (`tfnas.pretrained`, issue 11).

A search through the CLI that uses them, and resumes deciding the same way, is checked in
test_crash_resume.py.
"""

import os

import numpy as np
import pytest
import tensorflow as tf

from tfnas import pretrained
from tfnas.data import digit_scene_arrays
from tfnas.preprocessing import preprocess
from tfnas.spaces import AuxCellSpace
from tfnas.tasks.segmentation import ConfusionMatrix


def test_the_weights_are_shipped_with_a_record_of_how_they_were_made():
    record = pretrained.digits_record()
    assert record is not None, "run tools/pretrain_encoder.py"
    assert record["script"] == "tools/pretrain_encoder.py"
    assert record["data"]["split"].startswith("train")
    for key in ("encoder_file", "teacher_file"):
        assert os.path.getsize(os.path.join(pretrained.PRETRAINED_DIR, pretrained.DIGITS[key])) > 100_000
    assert pretrained.digits_encoder_weights(0.35) is not None
    assert pretrained.digits_encoder_weights(1.0) is None  # only the width it was trained at


def test_a_space_loads_the_shipped_encoder_by_layer_name():
    fresh = AuxCellSpace(num_classes=4, width=8, alpha=0.35).build_encoder()
    loaded = AuxCellSpace(
        num_classes=4, width=8, alpha=0.35, encoder_weights=pretrained.digits_encoder_weights(0.35)
    )
    loaded = loaded.build_encoder()
    reference = pretrained.digits_teacher().get_layer("encoder")
    for a, b in zip(loaded.weights, reference.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=a.path)
    assert any(not np.array_equal(a.numpy(), b.numpy()) for a, b in zip(fresh.weights, loaded.weights))


def test_the_teacher_segments_unseen_validation_scenes_of_a_digit_subset():
    digits = (0, 1, 7)
    teacher = pretrained.digits_teacher(digits)
    full = pretrained.digits_teacher()
    images, masks = digit_scene_arrays(
        "validation", 48, num_scenes=32, seed=5, digits=digits, min_digit_size=16, max_digit_size=32
    )
    x = preprocess(images)
    logits = teacher(x)["logits"]
    assert logits.shape[-1] == 4
    np.testing.assert_allclose(
        logits.numpy(), tf.gather(full(x)["logits"], [0, 1, 2, 8], axis=-1).numpy(), atol=1e-5
    )
    metric = ConfusionMatrix(4, omit=(0,))
    metric.update_state(masks, tf.image.resize(logits, (48, 48)))
    # An untrained network scores near 0 here (it predicts background); the shipped teacher
    # has learnt the digits from other images of them.
    assert float(metric.result()) > 0.3, metric.scores()


def test_digits_outside_0_to_9_are_refused():
    with pytest.raises(ValueError, match="digits"):
        pretrained.digits_teacher([1, 12])


@pytest.mark.parametrize(
    "given, expected",
    [
        ({}, "shipped"),
        ({"encoder_weights": "none"}, None),  # warm up from scratch instead
        ({"encoder_weights": "my.h5"}, "my.h5"),
        ({"alpha": 1.0}, None),  # no weights shipped for that width
        ({"images": "data/images"}, None),  # the user's data
    ],
)
def test_only_the_builtin_data_at_the_shipped_width_gets_the_shipped_weights(given, expected):
    import argparse

    from tfnas.cli.data import pretrained_for_builtin_data
    from tfnas.tasks import get_task

    args = dict(encoder_weights=None, images=None, tfds=None, alpha=0.35, space="auxcell", digits="017")
    weights, teacher = pretrained_for_builtin_data(
        argparse.Namespace(**{**args, **given}), get_task("segmentation", num_classes=4), "auto"
    )
    if expected == "shipped":
        assert weights == pretrained.digits_encoder_weights(0.35) and teacher.name == "digits_teacher_017"
    else:
        assert weights == expected and teacher == "auto"
