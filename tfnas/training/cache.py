"""Encoder and teacher outputs computed once per search, for stage 1 (Nekrasov et al., CVPR 2019, Sec. 3.2.1, 4).

In stage 1 the encoder is frozen, so its outputs on the meta-train images (the paper uses
4000) never change: they are computed once, stored in the search directory and read by
every trial, and again after a restart. The teacher's logits for distillation are stored
beside them, and the targets (whatever the task's are: class maps, depth maps, dicts of
keypoints). A cache entry is keyed by a fingerprint: a hash of the encoder's weights, the
teacher's weights, and the bytes of the images and targets it covers; when any of them
changes the outputs are recomputed and the old entry is removed.

An entry is a folder `<part>-<fingerprint[:16]>/` holding `feature_<i>.npy`, the targets
(`targets.npy`, or `target_<key>.npy` per key of dict targets), optionally `teacher.npy`,
and `meta.json`, which is written last: a folder without it (a run killed while writing)
is ignored and rewritten.

    >>> cache = FeatureCache("runs/search/cache")
    >>> entry = cache.load_or_compute("train", encoder, meta_train, num_images=4000)
    >>> entry.reused, [f.shape for f in entry.features]
"""

import collections
import glob
import hashlib
import json
import os
import shutil

import numpy as np
import tensorflow as tf

from tfnas.io import atomic_write_json
from tfnas.preprocessing import preprocess
from tfnas.training.stages import quiet_retracing

#: What `FeatureCache.load_or_compute` returns.
CachedFeatures = collections.namedtuple(
    "CachedFeatures", ["features", "targets", "teacher_logits", "fingerprint", "reused", "path"]
)
CachedFeatures.__doc__ = """Cached encoder outputs of a set of images.

Attributes:
    features: list of float32 arrays `(N, h_i, w_i, c_i)`, one per encoder output.
    targets: array `(N, ...)` (integer targets as int32), or a dict of them for dict targets.
    teacher_logits: float32 array `(N, h, w, C)` or None.
    fingerprint: str, the hex digest keying the entry.
    reused: bool, True when read from disk, False when computed now.
    path: str, the entry's folder.
"""

_FORMAT_VERSION = 2  # 2: any targets (1 stored int32 masks only)


def weights_fingerprint(model):
    """Hex digest of a model's weights (values, shapes and dtypes), or "none" for None.

    Args:
        model: a Keras model, or None.

    Returns:
        str, a SHA-256 hex digest.
    """
    if model is None:
        return "none"
    digest = hashlib.sha256()
    for weight in model.weights:
        value = np.ascontiguousarray(weight.numpy())
        digest.update(f"{value.shape}{value.dtype}".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def _batches(dataset, num_images, batch_size):
    if num_images is not None:
        dataset = dataset.take(int(num_images))
    return dataset.batch(int(batch_size)).prefetch(2)


def data_fingerprint(dataset, num_images=None, batch_size=64):
    """Hex digest of the bytes of the first `num_images` (image, target) pairs, and their count.

    Args:
        dataset: unbatched `tf.data` of `(image, target)`.
        num_images: int or None (all).
        batch_size: int, read size.

    Returns:
        `(digest, count)`.
    """
    digest, count = hashlib.sha256(), 0
    for images, targets in _batches(dataset, num_images, batch_size).as_numpy_iterator():
        digest.update(np.ascontiguousarray(images).tobytes())
        for leaf in tf.nest.flatten(targets):
            digest.update(np.ascontiguousarray(leaf).tobytes())
        count += len(images)
    return digest.hexdigest(), count


def _teacher_logits(outputs):
    if isinstance(outputs, dict):
        if "logits" in outputs:
            return outputs["logits"]
        if len(outputs) == 1:
            return next(iter(outputs.values()))
        raise ValueError(
            f"the teacher returns outputs {sorted(outputs)}; expected a single "
            "tensor of logits or a dict with a 'logits' entry"
        )
    if isinstance(outputs, (list, tuple)):
        return outputs[0]
    return outputs


def _stored(target):
    """A batch of targets as stored: integer maps as int32 (class maps), others as given."""
    return tf.cast(target, tf.int32) if target.dtype.is_integer else target


class FeatureCache:
    """A folder of cached encoder (and teacher) outputs, keyed by fingerprint.

    Args:
        directory: str, the folder (created when needed).
        verbose: int, 0 for silence, else one line per load or computation.
    """

    def __init__(self, directory, verbose=1):
        self.directory = str(directory)
        self.verbose = verbose

    def fingerprint(self, encoder, dataset, num_images=None, teacher=None):
        """The key of the entry for these encoder weights, data and teacher.

        Returns:
            `(fingerprint, count)`: hex digest and the number of images covered.
        """
        data, count = data_fingerprint(dataset, num_images)
        if count == 0:
            raise ValueError("the dataset to cache holds no images; give a non-empty dataset")
        key = json.dumps(
            [
                _FORMAT_VERSION,
                weights_fingerprint(encoder),
                weights_fingerprint(teacher) if teacher is not None else "none",
                data,
                count,
            ]
        )
        return hashlib.sha256(key.encode()).hexdigest(), count

    def load_or_compute(self, part, encoder, dataset, num_images=None, teacher=None, batch_size=16):
        """Returns the cached outputs for this encoder, data and teacher, computing them if needed.

        Args:
            part: str naming the entry, e.g. `"train"` or `"val"`.
            encoder: the frozen encoder, image -> list of features (run with training=False).
            dataset: unbatched `tf.data` of `(uint8 image, target)`, in a fixed order.
            num_images: int or None: cache the first `num_images` pairs (all if None).
            teacher: optional Keras model (or `keras.layers.TFSMLayer`) mapping images in
                [-1, 1] to logits (or a dict holding `"logits"`).
            batch_size: int, images per encoder call.

        Returns:
            `CachedFeatures`.
        """
        fingerprint, count = self.fingerprint(encoder, dataset, num_images, teacher)
        path = os.path.join(self.directory, f"{part}-{fingerprint[:16]}")
        meta_path = os.path.join(path, "meta.json")
        if os.path.exists(meta_path):
            with open(meta_path) as f:
                meta = json.load(f)
            if meta.get("fingerprint") == fingerprint:
                if self.verbose:
                    print(f"feature cache: reusing {path} ({meta['count']} images)")
                return self._load(path, meta, reused=True)
        if self.verbose:
            print(f"feature cache: computing encoder outputs for {count} images into {path}")
        meta = self._compute(path, encoder, dataset, count, teacher, batch_size, fingerprint)
        for old in glob.glob(os.path.join(self.directory, f"{part}-*")):
            if os.path.abspath(old) != os.path.abspath(path):
                shutil.rmtree(old, ignore_errors=True)
        return self._load(path, meta, reused=False)

    def _compute(self, path, encoder, dataset, count, teacher, batch_size, fingerprint):
        if os.path.exists(path):
            shutil.rmtree(path)
        os.makedirs(path)
        encode = tf.function(lambda x: encoder(x, training=False), reduce_retracing=True)
        explain = (
            None
            if teacher is None
            else tf.function(lambda x: _teacher_logits(teacher(x, training=False)), reduce_retracing=True)
        )
        with quiet_retracing():
            files = self._write(path, encode, explain, dataset, count, batch_size)
        target = dataset.element_spec[1]
        meta = {
            "fingerprint": fingerprint,
            "count": count,
            "num_features": sum(name.startswith("feature_") for name in files),
            "teacher": "teacher" in files,
            "target_keys": sorted(target) if isinstance(target, dict) else None,
        }
        atomic_write_json(os.path.join(path, "meta.json"), meta)
        return meta

    @staticmethod
    def _write(path, encode, explain, dataset, count, batch_size):
        files, start = {}, 0
        for images, targets in _batches(dataset, count, batch_size):
            x = preprocess(images)
            outputs = {f"feature_{i}": f for i, f in enumerate(tf.nest.flatten(encode(x)))}
            if isinstance(targets, dict):
                outputs.update({f"target_{key}": _stored(value) for key, value in targets.items()})
            else:
                outputs["targets"] = _stored(targets)
            if explain is not None:
                outputs["teacher"] = tf.cast(explain(x), tf.float32)
            for name, value in outputs.items():
                value = value.numpy()
                if name not in files:
                    files[name] = np.lib.format.open_memmap(
                        os.path.join(path, f"{name}.npy"),
                        mode="w+",
                        dtype=value.dtype,
                        shape=(count,) + value.shape[1:],
                    )
                files[name][start : start + len(value)] = value
            start += len(images)
        for array in files.values():
            array.flush()
        return files

    @staticmethod
    def _load(path, meta, reused):
        load = lambda name: np.load(os.path.join(path, f"{name}.npy"), mmap_mode="r")
        features = [load(f"feature_{i}") for i in range(meta["num_features"])]
        teacher = load("teacher") if meta["teacher"] else None
        keys = meta.get("target_keys")
        targets = load("targets") if keys is None else {key: load(f"target_{key}") for key in keys}
        return CachedFeatures(features, targets, teacher, meta["fingerprint"], reused, path)
