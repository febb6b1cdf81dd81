"""Pretrain the encoder shipped with tfnas for its built-in digit scenes (issue 11).

The papers search on an encoder pretrained for segmentation (CVPR 2019, Sec. 4: MobileNetV2
trained on COCO segmentation with a Light-Weight RefineNet decoder) and distil from a
pretrained teacher. The built-in digit scenes have no such network, so without this file
every search on them first warms its encoder up from scratch (`tfnas.training.warm_up`).
This script trains, once and for longer, what the warm-up would: MobileNetV2 (width 0.35)
with the warm-up's reference decoder (`tfnas.training.warmup.build_reference_model`), on
digit scenes of all ten digits drawn from the training pool of digit images only (the
validation and test pools stay unseen), with a seed no search uses by default. It writes,
into the package (`tfnas/pretrained/`):

- `mobilenetv2_a035_digits.weights.h5`: the encoder, as `keras.applications.MobileNetV2`
  weights (what `encoder_weights=` reads; any taps);
- `digits_teacher_a035_w16.weights.h5`: the whole reference model (11 classes), the
  distillation teacher of searches on the built-in data (`tfnas.pretrained.digits_teacher`
  keeps the classes a search uses);
- `digits.json`: how they were made and their scores on validation scenes.

Anyone can re-run it (about ten minutes on 2 CPU cores):

    .venv/bin/python tools/pretrain_encoder.py            # writes into tfnas/pretrained/
    .venv/bin/python tools/pretrain_encoder.py --out /tmp/p --scenes 256 --epochs 2  # a quick try
"""

import argparse
import datetime
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def main(argv=None):
    from tfnas.pretrained import DIGITS, PRETRAINED_DIR, digits_reference_space

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=PRETRAINED_DIR, help="folder to write into (default: the package's)")
    parser.add_argument("--scenes", type=int, default=4096, help="training scenes (default 4096)")
    parser.add_argument("--epochs", type=int, default=40, help="epochs (default 40)")
    parser.add_argument("--image-size", type=int, default=DIGITS["image_size"], help="scene size")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=DIGITS["seed"])
    args = parser.parse_args(argv)

    import keras

    from tfnas.data import digit_scenes
    from tfnas.encoders import save_application_weights
    from tfnas.training.stages import ProxyModel, evaluate_reward, pad_to_batches
    from tfnas.training.warmup import warm_up

    space = digits_reference_space()
    size = int(args.image_size)
    scene_args = dict(
        image_size=size,
        min_digit_size=DIGITS["min_digit_size"],
        max_digit_size=DIGITS["max_digit_size"],
    )
    train = digit_scenes("train", num_scenes=args.scenes, seed=args.seed, **scene_args)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        model, _ = warm_up(
            space,
            train,
            tmp,
            epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate=args.learning_rate,
            seed=args.seed,
            verbose=2,
        )
    seconds = time.perf_counter() - start

    # Scores on validation scenes (digits the training never saw), as a search would score.
    images, masks = [], []
    for image, mask in digit_scenes("validation", num_scenes=256, seed=args.seed, **scene_args):
        images.append(image.numpy())
        masks.append(mask.numpy())
    (images,), masks = pad_to_batches(
        [np.stack(images)], np.stack(masks), 32, space.task.padding_target((size, size))
    )
    dataset = space.task.pipeline(
        __import__("tensorflow").data.Dataset.from_tensor_slices((images, masks)), 32, shuffle=False
    )
    scores = evaluate_reward(ProxyModel(model, [], space.task, name="pretrained"), dataset)

    os.makedirs(args.out, exist_ok=True)
    encoder_path = os.path.join(args.out, DIGITS["encoder_file"])
    teacher_path = os.path.join(args.out, DIGITS["teacher_file"])
    save_application_weights(model.get_layer("encoder"), encoder_path, DIGITS["alpha"])
    model.save_weights(teacher_path)
    record = {
        "what": "MobileNetV2 (alpha 0.35) + the warm-up's reference decoder (width 16), "
        "segmentation of digit scenes, 11 classes (background + digits 0-9)",
        "script": "tools/pretrain_encoder.py",
        "arguments": vars(args) | {"out": None},
        "data": {
            "split": "train (training pool of digit images only)",
            "scenes": args.scenes,
            **scene_args,
            "seed": args.seed,
        },
        "validation": {
            "scenes": 256,
            "miou": round(float(scores["miou"]), 4),
            "fwiou": round(float(scores["fwiou"]), 4),
            "mean_accuracy": round(float(scores["mean_accuracy"]), 4),
            "reward": round(float(scores["reward"]), 4),
        },
        "train_seconds": round(seconds, 1),
        "date": datetime.date.today().isoformat(),
        "keras": keras.__version__,
        "files": {"encoder": DIGITS["encoder_file"], "teacher": DIGITS["teacher_file"]},
    }
    with open(os.path.join(args.out, DIGITS["record_file"]), "w") as f:
        json.dump(record, f, indent=2)
    print(json.dumps(record["validation"]), f"{seconds:.0f} s", f"-> {args.out}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, ROOT)
    sys.exit(main())
