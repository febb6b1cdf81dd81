"""The `tfnas train` command: full training of a searched architecture (`tfnas.training.full`).

    tfnas train runs/voc                       # the best trial, its task's full recipe
    tfnas train runs/voc --trial 7 --epochs 40 --out runs/voc-arch7
    tfnas train runs/voc --resume              # continue a stopped training
    tfnas export runs/voc/full_7               # then export it like a search

The trial's model is rebuilt from the search directory with its proxy-trained weights
(`--from-scratch`: a freshly initialised decoder on the search's encoder), the search's data
are loaded again from the arguments `tfnas search` kept in `run.json` (`cli`), with the same
meta-train / meta-val split, and `tfnas.training.full.train` trains it.

The output folder (`--out`, default `RUN_DIR/full_<trial>`) is a one-trial search directory,
so `tfnas export`, `tfnas results` and `SearchDir` read it as they read a search:

    OUT/run.json                      the search's run.json, plus `full_training` (source
                                      search, trial, settings, recipe)
    OUT/trial_<id>/trial.json         the trial, COMPLETED once trained, with the validation
                                      scores of the full training as its metrics
    OUT/trial_<id>/model.weights.h5   the fully trained weights
    OUT/trial_<id>/checkpoint/        the per-epoch checkpoints (`--resume`)
    OUT/trial_<id>/tensorboard/       losses, learning rates and scores per epoch
"""

import copy
import os

from tfnas.search_dir import RUN_FILE, TRIAL_FILE, SearchDir

#: What `run.json` keeps about the full training.
FULL_TRAINING = "full_training"
#: Metrics of the search's trial that the full training keeps: the architecture's costs.
COSTS = ("params", "training_params", "madds", "latency_ms", "latency_std_ms")


def register(subparsers):
    """Adds the `train` subcommand to a `tfnas` argparse parser.

    Args:
        subparsers: the object returned by `parser.add_subparsers()`.

    Returns:
        the subcommand's `ArgumentParser` (its `func` is `run_train`).
    """
    from tfnas.cli.options import positive_int

    parser = subparsers.add_parser(
        "train",
        help="fully train a searched architecture (the paper's recipe of its task)",
        description="Train one trial of a search for as long as its paper says (Nekrasov et al., "
        "CVPR 2019, Sec. 4.4 and App. B for segmentation: three stages with the learning rates "
        "halved, batch norm frozen halfway through the last, auxiliary weights 0.3 to 0.15, "
        "random scale, flip and crop; the task's own recipe for depth and pose), stretched "
        "to --epochs, on the search's data. Writes a one-trial search directory that "
        "tfnas export reads.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR", help="search directory (tfnas search --out)")
    parser.add_argument(
        "--trial",
        default="best",
        help="trial id, 'best' = highest score among COMPLETED trials, or 'reranked' = the "
        "winner of tfnas rerank (default: best)",
    )
    parser.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help="epochs to train; the recipe's schedule is stretched to them (default: the "
        "recipe's: 180 for segmentation, 300 depth, 140 pose)",
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="batch size (default: the recipe's: 64 for segmentation, 32 depth, 128 pose)",
    )
    parser.add_argument("--out", default=None, help="output folder (default: RUN_DIR/full_<trial id>)")
    parser.add_argument(
        "--resume", action="store_true", help="continue the stopped training in --out from its last epoch"
    )
    parser.add_argument(
        "--from-scratch",
        action="store_true",
        help="start from a freshly initialised decoder on the search's encoder instead of the "
        "trial's proxy-trained weights",
    )
    parser.add_argument(
        "--no-augment",
        action="store_true",
        help="train without the recipe's augmentation: no flips, no random scale and crop, no "
        "rotation of keypoint data (default: augment as the recipe says)",
    )
    parser.add_argument(
        "--mixed-precision",
        choices=("mixed_float16", "mixed_bfloat16"),
        default=None,
        help="Keras dtype policy to train in on a GPU (mixed_float16 with loss scaling; "
        "mixed_bfloat16 from Ampere on, TPUs) (default: float32)",
    )
    parser.add_argument(
        "--verbose", type=int, choices=(0, 1), default=1, help="0: silent, 1: one line per epoch (default: 1)"
    )
    parser.set_defaults(func=run_train)
    return parser


def search_arguments(cli):
    """The parsed `tfnas search` arguments of a search, from its `run.json` `cli` entry.

    Options the search did not keep take `tfnas search`'s defaults.
    """
    from tfnas.cli import build_parser

    args = build_parser().parse_args(["search"])
    for key, value in cli.items():
        setattr(args, key, value)
    return args


def search_data(cli):
    """The training and validation data of a search, loaded again from its `run.json` `cli`.

    Without validation data of its own, the training data are split into meta-train and
    meta-val as the search split them (`--val-fraction`, `--seed`).

    Returns:
        (train, val) unbatched `tf.data.Dataset`s.

    Raises:
        UsageError: when the data cannot be loaded again.
    """
    from tfnas.cli import UsageError
    from tfnas.cli.data import load_data
    from tfnas.data import split

    args = search_arguments(cli)
    try:
        train_data, val_data, _ = load_data(args)
        if val_data is None:  # the search's meta-train / meta-val split
            seed = int(cli.get("seed") or 0)
            train_data, val_data = split(train_data, fraction=args.val_fraction, seed=seed)
    except (ValueError, FileNotFoundError, KeyError) as err:
        raise UsageError(f"loading the search's data again: {err}") from err
    return train_data, val_data


def _source(run_dir):
    from tfnas.cli import UsageError

    source = SearchDir(run_dir)
    if not os.path.isdir(source.path):
        raise UsageError(f"{run_dir!r} is not a folder; give the search directory of tfnas search --out")
    if not source.has_run():
        raise UsageError(
            f"{run_dir!r} holds no search (no {RUN_FILE}); give the folder of tfnas search --out"
        )
    return source


def _trial_id(source, trial):
    from tfnas.cli import UsageError

    try:
        if trial == "reranked":  # the winner of tfnas rerank
            from tfnas.training.rerank import reranked_trial_id

            trial_id = reranked_trial_id(source.path)
        else:
            trial_id = source.best_trial_id() if trial == "best" else str(trial)
    except ValueError as err:
        raise UsageError(str(err)) from None
    trials = source.trials()
    if trial_id not in trials:
        raise UsageError(
            f"--trial {trial_id!r} is not a trial of {source.path!r}; its trials are {sorted(trials)}"
        )
    return trial_id


def _previous(out, source, trial_id, resume):
    """The `full_training` entry of `out` when `--resume` continues it; None for a new folder."""
    from tfnas.cli import UsageError

    if os.path.exists(out.path) and not os.path.isdir(out.path):
        raise UsageError(f"--out {out.path!r} is a file; pick a folder")
    if not out.has_run():
        if os.path.isdir(out.path) and os.listdir(out.path):
            raise UsageError(f"--out {out.path!r} already holds files; pick another folder")
        return None  # new, or killed before it wrote anything: start from the beginning
    previous = out.read_run().get(FULL_TRAINING)
    if previous is None:
        raise UsageError(f"--out {out.path!r} holds a search, not a training; pick another folder")
    if not resume:
        raise UsageError(
            f"--out {out.path!r} already holds a training of trial {previous['trial']}; add "
            "--resume to continue it, or pick another --out"
        )
    if previous["source"] != os.path.abspath(source.path) or previous["trial"] != trial_id:
        raise UsageError(
            f"--out {out.path!r} holds the training of trial {previous['trial']} of "
            f"{previous['source']!r}, not of trial {trial_id} of {os.path.abspath(source.path)!r}"
        )
    return previous


def _reinitialised(source, trained, values, seed):
    """The architecture with a fresh decoder on the search's encoder (`--from-scratch`)."""
    import keras

    space = source.space(encoder_weights=None)
    keras.utils.set_random_seed(seed)
    model = space.build(space.hyperparameters(values))
    encoder = model.get_layer("encoder")
    if os.path.exists(source.encoder_weights):  # what every trial of the search started from
        encoder.load_weights(source.encoder_weights)
    else:
        encoder.set_weights(trained.get_layer("encoder").get_weights())
    return model


def _trial_state(source, trial_id, status, scores=None):
    """keras-tuner's `trial.json` of the full training: the search's trial with the full
    training's validation scores as its metrics and score, the architecture's costs
    (`COSTS`) and the proxy's reward (`proxy_reward`) kept from the search."""
    from keras_tuner.engine.trial import Trial

    from tfnas.io import read_json

    state = read_json(os.path.join(source.trial_dir(trial_id), TRIAL_FILE), "a keras-tuner trial file")
    trial = Trial.from_state(copy.deepcopy(state))
    values = {name: trial.metrics.get_last_value(name) for name in COSTS if trial.metrics.exists(name)}
    values["proxy_reward"] = state.get("score")
    values.update(scores or {})
    metrics = type(trial.metrics)()  # keras-tuner's MetricsTracker, empty
    for name, value in values.items():
        if value is None:
            continue
        if trial.metrics.exists(name):  # as the search recorded it
            metrics.register(name, trial.metrics.metrics[name].direction)
        else:  # keras-tuner infers known names; the rest are scores to maximise
            metrics.register(name, None if name in COSTS else "max")
        metrics.update(name, value)
    trial.metrics = metrics
    trial.status = status
    trial.score = (scores or {}).get("reward")
    trial.message = None
    return trial.get_state()


def run_train(args):
    """Handler of `tfnas train` (see the module docstring); returns the exit status.

    Raises:
        UsageError: for a bad search directory, trial or output folder (reported by
            `tfnas.cli.main`).
    """
    from tfnas.cli import UsageError
    from tfnas.io import atomic_write_json
    from tfnas.training.full import keypoint_augmentation, train
    from tfnas.training.recipes import TrainSettings, recipe

    source = _source(args.run_dir)
    run = source.read_run()
    cli = run.get("cli")
    if not cli:
        raise UsageError(
            f"{args.run_dir!r} was searched from Python ({RUN_FILE} keeps no tfnas search "
            "arguments), so tfnas train cannot load its data again; train it from Python: "
            "tfnas.training.full.train(model, task, train, val, directory), with the model from "
            "SearchDir(run_dir).load_trial_model(trial)"
        )
    trial_id = _trial_id(source, args.trial)
    out = SearchDir(args.out or os.path.join(source.path, f"full_{trial_id}"))
    previous = _previous(out, source, trial_id, args.resume)
    saved = (previous or {}).get("settings", {})
    seed = int(cli.get("seed") or 0)
    augment = not (args.no_augment or saved.get("augment") is False)  # a resume keeps it
    settings = TrainSettings(
        epochs=args.epochs or saved.get("epochs"),
        batch_size=args.batch_size or saved.get("batch_size"),
        flip=augment,
        scale=augment,
        seed=seed,
        mixed_precision=args.mixed_precision or saved.get("mixed_precision"),
    )
    from_scratch = bool(args.from_scratch or (previous or {}).get("from_scratch"))

    train_data, val_data = search_data(cli)
    task = source.space(encoder_weights=None).task
    with settings.scope():
        model, metadata = source.load_trial_model(trial_id)
        if from_scratch:
            model = _reinitialised(source, model, metadata["hyperparameters"], seed)
    resolved = settings.resolve(task)
    affine = keypoint_augmentation(task, settings)

    os.makedirs(out.path, exist_ok=True)
    out.update_run(
        {
            **run,
            "max_trials": 1,  # one trial here, not the search's budget (`tfnas results` says "1 of 1")
            FULL_TRAINING: {
                "source": os.path.abspath(source.path),
                "trial": trial_id,
                "from_scratch": from_scratch,
                "recipe": recipe(task)["source"],
                "settings": {**resolved.to_json(), "augment": augment},
                "keypoint_augmentation": affine and affine.config(),
            },
        }
    )
    directory = out.trial_dir(trial_id)
    os.makedirs(directory, exist_ok=True)
    atomic_write_json(os.path.join(directory, TRIAL_FILE), _trial_state(source, trial_id, "RUNNING"))
    if args.verbose:
        start = "a fresh decoder" if from_scratch else "its proxy-trained weights"
        print(
            f"tfnas: training trial {trial_id} of {source.path} from {start} for {resolved.epochs} "
            f"epoch(s), batch {resolved.batch_size} ({recipe(task)['source']}) in {directory}",
            flush=True,
        )
    scores = train(
        model, task, train_data, val_data, directory, settings, resume=args.resume, verbose=args.verbose
    )
    atomic_write_json(
        os.path.join(directory, TRIAL_FILE), _trial_state(source, trial_id, "COMPLETED", scores)
    )
    print(f"weights: {out.trial_weights(trial_id)}")
    print(f"TensorBoard: tensorboard --logdir {os.path.join(directory, 'tensorboard')}")
    print(f"next: tfnas export {out.path}")
    return 0
