"""Template space (seed 001, Sec. 3 and 4.1): decisions, codec, template layer, published archs."""

import math

import keras
import numpy as np
import pytest

from tfnas.cells.template import ConcatReduce, ParamSum, Template, TileSkip
from tfnas.spaces.template import TemplateSpace

SMALL = dict(width=8, alpha=0.35)
ARCH0 = TemplateSpace.PUBLISHED["arch0"]


@pytest.fixture(scope="module")
def space():
    return TemplateSpace(num_classes=5, **SMALL)


def _rng_images(shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype("float32")


def test_decisions_are_declared_in_controller_order(space):
    names = [p.name for p in space.hyperparameters().space]
    assert names[:9] == [
        "template0_op1",
        "template0_op2",
        "template0_agg",
        "template1_op1",
        "template1_op2",
        "template1_agg",
        "template2_op1",
        "template2_op2",
        "template2_agg",
    ]
    assert names[9:14] == ["block0_loc1", "block0_loc2", "block0_template", "block0_repeats", "block0_stride"]
    # Only the first N // 2 = 3 blocks choose a stride.
    assert [n for n in names if n.endswith("_stride")] == ["block0_stride", "block1_stride", "block2_stride"]
    assert len(names) == 3 * 3 + 7 * 4 + 3
    sizes = {p.name: len(p.values) for p in space.hyperparameters().space}
    assert [sizes[f"block{b}_loc1"] for b in range(7)] == [2, 3, 4, 5, 6, 7, 8]
    assert sizes["template0_op1"] == 6 and sizes["template0_agg"] == 2 and sizes["block6_repeats"] == 4
    locs = math.prod((2 + b) ** 2 for b in range(7))
    assert space.size() == 72**3 * locs * 3**7 * 4**7 * 2**3


@pytest.mark.parametrize("name", sorted(TemplateSpace.PUBLISHED))
def test_published_genotypes_round_trip(space, name):
    genotype = TemplateSpace.PUBLISHED[name]
    values = space.values(genotype)
    assert space.genotype(values) == genotype
    if name == "arch0":  # block 0 is [0, 1, template 0, repeats 1, stride 2]
        assert [
            values[k]
            for k in ("block0_loc1", "block0_loc2", "block0_template", "block0_repeats", "block0_stride")
        ] == [0, 1, 0, 1, 2]


def test_random_genotypes_round_trip(space):
    for seed in range(100):
        values = space.random_values(seed)
        assert space.values(space.genotype(values)) == values


def _with(block=None, template=None, **change):
    genotype = [[list(t) for t in ARCH0[0]], [list(b) for b in ARCH0[1]]]
    if template is not None:
        genotype[0][template[0]][template[1]] = template[2]
    if block is not None:
        genotype[1][block[0]][block[1]] = block[2]
    return genotype


@pytest.mark.parametrize(
    "genotype, message",
    [
        (_with(template=(1, 0, 6)), r"template 1 op1 is 6, but only 0\.\.5 exist"),
        (_with(template=(2, 1, -1)), r"template 2 op2 is -1, but only 0\.\.5 exist"),
        (_with(template=(0, 2, 2)), r"template 0 agg is 2, but only 0\.\.1 exist .*\(0 = psum, 1 = cat\)"),
        (_with(block=(2, 0, 4)), r"block 2 loc1 is 4, but only 0\.\.3 exist .*2 stem outputs and 2 earlier"),
        (_with(block=(0, 1, 2)), r"block 0 loc2 is 2, but only 0\.\.1 exist"),
        (_with(block=(3, 2, 3)), r"block 3 template is 3, but only 0\.\.2 exist"),
        (_with(block=(5, 3, 4)), r"block 5 repeats - 1 is 4, but only 0\.\.3 exist"),
        (_with(block=(4, 4, 1)), r"block 4 log2\(stride\) is 1, but only 0\.\.0 exist .*only blocks 0\.\.2"),
        (_with(block=(1, 4, 2)), r"block 1 log2\(stride\) is 2, but only 0\.\.1 exist"),
        (_with(block=(1, 0, True)), r"block 1 loc1 is True"),
        (_with(block=(1, 0, "2")), r"block 1 loc1 is '2'"),
        ([ARCH0[0][:2], ARCH0[1]], r"templates .* must be 3 triples"),
        ([ARCH0[0][:2] + [[3, 1]], ARCH0[1]], r"templates .* must be 3 triples"),
        ([ARCH0[0], ARCH0[1][:6]], r"blocks .* must be 7 lists \[loc1, loc2, template"),
        ([ARCH0[0], ARCH0[1][:6] + [[0, 5, 0, 1]]], r"blocks .* must be 7 lists"),
        ([ARCH0[0], [ARCH0[1]]], r"blocks .* must be 7 lists"),
        (ARCH0[1], r"must be \[templates, blocks\]"),
        ("arch0", r"must be \[templates, blocks\]"),
    ],
)
def test_bad_genotypes_name_the_position_and_the_range(space, genotype, message):
    with pytest.raises(ValueError, match=message):
        space.values(genotype)


def test_bad_values_and_settings_are_clear_errors(space):
    with pytest.raises(ValueError, match="values lack the decision .template0_op1."):
        space.genotype({})
    with pytest.raises(ValueError, match="unknown published architecture 'arch2'"):
        space.build_genotype("arch2")
    with pytest.raises(ValueError, match="channel_factor must be a whole number >= 1"):
        TemplateSpace(num_classes=5, channel_factor=1.5)
    with pytest.raises(ValueError, match="encoder='resnet50', expected 'mobilenetv2'"):
        TemplateSpace(num_classes=5, encoder="resnet50")
    with pytest.raises(ValueError, match="num_blocks must be at least 2"):
        TemplateSpace(num_classes=5, num_blocks=1)


def test_templates_and_blocks_are_configurable():
    space = TemplateSpace(num_classes=3, num_templates=2, num_blocks=4, **SMALL)
    values = space.random_values(seed=1)
    genotype = space.genotype(values)
    assert [len(genotype[0]), len(genotype[1])] == [2, 4]
    assert sum(k.endswith("_stride") for k in values) == 2
    out = space.build_genotype(genotype)(np.zeros((1, 64, 64, 3), "float32"))
    assert out["logits"].shape[-1] == 3


def test_stem_is_the_first_three_mobilenet_stages_at_quarter_and_eighth(space):
    encoder = space.build_encoder()
    assert encoder.tap_strides == [4, 8]
    full = TemplateSpace(num_classes=19, width=64).build_encoder()
    assert [t.shape[-1] for t in full.outputs] == [24, 32]
    # The paper: "in total they contain only 60K parameters".
    assert 50_000 < full.count_params() < 62_000


def test_skip_templates_sum_and_widen_exactly():
    x1, x2 = _rng_images((1, 8, 8, 4), 1), _rng_images((1, 8, 8, 4), 2)
    same = Template([5, 5, 0], filters=(4, 4), input_strides=(4, 4))
    np.testing.assert_allclose(same([x1, x2]), x1 + x2, rtol=1e-6)  # psum starts at a = b = 1
    wide = Template([5, 5, 0], filters=(8, 8), strides=2, input_strides=(4, 4))
    expected = np.tile(x1[:, ::2, ::2] + x2[:, ::2, ::2], (1, 1, 1, 2))
    np.testing.assert_allclose(wide([x1, x2]), expected, rtol=1e-6)


@pytest.mark.parametrize(
    "template, resize, expected",
    [
        ([0, 3, 1], "down", (2, 4, 4, 16)),  # sep3x3 / maxpool, cat: down to the coarser path
        ([2, 4, 0], "up", (2, 8, 8, 16)),  # gap / sep5x5 rate 6, psum: up to the finer path
    ],
)
def test_template_strides_channels_and_resizing(template, resize, expected):
    x1, x2 = _rng_images((2, 16, 16, 8), 3), _rng_images((2, 8, 8, 16), 4)
    layer = Template(template, filters=(16, 16), strides=2, input_strides=(4, 8), resize=resize)
    assert tuple(layer([x1, x2]).shape) == expected
    assert isinstance(layer.aggregation, ConcatReduce if template[2] else ParamSum)
    assert layer.adapts == [None, None]
    narrow = Template(template, filters=(8, 16), input_strides=(4, 8), resize=resize)
    assert narrow.adapts[0] is not None and narrow.adapts[1] is None


def test_template_layer_round_trips_through_keras_file(tmp_path):
    inputs = [keras.Input((None, None, 8)), keras.Input((None, None, 16))]
    layer = Template([4, 3, 1], filters=(16, 32), strides=2, input_strides=(4, 8), name="t")
    model = keras.Model(inputs, layer(inputs))
    x = [_rng_images((1, 16, 16, 8), 5), _rng_images((1, 8, 8, 16), 6)]
    path = tmp_path / "template.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert loaded.get_layer("t").get_config()["template"] == [4, 3, 1]
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-5)


def test_skip_refuses_a_non_integer_widening():
    with pytest.raises(ValueError, match="cannot widen 3 channels to 4"):
        TileSkip(4)(np.zeros((1, 2, 2, 3), "float32"))


def test_published_models_run_and_inference_model_gives_the_main_logits(space):
    model = space.build_genotype("arch0")
    x = _rng_images((2, 64, 64, 3))
    out = model(x)
    assert sorted(out) == ["logits"]
    # arch0's unused outputs include block 6, which reads the stride-4 stem output.
    assert tuple(out["logits"].shape) == (2, 16, 16, 5)
    inference = space.inference_model(model)
    np.testing.assert_allclose(inference(x), out["logits"], atol=1e-5)


def test_random_architectures_build_and_run_on_odd_sizes(space):
    x = _rng_images((1, 50, 70, 3))
    for seed in (0, 1):
        out = space.build(space.hyperparameters(space.random_values(seed)))(x)["logits"]
        assert out.shape[0] == 1 and out.shape[-1] == 5 and out.shape[1] <= 13


# Authors' count (Table 3, PyTorch trainable parameters incl. BN affine, stem included).
@pytest.mark.parametrize("name, authors", [("arch0", 280_147), ("arch1", 268_235)])
def test_published_architectures_match_the_authors_parameter_counts(name, authors):
    model = TemplateSpace(num_classes=19, width=64).build_genotype(name)
    count = lambda layer: sum(int(np.prod(w.shape)) for w in layer.trainable_weights)  # noqa: E731
    decoder, stem = count(model.get_layer("decoder")), count(model.get_layer("encoder"))
    # The generated part matches the authors' TemplateDecoder exactly; the Keras MobileNetV2
    # stem lacks the authors' 32x32 expansion conv + BN of block 0 (1,088 parameters).
    assert decoder == authors - 56_576
    assert stem == 56_576 - 1_088
    assert abs(count(model) - authors) / authors < 0.01
