"""Per-epoch checkpoints of a full training (`tfnas.training.full`), crash-safe.

    directory/checkpoint/state.json                 epoch, settings, history: the commit record
    directory/checkpoint/epoch_<n>/network.weights.h5
    directory/checkpoint/epoch_<n>/optimizer.npz    every optimizer group's variables

An epoch's files are written into a new folder first and `state.json` is renamed over the
old one last (`tfnas.io`), so whatever moment a run is killed at, `state.json` names a whole
epoch; folders it does not name (older ones, or one cut short) are removed.
"""

import os
import shutil

import numpy as np

from tfnas.io import atomic_path, atomic_write_json, read_json

CHECKPOINT_DIR = "checkpoint"
STATE_FILE = "state.json"
NETWORK_WEIGHTS = "network.weights.h5"
OPTIMIZER_STATE = "optimizer.npz"


class Checkpoint:
    """The per-epoch checkpoints of a training in `directory/checkpoint` (the module docstring).

    Args:
        directory: str, the training's directory.
    """

    def __init__(self, directory):
        self.path = os.path.join(os.fspath(directory), CHECKPOINT_DIR)
        self.state_file = os.path.join(self.path, STATE_FILE)

    def read(self):
        """The last committed state (dict with `epoch`, `files`, `settings`, `history`) or None."""
        if not os.path.exists(self.state_file):
            return None
        return read_json(self.state_file, "the training checkpoint's state")

    def save(self, epoch, network, groups, settings, history):
        """Writes epoch `epoch`'s weights and optimizer state, then commits `state.json`."""
        name = f"epoch_{epoch:04d}"
        folder = os.path.join(self.path, name)
        shutil.rmtree(folder, ignore_errors=True)  # left by a run killed while writing it
        os.makedirs(folder)
        with atomic_path(os.path.join(folder, NETWORK_WEIGHTS)) as tmp:
            network.save_weights(tmp)
        arrays = {
            f"group{g}_{i}": np.asarray(v.numpy())
            for g, group in enumerate(groups)
            for i, v in enumerate(group.optimizer.variables)
        }
        with atomic_path(os.path.join(folder, OPTIMIZER_STATE)) as tmp:
            np.savez(tmp, **arrays)
        atomic_write_json(
            self.state_file, {"epoch": epoch, "files": name, "settings": settings, "history": history}
        )
        self.clean(keep=name)

    def network_weights(self, state):
        """The network's weights file of a committed `state`."""
        return os.path.join(self.path, state["files"], NETWORK_WEIGHTS)

    def restore(self, state, network, groups):
        """Loads the weights and optimizer state of a committed `state`."""
        folder = os.path.join(self.path, state["files"])
        network.load_weights(self.network_weights(state))
        with np.load(os.path.join(folder, OPTIMIZER_STATE)) as arrays:
            for g, group in enumerate(groups):
                variables = group.optimizer.variables
                for i, variable in enumerate(variables):
                    key = f"group{g}_{i}"
                    if key not in arrays or arrays[key].shape != tuple(variable.shape):
                        raise ValueError(
                            f"{folder}: the optimizer state does not fit this model (at {key}); "
                            "resume with the model and settings the training started with"
                        )
                    variable.assign(arrays[key])
        for group in groups:
            group.sync()

    def clean(self, keep=None):
        """Removes epoch folders other than `keep` (older ones, or one cut short by a kill)."""
        if not os.path.isdir(self.path):
            return
        for entry in os.listdir(self.path):
            if entry.startswith("epoch_") and entry != keep:
                shutil.rmtree(os.path.join(self.path, entry), ignore_errors=True)
