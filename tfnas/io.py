"""Crash-safe file writes: a file is either the old one or the whole new one, never half.

A search can be killed at any moment (SIGKILL, a lost machine) and resumed, so every file
it reads back (`run.json`, the Oracle state, controller and trial weights, the feature
cache) is written to a temporary name beside the destination and renamed over it;
`os.replace` is atomic on POSIX and Windows.
"""

import contextlib
import json
import os


@contextlib.contextmanager
def atomic_path(path):
    """Yields a temporary path beside `path`; renames it over `path` if the block succeeds.

    Use it for writers that take a file name (`model.save_weights`, `np.savez`):

        with atomic_path("trial_0/model.weights.h5") as tmp:
            model.save_weights(tmp)

    The temporary name keeps the destination's extensions (Keras checks `.weights.h5`) and
    is removed when the block raises.

    Args:
        path: str, the destination file.

    Yields:
        str, the temporary file to write.
    """
    directory, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(directory, f".tmp{os.getpid()}.{name}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def atomic_write_json(path, data, indent=1):
    """Writes `data` as JSON to `path` atomically, flushed to disk before the rename.

    Args:
        path: str, the destination file.
        data: a JSON-serialisable object.
        indent: int, JSON indentation. Default 1.
    """
    with atomic_path(path) as tmp:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=indent)
            f.flush()
            os.fsync(f.fileno())


def read_json(path, what):
    """Reads a JSON file, with errors that say which file and what it should have been.

    Args:
        path: str.
        what: str, what the file is, for the message (e.g. "the search's run.json").

    Returns:
        The parsed object.

    Raises:
        FileNotFoundError: if `path` does not exist.
        ValueError: if it is not valid JSON (e.g. cut short by a crash of a tool that
            wrote it without `atomic_write_json`).
    """
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist ({what})")
    with open(path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON ({what}): {err}") from None


def try_read_json(path):
    """Reads a JSON file that may be missing or still being written by another process.

    keras-tuner writes `trial.json` and `oracle.json` in place, so a reader of a running
    search can find one cut short; readers that must work at any moment of a search
    (`tfnas results`, `tfnas report`, polling tests) skip such a file and say why.

    Args:
        path: str.

    Returns:
        `(data, None)`, or `(None, reason)` with a one-line reason naming the file.
    """
    try:
        with open(path) as f:
            return json.load(f), None
    except FileNotFoundError:
        return None, f"{path} does not exist"
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        return None, f"{path} is not readable JSON yet ({getattr(err, 'msg', err)})"


@contextlib.contextmanager
def file_lock(path, on_wait=None):
    """An exclusive lock on the file `path` (created if missing), held for the block.

    Processes that share a search directory (the workers of a distributed search) take
    turns through it. `fcntl.flock` on a local disk; on NFS (v4) the Linux client maps it
    to a lock the server keeps, so workers on several machines queue too.

    Args:
        path: str, the lock file.
        on_wait: optional callable, called once when another process holds the lock.
    """
    import fcntl

    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
