"""Distributed search the keras-tuner way: one chief Oracle, N workers running trials.

keras-tuner's convention: every process runs the same command with
`KERASTUNER_TUNER_ID` = `chief` (serves the Oracle over gRPC, runs no trial) or a worker
id (`tuner0`, `tuner1`, ...), and `KERASTUNER_ORACLE_IP` / `KERASTUNER_ORACLE_PORT` naming
the chief. tfnas adds what a search needs on top of that:

- the chief records the run (`run.json`) before serving, so workers join its search
  directory (shared storage, or one machine);
- the per-search preparation (encoder warm-up, feature cache, teacher logits) runs under a
  file lock in the search directory (`preparation_lock`): the first worker computes it,
  the others wait and reuse it, so no worker computes it twice and none reads a
  half-written cache;
- a worker that cannot reach the chief says so within `chief_timeout` seconds
  (`wait_for_chief`) instead of waiting keras-tuner's hour;
- the chief (`serve_oracle`) stops within a second of its last worker, where keras-tuner's
  server checks every 20 s;
- a worker whose call was in flight when the chief died retries it until the chief is back
  (`RetryingStub`), instead of ending with "Socket closed";
- `launch(...)` (`tfnas search --workers N`) starts the chief and N workers on one machine,
  splits the CPU threads between them, restarts a worker that dies (keras-tuner hands a
  restarted worker the trial it was running, so the trial is re-run and counted once), and
  stops them all on Ctrl-C.
"""

import os
import signal
import socket
import subprocess
import sys
import time

from keras_tuner.src.distribute import utils as dist_utils

from tfnas.io import file_lock

#: The environment variables of keras-tuner's distributed mode.
TUNER_ID, ORACLE_IP, ORACLE_PORT = "KERASTUNER_TUNER_ID", "KERASTUNER_ORACLE_IP", "KERASTUNER_ORACLE_PORT"
#: Seconds a worker waits for the chief before it gives up with a clear message.
DEFAULT_CHIEF_TIMEOUT = 120.0
LOCK_FILE = "prepare.lock"
#: Seconds between the chief's checks that its workers are done.
CHIEF_POLL = 1.0


def role():
    """`"chief"`, `"worker"` or None (not a distributed search), from the environment."""
    if not dist_utils.has_chief_oracle():
        return None
    return "chief" if dist_utils.is_chief_oracle() else "worker"


def chief_address():
    """`"IP:PORT"` of the chief, from the environment."""
    return f"{os.environ.get(ORACLE_IP)}:{os.environ.get(ORACLE_PORT)}"


def wait_for_chief(timeout=DEFAULT_CHIEF_TIMEOUT):
    """Waits until the chief's Oracle server answers; bounds keras-tuner's own waits too.

    keras-tuner's workers call the chief with `wait_for_ready=True` and a one-hour deadline,
    so a worker started without a chief hangs for an hour. This checks the connection first
    and lowers that deadline to `timeout`: a chief that dies and comes back (`--resume`)
    within it is reconnected to, one that does not is reported.

    Args:
        timeout: float, seconds.

    Raises:
        ConnectionError: naming the address and what to check.
    """
    import grpc
    from keras_tuner.src.distribute import oracle_client

    oracle_client.TIMEOUT = float(timeout)
    address = chief_address()
    channel = grpc.insecure_channel(address)
    try:
        grpc.channel_ready_future(channel).result(timeout=float(timeout))
    except grpc.FutureTimeoutError:
        raise ConnectionError(
            f"worker {os.environ.get(TUNER_ID)!r} cannot reach the chief at {address} within "
            f"{timeout:.0f} s; start the chief first ({TUNER_ID}=chief with the same command) "
            f"and check {ORACLE_IP}/{ORACLE_PORT} and the firewall"
        ) from None
    finally:
        channel.close()


class RetryingStub:
    """A worker's Oracle stub that repeats a call the chief dropped by going away.

    keras-tuner's `OracleClient` calls with `wait_for_ready=True`, which waits for a chief
    that is not up yet; but a call in flight when the chief dies fails with UNAVAILABLE
    ("Socket closed") and ended the worker, and a chief restarted with `--resume` then waited
    for that worker's trial forever. This repeats such a call (each repeat waits for the chief
    again) until keras-tuner's deadline, which `wait_for_chief` sets to `--chief-timeout`.
    The restarted chief hands a worker back its running trial, so `CreateTrial` is safe to
    repeat; `EndTrial` is repeated only if the chief does not already hold the trial as
    ended (the lost answer may have followed a recorded end), so no trial ends twice.

    Args:
        stub: keras-tuner's `OracleStub` (`OracleClient.stub`).
        log: callable for a one-line message per repeated call.
    """

    def __init__(self, stub, log=print):
        self._stub = stub
        self._log = log

    def __getattr__(self, name):
        method = getattr(self._stub, name)
        return lambda request, **kwargs: self._call(name, method, request, **kwargs)

    def _call(self, name, method, request, **kwargs):
        import grpc
        from keras_tuner.src.distribute import oracle_client

        deadline = time.monotonic() + float(oracle_client.TIMEOUT)
        repeat = False
        while True:
            try:
                if repeat and name == "EndTrial" and self._ended(request.trial.trial_id, kwargs):
                    return None  # recorded before the answer was lost; OracleClient ignores it
                return method(request, **kwargs)
            except grpc.RpcError as err:
                left = deadline - time.monotonic()
                if err.code() != grpc.StatusCode.UNAVAILABLE or left <= 0:
                    raise
                self._log(
                    f"tfnas: worker {os.environ.get(TUNER_ID)}: the chief dropped {name} "
                    f"({err.details()}); calling again when it is back (for up to {left:.0f} s)"
                )
                kwargs["timeout"] = left
                repeat = True
                time.sleep(1.0)

    def _ended(self, trial_id, kwargs):
        """Whether the chief holds trial `trial_id` as ended (not RUNNING)."""
        from keras_tuner.src import protos
        from keras_tuner.src.engine import trial as trial_module

        response = self._stub.GetTrial(protos.get_service().GetTrialRequest(trial_id=trial_id), **kwargs)
        return trial_module.Trial.from_proto(response.trial).status != trial_module.TrialStatus.RUNNING


def serve_oracle(oracle, poll=CHIEF_POLL):
    """Serves `oracle` to the workers over gRPC until every worker is done; the chief's role.

    keras-tuner's `oracle_chief.start_server` with a shorter wait. Once the first worker has
    been told to stop, keras-tuner's server checks every 20 s whether the others are done, so
    a chief outlived its search by up to 20 s; this checks every `poll` seconds.

    Args:
        oracle: the chief's `keras_tuner.Oracle`.
        poll: float, seconds between checks.
    """
    from concurrent import futures

    import grpc
    from keras_tuner.src import protos
    from keras_tuner.src.distribute.oracle_chief import OracleServicer, exit_chief

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = OracleServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    server.add_insecure_port(f"{os.environ[ORACLE_IP]}:{os.environ[ORACLE_PORT]}")
    server.start()
    try:
        while not (servicer.stop_triggered and exit_chief(oracle)):
            time.sleep(poll)
    finally:
        server.stop(grace=1.0).wait()  # lets a last answer to a worker go out


def preparation_lock(directory, log=print):
    """The lock the per-search preparation runs under (`directory/prepare.lock`).

    Args:
        directory: str, the search directory.
        log: callable for a one-line message when another process holds the lock.

    Returns:
        A context manager (`tfnas.io.file_lock`).
    """
    os.makedirs(directory, exist_ok=True)
    return file_lock(
        os.path.join(directory, LOCK_FILE),
        on_wait=lambda: log(
            "waiting for another worker to finish preparing the search (warm-up, feature cache)"
        ),
    )


def free_port():
    """A TCP port free on this machine now (for the chief of a one-machine search)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(argv, workers, port=None, max_restarts=3, threads=None, log=print, python=sys.executable):
    """Runs a search with a chief and `workers` worker processes on this machine.

    Each process runs `python -m tfnas.cli <argv>` with keras-tuner's variables set. A
    worker that dies (killed, out of memory) is restarted with the same id, up to
    `max_restarts` times each: the chief hands it back the trial it was running.

    Args:
        argv: list of str, the `tfnas` arguments (`search ... --out DIR`), without
            `--workers`.
        workers: int >= 1.
        port: int or None, the chief's port (None: a free one).
        max_restarts: int, restarts per worker before the search is given up.
        threads: int or None, TensorFlow CPU threads per worker (None: the cores divided
            among the workers, at least 1).
        log: callable for progress lines.
        python: the interpreter to run.

    Returns:
        int exit status: 0 when the chief and every worker ended cleanly.
    """
    if int(workers) < 1:
        raise ValueError(f"workers={workers!r} must be at least 1")
    port = port or free_port()
    threads = threads or max(1, (os.cpu_count() or 1) // int(workers))
    base = dict(os.environ, **{ORACLE_IP: "127.0.0.1", ORACLE_PORT: str(port)})

    def start(tuner_id):
        env = dict(base, **{TUNER_ID: tuner_id, "TFNAS_THREADS": str(threads)})
        return subprocess.Popen([python, "-m", "tfnas.cli", *argv], env=env)

    procs = {"chief": start("chief")}
    ids = [f"tuner{i}" for i in range(int(workers))]
    for tuner_id in ids:
        procs[tuner_id] = start(tuner_id)
    log(f"tfnas: chief on 127.0.0.1:{port} and {workers} worker(s) ({threads} CPU thread(s) each)")
    restarts = dict.fromkeys(ids, 0)
    status = 0
    try:
        while any(procs[t].poll() is None for t in ids):
            time.sleep(0.5)
            for tuner_id in ids:
                code = procs[tuner_id].poll()
                if code in (None, 0) or restarts[tuner_id] < 0:
                    continue
                if restarts[tuner_id] >= max_restarts:
                    log(
                        f"tfnas: worker {tuner_id} failed {max_restarts + 1} times (exit {code}); "
                        "stopping the search (resume it with --resume)"
                    )
                    restarts[tuner_id] = -1
                    status = 1
                    raise KeyboardInterrupt
                restarts[tuner_id] += 1
                log(
                    f"tfnas: worker {tuner_id} ended with exit status {code}; restarting it "
                    f"({restarts[tuner_id]} of {max_restarts}): its trial is run again"
                )
                procs[tuner_id] = start(tuner_id)
        status = status or max((procs[t].returncode or 0) for t in ids)
        procs["chief"].wait()
        return status or procs["chief"].returncode
    except KeyboardInterrupt:
        for proc in procs.values():
            if proc.poll() is None:
                proc.send_signal(signal.SIGINT)
        for proc in procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        return status or 130
