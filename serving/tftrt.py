"""TF-TRT: optimize an exported SavedModel with TensorRT inside TensorFlow (for Jetson).

Runs where TensorFlow is built with TensorRT: NVIDIA's JetPack TensorFlow wheels and NGC
containers. Stock TensorFlow has not shipped TF-TRT since 2.18; there `to_tftrt` raises a
`RuntimeError` pointing to the ONNX path (`tfnas convert SAVED_MODEL --to onnx`, then TensorRT
on the device).

This module imports only TensorFlow and the standard library, so it can be copied to a Jetson
and run as a script next to NVIDIA's TensorFlow:

    python tftrt.py exports/segmenter/1 exports-trt/segmenter/1 --precision FP16

The converted SavedModel returns what the export returns, whatever its task (the outputs of
`tfnas.serving.savedmodel`). INT8 of a pose export's `serving_default` is refused: it would
calibrate the heatmap decoding (NMS, top-k, positions in pixels) to int8 too; convert its
`logits` signature and decode in float (`task.postprocess`).
"""

import argparse
import json
import os
import shutil
import sys

import tensorflow as tf

PRECISIONS = ("FP32", "FP16", "INT8")
#: Tasks whose serving signatures decode heatmaps in the graph (`tfnas.serving.onnx_export.DECODED_OUTPUTS`;
#: repeated here so that this file runs with TensorFlow and the standard library only).
_DECODING_TASKS = ("pose", "pose-multi")


def _task_name(saved_model_dir):
    """The task recorded in an export's `assets.extra/tfnas.json` (segmentation when absent)."""
    path = os.path.join(saved_model_dir, "assets.extra", "tfnas.json")
    if not os.path.exists(path):
        return "segmentation"
    with open(path) as f:
        return json.load(f).get("task", {}).get("name", "segmentation")


def has_tensorrt():
    """Whether this TensorFlow build includes TF-TRT.

    Returns:
        bool, from `tf.sysconfig.get_build_info()["is_tensorrt_build"]`.
    """
    return bool(tf.sysconfig.get_build_info().get("is_tensorrt_build", False))


def _not_available(reason):
    return RuntimeError(
        f"TF-TRT is not available in this TensorFlow build (TensorFlow {tf.__version__}: {reason}). "
        "Stock TensorFlow has no TensorRT since 2.18. Either run this on the Jetson with NVIDIA's JetPack "
        "TensorFlow, or take the ONNX path: `tfnas convert SAVED_MODEL --to onnx` here, then build a "
        "TensorRT engine on the device (`tfnas convert SAVED_MODEL --to tensorrt` writes the ONNX model "
        "and a trtexec script for it)."
    )


def load_images(directory, limit=100):
    """Reads up to `limit` images (png, jpg, bmp, gif) from a directory, sorted by name.

    Args:
        directory: folder of images.
        limit: most images to read, default 100.

    Returns:
        list of uint8 numpy arrays `(H, W, 3)`.

    Raises:
        FileNotFoundError: if the folder is missing or holds no images.
    """
    from tfnas.images import IMAGE_EXTENSIONS, list_images

    paths = list_images(directory, "calibration image folder")[:limit]
    if not paths:
        raise FileNotFoundError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) in {directory!r}")
    images = []
    for path in paths:
        data = tf.io.read_file(path)
        images.append(tf.io.decode_image(data, channels=3, expand_animations=False).numpy())
    return images


def to_tftrt(
    saved_model_dir,
    out_dir,
    precision="FP16",
    calibration_data=None,
    signature="serving_default",
    max_workspace_size_bytes=1 << 30,
):
    """Converts an exported SavedModel with TF-TRT and saves it, keeping `assets.extra`.

    Args:
        saved_model_dir: a SavedModel version directory written by `tfnas.serving.export`.
        out_dir: output SavedModel directory (e.g. `exports-trt/NAME/1`, servable by TF
            Serving builds with TensorRT).
        precision: "FP32", "FP16" or "INT8" (case-insensitive), default "FP16".
        calibration_data: for "INT8": uint8 images, an iterable of `(H, W, 3)` or `(N, H, W, 3)`
            arrays, fed to `signature` to calibrate (preprocessed to [-1, 1] for `logits`).
        signature: the signature converted, default "serving_default" (uint8 images in; it
            returns the export's task outputs); "logits" takes float images in [-1, 1].
        max_workspace_size_bytes: TensorRT workspace, default 1 GiB.

    Returns:
        str, `out_dir`.

    Raises:
        ValueError: for a bad precision, INT8 without calibration data, or INT8 of a pose
            export's decoding signature (module docstring).
        RuntimeError: if this TensorFlow has no TensorRT (the message says what to do instead).
    """
    precision = str(precision).upper()
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} must be one of {PRECISIONS}")
    if precision == "INT8" and calibration_data is None:
        raise ValueError("INT8 needs calibration_data: a few dozen of your own uint8 images")
    task = _task_name(saved_model_dir)
    if precision == "INT8" and signature != "logits" and task in _DECODING_TASKS:
        raise ValueError(
            f"INT8 of the {task} export's {signature!r} signature would quantize its heatmap decoding "
            "(peaks, positions in pixels); convert signature='logits' and decode the heatmaps in float "
            "with task.postprocess, or use FP16"
        )
    if not has_tensorrt():
        raise _not_available("built without TensorRT")
    try:
        params = tf.experimental.tensorrt.ConversionParams(
            precision_mode=precision,
            max_workspace_size_bytes=max_workspace_size_bytes,
            use_calibration=precision == "INT8",
        )
        converter = tf.experimental.tensorrt.Converter(
            input_saved_model_dir=saved_model_dir,
            input_saved_model_signature_key=signature,
            conversion_params=params,
        )
    except RuntimeError as e:
        raise _not_available(str(e)) from e

    def calibration_input_fn():
        for images in calibration_data:
            images = tf.convert_to_tensor(images)
            images = images if images.shape.rank == 4 else images[None]
            if signature == "logits":  # tfnas.preprocessing.preprocess
                images = tf.cast(images, tf.float32) / 127.5 - 1.0
            elif signature == "serving_float":
                images = tf.cast(images, tf.float32)
            yield (images,)

    converter.convert(calibration_input_fn=calibration_input_fn if precision == "INT8" else None)
    converter.save(out_dir)
    extra = os.path.join(saved_model_dir, "assets.extra")
    if os.path.isdir(extra):
        shutil.copytree(extra, os.path.join(out_dir, "assets.extra"), dirs_exist_ok=True)
    return out_dir


def main(argv=None):
    """Command line: `python tftrt.py SAVED_MODEL OUT_DIR [--precision FP16] [--calibration-images DIR]`."""
    parser = argparse.ArgumentParser(
        description="Convert a tfnas SavedModel with TF-TRT (run on the Jetson)."
    )
    parser.add_argument("saved_model", help="SavedModel version directory written by `tfnas export`")
    parser.add_argument("out_dir", help="output SavedModel directory")
    parser.add_argument(
        "--precision",
        default="FP16",
        type=str.upper,
        choices=PRECISIONS,
        help="TensorRT precision (default: FP16)",
    )
    parser.add_argument(
        "--calibration-images",
        default=None,
        help="folder of your images for INT8 calibration (default: none; required for INT8)",
    )
    args = parser.parse_args(argv)
    data = load_images(args.calibration_images) if args.calibration_images else None
    try:
        print(to_tftrt(args.saved_model, args.out_dir, args.precision, data))
    except (RuntimeError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
