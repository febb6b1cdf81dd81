"""Full training (`tfnas.training.full`, `tfnas train`): the CVPR 2019 App. B recipe, checkpoints,
TensorBoard, resuming after SIGKILL, the depth task, and the command's errors.

The search directories are written by hand (a trial of a published genotype with its initial
weights), so no search runs; the networks are tiny (width 8, alpha 0.35, 32x32 images).
"""

import glob
import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras_tuner.engine.trial import Trial

from tfnas.cli import UsageError
from tfnas.cli.options import Parser
from tfnas.search_dir import SearchDir
from tfnas.spaces import get_space
from tfnas.tasks import get_task
from tfnas.training import ParameterGroup, run_stage
from tfnas.training.full import FullTrainingModel, freeze_batchnorm, random_scale_crop, train
from tfnas.training.recipes import SEGMENTATION_RECIPE, Plan, TrainSettings
from tfnas.training.train_cli import _reinitialised, register, run_train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EPOCHS = 3
#: `tfnas search` arguments of the hand-written searches (`run.json` `cli`).
SEGMENTATION_CLI = {"task": "segmentation", "image_size": 32, "scenes": 40, "digits": "01", "seed": 0}
DEPTH_CLI = {"task": "depth", "image_size": 32, "scenes": 30, "seed": 0, "val_fraction": 0.2}


def write_search(run_dir, space_name, genotype, cli, **space_kwargs):
    """A search directory with one COMPLETED trial `"00"` of `genotype` (initial weights)."""
    keras.utils.set_random_seed(0)
    space = get_space(space_name)(width=8, alpha=0.35, **space_kwargs)
    model = space.build_genotype(genotype)
    trial = Trial(space.hyperparameters(space.values(space.PUBLISHED[genotype])), "00", "COMPLETED")
    for name, value in (("reward", 0.25), ("params", 1234.0)):
        trial.metrics.update(name, value)
    trial.score = 0.25
    os.makedirs(os.path.join(run_dir, "trial_00"))
    with open(os.path.join(run_dir, "run.json"), "w") as f:
        json.dump({"space": space_name, "space_config": space.config(), "cli": cli}, f)
    with open(os.path.join(run_dir, "trial_00", "trial.json"), "w") as f:
        json.dump(trial.get_state(), f)
    model.save_weights(os.path.join(run_dir, "trial_00", "model.weights.h5"))
    return run_dir


def parser():
    """A `tfnas`-like parser with the `train` subcommand."""
    top = Parser(prog="tfnas")
    register(top.add_subparsers(dest="command", parser_class=Parser))
    return top


def args(*argv):
    return parser().parse_args(["train", *argv])


def events(folder):
    """{tag: [(step, value)]} of the TensorBoard scalars under `folder`."""
    found = {}
    for path in glob.glob(os.path.join(folder, "events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                scalar = float(tf.make_ndarray(value.tensor))
                found.setdefault(value.tag, []).append((event.step, scalar))
    return found


# --- the recipe ------------------------------------------------------------------------------
def test_segmentation_recipe_is_the_papers_three_stages_and_stretches_to_fewer_epochs():
    task = get_space("auxcell")(num_classes=3).task
    full = TrainSettings().resolve(task)
    assert (full.epochs, full.batch_size, full.bn_freeze_epoch) == (180, 64, 130)
    assert (full.encoder_learning_rate, full.decoder_learning_rate) == (1e-3, 3e-3)
    plan = Plan(full, task)
    # aux weights 0.3, 0.25, 0.2, 0.15 across the stages (and the second half of the last)
    weights = [plan.aux_weight(e) for e in (0, 29, 30, 79, 80, 129, 130, 179)]
    np.testing.assert_allclose(weights, [0.3, 0.3, 0.25, 0.25, 0.2, 0.2, 0.15, 0.15])
    steps = 10
    decoder = plan.schedule(task, "decoder", steps)
    rates = [float(decoder(e * steps)) for e in (0, 29, 30, 80, 130, 179)]
    np.testing.assert_allclose(rates, [3e-3, 3e-3, 1.5e-3, 7.5e-4, 3.75e-4, 3.75e-4])
    assert float(plan.schedule(task, "encoder", steps)(80 * steps)) == pytest.approx(2.5e-4)
    assert float(decoder(30 * steps - 1)) == pytest.approx(3e-3)  # the drop is at the epoch's first step
    assert not plan.bn_frozen(129) and plan.bn_frozen(130)

    # 18 epochs: the drops at 3, 8 and 13, the freeze at 13
    short = Plan(TrainSettings(epochs=18).resolve(task), task)
    schedule = short.schedule(task, "decoder", steps)
    rates = [float(schedule(e * steps)) / 3e-3 for e in (2, 3, 7, 8, 12, 13)]
    np.testing.assert_allclose(rates, [1, 0.5, 0.5, 0.25, 0.25, 0.125], rtol=1e-6)
    assert [short.aux_weight(e) for e in (2, 3, 8, 13)] == pytest.approx([0.3, 0.25, 0.2, 0.15])
    assert short.settings.bn_freeze_epoch == 13
    assert SEGMENTATION_RECIPE["augment"]["scale"] == [0.5, 2.0] and full.scale_range == (0.5, 2.0)


def test_depth_and_pose_use_their_tasks_recipes():
    depth = TrainSettings(epochs=30).resolve("depth")
    assert (depth.encoder_learning_rate, depth.decoder_learning_rate, depth.batch_size) == (1e-3, 7e-3, 32)
    assert depth.bn_freeze_epoch == 30 and depth.aux_weight_start == depth.aux_weight_end == 0.15
    schedule = Plan(depth, "depth").schedule(get_task("depth"), "decoder", 5)
    # poly over 400 recipe epochs, stopped at 300: 30 epochs here end at (1 - 300/400) ** 0.9
    assert float(schedule(30 * 5)) == pytest.approx(7e-3 * 0.25**0.9, rel=1e-5)
    assert float(schedule(15 * 5)) == pytest.approx(7e-3 * (1 - 150 / 400) ** 0.9, rel=1e-5)
    pose = TrainSettings(epochs=14).resolve("pose")
    assert pose.scale is False and pose.scale_range is None  # pose: flips only (keypoints)
    pose_schedule = Plan(pose, "pose").schedule(get_task("pose"), "decoder", 4)
    assert TrainSettings().resolve("pose-multi").scale is False  # its recipe scales, the keypoints would move
    with pytest.raises(ValueError, match="not the pose task's keypoints"):
        TrainSettings(scale_range=(0.5, 2.0)).resolve("pose")
    assert [float(pose_schedule(e * 4)) for e in (8, 9, 11, 12)] == pytest.approx([1e-3, 1e-4, 1e-4, 1e-5])


def test_settings_reject_bad_values_with_what_to_do():
    for kwargs, words in (
        ({"epochs": 0}, "epochs=0 must be an integer >= 1"),
        ({"batch_size": 2.5}, "batch_size=2.5"),
        ({"scale_range": (2.0, 0.5)}, "0 < lo <= hi"),
        ({"mixed_precision": "float16"}, "mixed_precision='float16'; expected None or one of"),
        ({"strategy": "mirrored"}, "tf.distribute.MirroredStrategy()"),
    ):
        with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)")):
            TrainSettings(**kwargs)


def test_random_scale_crop_keeps_labels_and_pads_with_the_ignore_label():
    image = np.full((16, 16, 3), 200, np.uint8)
    mask = np.zeros((16, 16), np.int32)
    mask[:, 8:] = 2
    data = tf.data.Dataset.from_tensors((image, mask)).repeat(12)
    out = list(random_scale_crop(data, (0.5, 0.5), (16, 16), 255, seed=3).as_numpy_iterator())
    for image, mask in out:
        assert image.shape == (16, 16, 3) and mask.shape == (16, 16)
        assert set(np.unique(mask)) <= {0, 2, 255} and (mask == 255).sum() == 16 * 16 - 8 * 8
        assert set(np.unique(image[mask == 255])) == {128} and set(np.unique(image[mask != 255])) == {200}
        assert (mask[4:12, 4:12] != 255).all()  # the 8x8 scaled image in the middle
    # upscaled: a random 16x16 window of the 32x32 map, no padding, windows differ per element
    big = [m for _, m in random_scale_crop(data, (2.0, 2.0), (16, 16), 255, seed=3).as_numpy_iterator()]
    assert all(set(np.unique(m)) <= {0, 2} for m in big)
    assert len({m.tobytes() for m in big}) > 1
    again = [m for _, m in random_scale_crop(data, (2.0, 2.0), (16, 16), 255, seed=3).as_numpy_iterator()]
    assert all(np.array_equal(a, b) for a, b in zip(big, again))
    keypoints = tf.data.Dataset.from_tensors((image, {"keypoints": np.zeros((17, 3), np.float32)}))
    with pytest.raises(ValueError, match="scale=False"):
        random_scale_crop(keypoints, (0.5, 2.0), (16, 16), 0, seed=0)


def test_frozen_batchnorm_keeps_its_statistics_and_trains_its_scale():
    image = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv")(image)
    x = keras.layers.BatchNormalization(name="bn")(x)
    network = keras.Model(image, {"logits": keras.layers.Conv2D(3, 1, name="logits")(x)})
    group = ParameterGroup(keras.optimizers.SGD(0.1), network.trainable_variables)
    model = FullTrainingModel(network, [group], get_task("segmentation", num_classes=3), 0.0)
    rng = np.random.default_rng(0)
    data = tf.data.Dataset.from_tensor_slices(
        (rng.normal(size=(8, 8, 8, 3)).astype("float32") + 2.0, rng.integers(0, 3, (8, 8, 8)).astype("int32"))
    ).batch(4)
    bn = network.get_layer("bn")
    run_stage(model, data, 1, "before", verbose=0)
    mean, gamma = bn.moving_mean.numpy().copy(), bn.gamma.numpy().copy()
    assert freeze_batchnorm(network) == 1
    model.train_function = None
    run_stage(model, data, 1, "frozen", verbose=0)
    np.testing.assert_array_equal(bn.moving_mean.numpy(), mean)  # statistics frozen
    assert not np.allclose(bn.gamma.numpy(), gamma)  # scale still trained
    assert model.traces["train_step"] == 2


# --- tfnas train: errors --------------------------------------------------------------------
@pytest.fixture(scope="module")
def segmentation_search(tmp_path_factory):
    return write_search(
        str(tmp_path_factory.mktemp("search") / "run"), "auxcell", "arch0", SEGMENTATION_CLI, num_classes=3
    )


def test_bad_input_gives_one_clear_error(segmentation_search, tmp_path, capsys):
    with pytest.raises(UsageError, match=r"--trial '7' is not a trial of .*; its trials are \['00'\]"):
        run_train(args(segmentation_search, "--trial", "7"))
    with pytest.raises(SystemExit) as exit_info:
        args(segmentation_search, "--epochs", "0")
    assert exit_info.value.code == 2 and "argument --epochs: 0 must be at least 1" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    with pytest.raises(
        UsageError, match="holds no search \\(no run.json\\); give the folder of tfnas search --out"
    ):
        run_train(args(str(tmp_path / "empty")))
    with pytest.raises(UsageError, match="is not a folder"):
        run_train(args(str(tmp_path / "missing")))
    python_only = str(tmp_path / "python")
    write_search(python_only, "dpc", "top1_cityscapes", None, num_classes=3)
    with pytest.raises(
        UsageError, match="searched from Python .* train it from Python: tfnas.training.full.train"
    ):
        run_train(args(python_only))
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="already holds files"):
        run_train(args(segmentation_search, "--out", str(tmp_path / "taken")))
    with pytest.raises(UsageError, match="holds a search, not a training"):
        run_train(args(segmentation_search, "--out", segmentation_search))


def test_from_scratch_draws_a_new_decoder_on_the_search_encoder(tmp_path):
    source = SearchDir(write_search(str(tmp_path / "run"), "dpc", "top1_cityscapes", None, num_classes=3))
    trained, metadata = source.load_trial_model("00")
    fresh = _reinitialised(source, trained, metadata["hyperparameters"], seed=1)
    same = lambda a, b: all(np.array_equal(x, y) for x, y in zip(a.get_weights(), b.get_weights()))
    assert same(
        fresh.get_layer("encoder"), trained.get_layer("encoder")
    )  # no encoder.weights.h5: the trial's
    assert not same(fresh.get_layer("decoder"), trained.get_layer("decoder"))
    search_encoder = source.space(
        encoder_weights=None
    ).build_encoder()  # what the search's trials started from
    search_encoder.save_weights(source.encoder_weights)
    fresh = _reinitialised(source, trained, metadata["hyperparameters"], seed=1)
    assert same(fresh.get_layer("encoder"), search_encoder)
    assert not same(fresh.get_layer("encoder"), trained.get_layer("encoder"))


def test_train_refuses_a_used_directory_and_data_without_validation(tmp_path):
    space = get_space("dpc")(num_classes=3, width=8, alpha=0.35)
    model = space.build_genotype("top1_cityscapes")
    images = np.zeros((4, 32, 32, 3), np.uint8)
    masks = np.zeros((4, 32, 32), np.int32)
    with pytest.raises(ValueError, match="needs validation data"):
        train(model, space.task, (images, masks), None, str(tmp_path))
    with pytest.raises(ValueError, match="class map has label 7"):
        train(model, space.task, (images, masks + 7), (images, masks), str(tmp_path))
    os.makedirs(tmp_path / "checkpoint")
    (tmp_path / "checkpoint" / "state.json").write_text('{"epoch": 2}')
    with pytest.raises(ValueError, match="holds a training checkpoint \\(epoch 2\\); pass resume=True"):
        train(model, space.task, (images, masks), (images, masks), str(tmp_path), TrainSettings(epochs=1))


# --- tfnas train: a segmentation run end to end ---------------------------------------------
@pytest.fixture(scope="module")
def trained_segmentation(segmentation_search, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("full") / "out")
    argv = ["--epochs", str(EPOCHS), "--batch-size", "8", "--out", out]
    printed = _capture(lambda: run_train(args(segmentation_search, *argv)))
    return segmentation_search, out, printed


def _capture(function):
    import contextlib
    import io

    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer):
        assert function() == 0
    return buffer.getvalue()


@pytest.mark.slow
def test_train_lowers_the_loss_and_writes_checkpoints_tensorboard_and_exportable_weights(
    trained_segmentation,
):
    source, out, printed = trained_segmentation
    directory = os.path.join(out, "trial_00")
    state = json.load(open(os.path.join(directory, "checkpoint", "state.json")))
    history = state["history"]
    assert state["epoch"] == EPOCHS and [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["loss"] < history[0]["loss"]
    # aux weights and rates of the recipe stretched to 3 epochs (stage starts at epochs 0, 1, 2)
    assert [h["aux_weight"] for h in history] == pytest.approx([0.3, 0.25, 0.2])
    assert [h["learning_rate"]["decoder"] for h in history] == pytest.approx([3e-3, 1.5e-3, 7.5e-4])
    assert sorted(os.listdir(os.path.join(directory, "checkpoint"))) == ["epoch_0003", "state.json"]
    assert sorted(os.listdir(os.path.join(directory, "checkpoint", "epoch_0003"))) == [
        "network.weights.h5",
        "optimizer.npz",
    ]
    lines = [line for line in printed.splitlines() if line.startswith("epoch ")]
    assert len(lines) == EPOCHS and lines[0].startswith("epoch 1/3  loss ") and "mIoU" in lines[0]
    assert "~" in lines[0] and "left" in lines[0] and "left" not in lines[-1]
    assert f"next: tfnas export {out}" in printed
    train_events = events(os.path.join(directory, "tensorboard", "train"))
    val_events = events(os.path.join(directory, "tensorboard", "validation"))
    assert {"loss", "aux_loss", "learning_rate/encoder", "learning_rate/decoder", "aux_weight"} <= set(
        train_events
    )
    assert {"reward", "miou", "fwiou", "mean_accuracy"} <= set(val_events)
    assert [step for step, _ in val_events["miou"]] == [1, 2, 3]
    assert val_events["miou"][-1][1] == pytest.approx(history[-1]["val"]["miou"])
    # the output is a one-trial search directory: what tfnas export loads
    run = json.load(open(os.path.join(out, "run.json")))
    assert run["space"] == "auxcell" and run["full_training"]["trial"] == "00"
    assert run["full_training"]["settings"]["epochs"] == EPOCHS
    assert "Nekrasov et al. (CVPR 2019), Sec. 4.4" in run["full_training"]["recipe"]
    model, metadata = SearchDir(out).load_trial_model("best")
    assert metadata["trial_id"] == "00" and metadata["score"] == pytest.approx(history[-1]["val"]["reward"])
    assert metadata["metrics"]["miou"] == pytest.approx(history[-1]["val"]["miou"])
    assert metadata["metrics"]["proxy_reward"] == 0.25 and metadata["metrics"]["params"] == 1234.0
    # the same architecture: its files load into `model` (as load_trial_model("00") would
    # load the proxy's, without building the network a second time)
    final = model.get_weights()
    model.load_weights(SearchDir(source).trial_weights("00"))
    assert any(not np.array_equal(a, b) for a, b in zip(final, model.get_weights()))  # trained
    model.load_weights(os.path.join(directory, "checkpoint", "epoch_0003", "network.weights.h5"))
    for got, want in zip(final, model.get_weights()):  # the final weights are the last epoch's
        np.testing.assert_array_equal(got, want)
    # done: resuming again trains nothing more
    again = _capture(lambda: run_train(args(source, "--out", out, "--resume")))
    assert "resuming after epoch 3/3" in again and not any(
        line.startswith("epoch ") for line in again.splitlines()
    )


# --- killed with SIGKILL and resumed ----------------------------------------------------------
SCRIPT = textwrap.dedent('''
    """Test-only: `tfnas train`, SIGKILLed right after the n-th weights file it writes (TFNAS_KILL_AT)."""
    import os
    import signal
    import sys

    import keras

    nth, calls = int(os.environ.get("TFNAS_KILL_AT", "0")), [0]
    save_weights = keras.Model.save_weights

    def killing_save_weights(self, filepath, *args, **kwargs):
        save_weights(self, filepath, *args, **kwargs)
        calls[0] += 1
        if calls[0] == nth:  # this epoch's weights are written, its state.json is not
            os.kill(os.getpid(), signal.SIGKILL)

    keras.Model.save_weights = killing_save_weights

    from tfnas.cli.options import Parser
    from tfnas.training.train_cli import register

    parser = Parser(prog="tfnas")
    register(parser.add_subparsers(dest="command", parser_class=Parser))
    args = parser.parse_args(sys.argv[1:])
    sys.exit(args.func(args))
''')


def _train_process(tmp_path, argv, kill_at):
    script = tmp_path / "train_script.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TFNAS_KILL_AT": str(kill_at)}
    done = subprocess.run(
        [sys.executable, str(script), "train", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    return done.returncode, done.stdout + done.stderr


@pytest.fixture(scope="module")
def depth_search(tmp_path_factory):
    return write_search(
        str(tmp_path_factory.mktemp("depth") / "run"), "dpc", "top1_cityscapes", DEPTH_CLI, task="depth"
    )


@pytest.mark.slow
def test_depth_training_killed_mid_run_resumes_to_the_uninterrupted_result(depth_search, tmp_path):
    argv = ["--epochs", str(EPOCHS), "--batch-size", "8"]
    # uninterrupted, in this process
    reference = str(tmp_path / "reference")
    printed = _capture(lambda: run_train(args(depth_search, *argv, "--out", reference)))
    assert "epoch 3/3" in printed and "RMSE" in printed
    want = json.load(open(os.path.join(reference, "trial_00", "checkpoint", "state.json")))
    assert want["settings"]["scale_range"] == [0.5, 2.0] and want["settings"]["crop_size"] == [32, 32]
    assert {"rmse", "abs_rel", "delta1", "reward"} <= set(want["history"][-1]["val"])
    assert want["history"][-1]["loss"] < want["history"][0]["loss"]
    # killed right after epoch 2's weights were written (before its state.json), then resumed
    out = str(tmp_path / "killed")
    code, output = _train_process(tmp_path, [depth_search, *argv, "--out", out], kill_at=2)
    assert code == -9, output[-3000:]
    state = json.load(open(os.path.join(out, "trial_00", "checkpoint", "state.json")))
    assert state["epoch"] == 1 and os.path.isdir(os.path.join(out, "trial_00", "checkpoint", "epoch_0002"))
    code, output = _train_process(tmp_path, [depth_search, *argv, "--out", out, "--resume"], kill_at=0)
    assert code == 0, output[-3000:]
    lines = output.splitlines()
    assert "resuming after epoch 1/3" in output and not any(line.startswith("epoch 1/3") for line in lines)
    assert any(line.startswith("epoch 2/3") for line in lines)
    got = json.load(open(os.path.join(out, "trial_00", "checkpoint", "state.json")))
    assert got["epoch"] == want["epoch"] == EPOCHS and len(got["history"]) == len(want["history"]) == EPOCHS
    assert sorted(os.listdir(os.path.join(out, "trial_00", "checkpoint"))) == ["epoch_0003", "state.json"]
    for resumed, uninterrupted in zip(got["history"], want["history"]):
        assert resumed["loss"] == pytest.approx(uninterrupted["loss"], rel=1e-6)
        assert resumed["val"]["rmse"] == pytest.approx(uninterrupted["val"]["rmse"], rel=1e-6)
    assert SearchDir(out).trials()["00"]["status"] == "COMPLETED"


def test_parser_documents_every_option_with_its_default():
    top = parser()
    (train_parser,) = [a.choices["train"] for a in top._subparsers._group_actions]  # noqa: SLF001
    text = " ".join(train_parser.format_help().split())
    for option in (
        "--trial TRIAL",
        "(default: best)",
        "--epochs EPOCHS",
        "180 for segmentation",
        "--batch-size",
    ):
        assert option in text
    for option in ("--out OUT", "RUN_DIR/full_<trial id>", "--resume", "--from-scratch"):
        assert option in text
    parsed = args("runs/x")
    assert (parsed.trial, parsed.epochs, parsed.out, parsed.resume, parsed.func) == (
        "best",
        None,
        None,
        False,
        run_train,
    )
