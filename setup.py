"""tfnas: neural architecture search for compact, fast dense-prediction networks in Keras."""

import os
import re

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def _read(name):
    path = os.path.join(HERE, name)
    return open(path, encoding="utf-8").read() if os.path.exists(path) else ""


# One version: tfnas/__init__.py's __version__.
VERSION = re.search(r'^__version__ = "([^"]+)"', _read("tfnas/__init__.py"), re.M).group(1)

setup(
    name="tfnas",
    version=VERSION,
    description="NAS for compact dense-prediction networks in Keras, shipped to TF Serving and Jetson",
    long_description=_read("README.md"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # tfnas/ and its subpackages, plus tuners/ and serving/ installed as tfnas.tuners and
    # tfnas.serving (docs/architecture.md, "Layout of the source tree").
    packages=find_packages(include=["tfnas", "tfnas.*"]) + ["tfnas.tuners", "tfnas.serving"],
    package_dir={"tfnas.tuners": "tuners", "tfnas.serving": "serving"},
    package_data={"tfnas.serving": ["docker-compose.yml"], "tfnas.pretrained": ["*.weights.h5", "*.json"]},
    # TensorFlow itself is a requirement: the `tensorflow` wheel runs on CPUs, and it is what
    # tensorflow-serving-api (the TF Serving protos for export warm-up, models.config, gRPC)
    # requires; the `gpu` extra adds the CUDA libraries to the same package.
    install_requires=[
        "tensorflow==2.21.0",
        "keras==3.15.1",
        "keras-tuner==1.4.8",
        "tensorboard==2.21.0",
        "numpy==2.4.6",
        "scikit-learn",
        "pillow",
        "protobuf",
        "grpcio",
        "tensorflow-serving-api==2.21.0",
        "tensorflow-datasets==4.9.10",
        "importlib_resources",
        "tf2onnx==1.17.0",
        "onnx==1.23.2",
        "onnxruntime==1.31.1",
        "matplotlib",  # tfnas report
        "pycocotools==2.0.11",  # COCO keypoint AP of the bottom-up pose task
        "scipy",  # people grouping of the bottom-up pose task
        # quantization-aware training (tfnas.serving.qat): tfmot quantizes tf_keras (Keras 2) models
        # only; tf_keras must match TensorFlow's minor version. tfmot pins absl-py~=1.2.
        "tf_keras==2.21.0",
        "tensorflow-model-optimization==0.8.1",
    ],
    extras_require={
        "cpu": [],  # kept so that `pip install tfnas[cpu]` keeps working: the base install is CPU
        "gpu": ["tensorflow[and-cuda]==2.21.0"],
        "test": ["pytest==9.2", "pytest-xdist==3.8.0", "nbmake==1.5.5", "nbformat", "ipykernel", "ruff"],
    },
    entry_points={"console_scripts": ["tfnas=tfnas.cli:main"]},
)
