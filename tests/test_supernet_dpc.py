"""The Dense Prediction Cell space's supernet: same outputs and costs as the standalone models."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfnas import profile
from tfnas.spaces import DPCSpace

pytestmark = pytest.mark.slow  # 81 + 2 x 81 candidates: a big graph to build and trace
SHAPE = (48, 48, 3)


@pytest.fixture(scope="module")
def setup():
    keras.utils.set_random_seed(0)
    space = DPCSpace(num_classes=3, width=4, num_branches=2, alpha=0.35)
    supernet = space.build_supernet()
    x = np.random.default_rng(0).uniform(-1, 1, (2, *SHAPE)).astype("float32")
    return space, supernet, supernet.encoder(x)


def test_supernet_equals_standalone_and_costs_match_profile(setup):
    space, supernet, features = setup
    genotypes = [
        [[0, "pool2x4"], [1, "sep3x3_6x21"]],
        [[0, "conv1x1"], [0, "pool1x1"]],
        [[0, "sep3x3_3x1"], [1, "conv1x1"]],
    ]
    genotypes += [space.genotype(space.random_values(seed)) for seed in (5, 6)]
    for seed, genotype in enumerate(genotypes):
        values = space.values(genotype)
        supernet.prepare(values, seed=seed)
        model = space.build_genotype(genotype)
        supernet.transfer(values, model)
        for training in (False, True):
            ours = supernet.decoder(features, training=training)["logits"]
            theirs = model.get_layer("decoder")(features, training=training)["logits"]
            np.testing.assert_allclose(ours, theirs, atol=1e-5, err_msg=str(genotype))
        inference = space.inference_model(model)
        cost = supernet.cost(values, SHAPE)
        assert cost["params"] == profile.params(inference), genotype
        assert cost["madds"] == profile.madds(inference, SHAPE), genotype


def test_one_trace_serves_every_architecture():
    # One branch (81 candidate ops): a third of the two-branch graph to build and trace. That
    # switching inputs never retraces either is `Choice`'s own test (test_supernet_choice.py).
    keras.utils.set_random_seed(1)
    space = DPCSpace(num_classes=3, width=4, num_branches=1, alpha=0.35)
    supernet = space.build_supernet()
    x = np.random.default_rng(1).uniform(-1, 1, (2, *SHAPE)).astype("float32")
    features = [tf.convert_to_tensor(f) for f in keras.tree.flatten(supernet.encoder(x))]
    step = tf.function(lambda f: supernet.decoder(f, training=True)["logits"])
    outputs = []
    for seed in (0, 1, 2):
        supernet.select(space.random_values(seed))
        outputs.append(step(features).numpy())
    assert step.experimental_get_tracing_count() == 1
    assert not np.allclose(outputs[0], outputs[1], rtol=1e-3, atol=0)  # logits are ~1e-9 here
