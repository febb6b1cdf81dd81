"""Depth task: berHu and the NYUDv2 metrics on hand-worked maps, the depth data and loaders."""

import math

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tfnas.data import depth_scene_arrays, depth_scenes, image_depth_folder
from tfnas.tasks import DepthMetrics, berhu_loss, depth_scores, get_task
from tfnas.tasks.depth import depth_reward

# 3x3 maps: 0 marks the two missing pixels (one holds a wild prediction of 9 m).
TARGET = np.array([[1, 2, 4], [0, 1, 2], [4, 0, 1]], np.float32)
PREDICTION = np.array([[1, 2.5, 4], [9, 0.5, 2], [2, 3, 1.25]], np.float32)
# The 7 valid (prediction, target) pairs: (1,1) (2.5,2) (4,4) (0.5,1) (2,2) (2,4) (1.25,1).


def test_berhu_on_a_tiny_map_skips_the_missing_pixel():
    target = np.array([[[1.0, 2.0], [0.0, 4.0]]])
    prediction = np.array([[[[1.5], [2.0]], [[3.0], [1.0]]]])
    # Errors 0.5, 0, 3 (the pixel with target 0 is skipped); c = 0.2 * 3 = 0.6:
    # B(0.5) = 0.5, B(0) = 0, B(3) = (9 + 0.36) / 1.2 = 7.8; mean = 8.3 / 3.
    loss = berhu_loss(target, prediction)
    assert float(loss) == pytest.approx(8.3 / 3, rel=1e-6)
    task = get_task("depth")
    assert float(task.loss(target, prediction)) == pytest.approx(8.3 / 3, rel=1e-6)


def test_berhu_is_l1_below_c_and_resizes_predictions():
    target = np.full((1, 4, 4), 2.0, np.float32)
    prediction = np.full((1, 2, 2, 1), 2.5, np.float32)  # all errors 0.5 = max -> c = 0.1
    # every |x| = 0.5 > c = 0.1: B = (0.25 + 0.01) / 0.2 = 1.3
    assert float(berhu_loss(target, prediction)) == pytest.approx(1.3, rel=1e-6)
    assert float(berhu_loss(target, np.full((1, 2, 2, 1), 2.0))) == 0.0


def test_every_depth_metric_on_3x3_maps():
    s = depth_scores(TARGET, PREDICTION[..., None][None])
    assert s["valid_pixels"] == 7
    # squared errors 0, .25, 0, .25, 0, 4, .0625
    assert s["rmse"] == pytest.approx(math.sqrt(4.5625 / 7))
    ln125, ln05 = math.log(1.25), math.log(0.5)
    assert s["rmse_log"] == pytest.approx(math.sqrt((2 * ln125**2 + 2 * ln05**2) / 7))
    assert s["abs_rel"] == pytest.approx((0.25 + 0.5 + 0.5 + 0.25) / 7)
    assert s["sq_rel"] == pytest.approx((0.125 + 0.25 + 1.0 + 0.0625) / 7)
    # ratios 1, 1.25, 1, 2, 1, 2, 1.25: the bounds are strict, so 1.25 fails delta1
    assert s["delta1"] == pytest.approx(3 / 7)
    assert s["delta2"] == pytest.approx(5 / 7)
    assert s["delta3"] == pytest.approx(5 / 7)
    expected = (3 / 7 * (1 - 1.5 / 7) * math.exp(-s["rmse_log"])) ** (1 / 3)
    assert s["reward"] == pytest.approx(expected)


def test_streaming_metric_equals_pooled_scores():
    metric = get_task("depth").metric()
    assert isinstance(metric, DepthMetrics)
    metric.update_state(TARGET[None, :2], PREDICTION[None, :2, :, None])
    metric.update_state(TARGET[None, 2:], PREDICTION[None, 2:, :, None])
    pooled = depth_scores(TARGET, PREDICTION)
    streamed = metric.scores()
    for key in ("rmse", "rmse_log", "abs_rel", "sq_rel", "delta1", "delta2", "delta3", "reward"):
        assert streamed[key] == pytest.approx(pooled[key])
    assert float(metric.result()) == pytest.approx(pooled["rmse"], rel=1e-6)


def test_reward_of_the_papers_arch0():
    # Table 3, arch0: delta1 0.830, abs rel 0.136, rmse log 0.184
    scores = {"delta1": 0.830, "abs_rel": 0.136, "rmse_log": 0.184}
    assert depth_reward(scores) == pytest.approx((0.830 * 0.864 * math.exp(-0.184)) ** (1 / 3))
    assert depth_reward({"delta1": 1.0, "abs_rel": 0.0, "rmse_log": 0.0}) == 1.0


def test_a_mask_where_depth_is_expected_is_refused():
    task = get_task("depth")
    with pytest.raises(ValueError, match="segmentation mask"):
        berhu_loss(np.zeros((1, 3, 3), np.int32), np.zeros((1, 3, 3, 1)))
    with pytest.raises(ValueError, match="segmentation mask"):
        task.validate_target(np.zeros((3, 3), np.uint8))
    with pytest.raises(ValueError, match="depth scale"):
        task.validate_target(np.full((3, 3), 1500.0, np.float32))
    with pytest.raises(ValueError, match="one output channel"):
        berhu_loss(np.ones((1, 3, 3)), np.ones((1, 3, 3, 2)))
    with pytest.raises(ValueError, match="depth"):
        get_task("segmentation").validate_target(np.ones((3, 3), np.float32))


def test_depth_scenes_have_known_depths_occlusion_and_holes():
    images, depths = depth_scene_arrays("train", image_size=(40, 48), num_scenes=6, seed=1)
    assert images.shape == (6, 40, 48, 3) and images.dtype == np.uint8
    assert depths.shape == (6, 40, 48) and depths.dtype == np.float32
    valid = depths[depths > 0]
    assert valid.min() >= 0.4 and valid.max() <= 8.0  # balls from 1 - 0.6 m, wall up to 8 m
    assert (depths == 0).any(axis=(1, 2)).all()  # every scene misses some measurements
    # The floor gets nearer towards the bottom row (camera above the floor).
    column = depths[:, -1][depths[:, -1] > 0]
    assert column.max() < 3.0
    again = depth_scene_arrays("train", image_size=(40, 48), num_scenes=6, seed=1)
    np.testing.assert_array_equal(again[1], depths)
    other = depth_scene_arrays("test", image_size=(40, 48), num_scenes=6, seed=1)
    assert not np.array_equal(other[1], depths)
    element = next(iter(depth_scenes("validation", image_size=32, num_scenes=2)))
    get_task("depth").validate_target(element[1].numpy(), image_size=(32, 32))


def test_image_depth_folder_reads_16_bit_millimetres(tmp_path):
    (tmp_path / "rgb").mkdir()
    (tmp_path / "depth").mkdir()
    Image.fromarray(np.full((4, 5, 3), 120, np.uint8)).save(tmp_path / "rgb" / "a.png")
    raw = np.array([[0, 1000, 2500, 0, 65535]] * 4, np.uint16)
    Image.fromarray(raw).save(tmp_path / "depth" / "a.png")
    image, depth = next(iter(image_depth_folder(tmp_path / "rgb", tmp_path / "depth")))
    assert image.shape == (4, 5, 3)
    np.testing.assert_allclose(depth.numpy()[0], [0.0, 1.0, 2.5, 0.0, 65.535], rtol=1e-6)
    _, small = next(iter(image_depth_folder(tmp_path / "rgb", tmp_path / "depth", image_size=(2, 5))))
    assert small.shape == (2, 5)
    assert np.isin(small.numpy(), np.float32([0.0, 1.0, 2.5, 65.535])).all()  # nearest
    with pytest.raises(ValueError, match="check depth_scale"):
        image_depth_folder(tmp_path / "rgb", tmp_path / "depth", depth_scale=0.01)


def test_image_depth_folder_refuses_an_8_bit_mask(tmp_path):
    (tmp_path / "rgb").mkdir()
    (tmp_path / "depth").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb" / "a.png")
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "depth" / "a.png")
    with pytest.raises(ValueError, match="looks like a segmentation mask"):
        image_depth_folder(tmp_path / "rgb", tmp_path / "depth")


def test_postprocess_returns_depth_at_input_size():
    out = get_task("depth").postprocess(tf.fill([2, 4, 6, 1], -1.0) + tf.range(6.0)[:, None], (16, 24))
    assert out["depth"].shape == (2, 16, 24)
    assert float(tf.reduce_min(out["depth"])) == 0.0  # clamped at 0
