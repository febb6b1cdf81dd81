"""The 3M-Pose supernet: a fabric with every candidate op and input (Hoang, 3M-Pose thesis 2021, Sec. 3.1-3.2; spec sections 3-5, 10)."""

import keras
import tensorflow as tf

from tfnas.cells.fabric import (
    EDGES,
    FABRIC_OPS,
    FabricCell,
    Fuse,
    Resample,
    Split,
    Stem,
)
from tfnas.choice import Choice
from tfnas.ops import Identity


class SuperFabricCell(FabricCell):
    """A fabric cell with all nine ops on every edge, each edge a `tfnas.choice.Choice`.

    The supernet calls it with one weight per op of each edge (`ArchitectureParameters.sample`)
    and the choice's weighted mode mixes them: an op whose weight is exactly 0 is not
    computed. Dyn-EGS weights are 0/1 forward, so a step computes the 1 or 2 kept ops of an
    edge, not nine, and an op's architecture logit gets its gradient through the Gumbel
    softmax of the kept ones (straight-through, as in GDAS) rather than through its own output.

    Args:
        filters: int, the row width.
        **kwargs: `keras.layers.Layer` arguments.
    """

    def __init__(self, filters, **kwargs):
        super().__init__(filters, [FABRIC_OPS] * len(EDGES), **kwargs)
        self.choices = [Choice(ops, name=f"o{e}") for e, ops in enumerate(self.ops)]

    def _edge(self, e, x, weights, training):
        if weights is None:
            raise ValueError(
                f"supernet cell {self.name!r} needs edge_weights: one weight per op of each edge"
            )
        return self.choices[e](x, training=training, mixture=weights)

    def get_config(self):
        config = super().get_config()
        config.pop("edges")
        return config


class FabricSupernet(keras.Model):
    """A `FabricSpace` with every candidate: nine ops on every edge, every possible macro input.

    `call(images, op_weights, input_weights)` mixes the candidates with the given weights
    (`ArchitectureParameters.sample`) through `tfnas.choice.Choice` layers in weighted mode:
    one per edge (`SuperFabricCell`) and one per cell over its resampled macro inputs. With
    the 0/1 weights of a genotype it computes what that genotype's network computes (every
    cell is computed, pruned or not), and a candidate with weight 0 is skipped. The stem,
    fuses, splits and heads (`FabricSpace.make_head`: the task's) are those of the derived
    networks.

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
            SuperFabricCell(s.widths[row], name=f"cell{k}") for k, (_, row) in enumerate(s.cells)
        ]
        self.resamplers, self.input_choices = {}, []
        for k, (_, row) in enumerate(s.cells):
            candidates = []
            for i in s.candidates(k):
                if i == 1:
                    candidates.append(Identity(name=f"cell{k}_parallel"))
                    continue
                direction, label = ("down", "above") if i == 0 else ("up", "below")
                name = f"cell{k}_{label}"
                self.resamplers[name] = Resample(s.widths[row], direction, name=name)
                candidates.append(self.resamplers[name])
            # Candidate j reads entry j of the call's list: the input it resamples.
            routes = list(range(len(candidates)))
            self.input_choices.append(Choice(candidates, routes=routes, name=f"cell{k}_inputs"))
        self.fuses = {str(c): Fuse(s.width, s.rows_of(c), name=f"fuse{c}") for c in s.fuse_columns}
        self.splits = {str(c): Split(s.widths[: s.rows_of(c)], name=f"split{c}") for c in s.eel_columns}
        self.heads = {str(c): s.make_head(c) for c in s.fuse_columns}

    def build(self, images_shape):
        """Nothing ahead of the first call: each sublayer builds itself from its input there.

        Without a `build`, Keras builds a subclassed model by first tracing `call`
        symbolically, every choice's conditionals into a scratch graph: 13 of the 14 s of
        a 2x2 fabric's first call, which the call itself then repeats eagerly in 0.2 s.
        """

    def call(self, images, op_weights, input_weights, training=None, return_cells=False):
        s = self.space
        stem = self.stem(images, training=training)
        prev, skip, outputs, cell_outputs = {0: stem}, stem, {}, []
        for column in range(1, s.columns + 1):
            current = {}
            for row in range(s.rows_of(column)):
                k = s.cell_index(column, row)
                available = s.candidates(k)
                # above: the finer row's output; parallel: this row's; below: the coarser
                # row's, with this row's as the size to resize it to.
                parts = [
                    prev[row - 1] if i == 0 else prev[row] if i == 1 else [prev[row + 1], prev[row]]
                    for i in available
                ]
                x = self.input_choices[k](
                    parts, training=training, mixture=tf.gather(input_weights[k], list(available))
                )
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

    def transfer(self, model):
        """Copies the supernet's weights into a derived network: what it has of every layer.

        The derived network (`space.build_genotype(genotype)` or its decoder) holds, of each
        edge, only its kept ops, and of each cell only its kept inputs' resamplers; each of
        them takes the weights of its namesake in the supernet, as do the cells' projections,
        the fuses, splits and heads, and (for a whole network) the stem. With the genotype's
        0/1 weights the supernet then computes what the derived network computes.

        Args:
            model: the derived training network (with nested `"encoder"` and `"decoder"`)
                or its decoder; the supernet must be built (called once).

        Raises:
            ValueError: for a layer the supernet has no namesake of (another space's network).
        """
        names = [layer.name for layer in model.layers]
        if "decoder" in names:
            model.get_layer("encoder").get_layer("stem").set_weights(self.stem.get_weights())
            model = model.get_layer("decoder")
        fixed = {
            **self.resamplers,
            **{
                layer.name: layer
                for layer in (*self.fuses.values(), *self.splits.values(), *self.heads.values())
            },
        }
        for layer in model.layers:
            if not layer.weights:
                continue
            if isinstance(layer, FabricCell):
                twin = self.fabric_cells[int(layer.name[len("cell") :])]
                for e, kept in enumerate(layer.ops):
                    for op in kept:
                        (same,) = [o for o in twin.ops[e] if o.name == op.name]
                        op.set_weights(same.get_weights())
                layer.project.set_weights(twin.project.get_weights())
            elif layer.name in fixed:
                layer.set_weights(fixed[layer.name].get_weights())
            else:
                raise ValueError(
                    f"the derived network's layer {layer.name!r} has no namesake in the fabric supernet"
                )
