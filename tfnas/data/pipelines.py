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


def _num_elements(dataset):
    count = int(dataset.cardinality())
    if count == tf.data.INFINITE_CARDINALITY:
        raise ValueError("dataset is infinite (it repeats); split a finite dataset, "
                         "before any .repeat()")
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
    count = _num_elements(dataset)
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


def _random_flip(pair, coin):
    image, mask = pair
    flip = coin % 2 == 0
    image = tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)
    mask = tf.cond(flip, lambda: tf.reverse(mask, axis=[1]), lambda: mask)
    return image, mask


def pipeline(dataset, batch_size, shuffle=False, seed=0, augment=False, drop_remainder=False):
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
        dataset = tf.data.Dataset.zip(dataset, coins).map(
            _random_flip, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
    dataset = dataset.batch(int(batch_size), drop_remainder=drop_remainder)
    dataset = dataset.map(lambda images, masks: (preprocess(images), masks),
                          num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return dataset.prefetch(tf.data.AUTOTUNE)
