"""Weights shipped with tfnas for its built-in digit scenes: a pretrained encoder and a teacher.

The papers search on a pretrained encoder and distil from a pretrained teacher (Nekrasov et
al., CVPR 2019, Sec. 4). For the built-in digit scenes tfnas ships both, made by
`tools/pretrain_encoder.py` (re-runnable; `digits.json` records how and their validation
scores): MobileNetV2 with width 0.35 and the warm-up's reference decoder, trained on
scenes of all ten digits from the training pool of digit images. A search on the built-in
segmentation data with that encoder (`tfnas search` / `tfnas demo` with `--alpha 0.35`)
then skips the warm-up; user data, other widths and other tasks are warmed up as before.

    >>> path = digits_encoder_weights(alpha=0.35)         # None for other widths
    >>> teacher = digits_teacher(digits=(0, 1, 7))          # logits of background, 0, 1, 7
"""

import json
import os

PRETRAINED_DIR = os.path.dirname(os.path.abspath(__file__))

#: What the shipped digit-scene weights are: file names, the encoder's width multiplier,
#: the reference decoder's width and the scenes they were trained on.
DIGITS = {
    "encoder_file": "mobilenetv2_a035_digits.weights.h5",
    "teacher_file": "digits_teacher_a035_w16.weights.h5",
    "record_file": "digits.json",
    "alpha": 0.35,
    "width": 16,
    "num_classes": 11,
    "image_size": 48,
    "min_digit_size": 12,
    "max_digit_size": 32,
    "seed": 1234,
}


def _path(key):
    path = os.path.join(PRETRAINED_DIR, DIGITS[key])
    return path if os.path.exists(path) else None


def digits_record():
    """How the shipped weights were made (`digits.json`), or None when they are absent."""
    path = _path("record_file")
    if path is None:
        return None
    with open(path) as f:
        return json.load(f)


def digits_encoder_weights(alpha):
    """Path of the shipped encoder for MobileNetV2 with width multiplier `alpha`, else None."""
    if alpha is None or abs(float(alpha) - DIGITS["alpha"]) > 1e-9:
        return None
    return _path("encoder_file")


def digits_reference_space():
    """The space whose warm-up model the shipped weights belong to (11 classes, width 16)."""
    from tfnas.spaces.auxcell import AuxCellSpace

    return AuxCellSpace(num_classes=DIGITS["num_classes"], width=DIGITS["width"], alpha=DIGITS["alpha"])


def digits_teacher(digits=None):
    """The shipped teacher, giving logits for the classes of a digit subset.

    The teacher was trained on all ten digits (classes 0 = background, 1 + d = digit d).
    The built-in scenes of a subset label its digits 1..k in the subset's order
    (`tfnas.data.digits`), so the teacher's logits are gathered to background + the
    subset's digits: the teacher's belief over exactly the classes the search predicts.

    Args:
        digits: the digits of the search's scenes in their order (e.g. `(0, 1, 7)`); None for all ten.

    Returns:
        A `keras.Model` mapping float32 images in [-1, 1] to `{"logits": (N, h, w, k + 1)}`,
        or None when the weights are not shipped.

    Raises:
        ValueError: for a digit outside 0..9 or repeated (as `tfnas.data.num_classes`).
    """
    import keras

    from tfnas.data.digits import num_classes
    from tfnas.spaces.base import MAIN_OUTPUT
    from tfnas.training.warmup import build_reference_model

    path = _path("teacher_file")
    if path is None:
        return None
    digits = list(range(10)) if digits is None else [int(d) for d in digits]
    num_classes(digits)  # validates
    keep = [0] + [1 + d for d in digits]
    model = build_reference_model(digits_reference_space())
    model.load_weights(path)
    model.trainable = False
    logits = model.output[MAIN_OUTPUT]
    if len(keep) != DIGITS["num_classes"]:
        logits = keras.layers.Lambda(lambda x: keras.ops.take(x, keep, axis=-1), name="subset_logits")(logits)
    name = "digits_teacher_" + "".join(str(d) for d in digits)
    return keras.Model(model.input, {MAIN_OUTPUT: logits}, name=name)
