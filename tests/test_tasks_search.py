"""Every space searches for every task (issue 12): heads, the proxy task, the cache and the CLI."""

import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from _cli import run_cli

from tfnas import profile
from tfnas.report.tensorboard import HParamsWriter
from tfnas.search_dir import SearchDir
from tfnas.serving.savedmodel import TASK_OUTPUTS
from tfnas.spaces import AuxCellSpace, DPCSpace, get_space
from tfnas.tasks import get_task
from tfnas.training import FeatureCache, ProxyModel, evaluate_reward

SHAPE = (32, 32, 3)


# --- spaces --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "a segmentation space needs num_classes"),
        ({"num_classes": 1}, "num_classes must be at least 2"),
        (
            {"num_classes": 3, "task": "depth"},
            "num_classes=3 is for segmentation; the depth task has no classes",
        ),
        ({"task": "stereo"}, "task 'stereo' is unknown"),
        (
            {"num_classes": 4, "task": get_task("segmentation", num_classes=3)},
            "contradicts the task's num_classes=3",
        ),
    ],
)
def test_a_space_names_what_is_wrong_with_its_task(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AuxCellSpace(width=4, **kwargs)


@pytest.mark.parametrize(
    "space_name, task",
    [
        ("auxcell", "depth"),
        ("auxcell", "pose"),
        ("auxcell", "pose-multi"),
        ("dpc", "pose"),  # a stride-16 head upsampled to stride 4
        ("template", "pose"),
        ("template", "depth"),
    ],
)
def test_published_networks_build_for_every_task_and_rebuild_from_config(space_name, task):
    channels, stride = {"depth": (1, None), "pose": (17, 4), "pose-multi": (34, 4)}[task]
    space = get_space(space_name)(task=task, width=8, alpha=0.35)
    genotype = next(iter(space.PUBLISHED))
    model = space.build_genotype(genotype)
    x = np.zeros((1, *SHAPE), np.float32)
    outputs = model(x)
    for key, value in outputs.items():  # the main head and the auxiliary heads
        assert value.shape[-1] == channels, key
        if stride is not None:  # heatmaps at the task's stride whatever the head's features
            assert tuple(value.shape[1:3]) == (SHAPE[0] // stride, SHAPE[1] // stride), key
    assert space.inference_model(model)(x).shape == outputs["logits"].shape
    again = get_space(space_name)(**json.loads(json.dumps(space.config())))
    assert again.task.name == task and again.num_classes is None
    assert again.task.config() == space.task.config()


def test_a_published_network_builds_for_another_task_from_a_segmentation_space():
    space = DPCSpace(num_classes=19, width=8, alpha=0.35)
    model = space.build_genotype("top1_cityscapes", task="depth")
    assert model(np.zeros((1, *SHAPE), np.float32))["logits"].shape[-1] == 1
    assert space.task.name == "segmentation"  # the space itself is unchanged


def test_a_segmentation_space_is_what_it_was():
    space = AuxCellSpace(num_classes=3, width=4, alpha=0.35)
    assert space.config()["task"] == {
        "name": "segmentation",
        **get_task("segmentation", num_classes=3).config(),
    }
    decoder = space.build_genotype("arch0").get_layer("decoder")
    assert isinstance(decoder.get_layer("logits"), keras.layers.Conv2D)  # a bare 3x3 conv, as before
    assert AuxCellSpace(**space.config()).num_classes == 3


@pytest.mark.slow
def test_a_pose_supernet_computes_its_architectures_heatmaps_and_costs():
    """The heads resize to the finest encoder feature in the supernet, where the stride of
    the last block is the architecture's; the standalone head does the same only when its
    stride differs, so both compute the same heatmaps, and the costs match `profile`."""
    keras.utils.set_random_seed(0)
    space = AuxCellSpace(task="pose", width=4, alpha=0.35, aux_cells=False)
    supernet = space.build_supernet()
    features = supernet.encoder(np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype("float32"))
    genotypes = [AuxCellSpace.PUBLISHED["arch0"], space.genotype(space.random_values(3))]
    for seed, genotype in enumerate(genotypes):
        values = space.values(genotype)
        supernet.prepare(values, seed=seed)
        model = space.build_genotype(genotype)
        supernet.transfer(values, model)
        ours, theirs = supernet.decoder(features), model.get_layer("decoder")(features)
        for key in ours:
            assert ours[key].shape == (2, 16, 16, 17), key
            np.testing.assert_allclose(ours[key], theirs[key], atol=1e-5, err_msg=f"{genotype} {key}")
        inference = space.inference_model(model)
        cost = supernet.cost(values, (64, 64, 3))
        assert cost["params"] == profile.params(inference) and cost["madds"] == profile.madds(
            inference, (64, 64, 3)
        )


# --- training ------------------------------------------------------------------------------
def test_the_proxy_model_trains_and_scores_with_the_tasks_loss_and_metric():
    task = get_task("depth")
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 2)).astype(np.float32)
    depth = np.full((4, 8, 8), 2.0, np.float32)
    depth[:, 0, 0] = 0.0  # missing pixels count nowhere
    inputs = keras.Input((8, 8, 2))
    network = keras.Model(inputs, {"logits": keras.layers.Conv2D(1, 1, name="logits")(inputs)})
    model = ProxyModel(network, [], task)
    total, parts = model.proxy_loss(depth, network(x))
    np.testing.assert_allclose(float(parts["task_loss"]), float(task.loss(depth, network(x)["logits"])))
    np.testing.assert_allclose(float(total), float(parts["task_loss"]))
    scores = evaluate_reward(model, tf.data.Dataset.from_tensor_slices((x, depth)).batch(2))
    expected = task.scores(_fed(task.metric(), depth, network(x)["logits"]))
    assert scores == pytest.approx(expected)
    assert scores["valid_pixels"] == 4 * 63 and 0.0 <= scores["reward"] <= 1.0


def _fed(metric, targets, outputs):
    metric.update_state(targets, outputs)
    return metric


def test_the_feature_cache_keeps_float_depths_and_dict_targets(tmp_path):
    encoder = keras.Sequential(
        [keras.Input((None, None, 3)), keras.layers.Conv2D(2, 3, strides=4, padding="same")]
    )
    cache = FeatureCache(str(tmp_path), verbose=0)
    depth = get_task("depth").builtin_data("train", image_size=16, num_samples=3)
    entry = cache.load_or_compute("depth", encoder, depth, batch_size=2)
    truth = np.stack([d for _, d in depth.as_numpy_iterator()])
    assert entry.targets.dtype == np.float32 and np.array_equal(entry.targets, truth)
    figures = get_task("pose-multi").builtin_data("train", image_size=32, num_samples=3)
    entry = cache.load_or_compute("pose", encoder, figures, batch_size=2)
    again = cache.load_or_compute("pose", encoder, figures, batch_size=2)
    assert again.reused and sorted(again.targets) == ["area", "keypoints"]
    for key in ("keypoints", "area"):
        truth = np.stack([t[key] for _, t in figures.as_numpy_iterator()])
        assert np.array_equal(entry.targets[key], truth) and np.array_equal(again.targets[key], truth)


def test_a_search_refuses_data_of_another_task(tmp_path):
    from tfnas.training import ProxyTask

    masks = get_task("segmentation", num_classes=3).builtin_data(
        "train", image_size=16, num_samples=4, digits=[0, 1]
    )
    proxy = ProxyTask(DPCSpace(task="depth", width=8, alpha=0.35), str(tmp_path))
    with pytest.raises(
        ValueError, match="the training data do not fit the space's task: element 0 of the depth"
    ):
        proxy.prepare(masks)


# --- the CLI ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, message",
    [
        (["--task", "stereo"], "unknown task 'stereo'"),
        (["--task", "depth", "--digits", "01"], "--digits: segmentation data, but --task is depth"),
        (["--task", "depth", "--images", "."], "--task depth: --images needs --depths"),
        (["--task", "pose", "--images", "."], "--task pose searches on the built-in figure crops"),
        (["--task", "pose-multi", "--keypoints", "x.json"], "--images needs --keypoints"),
        (["--depths", "."], "--depths: data of another task; add --task depth"),
    ],
)
def test_task_arguments_give_one_line_and_exit_code_2(tmp_path, capsys, argv, message):
    assert run_cli(["search", "--out", str(tmp_path / "run")] + argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


TINY = [
    "--trials", "1", "--image-size", "32", "--scenes", "24", "--width", "8", "--alpha", "0.35",
    "--stage1-epochs", "1", "--batch-size", "8", "--latency-runs", "0", "--no-termination",
    "--oracle", "random",
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.parametrize(
    "task, space, scores, phases",
    [
        # The encoder warm-up (its own trace of the whole network) with one task's loss, stage 2
        # with another's: each phase is task-generic code run on the task's loss and targets.
        (
            "depth",
            "dpc",
            {"rmse", "rmse_log", "abs_rel", "sq_rel", "delta1", "delta2", "delta3"},
            ["--warmup-epochs", "1", "--stage2-epochs", "0"],
        ),
        ("pose", "dpc", {"pckh@0.5", "pckh@0.1"}, ["--warmup-epochs", "0", "--stage2-epochs", "0"]),
        ("pose-multi", "dpc", {"ap", "ap50", "ar"}, ["--warmup-epochs", "0", "--stage2-epochs", "1"]),
    ],
)
def test_a_search_for_each_task_records_its_scores_and_keeps_its_model(
    tmp_path, capsys, task, space, scores, phases
):
    out = str(tmp_path / "run")
    assert run_cli(["search", "--out", out, "--task", task, "--space", space] + TINY + phases) == 0
    run_dir = SearchDir(out)
    assert run_dir.read_run()["space_config"]["task"]["name"] == task
    (trial,) = run_dir.trials().values()
    assert trial["status"] == "COMPLETED"
    model, meta = run_dir.load_trial_model("best")
    metrics = meta["metrics"]
    assert scores <= set(metrics) and "miou" not in metrics
    assert metrics["reward"] == pytest.approx(get_task(task).reward(metrics))
    channels = {"depth": 1, "pose": 17, "pose-multi": 34}[task]
    assert model(np.zeros((1, 32, 32, 3), np.float32))["logits"].shape[-1] == channels
    # the best model exports for the task: serving_default returns what the task predicts
    assert run_cli(["export", out, "--base", str(tmp_path / "exports"), "--name", "m"]) == 0
    capsys.readouterr()
    (version,) = os.listdir(tmp_path / "exports" / "m")
    served = tf.saved_model.load(str(tmp_path / "exports" / "m" / version)).signatures["serving_default"]
    outputs = served(images=tf.zeros((1, 32, 32, 3), tf.uint8))
    assert sorted(outputs) == sorted(TASK_OUTPUTS[task])
    # the report and the TensorBoard HParams view show the task's scores, not mIoU
    assert run_cli(["report", out]) == 0
    page = open(os.path.join(out, "report", "index.html"), encoding="utf-8").read()
    headline = get_task(task).headline_scores[0][0]
    assert f"{headline} " in page and "Per-class IoU" not in page and "mIoU" not in page
    assert [name for name, _ in HParamsWriter(str(tmp_path / "tb"), space=run_dir.space()).metrics][2:4] == [
        name for name, _ in get_task(task).headline_scores[:2]
    ]
