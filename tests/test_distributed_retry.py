"""A worker's call that the chief drops by going away is repeated, and no trial ends twice.

A real gRPC server serves a real keras-tuner Oracle; its servicer drops the first
`CreateTrial` before doing anything and the first `EndTrial` after recording it (the
answer lost, as when the chief dies between the two), with the status a dead chief's
socket gives the worker: UNAVAILABLE.
"""

from concurrent import futures

import grpc
import keras_tuner
import pytest
from keras_tuner.src import protos
from keras_tuner.src.distribute import oracle_client
from keras_tuner.src.distribute.oracle_chief import OracleServicer

from tfnas.distributed import RetryingStub, free_port


class DroppingServicer(OracleServicer):
    """Drops the first CreateTrial unanswered, and answers the first EndTrial with UNAVAILABLE after recording it."""

    def __init__(self, oracle):
        super().__init__(oracle)
        self.dropped = set()

    def _drop_once(self, name, context):
        if name not in self.dropped:
            self.dropped.add(name)
            context.abort(grpc.StatusCode.UNAVAILABLE, "Socket closed")

    def CreateTrial(self, request, context):
        self._drop_once("CreateTrial", context)
        return super().CreateTrial(request, context)

    def EndTrial(self, request, context):
        answer = super().EndTrial(request, context)
        self._drop_once("EndTrial", context)
        return answer


@pytest.fixture
def chief(tmp_path, monkeypatch):
    hp = keras_tuner.HyperParameters()
    hp.Choice("op", [0, 1, 2])
    oracle = keras_tuner.oracles.RandomSearchOracle(
        objective=keras_tuner.Objective("score", "max"), max_trials=5, hyperparameters=hp, seed=0
    )
    oracle._set_project_dir(str(tmp_path), "chief")
    port = free_port()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=1))
    servicer = DroppingServicer(oracle)
    protos.get_service_grpc().add_OracleServicer_to_server(servicer, server)
    server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    for name, value in (("IP", "127.0.0.1"), ("PORT", str(port))):
        monkeypatch.setenv(f"KERASTUNER_ORACLE_{name}", value)
    monkeypatch.setenv("KERASTUNER_TUNER_ID", "tuner0")
    monkeypatch.setattr(oracle_client, "TIMEOUT", 30.0)
    yield oracle, servicer
    server.stop(grace=None)


def test_dropped_calls_are_repeated_and_a_recorded_end_is_not_repeated(chief):
    oracle, servicer = chief
    client = oracle_client.OracleClient(oracle)
    messages = []
    client.stub = RetryingStub(client.stub, log=messages.append)

    trial = client.create_trial("tuner0")
    assert trial.status == "RUNNING" and oracle.ongoing_trials["tuner0"].trial_id == trial.trial_id
    assert len(messages) == 1 and "dropped CreateTrial (Socket closed)" in messages[0]

    client.update_trial(trial.trial_id, {"score": 0.5})
    trial.status = "COMPLETED"
    client.end_trial(trial)
    assert servicer.dropped == {"CreateTrial", "EndTrial"} and len(messages) == 2
    assert oracle.end_order == [trial.trial_id]  # ended once, though its answer was lost
    assert oracle._run_times[trial.trial_id] == 1
    assert oracle.trials[trial.trial_id].status == "COMPLETED" and not oracle.ongoing_trials


def test_other_errors_are_not_repeated(chief):
    oracle, _ = chief
    client = oracle_client.OracleClient(oracle)
    messages = []
    client.stub = RetryingStub(client.stub, log=messages.append)
    with pytest.raises(grpc.RpcError) as raised:
        client.get_trial("no-such-trial")  # the Oracle raises KeyError: UNKNOWN, not UNAVAILABLE
    assert raised.value.code() == grpc.StatusCode.UNKNOWN and messages == []
