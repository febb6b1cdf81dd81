"""Test helper for the crash tests: `tfnas` commands in processes killed with SIGKILL at chosen points.

Used by tests/test_crash_resume.py and tests/test_oneshot_crash.py. Each command runs
`tfnas.cli.main(argv)` in a process of its own, which `install` has set up, with no hook
in product code, to

- append `start <id>` / `end <id>` to a log around every `NASTuner.run_trial`, and
  `epoch <n>` after every supernet checkpoint (`tfnas.training.checkpoints.Checkpoint.save`
  returned);
- send itself SIGKILL (after logging `killed <target>`) at the n-th call of a chosen
  function, `kill_at = "<target>:<n>"` (`"none:0"`: no kill):

  - `cache`: while the feature cache is written (the n-th `.npy` file is being opened);
  - `fit`: at the start of the n-th `keras.Model.fit` (a trial's stage-1 training);
  - `save`: during the n-th `keras.Model.save_weights` (the file half written);
  - `recorded`: right after the n-th trial's `trial.json` says COMPLETED, before
    `oracle.json` is saved;
  - `supernet`: at the n-th supernet update after the first supernet checkpoint.

The processes are forked from one server process (`Runner`) that has imported TensorFlow,
Keras, keras-tuner and tfnas once and run nothing (no TensorFlow op, no thread), so each
command starts as a freshly started `python -m tfnas.cli` would, without paying the
imports (about 4 s) again every time.
"""

import json
import os
import queue
import signal
import subprocess
import sys
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

#: What `tfnas search` imports, at start or later: imported once by the server.
PRELOAD = (
    "keras",
    "keras_tuner",
    "numpy",
    "h5py",
    "tfnas.cli",
    "tfnas.cli.search",
    "tfnas.latency",
    "tfnas.objectives",
    "tfnas.oneshot.search",
    "tfnas.pretrained",
    "tfnas.serving",
    "tfnas.training.checkpoints",
    "tfnas.tuners.nas_tuner",
    "tfnas.tuners.oneshot",
)


def install(log_path, kill_at):
    """Logs trials and supernet epochs to `log_path`; SIGKILLs this process at `kill_at`."""
    import keras
    import keras_tuner
    import numpy as np

    from tfnas.oneshot.search import SupernetSearch
    from tfnas.training.checkpoints import Checkpoint
    from tfnas.tuners.nas_tuner import NASTuner

    target, _, nth = kill_at.partition(":")
    nth, calls, saved = int(nth), [0], [False]

    def log(line):
        with open(log_path, "a") as f:
            f.write(line + "\n")

    def reached():
        calls[0] += 1
        return calls[0] == nth

    def die(where):
        log(f"killed {where}")
        os.kill(os.getpid(), signal.SIGKILL)

    save = Checkpoint.save

    def logged_save(self, epoch, *args, **kwargs):
        save(self, epoch, *args, **kwargs)
        saved[0] = True
        log(f"epoch {epoch}")

    Checkpoint.save = logged_save
    run_trial = NASTuner.run_trial

    def logged_run_trial(self, trial, *args, **kwargs):
        log(f"start {trial.trial_id}")
        result = run_trial(self, trial, *args, **kwargs)
        log(f"end {trial.trial_id}")
        return result

    NASTuner.run_trial = logged_run_trial
    if target == "cache":
        open_memmap = np.lib.format.open_memmap

        def killing_open_memmap(*args, **kwargs):
            if reached():
                die("cache")
            return open_memmap(*args, **kwargs)

        np.lib.format.open_memmap = killing_open_memmap
    elif target == "fit":
        fit = keras.Model.fit

        def killing_fit(self, *args, **kwargs):
            if reached():
                die("fit")
            return fit(self, *args, **kwargs)

        keras.Model.fit = killing_fit
    elif target == "save":
        save_weights = keras.Model.save_weights

        def killing_save_weights(self, filepath, *args, **kwargs):
            if reached():
                with open(filepath, "wb") as f:  # what a save cut short leaves
                    f.write(b"\x89HDF\r\n\x1a\n" + b"\0" * 4096)
                die("save")
            return save_weights(self, filepath, *args, **kwargs)

        keras.Model.save_weights = killing_save_weights
    elif target == "recorded":
        oracle_cls = keras_tuner.Oracle
        save_trial = oracle_cls._save_trial

        def killing_save_trial(self, trial):
            save_trial(self, trial)
            if trial.status == "COMPLETED" and reached():
                die("recorded")

        oracle_cls._save_trial = killing_save_trial
    elif target == "supernet":
        build = SupernetSearch._build

        def killing_build(self, image_size):
            built = self.supernet is not None
            build(self, image_size)
            if built:
                return
            step = self._step

            def killing_step(*args):
                if saved[0] and reached():
                    die("supernet")
                return step(*args)

            self._step = killing_step

        SupernetSearch._build = killing_build
    elif target != "none":
        raise ValueError(f"unknown kill point {kill_at!r}")


def _child(request):
    """In a forked child of the server: run one command as `python -m tfnas.cli` would; never returns."""
    code = 1
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        out = os.open(request["output"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(null, 0)
        os.dup2(out, 1)
        os.dup2(out, 2)
        install(request["log"], request["kill_at"])
        from tfnas.cli import main

        try:
            code = main(request["argv"])
        except SystemExit as exit_:
            code = exit_.code
        code = 0 if code is None else code if isinstance(code, int) else 1
    except BaseException:  # noqa: BLE001 (reported in the output, like an uncaught error)
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        try:
            import atexit

            atexit._run_exitfuncs()  # noqa: SLF001 (what interpreter exit would run)
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def _serve():
    """The server: imports `PRELOAD`, then forks one child per request line on stdin.

    Answers each request with a line `{"pid": ...}` once forked and `{"returncode": ...}`
    once the child has ended (negative: killed by that signal, as `subprocess` reports it).
    """
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    answer = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        answer.write(json.dumps({"pid": pid}) + "\n")
        answer.flush()
        _, status = os.waitpid(pid, 0)
        returncode = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
        answer.write(json.dumps({"returncode": returncode}) + "\n")
        answer.flush()


class Run:
    """A command `Runner.start`ed; `Runner.finish` waits for it."""

    def __init__(self, output, log, log_start):
        self.output, self.log, self.log_start = output, log, log_start


class Runner:
    """Runs `tfnas` commands one at a time, each in a process of its own killed at a chosen point.

    Args:
        folder: a `pathlib.Path` for the outputs and the log (`folder / "search.log"`).
    """

    def __init__(self, folder):
        self.folder = folder
        self.log = folder / "search.log"
        self.runs = 0
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        self.errors = folder / "server.err"  # the server's own messages (TensorFlow's import)
        with open(self.errors, "w") as errors:
            self.server = subprocess.Popen(
                [sys.executable, "-c", "from tests._kill import _serve; _serve()"],
                cwd=ROOT,
                env=env,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                text=True,
            )
        self.answers = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.server.stdout:
            self.answers.put(json.loads(line))
        self.answers.put(None)

    def _answer(self, key, timeout):
        answer = self.answers.get(timeout=timeout)
        assert answer is not None, (
            f"the server exited with {self.server.wait()}: {self.errors.read_text()[-3000:]}"
        )
        return answer[key]

    def start(self, argv, kill_at="none:0"):
        """Starts `tfnas ARGV`, killed at `kill_at` (see the module docstring); returns a `Run`.

        Returns at once: the command runs while the caller goes on, until `finish`.
        """
        self.runs += 1
        output = self.folder / f"run{self.runs}.out"
        log_start = len(self.log.read_text().splitlines()) if self.log.exists() else 0
        request = {
            "argv": list(argv),
            "kill_at": kill_at,
            "log": str(self.log),
            "output": str(output),
        }
        self.server.stdin.write(json.dumps(request) + "\n")
        self.server.stdin.flush()
        return Run(output, self.log, log_start)

    def finish(self, run, timeout=600):
        """Waits for `run`; returns `(returncode, output, the lines it logged)`."""
        pid = self._answer("pid", 600)  # the server's imports first, if it has just started
        try:
            returncode = self._answer("returncode", timeout)
        except queue.Empty:
            os.kill(pid, signal.SIGKILL)
            raise AssertionError(f"{run.output} did not end within {timeout} s") from None
        output = run.output.read_text()
        lines = run.log.read_text().splitlines()[run.log_start :] if run.log.exists() else []
        return returncode, output, lines

    def run(self, argv, kill_at="none:0", timeout=600):
        """`start` and `finish`."""
        return self.finish(self.start(argv, kill_at), timeout)

    def close(self):
        """Stops the server."""
        self.server.stdin.close()
        try:
            self.server.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.server.kill()
            self.server.wait()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
