"""Bottom-up pose task: AE loss on two people, grouping, COCO AP against pycocotools, data."""

import contextlib
import io
import json
import math
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from tfnas.data import coco_keypoints, figure_scene_arrays, figure_scenes
from tfnas.data.figures import _skeleton
from tfnas.tasks import ae_loss, coco_keypoint_eval, decode, get_task, group
from tfnas.tasks import keypoints as kp


def _person(joints):
    """(J, 3) keypoints at heatmap pixels `joints` (u, v), stride 4: x = 4u + 1.5."""
    joints = np.asarray(joints, np.float32)
    return np.concatenate([joints * 4 + 1.5, np.full((len(joints), 1), 2, np.float32)], -1)


def test_ae_loss_on_two_people():
    a = _person([(1, 1), (3, 2)])
    b = _person([(5, 5), (6, 1)])
    outside = np.array([[100.0, 1.0, 2.0], [0, 0, 0]], np.float32)  # off the map, unlabelled
    keypoints = np.stack([a, b, outside])[None]  # (1, P=3, J=2, 3)
    tags = np.zeros((1, 8, 8, 2), np.float32)
    tags[0, 1, 1, 0], tags[0, 2, 3, 1] = 1.0, 3.0  # person a: tags 1 and 3, mean 2
    tags[0, 5, 5, 0], tags[0, 1, 6, 1] = 0.0, 0.0  # person b: tags 0 and 0, mean 0
    pull, push = ae_loss(keypoints, tags)
    # pull: a ((1-2)^2 + (3-2)^2) / 2 = 1, b 0 -> mean over the two people 0.5
    assert float(pull) == pytest.approx(0.5)
    # push: the ordered pairs (a, b), (b, a) both give exp(-(2 - 0)^2)
    assert float(push) == pytest.approx(math.exp(-4.0))
    task = get_task("pose-multi", num_joints=2, flip_pairs=[(0, 1)], sigmas=[0.5, 0.5])
    outputs = np.concatenate([kp.render_heatmaps(keypoints, (8, 8)), tags], -1)
    total = task.loss({"keypoints": keypoints, "area": np.ones((1, 3))}, outputs)
    assert float(total) == pytest.approx(1e-3 * (0.5 + math.exp(-4.0)), rel=1e-5)


def test_ae_loss_of_one_person_has_no_push():
    keypoints = _person([(1, 1), (3, 2)])[None, None]
    tags = np.zeros((1, 8, 8, 2), np.float32)
    pull, push = ae_loss(keypoints, tags)
    assert float(pull) == 0.0 and float(push) == 0.0


def _two_people():
    rng = np.random.default_rng(0)
    people = []
    for dx in (24.0, 66.0):
        joints = _skeleton(rng, 36.0) + [dx, 40.0]
        people.append(np.concatenate([joints, np.full((17, 1), 2.0)], -1))
    return np.stack(people).astype(np.float32)  # (2, 17, 3) in a 96x96 image, joints away from the border


def _tag_maps(people, size, stride=4):
    tags = np.zeros(size + (17,), np.float32)
    for p, person in enumerate(people):
        for j, (x, y, _) in enumerate(person):
            u, v = int(round((x + 0.5) / stride - 0.5)), int(round((y + 0.5) / stride - 0.5))
            tags[max(v - 1, 0) : v + 2, max(u - 1, 0) : u + 2, j] = 3.0 * p
    return tags


def test_decoding_groups_two_people_and_scores_ap_1():
    people = _two_people()
    heat = kp.render_heatmaps(people[None], (24, 24))
    tags = _tag_maps(people, (24, 24))[None]
    [(found, scores)] = decode(heat, tags, k=10)
    assert found.shape == (2, 17, 3) and scores.shape == (2,)
    order = np.argsort(found[:, 0, 0])
    error = np.abs(found[order, :, :2] - people[:, :, :2])
    assert error.max() <= 1.0 + 1e-4  # a quarter heatmap pixel
    areas = np.array([5000.0, 5000.0])  # OKS scale at which quarter-pixel errors pass 0.95
    stats = coco_keypoint_eval([(people, areas)], [(found, scores)])
    assert stats["ap"] == pytest.approx(1.0) and stats["people"] == 2


def _write_coco(path, dataset):
    with open(path, "w") as handle:
        json.dump(dataset, handle)


def test_oks_ap_of_a_hand_made_two_person_prediction_equals_pycocotools(tmp_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    people = _two_people()
    areas = np.array([600.0, 500.0], np.float32)
    rng = np.random.default_rng(1)
    predicted = people.copy()
    predicted[0, :, :2] += rng.normal(0, 0.8, (17, 2))  # close
    predicted[1, :, :2] += rng.normal(0, 3.0, (17, 2))  # loose
    predicted[..., 2] = 1.0
    extra = predicted[:1].copy()
    extra[..., :2] += 6.0  # a duplicate, off by 6 px, scored low: a false positive
    detections = np.concatenate([predicted, extra])
    scores = np.array([0.9, 0.8, 0.3], np.float32)
    ours = coco_keypoint_eval([(people, areas)], [(detections, scores)], image_sizes=[(96, 96)])

    # pycocotools on its own, from files, as a user would run it.
    gt = {
        "images": [{"id": 1, "height": 96, "width": 96}],
        "categories": [{"id": 1, "name": "person", "keypoints": list(kp.COCO_KEYPOINTS)}],
        "annotations": [],
    }
    for i, (person, area) in enumerate(zip(people, areas)):
        xs, ys = person[:, 0], person[:, 1]
        gt["annotations"].append(
            {
                "id": i + 1,
                "image_id": 1,
                "category_id": 1,
                "iscrowd": 0,
                "area": float(area),
                "num_keypoints": 17,
                "keypoints": person.reshape(-1).tolist(),
                "bbox": [
                    float(xs.min()),
                    float(ys.min()),
                    float(xs.max() - xs.min()),
                    float(ys.max() - ys.min()),
                ],
            }
        )
    _write_coco(tmp_path / "gt.json", gt)
    _write_coco(
        tmp_path / "dt.json",
        [
            {"image_id": 1, "category_id": 1, "keypoints": d.reshape(-1).tolist(), "score": float(s)}
            for d, s in zip(detections, scores)
        ],
    )
    with contextlib.redirect_stdout(io.StringIO()):
        coco = COCO(str(tmp_path / "gt.json"))
        evaluation = COCOeval(coco, coco.loadRes(str(tmp_path / "dt.json")), "keypoints")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    names = ("ap", "ap50", "ap75", "ap_medium", "ap_large", "ar", "ar50", "ar75", "ar_medium", "ar_large")
    for name, value in zip(names, evaluation.stats):
        assert ours[name] == pytest.approx(value, abs=1e-9), name
    assert 0.3 < ours["ap"] < 1.0  # the loose person fails the strict OKS thresholds


def test_streaming_metric_and_postprocess():
    people = _two_people()
    task = get_task("pose-multi")
    metric = task.metric()
    outputs = np.concatenate(
        [kp.render_heatmaps(people[None], (24, 24)), _tag_maps(people, (24, 24))[None]], -1
    )
    target = {
        "keypoints": np.concatenate([people, np.zeros((1, 17, 3), np.float32)])[None],
        "area": np.array([[5000.0, 5000.0, 0.0]], np.float32),
    }
    tf.function(metric.update_state)(target, outputs)
    scores = task.scores(metric)
    assert scores["ap"] == pytest.approx(1.0) and scores["reward"] == scores["ap"]
    assert float(metric.result()) == pytest.approx(1.0)
    # A padding image (areas -1) with strong junk peaks changes nothing.
    pad = task.padding_target((96, 96), people=3)
    junk = np.random.default_rng(0).uniform(0, 1, outputs.shape).astype(np.float32)
    metric.update_state({k: v[None] for k, v in pad.items()}, junk)
    assert task.scores(metric)["ap"] == pytest.approx(1.0)
    metric.reset_state()
    with pytest.raises(ValueError, match="seen no image"):
        metric.scores()
    out = task.postprocess(tf.constant(outputs), (96, 96))
    assert out["heatmaps"].shape == (1, 24, 24, 17) and out["tags"].shape == (1, 24, 24, 17)
    assert out["peak_positions"].shape == (1, 17, 30, 2)
    found, _ = group(out["peak_scores"][0], out["peak_positions"][0], out["peak_tags"][0])
    assert len(found) == 2


def test_missing_pycocotools_gives_a_clear_error(monkeypatch):
    for name in ("pycocotools", "pycocotools.coco", "pycocotools.cocoeval"):
        monkeypatch.setitem(sys.modules, name, None)
    people = _two_people()
    with pytest.raises(ImportError, match=r"pip install pycocotools==2\.0\.11"):
        coco_keypoint_eval([(people, [1.0, 1.0])], [(people, [1.0, 1.0])])
    with pytest.raises(ImportError, match="pycocotools"):
        get_task("pose-multi").metric()


def test_figure_scenes_hold_several_figures():
    images, keypoints, areas = figure_scene_arrays(
        "train", image_size=64, num_scenes=10, seed=2, max_people=3
    )
    assert images.shape == (10, 64, 64, 3) and keypoints.shape == (10, 3, 17, 3)
    present = areas > 0
    assert present.sum(axis=1).min() >= 1 and present.sum(axis=1).max() >= 2
    assert not keypoints[~present].any()  # padding people are unlabelled
    flags = set(np.unique(keypoints[..., 2]))
    assert flags <= {0.0, 1.0, 2.0} and 1.0 in flags  # some joints covered by later figures
    task = get_task("pose-multi")
    for image, target in figure_scenes("test", image_size=48, num_scenes=3).as_numpy_iterator():
        task.validate_target(target, image_size=image.shape[:2])


def test_coco_keypoints_loader_and_its_errors(tmp_path):
    Image.fromarray(np.zeros((40, 60, 3), np.uint8)).save(tmp_path / "a.png")
    person = np.zeros((17, 3))
    person[0] = (30, 10, 2)
    person[5] = (59, 39, 1)
    annotations = [
        {
            "id": 7,
            "image_id": 1,
            "category_id": 1,
            "iscrowd": 0,
            "area": 300.0,
            "keypoints": person.reshape(-1).tolist(),
            "bbox": [0, 0, 60, 40],
        },
        {
            "id": 8,
            "image_id": 1,
            "category_id": 1,
            "iscrowd": 1,
            "area": 900.0,
            "keypoints": [0] * 51,
            "bbox": [0, 0, 60, 40],
        },
    ]
    data = {
        "images": [{"id": 1, "file_name": "a.png", "height": 40, "width": 60}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "person"}],
    }
    _write_coco(tmp_path / "k.json", data)
    image, target = next(iter(coco_keypoints(tmp_path / "k.json", tmp_path, max_people=2)))
    assert image.shape == (40, 60, 3) and target["keypoints"].shape == (2, 17, 3)
    np.testing.assert_allclose(target["keypoints"][0, 5], [59, 39, 1])
    np.testing.assert_allclose(target["area"], [300.0, 0.0])  # crowd left out, padded
    _, resized = next(iter(coco_keypoints(tmp_path / "k.json", tmp_path, image_size=(20, 30))))
    np.testing.assert_allclose(resized["keypoints"][0, 0], [(30.5) / 2 - 0.5, 10.5 / 2 - 0.5, 2])
    assert float(resized["area"][0]) == pytest.approx(75.0)

    annotations[0]["keypoints"] = annotations[0]["keypoints"][:48]
    _write_coco(tmp_path / "bad.json", data)
    with pytest.raises(ValueError, match="annotation 7 of image 'a.png' have 16 joints"):
        coco_keypoints(tmp_path / "bad.json", tmp_path)
    person[5] = (61, 39, 2)
    annotations[0]["keypoints"] = person.reshape(-1).tolist()
    _write_coco(tmp_path / "out.json", data)
    with pytest.raises(ValueError, match="outside the 60x40 image"):
        coco_keypoints(tmp_path / "out.json", tmp_path)
