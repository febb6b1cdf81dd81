"""Shared test set-up: quiet TensorFlow logs, deterministic seeds."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import random  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed(request):
    if request.node.get_closest_marker("reuses_traced_functions"):
        # Python and NumPy only: tf.random.set_seed (in keras.utils.set_random_seed) also
        # empties TensorFlow's kernel cache, so a function a module fixture traced would be
        # instantiated again on its first call in the test (4.5 s for a supernet step).
        random.seed(0)
        np.random.seed(0)
        return
    keras.utils.set_random_seed(0)


def pytest_collection_modifyitems(config, items):
    """Runs the slow tests and the notebooks first (stable order otherwise).

    `make test` runs two processes (pytest-xdist, a file per process at a time); handing out
    the minute-long files first leaves the short ones to fill the end, instead of one process
    idling while the other finishes a long file.
    """
    items.sort(key=lambda item: 0 if item.get_closest_marker("slow") or item.path.suffix == ".ipynb" else 1)
