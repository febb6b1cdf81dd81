"""The errors of the `tfnas` command, reported by `tfnas.cli.main` on one line.

`UsageError` is a bad command-line value found after parsing (exit status 2);
`describe_error` turns any other error into one line naming what went wrong and what to do,
such as the package to install for a missing import (exit status 1).
"""


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
