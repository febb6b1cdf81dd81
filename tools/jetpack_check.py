"""Do tfnas' SavedModels load and answer the same in JetPack 6's TensorFlow (2.16.1, 2.17.1)?

NVIDIA's JetPack 6 ships TensorFlow 2.16.1 and 2.17.1 wheels (aarch64), the only TensorFlow
builds with TF-TRT left (stock TensorFlow dropped TensorRT after 2.17). tfnas exports with a
newer TensorFlow, so this script checks that what `tfnas export` writes loads in those versions
and returns the same outputs:

1. In the tfnas environment (this interpreter): build the published networks of each space for
   the tasks that matter (`MODELS`: every published segmentation genotype, depth, top-down pose,
   bottom-up pose with auxcell arch0, the 3M-Pose fabric at a small width; random weights, batch
   norm statistics from random images so that outputs are of order 1), export each with
   `tfnas.serving.export`, and write reference inputs and outputs of every signature
   (`serving_default`, `serving_float`, `logits`) as `.npz`, computed by loading the SavedModel
   back here exactly as the old TensorFlow will.
2. For each TensorFlow version: a venv of its own (`python -m venv`, then `pip install
   tensorflow-cpu==X`, or `tensorflow==X` where no -cpu wheel exists), cached in
   `--venv-dir/tf-X` and reused, with no tfnas in it; the x86_64 wheels read the same SavedModel
   format as the JetPack aarch64 ones.
3. In that venv, this file again (`--load-only`, which imports TensorFlow, numpy and the
   standard library only): `tf.saved_model.load` each model, call each signature on the
   reference inputs and compare with the reference outputs: largest absolute difference of the
   float outputs (pass: `|new - ref| <= atol + rtol * |ref|` everywhere), and for integer outputs
   (`classes`) the number of differing elements (pass: none, or only ties of the reference
   probabilities).

A model that fails to load is a finding, not a crash: its error text goes in the report and the
script exits with status 1 at the end (status 0 only when every model passes in every version).

    python tools/jetpack_check.py                                  # 2.16.1 and 2.17.1, all models
    python tools/jetpack_check.py --versions 2.17.1 --models auxcell-arch0-segmentation
    python tools/jetpack_check.py --python .venv/bin/python        # an existing interpreter, no venv
    python tools/jetpack_check.py --work /tmp/jp                   # keep the exports in /tmp/jp
    python3 jetpack_check.py --load-only /tmp/jp                   # on the Jetson, its own TensorFlow

The report (`--out`, default `benchmarks/results/jetpack_tf.json`) lists the models, then per
TensorFlow version the package installed, and per model: load ok or the error, per signature and
output the largest difference, and pass/fail.
"""

import argparse
import datetime
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_VERSIONS = ("2.16.1", "2.17.1")
DEFAULT_OUT = os.path.join(ROOT, "benchmarks", "results", "jetpack_tf.json")
DEFAULT_VENV_DIR = os.path.join(os.path.expanduser("~"), ".cache", "tfnas", "jetpack-venvs")
#: Written into a venv once its TensorFlow imports at the asked version; a venv with it is reused.
VENV_MARKER = "tfnas-jetpack.json"
MANIFEST = "manifest.json"
SIGNATURES = ("serving_default", "serving_float", "logits")
#: Default tolerance of the float outputs: `|new - ref| <= ATOL + RTOL * |ref|`.
ATOL, RTOL = 1e-4, 1e-4
#: name -> (space, published genotype, space arguments, task). The papers' deployment widths
#: (as `benchmarks/bench_deploy_graphs.py`); the fabric at width 8 with a one-block 16-channel stem,
#: the small size its tests build (the ops are those of the full size).
MODELS = {
    "auxcell-arch0-segmentation": ("auxcell", "arch0", {"num_classes": 21, "width": 64}, "segmentation"),
    "auxcell-arch1-segmentation": ("auxcell", "arch1", {"num_classes": 21, "width": 64}, "segmentation"),
    "auxcell-arch2-segmentation": ("auxcell", "arch2", {"num_classes": 21, "width": 64}, "segmentation"),
    "template-arch0-segmentation": ("template", "arch0", {"num_classes": 19, "width": 64}, "segmentation"),
    "template-arch1-segmentation": ("template", "arch1", {"num_classes": 19, "width": 64}, "segmentation"),
    "dpc-top1_cityscapes-segmentation": ("dpc", "top1_cityscapes", {"num_classes": 19}, "segmentation"),
    "auxcell-arch0-depth": ("auxcell", "arch0", {"width": 64}, "depth"),
    "auxcell-arch0-pose": ("auxcell", "arch0", {"width": 64}, "pose"),
    "auxcell-arch0-pose-multi": ("auxcell", "arch0", {"width": 64}, "pose-multi"),
    "fabric-3m_pose-pose-multi": (
        "fabric",
        "3m_pose",
        {"width": 8, "stem_channels": 16, "stem_blocks": 1},
        "pose-multi",
    ),
}
#: `--tiny`: every network at this decoder width and MobileNetV2 alpha (the same ops, seconds to export).
TINY = {"width": 8, "alpha": 0.35}


# --- step 1: exports and references (tfnas environment) ------------------------------------
def parse_size(text):
    """`"64x96"` -> (64, 96); both multiples of 32 (the auxcell and template output stride)."""
    match = re.fullmatch(r"(\d+)x(\d+)", str(text).strip().lower())
    if not match or int(match[1]) % 32 or int(match[2]) % 32 or int(match[1]) == 0 or int(match[2]) == 0:
        raise argparse.ArgumentTypeError(
            f"size {text!r} must be HxW with positive multiples of 32 (the networks' output stride), e.g. 64x96"
        )
    return int(match[1]), int(match[2])


def build_model(name, tiny=False, size=(64, 96)):
    """The training model and space of a `MODELS` entry: random weights (seeded by its name),
    batch-norm statistics set from random images (`calibrate_batch_norm`).

    Args:
        name: a key of `MODELS`.
        tiny: bool, build at `TINY` width and alpha (the fabric keeps its small size).
        size: (H, W) of the calibration images.

    Returns:
        (space, keras model).
    """
    import zlib

    import keras

    from tfnas.spaces import get_space

    space_name, genotype, config, task = MODELS[name]
    config = dict(config)
    if tiny:
        config["width"] = TINY["width"]
        if space_name != "fabric":
            config["alpha"] = TINY["alpha"]
    seed = zlib.crc32(name.encode()) % 2**31
    keras.utils.set_random_seed(seed)
    space = get_space(space_name)(task=task, **config)
    model = space.build_genotype(genotype)
    images = np.random.default_rng(seed).integers(0, 256, (4, *size, 3), dtype=np.uint8)
    calibrate_batch_norm(model, images)
    return space, model


def calibrate_batch_norm(model, images):
    """Sets every batch norm's moving mean and variance to the statistics of `images`.

    Freshly initialised networks keep moving statistics (0, 1) that do not match their
    activations, which shrink layer after layer: the published networks' logits come out below
    1e-3, or exactly 0, which any tolerance accepts. With the statistics of real activations
    every layer is normalised, as in a trained network, and the outputs are of order 1.

    Args:
        model: a Keras model (nested models included).
        images: uint8 images `(N, H, W, 3)`, preprocessed as in training.
    """
    import keras

    layers = [
        layer for layer in model._flatten_layers() if isinstance(layer, keras.layers.BatchNormalization)
    ]
    settings = [(layer.momentum, layer.trainable) for layer in layers]
    try:
        for layer in layers:  # momentum 0: the moving statistics become this batch's
            layer.momentum, layer.trainable = 0.0, True
        model(images.astype(np.float32) / 127.5 - 1.0, training=True)  # tfnas.preprocessing
    finally:
        for layer, (momentum, trainable) in zip(layers, settings):
            layer.momentum, layer.trainable = momentum, trainable


def signature_inputs(images):
    """The reference input of each signature for uint8 `images` `(N, H, W, 3)`."""
    return {
        "serving_default": images,
        "serving_float": images.astype(np.float32),
        "logits": (images.astype(np.float32) / 127.5 - 1.0).astype(np.float32),  # tfnas.preprocessing
    }


def export_models(work_dir, names, size=(64, 96), batch=2, tiny=False, log=print):
    """Exports `names` under `work_dir/exports/` and writes their reference inputs and outputs.

    References are the outputs of the SavedModel loaded back in this TensorFlow (`run_model`),
    the same code the old TensorFlow runs. Writes `work_dir/manifest.json`.

    Args:
        work_dir: folder for the exports, `NAME.inputs.npz`, `NAME.reference.npz` and the manifest.
        names: keys of `MODELS`.
        size: (H, W) of the reference images, multiples of 32.
        batch: images per reference batch.
        tiny: bool, build the networks at `TINY` width and alpha.
        log: function taking one line of progress.

    Returns:
        the manifest dict.
    """
    import keras
    import tensorflow as tf

    import tfnas
    from tfnas.serving import export

    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise ValueError(f"unknown model(s) {unknown}; expected names from {sorted(MODELS)}")
    os.makedirs(work_dir, exist_ok=True)
    images = np.random.default_rng(0).integers(0, 256, (batch, *size, 3), dtype=np.uint8)
    inputs = signature_inputs(images)
    models = []
    for name in names:
        space, model = build_model(name, tiny, size)
        space_name, genotype, _, task = MODELS[name]
        path = export(
            model,
            os.path.join(work_dir, "exports"),
            name,
            version=1,
            metadata={"space": space_name, "genotype": genotype, "space_config": space.config()},
            warmup_images=images[:1],
            task=space.task,
        )
        np.savez(os.path.join(work_dir, f"{name}.inputs.npz"), **inputs)
        result = run_model(path, inputs)
        reference = {f"{sig}/{out}": value for sig, outs in result.items() for out, value in outs.items()}
        np.savez(os.path.join(work_dir, f"{name}.reference.npz"), **reference)
        models.append(
            {
                "name": name,
                "space": space_name,
                "genotype": genotype,
                "task": task,
                "config": space.config(),
                "params": int(model.count_params()),
                "saved_model": os.path.relpath(path, work_dir),
                "signatures": {sig: sorted(outs) for sig, outs in result.items()},
            }
        )
        log(f"exported {name} ({models[-1]['params']:,} parameters) -> {path}")
        keras.backend.clear_session()
    manifest = {
        "format": "tfnas-jetpack-check",
        "exported_with": {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "tfnas": tfnas.__version__,
        },
        "input": [batch, *size, 3],
        "tiny": bool(tiny),
        "models": models,
    }
    with open(os.path.join(work_dir, MANIFEST), "w") as f:
        json.dump(manifest, f, indent=2)
    return manifest


# --- step 3: load and compare (any TensorFlow; TensorFlow, numpy and the standard library only)
def run_model(saved_model_dir, inputs, signatures=SIGNATURES):
    """Loads a SavedModel with `tf.saved_model.load` and calls each signature on its input.

    Args:
        saved_model_dir: a SavedModel (version) directory.
        inputs: dict signature name -> numpy array, its `images` input.
        signatures: the signatures to call (default: the three a tfnas export has).

    Returns:
        dict signature -> dict output name -> numpy array.
    """
    import tensorflow as tf

    loaded = tf.saved_model.load(saved_model_dir)
    outputs = {}
    for sig in signatures:
        result = loaded.signatures[sig](images=tf.constant(inputs[sig]))
        outputs[sig] = {name: value.numpy() for name, value in result.items()}
    return outputs


def compare(new, reference, atol=ATOL, rtol=RTOL):
    """Compares one output with its reference.

    Args:
        new, reference: numpy arrays.
        atol, rtol: float tolerance: pass when `|new - ref| <= atol + rtol * |ref|` everywhere.
            Integer outputs (class maps) pass only when equal everywhere.

    Returns:
        dict: `max_abs_diff` (float; for integers the largest difference of values too),
        `mismatches` (int, elements outside the tolerance), `pass` (bool); `error` instead of
        the numbers when the shapes or dtypes differ.
    """
    new, reference = np.asarray(new), np.asarray(reference)
    if new.shape != reference.shape or new.dtype != reference.dtype:
        return {
            "pass": False,
            "error": f"got {new.dtype}{list(new.shape)}, expected {reference.dtype}{list(reference.shape)}",
        }
    if new.size == 0:
        return {"max_abs_diff": 0.0, "mismatches": 0, "pass": True}
    if np.issubdtype(reference.dtype, np.integer) or reference.dtype == bool:
        diff = np.abs(new.astype(np.int64) - reference.astype(np.int64))
        bad = diff != 0
    else:
        diff = np.abs(new.astype(np.float64) - reference.astype(np.float64))
        bad = ~(diff <= atol + rtol * np.abs(reference.astype(np.float64)))  # NaN counts as bad
    return {
        "max_abs_diff": float(np.nan_to_num(diff, nan=np.inf).max()),
        "max_abs_reference": float(np.abs(reference.astype(np.float64)).max()),
        "mismatches": int(bad.sum()),
        "pass": not bool(bad.any()),
    }


def compare_classes(new, reference, probabilities, atol=ATOL, rtol=RTOL):
    """Compares a class map with its reference, forgiving ties: a pixel whose class differs
    passes when the reference probabilities of the two classes are equal within the tolerance
    (a difference of 1e-6 in the logits may flip an argmax there, and nowhere else).

    Args:
        new, reference: int class maps `(N, H, W)`.
        probabilities: the reference probabilities `(N, H, W, C)` of the same signature.
        atol, rtol: float tolerance, as in `compare`.

    Returns:
        `compare`'s dict with `ties` (differing pixels that are ties); `mismatches` counts
        every differing pixel, `pass` is whether all of them are ties.
    """
    result = compare(new, reference, atol, rtol)
    if "error" in result:
        return result
    if result["pass"]:
        return {**result, "ties": 0}
    differ = np.asarray(new) != np.asarray(reference)
    p_ref = np.take_along_axis(probabilities, np.asarray(reference)[..., None].astype(np.int64), -1)[..., 0]
    p_new = np.take_along_axis(
        probabilities,
        np.clip(np.asarray(new), 0, probabilities.shape[-1] - 1)[..., None].astype(np.int64),
        -1,
    )[..., 0]
    valid = (np.asarray(new) >= 0) & (np.asarray(new) < probabilities.shape[-1])
    tie = valid & (p_new >= p_ref - (atol + rtol * p_ref))
    return {**result, "ties": int((differ & tie).sum()), "pass": not bool((differ & ~tie).any())}


def check_exports(work_dir, result_path=None, atol=ATOL, rtol=RTOL, log=print):
    """Loads every model of `work_dir/manifest.json` in this TensorFlow and compares its outputs.

    A load or call error is recorded for that model (its text), not raised. The result is
    rewritten after each model, so a crash of the process leaves the models done so far.

    Args:
        work_dir: a folder written by `export_models`.
        result_path: JSON file for the result, or None.
        atol, rtol: tolerance of `compare`.
        log: function taking one line of progress.

    Returns:
        dict: `tensorflow` (version), `python`, `tfnas_importable` (bool), `models`: name ->
        `{"load": "ok" | error text, "signatures": {sig: {output: compare(...)}}, "max_abs_diff",
        "pass"}`.
    """
    import importlib.util

    import tensorflow as tf

    with open(os.path.join(work_dir, MANIFEST)) as f:
        manifest = json.load(f)
    result = {
        "tensorflow": tf.__version__,
        "python": platform.python_version(),
        "executable": sys.executable,
        "machine": platform.machine(),
        "tfnas_importable": importlib.util.find_spec("tfnas") is not None,
        "tolerance": {"atol": atol, "rtol": rtol},
        "models": {},
    }
    for model in manifest["models"]:
        name = model["name"]
        entry = {"load": "ok", "signatures": {}, "max_abs_diff": None, "pass": False}
        try:
            inputs = dict(np.load(os.path.join(work_dir, f"{name}.inputs.npz")))
            reference = dict(np.load(os.path.join(work_dir, f"{name}.reference.npz")))
            outputs = run_model(
                os.path.join(work_dir, model["saved_model"]), inputs, sorted(model["signatures"])
            )
        except Exception as e:  # a finding to report: the old TensorFlow cannot load or run it
            entry["load"] = f"{type(e).__name__}: {e}"
        else:
            for sig, names in model["signatures"].items():
                got, checks = outputs[sig], {}
                for out in names:
                    ref = reference[f"{sig}/{out}"]
                    if out not in got:
                        checks[out] = {
                            "pass": False,
                            "error": f"missing; the signature returned {sorted(got)}",
                        }
                    elif out == "classes" and f"{sig}/probabilities" in reference:
                        checks[out] = compare_classes(
                            got[out], ref, reference[f"{sig}/probabilities"], atol, rtol
                        )
                    else:
                        checks[out] = compare(got[out], ref, atol, rtol)
                entry["signatures"][sig] = checks
            checks = [c for sig in entry["signatures"].values() for c in sig.values()]
            diffs = [c["max_abs_diff"] for c in checks if "max_abs_diff" in c]
            entry["max_abs_diff"] = max(diffs) if diffs else None
            entry["pass"] = all(c["pass"] for c in checks)
        result["models"][name] = entry
        status = "pass" if entry["pass"] else "FAIL"
        detail = (
            f"max |diff| {entry['max_abs_diff']:.3g}" if entry["max_abs_diff"] is not None else entry["load"]
        )
        log(f"TensorFlow {tf.__version__}: {name}: {status} ({detail.splitlines()[0][:300]})")
        if result_path:
            _write_json(result_path, result)
    return result


def _write_json(path, data):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f"{path}.tmp"
    with open(tmp, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(tmp, path)


# --- step 2: one venv per TensorFlow version -----------------------------------------------
class SetupError(RuntimeError):
    """A venv for a TensorFlow version could not be made (pip output in the message)."""


def _tail(text, lines=25):
    return "\n".join(text.strip().splitlines()[-lines:])


def _clean_env():
    """The environment of the child interpreters: no PYTHONPATH (so no tfnas), quiet TensorFlow."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


def tensorflow_version(python):
    """The TensorFlow version `python` imports, or None when it cannot import TensorFlow."""
    completed = subprocess.run(
        [python, "-c", "import tensorflow as tf; print(tf.__version__)"],
        capture_output=True,
        text=True,
        env=_clean_env(),
        cwd=tempfile.gettempdir(),
        timeout=600,
    )
    lines = completed.stdout.strip().splitlines()
    return lines[-1].strip() if completed.returncode == 0 and lines else None


def ensure_venv(version, venv_dir, base_python=sys.executable, log=print):
    """A venv at `venv_dir/tf-VERSION` whose TensorFlow is `version`, made once and then reused.

    `pip install tensorflow-cpu==VERSION`; where pip finds no such wheel for this platform and
    Python, `tensorflow==VERSION`. Nothing else (no tfnas) is installed.

    Args:
        version: TensorFlow version, e.g. "2.16.1".
        venv_dir: folder holding the venvs.
        base_python: interpreter that runs `-m venv` (default: this one).
        log: function taking one line of progress.

    Returns:
        (python path in the venv, the pip requirement it was made with).

    Raises:
        SetupError: naming the version, with the tail of pip's output, when the venv or the
            install fails or the installed TensorFlow is another version.
    """
    path = os.path.join(os.path.abspath(os.path.expanduser(venv_dir)), f"tf-{version}")
    python = os.path.join(path, "bin", "python")
    marker = os.path.join(path, VENV_MARKER)
    if os.path.exists(marker) and tensorflow_version(python) == version:
        with open(marker) as f:
            requirement = json.load(f)["requirement"]
        log(f"TensorFlow {version}: reusing {path} ({requirement})")
        return python, requirement
    if not os.path.exists(python):
        log(f"TensorFlow {version}: creating the venv {path}")
        completed = subprocess.run([base_python, "-m", "venv", path], capture_output=True, text=True)
        if completed.returncode:
            raise SetupError(
                f"TensorFlow {version}: `{base_python} -m venv {path}` failed (status {completed.returncode}):\n"
                + _tail(completed.stdout + completed.stderr)
            )
    output = ""
    for requirement in (f"tensorflow-cpu=={version}", f"tensorflow=={version}"):
        log(f"TensorFlow {version}: pip install {requirement} (a few minutes the first time)")
        completed = subprocess.run(
            [python, "-m", "pip", "install", requirement],
            capture_output=True,
            text=True,
            env=_clean_env(),
        )
        output = completed.stdout + completed.stderr
        if completed.returncode == 0:
            break
        if "No matching distribution found" not in output:
            raise SetupError(
                f"TensorFlow {version}: `pip install {requirement}` into {path} failed "
                f"(status {completed.returncode}); the end of pip's output:\n{_tail(output)}"
            )
    else:
        raise SetupError(
            f"TensorFlow {version}: pip finds neither tensorflow-cpu=={version} nor tensorflow=={version} for "
            f"Python {platform.python_version()} on {platform.machine()} (TensorFlow 2.16/2.17 wheels are for "
            f"Python 3.9-3.12; pass another --base-python); the end of pip's output:\n{_tail(output)}"
        )
    found = tensorflow_version(python)
    if found != version:
        raise SetupError(
            f"TensorFlow {version}: after `pip install {requirement}` the venv {path} imports TensorFlow "
            f"{found or '(import failed)'}; remove {path} and run again. The end of pip's output:\n{_tail(output)}"
        )
    _write_json(marker, {"tensorflow": version, "requirement": requirement})
    return python, requirement


def run_loader(python, work_dir, atol=ATOL, rtol=RTOL, timeout=3600):
    """Runs `--load-only` of this file with `python` and returns its result (`check_exports`).

    Raises:
        SetupError: with the tail of its output when the process fails and wrote no result.
    """
    result_path = os.path.join(work_dir, f"result-{os.getpid()}-{abs(hash(python))}.json")
    command = [python, os.path.abspath(__file__), "--load-only", work_dir, "--result", result_path]
    command += ["--atol", str(atol), "--rtol", str(rtol)]
    completed = subprocess.run(
        command, capture_output=True, text=True, env=_clean_env(), cwd=work_dir, timeout=timeout
    )
    output = completed.stdout + completed.stderr
    for line in completed.stdout.splitlines():
        print(f"  {line}")
    if not os.path.exists(result_path):
        raise SetupError(
            f"{python} --load-only exited with status {completed.returncode} before checking any model; "
            f"the end of its output:\n{_tail(output)}"
        )
    with open(result_path) as f:
        result = json.load(f)
    os.remove(result_path)
    if completed.returncode not in (0, 1):  # died part way: the models it did not reach
        with open(os.path.join(work_dir, MANIFEST)) as f:
            names = [m["name"] for m in json.load(f)["models"]]
        for name in names:
            result["models"].setdefault(
                name,
                {
                    "load": f"the loader process died (status {completed.returncode}): {_tail(output, 5)}",
                    "signatures": {},
                    "max_abs_diff": None,
                    "pass": False,
                },
            )
    return result


# --- the report ----------------------------------------------------------------------------
def summary_table(report):
    """Markdown table of a report: one row per model, one column per TensorFlow run."""
    runs = report["runs"]
    header = ["model", "params"] + [f"TF {r.get('tensorflow') or r['requested']}" for r in runs]
    rows = ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for model in report["models"]:
        cells = [model["name"], f"{model['params']:,}"]
        for run in runs:
            entry = run.get("models", {}).get(model["name"])
            if entry is None:
                cells.append(
                    "not run: " + (run.get("error") or "").splitlines()[0][:80] if run.get("error") else "-"
                )
            elif entry["load"] != "ok":
                cells.append("load FAILED: " + entry["load"].splitlines()[0][:120])
            else:
                classes = [
                    c["mismatches"]
                    for sig in entry["signatures"].values()
                    for out, c in sig.items()
                    if out == "classes" and "mismatches" in c
                ]
                text = f"{'pass' if entry['pass'] else 'FAIL'}, max diff {entry['max_abs_diff']:.1e}"
                if classes:
                    text += f", {max(classes)} class px differ"
                    ties = max(c.get("ties", 0) for sig in entry["signatures"].values() for c in sig.values())
                    text += f" ({ties} of them ties)" if ties else ""
                cells.append(text)
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows)


def main(argv=None):
    parser = argparse.ArgumentParser(
        description="Check that tfnas SavedModels load and give the same outputs in JetPack 6's "
        "TensorFlow (2.16.1, 2.17.1), each in a venv of its own.",
        epilog="Exit status: 0 when every model passes in every version, 1 otherwise (load failures "
        "and differences are recorded in the report), 2 for bad arguments.",
    )
    parser.add_argument(
        "--versions",
        default=None,
        help=f"comma-separated TensorFlow versions to check in venvs (default: {','.join(DEFAULT_VERSIONS)}; "
        "none when --python is given)",
    )
    parser.add_argument(
        "--python",
        action="append",
        default=[],
        metavar="PYTHON",
        help="check with this existing interpreter (its TensorFlow) instead of making a venv; repeatable",
    )
    parser.add_argument("--out", default=DEFAULT_OUT, help="JSON report (default: %(default)s)")
    parser.add_argument(
        "--venv-dir",
        default=DEFAULT_VENV_DIR,
        help="folder of the cached venvs, one tf-VERSION per version (default: %(default)s)",
    )
    parser.add_argument(
        "--base-python",
        default=sys.executable,
        help="interpreter that creates the venvs; TensorFlow 2.16/2.17 need Python 3.9-3.12 (default: this one)",
    )
    parser.add_argument(
        "--work",
        default=None,
        help="folder for the exports and reference .npz (kept; reused when it holds a manifest.json); "
        "default: a temporary folder, removed at the end",
    )
    parser.add_argument(
        "--models",
        default=None,
        help=f"comma-separated subset of: {', '.join(MODELS)} (default: all)",
    )
    parser.add_argument(
        "--size", type=parse_size, default=(64, 96), help="reference image HxW (default: 64x96)"
    )
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="build the networks at decoder width 8, alpha 0.35 (the same ops, a quick run)",
    )
    parser.add_argument("--atol", type=float, default=ATOL, help="absolute tolerance (default: %(default)s)")
    parser.add_argument("--rtol", type=float, default=RTOL, help="relative tolerance (default: %(default)s)")
    parser.add_argument(
        "--load-only",
        metavar="WORK",
        default=None,
        help="only load and compare the exports of WORK with this interpreter's TensorFlow (what runs in "
        "each venv; also runs on a Jetson with NVIDIA's TensorFlow, numpy and this file alone)",
    )
    parser.add_argument("--result", default=None, help="with --load-only: JSON file for its result")
    args = parser.parse_args(argv)

    if args.load_only:
        if not os.path.exists(os.path.join(args.load_only, MANIFEST)):
            parser.error(f"--load-only {args.load_only!r} holds no {MANIFEST}; pass a --work folder of a run")
        result = check_exports(args.load_only, args.result, args.atol, args.rtol)
        if args.result:
            _write_json(args.result, result)
        return 0 if all(m["pass"] for m in result["models"].values()) else 1

    versions = args.versions.split(",") if args.versions else ([] if args.python else list(DEFAULT_VERSIONS))
    versions = [v.strip() for v in versions if v.strip()]
    for version in versions:
        if not re.fullmatch(r"\d+\.\d+\.\d+", version):
            parser.error(f"--versions: {version!r} is not a TensorFlow version like 2.16.1")
    for i, python in enumerate(args.python):
        if not shutil.which(python):
            parser.error(f"--python {python!r} is not an executable interpreter")
        args.python[i] = os.path.abspath(shutil.which(python))  # the loader runs in the work folder
    names = [n.strip() for n in args.models.split(",")] if args.models else list(MODELS)
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        parser.error(f"--models: unknown {unknown}; expected names from: {', '.join(MODELS)}")

    work = os.path.abspath(args.work) if args.work else tempfile.mkdtemp(prefix="jetpack_check-")
    try:
        if os.path.exists(os.path.join(work, MANIFEST)):
            with open(os.path.join(work, MANIFEST)) as f:
                manifest = json.load(f)
            held = [m["name"] for m in manifest["models"]]
            if args.models and held != names:
                parser.error(
                    f"--work {work} holds the exports of {held}, not --models {names}; pass another --work "
                    "or leave --models out"
                )
            print(f"reusing the exports in {work} ({len(held)} models)")
        else:
            manifest = export_models(work, names, args.size, tiny=args.tiny)
        runs = [{"requested": v, "venv": True} for v in versions]
        runs += [{"requested": p, "venv": False, "interpreter": p} for p in args.python]
        for run in runs:
            try:
                if not run["venv"]:
                    python = run["interpreter"]
                else:
                    python, run["requirement"] = ensure_venv(
                        run["requested"], args.venv_dir, args.base_python
                    )
                run.update(run_loader(python, work, args.atol, args.rtol))
                run["status"] = "ok"
            except (SetupError, subprocess.TimeoutExpired) as e:
                run["status"] = "error"
                run["error"] = str(e)
                print(f"error: {e}", file=sys.stderr)
            if run["venv"] and run.get("tensorflow") not in (None, run["requested"]):
                run["status"] = "error"
                run["error"] = f"asked for TensorFlow {run['requested']}, ran {run['tensorflow']}"
        report = {
            "script": "tools/jetpack_check.py",
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "platform": f"{platform.system()} {platform.machine()}, Python {platform.python_version()}",
            "exported_with": manifest["exported_with"],
            "input": manifest["input"],
            "tiny": manifest["tiny"],
            "tolerance": {"atol": args.atol, "rtol": args.rtol},
            "models": [
                {k: m[k] for k in ("name", "space", "genotype", "task", "params")} for m in manifest["models"]
            ],
            "runs": runs,
        }
        report["pass"] = bool(runs) and all(
            r["status"] == "ok" and all(m["pass"] for m in r["models"].values()) for r in runs
        )
        _write_json(args.out, report)
        print(summary_table(report))
        print(f"{'all pass' if report['pass'] else 'FAILURES'}; report: {args.out}")
        return 0 if report["pass"] else 1
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
