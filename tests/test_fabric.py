"""The 3M-Pose fabric: ops, cell, space codec, published network, costs and the exit gates."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfnas import profile
from tfnas.cells import fabric
from tfnas.oneshot import FabricCosts
from tfnas.spaces.fabric import TABLE_A1, FabricSpace, genotype_table, table_genotype


def tiny_space(**kwargs):
    """2 rows x 3 columns, width 8, EEL at column 2, a one-bottleneck stem of 8 channels."""
    settings = dict(width=8, rows=2, columns=3, eel_columns=(2,), stem_channels=8, stem_blocks=1)
    settings.update(kwargs)
    return FabricSpace(**settings)


@pytest.mark.parametrize("op", fabric.FABRIC_OPS)
def test_op_keeps_shape_round_trips_and_costs_what_is_counted(op):
    layer = fabric.make_fabric_op(op, 8, name=op)
    x = keras.random.normal((1, 7, 9, 8))
    y = layer(x)
    assert tuple(y.shape) == (1, 7, 9, 8)
    clone = layer.__class__.from_config(layer.get_config())
    assert tuple(clone(x).shape) == (1, 7, 9, 8)
    inputs = keras.Input((7, 9, 8))
    model = keras.Model(inputs, layer(inputs))
    assert profile.madds(model, (7, 9, 8)) == fabric.op_madds(op, 7, 9, 8)


def test_unknown_op_names_the_choices():
    with pytest.raises(ValueError, match="unknown fabric op 'conv5x5'"):
        fabric.make_fabric_op("conv5x5", 8)
    with pytest.raises(ValueError, match="out of range; expected 0..8"):
        fabric.make_fabric_op(9, 8)


def test_cell_edges_and_resampling_shapes():
    cell = fabric.FabricCell(8, [["identity"], ["conv3x3", "se"], ["maxpool3x3"]])
    x = keras.random.normal((2, 8, 8, 8))
    assert tuple(cell(x).shape) == (2, 8, 8, 8)
    assert [len(ops) for ops in cell.ops] == [1, 2, 1]
    # h1 = I, h2 = 0 * I + maxpool(h1): with identity weights the cell sees concat(I, maxpool(I)).
    weights = [tf.constant([1.0]), tf.constant([0.0, 0.0]), tf.constant([1.0])]
    expected = cell.project(keras.ops.concatenate([x, tf.nn.max_pool2d(x, 3, 1, "SAME")], -1))
    np.testing.assert_allclose(cell(x, edge_weights=weights), expected, atol=1e-5)
    down = fabric.Resample(16, "down")(x)
    assert tuple(down.shape) == (2, 4, 4, 16)
    up = fabric.Resample(8, "up")([down, x])
    assert tuple(up.shape) == (2, 8, 8, 8)
    with pytest.raises(ValueError, match="edge O1 keeps no op"):
        fabric.FabricCell(8, [["identity"], [], ["se"]])


def test_fuse_split_head_shapes():
    rows = [keras.random.normal((1, 8 // 2**r, 8 // 2**r, 4 * 2**r)) for r in range(3)]
    skip = keras.random.normal((1, 8, 8, 4))
    final = fabric.Fuse(4, 3)([skip, *rows])
    assert tuple(final.shape) == (1, 8, 8, 4)
    split = fabric.Split((4, 8, 16))([final, *rows])
    assert [tuple(t.shape) for t in split] == [tuple(t.shape) for t in rows]
    assert tuple(fabric.PoseHead(17)(final).shape) == (1, 8, 8, 34)


def test_space_structure_follows_the_table_layout():
    space = FabricSpace()
    assert len(space.cells) == 37 and space.layout == (2, 3, 4, 4, 4, 4, 4, 4, 4, 4)
    assert space.widths == (32, 64, 128, 256)
    assert space.candidates(1) == (0,)  # new row 1: "above" only
    assert space.candidates(3) == (0, 1)  # column 2, row 1: column 1 has no row 2
    assert space.candidates(8) == (0,)  # new row 3 in column 3
    assert space.candidates(9) == (1, 2)  # row 0: parallel and below
    assert space.candidates(11) == (0, 1, 2)
    assert len(space.op_sets) == 9 + 36
    hp = space.hyperparameters()
    assert len(hp.space) == 4 * 37 and hp.space[0].name == "cell0_inputs" and hp.space[1].name == "cell0_o0"
    assert [len(p.values) for p in hp.space[:4]] == [1, 45, 45, 45]
    assert len(hp.space[4 * 11].values) == 7  # 3 candidates: 7 subsets
    assert FabricSpace(**space.config()).config() == space.config()
    assert FabricSpace(layout=[1, 2, 3] + [4] * 7).cells[:6] == [
        (1, 0),
        (2, 0),
        (2, 1),
        (3, 0),
        (3, 1),
        (3, 2),
    ]


def test_published_genotype_settles_the_table():
    space = FabricSpace()
    genotype = space.PUBLISHED["3m_pose"]
    assert genotype[2] is None
    assert genotype[3] == [[0, 1], [0, 4], [0, 5], [0, 4]]  # "below" dropped, Identity+Residual, ...
    assert genotype[0] == [[1], [2, 3], [2, 3], [0]]
    assert space.genotype(space.values(genotype)) == genotype
    table = genotype_table(genotype)
    assert table[3] == ("parallel+above", "Identity+Residual", "Identity+SepConv", "Identity+Residual")
    assert table[2] == ("-",) * 4 and table[0] == ("parallel", "Avg+Max", "Avg+Max", "Identity")
    assert table_genotype(table) == genotype
    literal = table_genotype(TABLE_A1)  # without settling cell 3
    with pytest.raises(ValueError, match=r"genotype cell 3 \(column 2, row 1\) reads inputs \[0, 1, 2\]"):
        space.values(literal)


def test_codec_round_trip_prunes_unread_cells():
    space = tiny_space()
    for seed in range(5):
        values = space.random_values(seed)
        genotype = space.genotype(values)
        assert space.genotype(space.values(genotype)) == genotype
    values = space.values(
        [
            [[1], [0], [0], [0]],
            [[0], [0], [0], [0]],
            [[2], [1], [1], [1]],
            [[1], [0], [0], [0]],
            [[1], [0], [0], [0]],
            [[1], [0], [0], [0]],
        ]
    )
    genotype = space.genotype(values)
    assert genotype[0] is None  # column 2 reads only row 1 of column 1
    with pytest.raises(
        ValueError, match=r"genotype cell 4 \(column 3, row 0\) is pruned \(None\), but a fuse column"
    ):
        space.values(genotype[:4] + [None] + genotype[5:])
    with pytest.raises(ValueError, match="edge O2 keeps ops \\[1, 2, 3\\]"):
        space.values(genotype[:1] + [[[0], [0], [0], [1, 2, 3]]] + genotype[2:])


def test_tiny_network_outputs_and_cost_equal_counted_madds():
    space = tiny_space()
    genotype = [
        [[1], [1, 4], [5], [6, 8]],
        [[0], [7], [2, 3], [0]],
        [[2], [0], [5], [1]],
        [[0, 1], [3], [8], [4, 7]],
        [[1, 2], [6], [0, 1], [2]],
        [[1], [4], [3, 5], [7]],
    ]
    model = space.build_genotype(genotype)
    outputs = model(keras.random.normal((1, 36, 44, 3)))
    assert list(outputs) == ["logits", "eel_2"]
    assert tuple(outputs["logits"].shape) == (1, 9, 11, 34)
    costs = FabricCosts(space, (36, 44))  # odd row sizes: 9x11, 5x6
    assert costs.madds(genotype) == profile.madds(model, (36, 44, 3))
    pruned = space.genotype(
        space.values(
            [[[1], [0], [0], [0]]]
            + genotype[1:2]
            + [[[2], [1], [1], [1]], [[1], [0], [0], [0]]]
            + genotype[4:]
        )
    )
    assert pruned[0] is None
    assert costs.madds(pruned) == profile.madds(space.build_genotype(pruned), (36, 44, 3))


@pytest.mark.parametrize(
    "task, num_classes, channels",
    [("segmentation", 3, 3), ("depth", None, 1), ("pose", None, 17)],
)
def test_other_tasks_get_task_heads_whose_cost_is_counted(task, num_classes, channels):
    space = tiny_space(task=task, num_classes=num_classes)
    genotype = space.genotype(space.random_values(4))
    model = space.build_genotype(genotype)
    decoder = model.get_layer("decoder")
    assert isinstance(decoder.get_layer("logits"), fabric.TaskHead)
    outputs = model(keras.random.normal((1, 36, 44, 3)))
    assert {k: tuple(v.shape) for k, v in outputs.items()} == {
        "logits": (1, 9, 11, channels),
        "eel_2": (1, 9, 11, channels),
    }
    assert FabricCosts(space, (36, 44)).madds(genotype) == profile.madds(model, (36, 44, 3))


@pytest.mark.slow
def test_published_network_builds_at_small_width():
    space = FabricSpace(width=8, stem_channels=16, stem_blocks=1)
    model = space.build_genotype("3m_pose")
    cells = [layer for layer in model.get_layer("decoder").layers if isinstance(layer, fabric.FabricCell)]
    assert len(cells) == 36  # cell 2 is pruned
    decoder = model.get_layer("decoder")
    assert "cell2" not in [c.name for c in cells]
    assert decoder.get_layer("cell3").edges[2] == ("identity", "residual")
    assert decoder.get_layer("cell36").edges[0] == ("csi", "zoomconv3x3")
    outputs = model(keras.random.normal((1, 64, 64, 3)))
    assert sorted(outputs) == ["eel_4", "eel_7", "logits"]
    count = profile.params(model)["total"]
    print(f"published 3m_pose at width 8, stem 16x1: {count} parameters")
    assert (
        count
        == profile.params(model.get_layer("encoder"))["total"]
        + profile.params(model.get_layer("decoder"))["total"]
    )


def test_heatmap_moments_and_confidence_by_hand():
    heatmap = np.zeros((1, 2, 2, 1), np.float32)
    heatmap[0, 0, 0, 0] = 1.0  # values (1, 0, 0, 0): skew 2 / sqrt(3), kurtosis 7 / 3
    skew, kurtosis = fabric.heatmap_moments(heatmap)
    np.testing.assert_allclose(skew, [[2 / np.sqrt(3)]], rtol=1e-5)
    np.testing.assert_allclose(kurtosis, [[7 / 3]], rtol=1e-5)
    score = (2 / np.sqrt(3) + 7 / 3) / 2
    np.testing.assert_allclose(fabric.heatmap_confidence(heatmap), [1 / (1 + np.exp(-score))], rtol=1e-5)
    np.testing.assert_allclose(
        fabric.heatmap_confidence(heatmap, (2, 1, 1), subtract_half=True),
        [1 / (1 + np.exp(-2 * score)) - 0.5],
        rtol=1e-5,
    )
    excess = (2 / np.sqrt(3) + 7 / 3 - 3) / 2
    np.testing.assert_allclose(
        fabric.heatmap_confidence(heatmap, excess_kurtosis=True), [1 / (1 + np.exp(-excess))], rtol=1e-5
    )
    flat = np.full((1, 4, 4, 2), 0.3, np.float32)
    np.testing.assert_allclose(fabric.heatmap_confidence(flat), [0.5])
    np.testing.assert_allclose(fabric.heatmap_confidence(flat, excess_kurtosis=True), [0.5])


def test_exit_gates_on_hand_made_heatmaps():
    peaky = np.zeros((3, 8, 8, 2), np.float32)
    peaky[0, 2, 3, 0] = peaky[0, 5, 5, 1] = 0.9  # two keypoints, very peaked
    peaky[1] = 0.05  # nothing above 0.1: no keypoint
    peaky[2, :, :, :] = np.linspace(0.0, 0.5, 64, dtype=np.float32).reshape(8, 8, 1)  # a ramp: one peak/joint
    np.testing.assert_array_equal(fabric.count_keypoints(peaky), [2, 0, 2])
    column4, column7 = fabric.THESIS_GATES[4], fabric.THESIS_GATES[7]
    # Column 4's threshold 1 is never passed: only the empty image leaves there.
    np.testing.assert_array_equal(column4(peaky), [False, True, False])
    # Column 7: the peaked image is confident (sigmoid of a large score); the ramp is not (skew 0,
    # kurtosis 1.8: sigmoid(2 * 1.8 / 2) = 0.858 > 0.6, so it leaves too); a threshold of 0.9 keeps it.
    np.testing.assert_array_equal(column7(peaky), [True, True, True])
    strict = fabric.ExitGate((2.0, 1.0, 1.0), 0.9)
    np.testing.assert_array_equal(strict(peaky), [True, True, False])
    # Excess kurtosis (1.8 - 3 = -1.2 for the ramp): sigmoid(2 * -1.2 / 2) = 0.23, so the ramp
    # stays at column 7's 0.6 where Pearson's kurtosis let it leave.
    excess = fabric.ExitGate((2.0, 1.0, 1.0), 0.6, excess_kurtosis=True)
    np.testing.assert_allclose(
        fabric.heatmap_confidence(peaky[2:], (2.0, 1.0, 1.0), excess_kurtosis=True),
        [1 / (1 + np.exp(1.2))],
        rtol=2e-3,
    )
    np.testing.assert_array_equal(excess(peaky), [True, True, False])


def test_softmax_confidence_by_hand():
    logits = np.zeros((1, 1, 2, 2), np.float32)
    logits[0, 0, 0] = [0.0, np.log(3.0)]  # probabilities (0.25, 0.75)
    np.testing.assert_allclose(fabric.softmax_confidence(logits), [(0.75 + 0.5) / 2], rtol=1e-6)
    np.testing.assert_array_equal(fabric.SoftmaxExitGate(0.6)(logits), [True])
    np.testing.assert_array_equal(fabric.SoftmaxExitGate(0.7)(logits), [False])


@pytest.mark.parametrize(
    "layer",
    [
        fabric.FabricCell(8, [["identity", "csi"], ["zoomconv3x3"], ["se", "residual"]]),
        fabric.Resample(16, "down"),
        fabric.Stem(8, channels=4, blocks=1),
        fabric.Fuse(8, 2),
        fabric.Split((8, 16)),
        fabric.PoseHead(17, tag_dim=2),
        fabric.TaskHead(3, activation="relu"),
        fabric.Bottleneck(4),
    ],
)
def test_layers_serialize_by_registered_name(layer):
    config = keras.saving.serialize_keras_object(layer)
    assert config["registered_name"] == f"tfnas>{type(layer).__name__}"
    clone = keras.saving.deserialize_keras_object(config)
    assert type(clone) is type(layer) and clone.get_config() == layer.get_config()


@pytest.mark.slow
def test_derived_network_saves_loads_and_strips_the_early_exits(tmp_path):
    space = tiny_space(width=4, stem_channels=4, num_joints=2)
    model = space.build(space.hyperparameters(space.random_values(2)))
    images = keras.random.normal((1, 32, 32, 3), seed=5)
    model.save(tmp_path / "fabric.keras")
    loaded = keras.saving.load_model(tmp_path / "fabric.keras")
    for key, value in model(images).items():
        np.testing.assert_array_equal(loaded(images)[key], value)
    deployable = space.inference_model(model)
    np.testing.assert_array_equal(deployable(images), model(images)["logits"])


def test_ppo_controller_decisions_decode_to_valid_genotypes():
    from tfnas.tuners.controller import Controller, decision_values

    space = tiny_space()
    hp = space.hyperparameters()
    choices = [decision_values(p) for p in hp.space]
    controller = Controller([len(c) for c in choices], units=8, layers=1, seed=0)
    actions, _ = controller.sample(np.random.default_rng(0))
    values = {p.name: c[a] for p, c, a in zip(hp.space, choices, actions)}
    genotype = space.genotype(values)
    assert len(genotype) == len(space.cells)
    assert space.genotype(space.values(genotype)) == genotype
