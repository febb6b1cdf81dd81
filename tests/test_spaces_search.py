"""The template and DPC spaces search end to end through NASTuner, each with one of the Oracles.

One trial per space (stage 1 on cached features, then stage 2) on tiny inputs. The PPO
controller's sampling of every space is checked cheaply in test_ppo.py (random search draws
keras-tuner's declared choices, the same for any space); the Oracles' learning over many
trials is tested in test_oracles.py on cheap objectives, and the auxcell space searches
through the CLI in test_crash_resume.py (its decoder of nine cells is the slowest to trace).
"""

import numpy as np
import pytest
from keras_tuner.engine.trial import TrialStatus

from tfnas.data import digit_scenes
from tfnas.spaces import SPACES
from tfnas.tuners import NASTuner, make_oracle

SIZE = 32
pytestmark = pytest.mark.slow  # a search per space


@pytest.fixture(scope="module")
def data():
    return (
        digit_scenes("train", SIZE, num_scenes=12, seed=2),
        digit_scenes("validation", SIZE, num_scenes=4, seed=2),
    )


@pytest.mark.parametrize("space_name, oracle_name", [("template", "ppo"), ("dpc", "random")])
def test_space_searches_with_oracle(tmp_path, data, space_name, oracle_name):
    space = SPACES[space_name](num_classes=11, alpha=0.35, width=8)
    tuner = NASTuner(
        space,
        oracle=make_oracle(oracle_name, 1, seed=3),
        stage1_epochs=1,
        stage2_epochs=1,
        batch_size=4,
        cache_images=12,
        warmup_epochs=0,
        teacher=None,
        termination=False,
        latency_runs=0,
        verbose=0,
        directory=str(tmp_path),
        project_name="run",
    )
    tuner.search(*data)
    trials = list(tuner.oracle.trials.values())
    assert [t.status for t in trials] == [TrialStatus.COMPLETED], [t.message for t in trials]
    genotypes = [space.genotype(t.hyperparameters.values) for t in trials]
    for genotype, trial in zip(genotypes, trials):
        # Each trial's decisions form a valid genotype of the space, and it reports its cost.
        assert space.values(genotype) == trial.hyperparameters.values
        assert 0.0 <= trial.score <= 1.0
        assert trial.metrics.get_last_value("params") > 0
        assert trial.metrics.get_last_value("madds") > 0
        assert trial.metrics.get_last_value("terminated") == 0  # went through stage 2
    best = tuner.get_best_models(1)[0]
    logits = best(np.zeros((1, SIZE, SIZE, 3), "float32"))["logits"]
    assert logits.shape[-1] == 11
