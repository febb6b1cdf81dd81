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
def run_export(args):
    """Handler of `tfnas export`: exports a trial of a search run for TF Serving."""
    from tfnas.search_dir import SearchDir
    from tfnas.serving.savedmodel import export

    model, metadata = SearchDir(args.run_dir).load_trial_model(args.trial)
    name = args.name or os.path.basename(os.path.normpath(args.run_dir))
    path = export(model, args.base, name, version=args.version, metadata=metadata)
    print(path)
    return 0


def _calibration(args, needed):
    if not args.calibration_images:
        if needed:
            raise ValueError("int8 needs --calibration-images DIR (a few dozen of your own images)")
        return None
    from tfnas.serving.tftrt import load_images

    return load_images(args.calibration_images)


def _stem(saved_model):
    parts = os.path.normpath(os.path.abspath(saved_model)).split(os.sep)
    return f"{parts[-2]}_v{parts[-1]}" if parts[-1].isdigit() else parts[-1]


def run_convert(args):
    """Handler of `tfnas convert`: ONNX, TensorRT (script or engine), TF-TRT or TFLite."""
    precision = (args.precision or {"tflite": "fp32"}.get(args.to, "fp16")).lower()
    stem = _stem(args.saved_model)
    if args.to == "onnx":
        from tfnas.serving.onnx_export import to_onnx

        report = to_onnx(args.saved_model, args.out or f"{stem}.onnx", opset=args.opset, signature=args.signature)
        print(json.dumps(report, indent=2))
    elif args.to == "tflite":
        from tfnas.serving.tflite import to_tflite

        quantization = {"fp32": "none", "fp16": "float16", "int8": "int8"}[precision]
        out = args.out or f"{stem}_{precision}.tflite"
        print(to_tflite(args.saved_model, out, quantization, _calibration(args, precision == "int8")))
    elif args.to == "tftrt":
        from tfnas.serving.tftrt import to_tftrt

        out = args.out or f"{stem}_tftrt_{precision}"
        print(to_tftrt(args.saved_model, out, precision.upper(), _calibration(args, precision == "int8")))
    else:
        return _convert_tensorrt(args, precision, stem)
    return 0


def _convert_tensorrt(args, precision, stem):
    import numpy as np

    from tfnas.serving import tensorrt
    from tfnas.serving.onnx_export import to_onnx

    shape = tuple(int(d) for d in args.input_shape.lower().split("x"))
    out = args.out or f"{stem}_tensorrt_{precision}"
    os.makedirs(out, exist_ok=True)
    onnx_path = os.path.join(out, "model.onnx")
    to_onnx(args.saved_model, onnx_path, opset=args.opset, signature="logits")
    script = tensorrt.write_trtexec_script(onnx_path, out, precision, shape)
    try:
        tensorrt._import_tensorrt()  # noqa: SLF001 - same check and message as build_engine
    except RuntimeError as e:
        print(f"wrote {onnx_path} and {script}\n{e}", file=sys.stderr)
        return 0
    data = _calibration(args, precision == "int8")
    if data is not None:
        import tensorflow as tf

        data = [tf.image.resize(d, shape[1:3]).numpy().astype(np.uint8) for d in data]
    engine = tensorrt.build_engine(onnx_path, os.path.join(out, f"model_{precision}.engine"), precision,
                                   data, input_shape=shape)
    print(engine)
    print(json.dumps(tensorrt.time_engine(engine)))
    return 0


def run_serve(args):
    """Handler of `tfnas serve`: the local preview server (a development aid)."""
    from tfnas.serving.preview import PreviewServer

    server = PreviewServer(args.base_dir, host=args.host, rest_port=args.rest_port,
                           grpc_port=None if args.grpc_port < 0 else args.grpc_port)
    server.start()
    print(f"tfnas preview server (development aid, not for production): REST {server.rest_url}, "
          f"gRPC {server.grpc_target or 'off'}; models in {args.base_dir}. Ctrl-C stops.", flush=True)
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
        "export", formatter_class=fmt, help="export a searched model as a TF Serving SavedModel",
        description="Rebuild a trial of a search run, load its weights and write BASE/NAME/<version>/ "
                    "(signatures serving_default (uint8), serving_float, logits; metadata and warm-up "
                    "requests in assets.extra).")
    export.add_argument("run_dir", metavar="RUN_DIR", help="search run directory (run.json, trial_<id>/)")
    export.add_argument("--trial", default="best", help="trial id, or 'best' = highest score among COMPLETED trials")
    export.add_argument("--name", default=None, help="model name (default: the run directory's name)")
    export.add_argument("--base", default="exports", help="TF Serving model base directory")
    export.add_argument("--version", type=int, default=None, help="version number (default: the next free one)")
    export.set_defaults(func=run_export)

    convert = subparsers.add_parser(
        "convert", formatter_class=fmt, help="convert an exported SavedModel to ONNX, TensorRT, TF-TRT or TFLite",
        description="Convert an exported SavedModel version directory for edge devices. tensorrt writes the "
                    "ONNX model (logits signature) and a trtexec script, and builds the engine where TensorRT "
                    "is installed (on the Jetson).")
    convert.add_argument("saved_model", metavar="SAVED_MODEL", help="SavedModel version directory, e.g. exports/NAME/1")
    convert.add_argument("--to", required=True, choices=CONVERT_TARGETS, help="target format")
    convert.add_argument("--precision", default=None, choices=("fp32", "fp16", "int8"),
                         help="precision for tensorrt/tftrt (default fp16) and tflite (default fp32; "
                              "fp16 = float16 weights, int8 = full-integer)")
    convert.add_argument("--out", default=None,
                         help="output file (onnx, tflite) or folder (tensorrt, tftrt); default: "
                              "<name>_v<version>[_<precision>] in the current directory")
    convert.add_argument("--calibration-images", default=None,
                         help="folder of your images for int8 calibration (required for int8)")
    convert.add_argument("--signature", default="serving_default",
                         choices=("serving_default", "serving_float", "logits"), help="signature converted to ONNX")
    convert.add_argument("--opset", type=int, default=17, help="ONNX opset")
    convert.add_argument("--input-shape", default="1x512x512x3", help="TensorRT engine input shape NxHxWx3")
    convert.set_defaults(func=run_convert)

    serve = subparsers.add_parser(
        "serve", formatter_class=fmt, help="local preview server with TF Serving's REST and gRPC API",
        description="Serve the SavedModels under BASE_DIR (NAME/<version>/, optional models.config) with "
                    "TF Serving's REST (/v1/models/NAME[:predict|/metadata]) and gRPC Predict API. A "
                    "development aid, not a production server: use serving/docker-compose.yml for that.")
    serve.add_argument("base_dir", metavar="BASE_DIR", help="export base directory")
    serve.add_argument("--rest-port", type=int, default=8501, help="REST port (0: any free port)")
    serve.add_argument("--grpc-port", type=int, default=8500, help="gRPC port (0: any free port, -1: no gRPC)")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind")
    serve.set_defaults(func=run_serve)
    return {"export": export, "convert": convert, "serve": serve}
