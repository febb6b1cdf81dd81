"""Shared test set-up: quiet TensorFlow logs, deterministic seeds."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)


def pytest_collection_modifyitems(config, items):
    """Runs the slow tests and the notebooks first (stable order otherwise).

    `make test` runs two processes (pytest-xdist, a file per process at a time); handing out
    the minute-long files first leaves the short ones to fill the end, instead of one process
    idling while the other finishes a long file.
    """
    items.sort(key=lambda item: 0 if item.get_closest_marker("slow") or item.path.suffix == ".ipynb" else 1)
