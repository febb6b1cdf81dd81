"""Quantization-aware training with tensorflow-model-optimization (`tfnas.serving.qat`, issue 14).

One tiny Keras 3 model holds every kind of layer `to_tf_keras` meets in a found architecture:
standard layers, the tfnas ops (ConvBN, SepConv, GlobalPoolConv, Identity, Zero) in an `AuxCell`,
the resize layers, and one layer with no tf_keras
construction (DPC's `PyramidPooling`), which must fall back to float. It goes the whole way:
rebuild, QAT, one epoch of fine-tuning, TFLite int8 and Q/DQ ONNX.
"""

import importlib.util
import os

import keras
import numpy as np
import pytest

# find_spec, not importorskip: importing tfmot here would set TF_USE_LEGACY_KERAS (see the last test)
if not all(importlib.util.find_spec(m) for m in ("tensorflow_model_optimization", "tf_keras")):
    pytest.skip("needs tensorflow-model-optimization and tf_keras", allow_module_level=True)

from tfnas.cells.auxcell import AuxCell  # noqa: E402
from tfnas.cells.dpc import PyramidPooling  # noqa: E402
from tfnas.ops import ConvBN, ResizeLike, SepConv  # noqa: E402
from tfnas.serving import qat  # noqa: E402
from tfnas.spaces import AuxCellSpace  # noqa: E402
from tfnas.tasks.base import UpsampleBy  # noqa: E402

SIZE = 32
CLASSES = 3
#: A cell with gap, skip, zero, sep3x3, conv3x3_rate3, sep5x5 (op indices 4, 9, 10, 2, 5, 3 of Table 4).
OP_CELL = [4, [0, 1, 9, 10], [0, 4, 2, 5], [1, 7, 3, 4]]


def tiny_model():
    """image -> stem -> a cell of most ops -> pyramid pooling -> logits (arch0 itself: the last test)."""
    keras.utils.set_random_seed(0)
    image = keras.Input((None, None, 3), name="image")
    x = ConvBN(8, 3, strides=2, name="stem")(image)
    x = SepConv(8, 3, name="sep")(x)
    x = AuxCell(OP_CELL, 8, name="op_cell")(x)
    pooled = PyramidPooling(8, grid=(2, 2), name="pyramid")(x)
    x = keras.layers.Concatenate(name="concat")([x, pooled])
    x = keras.layers.ReLU(name="relu")(x)
    x = UpsampleBy(2, name="upsample")(keras.layers.Conv2D(8, 1, name="reduce")(x))
    x = ResizeLike(name="resize")([x, image])
    logits = keras.layers.Conv2D(CLASSES, 1, name="logits")(x)
    model = keras.Model(image, logits, name="tiny")
    # non-trivial batch-norm statistics, so that copying them is checked
    for layer in model._flatten_layers():  # noqa: SLF001
        if isinstance(layer, keras.layers.BatchNormalization):
            rng = np.random.default_rng(len(layer.path))
            layer.moving_mean.assign(rng.normal(0, 0.1, layer.moving_mean.shape))
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, layer.moving_variance.shape))
    return model


def scenes(n, seed):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, SIZE, SIZE, 3)).astype(np.uint8)
    masks = (images[..., 0] // 86).astype(np.int32)  # a class map the images predict
    return images, masks


@pytest.fixture(scope="module")
def path(tmp_path_factory):
    """The whole QAT path on the tiny model, run once."""
    from tfnas.preprocessing import preprocess

    out = tmp_path_factory.mktemp("qat")
    model = tiny_model()
    rebuilt = qat.to_tf_keras(model, input_size=SIZE)
    quantized = qat.quantize_aware(rebuilt)
    images, masks = scenes(8, 0)
    data = [(preprocess(images[i : i + 4]).numpy(), masks[i : i + 4]) for i in (0, 4)]
    losses = qat.fine_tune(quantized, data, epochs=1, learning_rate=1e-3)
    check, _ = scenes(2, 1)
    tflite = qat.to_tflite_int8(quantized, str(out / "qat.tflite"), check_images=check)
    onnx = qat.to_qdq_onnx(quantized, str(out / "qat.onnx"), check_images=check)
    return {
        "model": model,
        "rebuilt": rebuilt,
        "qat": quantized,
        "losses": losses,
        "tflite": tflite,
        "onnx": onnx,
    }


@pytest.mark.slow
def test_tf_keras_rebuild_equals_keras3(path):
    import tf_keras

    model, rebuilt = path["model"], path["rebuilt"]
    assert isinstance(rebuilt.model, tf_keras.Model) and not isinstance(rebuilt.model, keras.Model)
    assert rebuilt.max_abs_diff is not None and rebuilt.max_abs_diff <= 1e-4
    # flat: no nested models, the tfnas ops unrolled into tf_keras layers
    kinds = {type(layer).__name__ for layer in rebuilt.model.layers}
    assert {
        "Conv2D",
        "DepthwiseConv2D",
        "BatchNormalization",
        "ReLU",
        "Add",
        "GlobalAveragePooling2D",
    } <= kinds
    assert not kinds & {"Functional", "AuxCell", "ConvBN", "SepConv"}
    batch = np.random.default_rng(3).uniform(-1, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
    want = np.asarray(model(batch, training=False))
    np.testing.assert_allclose(rebuilt.model(batch, training=False).numpy(), want, atol=1e-4)
    assert np.abs(want).max() > 1e-2  # the comparison is not between two zero maps


@pytest.mark.slow
def test_fallback_names_the_layers_left_in_float(path):
    floats = path["qat"].float_layers
    assert "pyramid" in floats and "PyramidPooling" in floats["pyramid"]
    zeros = [name for name in floats if name.startswith("op_cell_branch1_op1")]  # OP_CELL's zero op
    assert zeros and "zero op" in floats[zeros[0]]
    # every convolution of the unrolled cells is quantized
    wrapped = {
        layer.name for layer in path["qat"].model.layers if type(layer).__name__ == "QuantizeWrapperV2"
    }
    assert "quant_op_cell_branch2_op1_conv" in wrapped  # the conv3x3_rate3 op
    assert "quant_resize" in wrapped and "quant_pyramid" not in wrapped


@pytest.mark.slow
def test_qat_fine_tune_trains(path):
    (loss,) = path["losses"]
    assert np.isfinite(loss) and loss > 0


@pytest.mark.slow
def test_tflite_int8_has_int8_tensors_and_runs(path):
    report = path["tflite"]
    assert os.path.getsize(report["path"]) == report["size_bytes"] > 0
    assert report["int8_tensors"] > 10
    assert report["op_counts"].get("CONV_2D", 0) > 0 and report["op_counts"].get("QUANTIZE", 0) > 0
    assert report["max_rel_diff"] < 0.25  # int8 kernels vs fake quantization: close, not equal


@pytest.mark.slow
def test_qdq_onnx_has_qdq_nodes_and_runs(path):
    from tfnas.serving.quantize import is_qdq_model

    report = path["onnx"]
    assert is_qdq_model(report["path"])
    assert report["quantize_linear"] >= 10 and report["dequantize_linear"] >= 10
    assert report["max_rel_diff"] < 0.25


@pytest.mark.slow
def test_published_auxcell_architecture_rebuilds_equal():
    space = AuxCellSpace(num_classes=5, width=8, alpha=0.35)
    rebuilt = qat.to_tf_keras(space.build_genotype("arch0"), input_size=64)  # aux heads stripped
    assert rebuilt.max_abs_diff <= 1e-4 and rebuilt.float_layers == {}
    assert rebuilt.model.output_shape == (None, 16, 16, 5)


def test_to_tf_keras_refuses_a_subclassed_model():
    class Net(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="functional model"):
        qat.to_tf_keras(Net())


@pytest.mark.slow
def test_keras3_still_works_beside_tfmot(path):
    """tfmot sets TF_USE_LEGACY_KERAS on import; `tfnas.serving.qat` restores it, so Keras 3 and
    `tf.keras` (Keras 3) keep working in the process and subprocesses are not switched to Keras 2."""
    import tensorflow as tf

    assert os.environ.get("TF_USE_LEGACY_KERAS") is None
    assert tf.keras.layers.Dense is keras.layers.Dense
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    model.compile(optimizer="sgd", loss="mse")
    history = model.fit(np.ones((4, 4)), np.zeros((4, 2)), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])


def test_template_cells_unroll_into_quantizable_layers():
    """The WACV 2020 template ops (skip with channel tiling, gap, strided sep convs, max-pool) and
    both aggregations rebuild exactly; only the BN after `cat`'s concatenation stays in float."""
    from tfnas.cells.template import Template

    keras.utils.set_random_seed(1)
    image = keras.Input((None, None, 3), name="image")
    fine = ConvBN(8, 3, name="fine")(image)
    coarse = ConvBN(8, 3, strides=2, name="coarse")(image)
    # skip widened 8 -> 16 and gap, both at stride 2, learned sum; the finer path is resized down
    x = Template([5, 2, 0], (16, 8), strides=2, input_strides=(1, 2), name="psum_cell")([fine, coarse])
    x = Template([3, 1, 1], (16, 16), input_strides=(4, 4), name="cat_cell")([x, x])  # maxpool, sep5x5, cat
    model = keras.Model(image, keras.layers.Conv2D(CLASSES, 1, name="logits")(x), name="templates")
    rebuilt = qat.to_tf_keras(model, input_size=SIZE)
    assert rebuilt.max_abs_diff <= 1e-4 and rebuilt.float_layers == {}
    kinds = {type(layer).__name__ for layer in rebuilt.model.layers}
    assert "Keras3Layer" not in kinds and "Template" not in kinds
    quantized = qat.quantize_aware(rebuilt)
    assert set(quantized.float_layers) == {"cat_cell_cat_bn"}
