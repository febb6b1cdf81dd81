"""`tfnas search` and `tfnas demo`: `run_search` and the table it ends with, `results_table`.

`run_search` checks `--out` (with `--resume`, restores the search's saved arguments,
`_SAVED`), validates the arguments, loads the data (`tfnas.cli.data`), builds the space and
runs `tfnas.tuners.NASTuner` (or `OneShotTuner` for `--oracle gumbel`); with `--workers` it
launches a chief and workers instead (`tfnas.distributed`).
"""

import os
import tempfile

from tfnas.cli.data import load_data, pretrained_for_builtin_data
from tfnas.cli.errors import UsageError
from tfnas.cli.options import PROTOCOL_FLAGS

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
    "inherit_weights",
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
    "aux_weight",
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
            args.given = [key for key in PROTOCOL_FLAGS if key in saved]
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
    overrides = {PROTOCOL_FLAGS[key]: getattr(args, key) for key in args.given}
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
        f"--{key.replace('_', '-')}"
        for key in ("search_epochs", "search_batch_size", "inherit_weights")
        if getattr(args, key)
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
        train, val, task = load_data(args)
        encoder_weights, teacher = pretrained_for_builtin_data(args, task, teacher)
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
    cli.update({key: None for key in PROTOCOL_FLAGS if key not in args.given})
    cli.update(oracle=oracle_name, trials=args.trials)
    oneshot = {}
    if tuner_class is OneShotTuner:
        from tfnas.oneshot import SearchSettings

        search = {"epochs": args.search_epochs or SearchSettings.epochs}
        if objective is not None and objective.table is not None:
            # the supernet's constraint becomes the table's latency against the target
            search["latency_target_ms"] = objective.target
            oneshot["search_latency_table"] = objective.table
        oneshot["search_settings"] = SearchSettings(**search)
        if args.search_batch_size:
            oneshot["search_batch_size"] = args.search_batch_size
        oneshot["inherit_weights"] = bool(args.inherit_weights)
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
