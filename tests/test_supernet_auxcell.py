"""The auxiliary-cell space's supernet: same outputs, costs and weights as the standalone models."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfnas import profile
from tfnas.spaces import AuxCellSpace

pytestmark = pytest.mark.slow  # building every candidate of 6 cells takes tens of seconds on 2 cores
SHAPE = (64, 64, 3)


@pytest.fixture(scope="module")
def setup():
    keras.utils.set_random_seed(0)
    space = AuxCellSpace(num_classes=3, width=4, alpha=0.35, aux_cells=False)
    supernet = space.build_supernet()
    x = np.random.default_rng(0).uniform(-1, 1, (2, *SHAPE)).astype("float32")
    return space, supernet, supernet.encoder(x)


def _genotypes(space):
    return [AuxCellSpace.PUBLISHED["arch0"], AuxCellSpace.PUBLISHED["arch2"]] + [
        space.genotype(space.random_values(seed)) for seed in (11, 12)
    ]


def test_supernet_equals_standalone_after_transfer_and_costs_match_profile(setup):
    space, supernet, features = setup
    for seed, genotype in enumerate(_genotypes(space)):
        values = space.values(genotype)
        supernet.prepare(values, seed=seed)
        model = space.build_genotype(genotype)
        supernet.transfer(values, model)
        for training in (False, True):
            ours = supernet.decoder(features, training=training)
            theirs = model.get_layer("decoder")(features, training=training)
            assert sorted(ours) == sorted(theirs)
            for key in ours:
                np.testing.assert_allclose(ours[key], theirs[key], atol=1e-5, err_msg=f"{genotype} {key}")
        inference = space.inference_model(model)
        cost = supernet.cost(values, SHAPE)
        assert cost["params"] == profile.params(inference), genotype
        assert cost["madds"] == profile.madds(inference, SHAPE), genotype


def test_load_is_the_inverse_of_transfer(setup):
    space, supernet, features = setup
    values = space.values(AuxCellSpace.PUBLISHED["arch1"])
    trained = space.build_genotype("arch1")
    supernet.select(values)
    supernet.load(values, trained)
    np.testing.assert_allclose(
        supernet.decoder(features)["logits"], trained.get_layer("decoder")(features)["logits"], atol=1e-5
    )
    copy = space.build_genotype("arch1")
    supernet.transfer(values, copy)
    for a, b in zip(trained.get_layer("decoder").weights, copy.get_layer("decoder").weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_one_trace_serves_every_architecture(setup):
    space, supernet, features = setup
    features = [tf.convert_to_tensor(f) for f in keras.tree.flatten(features)]
    step = tf.function(lambda f: supernet.decoder(f, training=True)["logits"])
    outputs = []
    for seed in (0, 1, 2):
        supernet.select(space.random_values(seed))
        outputs.append(step(features).numpy())
    assert step.experimental_get_tracing_count() == 1
    assert not np.allclose(outputs[0], outputs[1], rtol=1e-3, atol=0)  # another architecture ran


def test_reinitialization_is_seeded_uses_standalone_fan_ins_and_resets_statistics(setup):
    space, supernet, _ = setup
    genotype = AuxCellSpace.PUBLISHED["arch1"]  # block 0 is read by block 2: 2 * width rows
    values = space.values(genotype)
    uses = supernet.uses(values)
    pre = supernet.decoder.get_layer("pre_classifier")
    unused_op = (
        supernet.decoder.get_layer("block0_cell0").first.candidates[0].conv.kernel
    )  # conv1x1, not arch0's
    before = unused_op.numpy().copy()
    pre.bn.moving_mean.assign(np.full(pre.bn.moving_mean.shape, 5.0, "float32"))
    supernet.reinitialize(values, seed=3)
    first = [v.numpy().copy() for u in uses for v in u.layer.weights]
    np.testing.assert_array_equal(pre.bn.moving_mean.numpy(), 0.0)
    np.testing.assert_array_equal(unused_op.numpy(), before)
    supernet.reinitialize(values, seed=3)
    assert all(
        np.array_equal(a, v.numpy()) for a, v in zip(first, [v for u in uses for v in u.layer.weights])
    )
    supernet.reinitialize(values, seed=4)
    assert not np.array_equal(first[0], uses[0].layer.weights[0].numpy())
    # Glorot uniform on the standalone pre-classifier: fan-in 2 * width, fan-out width.
    w = space.width
    rows = [u.rows for u in uses if u.standalone == ("pre_classifier",)][0]
    assert len(rows) == 2 * w
    limit = np.sqrt(6 / (2 * w + w))
    kernel = pre.conv.kernel.numpy()[0, 0, list(rows)]
    assert np.abs(kernel).max() <= limit and np.abs(kernel).max() > 0.8 * limit
    # ENAS-style sharing keeps what earlier trials trained.
    kept = [v.numpy().copy() for v in pre.weights]
    supernet.prepare(values, weight_sharing=True)
    assert all(np.array_equal(a, v.numpy()) for a, v in zip(kept, pre.weights))


def test_selection_is_validated(setup):
    space, supernet, _ = setup
    with pytest.raises(ValueError, match="connection 0 input 0 is 7"):
        supernet.select({**space.random_values(0), "block0_input0": 7})
    with pytest.raises(ValueError, match="needs a seed"):
        supernet.prepare(space.random_values(0))


def _traced_step(decoder, variables):
    """A traced training step: outputs and gradients of a loss on every output."""

    @tf.function
    def step(features):
        with tf.GradientTape() as tape:
            outputs = decoder(features, training=True)
            loss = tf.add_n([tf.reduce_mean(tf.square(v)) for v in outputs.values()])
        return outputs, tape.gradient(loss, variables)

    return step


def test_a_traced_training_step_equals_the_standalone_one(setup):
    """Choices share traced functions (`Choice(tracing="shared")`): each reads and updates its own weights."""
    space, supernet, features = setup
    features = [tf.convert_to_tensor(f) for f in keras.tree.flatten(features)]
    values = space.values(AuxCellSpace.PUBLISHED["arch2"])
    supernet.prepare(values, seed=5)
    model = space.build_genotype("arch2")
    supernet.transfer(values, model)
    pairs = supernet._pairs(values, model)  # (supernet variable, standalone variable, rows)
    trainable = [(s, t, rows) for s, t, rows in pairs if t.trainable]
    ours, our_grads = _traced_step(supernet.decoder, [s for s, _, _ in trainable])(features)
    theirs, their_grads = _traced_step(model.get_layer("decoder"), [t for _, t, _ in trainable])(features)
    for key in theirs:
        np.testing.assert_allclose(ours[key], theirs[key], atol=1e-5, err_msg=key)
    assert len(trainable) > 50
    for (_, target, rows), ours_g, theirs_g in zip(trainable, our_grads, their_grads):
        ours_g = ours_g.numpy() if rows is None else ours_g.numpy()[:, :, list(rows), :]
        # float32 sums in another order: equal to 1e-4 of the gradient's scale
        scale = float(np.abs(theirs_g).max()) + 1e-8
        np.testing.assert_allclose(ours_g, theirs_g, rtol=0, atol=1e-4 * scale, err_msg=target.path)
    # Batch-norm statistics moved in each cell's own candidates, as in the standalone model.
    for source, target, _ in pairs:
        if not target.trainable:
            np.testing.assert_allclose(source.numpy(), target.numpy(), atol=1e-6, err_msg=target.path)
