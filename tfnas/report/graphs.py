"""Genotypes as pictures: the cells and connections of an architecture drawn as graphs.

Each space's genotype becomes a `Graph` (nodes with labels, directed edges) that follows the
paper's figure of that space, then `draw_genotype` lays it out left to right with matplotlib:

- auxcell (Nekrasov et al. CVPR 2019, Fig. 1 and Fig. 9): the decoder (encoder taps, three
  blocks reading two inputs each through the cell, the unused block outputs concatenated
  into the classifier) and the cell itself (op `o1`, three branches of two ops and a sum,
  loose ends summed into the output), ops named as in `tfnas.ops.CELL_OPS` (Table 4);
- template (Nekrasov et al. WACV 2020, Fig. 3 and 4): the templates `[op1, op2, agg]` and
  the blocks reading two pool entries with their template, repeats and stride;
- dpc (Chen et al. NeurIPS 2018, Fig. 5): the branches with their ops and inputs, all
  concatenated into the 1x1 classifier.
"""

import dataclasses

from matplotlib.figure import Figure

from tfnas.cells.auxcell import loose_ends
from tfnas.cells.template import AGGREGATIONS, TEMPLATE_OPS
from tfnas.ops import CELL_OPS

_COLOURS = {"input": "#dbe9f6", "op": "#fde2c4", "sum": "#e2e2e2", "block": "#d5efd5", "output": "#f6d5d5"}


@dataclasses.dataclass
class Graph:
    """A small directed acyclic graph to draw.

    Attributes:
        title: str.
        nodes: list of `(key, label, kind)`; kind is one of "input", "op", "sum",
            "block", "output" (the box colour).
        edges: list of `(source key, target key, label)`; label may be "".
    """

    title: str
    nodes: list
    edges: list

    def labels(self):
        """dict key -> label."""
        return {key: label for key, label, _ in self.nodes}


def auxcell_graphs(genotype):
    """The decoder and cell graphs of an auxcell genotype `[connections, cell]`.

    Args:
        genotype: `[[[c1, c2], [c3, c4], [c5, c6]], [o1, [i2, i3, o2, o3], ...]]`.

    Returns:
        list of two `Graph`: the decoder's connections and the cell.
    """
    connections, cell = genotype
    decoder = Graph("decoder: blocks and connections", [], [])
    for i in range(4):
        decoder.nodes.append((f"p{i}", f"tap {i}", "input"))
    used = set()
    for b, pair in enumerate(connections):
        decoder.nodes.append((f"p{4 + b}", f"block {b}\ncell + cell, sum", "block"))
        for c in pair:
            decoder.edges.append((f"p{c}", f"p{4 + b}", ""))
            used.add(c)
    decoder.nodes.append(("out", "concat, 1x1\nlogits", "output"))
    for i in range(4, 4 + len(connections)):
        if i not in used:
            decoder.edges.append((f"p{i}", "out", ""))

    graph = Graph("cell", [("f0", "input", "input"), ("f1", CELL_OPS[cell[0]], "op")], [("f0", "f1", "")])
    for k, (i_a, i_b, o_a, o_b) in enumerate(cell[1:], start=1):
        a, b, s = 3 * k - 1, 3 * k, 3 * k + 1
        graph.nodes += [
            (f"f{a}", CELL_OPS[o_a], "op"),
            (f"f{b}", CELL_OPS[o_b], "op"),
            (f"f{s}", f"+ (branch {k})", "sum"),
        ]
        graph.edges += [
            (f"f{i_a}", f"f{a}", ""),
            (f"f{i_b}", f"f{b}", ""),
            (f"f{a}", f"f{s}", ""),
            (f"f{b}", f"f{s}", ""),
        ]
    graph.nodes.append(("out", "+ output", "output"))
    for end in loose_ends(cell):
        graph.edges.append((f"f{end}", "out", ""))
    return [decoder, graph]


def template_graphs(genotype, num_stem_outputs=2):
    """The templates and the block graph of a template-space genotype `[templates, blocks]`.

    Args:
        genotype: `[[[op1, op2, agg]] * M, [[loc1, loc2, template, repeats - 1, log2(stride)]] * N]`.
        num_stem_outputs: int, stem outputs at the start of the pool. Default 2 (1/4, 1/8).

    Returns:
        list of `Graph`: one per template, then the blocks.
    """
    templates, blocks = genotype
    graphs = []
    for t, (op1, op2, agg) in enumerate(templates):
        graphs.append(
            Graph(
                f"template {t}",
                [
                    ("x1", "input 1", "input"),
                    ("x2", "input 2", "input"),
                    ("a", TEMPLATE_OPS[op1], "op"),
                    ("b", TEMPLATE_OPS[op2], "op"),
                    ("agg", AGGREGATIONS[agg], "sum"),
                ],
                [("x1", "a", ""), ("x2", "b", ""), ("a", "agg", ""), ("b", "agg", "")],
            )
        )
    stems = [f"stem 1/{4 * 2**i}" for i in range(num_stem_outputs)]
    net = Graph("blocks", [(f"p{i}", s, "input") for i, s in enumerate(stems)], [])
    used = set()
    for b, (loc1, loc2, t, repeats, log2_stride) in enumerate(blocks):
        key = f"p{num_stem_outputs + b}"
        label = f"block {b}\ntemplate {t} x{repeats + 1}" + (
            f", stride {2**log2_stride}" if log2_stride else ""
        )
        net.nodes.append((key, label, "block"))
        if loc1 == loc2:  # the template's both inputs read the same entry
            net.edges.append((f"p{loc1}", key, "1, 2"))
        else:
            net.edges += [(f"p{loc1}", key, "1"), (f"p{loc2}", key, "2")]
        used.update((loc1, loc2))
    net.nodes.append(("out", "concat, 1x1\nlogits", "output"))
    for i in range(num_stem_outputs, num_stem_outputs + len(blocks)):
        if i not in used:
            net.edges.append((f"p{i}", "out", ""))
    return graphs + [net]


def dpc_graphs(genotype):
    """The Dense Prediction Cell graph of a dpc genotype `[[input, op]] * B`."""
    graph = Graph("dense prediction cell", [("b0", "backbone\n(stride 16)", "input")], [])
    for i, (source, op) in enumerate(genotype):
        graph.nodes.append((f"b{i + 1}", f"branch {i}\n{op}", "op"))
        graph.edges.append((f"b{source}", f"b{i + 1}", ""))
    graph.nodes.append(("out", "concat, 1x1\nlogits", "output"))
    graph.edges += [(f"b{i + 1}", "out", "") for i in range(len(genotype))]
    return [graph]


GRAPHS = {"auxcell": auxcell_graphs, "template": template_graphs, "dpc": dpc_graphs}


def genotype_graphs(space_name, genotype):
    """The graphs of a genotype of the space `space_name` (see the module docstring).

    Raises:
        ValueError: for a space without a drawing.
    """
    if space_name not in GRAPHS:
        raise ValueError(f"no drawing for space {space_name!r}; expected one of {sorted(GRAPHS)}")
    return GRAPHS[space_name](genotype)


def layout(graph):
    """Positions of a graph's nodes: x = longest path from a source, y spread per column.

    Returns:
        dict key -> (x, y).
    """
    keys = [key for key, _, _ in graph.nodes]
    depth = {key: 0 for key in keys}
    for _ in keys:  # longest-path relaxation; a DAG settles within len(keys) rounds
        for src, dst, _ in graph.edges:
            depth[dst] = max(depth[dst], depth[src] + 1)
    columns = {}
    for key in keys:
        columns.setdefault(depth[key], []).append(key)
    sources = {key: [] for key in keys}
    for src, dst, _ in graph.edges:
        sources[dst].append(src)
    positions = {}
    for x in sorted(columns):
        column = columns[x]
        if x > 0:  # barycentre ordering: a node sits near the nodes it reads, fewer crossings
            column = sorted(
                column, key=lambda k: -sum(positions[s][1] for s in sources[k]) / max(1, len(sources[k]))
            )
        for row, key in enumerate(column):
            positions[key] = (float(x), (len(column) - 1) / 2.0 - row)
    return positions


def draw_graph(ax, graph):
    """Draws `graph` on a matplotlib axes (boxes for nodes, arrows for edges)."""
    positions = layout(graph)
    kinds = {key: kind for key, _, kind in graph.nodes}
    counts = {}
    for src, dst, label in graph.edges:
        counts[(src, dst, label)] = counts.get((src, dst, label), 0) + 1
    for (src, dst, label), count in counts.items():
        if count > 1:  # a block or branch that reads the same input twice
            label = f"{label} x{count}".strip()
        (x0, y0), (x1, y1) = positions[src], positions[dst]
        ax.annotate(
            "",
            xy=(x1, y1),
            xytext=(x0, y0),
            arrowprops={
                "arrowstyle": "-|>",
                "color": "#555555",
                "shrinkA": 14,
                "shrinkB": 14,
                # an edge that skips columns bends around the boxes between
                "connectionstyle": f"arc3,rad={0.08 if abs(x1 - x0) <= 1 else 0.3}",
            },
        )
        if label:
            ax.text(
                x0 + 0.3 * (x1 - x0),
                y0 + 0.3 * (y1 - y0),
                label,
                fontsize=7,
                color="#555555",
                ha="center",
                va="center",
            )
    for key, label, _ in graph.nodes:
        x, y = positions[key]
        ax.text(
            x,
            y,
            label,
            ha="center",
            va="center",
            fontsize=8,
            bbox={"boxstyle": "round,pad=0.35", "facecolor": _COLOURS[kinds[key]], "edgecolor": "#777777"},
        )
    xs = [p[0] for p in positions.values()]
    ys = [p[1] for p in positions.values()]
    ax.set_xlim(min(xs) - 0.6, max(xs) + 0.6)
    ax.set_ylim(min(ys) - 0.7, max(ys) + 0.7)
    ax.set_title(graph.title, fontsize=9)
    ax.axis("off")


def draw_genotype(space_name, genotype, title=None):
    """A matplotlib `Figure` of a genotype: one panel per graph of `genotype_graphs`.

    Args:
        space_name: str, `"auxcell"`, `"template"` or `"dpc"`.
        genotype: the genotype in the space's paper form.
        title: optional str above the panels.

    Returns:
        `matplotlib.figure.Figure` with the graphs attached as `figure.graphs`.
    """
    graphs = genotype_graphs(space_name, genotype)
    widths = [max(layout(g)[k][0] for k, _, _ in g.nodes) + 1.2 for g in graphs]
    heights = [max(abs(y) for _, y in layout(g).values()) * 2 + 1.4 for g in graphs]
    if space_name == "template":  # small template panels on top, the blocks below
        fig = Figure(figsize=(max(4.2 * (len(graphs) - 1), 1.6 * widths[-1]), 2.0 + 0.75 * heights[-1]))
        grid = fig.add_gridspec(2, len(graphs) - 1, height_ratios=[1.6, heights[-1]])
        for t, g in enumerate(graphs[:-1]):
            draw_graph(fig.add_subplot(grid[0, t]), g)
        draw_graph(fig.add_subplot(grid[1, :]), graphs[-1])
    else:
        fig = Figure(figsize=(max(6.0, 1.35 * sum(widths)), 0.75 * max(heights) + 0.8))
        axes = fig.subplots(1, len(graphs), width_ratios=widths, squeeze=False)[0]
        for ax, g in zip(axes, graphs):
            draw_graph(ax, g)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.graphs = graphs
    return fig
