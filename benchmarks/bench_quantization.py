"""mIoU of one model in fp32, TFLite int8 PTQ, Q/DQ ONNX int8 and after tfmot QAT (issue 14).

The model: the weights tfnas ships for the built-in digit scenes (`tfnas.pretrained`: MobileNetV2
0.35 + the auxcell space's reference decoder, width 16, trained 40 epochs; `digits.json`), the one
trained model every install has. A published architecture (arch0) on the shipped encoder, its
decoder trained a few epochs here, predicted only background (mIoU 0.002), which says nothing
about quantization. Its mean IoU on validation scenes
(background left out, the task's default) is measured

- in fp32 (Keras 3),
- as TFLite full-integer int8, post-training quantized on training scenes (`tfnas.serving.to_tflite`),
- as Q/DQ ONNX int8, post-training quantized with onnxruntime (`tfnas.serving.quantize.quantize_onnx`),
- after quantization-aware training with tensorflow-model-optimization (`tfnas.serving.qat`):
  the tf_keras rebuild (fp32, checked equal), the QAT model itself (fake quantization), its
  TFLite int8 file and its tf2onnx Q/DQ ONNX file.

With `--run RUN_DIR` the model is instead a trained trial of a search or of `tfnas train`
(`--trial`, default the best), e.g. `make demo`'s best after `tfnas train`; `--digits`,
`--min-digit-size` and `--max-digit-size` then give the scenes it was trained on.

Writes benchmarks/results/quantization.json and prints a markdown table.

    python benchmarks/bench_quantization.py                       # 64x64, 512 train scenes
    python benchmarks/bench_quantization.py --train-scenes 64 --val-scenes 32 --qat-epochs 1   # smoke run
    python benchmarks/bench_quantization.py --run runs/demo/full_0 --digits 017 --min-digit-size 16 \
        --out benchmarks/results/quantization_demo.json                   # the demo's best, trained
"""

import argparse
import datetime
import json
import os
import platform
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def miou(task, logits, masks):
    """Mean IoU (the task's scores, background left out) of logits against class maps."""
    metric = task.metric()
    metric.update_state(masks, logits)
    return float(task.scores(metric)["miou"])


#: Files the TFLite XNNPACK delegate refused (run with the builtin kernels instead), with its message.
XNNPACK_FAILURES = {}


def tflite_logits(path, images):
    """`tfnas.serving.tflite.tflite_predict`, or the builtin kernels where XNNPACK fails to prepare."""
    import tensorflow as tf

    from tfnas.preprocessing import preprocess
    from tfnas.serving.tflite import tflite_predict

    if path not in XNNPACK_FAILURES:
        try:
            return tflite_predict(path, images)
        except RuntimeError as error:
            XNNPACK_FAILURES[path] = str(error)
    interpreter = tf.lite.Interpreter(
        model_path=path,
        experimental_op_resolver_type=tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
    )
    return interpreter.get_signature_runner()(images=preprocess(np.asarray(images)).numpy())["logits"]


def batched(predict, images, batch_size=16):
    return np.concatenate(
        [np.asarray(predict(images[i : i + batch_size])) for i in range(0, len(images), batch_size)]
    )


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    parser.add_argument("--size", type=int, default=64, help="scene size (square)")
    parser.add_argument("--train-scenes", type=int, default=512)
    parser.add_argument("--val-scenes", type=int, default=128)
    parser.add_argument("--qat-epochs", type=int, default=2, help="QAT fine-tuning epochs")
    parser.add_argument("--calibration", type=int, default=64, help="PTQ calibration images")
    parser.add_argument("--run", default=None, help="a search or tfnas train folder: quantize its trial")
    parser.add_argument("--trial", default="best", help="with --run: the trial")
    parser.add_argument("--digits", default=None, help="with --run: the digits of its scenes, e.g. 017")
    parser.add_argument("--min-digit-size", type=int, default=12)
    parser.add_argument("--max-digit-size", type=int, default=32)
    parser.add_argument("--out", default=os.path.join(HERE, "results", "quantization.json"))
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    from tfnas.data.digits import NUM_CLASSES, digit_scene_arrays
    from tfnas.preprocessing import preprocess
    from tfnas.pretrained import DIGITS, PRETRAINED_DIR, digits_reference_space
    from tfnas.serving import qat
    from tfnas.serving.onnx_export import onnx_predict, to_onnx
    from tfnas.serving.quantize import quantize_onnx
    from tfnas.serving.tflite import to_tflite
    from tfnas.training.warmup import build_reference_model

    DIGITS_MODEL = os.path.join(PRETRAINED_DIR, DIGITS["teacher_file"])

    keras.utils.set_random_seed(0)
    times = {}
    start = time.perf_counter()
    # as the shipped weights were trained (12-32 px, every digit), or as --run's model was
    scene_args = {"min_digit_size": args.min_digit_size, "max_digit_size": args.max_digit_size}
    if args.digits:
        scene_args["digits"] = [int(d) for d in args.digits]
    train_images, train_masks = digit_scene_arrays(
        "train", args.size, args.train_scenes, seed=0, **scene_args
    )
    val_images, val_masks = digit_scene_arrays("validation", args.size, args.val_scenes, seed=1, **scene_args)
    if args.run:
        from tfnas.search_dir import SearchDir

        run = SearchDir(args.run)
        space = run.space(encoder_weights=None)
        trained, metadata = run.load_trial_model(args.trial)
        model = space.inference_model(trained)
        what = (
            f"trial {metadata['trial_id']} of {os.path.abspath(args.run)} ({metadata['space']} space, "
            f"genotype {metadata.get('genotype')})"
        )
    else:
        space = digits_reference_space()
        reference = build_reference_model(space)
        reference.load_weights(DIGITS_MODEL)
        model = space.inference_model(reference)
        what = (
            "tfnas.pretrained digits model: MobileNetV2 0.35 + the auxcell space's reference "
            "decoder (width 16), 11 classes, trained 40 epochs at 48x48 (tfnas/pretrained/digits.json)"
        )
    task = space.task
    train = task.pipeline(tf.data.Dataset.from_tensor_slices((train_images, train_masks)), 16, shuffle=True)
    times["load_s"] = time.perf_counter() - start
    results = {
        "fp32": miou(task, batched(lambda b: model(preprocess(b), training=False), val_images), val_masks)
    }
    print("fp32", results["fp32"], flush=True)

    calibration = train_images[: args.calibration]
    with tempfile.TemporaryDirectory(prefix="bench_quantization_") as tmp:
        start = time.perf_counter()
        ptq_path = to_tflite(
            model,
            os.path.join(tmp, "ptq.tflite"),
            "int8",
            representative_data=calibration,
            input_size=args.size,
        )
        results["tflite_int8_ptq"] = miou(
            task, batched(lambda b: tflite_logits(ptq_path, b), val_images, 1), val_masks
        )
        times["tflite_int8_ptq_s"] = time.perf_counter() - start
        print("tflite ptq", results["tflite_int8_ptq"], flush=True)

        start = time.perf_counter()
        onnx_path = os.path.join(tmp, "logits.onnx")
        to_onnx(model, onnx_path, signature="logits", input_size=args.size)
        qdq = quantize_onnx(onnx_path, os.path.join(tmp, "ptq_qdq.onnx"), calibration)
        results["qdq_onnx_int8_ptq"] = miou(
            task,
            batched(lambda b: onnx_predict(qdq["path"], preprocess(b).numpy())["logits"], val_images, 1),
            val_masks,
        )
        times["qdq_onnx_int8_ptq_s"] = time.perf_counter() - start
        print("qdq onnx ptq", results["qdq_onnx_int8_ptq"], flush=True)

        start = time.perf_counter()
        rebuilt = qat.to_tf_keras(model, input_size=args.size)
        results["tf_keras_fp32"] = miou(
            task, batched(lambda b: rebuilt.model(preprocess(b), training=False), val_images), val_masks
        )
        quantized = qat.quantize_aware(rebuilt)
        results["qat_before_fine_tune"] = miou(
            task, batched(lambda b: quantized.model(preprocess(b), training=False), val_images), val_masks
        )
        losses = qat.fine_tune(quantized, train, task=task, epochs=args.qat_epochs, learning_rate=1e-4)
        results["qat_fake_quant"] = miou(
            task, batched(lambda b: quantized.model(preprocess(b), training=False), val_images), val_masks
        )
        times["qat_fine_tune_s"] = time.perf_counter() - start
        print("qat", results["qat_before_fine_tune"], results["qat_fake_quant"], losses, flush=True)

        start = time.perf_counter()
        tflite_report = qat.to_tflite_int8(
            quantized, os.path.join(tmp, "qat.tflite"), check_images=val_images[:4]
        )
        results["qat_tflite_int8"] = miou(
            task, batched(lambda b: tflite_logits(tflite_report["path"], b), val_images, 1), val_masks
        )
        times["qat_tflite_s"] = time.perf_counter() - start
        print("qat tflite", results["qat_tflite_int8"], flush=True)

        start = time.perf_counter()
        onnx_report = qat.to_qdq_onnx(
            quantized, os.path.join(tmp, "qat_qdq.onnx"), check_images=val_images[:4]
        )
        results["qat_qdq_onnx"] = miou(
            task,
            batched(
                lambda b: onnx_predict(onnx_report["path"], preprocess(b).numpy())["logits"], val_images, 1
            ),
            val_masks,
        )
        times["qat_qdq_onnx_s"] = time.perf_counter() - start
        print("qat qdq onnx", results["qat_qdq_onnx"], flush=True)

    report = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__, **_versions()},
        "model": {
            "what": what,
            "num_classes": getattr(task, "num_classes", NUM_CLASSES),
            "image_size": args.size,
        },
        "data": {
            "train_scenes": args.train_scenes,
            "val_scenes": args.val_scenes,
            "qat_epochs": args.qat_epochs,
            "calibration_images": args.calibration,
            "scenes": scene_args,
        },
        "miou": results,
        "qat": {
            "tf_keras_max_abs_diff": rebuilt.max_abs_diff,
            "float_layers": quantized.float_layers,
            "fine_tune_losses": losses,
            "tflite": {k: v for k, v in tflite_report.items() if k != "path"},
            "onnx": {k: v for k, v in onnx_report.items() if k != "path"},
        },
        "ptq_qdq_onnx": {k: v for k, v in qdq.items() if k != "path"},
        "xnnpack_failures": {os.path.basename(k): v for k, v in XNNPACK_FAILURES.items()},
        "seconds": times,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(report, f, indent=2, default=lambda v: v.item() if hasattr(v, "item") else str(v))
    print("| model | mIoU |\n| --- | --- |")
    for key, value in results.items():
        print(f"| {key} | {value:.4f} |")
    return report


def _versions():
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("tf_keras", "tensorflow-model-optimization", "tf2onnx", "onnxruntime"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


if __name__ == "__main__":
    main()
