"""One-shot search parts of 3M-Pose: temperature, Dyn-EGS, derivation, costs, teacher guidance, settings."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfnas import oneshot
from tfnas.spaces.fabric import FabricSpace


def tiny_space(**kwargs):
    settings = dict(
        width=4, rows=2, columns=3, eel_columns=(2,), stem_channels=4, stem_blocks=1, num_joints=2
    )
    settings.update(kwargs)
    return FabricSpace(**settings)


def test_linear_temperature_per_step():
    schedule = oneshot.LinearTemperature(100)
    values = [float(schedule(step)) for step in (0, 33, 98, 99, 500)]
    # 100 steps are 0..99: the last one runs at exactly `end`.
    np.testing.assert_allclose(
        values, [10.0, 0.001 + 9.999 * 2 / 3, 0.001 + 9.999 / 99, 0.001, 0.001], rtol=1e-5
    )
    settings = oneshot.SearchSettings()
    per_search = settings.temperature(steps_per_epoch=20)
    assert per_search.total_steps == 35 * 20
    assert (
        oneshot.LinearTemperature.from_config(per_search.get_config()).get_config() == per_search.get_config()
    )
    with pytest.raises(ValueError, match="total_steps >= 1"):
        oneshot.LinearTemperature(0)


def test_schedule_settings_match_the_thesis():
    settings = oneshot.SearchSettings()
    assert [settings.arch_lr_at(e) for e in (0, 19, 20, 24, 25, 34)] == [
        5e-3,
        5e-3,
        2.5e-3,
        2.5e-3,
        1.25e-3,
        1.25e-3,
    ]
    assert [oneshot.flops_warmup(e) for e in (0, 2, 3, 6, 9, 11, 12, 34)] == [
        1e-4,
        1e-4,
        1e-3,
        pytest.approx(1e-2),
        pytest.approx(1e-1),
        pytest.approx(1e-1),
        1.0,
        1.0,
    ]
    # At epoch 12 the FLOPs term is 1e-3 * (GFLOPs / 47.8) ** 0.15; 47.8 GFLOPs gives exactly 1e-3.
    np.testing.assert_allclose(oneshot.flops_loss(47.8e9, 12), 1e-3, rtol=1e-6)
    np.testing.assert_allclose(oneshot.flops_loss(47.8e9 / 2 ** (1 / 0.15), 0), 1e-4 * 1e-3 / 2, rtol=1e-5)
    total = settings.search_loss(heatmap=2.0, grouping=10.0, teacher=0.5, madds=47.8e9, epoch=12)
    np.testing.assert_allclose(total, 2.0 + 1e-2 + 0.5 + 1e-3, rtol=1e-6)


def test_dyn_egs_keeps_the_state_many_top_candidates():
    logits = tf.constant([[0.3, 2.0, -1.0, 1.0, 0.0]])
    zero = tf.zeros((1, 5))
    for state, expected in ((0, [0, 1, 0, 0, 0]), (1, [0, 1, 0, 1, 0]), (2, [1, 1, 0, 1, 0])):
        density = tf.one_hot([state], 3) * 50.0  # the Gumbel one-hot picks `state`
        weights = oneshot.dyn_egs(logits, density, 1.0, noise=zero, density_noise=tf.zeros((1, 3)))
        np.testing.assert_array_equal(weights.numpy(), [expected])  # exactly 0/1, not approximately
    alpha, density = tf.random.normal((200, 9)), tf.random.normal((200, 2))
    noise, density_noise = oneshot.sample_gumbel((200, 9), seed=1), oneshot.sample_gumbel((200, 2), seed=2)
    weights = oneshot.dyn_egs(alpha, density, 0.5, noise=noise, density_noise=density_noise).numpy()
    kept = np.argmax((density + density_noise).numpy(), axis=-1) + 1
    assert set(np.unique(weights)) == {0.0, 1.0}
    np.testing.assert_array_equal(weights.sum(-1), kept)
    top = np.argsort(-(alpha + noise).numpy(), axis=-1)
    for row in range(200):
        assert set(np.flatnonzero(weights[row])) == set(top[row, : kept[row]])


def test_sampled_weights_keep_one_to_two_ops_and_only_available_inputs():
    space = tiny_space()
    params = oneshot.ArchitectureParameters(space)
    params.beta.assign(tf.random.normal(params.beta.shape, seed=3) * 3)
    params.m_beta.assign(tf.random.normal(params.m_beta.shape, seed=4) * 3)
    ops, inputs = params.sample(1.0, seed=5)
    assert set(np.unique(ops.numpy().sum(-1))) <= {1.0, 2.0}
    for k in range(len(space.cells)):
        kept = set(np.flatnonzero(inputs.numpy()[k]))
        assert kept and kept <= set(space.candidates(k))


def test_straight_through_gradients_reach_alpha_beta_and_densities():
    space = tiny_space()
    params = oneshot.ArchitectureParameters(space)
    costs = oneshot.FabricCosts(space, (32, 32))
    with tf.GradientTape() as tape:
        ops, inputs = params.sample(1.0, seed=7)
        loss = oneshot.flops_loss(costs.expected_madds(ops, inputs), epoch=12)
    grads = dict(zip(["alpha", "beta", "m_alpha", "m_beta"], tape.gradient(loss, params.variables)))
    for name, grad in grads.items():
        assert grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0, name
    # Convolutions cost more than pools, pools more than identity: alpha's gradient says so.
    edge = grads["alpha"][0, 0].numpy()
    assert edge[1] > edge[2] > edge[0]
    # Keeping more ops costs more: the density gradient favours fewer ops.
    assert float(tf.reduce_sum(grads["m_alpha"][..., 1])) > 0


@pytest.mark.slow
def test_straight_through_gradients_through_the_supernet():
    space = tiny_space(columns=2, eel_columns=(1,))
    net = oneshot.FabricSupernet(space)
    params = oneshot.ArchitectureParameters(space)
    with tf.GradientTape() as tape:
        ops, inputs = params.sample(2.0, seed=11)
        outputs, cells = net(
            keras.random.normal((3, 16, 16, 3), seed=1), ops, inputs, training=True, return_cells=True
        )
        loss = sum(tf.reduce_mean(tf.square(y - 0.5)) for y in outputs.values())
    assert sorted(outputs) == ["eel_1", "logits"] and len(cells) == len(space.cells)
    grads = tape.gradient(loss, params.variables)
    for name, grad in zip(["alpha", "beta", "m_alpha", "m_beta"], grads):
        assert float(tf.reduce_max(tf.abs(grad))) > 0, name


def test_expected_madds_equal_counted_madds_of_the_derived_network():
    from tfnas import profile

    space = tiny_space()
    costs = oneshot.FabricCosts(space, (32, 32))
    params = oneshot.ArchitectureParameters(space)
    params.alpha.assign(tf.random.normal(params.alpha.shape, seed=1))
    params.beta.assign(tf.random.normal(params.beta.shape, seed=2))
    params.m_alpha.assign(tf.random.normal(params.m_alpha.shape, seed=3))
    ops, inputs = params.sample(0.5, seed=9)  # one sampled architecture, 0/1 forward weights
    genotype = space.genotype(
        {
            **{
                f"cell{k}_inputs": space.input_subsets(k).index(tuple(np.flatnonzero(inputs.numpy()[k])))
                for k in range(len(space.cells))
            },
            **{
                f"cell{k}_o{e}": space.op_sets.index(tuple(np.flatnonzero(ops.numpy()[k, e])))
                for k in range(len(space.cells))
                for e in range(3)
            },
        }
    )
    counted = profile.madds(space.build_genotype(genotype), (32, 32, 3))
    assert float(costs.expected_madds(ops, inputs)) == pytest.approx(counted, abs=1)
    assert costs.madds(genotype) == counted


def test_derivation_is_deterministic_and_follows_the_rule():
    space = tiny_space()
    params = oneshot.ArchitectureParameters(space)
    assert oneshot.derive_topk([0.0, 0.0, 0.0], [0.0, 0.0]) == (0,)  # ties: the lower index
    assert oneshot.derive_topk([0.1, 0.9, 0.5], [0.0, 1.0]) == (1, 2)
    alpha = np.zeros(params.alpha.shape, np.float32)
    alpha[5, 2, [4, 7]] = [2.0, 1.0]
    m_alpha = np.zeros(params.m_alpha.shape, np.float32)
    m_alpha[5, 2, 1] = 1.0  # keep two ops on cell 5's edge h1 -> h2
    beta = np.zeros(params.beta.shape, np.float32)
    beta[4, 2] = 1.0  # cell 4 (column 3, row 0) prefers "below"
    params.alpha.assign(alpha)
    params.m_alpha.assign(m_alpha)
    params.beta.assign(beta)
    first = params.derive()
    assert first == params.derive()
    restored = oneshot.ArchitectureParameters(space)
    restored.set_state(json.loads(json.dumps(params.get_state())))
    assert restored.derive() == first
    assert first[5] == [[0], [0], [0], [4, 7]]  # inputs: a tie, the lower index (above)
    assert first[4] == [[2], [0], [0], [0]]
    # Ties go to the lower index: cell 2 (row 0) takes "parallel" and cell 3 (row 1) "above",
    # both reading row 0 of column 1, so cell 1 is pruned.
    assert first[0] == [[1], [0], [0], [0]]
    assert first[1] is None


def test_rdm_loss_zero_for_identical_activations_and_by_hand():
    acts = [tf.random.normal((4, 3, 3, 2), seed=1), tf.random.normal((4, 5), seed=2)]
    np.testing.assert_allclose(oneshot.teacher_guidance_loss(acts, acts), 0.0, atol=1e-6)
    student = tf.constant([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])  # distances 5, 10, 5
    teacher = tf.constant([[0.0], [1.0], [3.0]])  # distances 1, 3, 2
    np.testing.assert_allclose(oneshot.rdm(student), [[0, 5, 10], [5, 0, 5], [10, 5, 0]], atol=1e-3)
    # Pearson of (5, 10, 5) and (1, 3, 2): 5 / sqrt(50 / 3 * 2) = sqrt(3) / 2.
    np.testing.assert_allclose(
        oneshot.teacher_guidance_loss([student], [teacher]), 1 - np.sqrt(3) / 2, rtol=1e-5
    )
    # The best student layer counts: adding a perfect match drives that teacher layer's term to 0.
    np.testing.assert_allclose(
        oneshot.teacher_guidance_loss([student, teacher * 2], [teacher]), 0.0, atol=1e-6
    )
    with pytest.raises(ValueError, match="at least 3 samples"):
        oneshot.rdm_correlation(oneshot.rdm(student[:2]), oneshot.rdm(teacher[:2]))


def test_rdm_loss_has_finite_gradients_with_duplicate_samples():
    x = tf.Variable(tf.concat([tf.ones((2, 4)), tf.zeros((2, 4))], 0))
    with tf.GradientTape() as tape:
        loss = oneshot.teacher_guidance_loss([x], [tf.random.normal((4, 3), seed=3)])
    assert np.all(np.isfinite(tape.gradient(loss, x).numpy()))


@pytest.mark.slow
def test_supernet_with_a_genotypes_weights_computes_the_derived_network():
    space = tiny_space()
    genotype = [
        None,
        [[0], [1, 4], [5], [6, 8]],
        [[2], [0], [5], [1]],
        [[1], [3], [8], [4, 7]],
        [[1, 2], [6], [0, 1], [2]],
        [[1], [4], [3, 5], [7]],
    ]
    assert space.genotype(space.values(genotype)) == genotype
    derived = space.build_genotype(genotype)
    net = oneshot.FabricSupernet(space)
    images = keras.random.normal((2, 32, 32, 3), seed=4)
    ops, inputs = oneshot.FabricCosts(space, (32, 32)).weights_of(genotype)
    net(images, ops, inputs)  # builds every layer
    before = [w.numpy().copy() for w in derived.weights]
    net.transfer(derived)
    assert all(  # every weight of the derived network came from the supernet
        not np.array_equal(w.numpy(), old) for w, old in zip(derived.weights, before) if np.std(old) > 0
    )
    expected = derived(images)
    got = net(images, ops, inputs)
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-4, atol=1e-4)


def test_expected_latency_of_one_hot_weights_sums_the_derived_networks_parts():
    """`FabricLatency`: the table's entries of the parts the derived network really runs."""
    from tfnas.cells.fabric import FabricCell, Resample
    from tfnas.latency.layers import SpaceShapes, layer_key
    from tfnas.latency.measure import measure_table

    space = FabricSpace(width=4, rows=2, columns=3, eel_columns=(2,), stem_channels=4, stem_blocks=1)
    table = measure_table(space, (32, 32, 3), "tensorflow", warmup=1, runs=2, networks=0, architectures=1)
    latency = oneshot.FabricLatency(space, (32, 32), table)
    assert latency.measured  # the fabric's parts were timed into the table, once
    assert oneshot.FabricLatency(space, (32, 32), table).measured == []
    genotype = space.genotype(space.random_values(3))
    decoder = space.build_genotype(genotype).get_layer("decoder")

    def shape(row):
        return (1, *latency.sizes[row], space.widths[row])

    top = (1, *latency.sizes[0], space.width)
    # By hand, keyed from the derived network's own layers (a part built differently would miss).
    total = table.ms(layer_key(*SpaceShapes(space, (32, 32, 3)).encoder_item())) + table.correction_ms
    for layer in decoder.layers:
        if isinstance(layer, FabricCell):
            row = space.cells[int(layer.name[len("cell") :])][1]
            total += sum(table.ms(layer_key(op, [shape(row)])) for ops in layer.ops for op in ops)
            total += table.ms(layer_key(layer.project, [(*shape(row)[:3], 2 * space.widths[row])]))
            total += table.ms(layer_key(keras.layers.Concatenate(axis=-1), [shape(row)] * 2))
        elif isinstance(layer, Resample):
            row = space.cells[int(layer.name[len("cell") :].split("_")[0])][1]
            inputs = [shape(row - 1)] if layer.direction == "down" else [shape(row + 1), shape(row)]
            total += table.ms(layer_key(layer, inputs))
        elif layer.name.startswith(("fuse", "split")):
            rows = space.rows_of(int(layer.name[4:] if layer.name.startswith("fuse") else layer.name[5:]))
            total += table.ms(layer_key(layer, [top] + [shape(r) for r in range(rows)]))
        elif layer.name in ("logits", "eel_2"):
            total += table.ms(layer_key(layer, [top]))
    assert latency.latency_ms(genotype) == pytest.approx(total, rel=1e-6)
    ops, inputs = (tf.Variable(w) for w in latency.weights_of(genotype))
    with tf.GradientTape() as tape:
        expected = latency.expected_ms(ops, inputs)
    gradient_ops, gradient_inputs = tape.gradient(expected, [ops, inputs])
    assert float(expected) == pytest.approx(total, rel=1e-6)
    # d ms / d w is each part's entry in every computed cell (what the architecture update feels)
    alive = latency.alive(inputs).numpy()[:, None]
    np.testing.assert_allclose(gradient_ops, alive[..., None] * latency.ops, rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(gradient_inputs, alive * latency.inputs, rtol=1e-5, atol=1e-9)
    assert latency.ops.max() > 0
