"""Dynamic-inference export: early exits behind their gates, 3M-Pose (Hoang 2021, Sec. 3.1.4; spec section 11).

A network with early-escape layers (the fabric's `"eel_<column>"` heads before its `"logits"`)
need not run to the end for every image: 3M-Pose stops at an early exit when its heatmaps look
confident (skewness and kurtosis) or show no keypoint, and only the rest go on. This module
exports such a network so that TF Serving does the same:

- `ExitSegments(model, exits)` cuts the Keras graph into one segment per exit:
  segment k computes what exit k needs and what no earlier exit computed, and hands the tensors
  later segments read (the fabric's rows after `Split`, the fuse's skip features) to them. The
  segments are Keras models over the same layers, so they share the model's weights.
- `DynamicModel` runs segment 0, asks the exit's gate (`tfnas.cells.fabric.ExitGate` for pose,
  `SoftmaxExitGate` for segmentation), and returns there or goes on, in a `tf.cond` per early
  exit: the later columns are not computed when an exit answers. The last exit always answers.
- `export_dynamic` writes the SavedModel (`serving_default`, `serving_float`: the task's outputs
  of the exit that answered, plus `exit` and `confidence`), or with `static=True` the plain export
  of the last exit (`tfnas.serving.savedmodel.export`).

**One decision per batch.** A batch leaves at an exit only when the gate passes for every image
in it; otherwise the whole batch goes on. This keeps the graph a chain of `tf.cond`s that either
run the later columns or not, so skipping is real and the outputs keep one shape. Routing single
images (gather the unconfident ones, run them on, scatter back) would still run the later
columns whenever any image is unconfident and is harder to follow; with batch size 1, how
3M-Pose measures its dynamic GFLOPs (spec section 16), the two are the same.

**Thresholds.** One per early exit. The default gates are the thesis' (`THESIS_GATES`: column 4,
coefficients (1, 1, 1), threshold 1; column 7, (2, 1, 1), 0.6; an exit at another column never
answers) for pose, and `SoftmaxExitGate()` (0.9) for segmentation. Given thresholds keep the
column's coefficients ((1, 1, 1) at other columns). An exit answers when the confidence is
*above* its threshold (`>`, as the gates compare), or for pose when its heatmaps hold no keypoint
(the thesis' N = 0 rule); a threshold of `inf` turns an exit off altogether, N = 0 rule included.

Under the spec's reading (sigmoid without the printed -0.5) a pose confidence is never below
sigmoid(c0 * 3 / 8) unless some heatmaps are exactly constant (their moments count as 0), because
Pearson's kurtosis is at least skew^2 + 1. With column 7's c0 = 2 that is 0.68, above its
threshold 0.6: with the thesis' gates every batch that goes past column 4 answers at column 7.
Pass thresholds to keep the last column in use.

    >>> space = FabricSpace(...)
    >>> model = space.build_genotype("3m_pose")                 # after training
    >>> export_dynamic(model, "exports", "pose", task=space.task, thresholds=(1.0, 0.9))
"""

import dataclasses
import math
import re

import keras
import tensorflow as tf

from tfnas.cells.fabric import (
    THESIS_GATES,
    ExitGate,
    SoftmaxExitGate,
    heatmap_confidence,
    softmax_confidence,
)
from tfnas.preprocessing import preprocess
from tfnas.serving import savedmodel
from tfnas.spaces.base import MAIN_OUTPUT

#: Outputs the dynamic `serving_default` / `serving_float` add to the task's outputs.
EXIT_OUTPUTS = ("confidence", "exit")
#: Tasks with an exit confidence: pose tasks (heatmaps) and segmentation (softmax).
POSE_TASKS = ("pose", "pose-multi")
GATED_TASKS = (*POSE_TASKS, "segmentation")


# --- the graph, cut at the exits ---------------------------------------------------------------
def _producer(tensor):
    operation, node_index, _ = tensor._keras_history
    return operation._inbound_nodes[node_index]


def _ancestors(tensor):
    """The nodes (by id -> node) that compute `tensor`, input layers left out."""
    found, stack = {}, [_producer(tensor)]
    while stack:
        node = stack.pop()
        if id(node) in found or not node.input_tensors:  # an InputLayer's node reads nothing
            continue
        found[id(node)] = node
        stack.extend(_producer(t) for t in node.input_tensors)
    return found


def _exit_graph(model):
    """The functional graph holding the exits, and what runs before it.

    A tfnas space's model is `image -> encoder -> decoder`, its heads inside the nested decoder
    (`DecoderSpace.assemble`); the graph to cut is then the decoder, and the encoder runs first.
    A flat functional model is cut as it is.

    Returns:
        `(graph, prefix)`: the functional model with the dict of exits, and a Keras model from
        the model's inputs to the graph's inputs (None for a flat model).
    """
    outputs = getattr(model, "output", None)
    if not isinstance(outputs, dict):
        raise ValueError(
            f"model {getattr(model, 'name', model)!r} does not output a dict of heads; dynamic "
            "inference needs a functional training model with its early exits, e.g. "
            "space.build_genotype(...) (not space.inference_model(...))"
        )
    node = _producer(next(iter(outputs.values())))
    nested = getattr(node.operation, "output", None) if isinstance(node.operation, keras.Model) else None
    if isinstance(nested, dict) and all(_producer(t) is node for t in outputs.values()):
        order = [id(t) for t in keras.tree.flatten(nested)]
        same = sorted(nested) == sorted(outputs) and all(
            t._keras_history.tensor_index == order.index(id(nested[k])) for k, t in outputs.items()
        )
        if not same:
            raise ValueError(
                f"model {model.name!r} renames the outputs of its nested model {node.operation.name!r} "
                f"({sorted(nested)} -> {sorted(outputs)}); dynamic inference needs them under the same names"
            )
        args = [t for t in keras.tree.flatten(node.arguments.args) if isinstance(t, keras.KerasTensor)]
        return node.operation, keras.Model(
            model.input, args, name=f"{model.name}_{node.operation.name}_inputs"
        )
    return model, None


def default_exits(model):
    """The exits of a fabric model in the order they are reached: `"eel_<column>"` by column, then `"logits"`.

    Args:
        model: a Keras model with a dict output.

    Returns:
        tuple of output names.

    Raises:
        ValueError: if the model has no `"logits"` or no `"eel_<column>"` outputs.
    """
    keys = list(getattr(model, "output", None) or {})
    early = sorted((k for k in keys if re.fullmatch(r"eel_\d+", k)), key=lambda k: int(k[4:]))
    if MAIN_OUTPUT not in keys or not early:
        raise ValueError(
            f"model outputs {sorted(keys)}; the default exits are 'eel_<column>' heads and "
            f"'{MAIN_OUTPUT}' (a fabric model). Pass exits=(...) naming the model's exits in order"
        )
    return (*early, MAIN_OUTPUT)


class ExitSegments:
    """A functional model cut into one segment per exit, sharing the model's layers and weights.

    Segment k is a Keras model from the tensors it reads (the graph's inputs, or tensors of
    earlier segments) to `[exit k, tensors later segments read]`. It holds exactly the layers
    that exit k needs and no earlier exit needed, so running segments 0..k computes exits 0..k
    and nothing of the later columns.

    Args:
        model: functional Keras model with a dict output (for a tfnas space's model the cut is
            made inside its nested decoder, the encoder runs before segment 0).
        exits: output names in the order they are reached; default `default_exits(model)`.

    Raises:
        ValueError: for a model without dict outputs, an unknown exit, or an exit that does not
            go on from the features of the exit before it (exits out of order).
    """

    def __init__(self, model, exits=None):
        self.graph, self.prefix = _exit_graph(model)
        self.exits = tuple(exits) if exits is not None else default_exits(model)
        unknown = [e for e in self.exits if e not in model.output]
        if unknown or len(set(self.exits)) != len(self.exits) or len(self.exits) < 2:
            raise ValueError(
                f"exits {list(self.exits)} must name at least two distinct outputs of model "
                f"{model.name!r}, which has {sorted(model.output)}"
            )
        heads = [self.graph.output[e] for e in self.exits]
        done, nodes, previous = {}, [], (None, set())
        for name, head in zip(self.exits, heads):
            needs = _ancestors(head)
            own = {k: n for k, n in needs.items() if k not in done}
            # Exit k goes on from exit k - 1: it needs everything that one needed but its head.
            if not own or not previous[1] <= set(needs):
                raise ValueError(
                    f"exit {name!r} does not go on from the features of exit {previous[0]!r}; list the "
                    f"exits in the order the network reaches them (got {list(self.exits)})"
                )
            done.update(own)
            nodes.append(own)
            previous = (name, set(needs) - {id(_producer(head))})
        # What each segment reads from outside itself, in a fixed order.
        self._reads = []
        for own in nodes:
            reads = {}
            for node in own.values():
                for t in node.input_tensors:
                    if id(_producer(t)) not in own:
                        reads.setdefault(id(t), t)
            self._reads.append(list(reads.values()))
        self._hands = []  # what each segment hands on: tensors it makes that later segments read
        for k, own in enumerate(nodes):
            later = {i: t for reads in self._reads[k + 1 :] for i, t in ((id(t), t) for t in reads)}
            self._hands.append([t for i, t in later.items() if id(_producer(t)) in own])
        self.segments = [
            keras.Model(reads, [head, *hands], name=f"{self.graph.name}_to_{name}")
            for name, head, reads, hands in zip(self.exits, heads, self._reads, self._hands)
        ]

    def start(self, images):
        """The state before segment 0: the graph's inputs, computed from `images`."""
        inputs = [images] if self.prefix is None else keras.tree.flatten(self.prefix(images, training=False))
        return {id(t): x for t, x in zip(self.graph.inputs, inputs)}

    def run(self, k, state):
        """Runs segment k: returns exit k's output and the state with what it hands on added."""
        outputs = self.segments[k]([state[id(t)] for t in self._reads[k]], training=False)
        if not isinstance(outputs, (list, tuple)):  # Keras returns a lone output as it is
            outputs = [outputs]
        head, hands = outputs[0], outputs[1:]
        return head, {**state, **{id(t): x for t, x in zip(self._hands[k], hands)}}

    def __call__(self, images):
        """Every exit's output, all segments run: dict exit name -> tensor."""
        state, outputs = self.start(images), {}
        for k, name in enumerate(self.exits):
            outputs[name], state = self.run(k, state)
        return outputs


# --- the gates ----------------------------------------------------------------------------------
def parse_thresholds(text):
    """Thresholds from the command line: `"1,0.6"` or `"inf,0.9"` -> a tuple of floats.

    Raises:
        ValueError: naming an entry that is not a number.
    """
    values = []
    for part in str(text).split(","):
        try:
            values.append(float(part))
        except ValueError:
            raise ValueError(
                f"exit threshold {part.strip()!r} in {text!r} is not a number; give one number per "
                "early exit, comma-separated (inf: that exit never answers)"
            ) from None
    return tuple(values)


def _check_threshold(value, where):
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"threshold {value!r} of {where} is not a number; expected >= 0 or inf") from None
    if isinstance(value, bool) or math.isnan(number) or number < 0:
        raise ValueError(
            f"threshold {value!r} of {where} must be a number >= 0 (an exit answers when its "
            "confidence is above it; inf: it never answers)"
        )
    return number


def exit_gates(task, exits, thresholds=None, gates=None):
    """The gate of every early exit (None: the exit never answers).

    Args:
        task: a `tfnas.tasks.Task` (pose, pose-multi or segmentation).
        exits: exit names in order; the last always answers and has no gate.
        thresholds: None for the defaults (module docstring), or one number >= 0 per early
            exit (`inf`: off).
        gates: instead of thresholds, one `ExitGate` (pose) / `SoftmaxExitGate` (segmentation)
            or None per early exit.

    Returns:
        tuple of gates, one per early exit.

    Raises:
        ValueError: for a task without a confidence, both or a wrong number of thresholds and
            gates, a threshold that is negative or not a number, or a gate of the wrong kind.
    """
    early = tuple(exits[:-1])
    if task.name not in GATED_TASKS:
        raise ValueError(
            f"the {task.name} task has no exit confidence; dynamic inference gates {', '.join(GATED_TASKS)} "
            "(export with static=True for the last exit only)"
        )
    pose = task.name in POSE_TASKS
    if thresholds is not None and gates is not None:
        raise ValueError("pass thresholds or gates, not both")
    for given, what in ((thresholds, "thresholds"), (gates, "gates")):
        if given is not None and (
            isinstance(given, (str, bytes)) or not hasattr(given, "__len__") or len(given) != len(early)
        ):
            raise ValueError(
                f"{what} {given!r}: expected one per early exit, {len(early)} for {list(early)} "
                f"(the last exit, {exits[-1]!r}, always answers)"
            )

    def column_gate(name):
        column = int(name[4:]) if re.fullmatch(r"eel_\d+", name) else None
        return THESIS_GATES.get(column)

    if gates is None:
        if thresholds is None:
            gates = [column_gate(e) if pose else SoftmaxExitGate() for e in early]
        else:
            gates = []
            for name, value in zip(early, thresholds):
                t = _check_threshold(value, f"exit {name!r}")
                if math.isinf(t):
                    gates.append(None)
                elif pose:
                    gates.append(dataclasses.replace(column_gate(name) or ExitGate(), threshold=t))
                else:
                    gates.append(SoftmaxExitGate(t))
    kind = ExitGate if pose else SoftmaxExitGate
    checked = []
    for name, gate in zip(early, gates):
        if gate is not None:
            if not isinstance(gate, kind):
                raise ValueError(
                    f"gate {gate!r} of exit {name!r}: the {task.name} task takes {kind.__name__} gates"
                )
            if math.isinf(_check_threshold(gate.threshold, f"exit {name!r}")):
                gate = None
        checked.append(gate)
    return tuple(checked)


def _confidence(task, gate, logits):
    """`(N,)` confidence of one exit's output under its gate (the task's default rule without one)."""
    if task.name in POSE_TASKS:
        gate = gate or ExitGate()
        return heatmap_confidence(
            logits[..., : task.num_joints], gate.coefficients, gate.subtract_half, gate.excess_kurtosis
        )
    return softmax_confidence(logits)


def _leaves(task, gate, logits):
    """`(N,)` bool: whether each image leaves at this exit."""
    return gate(logits[..., : task.num_joints] if task.name in POSE_TASKS else logits)


def _gate_config(gate):
    return None if gate is None else {"kind": type(gate).__name__, **dataclasses.asdict(gate)}


# --- the dynamic network ------------------------------------------------------------------------
class DynamicModel:
    """A network that answers at its first confident exit (3M-Pose's dynamic inference).

    Calling it on float32 images in [-1, 1] `(N, H, W, 3)` runs segment 0, then for each early
    exit with a gate a `tf.cond`: if the gate passes for every image of the batch, the batch
    answers there and the later segments are not run; otherwise the next segment runs. The last
    exit always answers.

    Args:
        model: the trained Keras training model with its early exits (dict output, e.g. a
            `FabricSpace` model); its weights are shared, not copied.
        task: the `tfnas.tasks.Task` it predicts for (pose, pose-multi or segmentation), a task
            name or a task config dict (as `savedmodel.export`'s; its channels must be the last
            exit's).
        exits: output names in the order they are reached; default `"eel_<column>"` by column,
            then `"logits"`.
        thresholds: one number >= 0 per early exit (`inf`: off); default None, the task's
            default gates (module docstring).
        gates: instead of `thresholds`, one gate or None per early exit.

    Raises:
        ValueError: see `ExitSegments`, `exit_gates` and `savedmodel.resolve_task`.
    """

    def __init__(self, model, task, exits=None, thresholds=None, gates=None):
        self.segments = ExitSegments(model, exits)
        self.exits = self.segments.exits
        #: channels of the last exit, the network's main output
        self.channels = int(self.segments.graph.output[self.exits[-1]].shape[-1])
        self.task = savedmodel.resolve_task(task, self.channels)
        self.gates = exit_gates(self.task, self.exits, thresholds, gates)

    def exit_outputs(self, images):
        """Every exit's output with no gate (all segments run): dict exit name -> tensor."""
        return self.segments(images)

    def __call__(self, images):
        """The answering exit's output for a batch.

        Returns:
            dict: `"logits"` the output of the exit that answered `(N, h, w, C)`; `"exit"` int32
            `(N,)` its index in `exits`; `"confidence"` float32 `(N,)` each image's confidence
            there (under its gate, or the task's default rule at the last exit).
        """
        return self._from(0, self.segments.start(images))

    def _answer(self, k, logits, confidence):
        exit_index = tf.fill(tf.shape(confidence), tf.constant(k, tf.int32))
        return {"logits": logits, "exit": exit_index, "confidence": confidence}

    def _from(self, k, state):
        logits, state = self.segments.run(k, state)
        gate = self.gates[k] if k < len(self.gates) else None
        if k == len(self.exits) - 1:
            return self._answer(k, logits, _confidence(self.task, None, logits))
        if gate is None:  # an exit that never answers: go on without a branch
            return self._from(k + 1, state)
        confidence = _confidence(self.task, gate, logits)
        return tf.cond(
            tf.reduce_all(_leaves(self.task, gate, logits)),
            lambda: self._answer(k, logits, confidence),
            lambda: self._from(k + 1, state),
        )

    def config(self):
        """The exits and their gates, as recorded in the export's metadata."""
        return {
            "exits": list(self.exits),
            "gates": [_gate_config(g) for g in self.gates] + [None],
            "decision": "per batch: a batch answers at an exit when its gate passes for every image",
        }


class DynamicServingModule(savedmodel.ServingModule):
    """The exported graph of a `DynamicModel`: preprocessing, the gated exits, the task's `postprocess`.

    Signatures (as `savedmodel.ServingModule`'s): `serving_default` (uint8) and `serving_float`
    (float32 in [0, 255]) return the task's outputs of the exit that answered plus `exit` (int32
    `(N,)`, its index in the exits) and `confidence` (float32 `(N,)`); `logits` (float32 in [-1, 1])
    is the static network, the last exit with every column run, which `tfnas convert` takes.

    Args:
        dynamic: a `DynamicModel`.
    """

    def __init__(self, dynamic):
        tf.Module.__init__(self, name="tfnas_dynamic_serving")
        task, spec = dynamic.task, savedmodel._image_spec
        last = dynamic.exits[-1]
        # Traced once and called by both image signatures, as `ServingModule`'s `run_model`.
        run_dynamic = tf.function(dynamic, input_signature=[spec(tf.float32)], autograph=False)

        def predict(images):
            answer = run_dynamic(preprocess(images))
            outputs = task.postprocess(answer["logits"], tf.shape(images)[1:3])
            return {**outputs, "exit": answer["exit"], "confidence": answer["confidence"]}

        def logits(images):
            return {"logits": dynamic.exit_outputs(images)[last]}

        self._trace_signatures(predict, logits)


def export_dynamic(
    model,
    base_dir,
    name,
    task,
    version=None,
    metadata=None,
    warmup_images=None,
    exits=None,
    thresholds=None,
    gates=None,
    static=False,
):
    """Exports a network with early exits for TF Serving, keeping the exit gates (or, `static`, without).

    Writes `base_dir/name/<version>/` like `tfnas.serving.savedmodel.export`: written under a
    temporary name and renamed, metadata and warm-up requests in `assets.extra`. The metadata add
    `dynamic` (`DynamicModel.config()`: exits, gates, the per-batch decision).

    Args:
        model: the trained Keras training model with its early exits.
        base_dir: TF Serving model base directory.
        name: model name.
        task: the `tfnas.tasks.Task` (`space.task`), a task name or a task config dict.
        version: positive int; default None takes the next free one.
        metadata: JSON-serializable dict stored with the export (see `savedmodel.export`).
        warmup_images: uint8 images for the warm-up requests (see `savedmodel.export`).
        exits, thresholds, gates: see `DynamicModel`.
        static: bool; True exports the last exit only, `savedmodel.export` unchanged (default
            False).

    Returns:
        str, the path of the version directory.

    Raises:
        ValueError: for a bad name, version, task, exits or threshold (see `DynamicModel`).
        FileExistsError: if the version already exists.
    """
    if static:
        if thresholds is not None or gates is not None:
            raise ValueError(
                f"static=True exports the last exit only; thresholds={thresholds!r} and gates "
                "have no effect there (leave them out, or export with static=False)"
            )
        return savedmodel.export(model, base_dir, name, version, metadata, warmup_images, task=task)
    dynamic = DynamicModel(model, task, exits, thresholds, gates)
    module = DynamicServingModule(dynamic)
    info = dict(metadata or {})
    info.setdefault("params", int(model.count_params()))
    info["dynamic"] = dynamic.config()
    return savedmodel.write_version(
        module, base_dir, name, version, info, dynamic.task, dynamic.channels, warmup_images
    )
