"""The options of `tfnas search` and `tfnas demo`, and the argument types of every subcommand.

`Parser` is the `argparse.ArgumentParser` of the command (an argument error is one line,
exit status 2); `positive_int` and the other types check a value as it is parsed;
`add_search_options` adds the search's options (`DEMO`: the demo's defaults), and
`PROTOCOL_FLAGS` are the proxy flags that override the space's paper's protocol when given.
The spaces, tasks and oracles they list are imported when a parser is built, so that
`import tfnas.cli` stays free of TensorFlow.
"""

import argparse

#: Settings of `tfnas demo`: small enough for a laptop CPU.
#: Three digit classes at 48x48 with large digits, on the 0.35-width MobileNetV2 shipped
#: pretrained on digit scenes (`tfnas.pretrained`), so the search needs no warm-up.
DEMO = {
    "space": "auxcell",
    "oracle": "ppo",
    "trials": 4,
    "image_size": 48,
    "scenes": 512,
    "digits": "017",
    "min_digit_size": 16,
    "max_digit_size": 32,
    "width": 16,
    "alpha": 0.35,
    "stage1_epochs": 5,
    "stage2_epochs": 1,
    "cache_images": 512,
    "batch_size": 16,
    "latency_runs": 10,
}


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr, exit status 2."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _int_at_least(minimum, words):
    """An argparse type: an integer >= `minimum`, or an error saying `words`."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be {words}")
        return value

    return parse


#: argparse types: an integer >= 1 (`positive_int`, also used by `tfnas train` and
#: `tfnas rerank`), an integer >= 0.
positive_int = _int_at_least(1, "at least 1")
_non_negative_int = _int_at_least(0, "0 or more")


def _positive_float(text):
    """An argparse type: a float > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be a positive number")
    return value


def _non_negative_float(text):
    """An argparse type: a float >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"{text} must be a number >= 0")
    return value


def _class_list(text):
    """An argparse type for --omit: comma-separated class indices (`0,3`), or `none`."""
    if text.strip().lower() == "none":
        return []
    try:
        classes = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of class indices (e.g. 0 or 0,3) or 'none'"
        ) from None
    negative = [c for c in classes if c < 0]
    if negative:
        raise argparse.ArgumentTypeError(f"{text!r} lists class {negative[0]}; class indices start at 0")
    return classes


def _column_list(text):
    """An argparse type for --eel-columns: comma-separated 1-based columns (`4,7`), or `none`."""
    if text.strip().lower() == "none":
        return []
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a comma-separated list of columns (e.g. 4,7) or 'none'"
        ) from None


class _Given(argparse.Action):
    """Stores a proxy flag's value and records that it was given (`args.given`): the search's
    proxy protocol (its space's paper's) keeps every value the user did not set."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)
        namespace.given = sorted({*(getattr(namespace, "given", None) or []), self.dest})


#: `tfnas search` flags whose value, when given, overrides the search's proxy protocol,
#: and the `ProxySettings` field each sets (`--no-termination` sets `termination=False`).
PROTOCOL_FLAGS = {
    "stage1_epochs": "stage1_epochs",
    "stage2_epochs": "stage2_epochs",
    "batch_size": "batch_size",
    "no_termination": "termination",
    "encoder_optimizer": "encoder_optimizer",
    "encoder_lr": "encoder_learning_rate",
    "decoder_optimizer": "decoder_optimizer",
    "decoder_lr": "decoder_learning_rate",
    "lr_schedule": "learning_rate_schedule",
    "aux_weight": "aux_weight",
}


def _protocol_values(field):
    """`"cvpr2019 5, wacv2020 5, dpc2018 81"`: a setting's value in each proxy protocol."""
    from tfnas.training.proxy import PROTOCOLS, ProxySettings

    return ", ".join(f"{name} {getattr(ProxySettings.for_protocol(name), field)}" for name in PROTOCOLS)


def add_search_options(parser, demo=False):
    """Adds the options of `tfnas search` to `parser`; `demo=True`: those of `tfnas demo`,
    with `DEMO`'s defaults (its proxy settings fixed: they override the protocol)."""
    from tfnas.spaces import SPACES
    from tfnas.tasks import TASKS
    from tfnas.tuners.oracles import ORACLES

    d = DEMO if demo else {}
    add = parser.add_argument
    add(
        "--out",
        default=None if demo else "runs/search",
        help="search directory (the keras-tuner project dir); "
        + ("default: a new temporary folder" if demo else "must be new or empty unless --resume"),
    )
    add("--resume", action="store_true", help="continue the stopped search in --out, with its saved settings")
    add("--space", default=d.get("space", "auxcell"), help=f"search space, one of {sorted(SPACES)}")
    add(
        "--oracle",
        default=d.get("oracle"),
        help=f"search strategy, one of {sorted(ORACLES)}; default: the space's DEFAULT_ORACLE (ppo for auxcell)",
    )
    add("--trials", type=positive_int, default=d.get("trials", 20), help="number of architectures to try")
    add("--seed", type=int, default=0, help="seed of the oracle, data split, weights and termination")
    add(
        "--task",
        default="segmentation",
        help=f"what the network predicts, one of {sorted(TASKS)}: the head, loss, metrics and reward",
    )
    data = parser.add_argument_group(
        "data (default: the task's built-in data: digit scenes, depth scenes, figure crops or scenes)"
    )
    data.add_argument(
        "--images", default=None, help="folder of training images (with --masks, --num-classes)"
    )
    data.add_argument("--masks", default=None, help="folder of .png class-index masks named like the images")
    data.add_argument(
        "--val-images", default=None, help="folder of meta-val images (default: hold out --val-fraction)"
    )
    data.add_argument("--val-masks", default=None, help="folder of meta-val masks")
    data.add_argument(
        "--depths", default=None, help="--task depth: folder of 16-bit .png depth maps named like --images"
    )
    data.add_argument("--val-depths", default=None, help="--task depth: folder of meta-val depth maps")
    data.add_argument(
        "--depth-scale",
        type=float,
        default=0.001,
        help="--task depth: metres per raw depth unit (0.001: millimetres, NYUDv2/Kinect); 0 marks missing",
    )
    data.add_argument(
        "--keypoints", default=None, help="--task pose-multi: COCO keypoints JSON of the --images folder"
    )
    data.add_argument(
        "--val-keypoints", default=None, help="--task pose-multi: COCO keypoints JSON of --val-images"
    )
    data.add_argument("--tfds", default=None, help="TensorFlow Datasets name, e.g. oxford_iiit_pet")
    data.add_argument("--tfds-split", default="train", help="TFDS split to search on")
    data.add_argument(
        "--label-offset",
        type=int,
        default=0,
        help="subtracted from TFDS labels (1 for oxford_iiit_pet trimaps)",
    )
    data.add_argument(
        "--num-classes",
        type=positive_int,
        default=None,
        help="number of classes of --images/--tfds data (11 for the built-in data)",
    )
    data.add_argument(
        "--scenes",
        type=positive_int,
        default=d.get("scenes", 512),
        help="number of built-in scenes (or crops)",
    )
    data.add_argument(
        "--digits",
        default=d.get("digits"),
        help="built-in data: which digits to draw, e.g. 017 (3 digit classes + background); default: all ten",
    )
    data.add_argument(
        "--min-digit-size",
        type=positive_int,
        default=d.get("min_digit_size"),
        help="built-in data: smallest digit side in pixels; default: min(10, max)",
    )
    data.add_argument(
        "--max-digit-size",
        type=positive_int,
        default=d.get("max_digit_size"),
        help="built-in data: largest digit side in pixels; default: half the image side",
    )
    data.add_argument(
        "--image-size",
        type=positive_int,
        default=d.get("image_size", 64),
        help="images are resized to this square size",
    )
    data.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="share of the training data held out as meta-val when no validation data is given",
    )
    model = parser.add_argument_group("network")
    model.add_argument(
        "--width",
        type=positive_int,
        default=d.get("width"),
        help="decoder channels; default: the space's (48 for auxcell)",
    )
    model.add_argument(
        "--alpha",
        type=float,
        default=d.get("alpha"),
        help="MobileNetV2 width multiplier; default: the space's (1.0)",
    )
    model.add_argument(
        "--encoder-weights",
        default=None,
        help="pretrained encoder weights file (or 'imagenet' when online, or 'none'); default: "
        "the shipped digit-scenes encoder on the built-in segmentation data with --alpha 0.35, "
        "else none and the encoder is warmed up on the search data",
    )
    from tfnas.tasks.segmentation import REWARD_METRICS
    from tfnas.training.polyak import OPTIMIZERS
    from tfnas.training.proxy import LEARNING_RATE_SCHEDULES, PROTOCOLS

    proxy = parser.add_argument_group(
        "proxy training (Nekrasov et al., CVPR 2019, Sec. 3.2): its defaults are the --space's "
        "paper's protocol (--protocol); a flag changes its own value only. Shown: "
        + ("tfnas demo's" if demo else "auxcell's (cvpr2019)")
    )
    parser.set_defaults(given=[key for key in PROTOCOL_FLAGS if key in d])  # the demo's are fixed
    proxy.add_argument(
        "--protocol",
        choices=sorted(PROTOCOLS),
        default=None,
        help="proxy protocol of a paper; default: the --space's (auxcell cvpr2019, template "
        "wacv2020, dpc dpc2018)",
    )
    proxy.add_argument(
        "--stage1-epochs",
        type=positive_int,
        action=_Given,
        default=d.get("stage1_epochs", 5),
        help=f"decoder epochs on cached encoder outputs (by protocol: {_protocol_values('stage1_epochs')})",
    )
    proxy.add_argument(
        "--stage2-epochs",
        type=_non_negative_int,
        action=_Given,
        default=d.get("stage2_epochs", 1),
        help=f"end-to-end epochs, 0 skips stage 2 (by protocol: {_protocol_values('stage2_epochs')})",
    )
    proxy.add_argument(
        "--batch-size",
        type=positive_int,
        action=_Given,
        default=d.get("batch_size", 16),
        help=f"batch size (by protocol: {_protocol_values('batch_size')})",
    )
    proxy.add_argument(
        "--encoder-optimizer",
        choices=OPTIMIZERS,
        action=_Given,
        default="sgd",
        help=f"optimizer of the encoder in stage 2 (by protocol: {_protocol_values('encoder_optimizer')})",
    )
    proxy.add_argument(
        "--encoder-lr",
        type=_positive_float,
        action=_Given,
        default=1e-3,
        help=f"learning rate of the encoder in stage 2 (by protocol: {_protocol_values('encoder_learning_rate')})",
    )
    proxy.add_argument(
        "--decoder-optimizer",
        choices=OPTIMIZERS,
        action=_Given,
        default="adam",
        help=f"optimizer of the decoder (by protocol: {_protocol_values('decoder_optimizer')})",
    )
    proxy.add_argument(
        "--decoder-lr",
        type=_positive_float,
        action=_Given,
        default=3e-3,
        help=f"learning rate of the decoder (by protocol: {_protocol_values('decoder_learning_rate')})",
    )
    proxy.add_argument(
        "--lr-schedule",
        choices=LEARNING_RATE_SCHEDULES,
        action=_Given,
        default="constant",
        help="learning rates per stage: constant, or poly (decayed to 0 over the stage, power 0.9) "
        f"(by protocol: {_protocol_values('learning_rate_schedule')})",
    )
    proxy.add_argument(
        "--aux-weight",
        type=_non_negative_float,
        action=_Given,
        default=0.15,
        help="weight of each auxiliary output's loss (auxiliary cells, early exits) "
        f"(by protocol: {_protocol_values('aux_weight')}; --oracle gumbel: 1.0, the thesis')",
    )
    proxy.add_argument(
        "--reward-metric",
        choices=sorted(REWARD_METRICS),
        default=None,
        help="segmentation reward: geometric_mean (of mIoU, fwIoU, mean accuracy) or miou; "
        "default: the --space's (miou for dpc, else geometric_mean)",
    )
    proxy.add_argument(
        "--omit",
        type=_class_list,
        default=None,
        metavar="CLASSES",
        help="segmentation classes left out of the reward, e.g. 0 or 0,3, or 'none'; default: "
        "the --space's (0, the background, for auxcell; none for template and dpc)",
    )
    proxy.add_argument(
        "--cache-images",
        type=positive_int,
        default=d.get("cache_images", 4000),
        help="meta-train images whose encoder outputs are cached for stage 1",
    )
    proxy.add_argument(
        "--warmup-epochs",
        type=_non_negative_int,
        default=d.get("warmup_epochs"),
        help="encoder warm-up epochs; default: 10 without --encoder-weights, else 0",
    )
    proxy.add_argument(
        "--teacher",
        default="auto",
        help="distillation teacher: 'auto' (the warmed-up model), 'none', or a "
        "SavedModel folder / .keras file",
    )
    proxy.add_argument(
        "--no-termination",
        action=_Given,
        nargs=0,
        const=True,
        default=False,
        help="train every architecture through stage 2 (no early termination; the dpc "
        "space's protocol has none)",
    )
    proxy.add_argument(
        "--supernet",
        action="store_true",
        help="run every trial in one supernet of the space: its training steps are traced "
        "once per search instead of once per trial (auxcell and dpc spaces)",
    )
    proxy.add_argument(
        "--weight-sharing",
        action="store_true",
        help="with --supernet: trials start from the weights earlier trials trained "
        "(ENAS-style) instead of fresh ones",
    )
    proxy.add_argument(
        "--latency-runs",
        type=_non_negative_int,
        default=d.get("latency_runs", 10),
        help="timed forward passes per trial (0: no latency)",
    )
    fabric = parser.add_argument_group(
        "the 3M-Pose fabric space and its one-shot search, oracle gumbel (docs/fabric.md)"
    )
    fabric.add_argument("--rows", type=positive_int, default=None, help="fabric rows (scales); default 4")
    fabric.add_argument(
        "--columns", type=positive_int, default=None, help="fabric columns (layers); default 10"
    )
    fabric.add_argument(
        "--eel-columns",
        type=_column_list,
        default=None,
        help="columns with an early-escape layer, e.g. 4,7 (the default) or 'none'",
    )
    fabric.add_argument(
        "--stem-channels", type=positive_int, default=None, help="channels of the HRNet stem; default 64"
    )
    fabric.add_argument(
        "--stem-blocks", type=positive_int, default=None, help="bottlenecks of the HRNet stem; default 4"
    )
    fabric.add_argument(
        "--search-epochs",
        type=positive_int,
        default=None,
        help="--oracle gumbel: epochs of the supernet training; default the thesis' 35",
    )
    fabric.add_argument(
        "--search-batch-size",
        type=positive_int,
        default=None,
        help="--oracle gumbel: images per supernet update; default 8",
    )
    fabric.add_argument(
        "--inherit-weights",
        action="store_true",
        help="--oracle gumbel: derived architectures start their trials from the trained "
        "supernet's weights instead of fresh ones",
    )
    dist = parser.add_argument_group(
        "distributed search (keras-tuner's chief/worker mode; see docs/distributed.md)"
    )
    dist.add_argument(
        "--workers",
        type=positive_int,
        default=None,
        help="run a chief and this many workers on this machine (CPU threads split "
        "between them); default: one process",
    )
    dist.add_argument(
        "--chief-timeout",
        type=float,
        default=120.0,
        help="seconds a worker waits for the chief (KERASTUNER_ORACLE_IP/PORT) before it gives up",
    )
    parser.add_argument(
        "--keep-weights",
        type=positive_int,
        default=None,
        metavar="K",
        help="keep the trained weights of only the best K trials (and the running "
        "ones), so disk stays bounded; default: every trial's",
    )
    from tfnas.latency.cli import add_objective_options

    add_objective_options(parser)  # --latency-target, --latency-table, --madds-target, ...
    parser.add_argument("--top", type=positive_int, default=5, help="rows of the final table")
    parser.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=None,
        help="Keras progress output: 0 silent, 1 progress bar, 2 one line per epoch; "
        "default: 1 on a terminal, else 2",
    )
