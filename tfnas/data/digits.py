"""Digit scenes: a built-in segmentation data set that needs no download.

Each scene is a textured background (smooth noise blended with stripes, in two random
colours) with one to `max_digits` handwritten digits drawn on it, each at its own random
size, position and colour. The digits are the 1797 8x8 images that ship inside
scikit-learn (`sklearn.datasets.load_digits`), scaled up bilinearly. Labels are per pixel:
0 is background and `d + 1` is digit `d`, so there are `NUM_CLASSES = 11` classes.

Digits may overlap a little: each digit is placed where at most `max_overlap` of its
labelled pixels fall on digits already drawn (the least-overlapping of a few random
positions is kept when none qualifies). Later digits are drawn over earlier ones and the
labels follow what is visible.

The 1797 sklearn digits are split once, by a fixed seed and stratified by class, into
disjoint pools for train (70%), validation (15%) and test (15%): a test scene never shows a
digit image that any train scene shows, whatever `seed` the scenes are drawn with.

Example:
    >>> ds = digit_scenes("train", image_size=64, seed=0)  # (uint8 64x64x3, int32 64x64)
"""

import collections
import functools

import numpy as np
import tensorflow as tf

from tfnas.data._common import image_hw

#: Number of classes: background and the digits 0..9.
NUM_CLASSES = 11
#: Class names, indexed by label.
CLASS_NAMES = ("background",) + tuple(f"digit {d}" for d in range(10))
#: Split names accepted by `digit_scenes`.
SPLITS = ("train", "validation", "test")
#: Scenes per split when `num_scenes` is None (sized for a laptop CPU).
DEFAULT_NUM_SCENES = {"train": 512, "validation": 128, "test": 128}

_POOL_FRACTIONS = {"train": 0.7, "validation": 0.15}  # test takes the rest
_POOL_SEED = 1797  # fixed, so that pools never depend on the scenes' seed
_NOISE_GRID = 5  # coarse grid of the smooth background noise

#: Where one digit was drawn in a scene (returned by `digit_scene_arrays(return_digits=True)`).
Placement = collections.namedtuple(
    "Placement", ["digit_index", "label", "top", "left", "size", "colour", "visible_pixels"]
)
Placement.__doc__ = """One digit drawn in a scene.

Attributes:
    digit_index: index into `sklearn.datasets.load_digits()` of the digit image drawn.
    label: its class in the class map (`digit + 1`).
    top, left: position of its `size x size` box in the scene.
    size: side of the scaled digit in pixels.
    colour: its RGB colour, a tuple of three ints.
    visible_pixels: how many pixels carry its label after later digits were drawn.
"""


@functools.lru_cache(maxsize=1)
def _load_digits():
    """Return the sklearn digits as float32 `(1797, 8, 8)` in [0, 1] and int32 classes."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = (digits.images / 16.0).astype(np.float32)
    target = digits.target.astype(np.int32)
    images.setflags(write=False)
    target.setflags(write=False)
    return images, target


@functools.lru_cache(maxsize=1)
def _pools():
    _, target = _load_digits()
    rng = np.random.default_rng(_POOL_SEED)
    parts = {split: [] for split in SPLITS}
    for digit in range(10):
        indices = rng.permutation(np.flatnonzero(target == digit))
        n_train = int(round(len(indices) * _POOL_FRACTIONS["train"]))
        n_val = int(round(len(indices) * _POOL_FRACTIONS["validation"]))
        parts["train"].append(indices[:n_train])
        parts["validation"].append(indices[n_train : n_train + n_val])
        parts["test"].append(indices[n_train + n_val :])
    return {split: np.sort(np.concatenate(p)) for split, p in parts.items()}


def digit_pools():
    """Indices of the sklearn digit images each split draws from.

    Returns:
        dict mapping "train", "validation" and "test" to sorted int arrays of indices into
        `sklearn.datasets.load_digits()`; the three arrays are disjoint and cover all 1797.
    """
    return {split: pool.copy() for split, pool in _pools().items()}


@functools.cache
def _interp_matrix(n_out, n_in):
    """Matrix `(n_out, n_in)` that resizes a 1-D signal bilinearly (pixel centres aligned)."""
    x = np.clip((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0, n_in - 1)
    lo = np.floor(x).astype(int)
    hi = np.minimum(lo + 1, n_in - 1)
    weight = (x - lo).astype(np.float32)
    matrix = np.zeros((n_out, n_in), np.float32)
    matrix[np.arange(n_out), lo] += 1 - weight
    matrix[np.arange(n_out), hi] += weight
    matrix.setflags(write=False)
    return matrix


def _backgrounds(rng, n, height, width):
    """Draw `n` textured RGB backgrounds, float32 `(n, height, width, 3)` in [0, 255]."""
    coarse = rng.random((n, _NOISE_GRID, _NOISE_GRID), dtype=np.float32)
    noise = np.einsum(
        "hg,ngk,wk->nhw",
        _interp_matrix(height, _NOISE_GRID),
        coarse,
        _interp_matrix(width, _NOISE_GRID),
    )
    low, high = noise.min(axis=(1, 2), keepdims=True), noise.max(axis=(1, 2), keepdims=True)
    noise = (noise - low) / np.maximum(high - low, 1e-6)

    theta = rng.uniform(0, np.pi, (n, 1, 1))
    cycles = rng.uniform(1.5, 6.0, (n, 1, 1))
    phase = rng.uniform(0, 2 * np.pi, (n, 1, 1))
    yy, xx = np.mgrid[0:height, 0:width] / max(height, width)
    stripes = 0.5 + 0.5 * np.sin(2 * np.pi * cycles * (xx * np.cos(theta) + yy * np.sin(theta)) + phase)

    mix = rng.random((n, 1, 1))
    texture = (mix * noise + (1 - mix) * stripes)[..., None]
    colours = rng.integers(0, 256, (n, 2, 1, 1, 3)).astype(np.float32)
    return (colours[:, 0] * (1 - texture) + colours[:, 1] * texture).astype(np.float32)


def _compose_scene(
    rng, background, pool, num_digits, min_size, max_size, threshold, max_overlap, label_of=None, tries=8
):
    """Draw `num_digits` digits from `pool` onto `background` (modified in place).

    Args:
        rng: `np.random.Generator`.
        background: float32 `(H, W, 3)` image in [0, 255]; the digits are drawn into it.
        pool: indices of the sklearn digits this scene may use.
        num_digits: how many digits to draw.
        min_size, max_size: range of the digit's side in pixels (inclusive).
        threshold: scaled-digit intensity in [0, 1] above which a pixel takes its label.
        max_overlap: largest accepted fraction of a digit's labelled pixels that cover
            digits drawn before it.
        label_of: int array mapping a digit (0..9) to its class; default `digit + 1`.
        tries: random positions tried per digit before keeping the least-overlapping one.

    Returns:
        `(labels, placements)`: int32 `(H, W)` class map and a list of `Placement`.
    """
    digit_images, target = _load_digits()
    label_of = np.arange(1, 11) if label_of is None else label_of
    height, width, _ = background.shape
    labels = np.zeros((height, width), np.int32)
    instance = np.full((height, width), -1, np.int32)
    drawn = []
    for j in range(num_digits):
        index = int(rng.choice(pool))
        size = int(rng.integers(min_size, max_size + 1))
        scale = _interp_matrix(size, 8)
        glyph = scale @ digit_images[index] @ scale.T
        on = glyph > threshold
        best = None
        for _ in range(tries):
            top = int(rng.integers(0, height - size + 1))
            left = int(rng.integers(0, width - size + 1))
            covered = np.count_nonzero(labels[top : top + size, left : left + size][on])
            overlap = covered / max(np.count_nonzero(on), 1)
            if best is None or overlap < best[0]:
                best = (overlap, top, left)
            if overlap <= max_overlap:
                break
        _, top, left = best
        window = np.s_[top : top + size, left : left + size]
        local = background[window].reshape(-1, 3).mean(axis=0)
        # A random colour at least 80 levels from the local background in every channel.
        colour = (local + 128 + rng.integers(-48, 49, 3)) % 256
        alpha = np.clip(glyph, 0.0, 1.0)[..., None]
        background[window] = background[window] * (1 - alpha) + colour * alpha
        labels[window][on] = label_of[target[index]]
        instance[window][on] = j
        drawn.append((index, int(label_of[target[index]]), top, left, size, tuple(int(c) for c in colour)))
    visible = np.bincount(instance[instance >= 0], minlength=num_digits)
    placements = [Placement(*d, int(v)) for d, v in zip(drawn, visible)]
    return labels, placements


def _label_map(digits):
    """Array mapping each digit 0..9 to its class (0 for digits not drawn)."""
    if digits is None:
        return np.arange(1, 11)
    digits = list(digits)
    if (
        not digits
        or len(set(digits)) != len(digits)
        or any(isinstance(d, bool) or not isinstance(d, (int, np.integer)) or not 0 <= d <= 9 for d in digits)
    ):
        raise ValueError(f"digits={digits!r} must be distinct ints in 0..9, at least one")
    label_of = np.zeros(10, np.int64)
    label_of[digits] = np.arange(1, len(digits) + 1)
    return label_of


def num_classes(digits=None):
    """Number of classes of digit scenes drawing `digits` (11 for all ten digits)."""
    return int(_label_map(digits).max()) + 1


def _check_split(split):
    if split not in SPLITS:
        raise ValueError(f"split {split!r} is not a digit-scenes split; use one of {', '.join(SPLITS)}")


def digit_scene_arrays(
    split,
    image_size=64,
    num_scenes=None,
    seed=0,
    max_digits=4,
    min_digit_size=None,
    max_digit_size=None,
    max_overlap=0.25,
    threshold=0.5,
    noise_std=6.0,
    digits=None,
    return_digits=False,
):
    """Generate digit scenes as numpy arrays (see the module docstring for the recipe).

    Args:
        split: "train", "validation" or "test"; picks the pool of digit images and the
            default number of scenes.
        image_size: int or `(height, width)` of the scenes, at least 16. Default 64.
        num_scenes: number of scenes; None gives 512 for train and 128 otherwise.
        seed: int; the same seed, split and arguments give identical arrays.
        max_digits: each scene holds 1..max_digits digits. Default 4.
        min_digit_size: smallest digit side in pixels; None gives
            `min(10, max_digit_size)`.
        max_digit_size: largest digit side in pixels; None gives half the shorter image side.
        max_overlap: fraction of a digit's labelled pixels that may cover earlier digits
            (see the module docstring). Default 0.25.
        threshold: scaled digit intensity in [0, 1] above which a pixel is labelled with
            the digit's class. Default 0.5.
        noise_std: standard deviation of Gaussian pixel noise added to the scene. Default 6.
        digits: which digits to draw, e.g. `(0, 1, 7)`; digit `digits[i]` is labelled
            `i + 1`, so there are `len(digits) + 1` classes. None (default) draws all ten
            (labels `d + 1`). Fewer classes make a task that small models learn in a few
            CPU minutes.
        return_digits: also return, for each scene, the list of `Placement` drawn in it.

    Returns:
        `(images, masks)`: uint8 `(N, H, W, 3)` and int32 `(N, H, W)` with labels in
        0..10; with `return_digits`, `(images, masks, placements)`.

    Raises:
        ValueError: if `split` is unknown or a size or count is out of range.
    """
    _check_split(split)
    height, width = image_hw(image_size)
    if min(height, width) < 16:
        raise ValueError(f"image_size={image_size!r} is too small; use at least 16 pixels")
    num_scenes = DEFAULT_NUM_SCENES[split] if num_scenes is None else int(num_scenes)
    if num_scenes < 1:
        raise ValueError(f"num_scenes={num_scenes} must be at least 1")
    if max_digits < 1:
        raise ValueError(f"max_digits={max_digits} must be at least 1")
    max_size = min(height, width) // 2 if max_digit_size is None else int(max_digit_size)
    min_size = min(10, max_size) if min_digit_size is None else int(min_digit_size)
    if not 4 <= min_size <= max_size <= min(height, width):
        raise ValueError(
            f"digit sizes {min_size}..{max_size} do not fit; expected "
            f"4 <= min_digit_size <= max_digit_size <= {min(height, width)} (the image side)"
        )

    label_of = _label_map(digits)
    rng = np.random.default_rng([int(seed), SPLITS.index(split)])
    pool = _pools()[split]
    pool = pool[label_of[_load_digits()[1][pool]] > 0]
    images = _backgrounds(rng, num_scenes, height, width)
    masks = np.empty((num_scenes, height, width), np.int32)
    counts = rng.integers(1, max_digits + 1, num_scenes)
    placements = []
    for i in range(num_scenes):
        masks[i], placed = _compose_scene(
            rng,
            images[i],
            pool,
            int(counts[i]),
            min_size,
            max_size,
            threshold,
            max_overlap,
            label_of,
        )
        placements.append(placed)
    images += rng.normal(0.0, noise_std, images.shape).astype(np.float32)
    images = np.clip(np.round(images), 0, 255).astype(np.uint8)
    if return_digits:
        return images, masks, placements
    return images, masks


def digit_scenes(
    split,
    image_size=64,
    num_scenes=None,
    seed=0,
    max_digits=4,
    min_digit_size=None,
    max_digit_size=None,
    max_overlap=0.25,
    threshold=0.5,
    noise_std=6.0,
    digits=None,
):
    """The built-in digit-scenes segmentation data set as `tf.data`.

    Args:
        split: "train", "validation" or "test".
        image_size: int or `(height, width)`, at least 16. Default 64.
        num_scenes: number of scenes; None gives 512 for train and 128 otherwise.
        seed: int; the same seed gives the same scenes.
        max_digits: each scene holds 1..max_digits digits. Default 4.
        min_digit_size: smallest digit side in pixels (default `min(10, max_digit_size)`).
        max_digit_size: largest digit side in pixels (default half the shorter side).
        max_overlap: fraction of a digit's labelled pixels that may cover earlier digits.
        threshold: scaled digit intensity above which a pixel takes the digit's label.
        noise_std: standard deviation of the Gaussian pixel noise.
        digits: which digits to draw (default all ten); `digits[i]` is labelled `i + 1`.

    Returns:
        unbatched `tf.data.Dataset` of `(uint8 (H, W, 3) image, int32 (H, W) class map)`,
        labels 0 (background) and 1..10 (digits 0..9, see `CLASS_NAMES`), or
        1..len(digits) when `digits` is given (`num_classes(digits)` classes).

    Raises:
        ValueError: if `split` is unknown or a size or count is out of range.
    """
    images, masks = digit_scene_arrays(
        split,
        image_size=image_size,
        num_scenes=num_scenes,
        seed=seed,
        max_digits=max_digits,
        min_digit_size=min_digit_size,
        max_digit_size=max_digit_size,
        max_overlap=max_overlap,
        threshold=threshold,
        noise_std=noise_std,
        digits=digits,
    )
    return tf.data.Dataset.from_tensor_slices((images, masks))
