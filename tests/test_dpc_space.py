"""Dense Prediction Cell space (seed 002, Sec. 3.1): decisions, codec, cell, published cell."""

import keras
import numpy as np
import pytest

from tfnas.cells.dpc import DPC_OPS, DensePredictionCell, PyramidPooling, dpc_op
from tfnas.ops import ConvBN, SepConv
from tfnas.spaces.dpc import DPCSpace

SMALL = dict(width=8, alpha=0.35)
TOP1 = DPCSpace.PUBLISHED["top1_cityscapes"]


@pytest.fixture(scope="module")
def space():
    return DPCSpace(num_classes=5, **SMALL)


def test_decisions_and_the_papers_count_of_the_space(space):
    names = [p.name for p in space.hyperparameters().space]
    assert names == [
        "branch0_op",
        "branch1_input",
        "branch1_op",
        "branch2_input",
        "branch2_op",
        "branch3_input",
        "branch3_op",
        "branch4_input",
        "branch4_op",
    ]
    sizes = {p.name: len(p.values) for p in space.hyperparameters().space}
    assert [sizes[f"branch{i}_input"] for i in range(1, 5)] == [2, 3, 4, 5]
    # 1 + 8 x 8 + 4 x 4 = 81 ops; B! x 81^B = 4.2e11 architectures (Sec. 3.1).
    assert len(DPC_OPS) == len(set(DPC_OPS)) == 81 and sizes["branch0_op"] == 81
    assert DPC_OPS[:3] == ("conv1x1", "sep3x3_1x1", "sep3x3_1x3") and DPC_OPS[-1] == "pool8x8"
    assert space.size() == 120 * 81**5
    assert DPCSpace.DEFAULT_ORACLE == "random"


def test_published_and_random_genotypes_round_trip(space):
    assert space.genotype(space.values(TOP1)) == TOP1
    assert space.values(TOP1)["branch2_input"] == 2
    for seed in range(100):
        values = space.random_values(seed)
        assert space.values(space.genotype(values)) == values


@pytest.mark.parametrize(
    "genotype, message",
    [
        ([[1, "conv1x1"]] + TOP1[1:], r"branch 0 input is 1, but only 0\.\.0 exist .*backbone \(0\)"),
        (TOP1[:2] + [[3, "conv1x1"]] + TOP1[3:], r"branch 2 input is 3, but only 0\.\.2 exist"),
        (TOP1[:4] + [[-1, "conv1x1"]], r"branch 4 input is -1, but only 0\.\.4 exist"),
        (TOP1[:1] + [[True, "conv1x1"]] + TOP1[2:], r"branch 1 input is True"),
        (TOP1[:3] + [[0, "sep3x3_2x2"]] + TOP1[4:], r"branch 3 op is 'sep3x3_2x2', but ops are 'conv1x1'"),
        (TOP1[:3] + [[0, "pool3x3"]] + TOP1[4:], r"branch 3 op is 'pool3x3'.*grids in 1, 2, 4, 8"),
        (TOP1[:3] + [[0, 7]] + TOP1[4:], r"branch 3 op is 7"),
        (TOP1[:4], r"must be 5 branches in the form \[\[input, op\]\] \* 5"),
        (TOP1[:4] + [[0, "conv1x1", 1]], r"must be 5 branches"),
        ([0, "conv1x1"], r"must be 5 branches"),
        ("top1_cityscapes", r"must be 5 branches"),
    ],
)
def test_bad_genotypes_name_the_position_and_the_range(space, genotype, message):
    with pytest.raises(ValueError, match=message):
        space.values(genotype)


def test_bad_values_and_op_names_are_clear_errors(space):
    with pytest.raises(ValueError, match="values lack the decision .branch0_op."):
        space.genotype({})
    with pytest.raises(ValueError, match="unknown DPC op 'sep5x5'"):
        dpc_op("sep5x5", 8)
    with pytest.raises(ValueError, match="num_branches must be at least 1"):
        DPCSpace(num_classes=5, num_branches=0)


def test_op_names_build_the_papers_operations():
    sep = dpc_op("sep3x3_18x15", 16)
    assert isinstance(sep, SepConv) and sep.dilation_rate == (18, 15) and sep.repeats == 1
    assert isinstance(dpc_op("conv1x1", 16), ConvBN)
    pool = dpc_op("pool2x4", 16)
    assert isinstance(pool, PyramidPooling) and pool.grid == (2, 4)


def test_pyramid_pooling_averages_each_grid_cell():
    x = np.random.default_rng(0).normal(size=(1, 6, 8, 3)).astype("float32")
    rows = PyramidPooling._pooling_matrix(6, 4, "float32").numpy()
    cols = PyramidPooling._pooling_matrix(8, 2, "float32").numpy()
    pooled = np.einsum("hi,nhwc,wj->nijc", rows, x, cols)
    # 6 rows over 4 cells as adaptive pooling: rows 0-1, 1-2, 3-4, 4-5; columns 0-3, 4-7.
    np.testing.assert_allclose(pooled[0, 0, 0], x[0, 0:2, 0:4].mean(axis=(0, 1)), rtol=1e-5)
    np.testing.assert_allclose(pooled[0, 1, 1], x[0, 1:3, 4:8].mean(axis=(0, 1)), rtol=1e-5)
    np.testing.assert_allclose(pooled[0, 3, 0], x[0, 4:6, 0:4].mean(axis=(0, 1)), rtol=1e-5)
    # A grid finer than the map (8 cells over 2 rows) repeats rows instead of leaving empty cells.
    small = PyramidPooling._pooling_matrix(2, 8, "float32").numpy()
    np.testing.assert_allclose(small, np.repeat(np.eye(2), 4, axis=1))
    out = PyramidPooling(3, grid=(8, 8))(x[:, :2, :2]).numpy()
    assert np.isfinite(out).all() and out.shape == (1, 2, 2, 3)
    # The layer resizes back to the input size; a 1x1 grid is constant over the image.
    y = PyramidPooling(4, grid=(1, 1))(x).numpy()
    assert y.shape == (1, 6, 8, 4)
    np.testing.assert_allclose(y, np.broadcast_to(y[:, :1, :1], y.shape), rtol=1e-5)


def test_cell_reads_the_chosen_inputs_and_concatenates_all_branches():
    branches = [[0, "conv1x1"], [1, "pool2x2"], [0, "sep3x3_3x6"]]
    cell = DensePredictionCell(branches, filters=4)
    y = cell(np.zeros((2, 9, 9, 7), "float32"))
    assert tuple(y.shape) == (2, 9, 9, 4)
    assert cell.branch_ops[1].conv.conv.kernel.shape == (1, 1, 4, 4)  # reads branch 0 (4 ch)
    assert cell.branch_ops[2].units[0][1].kernel.shape == (1, 1, 7, 4)  # reads the backbone
    assert cell.projection.conv.kernel.shape == (1, 1, 12, 4)  # 3 branches x 4 concatenated


def test_cell_round_trips_through_keras_file(tmp_path):
    inputs = keras.Input((None, None, 6))
    model = keras.Model(
        inputs, DensePredictionCell(TOP1[:3] + [[1, "pool2x4"], [0, "conv1x1"]], 8, name="cell")(inputs)
    )
    x = np.random.default_rng(2).normal(size=(1, 12, 16, 6)).astype("float32")
    path = tmp_path / "cell.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_layer("cell").branches[3] == [1, "pool2x4"]
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-5)


def test_model_runs_at_output_stride_16_and_inference_model_gives_the_logits(space):
    model = space.build_genotype("top1_cityscapes")
    x = np.random.default_rng(3).uniform(-1, 1, (2, 64, 64, 3)).astype("float32")
    out = model(x)
    assert sorted(out) == ["logits"] and tuple(out["logits"].shape) == (2, 4, 4, 5)
    inference = space.inference_model(model)
    np.testing.assert_allclose(inference(x), out["logits"], atol=1e-5)
    random_model = space.build(space.hyperparameters(space.random_values(seed=4)))
    assert tuple(random_model(x[:1])["logits"].shape) == (1, 4, 4, 5)


def test_published_cell_has_the_papers_parameter_count_on_mobilenet_v2():
    space = DPCSpace(num_classes=19)
    model = space.build_genotype("top1_cityscapes")
    encoder = model.get_layer("encoder")
    assert encoder.tap_strides == [16] and encoder.outputs[0].shape[-1] == 320
    cell = model.get_layer("decoder").get_layer("cell")
    count = lambda layer: sum(int(np.prod(w.shape)) for w in layer.trainable_weights)  # noqa: E731
    # Table 1 counts the five branches (0.36 M; 3.00 B multiply-adds at 1025x2049 match the
    # branches alone too); the 1x1 projection of the 1280 concatenated channels adds 0.33 M.
    branches = sum(count(op) for op in cell.branch_ops)
    assert branches == 358_720
    assert abs(branches - 0.36e6) / 0.36e6 < 0.01
    assert count(cell.projection) == 1280 * 256 + 2 * 256


def test_resnet50_encoder_gives_its_stride_16_tap():
    encoder = DPCSpace(num_classes=5, encoder="resnet50").build_encoder()
    assert encoder.name == "encoder" and encoder.tap_strides == [16]
    assert len(encoder.outputs) == 1 and encoder.outputs[0].shape[-1] == 1024
