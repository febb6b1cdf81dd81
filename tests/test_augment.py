"""Random affine augmentation of images with keypoints and maps (`tfnas.data.augment`)."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfnas.data.augment import RandomAffineTransform, affine_matrix, affine_transform, warp
from tfnas.tasks import get_task
from tfnas.tasks import keypoints as kp
from tfnas.training.full import keypoint_augmentation, train
from tfnas.training.recipes import TrainSettings

H, W = 36, 44
YY, XX = np.mgrid[0:H, 0:W]


def dot_image(points, sigma=1.5):
    """A black uint8 image with a bright Gaussian dot at each `(x, y)` (pixel centres at integers)."""
    image = sum(np.exp(-((XX - x) ** 2 + (YY - y) ** 2) / (2 * sigma**2)) for x, y in points)
    return np.repeat((255 * np.clip(image, 0, 1)).astype(np.uint8)[..., None], 3, axis=-1)


def centroid(image, near=None, radius=6):
    """Intensity-weighted centre `(x, y)` of an image (within `radius` of `near` if given)."""
    a = np.asarray(image)[..., 0].astype(np.float64)
    if near is not None:
        a = a * ((XX - near[0]) ** 2 + (YY - near[1]) ** 2 <= radius**2)
    return np.array([(a * XX).sum() / a.sum(), (a * YY).sum() / a.sum()])


def pose_target(points, num_joints=17):
    keypoints = np.zeros((num_joints, 3), np.float32)
    for joint, (x, y) in points.items():
        keypoints[joint] = [x, y, 2]
    return {"keypoints": keypoints, "head_size": np.float32(10.0)}


@pytest.mark.parametrize(
    "zoom, rotation, translation, flip",
    [
        (1.4, 0.0, (0, 0), False),  # scale up
        (0.7, 0.0, (0, 0), False),  # scale down
        (1.0, 27.0, (0, 0), False),  # rotation
        (1.0, 0.0, (0, 0), True),  # flip
        (1.2, -33.0, (3.0, -2.0), True),  # all of them
    ],
)
def test_keypoint_lands_on_its_transformed_dot(zoom, rotation, translation, flip):
    point = (15.3, 11.6)
    image = dot_image([point])
    matrix = affine_matrix((H, W), zoom, rotation, translation, flip)
    out, target = affine_transform(image, pose_target({0: point}), matrix, kp.COCO_FLIP_PAIRS, image_fill=0)
    x, y, v = target["keypoints"].numpy()[0]
    assert v == 2
    assert np.linalg.norm(centroid(out) - [x, y]) < 1.0, (centroid(out), x, y)
    assert target["head_size"].numpy() == pytest.approx(10.0 * zoom)
    if not (flip or rotation or translation != (0, 0)):  # pure zoom about the centre
        centre = np.array([(W - 1) / 2, (H - 1) / 2])
        np.testing.assert_allclose([x, y], centre + zoom * (np.array(point) - centre), atol=1e-4)


def test_rotation_turns_counter_clockwise_on_screen():
    centre = np.array([(W - 1) / 2, (H - 1) / 2])
    target = pose_target({0: tuple(centre + [8.0, 0.0])})  # right of the centre
    _, moved = affine_transform(np.zeros((H, W, 3), np.uint8), target, affine_matrix((H, W), rotation=90.0))
    np.testing.assert_allclose(moved["keypoints"].numpy()[0, :2], centre + [0.0, -8.0], atol=1e-4)  # above


def test_random_draws_move_dots_and_keypoints_alike_and_flip_renames_the_pairs():
    left, right, nose = (13.0, 14.0), (29.0, 15.0), (21.0, 22.0)
    image = dot_image([left, right, nose])
    target = pose_target({1: left, 2: right, 0: nose})  # left eye, right eye, nose
    augment = RandomAffineTransform(flip_pairs=kp.COCO_FLIP_PAIRS, image_fill=0, scale_range=(0.9, 1.3))
    flips = 0
    for seed in range(8):
        matrix = augment.draw(tf.constant([seed, 3], tf.int64), (H, W)).numpy()
        out, moved = augment(image, target, tf.constant([seed, 3], tf.int64))
        keypoints = moved["keypoints"].numpy()
        flipped = np.linalg.det(matrix[:2, :2]) < 0
        flips += flipped
        for joint, source in ((0, nose), (1, left), (2, right)):
            # on a flip the joint named left (1) is where the right eye's dot went
            partner = {1: right, 2: left}.get(joint, source) if flipped else source
            expected = matrix[:2, :2] @ partner + matrix[:2, 2]
            np.testing.assert_allclose(keypoints[joint, :2], expected, atol=1e-3)
            assert np.linalg.norm(centroid(out, near=keypoints[joint, :2]) - keypoints[joint, :2]) < 1.0
        assert keypoints[3:, 2].max() == 0  # unlabelled joints stay unlabelled
    assert 0 < flips < 8  # both kinds drawn


def test_flip_alone_is_the_tasks_flip():
    task = get_task("pose")
    image, target = next(task.builtin_data("train", image_size=32, num_samples=1).as_numpy_iterator())
    out, moved = affine_transform(image, target, affine_matrix((32, 32), flip=True), task.flip_pairs)
    want_image, want = task.flip(tf.constant(image), target)
    np.testing.assert_array_equal(out.numpy(), want_image.numpy())
    np.testing.assert_allclose(moved["keypoints"].numpy(), want["keypoints"].numpy(), atol=1e-4)
    labelled = target["keypoints"][:, 2] > 0
    assert labelled[5] and labelled[6]  # the shoulders (a flip pair) are labelled and swap
    assert moved["keypoints"].numpy()[5, 0] == pytest.approx(31 - target["keypoints"][6, 0], abs=1e-4)


def test_keypoints_moved_out_of_the_image_become_unlabelled():
    target = pose_target({0: (2.0, 2.0), 1: ((W - 1) / 2, (H - 1) / 2), 2: (W - 3.0, 3.0)})
    _, moved = affine_transform(np.zeros((H, W, 3), np.uint8), target, affine_matrix((H, W), zoom=2.0))
    keypoints = moved["keypoints"].numpy()
    np.testing.assert_array_equal(keypoints[0], [0, 0, 0])  # the corners leave the frame
    np.testing.assert_array_equal(keypoints[2], [0, 0, 0])
    assert keypoints[1, 2] == 2  # the centre stays
    # a rotation also pushes corner joints out (a 44x36 image's corners turn beyond it)
    _, turned = affine_transform(np.zeros((H, W, 3), np.uint8), target, affine_matrix((H, W), rotation=45))
    assert turned["keypoints"].numpy()[0, 2] == 0 and turned["keypoints"].numpy()[1, 2] == 2


def test_identity_parameters_give_the_identity():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    mask = rng.integers(0, 5, (H, W)).astype(np.int32)
    np.testing.assert_allclose(affine_matrix((H, W)).numpy(), np.eye(3), atol=1e-6)
    same = RandomAffineTransform(scale_range=(1.0, 1.0), max_rotation=0.0, flip_probability=0.0)
    out, out_mask = same(image, mask, tf.constant([0, 1], tf.int64))
    np.testing.assert_array_equal(out.numpy(), image)
    np.testing.assert_array_equal(out_mask.numpy(), mask)
    target = pose_target({0: (3.25, 7.5), 9: (40.0, 30.0)})
    _, moved = same(image, target, tf.constant([5, 1], tf.int64))
    np.testing.assert_allclose(moved["keypoints"].numpy(), target["keypoints"], atol=1e-5)


def test_maps_follow_the_image_by_nearest_neighbour_with_their_fill():
    image = np.zeros((H, W, 3), np.uint8)
    image[8:20, 10:30] = 200
    mask = np.where(image[..., 0] > 0, 3, 0).astype(np.int32)
    depth = np.where(mask == 3, 2.5, 1.0).astype(np.float32)
    matrix = affine_matrix((H, W), zoom=0.8, rotation=20.0, translation=(2.0, 1.0))
    nearest_image = warp(image, matrix, "nearest", fill_value=0).numpy()
    _, out_mask = affine_transform(image, mask, matrix, target_fill=255)
    _, out_depth = affine_transform(image, depth, matrix, target_fill=0)
    out_mask, out_depth = out_mask.numpy(), out_depth.numpy()
    assert out_mask.dtype == np.int32 and set(np.unique(out_mask)) == {0, 3, 255}
    np.testing.assert_array_equal(out_mask == 3, nearest_image[..., 0] == 200)  # same pixels moved
    assert set(np.unique(out_depth)) == {0.0, 1.0, 2.5}  # values kept, 0 = outside (no measurement)
    np.testing.assert_array_equal(out_depth == 0, out_mask == 255)


def test_multi_person_areas_scale_with_the_zoom_and_padding_people_stay_padding():
    keypoints = np.zeros((2, 17, 3), np.float32)
    keypoints[0, 0] = [20, 18, 2]
    target = {"keypoints": keypoints, "area": np.array([100.0, -1.0], np.float32)}
    _, moved = affine_transform(np.zeros((H, W, 3), np.uint8), target, affine_matrix((H, W), zoom=1.5))
    np.testing.assert_allclose(moved["area"].numpy(), [225.0, -1.0])
    assert moved["keypoints"].shape == (2, 17, 3) and moved["keypoints"].numpy()[1].max() == 0


def test_map_over_a_dataset_is_seeded_and_its_targets_stay_valid():
    task = get_task("pose-multi")
    data = task.builtin_data("train", image_size=32, num_samples=6)
    augment = RandomAffineTransform(flip_pairs=task.flip_pairs, max_translate=0.2)

    def run(seed):
        return list(augment.map(data, seed).as_numpy_iterator())

    first, again, other = run(7), run(7), run(8)
    for (image_a, target_a), (image_b, target_b) in zip(first, again):
        np.testing.assert_array_equal(image_a, image_b)
        np.testing.assert_array_equal(target_a["keypoints"], target_b["keypoints"])
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first, other))
    original = list(data.as_numpy_iterator())
    assert any(not np.array_equal(a[0], o[0]) for a, o in zip(first, original))
    task.validate_dataset(augment.map(data, 7))  # labelled joints inside, flags 0/1/2, areas > 0
    assert augment.map(data, 7).element_spec[0].shape == (32, 32, 3)


def test_bad_settings_and_targets_say_what_was_expected():
    with pytest.raises(ValueError, match=r"scale_range=\(1.5, 0.75\) must be \(lo, hi\)"):
        RandomAffineTransform(scale_range=(1.5, 0.75))
    with pytest.raises(ValueError, match="flip_probability=2 must be in"):
        RandomAffineTransform(flip_probability=2)
    with pytest.raises(ValueError, match="each may appear in one pair"):
        RandomAffineTransform(flip_pairs=((1, 2), (2, 3)))
    image = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match=r"keys \['keypoints', 'visible'\]; expected 'keypoints' with"):
        affine_transform(image, {"keypoints": np.zeros((17, 3)), "visible": 1}, affine_matrix((8, 8)))
    with pytest.raises(ValueError, match="per-pixel maps"):
        affine_transform(image, np.zeros((8, 8, 2)), affine_matrix((8, 8)))


def tiny_pose_network(num_joints=17, size=32):
    """A tfnas-shaped pose model: nested "encoder" and "decoder", heatmaps at stride 4."""
    keras.utils.set_random_seed(0)
    image = keras.Input((size, size, 3))
    encoder_in = keras.Input((size, size, 3))
    feature = keras.layers.Conv2D(8, 3, strides=4, padding="same", activation="relu")(encoder_in)
    encoder = keras.Model(encoder_in, feature, name="encoder")
    decoder_in = keras.Input((size // 4, size // 4, 8))
    heatmaps = keras.layers.Conv2D(num_joints, 1, name="logits")(decoder_in)
    decoder = keras.Model(decoder_in, {"logits": heatmaps}, name="decoder")
    return keras.Model(image, decoder(encoder(image)), name="tiny_pose")


def test_full_training_of_a_pose_task_augments_by_default_and_records_it(tmp_path):
    task = get_task("pose")
    assert keypoint_augmentation(get_task("segmentation", num_classes=3), TrainSettings()) is None
    assert keypoint_augmentation(task, TrainSettings(scale=False)) is None
    affine = keypoint_augmentation(task, TrainSettings())
    assert affine.scale_range == (0.75, 1.5) and affine.max_rotation == 30.0
    assert affine.flip_pairs == kp.COCO_FLIP_PAIRS and affine.flip_probability == 0.5
    assert keypoint_augmentation(task, TrainSettings(flip=False)).flip_probability == 0.0

    data = task.builtin_data("train", image_size=32, num_samples=8)
    val = task.builtin_data("validation", image_size=32, num_samples=4)
    settings = TrainSettings(epochs=1, batch_size=4)
    scores = train(tiny_pose_network(), task, data, val, str(tmp_path / "on"), settings, verbose=0)
    assert 0.0 <= scores["reward"] <= 1.0
    state = json.load(open(tmp_path / "on" / "checkpoint" / "state.json"))
    assert state["settings"]["keypoint_augmentation"] == affine.config()
    assert np.isfinite(state["history"][0]["loss"])
    # resuming with the augmentation off is another training: refused, naming the difference
    with pytest.raises(ValueError, match="keypoint_augmentation: .* there, None now"):
        train(
            tiny_pose_network(),
            task,
            data,
            val,
            str(tmp_path / "on"),
            TrainSettings(epochs=1, batch_size=4, scale=False),
            resume=True,
            verbose=0,
        )
