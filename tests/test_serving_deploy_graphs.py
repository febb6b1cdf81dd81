"""Deployment graphs at the deployment size (issue 17): the published architectures convert to ONNX (and arch0 to
TFLite) with every searched op in its native form, and match Keras at that size."""

import numpy as np
import onnx
import pytest

from tfnas.preprocessing import preprocess
from tfnas.serving import export, onnx_predict, tflite_predict, to_onnx, to_tflite
from tfnas.serving.onnx_export import op_census
from tfnas.serving.tflite import tflite_op_census
from tfnas.spaces import AuxCellSpace

SIZE = (128, 96)
#: tf2onnx's decompositions of dilated convolutions and layouts at dynamic sizes.
DECOMPOSITIONS = ("SpaceToDepth", "DepthToSpace", "Split", "Shape", "ConstantOfShape")


@pytest.fixture(scope="module")
def arch0(tmp_path_factory):
    """arch0 at a small width and alpha: the same ops (conv 3x3 rate 3, sep 5x5 rate 6, global
    pooling, resizes) as the published model."""
    space = AuxCellSpace(num_classes=5, width=16, alpha=0.35)
    model = space.inference_model(space.build_genotype("arch0"))
    saved = export(
        model,
        str(tmp_path_factory.mktemp("arch0")),
        "arch0",
        warmup_images=np.zeros((1, 32, 32, 3), np.uint8),
    )
    return model, saved


@pytest.mark.slow
def test_arch0_fixed_size_onnx_has_native_ops_and_matches_keras(arch0, tmp_path):
    model, saved = arch0
    path = str(tmp_path / "arch0.onnx")
    batch = np.random.default_rng(1).integers(0, 256, (1, *SIZE, 3), dtype=np.uint8)
    report = to_onnx(
        saved, path, signature="logits", input_size=SIZE, sample_inputs=preprocess(batch).numpy()
    )
    assert report["output_stride"] == [32, 32]
    census = op_census(path)
    assert not [op for op in DECOMPOSITIONS if census[op]], dict(census)
    assert census["Transpose"] <= 2
    dilations = sorted(
        {
            tuple(a.ints)
            for node in onnx.load(path).graph.node
            if node.op_type == "Conv"
            for a in node.attribute
            if a.name == "dilations"
        }
        - {(1, 1)}
    )
    assert dilations == [(3, 3), (6, 6)]  # arch0's conv3x3_rate3 and sep5x5_rate6, each one Conv node
    assert census["Resize"] >= 1 and census["GlobalAveragePool"] >= 1
    want = np.asarray(model(preprocess(batch), training=False))
    got = onnx_predict(path, preprocess(batch).numpy())["logits"]
    assert got.shape == want.shape == (1, SIZE[0] // 4, SIZE[1] // 4, 5)  # arch0's logits: 1/4
    assert np.max(np.abs(got - want)) <= 1e-4


@pytest.mark.slow
def test_arch0_fixed_size_tflite_has_native_ops_and_matches_keras(arch0, tmp_path):
    model, saved = arch0
    path = to_tflite(saved, str(tmp_path / "arch0.tflite"), input_size=SIZE)
    census = tflite_op_census(path)
    # every size computation folded (the strided slices left are the global-pooling branch's channel
    # slice); the TFLite converter keeps SPACE_TO_BATCH_ND around a dilated conv whose feature map is
    # not a multiple of its rate (docs/serving.md), so those are not counted
    assert census["SHAPE"] == census["PACK"] == 0, sorted(census.items())
    assert census["DEPTHWISE_CONV_2D"] > 0 and census["RESIZE_BILINEAR"] >= 1 and census["MEAN"] >= 1
    batch = np.random.default_rng(2).integers(0, 256, (1, *SIZE, 3), dtype=np.uint8)
    want = np.asarray(model(preprocess(batch), training=False))
    assert np.max(np.abs(tflite_predict(path, batch) - want)) <= 1e-4
    with pytest.raises(ValueError, match=r"width 100 is not divisible by the network's output stride 32"):
        to_tflite(saved, str(tmp_path / "bad.tflite"), input_size=(128, 100))


@pytest.mark.slow
@pytest.mark.parametrize(
    "space_name, arch, config",
    [
        ("auxcell", "arch1", {"num_classes": 3, "width": 8, "alpha": 0.35}),
        ("auxcell", "arch2", {"num_classes": 3, "width": 8, "alpha": 0.35}),
        ("template", "arch0", {"num_classes": 3, "width": 8, "alpha": 0.35}),
        ("template", "arch1", {"num_classes": 3, "width": 8, "alpha": 0.35}),
        ("dpc", "top1_cityscapes", {"num_classes": 3, "alpha": 0.35}),
    ],
)
def test_every_published_architecture_converts_without_decompositions(space_name, arch, config, tmp_path):
    """The other spaces' published networks (arch0 above): native ops at a fixed size, Keras' logits."""
    from tfnas.spaces import get_space

    space = get_space(space_name)(**config)
    model = space.inference_model(space.build_genotype(arch))
    saved = export(model, str(tmp_path), arch, warmup_images=np.zeros((1, 32, 32, 3), np.uint8))
    size = (64, 64)
    batch = np.random.default_rng(2).integers(0, 256, (1, *size, 3), dtype=np.uint8)
    path = str(tmp_path / f"{arch}.onnx")
    to_onnx(saved, path, signature="logits", input_size=size, sample_inputs=preprocess(batch).numpy())
    census = op_census(path)
    assert not [op for op in DECOMPOSITIONS if census[op]], dict(census)
    assert census["Transpose"] <= 2, dict(census)
    want = np.asarray(model(preprocess(batch), training=False))
    got = onnx_predict(path, preprocess(batch).numpy())["logits"]
    assert got.shape == want.shape
    # Relative to the logits' scale: with random weights a deep encoder's logits can be tiny
    # (about 1e-12 for DPC), where an absolute 1e-4 would accept any graph.
    scale = float(np.max(np.abs(want)))
    assert scale > 0 and np.max(np.abs(got - want)) <= 1e-4 * scale
