"""Auxiliary-cell space (seed 000, Appendix A): decisions, codec, cell, published archs."""

import keras
import numpy as np
import pytest

from tfnas.cells.auxcell import AuxCell, loose_ends
from tfnas.spaces import AuxCellSpace, get_space

SMALL = dict(width=8, alpha=0.35)


@pytest.fixture(scope="module")
def space():
    return AuxCellSpace(num_classes=5, **SMALL)


def test_decisions_are_declared_in_controller_order_with_growing_pools(space):
    hp = space.hyperparameters()
    names = [p.name for p in hp.space]
    assert names[:7] == [
        "block0_input0",
        "block0_input1",
        "block1_input0",
        "block1_input1",
        "block2_input0",
        "block2_input1",
        "cell_op1",
    ]
    assert names[7:11] == ["branch1_index0", "branch1_index1", "branch1_op0", "branch1_op1"]
    sizes = {p.name: len(p.values) for p in hp.space}
    assert [sizes[f"block{b}_input0"] for b in range(3)] == [4, 5, 6]
    assert [sizes[f"branch{k}_index0"] for k in (1, 2, 3)] == [2, 5, 8]
    assert sizes["cell_op1"] == sizes["branch3_op1"] == 11
    assert len(names) == 19
    assert space.size() == (4 * 4 * 5 * 5 * 6 * 6) * 11 * (2 * 2 * 11 * 11) * (5 * 5 * 121) * (8 * 8 * 121)


@pytest.mark.parametrize("name", sorted(AuxCellSpace.PUBLISHED))
def test_published_genotypes_round_trip(space, name):
    genotype = AuxCellSpace.PUBLISHED[name]
    assert space.genotype(space.values(genotype)) == genotype


def test_random_genotypes_round_trip(space):
    for seed in range(100):
        values = space.random_values(seed)
        genotype = space.genotype(values)
        assert space.values(genotype) == values


def test_authors_code_order_converts():
    arch0 = AuxCellSpace.PUBLISHED["arch0"]
    assert AuxCellSpace.from_authors_code([arch0[1], arch0[0]]) == arch0


@pytest.mark.parametrize(
    "genotype, message",
    [
        (
            [[[3, 3], [3, 2], [3, 6]], [8, [0, 0, 5, 2], [0, 2, 8, 8], [0, 5, 1, 4]]],
            r"connection 2 input 1 is 6, but only 0\.\.5 exist",
        ),
        (
            [[[4, 3], [3, 2], [3, 0]], [8, [0, 0, 5, 2], [0, 2, 8, 8], [0, 5, 1, 4]]],
            r"connection 0 input 0 is 4, but only 0\.\.3 exist",
        ),
        (
            [[[3, 3], [3, 2], [3, 0]], [11, [0, 0, 5, 2], [0, 2, 8, 8], [0, 5, 1, 4]]],
            r"cell op o1 is 11, but only 0\.\.10 exist",
        ),
        (
            [[[3, 3], [3, 2], [3, 0]], [8, [2, 0, 5, 2], [0, 2, 8, 8], [0, 5, 1, 4]]],
            r"branch 1 index 0 is 2, but only 0\.\.1 exist",
        ),
        (
            [[[3, 3], [3, 2], [3, 0]], [8, [0, 0, 5, 2], [0, 5, 8, 8], [0, 5, 1, 4]]],
            r"branch 2 index 1 is 5, but only 0\.\.4 exist",
        ),
        (
            [[[3, 3], [3, 2], [3, 0]], [8, [0, 0, 5, 2], [0, 2, 8, 8], [8, 5, 1, 4]]],
            r"branch 3 index 0 is 8, but only 0\.\.7 exist",
        ),
        (
            [[[3, 3], [3, 2], [3, 0]], [8, [0, 0, 5, -1], [0, 2, 8, 8], [0, 5, 1, 4]]],
            r"branch 1 op 1 is -1, but only 0\.\.10 exist",
        ),
        (
            [[[3, 3], [3, 2], [3, "0"]], [8, [0, 0, 5, 2], [0, 2, 8, 8], [0, 5, 1, 4]]],
            r"connection 2 input 1 is '0'",
        ),
        ([[[3, 3], [3, 2]], [8, [0, 0, 5, 2], [0, 2, 8, 8], [0, 5, 1, 4]]], r"must be 3 pairs"),
        ([[[3, 3], [3, 2], [3, 0, 1]], [8, [0, 0, 5, 2], [0, 2, 8, 8], [0, 5, 1, 4]]], r"must be 3 pairs"),
        ([[[3, 3], [3, 2], [3, 0]], [8, [0, 0, 5, 2], [0, 2, 8, 8]]], r"cell .* must be \[o1"),
        (
            [[[3, 3], [3, 2], [3, 0]], [[8], [0, 0, 5, 2], [0, 2, 8, 8], [0, 5, 1, 4]]],
            r"cell .* must be \[o1",
        ),
        ([[[3, 3], [3, 2], [3, 0]], [8, [0, 0, 5], [0, 2, 8, 8], [0, 5, 1, 4]]], r"cell .* must be \[o1"),
        ([8, [0, 0, 5, 2]], r"must be 3 pairs"),
        ("arch0", r"must be \[connections, cell\]"),
    ],
)
def test_bad_genotypes_name_the_position_and_the_range(space, genotype, message):
    with pytest.raises(ValueError, match=message):
        space.values(genotype)


def test_unknown_published_name_and_space_are_clear_errors(space):
    with pytest.raises(ValueError, match="unknown published architecture 'arch9'"):
        space.build_genotype("arch9")
    with pytest.raises(ValueError, match="unknown space 'nope'"):
        get_space("nope")
    with pytest.raises(ValueError, match="values lack the decision .block0_input0."):
        space.genotype({})


def test_cell_sums_its_loose_ends():
    x = np.random.default_rng(0).normal(size=(1, 4, 4, 3)).astype("float32")
    # All skips, every branch reading the input: output = o1(x) + 3 branch sums of 2x = 7x.
    chained = [9, [0, 0, 9, 9], [0, 0, 9, 9], [0, 0, 9, 9]]
    assert loose_ends(chained) == [1, 4, 7, 10]
    np.testing.assert_allclose(AuxCell(chained, 3)(x), 7 * x, rtol=1e-6)
    # Each branch doubles the previous sum, which is then no longer a loose end: 8x.
    doubling = [9, [1, 1, 9, 9], [4, 4, 9, 9], [7, 7, 9, 9]]
    assert loose_ends(doubling) == [10]
    np.testing.assert_allclose(AuxCell(doubling, 3)(x), 8 * x, rtol=1e-6)
    # Zero ops null their path: o1 = zero, branches add x + 0.
    nulled = [10, [0, 1, 9, 10], [0, 0, 10, 10], [0, 0, 10, 10]]
    np.testing.assert_allclose(AuxCell(nulled, 3)(x), x, rtol=1e-6)


def test_training_model_has_aux_heads_and_inference_model_drops_them(space):
    model = space.build_genotype("arch0")
    out = model(np.zeros((2, 64, 64, 3), "float32"))
    assert sorted(out) == ["aux_0", "aux_1", "aux_2", "logits"]
    assert tuple(out["logits"].shape) == (2, 16, 16, 5)  # arch0 reads the stride-4 tap
    inference = space.inference_model(model)
    x = np.random.default_rng(0).uniform(-1, 1, (1, 48, 64, 3)).astype("float32")
    np.testing.assert_allclose(inference(x), model(x)["logits"], atol=1e-5)
    assert inference.count_params() < model.count_params()
    aux_layers = {w.path.split("/")[0] for w in model.weights} - {
        w.path.split("/")[0] for w in inference.weights
    }
    assert {"aux0_cell", "aux_0", "aux1_cell", "aux_2"} <= aux_layers


def test_training_model_round_trips_through_keras_file(space, tmp_path):
    model = space.build_genotype("arch1")
    x = np.random.default_rng(1).uniform(-1, 1, (1, 64, 64, 3)).astype("float32")
    path = tmp_path / "arch1.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    for key, value in model(x).items():
        np.testing.assert_allclose(loaded(x)[key], value, atol=1e-5)


def test_build_with_keras_tuner_hyperparameters(space):
    hp = space.hyperparameters(space.random_values(seed=3))
    model = space.build(hp)
    assert tuple(model(np.zeros((1, 32, 32, 3), "float32"))["logits"].shape)[-1] == 5


# Paper (Sec. 4.1, Table 1): 2.6 / 2.8 / 2.9 M parameters with MobileNetV2, 21 classes, width 64.
@pytest.mark.parametrize("name, paper_millions", [("arch0", 2.6), ("arch1", 2.8), ("arch2", 2.9)])
def test_published_architectures_match_the_papers_parameter_counts(name, paper_millions):
    space = AuxCellSpace(num_classes=21, width=64)
    inference = space.inference_model(space.build_genotype(name))
    trainable = sum(int(np.prod(w.shape)) for w in inference.trainable_weights)
    # The paper rounds to 0.1 M; PyTorch counts BN affine parameters but not running statistics.
    assert abs(trainable / 1e6 - paper_millions) / paper_millions < 0.025, trainable
