"""Input pipelines: a deterministic meta-train/meta-validation split and batching.

The tuner trains candidates on `meta_train` and scores them on `meta_val` (the held-out part
of the training data the papers call the meta-validation set) when the user gives no
validation data. `pipeline` turns any `(uint8 image, int32 mask)` data set into the
batches of `(float32 image in [-1, 1], int32 mask)` that tfnas models train on.

Example:
    >>> meta_train, meta_val = split(digit_scenes("train"), fraction=0.1)
    >>> batches = pipeline(meta_train, batch_size=16, shuffle=True, augment=True)
"""

import numpy as np
import tensorflow as tf

from tfnas.preprocessing import preprocess

#: Largest shuffle buffer `pipeline` uses (elements).
MAX_SHUFFLE_BUFFER = 1024


def count_examples(dataset):
    """The number of elements of a finite tf.data set (counted by iterating when unknown).

    Raises:
        ValueError: if the data set is infinite.
    """
    count = int(dataset.cardinality())
    if count == tf.data.INFINITE_CARDINALITY:
        raise ValueError("dataset is infinite (it repeats); pass a finite dataset (before any .repeat())")
    if count == tf.data.UNKNOWN_CARDINALITY:
        count = int(dataset.reduce(np.int64(0), lambda total, _: total + 1))
    return count


def split(dataset, fraction=0.1, seed=0):
    """Split a finite data set by element index into meta-train and meta-validation parts.

    The same `seed` always puts the same element indices in each part, so the dataset must
    yield its elements in the same order on every pass (split before shuffling).

    Args:
        dataset: finite `tf.data.Dataset`, in a fixed order.
        fraction: share of the elements that go to meta-validation, in (0, 1); rounded to
            a whole number of elements, at least one. Default 0.1.
        seed: int choosing which elements are held out. Default 0.

    Returns:
        `(meta_train, meta_val)`: two data sets with the same element structure, disjoint,
        together holding every element once, each keeping the original order.

    Raises:
        ValueError: if `fraction` is not in (0, 1), the dataset is infinite, or it is too
            small to give both parts at least one element.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction={fraction!r} must be between 0 and 1 (exclusive)")
    count = count_examples(dataset)
    num_val = max(1, int(round(fraction * count)))
    if count - num_val < 1:
        raise ValueError(
            f"dataset has {count} element(s); fraction={fraction} leaves none for meta-train; "
            "give a larger dataset or a smaller fraction"
        )
    held_out = np.zeros(count, bool)
    held_out[np.random.default_rng(seed).permutation(count)[:num_val]] = True
    held_out = tf.constant(held_out)

    def part(keep_held_out, size):
        subset = dataset.enumerate().filter(
            lambda index, element: tf.equal(tf.gather(held_out, index), keep_held_out)
        )
        subset = subset.map(lambda index, element: element)
        return subset.apply(tf.data.experimental.assert_cardinality(size))

    return part(False, count - num_val), part(True, num_val)


def flip_maps(image, target):
    """Left-right flip of an unbatched image and its per-pixel target (mask, depth map)."""
    return tf.reverse(image, axis=[1]), tf.reverse(target, axis=[1])


def pipeline(dataset, batch_size, shuffle=False, seed=0, augment=False, drop_remainder=False, flip=flip_maps):
    """Batch `(uint8 image, int32 mask)` pairs into model inputs, prefetched.

    Args:
        dataset: unbatched `tf.data.Dataset` of `(uint8 (H, W, 3), int32 (H, W))`, all of one
            size (resize when loading otherwise).
        batch_size: positive int.
        shuffle: shuffle with a buffer of up to `MAX_SHUFFLE_BUFFER` elements, reshuffled
            each epoch. Default False.
        seed: int seed of the shuffle and of the flips. Default 0.
        augment: flip each image and its mask left-right together, with probability 1/2.
            Default False.
        drop_remainder: drop the last batch when it is smaller than `batch_size`.
        flip: `(image, target) -> (image, target)`, the left-right flip `augment` applies;
            default `flip_maps` (per-pixel targets). Tasks with keypoint targets pass their
            own (`tfnas.tasks.Task.flip`).

    Returns:
        `tf.data.Dataset` of `(float32 (N, H, W, 3) image in [-1, 1], int32 (N, H, W) mask)`,
        images scaled by `tfnas.preprocessing.preprocess`.

    Raises:
        ValueError: if `batch_size` is not a positive int.
    """
    if int(batch_size) < 1:
        raise ValueError(f"batch_size={batch_size!r} must be a positive int")
    if shuffle:
        count = int(dataset.cardinality())
        buffer = min(count, MAX_SHUFFLE_BUFFER) if count > 0 else MAX_SHUFFLE_BUFFER
        dataset = dataset.shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
    if augment:
        coins = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)

        def maybe_flip(pair, coin):
            image, target = pair
            return tf.cond(coin % 2 == 0, lambda: flip(image, target), lambda: (image, target))

        dataset = tf.data.Dataset.zip(dataset, coins).map(
            maybe_flip, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
    dataset = dataset.batch(int(batch_size), drop_remainder=drop_remainder)
    dataset = dataset.map(
        lambda images, masks: (preprocess(images), masks),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


def as_examples(data, name="data"):
    """Unbatched tf.data of `(image, target)` pairs from the forms a search accepts.

    Args:
        data: a tf.data set of pairs (batched or not), a tuple `(images, targets)` of
            arrays, or None.
        name: str, the argument's name for error messages.

    Returns:
        An unbatched `tf.data.Dataset` of `(image (H, W, 3), target)`, or None for None.

    Raises:
        ValueError: naming `name`, for any other form.
    """
    if data is None:
        return None
    if isinstance(data, (tuple, list)) and len(data) == 2:
        data = tf.data.Dataset.from_tensor_slices((np.asarray(data[0]), np.asarray(data[1])))
    if not isinstance(data, tf.data.Dataset):
        raise ValueError(
            f"{name} is a {type(data).__name__}; expected a tf.data.Dataset of "
            "(uint8 image, int32 mask) pairs or a tuple (images, masks)"
        )
    spec = data.element_spec
    if not isinstance(spec, tuple) or len(spec) != 2:
        raise ValueError(f"{name} yields {spec}; expected (image, mask) pairs")
    if spec[0].shape.rank == 4:
        data = data.unbatch()
    elif spec[0].shape.rank != 3:
        raise ValueError(
            f"{name} yields images of shape {spec[0].shape}; expected (H, W, 3) (or batches (N, H, W, 3))"
        )
    return data
