"""The 3M-Pose fabric space, Hoang 2021 (seed 003, Sec. 3.1-3.2, Table A.1), as a keras-tuner HyperModel.

A fabric of `rows` rows (row r at 1/(4 * 2^r) of the input, `width * 2^r` channels) and
`columns` columns of cells (`tfnas.cells.fabric.FabricCell`) follows the stem. Every cell
decides which 1..`max_inputs` of the previous column's above / parallel / below outputs it
sums, and which 1..`max_ops` of the nine ops each of its three edges keeps (3M-POSE.md sections
4, 5, 7). At every early-escape column (4 and 7 by default) and at the last column, `Fuse`
turns the rows into the final features, the task's head gives its output (`"eel_<column>"`;
the last column's is `"logits"`), and (except at the last column) `Split` adds the final
features back to every row. The thesis' task is bottom-up pose (a `PoseHead`: heatmaps and
tags); segmentation, depth and top-down pose get a `TaskHead` (a 1x1 conv to the task's
channels) on the same stride-4 features, so every task searches the same fabric.

**Layout.** `layout[l]` is the number of rows of column l + 1. The thesis' text counts 34
cells (1, 2, 3, then 4 rows), but Table A.1 numbers 37 (cells 0-36); the default layout is the
table's, 2, 3, then 4 rows (`min(rows, column + 1)`), with cells numbered column by column from
the top row. It fits every input label of the table but one: cell 3 (column 2, row 1) reads
"parallel+above+below", yet column 1 has no row 2; `PUBLISHED["3m_pose"]` drops that "below"
(`TABLE_A1_CLASHES`). Cell 2, "-" in the table, is pruned: no later cell reads it.

**Genotype.** A list with one entry per cell, in cell order: `[inputs, o0, o1, o2]`, where
`inputs` is the sorted list of kept macro inputs (0 above, 1 parallel, 2 below) and `o0, o1,
o2` the sorted lists of kept op indices (`tfnas.cells.fabric.FABRIC_OPS`) of the edges I->h1,
I->h2, h1->h2; or `None` for a pruned cell, one whose output nothing reads (cells of fuse
columns are never pruned). `genotype(values)` writes `None` for every pruned cell.

    >>> space = FabricSpace(width=32)
    >>> model = space.build_genotype("3m_pose")          # outputs "logits", "eel_4", "eel_7"
"""

import itertools

import keras
import keras_tuner

from tfnas.cells.fabric import (
    EDGES,
    FABRIC_OPS,
    INPUTS,
    TABLE_OP_NAMES,
    FabricCell,
    Fuse,
    PoseHead,
    Resample,
    Split,
    Stem,
    TaskHead,
    mix_inputs,
)
from tfnas.spaces.base import MAIN_OUTPUT, DecoderSpace, space_task

#: Table A.1 as printed: (inputs, O0, O1, O2) of cells 0-36; "-" is an empty cell.
TABLE_A1 = (
    ("parallel", "Max+Avg", "Max+Avg", "Identity"),
    ("above", "Identity", "Identity+CSI", "Identity+CSI"),
    ("-", "-", "-", "-"),
    ("parallel+above+below", "Identity+Residual", "Identity+SepConv", "Identity+Residual"),
    ("above", "Identity+Avg", "Max+Avg", "Identity+Avg"),
    ("below", "CSI+SE", "CSI+SE", "Residual+SepConv"),
    ("parallel+below", "Identity+Residual", "Identity+SepConv", "Identity+SE"),
    ("parallel", "Identity+CSI", "Identity+CSI", "Identity+CSI"),
    ("above", "Max", "Max", "Avg"),
    ("parallel", "Identity+Avg", "Identity+SepConv", "Avg+SE"),
    ("parallel+below", "Identity", "Identity+ZoomConv", "Residual+ZoomConv"),
    ("parallel+above+below", "Residual+ZoomConv", "Identity+Residual", "Avg+Residual"),
    ("parallel", "Avg", "Avg", "Conv"),
    ("parallel+below", "Identity+SE", "Identity+SE", "Avg+SE"),
    ("parallel+above+below", "CSI", "Identity+Residual", "ZoomConv+SepConv"),
    ("parallel+above+below", "Avg+CSI", "Avg+CSI", "Avg"),
    ("parallel", "Avg+CSI", "CSI+SepConv", "Residual+Conv"),
    ("parallel+below", "Identity+CSI", "CSI+Conv", "SE+SepConv"),
    ("parallel+above", "SE+ZoomConv", "Identity+SE", "ZoomConv+SepConv"),
    ("parallel", "CSI+ZoomConv", "CSI", "Residual+SepConv"),
    ("parallel", "Conv+SepConv", "Identity+ZoomConv", "Conv+ZoomConv"),
    ("parallel+below", "SE", "SE+SepConv", "Max"),
    ("parallel+above+below", "Max+Avg", "Max+Avg", "Max+SE"),
    ("below", "ZoomConv+SepConv", "ZoomConv+SepConv", "Max+Avg"),
    ("parallel", "Max+Avg", "Identity+Avg", "Max+Conv"),
    ("parallel", "SE+SepConv", "Identity+Residual", "Max+Avg"),
    ("parallel+below", "Max+Avg", "Max+Avg", "Max+Avg"),
    ("parallel+below", "Residual+SepConv", "ZoomConv+SepConv", "Max+Avg"),
    ("parallel", "Identity+CSI", "Conv+SepConv", "Max+Conv"),
    ("parallel+below", "Conv", "SepConv", "Max"),
    ("parallel+above", "Max+Avg", "Max+Avg", "Max+SE"),
    ("parallel+above", "Avg+Residual", "Conv+ZoomConv", "Max+ZoomConv"),
    ("parallel", "CSI+ZoomConv", "Avg+ZoomConv", "Conv+ZoomConv"),
    ("parallel+below", "Residual", "SepConv", "SepConv"),
    ("parallel+above+below", "ZoomConv", "Identity", "SepConv"),
    ("below", "CSI", "SepConv", "SepConv"),
    ("parallel", "CSI+ZoomConv", "ZoomConv+SepConv", "Avg+Residual"),
)

#: Inputs Table A.1 names that the 2/3/4x8 layout does not have: cell -> dropped inputs.
TABLE_A1_CLASHES = {3: ("below",)}


def table_genotype(table, clashes=None):
    """Table A.1's text form -> a genotype, dropping the inputs listed in `clashes`.

    Args:
        table: sequence of `(inputs, O0, O1, O2)` strings as in `TABLE_A1`.
        clashes: dict cell -> input names to drop (default none).

    Returns:
        The genotype (list; `None` for a "-" cell).
    """
    clashes = clashes or {}
    genotype = []
    for k, (inputs, *edges) in enumerate(table):
        if inputs == "-":
            genotype.append(None)
            continue
        names = [n for n in inputs.split("+") if n not in clashes.get(k, ())]
        try:
            kept = sorted(INPUTS.index(n) for n in names)
            ops = [sorted(TABLE_OP_NAMES.index(o) for o in e.split("+")) for e in edges]
        except ValueError as err:
            raise ValueError(f"table cell {k}: {err}; inputs are {INPUTS}, ops {TABLE_OP_NAMES}") from None
        genotype.append([kept, *ops])
    return genotype


def genotype_table(genotype):
    """A genotype in Table A.1's text form (the inverse of `table_genotype`), e.g. to print a derived network.

    Args:
        genotype: a fabric genotype.

    Returns:
        tuple of `(inputs, O0, O1, O2)` strings per cell; a pruned cell is all "-".
    """
    rows = []
    for cell in genotype:
        if cell is None:
            rows.append(("-", "-", "-", "-"))
            continue
        inputs = sorted(cell[0], key=lambda i: (i != 1, i))  # the table writes "parallel" first
        rows.append(
            (
                "+".join(INPUTS[i] for i in inputs),
                *("+".join(TABLE_OP_NAMES[o] for o in ops) for ops in cell[1:]),
            )
        )
    return tuple(rows)


def _subsets(items, largest):
    """Non-empty subsets of `items` with at most `largest` elements, by size then order."""
    return [
        tuple(c) for n in range(1, min(largest, len(items)) + 1) for c in itertools.combinations(items, n)
    ]


class FabricSpace(DecoderSpace):
    """The 3M-Pose fabric space (4r10d32w by default), a `keras_tuner.HyperModel`.

    Decisions, in cell order: `cell{k}_inputs` (index into the cell's input subsets,
    `input_subsets(k)`), then `cell{k}_o0`, `cell{k}_o1`, `cell{k}_o2` (index into `op_sets`, the
    sets of 1..`max_ops` op indices). The stem is the space's "encoder" (`build_encoder`), so
    `DecoderSpace`'s assembly, `build_genotype` and `inference_model` apply; unlike the other
    spaces' encoders it is trained with the fabric.

    Args:
        num_joints: int, keypoints (17 for COCO); each head gives `num_joints` heatmaps and
            `num_joints * tag_dim` tag maps. A pose task given as `task` must have as many.
        width: int, C, row 0's width (32 in the thesis).
        rows: int, rows of the fabric (4).
        columns: int, columns (10).
        layout: sequence of `columns` ints, rows of each column; default `min(rows, l + 1)` for
            the 1-based column l (Table A.1's 37 cells; see the module docstring).
        eel_columns: 1-based columns with an early-escape layer (default (4, 7)); the last column
            always has the final fuse and head.
        max_ops: int, R_alpha, ops an edge may keep (2).
        max_inputs: int, R_beta, macro inputs a cell may keep (3).
        stem_channels: int, the stem convolutions' width (64, HRNet).
        stem_blocks: int, the stem's bottlenecks (4, HRNet).
        tag_dim: int, tag channels per joint (1).
        input_shape: tuple, default `(None, None, 3)`.
        name: str, default "fabric".
        task: the task the heads predict for: None (default) for bottom-up pose
            (`"pose-multi"`) with `num_joints` joints, made when first asked for (a task of
            other than COCO's 17 joints needs its own OKS sigmas: pass the task); or any
            task as the other spaces take it (a name, a `Task` or a config dict):
            `"pose-multi"` gets the thesis' `PoseHead`s (1x1 convs, heatmaps then tags, the
            task's `2 * num_joints` channels at stride 4); `"segmentation"`, `"depth"` and
            `"pose"` (top-down) get `TaskHead`s (a 1x1 conv to the task's channels) at
            stride 4.
        num_classes: int, the classes of a segmentation task (with `task="segmentation"`);
            None otherwise.
        encoder_weights: None; the stem is trained with the fabric and has no pretrained
            weights (accepted because the search directory rebuilds spaces with
            `encoder_weights=None`).

    Raises:
        ValueError: for a setting out of range, a pose task whose joints differ from
            `num_joints` (or `tag_dim` other than 1 with a pose-multi task), a task whose output is not at
            stride 4 or free (resized by its loss), or `num_classes` without a segmentation
            task.
    """

    #: `tfnas search` searches the fabric with the PPO controller unless told otherwise;
    #: the thesis' one-shot search is `--oracle gumbel` (`tfnas.tuners.oneshot`).
    DEFAULT_ORACLE = "ppo"

    PUBLISHED = {"3m_pose": table_genotype(TABLE_A1, TABLE_A1_CLASHES)}

    def __init__(
        self,
        num_joints=17,
        width=32,
        rows=4,
        columns=10,
        layout=None,
        eel_columns=(4, 7),
        max_ops=2,
        max_inputs=3,
        stem_channels=64,
        stem_blocks=4,
        tag_dim=1,
        input_shape=(None, None, 3),
        name="fabric",
        tunable=True,
        task=None,
        num_classes=None,
        encoder_weights=None,
    ):
        keras_tuner.HyperModel.__init__(
            self, name=name, tunable=tunable
        )  # DecoderSpace's checks are for classes
        if int(num_joints) < 1 or int(width) < 1 or int(tag_dim) < 0:
            raise ValueError(
                f"num_joints and width must be positive and tag_dim non-negative, got "
                f"num_joints={num_joints}, width={width}, tag_dim={tag_dim}"
            )
        self.num_joints, self.width, self.tag_dim = int(num_joints), int(width), int(tag_dim)
        self.encoder, self.encoder_weights, self.alpha, self.output_stride = "stem", None, 1.0, 4
        self.input_shape = tuple(input_shape)
        self.rows, self.columns = int(rows), int(columns)
        if self.rows < 1 or self.columns < 1:
            raise ValueError(
                f"a fabric needs at least one row and one column, got rows={rows}, columns={columns}"
            )
        if layout is None:
            layout = [min(self.rows, c + 1) for c in range(1, self.columns + 1)]
        self.layout = tuple(int(n) for n in layout)
        if len(self.layout) != self.columns or any(not 1 <= n <= self.rows for n in self.layout):
            raise ValueError(
                f"layout {list(self.layout)} must give 1..{self.rows} rows for each of the "
                f"{self.columns} columns"
            )
        for c in range(self.columns):
            if self.layout[c] > (self.layout[c - 1] if c else 1) + 1:
                raise ValueError(
                    f"layout {list(self.layout)}: column {c + 1} adds more than one row to the "
                    f"previous column (the stem, before column 1, has one); a new row can only be "
                    f"reached from the row above it"
                )
        self.eel_columns = tuple(sorted(int(c) for c in eel_columns))
        if any(not 1 <= c < self.columns for c in self.eel_columns):
            raise ValueError(
                f"eel_columns {list(self.eel_columns)} must lie in 1..{self.columns - 1} "
                f"(column {self.columns} always has the final head)"
            )
        self.max_ops = int(max_ops)
        self.max_inputs = int(max_inputs)
        if not 1 <= self.max_ops <= len(FABRIC_OPS) or not 1 <= self.max_inputs <= len(INPUTS):
            raise ValueError(
                f"max_ops must be in 1..{len(FABRIC_OPS)} and max_inputs in 1..{len(INPUTS)}, "
                f"got {max_ops} and {max_inputs}"
            )
        self.stem_channels = int(stem_channels)
        self.stem_blocks = int(stem_blocks)
        if encoder_weights is not None:
            raise ValueError(
                f"encoder_weights={encoder_weights!r}: the fabric's stem is trained with the fabric "
                "and has no pretrained weights; leave encoder_weights out"
            )
        if task is None and num_classes is not None:
            raise ValueError(
                f"num_classes={num_classes!r}: the fabric's default task is bottom-up pose, which "
                "has no classes; pass task='segmentation' with num_classes"
            )
        self._task = None if task is None else self._check_task(space_task(task, num_classes))
        #: The segmentation task's classes; None for the other tasks.
        self.num_classes = getattr(self._task, "num_classes", None)
        self.widths = tuple(self.width * 2**r for r in range(self.rows))
        #: (1-based column, row) of every cell, in cell order.
        self.cells = [(c + 1, r) for c in range(self.columns) for r in range(self.layout[c])]
        self._index = {cell: k for k, cell in enumerate(self.cells)}
        #: The sets of op indices an edge may keep, by decision value.
        self.op_sets = _subsets(tuple(range(len(FABRIC_OPS))), self.max_ops)

    @property
    def task(self):
        """The `tfnas.tasks.Task` the heads predict for (see the `task` argument)."""
        if self._task is None:
            from tfnas.tasks import get_task

            self._task = self._check_task(get_task("pose-multi", num_joints=self.num_joints))
        return self._task

    def _check_task(self, task):
        if task.name != "pose-multi":
            joints = getattr(task, "num_joints", None)
            if joints is not None and joints != self.num_joints:
                raise ValueError(
                    f"the {task.name} task has {joints} joints, but num_joints={self.num_joints}; "
                    f"pass num_joints={joints} (the heads take the task's joints)"
                )
            if task.output_stride not in (None, 4):
                raise ValueError(
                    f"the {task.name} task expects its output at stride {task.output_stride}, but the "
                    "fabric's heads predict at stride 4; use a task at stride 4"
                )
            return task
        if task.num_joints != self.num_joints or self.tag_dim != 1 or task.output_stride != 4:
            raise ValueError(
                f"the pose-multi task has {task.num_joints} joints at stride {task.output_stride}, "
                f"but the fabric's heads give {self.num_joints} heatmaps and {self.tag_dim} tag map(s) "
                f"per joint at stride 4; use num_joints={task.num_joints}, tag_dim=1 and stride 4"
            )
        return task

    def config(self):
        return {
            "num_joints": self.num_joints,
            "width": self.width,
            "rows": self.rows,
            "columns": self.columns,
            "layout": list(self.layout),
            "eel_columns": list(self.eel_columns),
            "max_ops": self.max_ops,
            "max_inputs": self.max_inputs,
            "stem_channels": self.stem_channels,
            "stem_blocks": self.stem_blocks,
            "tag_dim": self.tag_dim,
            "input_shape": list(self.input_shape),
            "task": {"name": self.task.name, **self.task.config()},
        }

    # --- structure ------------------------------------------------------------------------
    @property
    def fuse_columns(self):
        """1-based columns with a fuse and a head: the early escapes and the last column."""
        return (*self.eel_columns, self.columns)

    def rows_of(self, column):
        """Rows of a 1-based column; column 0 is the stem (row 0 only)."""
        return 1 if column == 0 else self.layout[column - 1]

    def cell_index(self, column, row):
        """Cell number of (1-based column, row), or None if the layout has no such cell."""
        return self._index.get((column, row))

    def candidates(self, k):
        """Input indices (0 above, 1 parallel, 2 below) cell k can read from the previous column."""
        column, row = self.cells[k]
        below_rows = self.rows_of(column - 1)
        offsets = {0: row - 1, 1: row, 2: row + 1}
        return tuple(i for i, r in offsets.items() if 0 <= r < below_rows)

    def source(self, k, i):
        """The cell read by input i of cell k: its index, or -1 for the stem."""
        column, row = self.cells[k]
        r = row + (i - 1)
        return -1 if column == 1 else self.cell_index(column - 1, r)

    def input_subsets(self, k):
        """Sets of inputs cell k may keep (1..max_inputs of its candidates), by decision value."""
        return _subsets(self.candidates(k), self.max_inputs)

    def alive(self, inputs_of):
        """Which cells are computed: those in fuse columns and those a computed cell reads.

        Args:
            inputs_of: list, per cell, of its kept input indices (empty or None if pruned).

        Returns:
            list of bool, one per cell.
        """
        alive = [False] * len(self.cells)
        for k in reversed(range(len(self.cells))):
            column, _ = self.cells[k]
            alive[k] = alive[k] or column in self.fuse_columns
            if alive[k] and column > 1:
                for i in inputs_of[k] or ():
                    alive[self.source(k, i)] = True
        return alive

    # --- decisions and codec --------------------------------------------------------------
    def declare_hyperparameters(self, hp):
        values = {}
        for k in range(len(self.cells)):
            key = f"cell{k}_inputs"
            values[key] = hp.Choice(key, list(range(len(self.input_subsets(k)))))
            for e in range(len(EDGES)):
                key = f"cell{k}_o{e}"
                values[key] = hp.Choice(key, list(range(len(self.op_sets))))
        return values

    def encode(self, values):
        cells = []
        for k in range(len(self.cells)):
            inputs = list(self.input_subsets(k)[int(values[f"cell{k}_inputs"])])
            cells.append(
                [inputs] + [list(self.op_sets[int(values[f"cell{k}_o{e}"])]) for e in range(len(EDGES))]
            )
        alive = self.alive([c[0] for c in cells])
        return [cell if live else None for cell, live in zip(cells, alive)]

    def values(self, genotype):
        if not isinstance(genotype, (list, tuple)) or len(genotype) != len(self.cells):
            raise ValueError(
                f"a genotype of this fabric lists {len(self.cells)} cells "
                f"(layout {list(self.layout)}), got {genotype!r:.80}"
            )
        values, inputs_of = {}, []
        for k, cell in enumerate(genotype):
            where = f"genotype cell {k} (column {self.cells[k][0]}, row {self.cells[k][1]})"
            if cell is None:
                inputs_of.append(None)
                values[f"cell{k}_inputs"] = 0
                values.update({f"cell{k}_o{e}": 0 for e in range(len(EDGES))})
                continue
            if not isinstance(cell, (list, tuple)) or len(cell) != 1 + len(EDGES):
                raise ValueError(f"{where} is {cell!r}; expected [inputs, o0, o1, o2] or None")
            inputs = tuple(sorted(cell[0]))
            subsets = self.input_subsets(k)
            if inputs not in subsets:
                names = [INPUTS[i] for i in self.candidates(k)]
                raise ValueError(
                    f"{where} reads inputs {list(cell[0])}, but it may keep 1..{self.max_inputs} "
                    f"distinct inputs of {list(self.candidates(k))} ({', '.join(names)})"
                )
            values[f"cell{k}_inputs"] = subsets.index(inputs)
            inputs_of.append(inputs)
            for e, ops in enumerate(cell[1:]):
                ops = tuple(sorted(ops))
                if ops not in self.op_sets:
                    raise ValueError(
                        f"{where} edge O{e} keeps ops {list(ops)}, but an edge keeps 1..{self.max_ops} "
                        f"distinct op indices in 0..{len(FABRIC_OPS) - 1} ({', '.join(FABRIC_OPS)})"
                    )
                values[f"cell{k}_o{e}"] = self.op_sets.index(ops)
        alive = self.alive(inputs_of)
        for k, cell in enumerate(genotype):
            if cell is None and alive[k]:
                column, row = self.cells[k]
                why = "a fuse column" if column in self.fuse_columns else "a kept cell reads it"
                raise ValueError(
                    f"genotype cell {k} (column {column}, row {row}) is pruned (None), but {why}"
                )
        return values

    # --- the network ----------------------------------------------------------------------
    def build_encoder(self):
        """The stem (spec section 2) as a model: image -> [features at 1/4], `tap_strides` [4]."""
        inputs = keras.Input(self.input_shape, name="image")
        outputs = Stem(self.width, self.stem_channels, self.stem_blocks, name="stem")(inputs)
        model = keras.Model(inputs, [outputs], name="encoder")
        model.tap_strides = [4]
        return model

    def feature_specs(self, encoder=None):
        return [(self.width, 4)]

    @property
    def bottom_up(self):
        """Whether the heads predict bottom-up pose (the default; the task is not made to tell)."""
        return self._task is None or self._task.name == "pose-multi"

    @property
    def head_channels(self):
        """Channels of every head: heatmaps and tags for bottom-up pose, else the task's."""
        if self.bottom_up:
            return self.num_joints * (1 + self.tag_dim)
        return self.task.output_channels

    def make_head(self, column):
        """The head layer of a fuse column: a `PoseHead` for bottom-up pose, else a `TaskHead`."""
        key = self.head_key(column)
        if self.bottom_up:
            return PoseHead(self.num_joints, self.tag_dim, name=key)
        return TaskHead(self.task.output_channels, self.task.activation, name=key)

    def head_key(self, column):
        """Output key of a fuse column's head: `"logits"` for the last column, else `"eel_<column>"`."""
        return MAIN_OUTPUT if column == self.columns else f"eel_{column}"

    def decoder_from_values(self, values, features, strides):
        genotype = self.genotype(values)
        stem = features[0]
        prev, refs, skip, outputs = {0: stem}, {0: stem}, stem, {}
        for column in range(1, self.columns + 1):
            current = {}
            for row in range(self.rows_of(column)):
                k = self.cell_index(column, row)
                cell = genotype[k]
                if cell is None:
                    continue
                w = self.widths[row]
                parts = []
                for i in cell[0]:
                    x = prev[row + i - 1]
                    if i == 0:
                        x = Resample(w, "down", name=f"cell{k}_above")(x)
                    elif i == 2:
                        x = Resample(w, "up", name=f"cell{k}_below")([x, refs[row]])
                    parts.append(x)
                x = mix_inputs(parts)
                current[row] = FabricCell(
                    w, [[FABRIC_OPS[o] for o in ops] for ops in cell[1:]], name=f"cell{k}"
                )(x)
                refs.setdefault(row, current[row])
            if column in self.fuse_columns:
                rows = [current[r] for r in range(self.rows_of(column))]
                final = Fuse(self.width, len(rows), name=f"fuse{column}")([skip, *rows])
                key = self.head_key(column)
                outputs[key] = self.make_head(column)(final)
                if column != self.columns:
                    split = Split(self.widths[: len(rows)], name=f"split{column}")([final, *rows])
                    current = dict(enumerate(split))
                skip = final
            prev = current
        return {MAIN_OUTPUT: outputs.pop(MAIN_OUTPUT), **outputs}
