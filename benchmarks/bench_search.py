"""Search speed: stage 1 on cached features, NASTuner vs stock keras-tuner, per-trial overhead.

Three measurements, side by side in one run (the machine is shared, so the script reports
ratios of things measured in the same run; absolute seconds are only indicative), written
to `benchmarks/results/search.json`:

1. `stage1_vs_end_to_end`: seconds per epoch of the same decoder (the CVPR 2019 `arch0`
   genotype) on the same images with the same batch size, trained (a) as stage 1 on
   encoder outputs cached by `tfnas.training.ProxyTask` (its own stage-1 model and data),
   (b) end to end like stage 2 (the proxy task's stage-2 model)
   (SGD on the encoder, Adam on the decoder), and (c) with the encoder frozen but run on
   every batch (no cache). Each variant is a `tfnas.training.ProxyModel`; its first
   (traced) epoch is run by `run_stage`, then the variants take turns for the timed epochs
   (order rotated each round), so load from other processes hits all of them alike.
2. `throughput`: trials per hour of `NASTuner` (stage 1 + stage 2, progressive termination
   off so every trial does the same work, no encoder warm-up) against stock
   `keras_tuner.RandomSearch` training `space.build(hp)` end to end with the segmentation
   loss for the same total number of epochs, same data and batch size.
3. `overhead`: where a trial's time goes. `NASTuner` reports stage-1, stage-2 and profiling
   seconds; the script adds, from the outside (a subclass timing keras-tuner's public hooks
   `pre_create_trial`, `on_trial_begin`, `run_trial`, `on_trial_end`, and a Keras callback
   passed to `search` that timestamps each stage's epochs), the build, the first (traced)
   epoch, the other epochs, validation, weight saving and keras-tuner's bookkeeping (create
   trial, update/end trial: oracle update and trial/oracle files). The same is done for the
   stock tuner. The NASTuner source is not changed.

    .venv/bin/python benchmarks/bench_search.py            # about 8 minutes here
    .venv/bin/python benchmarks/bench_search.py --quick    # a few minutes, for tests (see MODES)
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import keras_tuner  # noqa: E402
import tensorflow as tf  # noqa: E402

from tfnas.data import NUM_CLASSES, digit_scene_arrays, pipeline  # noqa: E402
from tfnas.spaces.auxcell import AuxCellSpace  # noqa: E402
from tfnas.tasks.segmentation import SegmentationLoss  # noqa: E402
from tfnas.training import (  # noqa: E402
    ParameterGroup,
    ProxyModel,
    ProxySettings,
    ProxyTask,
    make_optimizer,
    run_stage,
)

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUTPUT = os.path.join(HERE, "results", "search.json")

#: Settings per mode. Images are digit scenes (64x64 by default); MobileNetV2 alpha 0.35,
#: width 16. `--quick` only checks that the script runs end to end and writes every key (for
#: the tests; its seconds mean nothing): 32x32 images, 2 steps per epoch, and TensorFlow's
#: graph optimizer (grappler) off, which would otherwise take about a third of the first
#: epochs of measurement 1 optimising each traced step once.
MODES = {
    "quick": {
        "image_size": 32,
        "train_images": 32,
        "val_images": 16,
        "batch_size": 8,
        "timed_rounds": 1,
        "trials": 1,
        "stage1_epochs": 2,
        "stage2_epochs": 0,
        "epoch_images": 16,
        "graph_optimizations": False,
    },
    "default": {
        "image_size": 64,
        "train_images": 128,
        "val_images": 32,
        "batch_size": 16,
        "timed_rounds": 3,
        "trials": 3,
        "stage1_epochs": 3,
        "stage2_epochs": 1,
        "epoch_images": 256,
        "graph_optimizations": True,
    },
}
ALPHA, WIDTH, GENOTYPE = 0.35, 16, "arch0"
DECODER_LR, AUX_WEIGHT = ProxySettings.decoder_learning_rate, ProxySettings.aux_weight

#: Timestamped events `(source, event, perf_counter seconds)`, shared by every copy of
#: the callbacks and tuners below (keras-tuner deep-copies callbacks for each trial).
EVENTS = []


def _now():
    return time.perf_counter()


class EpochTimer(keras.callbacks.Callback):
    """Records `(model name, event, time)` at the start and end of training and of each epoch."""

    def _log(self, event):
        EVENTS.append((self.model.name, event, _now()))

    def on_train_begin(self, logs=None):
        self._log("train_begin")

    def on_epoch_begin(self, epoch, logs=None):
        self._log("epoch_begin")

    def on_epoch_end(self, epoch, logs=None):
        self._log("epoch_end")

    def on_train_end(self, logs=None):
        self._log("train_end")


class PhaseTimer:
    """Mixin for a keras-tuner Tuner: timestamps its public per-trial hooks into `EVENTS`.

    Events are tagged with the class attribute `timer_source`.
    """

    timer_source = "tuner"

    def pre_create_trial(self):
        EVENTS.append((self.timer_source, "create_begin", _now()))
        super().pre_create_trial()

    def on_trial_begin(self, trial):
        EVENTS.append((self.timer_source, "trial_begin", _now()))
        super().on_trial_begin(trial)

    def run_trial(self, trial, *args, **kwargs):
        EVENTS.append((self.timer_source, "run_begin", _now()))
        result = super().run_trial(trial, *args, **kwargs)
        EVENTS.append((self.timer_source, "run_end", _now()))
        return result

    def on_trial_end(self, trial):
        EVENTS.append((self.timer_source, "end_begin", _now()))
        super().on_trial_end(trial)
        EVENTS.append((self.timer_source, "end_end", _now()))


class EndToEndHyperModel(keras_tuner.HyperModel):
    """The space's training model compiled with the segmentation loss, for stock keras-tuner.

    Main logits weight 1, auxiliary outputs `AUX_WEIGHT` each (as in the proxy loss), Adam
    at the decoder learning rate. Its `build` timestamps itself into `EVENTS`.

    Args:
        space: the `AuxCellSpace`.
    """

    def __init__(self, space):
        super().__init__(name="end_to_end")
        self.space = space

    def build(self, hp):
        """Builds and compiles `space.build(hp)`."""
        EVENTS.append(("hypermodel", "build_begin", _now()))
        model = self.space.build(hp)
        names = list(model.output.keys()) if isinstance(model.output, dict) else ["logits"]
        loss = SegmentationLoss()
        model.compile(
            optimizer=keras.optimizers.Adam(DECODER_LR),
            loss={name: loss for name in names},
            loss_weights={name: 1.0 if name == "logits" else AUX_WEIGHT for name in names},
            jit_compile=False,
        )
        EVENTS.append(("hypermodel", "build_end", _now()))
        return model


def end_to_end_data(train, val, batch, keys):
    """Batched (image, {output: mask}) training and validation data for the stock tuner.

    Args:
        train, val: unbatched tf.data of (uint8 image, mask).
        batch: int, batch size.
        keys: the training model's output names (each is given the mask).
    """

    def as_targets(images, masks):
        return images, {key: masks for key in keys}

    return (
        pipeline(train, batch, shuffle=True, seed=1, drop_remainder=True).map(as_targets),
        pipeline(val, batch).map(as_targets),
    )


def _space():
    return AuxCellSpace(num_classes=NUM_CLASSES, width=WIDTH, alpha=ALPHA)


def _data(settings):
    size = settings["image_size"]
    train = digit_scene_arrays("train", image_size=size, num_scenes=settings["train_images"])
    val = digit_scene_arrays("validation", image_size=size, num_scenes=settings["val_images"])
    return train, val


def _spans(source, begin, end, events):
    """Durations between consecutive `begin`/`end` events of `source`."""
    starts = [t for s, e, t in events if s == source and e == begin]
    ends = [t for s, e, t in events if s == source and e == end]
    return [b - a for a, b in zip(starts, ends)]


# --- 1. stage 1 on cached features vs end to end ------------------------------------------
def stage1_vs_end_to_end(settings, workdir, log=print):
    """Seconds per epoch of one decoder trained three ways (see the module docstring).

    Returns:
        dict with per-variant `first_epoch_seconds`, `epoch_seconds` (median of the timed
        epochs), `epoch_seconds_all`, `images_per_second`, and ratios to stage 1.
    """
    space = _space()
    images, masks = digit_scene_arrays(
        "train", image_size=settings["image_size"], num_scenes=settings["epoch_images"]
    )
    batch = settings["batch_size"]
    hp = space.hyperparameters(space.values(space.PUBLISHED[GENOTYPE]))
    dataset = tf.data.Dataset.from_tensor_slices((images, masks))
    steps = len(images) // batch

    keras.utils.set_random_seed(0)
    # The proxy task's own stages and data (tfnas.training.ProxyTask), all images cached.
    proxy = ProxyTask(
        space,
        workdir,
        ProxySettings(
            batch_size=batch, cache_images=None, warmup_epochs=0, termination=False, latency_runs=0
        ),
        teacher=None,
        verbose=0,
    )
    start = _now()
    prepared = proxy.prepare(dataset, val=dataset.take(batch))
    cache_seconds = _now() - start
    image_data = pipeline(dataset, batch, shuffle=True, seed=0, drop_remainder=True)

    def networks():
        encoder = space.build_encoder()
        encoder.set_weights(prepared.encoder_weights)
        decoder = space.build_decoder(hp, space.feature_specs(encoder))
        return encoder, decoder

    variants = {}
    encoder, decoder = networks()
    variants["stage1_cached"] = (proxy.stage1_model(decoder), proxy.stage1_batches(0))
    encoder, decoder = networks()
    variants["end_to_end"] = (
        proxy.stage2_model(encoder, decoder, space.assemble(encoder, decoder)),
        proxy.stage2_batches(0),
    )
    encoder, decoder = networks()
    encoder.trainable = False  # inference-mode batch norm, no encoder gradients
    variants["frozen_encoder_uncached"] = (
        ProxyModel(
            space.assemble(encoder, decoder),
            [ParameterGroup(make_optimizer("adam", DECODER_LR, 0.9), decoder.trainable_variables)],
            NUM_CLASSES,
            AUX_WEIGHT,
            name="frozen_encoder_uncached",
        ),
        image_data,
    )

    del EVENTS[:]
    for name, (model, data) in variants.items():
        log(f"  {name}: first (traced) epoch")
        run_stage(model, data, 1, name, callbacks=[EpochTimer()], verbose=0)
    names = list(variants)
    for r in range(settings["timed_rounds"]):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            model, data = variants[name]
            model.fit(data, epochs=1, verbose=0, callbacks=[EpochTimer()])
    result = {
        "genotype": GENOTYPE,
        "images": len(images),
        "batch_size": batch,
        "steps_per_epoch": steps,
        "cache_seconds": cache_seconds,
        "variants": {},
    }
    for name in names:  # events are keyed by the Keras model's name ("stage1", "stage2", ...)
        epochs = _spans(variants[name][0].name, "epoch_begin", "epoch_end", EVENTS)
        median = statistics.median(epochs[1:])
        result["variants"][name] = {
            "first_epoch_seconds": epochs[0],
            "epoch_seconds": median,
            "epoch_seconds_all": epochs[1:],
            "images_per_second": steps * batch / median,
            "trace_seconds": max(epochs[0] - median, 0.0),
        }
        log(f"  {name}: first epoch {epochs[0]:.2f} s, then {median:.3f} s/epoch")
    base = result["variants"]["stage1_cached"]["epoch_seconds"]
    result["ratio_end_to_end_to_stage1"] = result["variants"]["end_to_end"]["epoch_seconds"] / base
    result["ratio_frozen_uncached_to_stage1"] = (
        result["variants"]["frozen_encoder_uncached"]["epoch_seconds"] / base
    )
    return result


# --- 2 and 3. NASTuner vs stock RandomSearch, per-trial phases -------------------------------
def _tuner_phases(source, events):
    """Per-trial keras-tuner phases from one tuner's events: lists of seconds.

    A `search` call ends with one more `create_begin` (the Oracle answers STOPPED), so a
    trial's creation starts at the last `create_begin` before its `trial_begin`.
    """
    mine = [(e, t) for s, e, t in events if s == source]
    begins = [t for e, t in mine if e == "trial_begin"]
    creates = [max(c for e, c in mine if e == "create_begin" and c <= b) for b in begins]
    ends = [t for e, t in mine if e == "end_end"]
    return {
        "create_trial": [b - c for b, c in zip(begins, creates)],
        "run_trial": _spans(source, "run_begin", "run_end", events),
        "update_trial": _spans(source, "run_end", "end_begin", events),
        "end_trial": _spans(source, "end_begin", "end_end", events),
        "trial_wall": [e - c for e, c in zip(ends, creates)],
    }


def _epochs_of(source, events, begin_after, end_before):
    return [
        b - a
        for (s, e, a), (s2, e2, b) in zip(events, events[1:])
        if s == source
        and e == "epoch_begin"
        and s2 == source
        and e2 == "epoch_end"
        and begin_after <= a
        and b <= end_before
    ]


def _first(source, event, events, after, before):
    for s, e, t in events:
        if s == source and e == event and after <= t <= before:
            return t
    return None


def _runs(source, events):
    begins = [t for s, e, t in events if s == source and e == "run_begin"]
    ends = [t for s, e, t in events if s == source and e == "run_end"]
    return list(zip(begins, ends))


def _nas_rows(tuner, events, log):
    """Per-trial NASTuner phases from the events and the metrics the trials reported."""
    phases = _tuner_phases("nas", events)
    rows = []
    trials = sorted(tuner.oracle.trials.values(), key=lambda t: int(t.trial_id))
    for i, ((run_begin, run_end), trial) in enumerate(zip(_runs("nas", events), trials)):
        metric = {
            name: trial.metrics.get_last_value(name)
            for name in ("stage1_seconds", "stage2_seconds", "profile_seconds", "trial_seconds", "reward")
        }
        # NASTuner's own clock starts after clear_session/gc at the top of run_trial, and
        # run_trial returns right after it reads the clock the last time.
        t0 = run_end - metric["trial_seconds"]
        stage1_end = t0 + metric["stage1_seconds"]
        stage2_end = stage1_end + metric["stage2_seconds"]
        s1_begin = _first("stage1", "train_begin", events, run_begin, run_end)
        s1_end = _first("stage1", "train_end", events, run_begin, run_end)
        s2_begin = _first("stage2", "train_begin", events, run_begin, run_end)
        s2_end = _first("stage2", "train_end", events, run_begin, run_end)
        e1 = _epochs_of("stage1", events, run_begin, run_end)
        e2 = _epochs_of("stage2", events, run_begin, run_end)
        later1 = statistics.mean(e1[1:]) if len(e1) > 1 else None
        row = {
            "clear_session_seconds": t0 - run_begin,
            "build_seconds": s1_begin - t0,
            "stage1_first_epoch_seconds": e1[0],
            "stage1_later_epoch_seconds": later1,
            "stage1_trace_seconds": e1[0] - later1 if later1 is not None else None,
            "stage1_epochs_seconds": sum(e1),
            "stage1_validation_seconds": stage1_end - s1_end,
            "stage2_setup_seconds": (s2_begin - stage1_end) if s2_begin else 0.0,
            "stage2_epochs_seconds": sum(e2),
            "stage2_first_epoch_seconds": e2[0] if e2 else 0.0,
            "stage2_validation_seconds": (stage2_end - s2_end) if s2_end else 0.0,
            "save_weights_seconds": metric["trial_seconds"]
            - metric["stage1_seconds"]
            - metric["stage2_seconds"]
            - metric["profile_seconds"],
            "profile_seconds": metric["profile_seconds"],
            "run_trial_seconds": run_end - run_begin,
            "create_trial_seconds": phases["create_trial"][i],
            "update_trial_seconds": phases["update_trial"][i],
            "end_trial_seconds": phases["end_trial"][i],
            "trial_wall_seconds": phases["trial_wall"][i],
            "reward": metric["reward"],
        }
        rows.append(row)
        log(f"  NASTuner trial {trial.trial_id}: {row['trial_wall_seconds']:.1f} s")
    return rows


def _stock_rows(model_name, events, log):
    """Per-trial phases of the stock tuner from the events."""
    phases = _tuner_phases("stock", events)
    rows = []
    for i, (run_begin, run_end) in enumerate(_runs("stock", events)):
        build = _first("hypermodel", "build_end", events, run_begin, run_end) - _first(
            "hypermodel", "build_begin", events, run_begin, run_end
        )
        epochs_seen = _epochs_of(model_name, events, run_begin, run_end)
        later = statistics.mean(epochs_seen[1:]) if len(epochs_seen) > 1 else None
        train_begin = _first(model_name, "train_begin", events, run_begin, run_end)
        train_end = _first(model_name, "train_end", events, run_begin, run_end)
        row = {
            "build_seconds": build,
            "first_epoch_seconds": epochs_seen[0],
            "later_epoch_seconds": later,
            "trace_seconds": epochs_seen[0] - later if later is not None else None,
            "epochs_seconds": sum(epochs_seen),
            "fit_other_seconds": (train_end - train_begin) - sum(epochs_seen),
            "run_trial_seconds": run_end - run_begin,
            "create_trial_seconds": phases["create_trial"][i],
            "update_trial_seconds": phases["update_trial"][i],
            "end_trial_seconds": phases["end_trial"][i],
            "trial_wall_seconds": phases["trial_wall"][i],
        }
        rows.append(row)
        log(f"  RandomSearch trial {i}: {row['trial_wall_seconds']:.1f} s")
    return rows


def compare_tuners(settings, train, val, workdir, log=print):
    """NASTuner and stock RandomSearch trials, taking turns; per-trial phases of both.

    Each tuner's `search` is called once per trial with `max_trials` raised by one, the
    two tuners alternating (and swapping who goes first), so load from other processes
    falls on both alike.

    Returns:
        `(nas, stock)`: dicts with `search_seconds`, `setup_seconds` (NASTuner: data
        preparation, feature cache) and `trials` (a dict of phase seconds per trial).
    """
    from tfnas.tuners import NASTuner, make_oracle

    class TimedNASTuner(PhaseTimer, NASTuner):
        """NASTuner with its keras-tuner hooks timestamped (the source is unchanged)."""

        timer_source = "nas"

    class TimedRandomSearch(PhaseTimer, keras_tuner.RandomSearch):
        """keras_tuner.RandomSearch with its hooks timestamped."""

        timer_source = "stock"

    space = _space()
    batch = settings["batch_size"]
    epochs = settings["stage1_epochs"] + settings["stage2_epochs"]
    nas = TimedNASTuner(
        space,
        oracle=make_oracle("random", 1, seed=1),
        seed=1,
        stage1_epochs=settings["stage1_epochs"],
        stage2_epochs=settings["stage2_epochs"],
        batch_size=batch,
        termination=False,
        warmup_epochs=0,
        teacher=None,
        verbose=0,
        directory=workdir,
        project_name="nas_tuner",
        overwrite=True,
    )

    train_data, val_data = end_to_end_data(
        tf.data.Dataset.from_tensor_slices(train),
        tf.data.Dataset.from_tensor_slices(val),
        batch,
        ["logits"] + [f"aux_{b}" for b in range(3)],
    )
    stock = TimedRandomSearch(
        EndToEndHyperModel(_space()),
        objective="val_loss",
        max_trials=1,
        seed=1,
        directory=workdir,
        project_name="random_search",
        overwrite=True,
    )

    def run_nas():
        nas.search(train, validation_data=val, callbacks=[EpochTimer()], verbose=0)

    def run_stock():
        stock.search(train_data, validation_data=val_data, epochs=epochs, callbacks=[EpochTimer()], verbose=0)

    del EVENTS[:]
    seconds = {"nas": 0.0, "stock": 0.0}
    setup = 0.0
    for i in range(settings["trials"]):
        turns = [("nas", nas, run_nas), ("stock", stock, run_stock)]
        for name, tuner, run in turns if i % 2 == 0 else turns[::-1]:
            log(f"  {name} trial {i}")
            tuner.oracle.max_trials = i + 1
            start = _now()
            run()
            seconds[name] += _now() - start
            if name == "nas":
                setup += _first("nas", "create_begin", EVENTS, start, float("inf")) - start
    events = list(EVENTS)
    origin = events[0][2]
    raw = [[s, e, round(t - origin, 4)] for s, e, t in events]
    return (
        {
            "search_seconds": seconds["nas"],
            "setup_seconds": setup,
            "trials": _nas_rows(nas, events, log),
            "events": raw,
        },
        {
            "search_seconds": seconds["stock"],
            "epochs": epochs,
            "trials": _stock_rows(space.name, events, log),
        },
    )


def _mean(rows, key):
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.mean(values) if values else None


def summarize(nas, stock):
    """Trials per hour and mean per-trial phases of both tuners."""
    nas_trial = _mean(nas["trials"], "trial_wall_seconds")
    stock_trial = _mean(stock["trials"], "trial_wall_seconds")
    nas_phases = {key: _mean(nas["trials"], key) for key in nas["trials"][0]}
    stock_phases = {key: _mean(stock["trials"], key) for key in stock["trials"][0]}
    nas_phases["keras_tuner_bookkeeping_seconds"] = (
        nas_phases["create_trial_seconds"]
        + nas_phases["update_trial_seconds"]
        + nas_phases["end_trial_seconds"]
    )
    stock_phases["keras_tuner_bookkeeping_seconds"] = (
        stock_phases["create_trial_seconds"]
        + stock_phases["update_trial_seconds"]
        + stock_phases["end_trial_seconds"]
    )
    fixed = {
        "build": nas_phases["clear_session_seconds"] + nas_phases["build_seconds"],
        "stage1_trace": nas_phases["stage1_trace_seconds"] or 0.0,
        "stage1_validation": nas_phases["stage1_validation_seconds"],
        "stage2_setup": nas_phases["stage2_setup_seconds"],
        "stage2_validation": nas_phases["stage2_validation_seconds"],
        "save_weights": nas_phases["save_weights_seconds"],
        "profile": nas_phases["profile_seconds"],
        "keras_tuner_bookkeeping": nas_phases["keras_tuner_bookkeeping_seconds"],
    }
    return {
        "nas_tuner": {
            "trials": len(nas["trials"]),
            "seconds_per_trial": nas_trial,
            "trials_per_hour": 3600.0 / nas_trial,
            "setup_seconds": nas["setup_seconds"],
            "trials_per_hour_with_setup": 3600.0 * len(nas["trials"]) / nas["search_seconds"],
            "phases": nas_phases,
        },
        "stock_random_search": {
            "trials": len(stock["trials"]),
            "seconds_per_trial": stock_trial,
            "trials_per_hour": 3600.0 / stock_trial,
            "epochs": stock["epochs"],
            "phases": stock_phases,
        },
        "ratio_trials_per_hour": stock_trial / nas_trial,
        "nas_tuner_fixed_overhead_seconds": fixed,
        "nas_tuner_fixed_overhead_total": sum(fixed.values()),
        "nas_tuner_dominant_overhead": max(fixed, key=fixed.get),
    }


def _machine():
    return {
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_tuner": keras_tuner.__version__,
        "note": "shared machine: other engineers were running tests at the same time",
    }


def main(argv=None):
    """Command-line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny settings, for tests")
    parser.add_argument("--output", default=DEFAULT_OUTPUT, help="JSON file to write")
    parser.add_argument(
        "--skip-tuners", action="store_true", help="only measurement 1 (no NASTuner / RandomSearch trials)"
    )
    args = parser.parse_args(argv)
    mode = "quick" if args.quick else "default"
    settings = MODES[mode]
    if not settings["graph_optimizations"]:
        tf.config.optimizer.set_experimental_options({"disable_meta_optimizer": True})
    workdir = tempfile.mkdtemp(prefix="tfnas-bench-search-")
    start = _now()
    try:
        result = {
            "benchmark": "search",
            "mode": mode,
            "date": datetime.date.today().isoformat(),
            "machine": _machine(),
            "settings": {
                **settings,
                "alpha": ALPHA,
                "width": WIDTH,
                "num_classes": NUM_CLASSES,
                "encoder": "mobilenetv2",
            },
        }
        print("1. stage 1 on cached features vs end to end")
        result["stage1_vs_end_to_end"] = stage1_vs_end_to_end(settings, workdir)
        if not args.skip_tuners:
            train, val = _data(settings)
            print("2/3. NASTuner and stock keras_tuner.RandomSearch trials, taking turns")
            nas, stock = compare_tuners(settings, train, val, workdir)
            result["tuners"] = {"nas_tuner": nas, "stock_random_search": stock}
            result["throughput"] = summarize(nas, stock)
        result["seconds"] = _now() - start
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=1)
    s = result["stage1_vs_end_to_end"]
    print(
        f"stage 1 {s['variants']['stage1_cached']['epoch_seconds']:.3f} s/epoch; end to end "
        f"x{s['ratio_end_to_end_to_stage1']:.2f}; frozen uncached "
        f"x{s['ratio_frozen_uncached_to_stage1']:.2f}"
    )
    if "throughput" in result:
        t = result["throughput"]
        print(
            f"NASTuner {t['nas_tuner']['trials_per_hour']:.0f} trials/h, RandomSearch "
            f"{t['stock_random_search']['trials_per_hour']:.0f} trials/h "
            f"(x{t['ratio_trials_per_hour']:.2f}); dominant overhead: "
            f"{t['nas_tuner_dominant_overhead']}"
        )
    print(f"wrote {args.output} in {result['seconds']:.0f} s")


if __name__ == "__main__":
    main()
