"""Template-based space of Nekrasov et al., WACV 2020 (Sec. 3 and 4.1).

The network starts from a *stem*: the first three inverted-residual stages of MobileNetV2,
whose outputs at 1/4 (24 channels) and 1/8 (32 channels) start the sampling pool. It is the
"encoder" of tfnas: stage 1 trains the generated part on cached stem outputs, stage 2 trains
the whole network end to end (Sec. 4.1). Then:

- M templates `[op1, op2, agg]` (`tfnas.cells.template`);
- N blocks `[loc1, loc2, template, repeats, stride]`: the template is applied to the pool
  entries `loc1` and `loc2`; with `repeats` k > 1 it is applied again k - 1 times, with new
  weights, to (the second input, the previous output) (Fig. 4); the last output joins the
  pool. Only the first N // 2 blocks choose a stride; stride 2 halves the resolution of the
  first instantiation's ops and multiplies their channels by `channel_factor`. Paths are
  resized down to the coarser one in those blocks and up to the finer one in the rest.
- The block outputs no block reads are resized to the finest of them and concatenated,
  then ReLU, 1x1 conv-BN-ReLU to `width` channels and a 3x3 conv give the `logits`.

As in the authors' code (which the published parameter counts follow), the pool keeps the
stem's 24 and 32 channels; `adapt_inputs=True` first maps them to `width` channels with
1x1 conv-BN-ReLU as the paper's text says. `width` is 48 during the paper's search and 64
in its full training.

Genotypes use the authors' form: `[templates, blocks]` with templates `[[op1, op2, agg]] * M`
(op indices into `TEMPLATE_OPS`, agg 0 = psum, 1 = cat) and blocks
`[[loc1, loc2, template, repeats - 1, log2(stride)]] * N`.

    >>> space = TemplateSpace(num_classes=19, width=64)
    >>> model = space.build_genotype("arch0")   # 279,059 trainable parameters
"""

import keras

from tfnas.cells.template import AGGREGATIONS, TEMPLATE_OPS, Template
from tfnas.ops import ConvBN
from tfnas.spaces.base import MAIN_OUTPUT, DecoderSpace, check_index, resize_to_finest

NUM_STEM_OUTPUTS = 2
MAX_REPEATS = 4


def _template_keys(t):
    return (f"template{t}_op1", f"template{t}_op2", f"template{t}_agg")


def _block_keys(b):
    return (f"block{b}_loc1", f"block{b}_loc2", f"block{b}_template", f"block{b}_repeats", f"block{b}_stride")


class TemplateSpace(DecoderSpace):
    """The WACV 2020 template space, a `keras_tuner.HyperModel`.

    Decisions, in the controller's order: for each template t = 0..M-1 `template{t}_op1`,
    `template{t}_op2` (0..5, `TEMPLATE_OPS`) and `template{t}_agg` (0 psum, 1 cat); then for
    each block b = 0..N-1 `block{b}_loc1`, `block{b}_loc2` (0..b+1: the two stem outputs and
    the earlier blocks), `block{b}_template` (0..M-1), `block{b}_repeats` (1..4) and, for
    b < N // 2 only, `block{b}_stride` (1 or 2).

    Args:
        num_classes: int, number of classes (19 for Cityscapes, 11 for CamVid).
        width: int, channels of the pre-classifier (and of the pool if `adapt_inputs`):
            48 in the paper's search (default), 64 in its training.
        num_templates: int, M. Default 3.
        num_blocks: int, N. Default 7.
        channel_factor: int, channel multiplier of a stride-2 block. Default 2.
        sep_repeats: int, (depthwise, pointwise, BN, ReLU) units per separable conv: 2 as in
            the authors' code (default).
        adapt_inputs: bool, whether 1x1 conv-BN-ReLU maps the stem outputs to `width`
            channels first (paper text) or not (authors' code, default).
        **kwargs: encoder settings of `DecoderSpace` (`encoder_weights`, `alpha`, ...).

    Raises:
        ValueError: for an encoder other than MobileNetV2, fewer than 1 template or 2 blocks,
            or a channel factor that is not a whole number >= 1.
    """

    # Strides (FIDELITY.md section 2, row 9). tfnas follows Sec. 3.3 of the paper: a stride-2
    # block strides only its first instantiation, and each op of it halves the resolution once.
    # The authors' code differs: its TemplateDecoder passes the stride to every repeat, its
    # separable convs stride each of their (two) units, and its skip and GAP ops ignore the
    # stride, the aggregation then resizing to the coarser path. So the published networks'
    # strided blocks are coarser in the authors' models than here: arch0 block 0 runs at 1/32
    # there and at 1/16 in tfnas, and so does arch1 block 1. Parameter counts are unaffected
    # (strides change no weight shape); multiply-adds and latency of these blocks are not.
    PUBLISHED = {
        "arch0": [
            [[3, 0, 1], [4, 1, 1], [3, 1, 1]],
            [
                [0, 1, 0, 0, 1],
                [2, 1, 2, 1, 0],
                [3, 1, 1, 1, 0],
                [1, 1, 2, 0, 0],
                [3, 0, 2, 0, 0],
                [5, 3, 2, 1, 0],
                [0, 5, 0, 1, 0],
            ],
        ],
        "arch1": [
            [[1, 1, 0], [1, 3, 0], [3, 4, 0]],
            [
                [1, 1, 0, 0, 0],
                [0, 1, 1, 1, 1],
                [3, 1, 2, 3, 0],
                [3, 0, 2, 2, 0],
                [0, 1, 2, 0, 0],
                [2, 1, 1, 3, 0],
                [4, 0, 2, 2, 0],
            ],
        ],
    }
    TAPS = (1, 2)
    #: Sec. 4.1: 5 + 5 epochs, Adam 7e-3, batches of 32, no distillation or Polyak
    #: averaging (Sec. 2); see `tfnas.training.proxy.PROTOCOLS["wacv2020"]`.
    PROXY_PROTOCOL = "wacv2020"
    #: Sec. 4.1: the CVPR 2019 geometric mean, with no class left out (Cityscapes' class 0
    #: is road; the authors' search script passes an empty `--val-omit-classes`).
    SEGMENTATION_REWARD = {"omit": ()}

    def __init__(
        self,
        num_classes=None,
        width=48,
        num_templates=3,
        num_blocks=7,
        channel_factor=2,
        sep_repeats=2,
        adapt_inputs=False,
        name="template",
        **kwargs,
    ):
        kwargs.setdefault("output_stride", 32)
        super().__init__(num_classes, width, name=name, **kwargs)
        if self.encoder != "mobilenetv2":
            raise ValueError(
                f"the template space's stem is the first MobileNetV2 stages; got "
                f"encoder={self.encoder!r}, expected 'mobilenetv2'"
            )
        if int(num_templates) < 1:
            raise ValueError(f"num_templates must be at least 1, got {num_templates!r}")
        if int(num_blocks) < 2:
            raise ValueError(
                f"num_blocks must be at least 2 (half of them may downsample), got {num_blocks!r}"
            )
        if isinstance(channel_factor, bool) or not isinstance(channel_factor, int) or channel_factor < 1:
            raise ValueError(
                f"channel_factor must be a whole number >= 1 (the skip op repeats "
                f"channels), got {channel_factor!r}"
            )
        self.num_templates = int(num_templates)
        self.num_blocks = int(num_blocks)
        self.channel_factor = channel_factor
        self.sep_repeats = int(sep_repeats)
        self.adapt_inputs = bool(adapt_inputs)

    def config(self):
        return {
            **super().config(),
            "num_templates": self.num_templates,
            "num_blocks": self.num_blocks,
            "channel_factor": self.channel_factor,
            "sep_repeats": self.sep_repeats,
            "adapt_inputs": self.adapt_inputs,
        }

    def strided(self, b):
        """Whether block `b` chooses a stride (the first `num_blocks // 2` blocks)."""
        return b < self.num_blocks // 2

    # --- decisions and codec --------------------------------------------------------------
    def declare_hyperparameters(self, hp):
        values = {}
        for t in range(self.num_templates):
            op1, op2, agg = _template_keys(t)
            values[op1] = hp.Choice(op1, list(range(len(TEMPLATE_OPS))))
            values[op2] = hp.Choice(op2, list(range(len(TEMPLATE_OPS))))
            values[agg] = hp.Choice(agg, list(range(len(AGGREGATIONS))))
        for b in range(self.num_blocks):
            loc1, loc2, template, repeats, stride = _block_keys(b)
            values[loc1] = hp.Choice(loc1, list(range(NUM_STEM_OUTPUTS + b)))
            values[loc2] = hp.Choice(loc2, list(range(NUM_STEM_OUTPUTS + b)))
            values[template] = hp.Choice(template, list(range(self.num_templates)))
            values[repeats] = hp.Choice(repeats, list(range(1, MAX_REPEATS + 1)))
            if self.strided(b):
                values[stride] = hp.Choice(stride, [1, 2])
        return values

    def encode(self, values):
        templates = [[int(values[k]) for k in _template_keys(t)] for t in range(self.num_templates)]
        blocks = []
        for b in range(self.num_blocks):
            loc1, loc2, template, repeats, stride = _block_keys(b)
            s = int(values[stride]) if self.strided(b) else 1
            blocks.append(
                [
                    int(values[loc1]),
                    int(values[loc2]),
                    int(values[template]),
                    int(values[repeats]) - 1,
                    s.bit_length() - 1,
                ]
            )
        return [templates, blocks]

    def values(self, genotype):
        templates, blocks = self._unpack(genotype)
        values = {}
        for t, template in enumerate(templates):
            for j, key in enumerate(_template_keys(t)):
                if j < 2:
                    check_index(
                        template[j],
                        len(TEMPLATE_OPS),
                        f"genotype template {t} op{j + 1}",
                        f"ops are indices into {TEMPLATE_OPS}",
                    )
                else:
                    check_index(
                        template[j], len(AGGREGATIONS), f"genotype template {t} agg", "0 = psum, 1 = cat"
                    )
                values[key] = template[j]
        for b, block in enumerate(blocks):
            loc1, loc2, template, repeats, stride = _block_keys(b)
            for j, key in enumerate((loc1, loc2)):
                check_index(
                    block[j],
                    NUM_STEM_OUTPUTS + b,
                    f"genotype block {b} loc{j + 1}",
                    f"block {b} may read the {NUM_STEM_OUTPUTS} stem outputs and {b} earlier block(s)",
                )
                values[key] = block[j]
            check_index(
                block[2],
                self.num_templates,
                f"genotype block {b} template",
                f"there are {self.num_templates} templates",
            )
            check_index(
                block[3],
                MAX_REPEATS,
                f"genotype block {b} repeats - 1",
                f"a template repeats 1..{MAX_REPEATS} times",
            )
            check_index(
                block[4],
                2 if self.strided(b) else 1,
                f"genotype block {b} log2(stride)",
                f"only blocks 0..{self.num_blocks // 2 - 1} may use stride 2",
            )
            values[template] = block[2]
            values[repeats] = block[3] + 1
            if self.strided(b):
                values[stride] = 2 ** block[4]
        return values

    def _unpack(self, genotype):
        m, n = self.num_templates, self.num_blocks
        form = f"[[[op1, op2, agg]] * {m}, [[loc1, loc2, template, repeats - 1, log2(stride)]] * {n}]"
        if not isinstance(genotype, (list, tuple)) or len(genotype) != 2:
            raise ValueError(f"genotype {genotype!r} must be [templates, blocks] in the form {form}")
        templates, blocks = genotype
        if (
            not isinstance(templates, (list, tuple))
            or len(templates) != m
            or any(not isinstance(t, (list, tuple)) or len(t) != 3 for t in templates)
        ):
            raise ValueError(
                f"genotype templates {templates!r} must be {m} triples [op1, op2, agg]; "
                f"the whole genotype has the form {form}"
            )
        if (
            not isinstance(blocks, (list, tuple))
            or len(blocks) != n
            or any(not isinstance(b, (list, tuple)) or len(b) != 5 for b in blocks)
        ):
            raise ValueError(
                f"genotype blocks {blocks!r} must be {n} lists [loc1, loc2, template, "
                f"repeats - 1, log2(stride)]; the whole genotype has the form {form}"
            )
        return templates, blocks

    # --- the network ----------------------------------------------------------------------
    def decoder_from_values(self, values, features, strides):
        templates, blocks = self.genotype(values)
        pool, pool_strides = list(features), list(strides)
        channels = [f.shape[-1] for f in features]
        if self.adapt_inputs:
            pool = [ConvBN(self.width, 1, name=f"adapt{i}")(f) for i, f in enumerate(features)]
            channels = [self.width] * len(pool)
        used = set()
        for b, (loc1, loc2, t, repeats, log2_stride) in enumerate(blocks):
            resize = "down" if self.strided(b) else "up"
            x, c, s = (
                [pool[loc1], pool[loc2]],
                [channels[loc1], channels[loc2]],
                [pool_strides[loc1], pool_strides[loc2]],
            )
            for k in range(repeats + 1):
                stride = 2**log2_stride if k == 0 else 1
                filters = [ci * self.channel_factor for ci in c] if stride > 1 else c
                out = Template(
                    templates[t], filters, stride, s, resize, self.sep_repeats, name=f"block{b}_template{k}"
                )(x)
                out_strides = [si * stride for si in s]
                x, c = [x[1], out], [c[1], max(filters)]
                s = [s[1], max(out_strides) if resize == "down" else min(out_strides)]
            pool.append(out)
            channels.append(c[1])
            pool_strides.append(s[1])
            used.update((loc1, loc2))
        unused = [i for i in range(NUM_STEM_OUTPUTS, len(pool)) if i not in used]
        collected, stride = resize_to_finest([pool[i] for i in unused], [pool_strides[i] for i in unused])
        x = collected[0] if len(collected) == 1 else keras.layers.Concatenate(name="collect")(collected)
        x = keras.layers.ReLU(name="collect_relu")(x)
        x = ConvBN(self.width, 1, name="pre_classifier")(x)
        logits = self.task.head(x, MAIN_OUTPUT, stride, reference=(features[0], strides[0]))
        return {MAIN_OUTPUT: logits}
