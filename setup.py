"""tfnas: neural architecture search for compact, fast dense-prediction networks in Keras."""
from setuptools import setup

setup(
    name="tfnas",
    version="0.1.0",
    description="NAS for compact dense-prediction networks in Keras, shipped to TF Serving and Jetson",
    long_description=open("README.md").read() if __import__("os").path.exists("README.md") else "",
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=[
        "tfnas", "tfnas.cells", "tfnas.spaces", "tfnas.tasks", "tfnas.training", "tfnas.data",
        "tfnas.tuners", "tfnas.serving",
    ],
    package_dir={"tfnas.tuners": "tuners", "tfnas.serving": "serving"},
    package_data={"tfnas.serving": ["docker-compose.yml"]},
    install_requires=[
        "keras==3.15.1",
        "keras-tuner==1.4.8",
        "tensorboard==2.21.0",
        "numpy==2.4.6",
        "scikit-learn",
        "pillow",
        "tensorflow-datasets==4.9.10",
        "importlib_resources",
        "tf2onnx==1.17.0",
        "onnx==1.23.2",
        "onnxruntime==1.31.1",
    ],
    extras_require={
        "cpu": ["tensorflow-cpu==2.21.0"],
        "gpu": ["tensorflow[and-cuda]==2.21.0"],
        "serving": ["grpcio"],
        "test": ["pytest==9.2", "nbmake==1.5.5", "nbformat", "ipykernel"],
    },
    entry_points={"console_scripts": ["tfnas=tfnas.cli:main"]},
)
