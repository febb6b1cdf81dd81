"""The search losses of 3M-Pose beside the task loss: the FLOPs constraint and teacher guidance (Hoang, 3M-Pose thesis 2021, Sec. 3.4).

Spec: `/work/shared/3M-POSE.md` sections 8 and 9.
"""

import numpy as np
import tensorflow as tf


def flops_warmup(epoch, start=1e-4, factor=10.0, every=3, ceiling=1.0):
    """The step-wise warm-up of the FLOPs loss (spec section 8): min(ceiling, start * factor^floor(e / every)).

    Args:
        epoch: int, 0-based search epoch.
        start: float, scale of epochs 0..every-1 (1e-4).
        factor: float, growth per step (10).
        every: int, epochs per step (3).
        ceiling: float, largest scale (1).
    """
    return float(min(ceiling, start * factor ** (int(epoch) // int(every))))


def _settings(settings):
    if settings is None:
        from tfnas.oneshot.settings import SearchSettings  # settings imports this module

        settings = SearchSettings()
    return settings


def flops_scale(epoch, settings=None):
    """The FLOPs term's factor at an epoch: weight * s(epoch) (a float).

    Args:
        epoch: int, 0-based search epoch.
        settings: `SearchSettings` (default: the thesis').
    """
    s = _settings(settings)
    return s.flops_weight * flops_warmup(
        epoch, s.flops_warmup_start, s.flops_warmup_factor, s.flops_warmup_every, s.flops_warmup_ceiling
    )


def flops_loss(madds, epoch, settings=None, scale=None):
    """The FLOPs constraint of the search loss: weight * s(epoch) * (GFLOPs / T) ** w.

    Args:
        madds: scalar tensor, expected multiply-adds (`FabricCosts.expected_madds`).
        epoch: int, 0-based search epoch.
        settings: `SearchSettings` (default: the thesis').
        scale: optional float or scalar tensor used instead of `flops_scale(epoch, settings)`,
            so that a traced search step takes the epoch's factor as an argument (one trace).
    """
    s = _settings(settings)
    scale = flops_scale(epoch, s) if scale is None else scale
    gflops = tf.cast(madds, tf.float32) / 1e9
    return scale * (gflops / s.flops_target) ** s.flops_exponent


def latency_loss(ms, epoch, settings, scale=None):
    """The constraint's latency variant: weight * s(epoch) * (ms / latency_target_ms) ** w.

    The FLOPs term's weight, warm-up and exponent on the expected latency of a per-op table
    (`FabricLatency.expected_ms`) instead of its GFLOPs (3M-POSE.md section 8: "a latency
    variant when a per-op latency table exists" is the issue's, not the thesis').

    Args:
        ms: scalar tensor, expected latency in milliseconds.
        epoch: int, 0-based search epoch.
        settings: `SearchSettings` with `latency_target_ms` set.
        scale: as `flops_loss`.

    Raises:
        ValueError: if `settings.latency_target_ms` is not a positive number.
    """
    s = _settings(settings)
    if s.latency_target_ms is None or not s.latency_target_ms > 0:
        raise ValueError(f"latency_target_ms={s.latency_target_ms!r} must be a positive number of ms")
    scale = flops_scale(epoch, s) if scale is None else scale
    return scale * (tf.cast(ms, tf.float32) / s.latency_target_ms) ** s.flops_exponent


# --- teacher guidance --------------------------------------------------------------------------
def rdm(activations):
    """Representational dissimilarity matrix: Euclidean distances between the samples of a batch.

    Args:
        activations: `(B, ...)` tensor; each sample is flattened.

    Returns:
        `(B, B)` float32 matrix D_ab = ||f_a - f_b||_2.
    """
    x = tf.reshape(tf.cast(activations, tf.float32), (tf.shape(activations)[0], -1))
    gram = tf.matmul(x, x, transpose_b=True)
    norms = tf.linalg.diag_part(gram)
    squared = tf.maximum(norms[:, None] + norms[None, :] - 2.0 * gram, 0.0)
    off = 1.0 - tf.eye(tf.shape(x)[0])
    return tf.sqrt(tf.maximum(squared, 1e-12)) * off


def _upper(matrix):
    b = matrix.shape[0]
    rows, cols = np.triu_indices(b, k=1)
    return tf.gather_nd(matrix, np.stack([rows, cols], axis=1))


def rdm_correlation(a, b):
    """Pearson correlation of two RDMs on their upper triangles (diagonal left out).

    Args:
        a: `(B, B)`; b: `(B, B)`, with B >= 3 (at least 3 pairs are needed for a correlation).

    Returns:
        scalar float32 in [-1, 1] (0 when either triangle is constant).
    """
    if a.shape[0] is None or a.shape[0] < 3:
        raise ValueError(f"an RDM correlation needs a static batch of at least 3 samples, got {a.shape[0]}")
    x, y = _upper(a), _upper(b)
    x, y = x - tf.reduce_mean(x), y - tf.reduce_mean(y)
    return tf.reduce_sum(x * y) / tf.sqrt(tf.reduce_sum(x * x) * tf.reduce_sum(y * y) + 1e-12)


def teacher_guidance_loss(student, teacher):
    """The teacher loss of Sec. 3.4: 1 - mean over teacher layers i of max over student layers j of corr(Y_i, X_j).

    Args:
        student: list of `(B, ...)` activations (every cell output).
        teacher: list of `(B, ...)` activations (hand-picked teacher layers).

    Returns:
        scalar float32 tensor.
    """
    if not student or not teacher:
        raise ValueError(
            f"teacher guidance needs student and teacher activations, got {len(student)} and "
            f"{len(teacher)} layers"
        )
    xs = [rdm(s) for s in student]
    sims = [tf.reduce_max(tf.stack([rdm_correlation(rdm(t), x) for x in xs])) for t in teacher]
    return 1.0 - tf.reduce_mean(tf.stack(sims))
