"""The 3M-Pose one-shot search end to end: bi-level supernet training, resume, GumbelOracle and OneShotTuner.

Tiny: a 2-row, 3-column fabric (layout 1, 2, 1: four cells; the last chooses among its
parallel and below inputs), width 4, 32x32 figure scenes, two supernet epochs of three steps
(batches of 2: of the 10 scenes, 1 is the trials' meta-val, and the architecture split holds
2 of the other 9). Two supernets are trained (one inside the tuner, one stopped after an
epoch and resumed), each traced once.
"""

import dataclasses
import hashlib
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfnas import oneshot
from tfnas.cli import main
from tfnas.data import split
from tfnas.oneshot.search import SupernetSearch
from tfnas.preprocessing import preprocess
from tfnas.spaces.fabric import FabricSpace
from tfnas.tuners.oneshot import GumbelOracle, OneShotTuner

#: The module fixtures' supernet steps are traced once and called again by later tests; the
#: searches seed themselves, and TensorFlow's set_seed would empty the kernel cache before
#: every test (tests/conftest.py).
pytestmark = pytest.mark.reuses_traced_functions

SETTINGS = oneshot.SearchSettings(epochs=2, arch_split=0.2)
#: The tuners' supernet batch and proxy-task settings: tiny, one stage-1 epoch per trial.
TRIAL_SETTINGS = dict(
    search_batch_size=4,
    stage1_epochs=1,
    stage2_epochs=0,
    batch_size=4,
    cache_images=8,
    latency_runs=0,
    termination=False,
    verbose=0,
)


def tiny_space():
    return FabricSpace(
        width=4, rows=2, columns=3, layout=[1, 2, 1], eel_columns=(2,), stem_channels=4, stem_blocks=1
    )


def scenes():
    return tiny_space().task.builtin_data("train", image_size=32, num_samples=10, seed=0)


def meta_train():
    """What `OneShotTuner` trains the supernet on: the scenes less the proxy's meta-val (10 %, seed 0)."""
    return split(scenes(), fraction=0.1, seed=0)[0]


@pytest.fixture(scope="module")
def tuner(tmp_path_factory):
    tuner = OneShotTuner(
        tiny_space(),
        max_trials=2,
        search_settings=SETTINGS,
        **TRIAL_SETTINGS,
        directory=str(tmp_path_factory.mktemp("oneshot")),
        project_name="search",
    )
    tuner.search(scenes())
    return tuner


@pytest.fixture(scope="module")
def resumed(tmp_path_factory):
    """A search stopped after epoch 1, its state scrambled, then resumed from the checkpoint."""
    search = SupernetSearch(
        tiny_space(), str(tmp_path_factory.mktemp("resume")), SETTINGS, batch_size=4, verbose=0
    )
    first = search.run(meta_train(), stop_after=1)
    assert first["epoch"] == 0 and not first["finished"]
    # Everything a resume must restore is overwritten, so only the checkpoint can bring it back.
    for variable in search.supernet.variables + search.architecture.variables:
        if variable.dtype == "int32":
            continue  # a Choice's index, which the weighted mode does not read
        variable.assign(tf.random.normal(variable.shape, dtype=variable.dtype))
    for group in (search.weight_group, search.arch_group):
        for variable in group.optimizer.variables:
            variable.assign(tf.ones_like(variable))
    search.noise.state.assign(search.noise.state + 7)
    result = search.run(meta_train())
    assert result["epoch"] == 1 and result["finished"]
    return search, result


def test_a_checkpoint_older_than_a_setting_resumes_with_its_default(resumed):
    """`latency_target_ms` came after some searches were checkpointed: they still resume."""
    search, _ = resumed
    directory = os.path.dirname(search.checkpoint.path)
    with open(search.checkpoint.state_file) as f:
        original = f.read()
    state = json.loads(original)
    del state["settings"]["search"]["latency_target_ms"]  # as written before the setting existed
    try:
        with open(search.checkpoint.state_file, "w") as f:
            json.dump(state, f)
        again = SupernetSearch(tiny_space(), directory, SETTINGS, batch_size=4, verbose=0)
        assert again.run(meta_train())["finished"]
        other = dataclasses.replace(SETTINGS, arch_split=0.3)  # a setting that differs still counts
        with pytest.raises(ValueError, match="written by a search with other settings"):
            SupernetSearch(tiny_space(), directory, other, batch_size=4, verbose=0).run(meta_train())
    finally:
        with open(search.checkpoint.state_file, "w") as f:
            f.write(original)


@pytest.mark.slow
def test_resume_ends_where_an_uninterrupted_search_ends(tuner, resumed):
    uninterrupted = tuner.supernet_search.result()
    _, result = resumed
    assert [h["epoch"] for h in result["history"]] == [0, 1]
    start = oneshot.ArchitectureParameters(tiny_space()).get_state()
    for name, value in uninterrupted["architecture"].items():
        np.testing.assert_array_equal(result["architecture"][name], value)
        assert np.abs(np.asarray(value) - np.asarray(start[name])).max() > 1e-4  # it moved
    assert result["history"][1]["loss"] == pytest.approx(uninterrupted["history"][1]["loss"], rel=1e-6)
    # The thesis' schedule: tau falls linearly, the architecture lr of epoch 0 is 5e-3.
    assert uninterrupted["history"][0]["temperature"] > uninterrupted["history"][1]["temperature"]
    assert uninterrupted["history"][0]["arch_lr"] == 5e-3


@pytest.mark.slow
def test_trials_are_scored_on_images_the_supernet_never_saw(tuner):
    """The weight split, the architecture split and the trials' meta-val are disjoint (issue 13).

    Images are compared by a fingerprint of their preprocessed pixels: the supernet's splits
    as its last `run` used them, meta-val as the proxy task scores every trial on it.
    """

    def fingerprints(images):
        return [hashlib.sha256(np.asarray(image).tobytes()).hexdigest() for image in images]

    def of(data):
        return fingerprints(preprocess(image) for image, _ in data)

    everything = of(scenes())
    assert len(set(everything)) == 10  # distinct images: a fingerprint names one scene
    weights, arch = (set(of(part)) for part in tuner.supernet_search.data.values())
    prepared = tuner.proxy.data
    padded = [image for images, _ in prepared.stage2_val for image in images]
    meta_val = set(fingerprints(padded[: prepared.meta_val_images]))
    assert len(meta_val) == prepared.meta_val_images == 1 and arch and weights
    assert not arch & meta_val and not weights & meta_val and not weights & arch
    assert weights | arch | meta_val == set(everything)
    # The trials train on meta-train: the weight and architecture splits together.
    assert set(of(prepared.meta_train)) == weights | arch
    images = tuner.supernet_search.checkpoint.read()["settings"]["images"]
    assert images == {"weights": len(weights), "architecture": len(arch)} == {"weights": 7, "architecture": 2}


@pytest.mark.slow
def test_teacher_guidance_and_settings_checks(resumed):
    search, _ = resumed
    images, targets = next(iter(search.space.task.pipeline(scenes(), 4, drop_remainder=True)))
    inputs = keras.Input((None, None, 3))
    features = keras.layers.Conv2D(3, 3, strides=4, padding="same")(inputs)
    teacher = keras.Model(inputs, [features, keras.layers.Conv2D(2, 3, padding="same")(features)])
    search.noise.state.assign([5, 0])
    loss, values = search._loss(images, targets, tf.constant(1.0), tf.constant(0.0))
    search.teacher = teacher
    search.noise.state.assign([5, 0])  # the same architecture sample
    try:
        guided, guided_values = search._loss(images, targets, tf.constant(1.0), tf.constant(0.0))
    finally:
        search.teacher = None
    assert 0.0 < float(guided_values["teacher"]) <= 2.0
    assert float(guided - loss) == pytest.approx(float(guided_values["teacher"]), rel=1e-4)
    other = SupernetSearch(
        search.space, os.path.dirname(search.checkpoint.path), oneshot.SearchSettings(epochs=3)
    )
    with pytest.raises(ValueError, match="other settings"):
        other.run(scenes())


@pytest.mark.slow
def test_each_update_changes_only_its_own_parameters(resumed):
    search, _ = resumed
    # batches of 2, as the search's: its one trace serves both updates here too
    images, targets = next(iter(search.space.task.pipeline(scenes(), 2, drop_remainder=True)))
    tau, scale = tf.constant(1.0), tf.constant(0.0)

    def snapshot():
        weights = [v.numpy().copy() for v in search.supernet.trainable_variables]
        return weights, [v.numpy().copy() for v in search.architecture.variables]

    before = snapshot()
    search._step(images, targets, tau, scale, tf.constant(False))
    after = snapshot()
    assert any(not np.array_equal(a, b) for a, b in zip(before[0], after[0]))
    assert all(np.array_equal(a, b) for a, b in zip(before[1], after[1]))
    search._step(images, targets, tau, scale, tf.constant(True))
    last = snapshot()
    assert all(np.array_equal(a, b) for a, b in zip(after[0], last[0]))
    assert any(not np.array_equal(a, b) for a, b in zip(after[1], last[1]))
    assert search._step.experimental_get_tracing_count() == 1


@pytest.mark.slow
def test_flops_term_lowers_the_sampled_cost(resumed):
    """Architecture updates with a large FLOPs weight vs none, from the same state and noise.

    The FLOPs weight enters the traced step only as its factor (`flops_scale`), so the two
    runs differ in that argument alone.
    """
    search, _ = resumed
    costs = oneshot.FabricCosts(search.space, (32, 32))
    images, targets = next(iter(search.space.task.pipeline(scenes(), 2, drop_remainder=True)))
    arch, optimizer = search.architecture, search.arch_group.optimizer
    start = (arch.get_state(), [v.numpy() for v in optimizer.variables], search.noise.state.numpy())

    def run(scale):
        arch.set_state(start[0])
        for variable, value in zip(optimizer.variables, start[1]):
            variable.assign(value)
        search.arch_group.sync()
        search.noise.state.assign(start[2])
        optimizer.learning_rate = 0.3  # large steps, so that ten of them show
        for _ in range(10):
            search._step(images, targets, tf.constant(1.0), tf.constant(scale), tf.constant(True))
        samples = [costs.madds(arch.sample_genotype(1e-3, seed=i)) for i in range(40)]
        return np.mean(samples), costs.madds(arch.derive())

    free, constrained = run(0.0), run(1e3)
    assert constrained[0] < 0.9 * free[0]
    assert constrained[1] < free[1]


@pytest.mark.slow
def test_derived_architectures_are_completed_trials_that_load(tuner):
    space, oracle = tiny_space(), tuner.oracle
    trials = sorted(oracle.trials.values(), key=lambda t: t.trial_id)
    assert [t.status for t in trials] == ["COMPLETED", "COMPLETED"]
    parameters = oneshot.ArchitectureParameters(space)
    parameters.set_state(tuner.supernet_search.result()["architecture"])
    # The first trial is the thesis' derivation; every trial is a valid, distinct architecture.
    assert trials[0].hyperparameters.values == space.values(parameters.derive())
    assert oracle.source(trials[0].trial_id) == "derived"
    genotypes = [space.genotype(t.hyperparameters.values) for t in trials]
    assert genotypes[0] != genotypes[1]
    model = tuner.get_best_models(1)[0]
    outputs = model(tf.zeros([1, 32, 32, 3]))
    assert sorted(outputs) == ["eel_2", "logits"] and outputs["logits"].shape == (1, 8, 8, 34)
    # The trials started from the supernet's stem.
    stem = tuner.supernet_search.supernet.stem.get_weights()
    encoder = tuner.proxy.trial_space.build_encoder()
    encoder.load_weights(tuner.search_dir.encoder_weights)
    np.testing.assert_array_equal(encoder.get_layer("stem").get_weights()[0], stem[0])


@pytest.mark.slow
def test_reloaded_search_keeps_candidates_and_skips_the_supernet(tuner):
    again = OneShotTuner(
        tiny_space(),
        max_trials=2,
        search_settings=SETTINGS,
        search_batch_size=4,
        stage1_epochs=1,
        stage2_epochs=0,
        batch_size=4,
        cache_images=8,
        latency_runs=0,
        termination=False,
        verbose=0,
        directory=os.path.dirname(tuner.project_dir),
        project_name=os.path.basename(tuner.project_dir),
    )
    assert again.oracle.candidates == tuner.oracle.candidates
    again.search(scenes())
    assert again.supernet_search.supernet is None  # never rebuilt: the result came from oracle.json
    assert len(again.oracle.trials) == 2
    with open(os.path.join(tuner.project_dir, "run.json")) as f:
        run = json.load(f)
    assert run["space"] == "fabric" and run["oneshot"]["epochs_done"] == 2


@pytest.mark.slow
def test_export_of_the_best_trial(tuner, tmp_path):
    assert (
        main(["export", tuner.project_dir, "--base", str(tmp_path), "--name", "fabric", "--version", "1"])
        == 0
    )
    loaded = tf.saved_model.load(str(tmp_path / "fabric" / "1"))
    result = loaded.signatures["serving_default"](tf.zeros([1, 32, 32, 3], tf.uint8))
    assert result["heatmaps"].shape[-1] == 17


@pytest.mark.slow
def test_inherit_weights_starts_trials_from_the_supernets_weights(tmp_path):
    """With a decoder learning rate of ~0 the trial keeps what it inherited: the supernet's weights."""
    tuner = OneShotTuner(
        tiny_space(),
        max_trials=1,
        search_settings=oneshot.SearchSettings(epochs=1, arch_split=0.2),
        **TRIAL_SETTINGS,
        inherit_weights=True,
        decoder_learning_rate=1e-12,
        directory=str(tmp_path),
        project_name="inherit",
    )
    tuner.search(scenes())
    assert tuner.search_dir.read_run()["oneshot"]["inherit_weights"] is True
    (trial,) = tuner.oracle.trials.values()
    assert trial.status == "COMPLETED"
    trained = tuner.get_best_models(1)[0].get_layer("decoder")
    space = tuner.hypermodel
    expected = space.build(space.hyperparameters(trial.hyperparameters.values))
    tuner.supernet_search.supernet.transfer(expected)
    expected = expected.get_layer("decoder")
    assert len(trained.trainable_weights) == len(expected.trainable_weights) > 0
    for got, want in zip(trained.trainable_weights, expected.trainable_weights):
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-6, err_msg=got.path)
    fresh = space.build(space.hyperparameters(trial.hyperparameters.values)).get_layer("decoder")
    assert any(  # and those differ from a fresh draw: the check above would notice no transfer
        not np.allclose(a.numpy(), b.numpy())
        for a, b in zip(fresh.trainable_weights, expected.trainable_weights)
    )


def test_gumbel_oracle_needs_the_supernet_and_the_fabric(tmp_path):
    oracle = GumbelOracle(max_trials=2)
    with pytest.raises(RuntimeError, match="OneShotTuner"):
        oracle.populate_space("0")
    from tfnas.spaces.auxcell import AuxCellSpace

    with pytest.raises(ValueError, match="FabricSpace"):
        OneShotTuner(AuxCellSpace(num_classes=3, width=4), directory=str(tmp_path))


def test_gumbel_oracle_is_for_the_fabric_only_on_the_command_line(capsys, tmp_path):
    assert main(["search", "--space", "auxcell", "--oracle", "gumbel", "--out", str(tmp_path / "run")]) == 2
    assert "--space fabric" in capsys.readouterr().err


@pytest.mark.slow
def test_random_search_over_the_fabric(tmp_path):
    from tfnas.tuners import NASTuner, make_oracle

    space = tiny_space()
    tuner = NASTuner(
        space,
        oracle=make_oracle("random", 1, seed=0),
        stage1_epochs=1,
        stage2_epochs=0,
        batch_size=4,
        cache_images=8,
        warmup_epochs=0,
        latency_runs=0,
        verbose=0,
        directory=str(tmp_path),
        project_name="random",
    )
    tuner.search(scenes())
    (trial,) = tuner.oracle.trials.values()
    assert trial.status == "COMPLETED"
    assert space.genotype(trial.hyperparameters.values)  # a valid fabric architecture
    assert sorted(tuner.get_best_models(1)[0](tf.zeros([1, 32, 32, 3]))) == ["eel_2", "logits"]


def test_fabric_space_is_registered_and_predicts_pose_multi_by_default():
    from tfnas.spaces import get_space
    from tfnas.tasks import get_task

    space = get_space("fabric")(width=4)
    assert space.task.name == "pose-multi" and space.task.output_channels == 2 * space.num_joints
    assert FabricSpace(**space.config()).config() == space.config()
    segmentation = FabricSpace(width=4, task="segmentation", num_classes=3)
    assert segmentation.num_classes == 3 and segmentation.head_channels == 3
    assert FabricSpace(**segmentation.config()).config() == segmentation.config()
    with pytest.raises(ValueError, match="pass task='segmentation' with num_classes"):
        FabricSpace(num_classes=3)
    with pytest.raises(ValueError, match="stride 8, but the fabric's heads predict at stride 4"):
        FabricSpace(task=get_task("pose", stride=8))
    with pytest.raises(ValueError, match="no pretrained weights"):
        FabricSpace(encoder_weights="imagenet")
    top_down = FabricSpace(width=4, task=get_task("pose", num_joints=16, flip_pairs=()), num_joints=16)
    assert top_down.head_channels == 16 and FabricSpace(**top_down.config()).config() == top_down.config()
    with pytest.raises(
        ValueError, match="the pose task has 16 joints, but num_joints=17; pass num_joints=16"
    ):
        FabricSpace(width=4, task=get_task("pose", num_joints=16, flip_pairs=()))


@pytest.mark.slow
def test_one_shot_search_of_depth_with_a_latency_table_from_the_command_line(tmp_path):
    """The fabric searched for another task than pose, its constraint on a latency table.

    The depth loss trains the supernet; with --latency-table and --latency-target the
    supernet's constraint is the table's expected latency (`FabricLatency`, its parts timed
    into the table first) and the derived trials' latency is predicted from the same table.
    """
    from tfnas.latency.measure import measure_table
    from tfnas.report.runs import load_run

    space = FabricSpace(
        task="depth", width=4, rows=2, columns=3, eel_columns=(2,), stem_channels=4, stem_blocks=1
    )
    table = str(tmp_path / "fabric_32.json")
    measure_table(space, (32, 32, 3), "tensorflow", warmup=1, runs=2, networks=0, architectures=1).save(table)
    with pytest.raises(ValueError, match="needs both a latency table and"):
        SupernetSearch(space, str(tmp_path / "none"), oneshot.SearchSettings(latency_target_ms=1.0))
    out = str(tmp_path / "depth")
    argv = ["search", "--out", out, "--space", "fabric", "--oracle", "gumbel", "--task", "depth"]
    argv += ["--rows", "2", "--columns", "3", "--eel-columns", "2", "--width", "4", "--stem-channels", "4"]
    argv += ["--stem-blocks", "1", "--search-epochs", "1", "--search-batch-size", "4", "--trials", "1"]
    argv += ["--image-size", "32", "--scenes", "12", "--stage1-epochs", "1", "--stage2-epochs", "0"]
    argv += ["--batch-size", "4", "--cache-images", "12", "--latency-runs", "0", "--no-termination"]
    argv += ["--latency-table", table, "--latency-target", "1ms"]
    assert main(argv + ["--verbose", "0"]) == 0
    with open(os.path.join(out, "oneshot", "checkpoint", "state.json")) as f:
        state = json.load(f)
    (epoch,) = state["history"]
    assert state["settings"]["search"]["latency_target_ms"] == 1.0
    assert epoch["task"] > 0 and epoch["heatmap"] == epoch["grouping"] == 0.0
    assert epoch["loss"] == pytest.approx(epoch["task"] + epoch["flops"], rel=1e-5)
    # the constraint is 1e-3 * s(0) * (ms / 1 ms) ** 0.15, with ms the table's expected latency
    assert epoch["expected_ms"] > 0 and epoch["derived_ms"] > 0
    assert epoch["flops"] == pytest.approx(1e-3 * 1e-4 * epoch["expected_ms"] ** 0.15, rel=0.2)
    run = load_run(out)
    (trial,) = run.trials
    assert trial.status == "COMPLETED" and np.isfinite(trial.metrics["reward"])
    assert "rmse" in trial.metrics  # scored by the depth task
    assert trial.metrics["latency_from_table"] == 1.0 and trial.metrics["latency_ms"] > 0
    assert run.space.task.name == "depth"
    model = run.space.build(run.space.hyperparameters(trial.values))
    outputs = model(tf.zeros([1, 32, 32, 3]))
    assert sorted(outputs) == ["eel_2", "logits"] and outputs["logits"].shape[-1] == 1
