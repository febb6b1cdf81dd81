"""Each space's paper's proxy protocol and the segmentation reward's metric and omitted classes.

The stage tests run the real proxy task (`ProxyTask.prepare`, its stage models, `run_stage`,
`run_trial`) on a two-conv space that names each paper's protocol and reward, so that the
optimizers, schedules and batches the protocols ask for are checked where the stages use
them; the real spaces' protocols are checked where they are chosen (`ProxySettings.for_space`,
`NASTuner`, `tfnas search`).
"""

import json

import keras
import numpy as np
import pytest
from _cli import run_cli

from tfnas.data import digit_scenes
from tfnas.ops import ConvBN, ResizeLike
from tfnas.spaces import AuxCellSpace, DPCSpace, TemplateSpace
from tfnas.spaces.base import DecoderSpace
from tfnas.tasks import SegmentationTask, get_task
from tfnas.training import ProxySettings, ProxyTask, run_stage
from tfnas.training.proxy import PROTOCOLS
from tfnas.tuners import NASTuner

SIZE = 32


class TinySpace(DecoderSpace):
    """A real two-conv encoder and a one-decision decoder (a 1x1 or 3x3 conv), for fast stages."""

    def __init__(self, num_classes=11, width=4, **kwargs):
        super().__init__(num_classes, width, name="tiny", **kwargs)

    def build_encoder(self):
        inputs = keras.Input(self.input_shape, name="image")
        a = keras.layers.Conv2D(8, 3, strides=4, padding="same", name="enc_a")(inputs)
        a = keras.layers.BatchNormalization(name="enc_a_bn")(a)
        b = keras.layers.Conv2D(8, 3, strides=2, padding="same", activation="relu", name="enc_b")(a)
        model = keras.Model(inputs, [a, b], name="encoder")
        model.tap_strides = [4, 8]
        return model

    def declare_hyperparameters(self, hp):
        return {"kernel": hp.Choice("kernel", [1, 3])}

    def decoder_from_values(self, values, features, strides):
        x = ConvBN(self.width, values["kernel"], name="main")(features[0])
        x = keras.layers.Add(name="sum")([x, ResizeLike(name="up")([ConvBN(self.width, 1)(features[1]), x])])
        return {"logits": keras.layers.Conv2D(self.num_classes, 3, padding="same", name="logits")(x)}


class TinyTemplateSpace(TinySpace):
    PROXY_PROTOCOL, SEGMENTATION_REWARD = TemplateSpace.PROXY_PROTOCOL, TemplateSpace.SEGMENTATION_REWARD


class TinyDPCSpace(TinySpace):
    PROXY_PROTOCOL, SEGMENTATION_REWARD = DPCSpace.PROXY_PROTOCOL, DPCSpace.SEGMENTATION_REWARD


@pytest.fixture(scope="module")
def data():
    """12 meta-train and 4 meta-val digit scenes."""
    return digit_scenes("train", SIZE, num_scenes=12, seed=1), digit_scenes(
        "validation", SIZE, num_scenes=4, seed=1
    )


def _prepared(space, tmp_path, data, **overrides):
    settings = ProxySettings.for_space(space, warmup_epochs=0, latency_runs=0, **overrides)
    proxy = ProxyTask(space, str(tmp_path), settings, teacher=None, verbose=0)
    proxy.prepare(*data)
    return proxy


def _stage_models(proxy, kernel=1):
    space = proxy.trial_space
    encoder = space.build_encoder()
    encoder.set_weights(proxy.data.encoder_weights)
    decoder = space.build_decoder(space.hyperparameters({"kernel": kernel}), space.feature_specs(encoder))
    return proxy.stage1_model(decoder), proxy.stage2_model(encoder, decoder, space.assemble(encoder, decoder))


def _optimizers(model):
    """(class name, learning rate at step 0, Polyak decay or None) of each optimizer group."""
    result = []
    for group in model.groups:
        opt = group.optimizer
        rate = opt._learning_rate  # a float variable or a schedule
        rate = float(rate(0)) if callable(rate) else float(rate.numpy())
        result.append((type(opt).__name__, pytest.approx(rate), opt.ema_momentum if opt.use_ema else None))
    return result


# --- the protocols ---------------------------------------------------------------------------
def test_each_space_names_its_papers_protocol_and_overrides_change_one_value():
    assert ProxySettings.for_space(AuxCellSpace) == ProxySettings()  # CVPR 2019: the defaults
    wacv = ProxySettings.for_space(TemplateSpace(num_classes=19))
    assert wacv.protocol == "wacv2020"
    assert (wacv.stage1_epochs, wacv.stage2_epochs, wacv.batch_size) == (5, 5, 32)
    assert (wacv.encoder_optimizer, wacv.encoder_learning_rate) == ("adam", 7e-3)
    assert (wacv.decoder_optimizer, wacv.decoder_learning_rate) == ("adam", 7e-3)
    assert (wacv.stage1_polyak, wacv.stage2_polyak, wacv.distillation_weight, wacv.aux_weight) == (
        None,
        None,
        0,
        0,
    )
    dpc = ProxySettings.for_space(DPCSpace)
    assert (dpc.protocol, dpc.stage2_epochs, dpc.termination, dpc.distillation_weight) == (
        "dpc2018",
        0,
        False,
        0,
    )
    assert (dpc.decoder_optimizer, dpc.decoder_learning_rate, dpc.learning_rate_schedule) == (
        "sgd",
        0.01,
        "poly",
    )
    assert (dpc.batch_size, dpc.poly_power, dpc.stage1_epochs) == (8, 0.9, 81)

    changed = ProxySettings.for_space(TemplateSpace, batch_size=16)
    assert changed == ProxySettings.for_protocol("wacv2020", batch_size=16)
    assert [k for k, v in changed.to_json().items() if v != wacv.to_json()[k]] == ["batch_size"]
    assert changed.describe_protocol().endswith("; changed: batch_size=16")
    assert ProxySettings.for_space(TemplateSpace, protocol="cvpr2019") == ProxySettings()
    with pytest.raises(ValueError, match=r"protocol='iclr2030' is unknown"):
        ProxySettings.for_space(DPCSpace, protocol="iclr2030")
    with pytest.raises(ValueError, match=r"unknown proxy settings \['batchsize'\]"):
        ProxySettings.for_space(DPCSpace, batchsize=4)
    with pytest.raises(ValueError, match=r"encoder_optimizer='rmsprop'; expected one of \['adam', 'sgd'\]"):
        ProxySettings(encoder_optimizer="rmsprop")
    with pytest.raises(ValueError, match=r"learning_rate_schedule='cosine'"):
        ProxySettings(learning_rate_schedule="cosine")


def test_nas_tuner_takes_the_spaces_protocol_unless_told(tmp_path):
    space = TemplateSpace(num_classes=19, alpha=0.35)
    tuner = NASTuner(space, max_trials=1, directory=str(tmp_path), project_name="a", verbose=0)
    assert tuner.settings == ProxySettings.for_space(space, warmup_epochs=10)  # no pretrained encoder
    tuner = NASTuner(space, max_trials=1, batch_size=8, directory=str(tmp_path), project_name="b", verbose=0)
    assert (tuner.settings.protocol, tuner.settings.batch_size, tuner.settings.encoder_optimizer) == (
        "wacv2020",
        8,
        "adam",
    )
    given = ProxySettings(batch_size=8)  # a whole ProxySettings is used as it is
    tuner = NASTuner(
        space, max_trials=1, settings=given, directory=str(tmp_path), project_name="c", verbose=0
    )
    assert tuner.settings.protocol == "cvpr2019" and tuner.settings.encoder_optimizer == "sgd"


@pytest.mark.parametrize(
    "space_class, stage1, stage2, batch, distillation",
    [
        (TinySpace, [("Adam", 3e-3, 0.9)], [("SGD", 1e-3, 0.99), ("Adam", 3e-3, 0.99)], 12, 0.3),
        (TinyTemplateSpace, [("Adam", 7e-3, None)], [("Adam", 7e-3, None), ("Adam", 7e-3, None)], 12, 0.0),
        (TinyDPCSpace, [("SGD", 0.01, None)], [("SGD", 0.01, None), ("SGD", 0.01, None)], 8, 0.0),
    ],
)
def test_protocol_optimizers_and_batches_reach_the_stages(
    tmp_path, data, space_class, stage1, stage2, batch, distillation
):
    proxy = _prepared(space_class(), tmp_path, data)
    stage1_model, stage2_model = _stage_models(proxy)
    assert _optimizers(stage1_model) == stage1
    assert _optimizers(stage2_model) == stage2  # the encoder's first
    # 12 meta-train images: CVPR's 16 and WACV's 32 make one batch of all 12, DPC's 8 one of 8
    assert proxy.stage1_batches(0).element_spec[1].shape[0] == batch
    assert proxy.stage2_batches(0).element_spec[1].shape[0] == batch
    assert stage1_model.distillation_weight == distillation


def test_dpc_protocol_decays_polynomially_over_the_stage(tmp_path, data):
    proxy = _prepared(TinyDPCSpace(), tmp_path, data, stage1_epochs=4, batch_size=4)  # 3 steps an epoch
    stage1, _ = _stage_models(proxy)
    optimizer = stage1.groups[0].optimizer
    assert float(optimizer.learning_rate) == pytest.approx(0.01)
    run_stage(stage1, proxy.stage1_batches(0), 2, "stage 1", verbose=0)  # half the stage's 12 steps
    assert int(optimizer.iterations) == 6
    assert float(optimizer.learning_rate) == pytest.approx(0.01 * 0.5**0.9)
    run_stage(stage1, proxy.stage1_batches(1), 2, "stage 1", verbose=0)
    assert float(optimizer.learning_rate) == pytest.approx(0.0)


def test_dpc_protocol_trial_trains_no_encoder_and_rewards_miou(tmp_path, data):
    space = TinyDPCSpace()
    assert space.task.config()["omit"] == [] and space.task.reward_metric == "miou"
    proxy = _prepared(space, tmp_path, data, stage1_epochs=1)
    metrics, network = proxy.run_trial(space.hyperparameters({"kernel": 1}), "0")
    # no stage 2: the encoder keeps the search's weights, the reward is the stage-1 mIoU
    for trained, cached in zip(network.get_layer("encoder").get_weights(), proxy.data.encoder_weights):
        np.testing.assert_array_equal(trained, cached)
    assert metrics["terminated"] == 0.0
    assert metrics["reward"] == metrics["stage1_reward"] == metrics["miou"]


def test_protocols_without_distillation_cache_no_teacher(tmp_path, data):
    space = TinyTemplateSpace()
    settings = ProxySettings.for_space(space, warmup_epochs=1, latency_runs=0, batch_size=4)
    proxy = ProxyTask(space, str(tmp_path), settings, teacher="auto", verbose=0)  # "auto": the warmed model
    proxy.prepare(*data)
    assert proxy.data.distillation is False
    described = proxy.describe()
    assert described["teacher"] == "none (distillation_weight=0)"
    assert described["protocol"] == PROTOCOLS["wacv2020"]["source"]
    assert described["settings"]["protocol"] == "wacv2020"


# --- the reward --------------------------------------------------------------------------------
# Labels [0, 0, 0, 0, 1, 1, 2, 2] predicted as [1, 1, 1, 0, 1, 1, 2, 2]: class 0 is mostly missed.
LABELS = np.array([[[0, 0, 0, 0, 1, 1, 2, 2]]])
PREDICTED = np.array([[[1, 1, 1, 0, 1, 1, 2, 2]]])
# omit=(0,): IoU 1 = 2/5, IoU 2 = 1; mIoU 0.7, fwIoU (2 * 0.4 + 2 * 1) / 4 = 0.7, mean accuracy 1.
# omit=(): IoU 0 = 1/4; mIoU 1.65/3 = 0.55, fwIoU (4 * 0.25 + 2 * 0.4 + 2) / 8 = 0.475, mean accuracy 0.75.
EXPECTED = {
    ((0,), "geometric_mean"): (0.7 * 0.7 * 1.0) ** (1 / 3),
    ((0,), "miou"): 0.7,
    ((), "geometric_mean"): (0.55 * 0.475 * 0.75) ** (1 / 3),
    ((), "miou"): 0.55,
}


@pytest.mark.parametrize("omit, reward_metric", list(EXPECTED))
def test_reward_honours_omit_and_metric(omit, reward_metric):
    task = SegmentationTask(num_classes=3, omit=omit, reward_metric=reward_metric)
    metric = task.metric()
    metric.update_state(LABELS, np.eye(3, dtype="float32")[PREDICTED])
    scores = task.scores(metric)
    assert scores["reward"] == pytest.approx(EXPECTED[(omit, reward_metric)])
    assert task.reward(scores) == scores["reward"]
    # the task's config rebuilds it (resume, export), its description says both
    rebuilt = get_task("segmentation", **task.config())
    assert (rebuilt.omit, rebuilt.reward_metric) == (omit, reward_metric)
    words = {"geometric_mean": "geometric mean of mIoU", "miou": "mIoU ("}[reward_metric]
    left_out = "background left out" if omit else "every class counted"
    assert task.reward_description.startswith(words) and left_out in task.reward_description


def test_space_reward_defaults_yield_to_an_explicit_choice():
    assert (AuxCellSpace(num_classes=3).task.omit, AuxCellSpace(num_classes=3).task.reward_metric) == (
        (0,),
        "geometric_mean",
    )
    assert TemplateSpace(num_classes=3).task.omit == ()
    dpc = DPCSpace(num_classes=3)
    assert (dpc.task.omit, dpc.task.reward_metric) == ((), "miou")
    assert DPCSpace(**dpc.config()).task.config() == dpc.task.config()  # resume and export
    chosen = DPCSpace(task={"name": "segmentation", "num_classes": 3, "reward_metric": "geometric_mean"})
    assert (chosen.task.omit, chosen.task.reward_metric) == ((), "geometric_mean")
    assert DPCSpace(task=SegmentationTask(3, omit=(2,))).task.omit == (2,)  # a built task is used as is


def test_bad_reward_settings_name_the_value():
    with pytest.raises(
        ValueError, match=r"reward_metric='mean' is unknown; expected one of \['geometric_mean', 'miou'\]"
    ):
        SegmentationTask(3, reward_metric="mean")
    with pytest.raises(ValueError, match=r"omit lists class 3, but only classes 0..2 exist"):
        SegmentationTask(3, omit=(3,))
    with pytest.raises(ValueError, match=r"omit lists '0', which is not a class index"):
        SegmentationTask(3, omit="0")


# --- tfnas search ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "argv, message",
    [
        (["--omit", "road"], "argument --omit: 'road' is not a comma-separated list of class indices"),
        (["--omit", "0,-1"], "argument --omit: '0,-1' lists class -1"),
        (["--reward-metric", "mean"], "argument --reward-metric: invalid choice: 'mean'"),
        (["--omit", "12", "--scenes", "8"], "omit lists class 12, but only classes 0..10 exist"),
        (
            ["--task", "depth", "--reward-metric", "miou", "--scenes", "8"],
            "--reward-metric: segmentation only",
        ),
        (["--encoder-optimizer", "rmsprop"], "argument --encoder-optimizer: invalid choice: 'rmsprop'"),
        (["--aux-weight", "-1"], "argument --aux-weight: -1 must be a number >= 0"),
    ],
)
def test_bad_reward_and_protocol_flags_are_usage_errors(tmp_path, capsys, argv, message):
    assert run_cli(["search", "--out", str(tmp_path / "run")] + argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


@pytest.mark.slow  # a search on MobileNetV2 through the command (~30 s on 2 CPU cores)
def test_search_flags_override_the_protocol_in_run_json_and_resume_keeps_them(tmp_path, capsys):
    out = str(tmp_path / "run")
    argv = ["search", "--out", out, "--space", "dpc", "--trials", "1", "--image-size", "32", "--scenes", "12"]
    argv += [
        "--alpha",
        "0.35",
        "--width",
        "4",
        "--warmup-epochs",
        "0",
        "--latency-runs",
        "0",
        "--teacher",
        "none",
    ]
    argv += [
        "--stage1-epochs",
        "1",
        "--batch-size",
        "4",
        "--reward-metric",
        "geometric_mean",
        "--omit",
        "0,3",
        "--aux-weight",
        "0.5",
    ]
    assert run_cli(argv) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "proxy protocol dpc2018 (Chen et al., NeurIPS 2018" in printed
    assert "changed: stage1_epochs=1, batch_size=4" in printed and "aux_weight=0.5" in printed
    run = json.load(open(f"{out}/run.json"))
    settings = run["settings"]
    assert settings["protocol"] == "dpc2018" and (settings["stage1_epochs"], settings["batch_size"]) == (1, 4)
    assert settings["aux_weight"] == 0.5
    assert (settings["decoder_optimizer"], settings["learning_rate_schedule"], settings["stage2_epochs"]) == (
        "sgd",
        "poly",
        0,
    )
    task = run["space_config"]["task"]
    assert (task["omit"], task["reward_metric"]) == ([0, 3], "geometric_mean")
    assert (
        run["reward_description"] == "geometric mean of mIoU, fwIoU and mean accuracy (classes 0, 3 left out)"
    )
    assert run["cli"]["batch_size"] == 4 and run["cli"]["decoder_lr"] is None  # not given: the protocol's

    assert run_cli(["search", "--out", out, "--resume"]) == 0, capsys.readouterr().err
    resumed = json.load(open(f"{out}/run.json"))
    assert resumed["settings"] == settings and resumed["space_config"] == run["space_config"]
