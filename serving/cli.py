"""The `tfnas export`, `tfnas convert` and `tfnas serve` commands.

`register(subparsers)` adds the three subcommands to the `tfnas` argparse parser
(`tfnas.cli`, which also turns their errors into one line). `export` reads a trial of a
search directory through `tfnas.search_dir.SearchDir`.
"""

import argparse
import json
import os
import sys

CONVERT_TARGETS = ("onnx", "tensorrt", "tftrt", "tflite")


# --- handlers ----------------------------------------------------------------------------
def run_task(run_dir):
    """The task a search directory's networks predict for: its space's, from `run.json`.

    `run.json` files written before tasks existed have no `task` in `space_config`; their
    space is a segmentation space with its `num_classes`.

    Args:
        run_dir: search directory.

    Returns:
        a `tfnas.tasks.Task`.
    """
    from tfnas.search_dir import SearchDir

    return SearchDir(run_dir).space(encoder_weights=None).task


def run_export(args):
    """Handler of `tfnas export`: exports a trial of a search run for TF Serving, for its task."""
    from tfnas.search_dir import SearchDir
    from tfnas.serving.savedmodel import export

    model, metadata = SearchDir(args.run_dir).load_trial_model(args.trial)
    name = args.name or os.path.basename(os.path.normpath(args.run_dir))
    task = run_task(args.run_dir)
    if args.dynamic:
        from tfnas.serving.dynamic import export_dynamic, parse_thresholds

        thresholds = None if args.exit_thresholds is None else parse_thresholds(args.exit_thresholds)
        path = export_dynamic(
            model, args.base, name, task, version=args.version, metadata=metadata, thresholds=thresholds
        )
    else:
        if args.exit_thresholds is not None:
            raise ValueError(
                f"--exit-thresholds {args.exit_thresholds} needs --dynamic (without it the export "
                "is the last exit only)"
            )
        path = export(model, args.base, name, version=args.version, metadata=metadata, task=task)
    print(path)
    return 0


def _require_calibration_images(args):
    if not args.calibration_images:
        raise ValueError("int8 needs --calibration-images DIR (a few dozen of your own images)")


def _calibration(args, needed):
    if not args.calibration_images:
        if needed:
            _require_calibration_images(args)
        return None
    from tfnas.serving.tftrt import load_images

    return load_images(args.calibration_images)


def _stem(saved_model):
    parts = os.path.normpath(os.path.abspath(saved_model)).split(os.sep)
    return f"{parts[-2]}_v{parts[-1]}" if parts[-1].isdigit() else parts[-1]


def _deployment_shape(args):
    """(input_size or None, batch) from --input-size/--batch (or the older --input-shape NxHxWx3)."""
    from tfnas.serving.onnx_export import parse_input_size

    if args.input_shape:
        dims = args.input_shape.lower().split("x")
        if len(dims) != 4 or not all(d.isdigit() for d in dims):
            raise ValueError(f"--input-shape {args.input_shape!r} must be NxHxWx3, e.g. 1x512x512x3")
        return (int(dims[1]), int(dims[2])), int(dims[0])
    size = parse_input_size(args.input_size)
    if size is None and args.to == "tensorrt":
        raise ValueError("--to tensorrt needs a fixed --input-size HxW (a TensorRT engine has fixed shapes)")
    if args.batch < 1:
        raise ValueError(f"--batch {args.batch} must be a positive integer")
    return size, args.batch


def run_convert(args):
    """Handler of `tfnas convert`: ONNX (float or INT8 Q/DQ), TensorRT (script or engine), TF-TRT or TFLite."""
    precision = (args.precision or {"tflite": "fp32", "onnx": "fp32"}.get(args.to, "fp16")).lower()
    stem = _stem(args.saved_model)
    if args.to == "tftrt":
        from tfnas.serving.tftrt import to_tftrt

        out = args.out or f"{stem}_tftrt_{precision}"
        print(to_tftrt(args.saved_model, out, precision.upper(), _calibration(args, precision == "int8")))
        return 0
    size, batch = _deployment_shape(args)
    if precision == "int8":  # before the (slow) conversion
        _require_calibration_images(args)
    if args.to == "onnx":
        from tfnas.serving.onnx_export import to_onnx

        if precision == "fp16":
            raise ValueError("--to onnx writes fp32 or int8 (Q/DQ); fp16 is a TensorRT build option")
        out = args.out or f"{stem}{'_int8' if precision == 'int8' else ''}.onnx"
        float_out = out[: -len(".onnx")] + "_fp32.onnx" if precision == "int8" else out
        report = to_onnx(
            args.saved_model,
            float_out,
            opset=args.opset,
            signature=args.signature,
            input_size=size,
            batch_size=batch,
        )
        if precision == "int8":
            from tfnas.serving.quantize import quantize_onnx

            report["int8"] = quantize_onnx(float_out, out, args.calibration_images)
        print(json.dumps(report, indent=2))
    elif args.to == "tflite":
        from tfnas.serving.tflite import to_tflite

        quantization = {"fp32": "none", "fp16": "float16", "int8": "int8"}[precision]
        out = args.out or f"{stem}_{precision}.tflite"
        print(
            to_tflite(
                args.saved_model,
                out,
                quantization,
                _calibration(args, precision == "int8"),
                input_size=size,
                batch_size=batch,
            )
        )
    else:
        return _convert_tensorrt(args, precision, stem, size, batch)
    return 0


def _convert_tensorrt(args, precision, stem, size, batch):
    from tfnas.serving import tensorrt
    from tfnas.serving.onnx_export import to_onnx

    out = args.out or f"{stem}_tensorrt_{precision}"
    os.makedirs(out, exist_ok=True)
    onnx_path = os.path.join(out, "model.onnx")
    to_onnx(
        args.saved_model, onnx_path, opset=args.opset, signature="logits", input_size=size, batch_size=batch
    )
    if precision == "int8":  # explicit quantization: what TensorRT 10 builds INT8 from
        from tfnas.serving.quantize import quantize_onnx

        float_path = os.path.join(out, "model_fp32.onnx")
        os.replace(onnx_path, float_path)
        quantize_onnx(float_path, onnx_path, args.calibration_images)
    script = tensorrt.write_trtexec_script(onnx_path, out, precision)
    try:
        tensorrt._import_tensorrt()  # noqa: SLF001 - same check and message as build_engine
    except RuntimeError as e:
        print(f"wrote {onnx_path} and {script}\n{e}", file=sys.stderr)
        return 0
    engine = tensorrt.build_engine(onnx_path, os.path.join(out, f"model_{precision}.engine"), precision)
    print(engine)
    print(json.dumps(tensorrt.time_engine(engine)))
    return 0


def run_serve(args):
    """Handler of `tfnas serve`: the local preview server (a development aid)."""
    from tfnas.serving.preview import PreviewServer

    server = PreviewServer(
        args.base_dir,
        host=args.host,
        rest_port=args.rest_port,
        grpc_port=None if args.grpc_port < 0 else args.grpc_port,
    )
    server.start()
    print(
        f"tfnas preview server (development aid, not for production): REST {server.rest_url}, "
        f"gRPC {server.grpc_target or 'off'}; models in {args.base_dir}. Ctrl-C stops.",
        flush=True,
    )
    try:
        server.wait()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


def register(subparsers):
    """Adds the `export`, `convert` and `serve` subcommands to a `tfnas` argparse parser.

    Args:
        subparsers: the object returned by `parser.add_subparsers()`.

    Returns:
        dict name -> the subcommand's `ArgumentParser` (each has `func` set to its handler).
    """
    fmt = argparse.ArgumentDefaultsHelpFormatter
    export = subparsers.add_parser(
        "export",
        formatter_class=fmt,
        help="export a searched model as a TF Serving SavedModel",
        description="Rebuild a trial of a search run, load its weights and write BASE/NAME/<version>/ "
        "(signatures serving_default (uint8), serving_float, logits; metadata and warm-up "
        "requests in assets.extra). serving_default returns what the run's task predicts: "
        "classes and probabilities (segmentation), depth (depth), heatmaps and keypoints "
        "(pose), heatmaps, tags and peaks (pose-multi).",
    )
    export.add_argument("run_dir", metavar="RUN_DIR", help="search run directory (run.json, trial_<id>/)")
    export.add_argument(
        "--trial", default="best", help="trial id, or 'best' = highest score among COMPLETED trials"
    )
    export.add_argument("--name", default=None, help="model name (default: the run directory's name)")
    export.add_argument("--base", default="exports", help="TF Serving model base directory")
    export.add_argument(
        "--version", type=int, default=None, help="version number (default: the next free one)"
    )
    export.add_argument(
        "--dynamic",
        action="store_true",
        help="keep the early exits and their gates (a fabric's eel_<column> heads): serving_default "
        "answers at the first confident exit and also returns exit and confidence "
        "(tfnas.serving.dynamic); without it the export is the last exit only",
    )
    export.add_argument(
        "--exit-thresholds",
        default=None,
        metavar="T1,T2,...",
        help="with --dynamic: one confidence threshold per early exit, e.g. 1,0.9 (inf: that exit "
        "never answers); default: the thesis' gates",
    )
    export.set_defaults(func=run_export)

    convert = subparsers.add_parser(
        "convert",
        formatter_class=fmt,
        help="convert an exported SavedModel to ONNX, TensorRT, TF-TRT or TFLite",
        description="Convert an exported SavedModel version directory for edge devices, at the deployment size "
        "(--input-size, --batch). A fixed size gives every op its native form (dilated convolutions "
        "as one Conv, no layout transposes inside the graph, one Resize per resize); "
        "'--input-size dynamic' (onnx, tflite) keeps any height and width at a cost: about 6x the "
        "ONNX nodes and 2.5x the onnxruntime latency (docs/serving.md). tensorrt writes the "
        "fixed-size ONNX model (logits signature; INT8: its Q/DQ copy calibrated on "
        "--calibration-images) and a trtexec script, and builds the engine where TensorRT is "
        "installed (on the Jetson).",
    )
    convert.add_argument(
        "saved_model", metavar="SAVED_MODEL", help="SavedModel version directory, e.g. exports/NAME/1"
    )
    convert.add_argument("--to", required=True, choices=CONVERT_TARGETS, help="target format")
    convert.add_argument(
        "--precision",
        default=None,
        choices=("fp32", "fp16", "int8"),
        help="precision for tensorrt/tftrt (default fp16), tflite (default fp32; fp16 = float16 "
        "weights, int8 = full-integer) and onnx (default fp32; int8 = Q/DQ model)",
    )
    convert.add_argument(
        "--input-size",
        default="512x512",
        metavar="HxW",
        help="deployment image size the onnx, tensorrt and tflite graphs are converted for "
        "(a multiple of the network's output stride), or 'dynamic' (onnx, tflite: any "
        "size, a larger and slower graph)",
    )
    convert.add_argument("--batch", type=int, default=1, help="fixed batch size with --input-size HxW")
    convert.add_argument(
        "--out",
        default=None,
        help="output file (onnx, tflite) or folder (tensorrt, tftrt); default: "
        "<name>_v<version>[_<precision>] in the current directory",
    )
    convert.add_argument(
        "--calibration-images",
        default=None,
        help="folder of your images for int8 calibration (required for int8; resized to the input size)",
    )
    convert.add_argument(
        "--signature",
        default="serving_default",
        choices=("serving_default", "serving_float", "logits"),
        help="signature converted to ONNX (serving_default and serving_float return the export's "
        "task outputs, logits the raw network)",
    )
    convert.add_argument("--opset", type=int, default=17, help="ONNX opset")
    convert.add_argument("--input-shape", default=None, help=argparse.SUPPRESS)  # older NxHxWx3 form
    convert.set_defaults(func=run_convert)

    serve = subparsers.add_parser(
        "serve",
        formatter_class=fmt,
        help="local preview server with TF Serving's REST and gRPC API",
        description="Serve the SavedModels under BASE_DIR (NAME/<version>/, optional models.config) with "
        "TF Serving's REST (/v1/models/NAME[:predict|/metadata]) and gRPC Predict API. A "
        "development aid, not a production server: use serving/docker-compose.yml for that.",
    )
    serve.add_argument("base_dir", metavar="BASE_DIR", help="export base directory")
    serve.add_argument("--rest-port", type=int, default=8501, help="REST port (0: any free port)")
    serve.add_argument(
        "--grpc-port", type=int, default=8500, help="gRPC port (0: any free port, -1: no gRPC)"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind")
    serve.set_defaults(func=run_serve)
    return {"export": export, "convert": convert, "serve": serve}
