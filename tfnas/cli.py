"""The `tfnas` command: `search` and `demo` here, `results` / `report` from tfnas.report,
`train` from tfnas.training, `export` / `convert` / `serve` from tfnas.serving.

    tfnas search --space auxcell --oracle ppo --trials 20 --out runs/voc \\
        --images data/images --masks data/masks --num-classes 21
    tfnas search --out runs/voc --resume        # continue a stopped search
    tfnas train runs/voc --trial best --epochs 40   # train the best found network fully
    tfnas demo                                  # a small search on the built-in data, a few CPU minutes

`search` runs `tfnas.tuners.NASTuner` (the two-stage proxy task of Nekrasov et al., CVPR
2019, Sec. 3.2) and prints a table of the best architectures. The search directory `--out`
is described in `tfnas.search_dir`; its `run.json` also keeps the command's arguments, so
`--resume` needs only `--out` (and may raise `--trials`).

One error policy for every subcommand (`main`): a bad argument prints one line and exits
with status 2; any other error (a missing file, a bad value found later, a missing package,
TensorRT absent) prints one line naming the value and what to do, and exits with status 1.
`--debug` shows the traceback instead.
"""

import argparse
import os
import sys
import tempfile

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


class UsageError(Exception):
    """A bad command-line value; reported on one line with exit status 2."""


#: Import names of optional or platform packages -> what to install for them.
_PACKAGES = {
    "tensorflow_serving": "pip install tensorflow-serving-api==2.21.0",
    "tf2onnx": "pip install tf2onnx==1.17.0",
    "onnx": "pip install onnx==1.23.2",
    "onnxruntime": "pip install onnxruntime==1.31.1",
    "tensorflow_datasets": "pip install tensorflow-datasets==4.9.10",
    "tensorrt": "TensorRT: it ships with JetPack on a Jetson (or pip install tensorrt on an NVIDIA GPU machine)",
    "pycuda": "pip install pycuda (on the machine with the NVIDIA GPU)",
    "grpc": "pip install grpcio",
}


class _Parser(argparse.ArgumentParser):
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


_positive_int = _int_at_least(1, "at least 1")
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
_PROTOCOL_FLAGS = {
    "stage1_epochs": "stage1_epochs",
    "stage2_epochs": "stage2_epochs",
    "batch_size": "batch_size",
    "no_termination": "termination",
    "encoder_optimizer": "encoder_optimizer",
    "encoder_lr": "encoder_learning_rate",
    "decoder_optimizer": "decoder_optimizer",
    "decoder_lr": "decoder_learning_rate",
    "lr_schedule": "learning_rate_schedule",
}


def _protocol_values(field):
    """`"cvpr2019 5, wacv2020 5, dpc2018 81"`: a setting's value in each proxy protocol."""
    from tfnas.training.proxy import PROTOCOLS, ProxySettings

    return ", ".join(f"{name} {getattr(ProxySettings.for_protocol(name), field)}" for name in PROTOCOLS)


def _add_search_options(parser, demo=False):
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
    add("--trials", type=_positive_int, default=d.get("trials", 20), help="number of architectures to try")
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
        type=_positive_int,
        default=None,
        help="number of classes of --images/--tfds data (11 for the built-in data)",
    )
    data.add_argument(
        "--scenes",
        type=_positive_int,
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
        type=_positive_int,
        default=d.get("min_digit_size"),
        help="built-in data: smallest digit side in pixels; default: min(10, max)",
    )
    data.add_argument(
        "--max-digit-size",
        type=_positive_int,
        default=d.get("max_digit_size"),
        help="built-in data: largest digit side in pixels; default: half the image side",
    )
    data.add_argument(
        "--image-size",
        type=_positive_int,
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
        type=_positive_int,
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
    parser.set_defaults(given=[key for key in _PROTOCOL_FLAGS if key in d])  # the demo's are fixed
    proxy.add_argument(
        "--protocol",
        choices=sorted(PROTOCOLS),
        default=None,
        help="proxy protocol of a paper; default: the --space's (auxcell cvpr2019, template "
        "wacv2020, dpc dpc2018)",
    )
    proxy.add_argument(
        "--stage1-epochs",
        type=_positive_int,
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
        type=_positive_int,
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
        type=_positive_int,
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
    fabric.add_argument("--rows", type=_positive_int, default=None, help="fabric rows (scales); default 4")
    fabric.add_argument(
        "--columns", type=_positive_int, default=None, help="fabric columns (layers); default 10"
    )
    fabric.add_argument(
        "--eel-columns",
        type=_column_list,
        default=None,
        help="columns with an early-escape layer, e.g. 4,7 (the default) or 'none'",
    )
    fabric.add_argument(
        "--stem-channels", type=_positive_int, default=None, help="channels of the HRNet stem; default 64"
    )
    fabric.add_argument(
        "--stem-blocks", type=_positive_int, default=None, help="bottlenecks of the HRNet stem; default 4"
    )
    fabric.add_argument(
        "--search-epochs",
        type=_positive_int,
        default=None,
        help="--oracle gumbel: epochs of the supernet training; default the thesis' 35",
    )
    fabric.add_argument(
        "--search-batch-size",
        type=_positive_int,
        default=None,
        help="--oracle gumbel: images per supernet update; default 8",
    )
    dist = parser.add_argument_group(
        "distributed search (keras-tuner's chief/worker mode; see docs/distributed.md)"
    )
    dist.add_argument(
        "--workers",
        type=_positive_int,
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
        type=_positive_int,
        default=None,
        metavar="K",
        help="keep the trained weights of only the best K trials (and the running "
        "ones), so disk stays bounded; default: every trial's",
    )
    from tfnas.latency.cli import add_objective_options

    add_objective_options(parser)  # --latency-target, --latency-table, --madds-target, ...
    parser.add_argument("--top", type=_positive_int, default=5, help="rows of the final table")
    parser.add_argument(
        "--verbose",
        type=int,
        choices=(0, 1, 2),
        default=None,
        help="Keras progress output: 0 silent, 1 progress bar, 2 one line per epoch; "
        "default: 1 on a terminal, else 2",
    )


def build_parser():
    """The `tfnas` argument parser with every subcommand.

    Returns:
        `argparse.ArgumentParser`.
    """
    fmt = argparse.ArgumentDefaultsHelpFormatter
    parser = _Parser(
        prog="tfnas",
        formatter_class=fmt,
        description="Neural architecture search for compact, fast segmentation "
        "networks, and their export to TF Serving and Jetson.",
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="show the full traceback of an error (also accepted after the subcommand)",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    search = subparsers.add_parser(
        "search",
        formatter_class=fmt,
        help="search for architectures (NASTuner)",
        description="Search a space with the two-stage proxy task and print the best architectures.",
    )
    _add_search_options(search)
    search.set_defaults(func=run_search)
    demo = subparsers.add_parser(
        "demo",
        formatter_class=fmt,
        help="a small search on the built-in data (a few CPU minutes)",
        description="A search small enough for a laptop CPU on 64x64 digit scenes; prints the "
        "table of the best architectures.",
    )
    _add_search_options(demo, demo=True)
    demo.set_defaults(func=run_search)
    from tfnas.report.cli import register as register_report

    register_report(subparsers)
    from tfnas.training.train_cli import register as register_train

    register_train(subparsers)
    from tfnas.latency.cli import register as register_latency

    register_latency(subparsers)
    from tfnas.training.rerank_cli import register as register_rerank

    register_rerank(subparsers)
    try:
        from tfnas.serving.cli import register
    except ImportError as err:
        message = (
            f"the export/convert/serve commands are unavailable: importing tfnas.serving.cli "
            f"failed ({err}); reinstall tfnas (pip install -e .)"
        )
        for name in ("export", "convert", "serve"):
            sub = subparsers.add_parser(name, help="unavailable: " + message)
            sub.set_defaults(func=lambda args, message=message: _unavailable(message))
    else:
        register(subparsers)
    return parser


def _unavailable(message):
    print(f"tfnas: error: {message}", file=sys.stderr)
    return 2


# --- search ---------------------------------------------------------------------------------
#: The fabric's flags and the `FabricSpace` argument each sets.
_FABRIC_FLAGS = {
    "rows": "rows",
    "columns": "columns",
    "eel_columns": "eel_columns",
    "stem_channels": "stem_channels",
    "stem_blocks": "stem_blocks",
}

_SAVED = (
    *_FABRIC_FLAGS,
    "search_epochs",
    "search_batch_size",
    "space",
    "oracle",
    "seed",
    "task",
    "images",
    "masks",
    "val_images",
    "val_masks",
    "depths",
    "val_depths",
    "depth_scale",
    "keypoints",
    "val_keypoints",
    "tfds",
    "tfds_split",
    "label_offset",
    "num_classes",
    "scenes",
    "digits",
    "min_digit_size",
    "max_digit_size",
    "image_size",
    "val_fraction",
    "width",
    "alpha",
    "encoder_weights",
    "stage1_epochs",
    "stage2_epochs",
    "batch_size",
    "cache_images",
    "warmup_epochs",
    "teacher",
    "no_termination",
    "supernet",
    "weight_sharing",
    "latency_runs",
    "keep_weights",
    "latency_table",  # the hardware-aware objective (tfnas.latency.cli)
    "latency_target",
    "latency_weight",
    "hard_constraint",
    "penalize_only_above",
    "madds_target",
    "protocol",
    "encoder_optimizer",
    "encoder_lr",
    "decoder_optimizer",
    "decoder_lr",
    "lr_schedule",
    "reward_metric",
    "omit",
    "given",
)


def _check_out(args, joining=False):
    """Checks `--out` and, with `--resume`, restores the search's saved arguments.

    Args:
        args: parsed arguments.
        joining: bool, a worker joining a distributed search: the chief's directory may
            already hold files.
    """
    from tfnas.search_dir import SearchDir

    out = args.out
    search_dir = SearchDir(out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise UsageError(f"--out {out!r} is a file; pick a directory")
    if args.resume:
        if not search_dir.has_run():
            raise UsageError(
                f"--resume: {out!r} holds no search (no run.json); drop --resume to start a new search there"
            )
        saved = search_dir.read_run().get("cli", {})
        trials = args.trials
        for key in _SAVED:
            if key in saved:
                setattr(args, key, saved[key])
        if "given" not in saved:  # a search from before the protocols applied every saved value
            args.given = [key for key in _PROTOCOL_FLAGS if key in saved]
        args.trials = trials if args.trials_given else saved.get("trials", trials)
    elif os.path.isdir(out) and os.listdir(out) and not joining:
        raise UsageError(
            f"--out {out!r} already holds files; pass --resume to continue that search "
            "or pick another directory"
        )


def _without_option(argv, option):
    """`argv` without `option` and its value (`--workers 2` or `--workers=2`)."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == option:
            skip = True
        elif not arg.startswith(option + "="):
            out.append(arg)
    return out


def _check_folders(*flags):
    for flag, path in flags:
        if path is not None and not (os.path.isdir(path) and os.access(path, os.R_OK | os.X_OK)):
            raise UsageError(f"{flag} {path!r} is not a readable folder")


def _load_data(args):
    """The search data of `args`: `(train, val or None, task)`."""
    if args.task == "segmentation":
        return _segmentation_data(args)
    from tfnas.tasks import get_task

    segmentation_only = [
        flag
        for flag, value in (
            ("--masks", args.masks),
            ("--val-masks", args.val_masks),
            ("--tfds", args.tfds),
            ("--num-classes", args.num_classes),
            ("--digits", args.digits),
            ("--min-digit-size", args.min_digit_size),
            ("--max-digit-size", args.max_digit_size),
        )
        if value is not None
    ]
    if segmentation_only:
        raise UsageError(
            f"{', '.join(segmentation_only)}: segmentation data, but --task is {args.task}; "
            "leave them out or search --task segmentation"
        )
    task = get_task(args.task)
    if args.task == "depth" and (args.images or args.depths):
        return (*_depth_data(args), task)
    if args.task == "pose-multi" and (args.images or args.keypoints):
        return (*_keypoint_data(args), task)
    if args.images:
        raise UsageError(
            "--task pose searches on the built-in figure crops; for your own data, crop one "
            "person per image and search from Python (tfnas.tasks.PoseTask.target_spec)"
        )
    train = task.builtin_data("train", image_size=args.image_size, num_samples=args.scenes, seed=args.seed)
    return train, None, task


def _depth_data(args):
    from tfnas import data

    if not (args.images and args.depths):
        raise UsageError("--task depth: --images needs --depths (e.g. --images nyu/rgb --depths nyu/depth)")
    if (args.val_images is None) != (args.val_depths is None):
        raise UsageError("--val-images and --val-depths go together")
    _check_folders(
        ("--images", args.images),
        ("--depths", args.depths),
        ("--val-images", args.val_images),
        ("--val-depths", args.val_depths),
    )
    load = lambda images, depths: data.image_depth_folder(
        images, depths, depth_scale=args.depth_scale, image_size=args.image_size
    )
    train = load(args.images, args.depths)
    return train, load(args.val_images, args.val_depths) if args.val_images else None


def _keypoint_data(args):
    from tfnas import data

    if not (args.images and args.keypoints):
        raise UsageError(
            "--task pose-multi: --images needs --keypoints (e.g. --images coco/val2017 "
            "--keypoints coco/person_keypoints_val2017.json)"
        )
    if (args.val_images is None) != (args.val_keypoints is None):
        raise UsageError("--val-images and --val-keypoints go together")
    _check_folders(("--images", args.images), ("--val-images", args.val_images))
    for flag, path in (("--keypoints", args.keypoints), ("--val-keypoints", args.val_keypoints)):
        if path is not None and not os.path.isfile(path):
            raise UsageError(f"{flag} {path!r} is not a file; give a COCO keypoints JSON")
    train = data.coco_keypoints(args.keypoints, args.images, image_size=args.image_size)
    val = None
    if args.val_images:
        # one padded people count for both, so meta-val batches like meta-train
        people = train.element_spec[1]["keypoints"].shape[0]
        val = data.coco_keypoints(
            args.val_keypoints, args.val_images, max_people=people, image_size=args.image_size
        )
    return train, val


def _segmentation_data(args):
    from tfnas import data
    from tfnas.tasks import get_task

    size = args.image_size
    other = [flag for flag, value in (("--depths", args.depths), ("--keypoints", args.keypoints)) if value]
    if other:
        raise UsageError(f"{', '.join(other)}: data of another task; add --task depth or --task pose-multi")
    if args.images or args.masks:
        if not (args.images and args.masks and args.num_classes):
            raise UsageError(
                "--images needs --masks and --num-classes (e.g. --images data/img "
                "--masks data/masks --num-classes 21)"
            )
        _check_folders(
            ("--images", args.images),
            ("--masks", args.masks),
            ("--val-images", args.val_images),
            ("--val-masks", args.val_masks),
        )
        train = data.image_mask_folder(args.images, args.masks, args.num_classes, image_size=size)
        val = None
        if args.val_images or args.val_masks:
            if not (args.val_images and args.val_masks):
                raise UsageError("--val-images and --val-masks go together")
            val = data.image_mask_folder(args.val_images, args.val_masks, args.num_classes, image_size=size)
        return train, val, get_task("segmentation", num_classes=args.num_classes)
    if args.tfds:
        if not args.num_classes:
            raise UsageError(f"--tfds {args.tfds} needs --num-classes")
        train = data.tfds_dataset(
            args.tfds,
            args.tfds_split,
            num_classes=args.num_classes,
            label_offset=args.label_offset,
            image_size=size,
        )
        return train, None, get_task("segmentation", num_classes=args.num_classes)
    digits = None
    if args.digits is not None:
        if not args.digits.isdigit():
            raise UsageError(f"--digits {args.digits!r} must list distinct digits, e.g. 017")
        digits = [int(c) for c in args.digits]
    classes = data.num_classes(digits)
    if args.num_classes not in (None, classes):
        raise UsageError(
            f"--num-classes {args.num_classes} does not match the built-in data "
            f"({classes} classes); drop it or give --images/--tfds"
        )
    train = data.digit_scenes(
        "train",
        size,
        num_scenes=args.scenes,
        seed=args.seed,
        digits=digits,
        min_digit_size=args.min_digit_size,
        max_digit_size=args.max_digit_size,
    )
    return train, None, get_task("segmentation", num_classes=classes)


def _pretrained_for_builtin_data(args, task, teacher):
    """The encoder weights and teacher of a search: the shipped ones where they fit (`tfnas.pretrained`).

    A segmentation search on the built-in digit scenes with MobileNetV2 of width 0.35 and no
    `--encoder-weights` starts from the shipped pretrained encoder (so it skips the warm-up)
    and, with `--teacher auto`, distils from the shipped teacher restricted to the search's
    digits. `--encoder-weights none` warms up from scratch instead. `args` is left as given,
    so that `--resume` decides the same way again.

    Returns:
        `(encoder_weights, teacher)`.
    """
    weights = args.encoder_weights
    if weights == "none":
        return None, teacher
    builtin = task.name == "segmentation" and not (args.images or args.tfds)
    if weights is not None or not builtin:
        return weights, teacher
    from tfnas import pretrained

    alpha = args.alpha if args.alpha is not None else _space_default(args.space, "alpha")
    path = pretrained.digits_encoder_weights(alpha)
    if path is None:
        return None, teacher
    if teacher == "auto":
        teacher = pretrained.digits_teacher([int(c) for c in args.digits] if args.digits else None)
    print(f"tfnas: built-in data: encoder pretrained on digit scenes ({path}); no warm-up")
    return path, teacher


def _space_default(space_name, key):
    """The default of a constructor argument of a space (e.g. its MobileNetV2 `alpha`)."""
    import inspect

    from tfnas.spaces import SPACES

    parameter = inspect.signature(SPACES[space_name]).parameters.get(key)
    return None if parameter is None else parameter.default


def _with_reward(args, task):
    """The task with `--omit` / `--reward-metric`: a segmentation task as a config dict
    holding the given ones only, so that the space's paper's reward (`SEGMENTATION_REWARD`)
    fills in the rest; another task as it is (neither flag applies to it)."""
    given = {key: getattr(args, key) for key in ("omit", "reward_metric") if getattr(args, key) is not None}
    if task.name != "segmentation":
        if given:
            flags = ", ".join("--" + key.replace("_", "-") for key in given)
            raise UsageError(f"{flags}: segmentation only; the {task.name} task has its own reward")
        return task
    config = {k: v for k, v in task.config().items() if k not in ("omit", "reward_metric")}
    return {"name": task.name, **config, **given}


def _build_space(args, task, encoder_weights=None):
    from tfnas.spaces import get_space

    kwargs = {"task": _with_reward(args, task)}
    for key in ("width", "alpha"):
        if getattr(args, key) is not None:
            kwargs[key] = getattr(args, key)
    if encoder_weights is not None:
        kwargs["encoder_weights"] = encoder_weights
    for key, argument in _FABRIC_FLAGS.items():
        if getattr(args, key, None) is not None:
            kwargs[argument] = getattr(args, key)
    return get_space(args.space)(**kwargs)


def _protocol_overrides(args):
    """The `ProxySettings` the given proxy flags set (`args.given`); the protocol keeps the rest."""
    overrides = {_PROTOCOL_FLAGS[key]: getattr(args, key) for key in args.given}
    if "termination" in overrides:
        overrides["termination"] = not overrides["termination"]
    return overrides


def _teacher(value):
    if value in (None, "none"):
        return None
    if value == "auto":
        return "auto"
    if not os.path.exists(value):
        raise UsageError(
            f"--teacher {value!r} does not exist; pass 'auto', 'none', a SavedModel folder or a .keras file"
        )
    return value


def _validate(args):
    from tfnas.spaces import SPACES
    from tfnas.tasks import TASKS
    from tfnas.tuners.oracles import ORACLES

    if args.space not in SPACES:
        raise UsageError(f"unknown space {args.space!r}; expected one of {sorted(SPACES)}")
    if args.task not in TASKS:
        raise UsageError(f"unknown task {args.task!r}; expected one of {sorted(TASKS)}")
    if args.oracle is not None and args.oracle not in ORACLES:
        raise UsageError(f"unknown oracle {args.oracle!r}; expected one of {sorted(ORACLES)}")
    if args.oracle == "gumbel" and args.space != "fabric":
        raise UsageError(
            f"--oracle gumbel is the one-shot search of the 3M-Pose fabric; got --space {args.space}, "
            "use --space fabric --task pose-multi (or another oracle)"
        )
    fabric_only = [f"--{key.replace('_', '-')}" for key in _FABRIC_FLAGS if getattr(args, key) is not None]
    if fabric_only and args.space != "fabric":
        raise UsageError(
            f"{', '.join(fabric_only)}: settings of the fabric; add --space fabric or leave them out"
        )
    gumbel_only = [
        f"--{key.replace('_', '-')}" for key in ("search_epochs", "search_batch_size") if getattr(args, key)
    ]
    if gumbel_only and args.oracle != "gumbel":
        raise UsageError(f"{', '.join(gumbel_only)}: settings of the one-shot search; add --oracle gumbel")
    if not 0.0 < args.val_fraction < 1.0:
        raise UsageError(f"--val-fraction {args.val_fraction} must be between 0 and 1")
    if args.supernet and not SPACES[args.space].supports_supernet():
        raise UsageError(f"--supernet: the {args.space} space has no supernet yet; leave --supernet out")
    if args.weight_sharing and not args.supernet:
        raise UsageError("--weight-sharing shares the weights of a supernet; add --supernet")


def run_search(args):
    """Runs `tfnas search` / `tfnas demo` from parsed arguments; returns the exit status.

    Raises:
        UsageError: for bad arguments (reported by `main`).
    """
    from tfnas import distributed

    if args.out is None:  # demo without --out
        args.out = tempfile.mkdtemp(prefix="tfnas-demo-")
    if args.workers:
        if distributed.role() is not None:
            raise UsageError(
                f"--workers starts its own chief and workers; drop it when {distributed.TUNER_ID} is set"
            )
        argv = _without_option(args.argv, "--workers")
        if args.command == "demo" and "--out" not in argv:
            argv += ["--out", args.out]
        return distributed.launch(argv, args.workers)
    role = distributed.role()
    _check_out(args, joining=role == "worker")
    _validate(args)
    from tfnas.latency.cli import objective_from_args

    try:
        objective = objective_from_args(args)
    except ValueError as err:
        raise UsageError(str(err)) from err
    teacher = _teacher(args.teacher)
    try:
        train, val, task = _load_data(args)
        encoder_weights, teacher = _pretrained_for_builtin_data(args, task, teacher)
        space = _build_space(args, task, encoder_weights)
    except (ValueError, FileNotFoundError, KeyError) as err:
        raise UsageError(str(err)) from err

    from tfnas.tuners import NASTuner, OneShotTuner, make_oracle

    oracle_name = args.oracle or getattr(space, "DEFAULT_ORACLE", "ppo")
    # the gumbel Oracle's trials are derived from a supernet its tuner trains first
    tuner_class = OneShotTuner if oracle_name == "gumbel" else NASTuner
    oracle = make_oracle(oracle_name, args.trials, seed=args.seed)
    out = os.path.abspath(args.out)
    cli = {key: getattr(args, key) for key in _SAVED}
    # flags not given leave the protocol's values: saved as None, so --resume leaves them too
    cli.update({key: None for key in _PROTOCOL_FLAGS if key not in args.given})
    cli.update(oracle=oracle_name, trials=args.trials)
    oneshot = {}
    if tuner_class is OneShotTuner:
        from tfnas.oneshot import SearchSettings

        oneshot = {"search_settings": SearchSettings(epochs=args.search_epochs or SearchSettings.epochs)}
        if args.search_batch_size:
            oneshot["search_batch_size"] = args.search_batch_size
    tuner = tuner_class(
        space,
        oracle=oracle,
        **oneshot,
        seed=args.seed,
        protocol=args.protocol,
        **_protocol_overrides(args),
        cache_images=args.cache_images,
        validation_fraction=args.val_fraction,
        warmup_epochs=args.warmup_epochs,
        teacher=teacher,
        latency_runs=args.latency_runs,
        supernet=args.supernet,
        weight_sharing=args.weight_sharing,
        keep_weights=args.keep_weights,
        hardware_objective=objective,
        verbose="auto" if args.verbose is None else args.verbose,
        metadata={"cli": cli},
        directory=os.path.dirname(out),
        project_name=os.path.basename(out),
    )
    if role == "worker":
        print(
            f"tfnas: worker {os.environ[distributed.TUNER_ID]} joining the chief at "
            f"{distributed.chief_address()} (search directory {out})",
            flush=True,
        )
        distributed.wait_for_chief(args.chief_timeout)
    elif role == "chief":
        print(
            f"tfnas: chief serving {oracle_name} for {args.trials} trial(s) of {args.space} at "
            f"{distributed.chief_address()}; start the workers with the same command "
            f"and {distributed.TUNER_ID}=tuner0, tuner1, ...",
            flush=True,
        )
    else:
        print(f"tfnas: searching {args.space} with {oracle_name} for {args.trials} trial(s) in {out}")
    if role != "worker":
        print(f"tfnas: proxy protocol {tuner.settings.describe_protocol()}")
        print(f"tfnas: reward = {space.task.reward_description}")
    tuner.search(train, validation_data=val)
    if role == "worker":
        print(f"tfnas: worker {os.environ[distributed.TUNER_ID]} done")
        return 0
    print()
    print(results_table(out, args.top))
    print(f"\nsearch directory: {out}  (export the best: tfnas export {out})")
    return 0


def results_table(search_dir, top=5):
    """The table `tfnas search` ends with: its best completed trials, as `tfnas results` shows them.

    Args:
        search_dir: str, the search directory.
        top: int, number of rows.

    Returns:
        str.
    """
    from tfnas.report.runs import load_run, task_name
    from tfnas.report.table import text_table, trial_rows
    from tfnas.tasks import TASKS

    run = load_run(search_dir)
    trials = run.trials
    failed = sum(t.status == "FAILED" for t in trials)
    rows, _ = trial_rows([t for t in trials if t.status == "COMPLETED"], sort="reward")
    rows = rows[: max(0, int(top))]
    task = task_name(run.run.get("space_config"))
    title = (
        f"best {len(rows)} of {len(trials)} trial(s) ({failed} failed); "
        f"reward = {run.run.get('reward_description') or TASKS[task].reward_description}"
    )
    return f"{title}\n{text_table(rows)}"


def describe_error(err):
    """One line for an error a command met: what went wrong and what to do.

    Args:
        err: the exception.

    Returns:
        str.
    """
    if isinstance(err, ModuleNotFoundError) and err.name:
        top = err.name.split(".")[0]
        what = _PACKAGES.get(top, f"pip install {top}")
        return f"the Python package {top!r} is not installed; install it: {what}"
    if isinstance(err, (ValueError, OSError, RuntimeError, ImportError)) or type(err).__module__.startswith(
        ("tfnas", "keras_tuner")
    ):
        return str(err) or type(err).__name__
    return (
        f"{type(err).__name__}: {err} (an internal error of tfnas: run the command again "
        "with --debug for the traceback, and report it)"
    )


def main(argv=None):
    """Entry point of the `tfnas` command.

    Args:
        argv: list of arguments (default `sys.argv[1:]`).

    Returns:
        int exit status: 0 on success, 1 for an error, 2 for bad arguments, 130 when
        interrupted.
    """
    # TensorFlow's C++ log lines (a CPU-only machine's "failed call to cuInit" among them)
    # are not for users of the command; TF_CPP_MIN_LOG_LEVEL=0 brings them back.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    argv = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    args.trials_given = "--trials" in argv or any(a.startswith("--trials=") for a in argv)
    args.argv = argv
    threads = os.environ.get("TFNAS_THREADS")  # set by `--workers` for each worker
    if threads:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(int(threads))
        tf.config.threading.set_inter_op_parallelism_threads(int(threads))
    try:
        return args.func(args)
    except UsageError as err:
        print(f"tfnas {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tfnas {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as err:
        if debug:
            raise
        print(f"tfnas {args.command}: error: {describe_error(err)}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
