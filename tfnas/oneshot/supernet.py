"""The 3M-Pose supernet: a fabric with every candidate op and input (Hoang, 3M-Pose thesis 2021, Sec. 3.1-3.2; spec sections 3-5, 10)."""

import keras
import tensorflow as tf

from tfnas.cells.fabric import (
    EDGES,
    FABRIC_OPS,
    FabricCell,
    Fuse,
    PoseHead,
    Resample,
    Split,
    Stem,
    mix_inputs,
)


class FabricSupernet(keras.Model):
    """A `FabricSpace` with every candidate: nine ops on every edge, every possible macro input.

    `call(images, op_weights, input_weights)` mixes the candidates with the given weights
    (`ArchitectureParameters.sample`) through `tfnas.cells.fabric.mix`; with the 0/1 weights
    of a genotype it computes what that genotype's network computes (every cell is computed,
    pruned or not). The stem, fuses, splits and heads are those of the derived networks.

    Args:
        space: a `tfnas.spaces.fabric.FabricSpace`.

    Call args:
        images: `(N, H, W, 3)` float32.
        op_weights: `(cells, 3, 9)`; input_weights: `(cells, 3)`.
        training: bool.
        return_cells: bool, also return the list of cell outputs (for `teacher_guidance_loss`).

    Returns:
        dict of head outputs (`"logits"`, `"eel_<column>"`), and the cell outputs if asked.
    """

    def __init__(self, space, **kwargs):
        super().__init__(**kwargs)
        self.space = space
        s = space
        self.stem = Stem(s.width, s.stem_channels, s.stem_blocks, name="stem")
        self.fabric_cells = [
            FabricCell(s.widths[row], [FABRIC_OPS] * len(EDGES), name=f"cell{k}")
            for k, (_, row) in enumerate(s.cells)
        ]
        self.resamplers = {}
        for k, (_, row) in enumerate(s.cells):
            for i in s.candidates(k):
                if i != 1:
                    direction, label = ("down", "above") if i == 0 else ("up", "below")
                    name = f"cell{k}_{label}"
                    self.resamplers[name] = Resample(s.widths[row], direction, name=name)
        self.fuses = {str(c): Fuse(s.width, s.rows_of(c), name=f"fuse{c}") for c in s.fuse_columns}
        self.splits = {str(c): Split(s.widths[: s.rows_of(c)], name=f"split{c}") for c in s.eel_columns}
        self.heads = {str(c): PoseHead(s.num_joints, s.tag_dim, name=s.head_key(c)) for c in s.fuse_columns}

    def call(self, images, op_weights, input_weights, training=None, return_cells=False):
        s = self.space
        stem = self.stem(images, training=training)
        prev, skip, outputs, cell_outputs = {0: stem}, stem, {}, []
        for column in range(1, s.columns + 1):
            current = {}
            for row in range(s.rows_of(column)):
                k = s.cell_index(column, row)
                available = s.candidates(k)
                parts = []
                for i in available:
                    x = prev[row + i - 1]
                    if i == 0:
                        x = self.resamplers[f"cell{k}_above"](x, training=training)
                    elif i == 2:
                        x = self.resamplers[f"cell{k}_below"]([x, prev[row]], training=training)
                    parts.append(x)
                x = mix_inputs(parts, tf.gather(input_weights[k], list(available)))
                edge_weights = [op_weights[k, e] for e in range(len(EDGES))]
                current[row] = self.fabric_cells[k](x, edge_weights=edge_weights, training=training)
                cell_outputs.append(current[row])
            if column in s.fuse_columns:
                rows = [current[r] for r in range(s.rows_of(column))]
                final = self.fuses[str(column)]([skip, *rows], training=training)
                outputs[s.head_key(column)] = self.heads[str(column)](final)
                if column != s.columns:
                    current = dict(enumerate(self.splits[str(column)]([final, *rows], training=training)))
                skip = final
            prev = current
        return (outputs, cell_outputs) if return_cells else outputs
