"""Random affine augmentation that moves keypoints with the image (HigherHRNet, Cheng et al. CVPR 2020).

Full training of the pose tasks augments as HigherHRNet trains on COCO
(`experiments/coco/higher_hrnet/w32_512_adam_lr1e-3.yaml`: `MAX_ROTATION: 30`,
`MIN_SCALE: 0.75`, `MAX_SCALE: 1.5`, `MAX_TRANSLATE: 40`, `FLIP: 0.5`; its
`lib/dataset/transforms/transforms.py`: `RandomAffineTransform` then
`RandomHorizontalFlip` with the flip index): one affine map per example, drawn as

- `scale` uniform in `scale_range` (HigherHRNet's `aug_scale`): the output shows a window
  `scale` times the size of the image, i.e. the content is resized by `zoom = 1 / scale`
  (`scale` > 1 zooms out);
- `rotation` uniform in `[-max_rotation, max_rotation]` degrees, counter-clockwise on
  screen for positive angles (as `keras.layers.RandomRotation`);
- a shift uniform in `[-max_translate, max_translate]` of the image's short side along each
  axis (HigherHRNet's 40 of its 200-pixel unit is 0.2; 0 by default: top-down crops are
  centred on their person);
- a left-right flip with probability `flip_probability`;

all about the image centre, the output the size of the input. The image is resampled
bilinearly with `tf.raw_ops.ImageProjectiveTransformV3`, pixels from outside the image
grey (`image_fill`). Keypoints `(x, y, v)` (pixel centres at integer coordinates,
`tfnas.tasks.keypoints`) go through the same map; a labelled joint that lands outside
`[-0.5, W - 0.5] x [-0.5, H - 0.5]` becomes `(0, 0, 0)` (not labelled, as
`tfnas.tasks.keypoints.check_keypoints` and the heatmap targets expect), and a flip renames
the joints by the task's flip pairs (left and right swap). The other parts of a pose
target follow the zoom: `head_size` (PCKh's normaliser, pixels) times `zoom`, `area` (OKS
scale, pixels squared) times `zoom ** 2`.

Per-pixel targets move too: a class map or a depth map is resampled by nearest neighbour,
pixels from outside the image set to `target_fill` (the ignore label, or 0 = no depth
measurement). Depth values are left as they are: an in-plane rotation about the image
centre is a roll of the camera about its optical axis, which changes no depth, and a zoom
is read as a change of focal length, which changes none either (Eigen et al., NIPS 2014,
divide depths by the scale instead, reading a zoom as the camera moving closer; divide
the map yourself after this if your data want that).

    augment = RandomAffineTransform(flip_pairs=task.flip_pairs)
    train = augment.map(train, seed=epoch_seed)  # unbatched (uint8 image, target) pairs
"""

import dataclasses
import math

import tensorflow as tf

from tfnas.tasks.keypoints import flip_permutation

__all__ = [
    "HIGHERHRNET_MAX_ROTATION",
    "HIGHERHRNET_MAX_TRANSLATE",
    "HIGHERHRNET_SCALE_RANGE",
    "RandomAffineTransform",
    "affine_matrix",
    "affine_transform",
    "transform_keypoints",
    "warp",
]

#: HigherHRNet's `(MIN_SCALE, MAX_SCALE)` on COCO: the sampled window relative to the image.
HIGHERHRNET_SCALE_RANGE = (0.75, 1.5)
#: HigherHRNet's `MAX_ROTATION` on COCO, degrees.
HIGHERHRNET_MAX_ROTATION = 30.0
#: HigherHRNet's `MAX_TRANSLATE` (40 of its 200-pixel scale unit) as a fraction of the short side.
HIGHERHRNET_MAX_TRANSLATE = 40 / 200
#: Grey that pixels from outside the image take (0 after `tfnas.preprocessing.preprocess`).
IMAGE_FILL = 128


def affine_matrix(image_size, zoom=1.0, rotation=0.0, translation=(0.0, 0.0), flip=False):
    """The 3x3 map from input to output pixel coordinates of one augmentation (graph-safe).

    With `c` the image centre `((W - 1) / 2, (H - 1) / 2)` (pixel centres at integers), a
    point `p = (x, y)` goes to `c + t + zoom * R(rotation) @ F @ (p - c)`, where `F` mirrors
    x when `flip` and `R` turns counter-clockwise on screen (y points down).

    Args:
        image_size: `(height, width)`, ints or int tensors.
        zoom: float, content magnification (> 1 enlarges). Default 1.
        rotation: float, degrees, counter-clockwise on screen. Default 0.
        translation: `(dx, dy)` in output pixels. Default `(0, 0)`.
        flip: bool (or bool tensor), mirror left-right. Default False.

    Returns:
        float32 tensor `(3, 3)`; its determinant is negative exactly when it flips.
    """
    height = tf.cast(image_size[0], tf.float32)
    width = tf.cast(image_size[1], tf.float32)
    cx, cy = (width - 1.0) / 2.0, (height - 1.0) / 2.0
    zoom = tf.cast(zoom, tf.float32)
    angle = tf.cast(rotation, tf.float32) * (math.pi / 180.0)
    mirror = tf.where(tf.cast(flip, tf.bool), -1.0, 1.0)
    cos, sin = tf.cos(angle) * zoom, tf.sin(angle) * zoom
    # linear part A = zoom * R @ F, R = [[cos, sin], [-sin, cos]] (y down: counter-clockwise on screen)
    a00, a01, a10, a11 = cos * mirror, sin, -sin * mirror, cos
    dx = tf.cast(translation[0], tf.float32)
    dy = tf.cast(translation[1], tf.float32)
    tx = cx + dx - (a00 * cx + a01 * cy)
    ty = cy + dy - (a10 * cx + a11 * cy)
    zero, one = tf.constant(0.0), tf.constant(1.0)
    return tf.reshape(tf.stack([a00, a01, tx, a10, a11, ty, zero, zero, one]), [3, 3])


def _is_flip(matrix):
    return matrix[0, 0] * matrix[1, 1] - matrix[0, 1] * matrix[1, 0] < 0


def warp(image, matrix, interpolation="bilinear", fill_value=0):
    """Resamples an unbatched `(H, W)` or `(H, W, C)` array through `matrix` (input -> output).

    Output pixel `q` reads the input at `inverse(matrix) @ q`
    (`tf.raw_ops.ImageProjectiveTransformV3`, constant fill). Bilinear sampling runs in
    float32 and is rounded back to integer dtypes; nearest sampling keeps the values.

    Args:
        image: tensor `(H, W)` or `(H, W, C)`, uint8 / int32 / float.
        matrix: float32 `(3, 3)` from `affine_matrix`.
        interpolation: `"bilinear"` or `"nearest"`. Default `"bilinear"`.
        fill_value: value of output pixels that read outside the input. Default 0.

    Returns:
        tensor of the shape and dtype of `image`.

    Raises:
        ValueError: for another interpolation or an image of another rank.
    """
    if interpolation not in ("bilinear", "nearest"):
        raise ValueError(f"interpolation={interpolation!r}; expected 'bilinear' or 'nearest'")
    image = tf.convert_to_tensor(image)
    rank = image.shape.rank
    if rank not in (2, 3):
        raise ValueError(f"warp takes (H, W) or (H, W, C) arrays, got shape {image.shape}")
    dtype = image.dtype
    batch = image[None, ..., None] if rank == 2 else image[None]
    if interpolation == "bilinear" or dtype not in (tf.uint8, tf.int32, tf.int64, tf.float32):
        batch = tf.cast(batch, tf.float32)
    inverse = tf.linalg.inv(tf.cast(matrix, tf.float32))
    inverse = inverse / inverse[2, 2]
    out = tf.raw_ops.ImageProjectiveTransformV3(
        images=batch,
        transforms=tf.reshape(inverse, [1, 9])[:, :8],
        output_shape=tf.shape(batch)[1:3],
        fill_value=tf.cast(fill_value, tf.float32),
        interpolation=interpolation.upper(),
        fill_mode="CONSTANT",
    )
    out = out[0, ..., 0] if rank == 2 else out[0]
    if out.dtype != dtype:
        if dtype.is_integer:
            out = tf.round(out)
            if dtype == tf.uint8:
                out = tf.clip_by_value(out, 0.0, 255.0)
        out = tf.cast(out, dtype)
    out.set_shape(image.shape)
    return out


def transform_keypoints(keypoints, matrix, image_size, flip_pairs=()):
    """Moves `(..., J, 3)` keypoints through `matrix`; the ones it puts outside are dropped.

    Args:
        keypoints: float tensor `(..., J, 3)` of `(x, y, v)` in input pixels.
        matrix: float32 `(3, 3)` from `affine_matrix`.
        image_size: `(height, width)` of the output image.
        flip_pairs: joint pairs that swap names when `matrix` mirrors (its determinant is
            negative). Default none.

    Returns:
        float32 tensor `(..., J, 3)`: labelled joints moved, joints outside
        `[-0.5, W - 0.5] x [-0.5, H - 0.5]` and unlabelled ones `(0, 0, 0)`, renamed by
        `flip_pairs` on a flip.
    """
    keypoints = tf.cast(tf.convert_to_tensor(keypoints), tf.float32)
    matrix = tf.cast(matrix, tf.float32)
    x, y, v = tf.unstack(keypoints, axis=-1)
    nx = matrix[0, 0] * x + matrix[0, 1] * y + matrix[0, 2]
    ny = matrix[1, 0] * x + matrix[1, 1] * y + matrix[1, 2]
    height = tf.cast(image_size[0], tf.float32)
    width = tf.cast(image_size[1], tf.float32)
    inside = (nx >= -0.5) & (nx <= width - 0.5) & (ny >= -0.5) & (ny <= height - 0.5)
    keep = inside & (v > 0)
    moved = tf.stack([nx, ny, v], axis=-1)
    moved = tf.where(keep[..., None], moved, tf.zeros_like(moved))
    if flip_pairs:
        permutation = flip_permutation(keypoints.shape[-2], flip_pairs)
        moved = tf.cond(_is_flip(matrix), lambda: tf.gather(moved, permutation, axis=-2), lambda: moved)
    return moved


def affine_transform(
    image, target, matrix, flip_pairs=(), image_fill=IMAGE_FILL, target_fill=0, interpolation="bilinear"
):
    """Applies one affine map to an unbatched `(image, target)` pair (the module docstring).

    Args:
        image: `(H, W, C)` tensor (uint8 or float).
        target: a per-pixel map `(H, W)` (class map or depth map), or a pose target: a dict
            with `keypoints` `(J, 3)` or `(P, J, 3)` and optionally `head_size` (pose) or
            `area` (pose-multi).
        matrix: float32 `(3, 3)` from `affine_matrix` (a negative determinant flips).
        flip_pairs: joint pairs renamed by a flip. Default none.
        image_fill: image value outside the input. Default 128 (grey).
        target_fill: map value outside the input (the ignore label, or 0 = no depth).
            Default 0.
        interpolation: of the image, `"bilinear"` or `"nearest"`. Default `"bilinear"`.

    Returns:
        `(image, target)` of the same structure, shapes and dtypes.

    Raises:
        ValueError: for a target of another form.
    """
    image = tf.convert_to_tensor(image)
    size = tf.shape(image)[:2]
    out_image = warp(image, matrix, interpolation, image_fill)
    if isinstance(target, dict):
        unknown = sorted(set(target) - {"keypoints", "head_size", "area"})
        if "keypoints" not in target or unknown:
            raise ValueError(
                f"a keypoint target has keys {sorted(target)}; expected 'keypoints' with "
                "'head_size' (pose) or 'area' (pose-multi), which an affine map knows how to move"
            )
        linear = tf.cast(matrix, tf.float32)[:2, :2]
        zoom = tf.sqrt(tf.abs(tf.linalg.det(linear)))
        moved = {"keypoints": transform_keypoints(target["keypoints"], matrix, size, flip_pairs)}
        if "head_size" in target:
            moved["head_size"] = tf.cast(target["head_size"], tf.float32) * zoom
        if "area" in target:
            area = tf.cast(target["area"], tf.float32)
            moved["area"] = tf.where(area > 0, area * zoom**2, area)  # padding people keep area -1
        return out_image, moved
    target = tf.convert_to_tensor(target)
    if target.shape.rank != 2:
        raise ValueError(
            f"affine_transform moves per-pixel maps (H, W) or keypoint dicts; got a target of "
            f"shape {target.shape}"
        )
    return out_image, warp(target, matrix, "nearest", target_fill)


@dataclasses.dataclass(frozen=True)
class RandomAffineTransform:
    """HigherHRNet's random scale, rotation, shift and flip, seeded per example (module docstring).

    Args:
        scale_range: `(lo, hi)`, HigherHRNet's `(MIN_SCALE, MAX_SCALE)`: the output shows a
            window `scale` times the image's size (content zoomed by `1 / scale`), `scale`
            uniform in the range. Default `(0.75, 1.5)`.
        max_rotation: float, degrees; rotations uniform in `[-max_rotation, max_rotation]`.
            Default 30.
        max_translate: float, shifts uniform in `[-max_translate, max_translate]` times the
            short side, per axis (HigherHRNet: 0.2). Default 0.
        flip_probability: float in [0, 1], chance of a left-right flip. Default 0.5.
        flip_pairs: joint index pairs a flip swaps (the task's `flip_pairs`). Default none
            (per-pixel targets).
        image_fill: int, image value outside the input. Default 128.
        target_fill: value of per-pixel targets outside the input (the ignore label 255 for
            segmentation, 0 = no measurement for depth). Default 0.

    Raises:
        ValueError: for a range, angle, shift or probability out of bounds.
    """

    scale_range: tuple = HIGHERHRNET_SCALE_RANGE
    max_rotation: float = HIGHERHRNET_MAX_ROTATION
    max_translate: float = 0.0
    flip_probability: float = 0.5
    flip_pairs: tuple = ()
    image_fill: int = IMAGE_FILL
    target_fill: float = 0

    def __post_init__(self):
        lo, hi = (float(s) for s in self.scale_range)
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range={self.scale_range!r} must be (lo, hi) with 0 < lo <= hi")
        if not 0 <= float(self.max_rotation) <= 180:
            raise ValueError(f"max_rotation={self.max_rotation!r} must be in [0, 180] degrees")
        if not 0 <= float(self.max_translate) <= 1:
            raise ValueError(f"max_translate={self.max_translate!r} must be a fraction in [0, 1]")
        if not 0 <= float(self.flip_probability) <= 1:
            raise ValueError(f"flip_probability={self.flip_probability!r} must be in [0, 1]")
        pairs = tuple(tuple(int(j) for j in pair) for pair in self.flip_pairs)
        if pairs:
            flip_permutation(max(max(p) for p in pairs) + 1, pairs)  # each joint in one pair
        object.__setattr__(self, "scale_range", (lo, hi))
        object.__setattr__(self, "flip_pairs", pairs)

    def draw(self, seed, image_size):
        """The affine map of one example, drawn from a stateless `seed`.

        Args:
            seed: int32/int64 tensor `(2,)` (`tf.random.stateless_uniform`'s seed).
            image_size: `(height, width)`.

        Returns:
            float32 `(3, 3)` tensor (`affine_matrix`).
        """
        u = tf.random.stateless_uniform([5], seed=seed)
        lo, hi = self.scale_range
        scale = lo + (hi - lo) * u[0]
        rotation = float(self.max_rotation) * (2.0 * u[1] - 1.0)
        short = tf.cast(tf.minimum(image_size[0], image_size[1]), tf.float32)
        shift = float(self.max_translate) * short * (2.0 * u[2:4] - 1.0)
        flip = u[4] < float(self.flip_probability)
        return affine_matrix(image_size, 1.0 / scale, rotation, (shift[0], shift[1]), flip)

    def __call__(self, image, target, seed):
        """Augments one unbatched `(image, target)` pair with the map `draw(seed)` gives."""
        matrix = self.draw(seed, tf.shape(image)[:2])
        return affine_transform(image, target, matrix, self.flip_pairs, self.image_fill, self.target_fill)

    def map(self, dataset, seed):
        """Augments an unbatched `tf.data` of `(image, target)`; example `i` draws from `(seed, i)`.

        The same `seed` gives the same augmentations on every pass and in every process
        (a resumed training), in the data set's order.

        Args:
            dataset: unbatched `tf.data.Dataset` of `(image (H, W, C), target)`.
            seed: int.

        Returns:
            the augmented `tf.data.Dataset`, elements of the same structure and shapes.
        """
        seed = int(seed)

        def augment(index, pair):
            image, target = pair
            return self(image, target, tf.stack([tf.constant(seed, tf.int64), index]))

        return dataset.enumerate().map(augment, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)

    def config(self):
        """The settings as JSON (lists for tuples)."""
        data = dataclasses.asdict(self)
        data["scale_range"] = list(self.scale_range)
        data["flip_pairs"] = [list(p) for p in self.flip_pairs]
        return data
