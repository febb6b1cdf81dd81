"""The bi-level one-shot search of 3M-Pose: the supernet trained once (Hoang, 3M-Pose thesis 2021, Sec. 3.2-3.4, 4.1).

Spec: `/work/shared/3M-POSE.md` sections 6-10 and 12; the readings are in `docs/fabric.md`.

`SupernetSearch` trains a `FabricSupernet` and its `ArchitectureParameters` {alpha, beta, m}:

- data: the training data is split by element index (`tfnas.data.split`) into a *weight*
  split and a held-out *architecture* split (`SearchSettings.arch_split`; the thesis fits the
  architecture on val2017, which its results are also reported on). The data `run` gets must
  not hold the images the derived architectures are scored on: `OneShotTuner` holds the
  proxy task's meta-val out first and trains the supernet on meta-train only, so no trial is
  scored on an image the weights or {alpha, beta, m} were fitted on;
- every step is a weight update (Adam, `model_lr`) on a batch of the weight split, then an
  architecture update (Adam, `arch_lr` with its epoch drops) on a batch of the architecture
  split, each with fresh Dyn-EGS weights at the step's temperature (`LinearTemperature`).
  This is the first-order alternation of DARTS; the thesis does not say how it alternates;
- loss = heatmap MSE + 1e-3 (AE pull + push) on every head (`"logits"` and the early exits
  `"eel_<column>"`, weight 1 each; for another task on the fabric, its `Task.loss` on every
  head instead, recorded as `"task"`) + the FLOPs term on `FabricCosts.expected_madds` with its
  step-wise warm-up (or, with `latency_table` and `SearchSettings.latency_target_ms`, its
  latency variant on `FabricLatency.expected_ms`) + optionally teacher guidance (RDMs of a Keras teacher's layers against
  every cell's output), as `SearchSettings.search_loss` weighs them;
- both updates run through one traced step (`tf.function`), told by an argument which
  parameter group it updates, so the supernet is traced once per search;
- after every epoch `directory/checkpoint` (`tfnas.training.checkpoints.Checkpoint`) holds
  the supernet's weights, both optimizers' state, and in `state.json` the architecture
  parameters, the Gumbel noise generator's state, the step and the history. A killed search
  resumes from its last whole epoch and ends where an uninterrupted one ends: every epoch's
  shuffle and flips are seeded by (seed, epoch), the noise by the saved generator state.

    >>> search = SupernetSearch(FabricSpace(), "runs/oneshot", SearchSettings(epochs=35))
    >>> result = search.run(task.builtin_data("train", image_size=64))
    >>> ArchitectureParameters(space).set_state(result["architecture"])
"""

import dataclasses
import time

import keras
import numpy as np
import tensorflow as tf

from tfnas.data import count_examples, split
from tfnas.oneshot.costs import FabricCosts, FabricLatency
from tfnas.oneshot.gumbel import ArchitectureParameters
from tfnas.oneshot.losses import flops_loss, flops_scale, latency_loss, teacher_guidance_loss
from tfnas.oneshot.settings import SearchSettings
from tfnas.oneshot.supernet import FabricSupernet
from tfnas.tasks.pose_multi import multi_pose_loss
from tfnas.training.checkpoints import Checkpoint
from tfnas.training.polyak import ParameterGroup, make_optimizer

#: What each epoch's history entry records (means over the epoch's steps, weight and
#: architecture updates alike), besides `epoch`, `temperature`, `seconds`, `derived_gflops` and
#: (with a latency table) `derived_ms`. "flops" is the constraint term (FLOPs or latency);
#: "expected_ms" is 0 without a latency table.
LOSS_NAMES = ("loss", "task", "heatmap", "grouping", "teacher", "flops", "expected_gflops", "expected_ms")


class SupernetSearch:
    """Trains the 3M-Pose supernet and its architecture parameters once (module docstring).

    Args:
        space: a `tfnas.spaces.fabric.FabricSpace`; its `task` gives the loss (bottom-up pose:
            the thesis' heatmap and grouping losses, with the task's stride and sigma).
        directory: str, the search's folder; its per-epoch checkpoint is `directory/checkpoint`.
        settings: `SearchSettings` (default: the thesis', 35 epochs).
        batch_size: int >= 1, images per update (the thesis gives none). Default 8. Capped by
            the sizes of the two splits; teacher guidance needs at least 3.
        seed: int: the split, the weights' initialisation, shuffles, flips and Gumbel noise.
        teacher: None (default), or a Keras model mapping images in [-1, 1] to the teacher
            layers' activations (a tensor, or a list or dict of them), e.g. a HigherHRNet
            cut at its stages; adds `teacher_weight * teacher_guidance_loss`.
        verbose: int, 1 prints one line per epoch, 0 nothing.
        latency_table: None (default), or a `tfnas.latency` table of this space at the search's
            image size (a `LatencyTable` or its path): with `SearchSettings.latency_target_ms`,
            the constraint is on the table's expected latency (`FabricLatency`) instead of
            GFLOPs. A table measured on this machine gets its missing parts timed first.

    Raises:
        ValueError: for a space without the fabric's structure or a bad setting, or a latency
            target without a table (or a table without a target).
    """

    def __init__(
        self,
        space,
        directory,
        settings=None,
        batch_size=8,
        seed=0,
        teacher=None,
        verbose=1,
        latency_table=None,
    ):
        if not hasattr(space, "fuse_columns"):
            raise ValueError(
                f"the one-shot search trains a fabric supernet; got a {type(space).__name__}, "
                "expected a tfnas.spaces.fabric.FabricSpace"
            )
        if int(batch_size) < 1:
            raise ValueError(f"batch_size={batch_size!r} must be a positive int")
        self.space = space
        self.settings = settings or SearchSettings()
        if int(self.settings.epochs) < 1:
            raise ValueError(f"SearchSettings.epochs={self.settings.epochs!r} must be at least 1")
        if (latency_table is None) != (self.settings.latency_target_ms is None):
            raise ValueError(
                "the latency variant of the constraint needs both a latency table and "
                f"SearchSettings.latency_target_ms (got table {latency_table!r}, target "
                f"{self.settings.latency_target_ms!r})"
            )
        if isinstance(latency_table, str):
            from tfnas.latency.table import LatencyTable

            latency_table = LatencyTable.load(latency_table)
        self.latency_table = latency_table
        self.latency = None  # FabricLatency, made with the supernet
        self.checkpoint = Checkpoint(directory)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.teacher = teacher
        self.verbose = int(verbose)
        self.supernet = None
        self.architecture = None
        self.data = None  # the two splits of the last `run`: {"weights": ..., "architecture": ...}

    # --- results -----------------------------------------------------------------------------
    def finished(self):
        """Whether the checkpoint holds the last epoch (the search need not run again)."""
        state = self.checkpoint.read()
        return state is not None and state["epoch"] + 1 >= self.settings.epochs

    def result(self):
        """The last checkpoint's result, or None before the first epoch ends.

        Returns:
            dict: `epoch` (0-based, the last finished), `finished` (bool), `architecture`
            (`ArchitectureParameters.get_state()`), `temperature` (tau of the last step),
            `image_size` and `history` (one dict per epoch, `LOSS_NAMES` and more).
        """
        state = self.checkpoint.read()
        if state is None:
            return None
        record = state["settings"]
        return {
            "epoch": state["epoch"],
            "finished": state["epoch"] + 1 >= self.settings.epochs,
            "architecture": record["architecture"],
            "temperature": state["history"][-1]["temperature"],
            "image_size": record["image_size"],
            "history": state["history"],
        }

    # --- the search ----------------------------------------------------------------------------
    def run(self, train_data, stop_after=None):
        """Trains (or resumes) the supernet until the last epoch, or `stop_after` epochs.

        Args:
            train_data: unbatched `tf.data` of `(uint8 image, target)` of one image size, in a
                fixed order (what `space.task` expects), split here into weights and
                architecture data (`splits`); without the images the derived architectures
                will be scored on.
            stop_after: optional int, stop once this many epochs (counted from the first)
                are done (to hand the machine over; resume later by calling `run` again).

        Returns:
            `result()`.

        Raises:
            ValueError: if the data are too few for a batch of each split, or the checkpoint
                was written with other settings or another number of images.
        """
        s = self.settings
        weights_data, arch_data = self.splits(train_data)
        self.data = {"weights": weights_data, "architecture": arch_data}
        counts = count_examples(weights_data), count_examples(arch_data)
        batch = min(self.batch_size, *counts)
        if self.teacher is not None and batch < 3:
            raise ValueError(
                f"teacher guidance compares the samples of a batch (RDMs) and needs at least 3, but "
                f"the batch is {batch} ({counts[0]} weight and {counts[1]} architecture images); "
                "give more data or a larger arch_split"
            )
        steps_per_epoch = counts[0] // batch
        image_size = [int(d) for d in next(iter(weights_data.take(1)))[0].shape[:2]]
        record = {
            "search": _jsonable(dataclasses.asdict(s)),
            "batch_size": batch,
            "seed": self.seed,
            "images": {"weights": counts[0], "architecture": counts[1]},
        }
        state = self.checkpoint.read()
        if state is not None:
            saved = {k: state["settings"].get(k) for k in record}
            if saved["search"] is not None:  # a setting added since it was written: its default
                saved["search"] = {**_jsonable(dataclasses.asdict(SearchSettings())), **saved["search"]}
            if saved != record:
                raise ValueError(
                    f"{self.checkpoint.path} was written by a search with other settings "
                    f"({saved}); resume with the same settings ({record}) or use a new directory"
                )
            if state["epoch"] + 1 >= s.epochs:
                return self.result()
        self._build(image_size)
        history, step = [], 0
        if state is not None:
            history, step = self._restore(state)
        start_epoch = len(history)
        schedule = s.temperature(steps_per_epoch)
        started = time.perf_counter()
        for epoch in range(start_epoch, s.epochs):
            epoch_start = time.perf_counter()
            self.arch_group.optimizer.learning_rate = s.arch_lr_at(epoch)
            scale = tf.constant(flops_scale(epoch, s), tf.float32)
            totals = dict.fromkeys(LOSS_NAMES, 0.0)
            pairs = zip(
                self._batches(weights_data, batch, epoch, "weights"),
                self._batches(arch_data, batch, epoch, "architecture").repeat(),
            )
            for (images, targets), (arch_images, arch_targets) in pairs:
                temperature = tf.constant(float(schedule(step)), tf.float32)
                for data, update_architecture in (
                    ((images, targets), False),
                    ((arch_images, arch_targets), True),
                ):
                    values = self._step(*data, temperature, scale, tf.constant(update_architecture))
                    for key in LOSS_NAMES:
                        totals[key] += float(values[key]) / (2 * steps_per_epoch)
                step += 1
            genotype = self.architecture.derive()
            entry = {
                "epoch": epoch,
                **totals,
                "temperature": float(schedule(step - 1)),
                "arch_lr": s.arch_lr_at(epoch),
                "derived_gflops": self.costs.madds(genotype) / 1e9,
                "seconds": time.perf_counter() - epoch_start,
            }
            if self.latency is not None:
                entry["derived_ms"] = self.latency.latency_ms(genotype)
            history.append(entry)
            self._save(epoch, image_size, record, history, step)
            if self.verbose:
                print(self._progress(history, started, start_epoch), flush=True)
            if stop_after is not None and epoch + 1 >= int(stop_after) and epoch + 1 < s.epochs:
                break
        return self.result()

    def splits(self, train_data):
        """`(weights_data, arch_data)`: the two disjoint parts of `train_data` that `run` trains on.

        The architecture split is `SearchSettings.arch_split` of the elements, chosen by the
        search's seed (`tfnas.data.split`), so a resumed search gets the same parts.
        """
        return split(train_data, fraction=self.settings.arch_split, seed=self.seed)

    def restore_supernet(self):
        """Builds the supernet and loads the last checkpoint into it (e.g. to read its stem).

        Raises:
            ValueError: if no epoch has been checkpointed.
        """
        state = self.checkpoint.read()
        if state is None:
            raise ValueError(f"{self.checkpoint.path} holds no finished epoch; run the search first")
        self._build(state["settings"]["image_size"])
        self._restore(state)
        return self.supernet

    def _build(self, image_size):
        """The supernet, architecture parameters, optimizers and the traced step (once)."""
        if self.supernet is not None:
            return
        s, space = self.settings, self.space
        keras.utils.set_random_seed(self.seed)
        self.architecture = ArchitectureParameters(space)
        self.supernet = FabricSupernet(space, name="supernet")
        self.noise = keras.random.SeedGenerator(self.seed, name="gumbel_noise")
        op_weights, input_weights = self.architecture.sample(1.0, seed=self.seed)
        self.supernet(tf.zeros([1, *image_size, 3]), op_weights, input_weights)  # builds the layers
        self.costs = FabricCosts(space, image_size)
        if self.latency_table is not None:
            log = (lambda line: print(f"latency table: {line}", flush=True)) if self.verbose else None
            self.latency = FabricLatency(space, image_size, self.latency_table, log=log)
        self.weight_group = ParameterGroup(
            make_optimizer("adam", s.model_lr), self.supernet.trainable_variables, name="supernet_weights"
        )
        self.arch_group = ParameterGroup(
            make_optimizer("adam", s.arch_lr), self.architecture.variables, name="architecture_parameters"
        )
        self._step = tf.function(self._update, autograph=False)

    def _loss(self, images, targets, temperature, scale):
        s, task = self.settings, self.space.task
        op_weights, input_weights = self.architecture.sample(temperature, seed=self.noise)
        outputs, cells = self.supernet(images, op_weights, input_weights, training=True, return_cells=True)
        heatmap, grouping, task_loss = 0.0, 0.0, 0.0
        for output in outputs.values():  # "logits" and every early exit, weight 1 (spec section 10)
            if task.name != "pose-multi":
                task_loss += task.loss(targets, output)
                continue
            _, parts = multi_pose_loss(
                targets, output, task.num_joints, task.output_stride, task.sigma, tag_weight=1.0
            )
            heatmap += parts["heatmap_loss"]
            grouping += parts["pull_loss"] + parts["push_loss"]
        if task.name == "pose-multi":
            task_loss = s.heatmap_weight * heatmap + s.grouping_weight * grouping
        teacher = tf.constant(0.0)
        if self.teacher is not None:
            guides = keras.tree.flatten(self.teacher(images, training=False))
            teacher = teacher_guidance_loss(cells, [tf.stop_gradient(g) for g in guides])
        madds = self.costs.expected_madds(op_weights, input_weights)
        ms = tf.constant(0.0)
        if self.latency is not None:
            ms = self.latency.expected_ms(op_weights, input_weights)
            constraint = latency_loss(ms, None, s, scale=scale)
        else:
            constraint = flops_loss(madds, None, s, scale=scale)
        if task.name == "pose-multi":
            loss = s.search_loss(heatmap, grouping, teacher, madds, None, scale=scale, constraint=constraint)
        else:
            loss = s.search_loss(
                0.0, 0.0, teacher, madds, None, scale=scale, task=task_loss, constraint=constraint
            )
        values = {
            "task": task_loss,
            "heatmap": heatmap,
            "grouping": grouping,
            "teacher": teacher,
            "flops": constraint,
        }
        return loss, {"loss": loss, **values, "expected_gflops": madds / 1e9, "expected_ms": ms}

    def _update(self, images, targets, temperature, scale, update_architecture):
        """One weight update, or (`update_architecture`) one architecture update; traced once."""
        weights, arch = self.weight_group.variables, self.arch_group.variables
        with tf.GradientTape() as tape:
            loss, values = self._loss(images, targets, temperature, scale)
        gradients = tape.gradient(loss, weights + arch)
        tf.cond(
            update_architecture,
            lambda: _apply(self.arch_group, gradients[len(weights) :]),
            lambda: _apply(self.weight_group, gradients[: len(weights)]),
        )
        return values

    def _batches(self, data, batch, epoch, part):
        """One epoch of a split, shuffled and flipped by (seed, epoch, part)."""
        seed = (self.seed * 1_000_003 + 2 * epoch + (part == "architecture")) % 2**31
        return self.space.task.pipeline(
            data, batch, shuffle=True, seed=seed, augment=True, drop_remainder=True
        )

    # --- checkpoints ---------------------------------------------------------------------------
    def _save(self, epoch, image_size, record, history, step):
        record = {
            **record,
            "image_size": image_size,
            "architecture": self.architecture.get_state(),
            "noise_state": np.asarray(self.noise.state).tolist(),
            "step": step,
        }
        self.checkpoint.save(epoch, self.supernet, [self.weight_group, self.arch_group], record, history)

    def _restore(self, state):
        """Loads a checkpoint into the built search; returns `(history, step)`."""
        record = state["settings"]
        self.architecture.set_state(record["architecture"])  # before the groups sync
        self.checkpoint.restore(state, self.supernet, [self.weight_group, self.arch_group])
        self.noise.state.assign(np.asarray(record["noise_state"], self.noise.state.dtype))
        if self.verbose:
            print(f"supernet: resuming after epoch {state['epoch'] + 1}/{self.settings.epochs}", flush=True)
        return list(state["history"]), int(record["step"])

    def _progress(self, history, started, start_epoch):
        h, total = history[-1], self.settings.epochs
        done = h["epoch"] + 1
        per_epoch = (time.perf_counter() - started) / (done - start_epoch)
        latency = ""
        if "derived_ms" in h:
            latency = f", expected {h['expected_ms']:.3g} ms (derived {h['derived_ms']:.3g})"
        if self.space.task.name == "pose-multi":
            parts = f"heatmap {h['heatmap']:.4f}, grouping {h['grouping']:.4f}"
        else:
            parts = f"{self.space.task.name} {h['task']:.4f}"
        return (
            f"supernet epoch {done}/{total}: loss {h['loss']:.4f} ({parts}, "
            f"teacher {h['teacher']:.4f}, flops {h['flops']:.2e}), "
            f"tau {h['temperature']:.3f}, expected {h['expected_gflops']:.4g} GFLOPs (derived "
            f"{h['derived_gflops']:.4g}){latency}, {h['seconds']:.1f} s, "
            f"about {per_epoch * (total - done):.0f} s left"
        )


def _apply(group, gradients):
    group.apply(gradients)
    return tf.constant(True)


def _jsonable(value):
    """Tuples as lists, so that a saved record compares equal to a fresh one."""
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value
