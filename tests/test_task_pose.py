"""Top-down pose task: heatmaps, sub-pixel decoding, PCKh on hand-placed skeletons, flip test, data."""

import numpy as np
import pytest
import tensorflow as tf

from tfnas.data import figure_crop_arrays, figure_crops
from tfnas.tasks import PCKh, flip_test, get_task, joints_mse_loss, pckh
from tfnas.tasks import keypoints as kp


def test_heatmap_peaks_at_the_joint_with_sigma_2():
    # x = 10 is heatmap u = 10.5 / 4 - 0.5 = 2.125; y = 21.5 is v = 5.0 exactly.
    keypoints = np.array([[[10.0, 21.5, 2.0], [3.0, 3.0, 0.0]]], np.float32)
    heat = kp.render_heatmaps(keypoints, (12, 8), stride=4, sigma=2.0).numpy()
    assert heat.shape == (1, 12, 8, 2)
    assert heat[0, 5, 2, 0] == pytest.approx(np.exp(-(0.125**2) / 8))
    assert heat[0, 5, 4, 0] == pytest.approx(np.exp(-(1.875**2) / 8))
    assert heat[0, 7, 2, 0] == pytest.approx(np.exp(-(0.125**2 + 4) / 8))
    assert not heat[..., 1].any()  # not labelled: empty map


def test_decoding_recovers_sub_pixel_positions():
    # Heatmap coordinates 2.125 and 5.0 -> argmax (2, 5); the right neighbour is higher, so
    # x moves a quarter pixel: u = 2.25 -> x = 2.75 * 4 - 0.5 = 10.5; y has equal
    # neighbours and stays: v = 5 -> y = 21.5.
    keypoints = np.array([[[10.0, 21.5, 2.0]]], np.float32)
    decoded = kp.decode_heatmaps(kp.render_heatmaps(keypoints, (12, 8)), 4).numpy()
    np.testing.assert_allclose(decoded[0, 0, :2], [10.5, 21.5])
    # Many positions: every decoded joint lies within a quarter heatmap pixel (1 image
    # pixel) of the truth, and on average nearer than the plain argmax.
    rng = np.random.default_rng(0)
    xy = rng.uniform(6, 50, (1, 40, 2)).astype(np.float32)
    keypoints = np.concatenate([xy, np.full((1, 40, 1), 2, np.float32)], -1)
    heat = kp.render_heatmaps(keypoints, (14, 14))
    decoded = kp.decode_heatmaps(heat, 4).numpy()[0, :, :2]
    error = np.abs(decoded - xy[0])
    assert error.max() <= 1.0 + 1e-4
    flat = tf.reshape(tf.transpose(heat, [0, 3, 1, 2]), [40, -1]).numpy().argmax(-1)
    argmax_xy = np.stack([flat % 14, flat // 14], -1) * 4 + 1.5
    assert error.mean() < np.abs(argmax_xy - xy[0]).mean()


def test_pckh_on_two_hand_placed_skeletons():
    truth = np.array(
        [
            [[10, 10, 2], [20, 10, 2], [30, 10, 0]],  # head size 10
            [[5, 5, 2], [50, 50, 1], [0, 0, 0]],  # head size 20
        ],
        np.float32,
    )
    predicted = np.array(
        [
            [[13, 14], [20.5, 10], [99, 99]],  # 5 px (= 0.5 * 10, counts), 0.5 px, not labelled
            [[5, 16], [51, 50], [0, 0]],  # 11 px > 10: wrong; 1 px <= 2: right at 0.1 too
        ],
        np.float32,
    )
    head = np.array([10, 20], np.float32)
    mean, per_joint = pckh(predicted, truth, head, 0.5)
    assert mean == 0.75
    assert per_joint[:2] == [0.5, 1.0] and np.isnan(per_joint[2])
    assert pckh(predicted, truth, head, 0.1)[0] == 0.5


def test_pckh_metric_and_reward_from_heatmaps():
    task = get_task("pose", num_joints=3, flip_pairs=[(0, 1)])
    truth = np.array([[[10, 10, 2], [20, 12, 2], [0, 0, 0]]], np.float32)
    metric = task.metric()
    assert isinstance(metric, PCKh)
    # Heatmaps of joints moved by (2, 0) and (0.5, 0): at head size 10 both are within 5
    # (PCKh@0.5); only the second is within 1 (PCKh@0.1) once decoded.
    moved = truth + np.array([[[2, 0, 0], [0.5, 0, 0], [0, 0, 0]]], np.float32)
    metric.update_state(
        {"keypoints": truth, "head_size": np.array([10.0], np.float32)}, kp.render_heatmaps(moved, (8, 8))
    )
    scores = task.scores(metric)
    assert scores["pckh@0.5"] == 1.0 and scores["pckh@0.1"] == 0.5
    assert scores["reward"] == 0.75 and scores["labelled_joints"] == 2


def test_loss_masks_joints_that_are_not_labelled():
    truth = np.array([[[10, 10, 2], [20, 12, 0]]], np.float32)
    perfect = kp.render_heatmaps(truth, (8, 8)).numpy()
    noisy = perfect.copy()
    noisy[..., 1] = 5.0  # junk in the unlabelled joint's map costs nothing
    assert float(joints_mse_loss(truth, noisy)) == 0.0
    noisy[0, 0, 0, 0] += 2.0  # one pixel of a labelled joint: 0.5 * 4 / (8 * 8 * 2)
    assert float(joints_mse_loss(truth, noisy)) == pytest.approx(0.5 * 4 / 128)
    task = get_task("pose", num_joints=2, flip_pairs=[])
    assert float(task.loss({"keypoints": truth, "head_size": [5.0]}, noisy)) == pytest.approx(0.5 * 4 / 128)


def test_flipped_heatmaps_need_no_shift_and_flip_test_averages():
    keypoints = np.array([[[9.3, 13.0, 2], [30.0, 7.7, 2], [17.0, 21.0, 2]]], np.float32)
    pairs = [(0, 1)]
    flipped = kp.flip_keypoints(keypoints, 40, pairs)
    np.testing.assert_allclose(flipped.numpy()[0, 0], [9.0, 7.7, 2])  # was joint 1 at x 30
    direct = kp.render_heatmaps(flipped, (8, 10))
    np.testing.assert_allclose(
        kp.flip_heatmaps(kp.render_heatmaps(keypoints, (8, 10)), pairs), direct, atol=1e-6
    )
    images = tf.concat([tf.zeros([1, 32, 20, 3]), tf.ones([1, 32, 20, 3])], axis=2)
    straight = kp.render_heatmaps(keypoints, (8, 10))

    def predict(batch):  # answers the straight heatmaps, or the mirror's for the mirror image
        mirrored = float(batch[0, 0, 0, 0]) == 1.0
        return {"logits": direct if mirrored else straight}

    np.testing.assert_allclose(flip_test(predict, images, pairs), straight, atol=1e-6)


def test_bad_pose_targets_are_named():
    task = get_task("pose")
    good = {"keypoints": np.zeros((17, 3), np.float32), "head_size": np.float32(4)}
    task.validate_target(good, image_size=(32, 32))
    with pytest.raises(ValueError, match="16 joints but the task expects 17"):
        task.validate_target({**good, "keypoints": np.zeros((16, 3))})
    outside = good["keypoints"].copy()
    outside[5] = (40, 3, 2)
    with pytest.raises(ValueError, match=r"index \(5,\) is at \(40, 3\), outside the 32x32"):
        task.validate_target({**good, "keypoints": outside}, image_size=(32, 32))
    with pytest.raises(ValueError, match="positive head size"):
        task.validate_target({**good, "head_size": np.float32(0)})
    with pytest.raises(ValueError, match="visibility 3"):
        task.validate_target({**good, "keypoints": np.full((17, 3), 3.0)})
    with pytest.raises(ValueError, match="17 heatmaps"):
        joints_mse_loss(np.zeros((1, 16, 3)), np.zeros((1, 8, 8, 17)))
    with pytest.raises(ValueError, match="not a pose target"):
        task.loss(np.zeros((1, 8, 8), np.int32), np.zeros((1, 8, 8, 17)))


def test_figure_crops_hold_one_figure_with_known_joints():
    images, keypoints, head = figure_crop_arrays("train", image_size=48, num_crops=8, seed=3)
    assert images.shape == (8, 48, 48, 3) and keypoints.shape == (8, 17, 3)
    labelled = keypoints[..., 2] > 0
    assert labelled.mean() > 0.9  # one centred figure: nearly every joint in the crop
    assert (keypoints[..., :2][labelled] <= 47).all() and (keypoints[..., :2] >= 0).all()
    assert (head > 2).all() and (head < 12).all()
    # The figure faces the camera: its left shoulder (5) is right of its right one (6)
    # unless the whole figure is rotated a lot; on average clearly so.
    assert (keypoints[:, 5, 0] - keypoints[:, 6, 0]).mean() > 2
    task = get_task("pose")
    for image, target in figure_crops("validation", image_size=48, num_crops=3).as_numpy_iterator():
        task.validate_target(target, image_size=image.shape[:2])
    flipped_image, flipped = task.flip(
        tf.constant(images[0]), {"keypoints": tf.constant(keypoints[0]), "head_size": tf.constant(head[0])}
    )
    np.testing.assert_allclose(flipped["keypoints"].numpy()[6, 0], 47 - keypoints[0, 5, 0], rtol=1e-6)


def test_postprocess_decodes_keypoints_in_input_pixels():
    keypoints = np.array([[[10.0, 21.5, 2.0], [40.0, 5.0, 2.0]]], np.float32)
    task = get_task("pose", num_joints=2, flip_pairs=[(0, 1)])
    out = task.postprocess(kp.render_heatmaps(keypoints, (12, 16)), (48, 64))
    assert out["heatmaps"].shape == (1, 12, 16, 2)
    # (40, 5) is heatmap (9.625, 0.875): argmax (10, 1), quarter shifts towards 9 and 0 give
    # (9.75, 0.75), i.e. image (40.5, 4.5).
    np.testing.assert_allclose(out["keypoints"].numpy()[0, :, :2], [[10.5, 21.5], [40.5, 4.5]])
