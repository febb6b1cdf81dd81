"""Memory of a long search: resident memory and what grows after each trial (issue 16).

Runs N trials of the tiny search of issue 16 — the same settings as

    tfnas search --space auxcell --oracle random --scenes 96 --image-size 32 --digits 017 \\
        --stage1-epochs 1 --stage2-epochs 1 --warmup-epochs 1 --latency-runs 0 \\
        --no-termination --trials N

but from Python, through a `NASTuner` subclass whose only change is `on_trial_end` (the
keras-tuner hook called after each trial's results are recorded): it calls the base hook,
then samples

- `rss_mb`: resident memory of the process (psutil), after a `gc.collect()`;
- `rss_after_malloc_trim_mb`: the same after glibc's `malloc_trim(0)` has returned free
  arena pages to the OS (single `rss_mb` samples swing by +-200 MB with what malloc holds);
- `malloc_in_use_mb` / `malloc_heap_mb` / `malloc_free_mb`: glibc's `malloc_info` over all
  arenas: live C/C++ allocations (TensorFlow's CPU tensors included), what malloc holds
  from the OS, and the free chunks in it; RSS growing while "in use" stays flat means
  fragmentation, not a leak;
- `objects`: live objects by kind found with `gc.get_objects()`: Keras models, layers,
  variables, optimizers, `tf.function`s, concrete functions, `FuncGraph`s, `tf.data`
  datasets, eager tensors, keras-tuner trials, and the functions registered in TensorFlow's
  eager context (`runtime_functions`);
- with `--tracemalloc`: the ten Python allocation sites that grew most since the previous
  trial (`tracemalloc` snapshot diffs, by line).

Results go to `benchmarks/results/memory.json` under `--label` (e.g. `before`, `after`), so
runs of the code before and after a fix sit side by side. Settings are those of the issue
except where the CLI's defaults apply (batch size 16, auxcell width 48, MobileNetV2 1.0).

With `--supernet` the trials run in the space's supernet (`ProxySettings.supernet`, issue 10).

    nice -n 10 .venv/bin/python benchmarks/bench_memory.py --trials 30 --label after
    taskset -c 1 .venv/bin/python benchmarks/bench_memory.py --trials 100 --label supernet --supernet \
        --output benchmarks/results/memory_supernet.json
"""

import argparse
import collections
import ctypes
import datetime
import gc
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
import tracemalloc

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import keras_tuner  # noqa: E402
import psutil  # noqa: E402
import tensorflow as tf  # noqa: E402
from tensorflow.python.eager import polymorphic_function  # noqa: E402
from tensorflow.python.eager.polymorphic_function import atomic_function  # noqa: E402
from tensorflow.python.framework import func_graph  # noqa: E402

from tfnas.data import digit_scenes, num_classes  # noqa: E402
from tfnas.spaces import get_space  # noqa: E402
from tfnas.tuners.nas_tuner import NASTuner, make_oracle  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUTPUT = os.path.join(HERE, "results", "memory.json")

#: The issue's search: (digits, scenes, image size, stage-1, stage-2, warm-up epochs).
DIGITS, SCENES, IMAGE_SIZE = [0, 1, 7], 96, 32
SETTINGS = {
    "stage1_epochs": 1,
    "stage2_epochs": 1,
    "warmup_epochs": 1,
    "latency_runs": 0,
    "termination": False,
    "batch_size": 16,
    "seed": 0,
    "verbose": 0,
}


def _mallinfo():
    """glibc's heap statistics over all arenas, in MB (from `malloc_info`), or {} without glibc.

    `mallinfo2` counts the main arena only, and TensorFlow's threads allocate from others,
    so the XML report of `malloc_info` is parsed instead: `malloc_heap_mb` is what malloc holds
    from the OS (arenas and mmapped chunks), `malloc_free_mb` the free chunks inside it, and
    `malloc_in_use_mb` the difference: live C/C++ allocations (TensorFlow's CPU tensors,
    graphs and kernels included). RSS growing while "in use" stays flat is fragmentation.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.fopen.restype = ctypes.c_void_p
        libc.fopen.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
        libc.malloc_info.argtypes = [ctypes.c_int, ctypes.c_void_p]
        libc.fclose.argtypes = [ctypes.c_void_p]
    except (OSError, AttributeError):
        return {}
    fd, path = tempfile.mkstemp(suffix=".xml")
    os.close(fd)
    try:
        stream = libc.fopen(path.encode(), b"w")
        libc.malloc_info(0, stream)
        libc.fclose(stream)
        with open(path) as f:
            report = f.read()
    finally:
        os.remove(path)
    totals = report[report.rindex("</heap>") :]
    size = lambda kind, tag="total": int(
        re.search(rf'<{tag} type="{kind}"[^>]*size="(\d+)"', totals).group(1)
    )
    free = size("fast") + size("rest")
    heap = size("current", "system") + size("mmap")
    mb = 1024 * 1024
    return {"malloc_in_use_mb": (heap - free) / mb, "malloc_heap_mb": heap / mb, "malloc_free_mb": free / mb}


#: Kinds of live objects counted after each trial: name -> predicate.
KINDS = {
    "keras_models": lambda o: isinstance(o, keras.Model),
    "keras_layers": lambda o: isinstance(o, keras.layers.Layer),
    "keras_variables": lambda o: isinstance(o, keras.Variable),
    "keras_optimizers": lambda o: isinstance(o, keras.optimizers.Optimizer),
    "tf_functions": lambda o: isinstance(o, polymorphic_function.Function),
    "concrete_functions": lambda o: type(o).__name__ == "ConcreteFunction",
    "func_graphs": lambda o: isinstance(o, func_graph.FuncGraph),
    "tf_datasets": lambda o: isinstance(o, tf.data.Dataset),
    "eager_tensors": lambda o: type(o).__name__ == "EagerTensor",
    "tf_variables": lambda o: isinstance(o, tf.Variable),
    "kt_trials": lambda o: isinstance(o, keras_tuner.engine.trial.Trial),
}


def _malloc_trim():
    """glibc's `malloc_trim(0)`: give free heap pages back to the OS (no-op without glibc)."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except OSError:
        pass


def count_objects():
    """Live objects by kind (see `KINDS`)."""
    counts = collections.Counter()
    for obj in gc.get_objects():
        for kind, test in KINDS.items():
            try:
                if test(obj):
                    counts[kind] += 1
            except Exception:  # objects half torn down by gc can refuse isinstance
                pass
    result = {kind: counts.get(kind, 0) for kind in KINDS}
    # Functions registered in TensorFlow's eager context (each traced function that was
    # called, with its gradient functions); removed when their last Python owner dies.
    result["runtime_functions"] = len(atomic_function.RUNTIME_FUNCTION_REFS)
    return result


class MemoryTuner(NASTuner):
    """`NASTuner` that samples memory in `on_trial_end` (the tuner is otherwise unchanged).

    Args:
        samples: list the samples are appended to.
        trace: bool, take tracemalloc snapshot diffs.
        **kwargs: `NASTuner` arguments.
    """

    def __init__(self, *args, samples, trace=False, on_sample=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.samples, self.trace, self._snapshot = samples, trace, None
        self.on_sample = on_sample
        self._start = time.perf_counter()

    def on_trial_end(self, trial):
        """Records the trial, then samples memory."""
        super().on_trial_end(trial)
        gc.collect()
        sample = {
            "trial": len(self.samples) + 1,
            "trial_id": trial.trial_id,
            "status": trial.status,
            "seconds": round(time.perf_counter() - self._start, 1),
            "rss_mb": psutil.Process().memory_info().rss / 2**20,
            **_mallinfo(),
            "objects": count_objects(),
        }
        # RSS again once glibc has returned its free arena pages: single RSS samples swing
        # by +-200 MB with what malloc happens to hold, which hides or fakes growth.
        _malloc_trim()
        sample["rss_after_malloc_trim_mb"] = psutil.Process().memory_info().rss / 2**20
        if self.trace:
            snapshot = tracemalloc.take_snapshot()
            sample["python_traced_mb"] = tracemalloc.get_traced_memory()[0] / 2**20
            if self._snapshot is not None:
                sample["top_growth"] = [
                    {
                        "where": str(stat.traceback[0]),
                        "size_diff_kb": stat.size_diff / 1024,
                        "count_diff": stat.count_diff,
                    }
                    for stat in snapshot.compare_to(self._snapshot, "lineno")[:10]
                ]
            self._snapshot = snapshot
        self.samples.append(sample)
        if self.on_sample is not None:
            self.on_sample(self.samples)
        print(
            f"trial {sample['trial']:3d} ({trial.status}): rss {sample['rss_mb']:.0f} MB "
            f"({sample['rss_after_malloc_trim_mb']:.0f} MB trimmed), "
            f"malloc in use {sample.get('malloc_in_use_mb', float('nan')):.0f} MB, "
            f"objects {sample['objects']}",
            flush=True,
        )


def run(trials, directory, trace=False, on_sample=None, supernet=False):
    """Runs the issue's tiny search for `trials` trials; returns the per-trial samples.

    `on_sample(samples)` is called after each trial (to save partial results). With
    `supernet`, every trial runs in the space's supernet (`ProxySettings.supernet`)."""
    if trace:
        tracemalloc.start(1)
    digits = DIGITS
    train = digit_scenes("train", IMAGE_SIZE, num_scenes=SCENES, seed=SETTINGS["seed"], digits=digits)
    space = get_space("auxcell")(num_classes=num_classes(digits))
    oracle = make_oracle("random", trials, seed=SETTINGS["seed"])
    samples = []
    tuner = MemoryTuner(
        space,
        oracle=oracle,
        samples=samples,
        trace=trace,
        on_sample=on_sample,
        directory=directory,
        project_name="search",
        supernet=supernet,
        **SETTINGS,
    )
    tuner.search(train)
    return samples


def stage_loop(iterations, without_fix=False, on_sample=None):
    """What a trial does to memory, without the search: a fast loop that shows the same leak.

    Each iteration, like a trial, clears the Keras session, builds a small decoder (six 3x3
    convs on 8x8x32 features, 3 classes at 32x32), trains it one epoch with `run_stage`
    (ProxyModel, ParameterGroup, Adam with Polyak averaging), scores it with
    `evaluate_reward` and counts its multiply-adds with `profile.madds`, then drops it and
    samples memory (and RSS again after glibc's `malloc_trim(0)`), passing the samples so far
    to `on_sample`. With `without_fix` the
    `release_custom_gradients` block of `run_stage` is replaced by a no-op, which is the
    code before the fix.
    """
    import contextlib

    import numpy as np

    from tfnas import profile
    from tfnas.training import ParameterGroup, ProxyModel, evaluate_reward, make_optimizer, run_stage, stages

    if without_fix:
        stages.release_custom_gradients = contextlib.nullcontext
    rng = np.random.default_rng(0)
    features = tf.constant(rng.random((64, 8, 8, 32), dtype=np.float32))
    masks = tf.constant(rng.integers(0, 3, (64, 32, 32)).astype(np.int32))
    train = tf.data.Dataset.from_tensor_slices(((features,), masks))
    val = tf.data.Dataset.from_tensor_slices(((features[:32],), masks[:32])).batch(16)

    def build():
        x = inputs = keras.Input((8, 8, 32))
        for _ in range(6):
            x = keras.layers.Conv2D(32, 3, padding="same", activation="relu")(x)
        x = keras.layers.UpSampling2D(4)(x)
        return keras.Model([inputs], {"logits": keras.layers.Conv2D(3, 1)(x)})

    samples, start = [], time.perf_counter()
    for i in range(iterations):
        keras.backend.clear_session()
        gc.collect()
        network = build()
        group = ParameterGroup(make_optimizer("adam", 1e-3, 0.9), network.trainable_variables)
        model = ProxyModel(network, [group], 3)
        run_stage(model, train.shuffle(64, seed=i).batch(16, drop_remainder=True), 1, "loop", verbose=0)
        evaluate_reward(model, val)
        profile.madds(network, (8, 8, 32))
        del network, group, model
        gc.collect()
        sample = {
            "trial": i + 1,
            "seconds": round(time.perf_counter() - start, 1),
            "rss_mb": psutil.Process().memory_info().rss / 2**20,
            **_mallinfo(),
            "objects": count_objects(),
        }
        _malloc_trim()
        sample["rss_after_malloc_trim_mb"] = psutil.Process().memory_info().rss / 2**20
        samples.append(sample)
        if on_sample is not None:
            on_sample(samples)
        print(
            f"iteration {i + 1}: rss {sample['rss_mb']:.0f} MB, malloc in use "
            f"{sample.get('malloc_in_use_mb', float('nan')):.0f} MB, func graphs "
            f"{sample['objects']['func_graphs']}",
            flush=True,
        )
    return samples


def summarize(samples):
    """RSS after trial 10 and the last trial, their ratio, and the growth per trial after 10.

    The same figures for the RSS taken after `malloc_trim(0)` are keyed `trimmed_*`, and
    `slope_after_10_mb` is the least-squares growth per trial from trial 10 on."""
    summary = {"trials": len(samples)}
    for key, prefix in (("rss_mb", ""), ("rss_after_malloc_trim_mb", "trimmed_")):
        rss = [s[key] for s in samples if key in s]
        if len(rss) != len(samples) or not rss:
            continue
        summary.update({f"{prefix}rss_first_mb": rss[0], f"{prefix}rss_last_mb": rss[-1]})
        if len(rss) >= 10:
            summary[f"{prefix}rss_trial10_mb"] = rss[9]
            summary[f"{prefix}last_vs_trial10"] = rss[-1] / rss[9]
            if len(rss) > 10:
                summary[f"{prefix}growth_per_trial_after_10_mb"] = (rss[-1] - rss[9]) / (len(rss) - 10)
                tail = rss[9:]
                x = list(range(len(tail)))
                mx, my = sum(x) / len(x), sum(tail) / len(tail)
                summary[f"{prefix}slope_after_10_mb"] = sum(
                    (a - mx) * (b - my) for a, b in zip(x, tail)
                ) / sum((a - mx) ** 2 for a in x)
    return summary


def disk_usage(run_dir):
    """Bytes of each trial's weight files and of the whole search folder."""
    per_trial, total = {}, 0
    for root, _, files in os.walk(run_dir):
        for name in files:
            size = os.path.getsize(os.path.join(root, name))
            total += size
            folder = os.path.basename(root)
            if folder.startswith("trial_") and name.endswith(".weights.h5"):
                per_trial[folder] = per_trial.get(folder, 0) + size
    return {"total_bytes": total, "trial_weight_bytes": per_trial}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--label", default="after", help="key of this run in the JSON")
    parser.add_argument("--tracemalloc", action="store_true", help="record Python allocation diffs")
    parser.add_argument("--output", default=DEFAULT_OUTPUT)
    parser.add_argument("--keep", default=None, help="keep the search folder here")
    parser.add_argument("--supernet", action="store_true", help="run the trials in the space's supernet")
    parser.add_argument(
        "--loop", type=int, default=0, help="instead of the search, run `stage_loop` for this many iterations"
    )
    parser.add_argument(
        "--without-fix",
        action="store_true",
        help="with --loop: run_stage without release_custom_gradients (the code before the fix)",
    )
    args = parser.parse_args(argv)
    directory = args.keep or tempfile.mkdtemp(prefix="tfnas-memory-")
    start = time.perf_counter()

    def save(samples, disk=None, settings=None):
        result = {
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join([os.path.basename(sys.argv[0])] + list(argv or sys.argv[1:])),
            "settings": settings
            or {
                "space": "auxcell",
                "oracle": "random",
                "scenes": SCENES,
                "image_size": IMAGE_SIZE,
                "digits": DIGITS,
                "supernet": args.supernet,
                **SETTINGS,
            },
            "machine": {
                "platform": platform.platform(),
                "cpus": os.cpu_count(),
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
                "keras_tuner": keras_tuner.__version__,
                "malloc_env": {k: v for k, v in os.environ.items() if k.startswith(("MALLOC", "LD_PRELOAD"))},
            },
            "seconds": round(time.perf_counter() - start, 1),
            "finished": disk is not None,
            "summary": summarize(samples),
            "disk": disk,
            "samples": samples,
        }
        results = {}
        if os.path.exists(args.output):
            with open(args.output) as f:
                results = json.load(f)
        results[args.label] = result
        os.makedirs(os.path.dirname(args.output), exist_ok=True)
        with open(args.output, "w") as f:
            json.dump(results, f, indent=1)
        return result

    if args.loop:
        settings = {"mode": "stage_loop", "iterations": args.loop, "without_fix": args.without_fix}
        samples = stage_loop(
            args.loop, args.without_fix, on_sample=lambda done: save(done, settings=settings)
        )
        result = save(samples, disk={}, settings=settings)
        print(json.dumps(result["summary"], indent=1))
        return
    try:
        samples = run(args.trials, directory, trace=args.tracemalloc, on_sample=save, supernet=args.supernet)
        result = save(samples, disk_usage(os.path.join(directory, "search")))
    finally:
        if args.keep is None:
            shutil.rmtree(directory, ignore_errors=True)
    print(json.dumps(result["summary"], indent=1))


if __name__ == "__main__":
    main()
