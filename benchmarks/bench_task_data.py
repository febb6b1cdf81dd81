"""Are the built-in data of the depth and pose tasks quick to learn? A fixed small network per task.

For each task (`depth`, `pose`, `pose-multi`, and `segmentation` for comparison) a fixed
small fully convolutional network (not searched: four 3x3 conv-BN-ReLU layers, two of them
with stride 2, 48 channels, then the task's head at stride 4) is trained from scratch on the
task's built-in training split with Adam and flip augmentation, and scored with the task's
metric on its validation split before and after training. Writes
`benchmarks/results/task_data.json`.

    python benchmarks/bench_task_data.py [--epochs 8] [--train 384] [--size 64]
"""

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfnas.tasks import get_task  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
KEYS = {
    "segmentation": ("reward", "miou"),
    "depth": ("reward", "rmse", "abs_rel", "delta1"),
    "pose": ("reward", "pckh@0.5", "pckh@0.1"),
    "pose-multi": ("reward", "ap", "ar"),
}


def network(task, size, width=48):
    inputs = keras.Input((size, size, 3))
    x = inputs
    for stride, rate in ((2, 1), (2, 1), (1, 2), (1, 4)):
        x = keras.layers.Conv2D(width, 3, strides=stride, dilation_rate=rate, padding="same", use_bias=False)(
            x
        )
        x = keras.layers.ReLU()(keras.layers.BatchNormalization()(x))
    return keras.Model(inputs, task.head(x, feature_stride=4))


def evaluate(task, model, batches):
    metric = task.metric()
    for images, targets in batches:
        metric.update_state(targets, model(images, training=False))
    return task.scores(metric)


def run(name, args):
    keras.utils.set_random_seed(0)
    task = get_task(name)
    kwargs = {"digits": (0, 1, 7)} if name == "segmentation" else {}
    if name == "segmentation":
        task = get_task(name, num_classes=4)
    train = task.builtin_data("train", image_size=args.size, num_samples=args.train, **kwargs)
    val = task.builtin_data("validation", image_size=args.size, num_samples=args.val, **kwargs)
    train_batches = task.pipeline(train, args.batch, shuffle=True, augment=True, drop_remainder=True)
    val_batches = list(task.pipeline(val, args.batch))
    model = network(task, args.size)
    optimizer = keras.optimizers.Adam(args.lr)

    @tf.function
    def step(images, targets):
        with tf.GradientTape() as tape:
            loss = task.loss(targets, model(images, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))
        return loss

    before = evaluate(task, model, val_batches)
    start = time.perf_counter()
    losses = []
    for _ in range(args.epochs):
        epoch = [float(step(images, targets)) for images, targets in train_batches]
        losses.append(float(np.mean(epoch)))
    seconds = time.perf_counter() - start
    after = evaluate(task, model, val_batches)
    return {
        "task": name,
        "params": int(model.count_params()),
        "train_seconds": seconds,
        "epoch_losses": losses,
        "before": {k: before[k] for k in KEYS[name]},
        "after": {k: after[k] for k in KEYS[name]},
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="segmentation,depth,pose,pose-multi")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--train", type=int, default=384)
    parser.add_argument("--val", type=int, default=64)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "task_data.json"))
    args = parser.parse_args()
    results = []
    for name in args.tasks.split(","):
        result = run(name, args)
        print(json.dumps(result), flush=True)
        results.append(result)
    with open(args.out, "w") as handle:
        json.dump(
            {"settings": vars(args), "results": results, "date": time.strftime("%Y-%m-%d")}, handle, indent=1
        )


if __name__ == "__main__":
    main()
