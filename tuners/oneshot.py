"""The one-shot search of 3M-Pose as a keras-tuner Oracle and Tuner (Hoang, 3M-Pose thesis 2021, Sec. 3.2-3.4, 4.1).

`OneShotTuner.search` first trains the fabric supernet and its architecture parameters once
(`tfnas.oneshot.search.SupernetSearch`, resumable per epoch, skipped once finished), then
hands the result to the `GumbelOracle`, whose `populate_space` proposes the architectures
derived from it as ordinary trials:

1. the thesis' derivation (`ArchitectureParameters.derive()`: argmax density, top-k ops and
   inputs, unused paths pruned);
2. the top-k derivations at every other density (`derive(keep=k)`, k = 1, 2, ...);
3. Dyn-EGS samples at the search's last temperature (`sample_genotype`), seeded,

deduplicated, up to `max_trials`. Each is scored by the proxy task (`NASTuner.run_trial`):
a standalone network of the derived architecture, trained from fresh fabric weights on the
stem the supernet trained (its weights become the search's `encoder.weights.h5`, so no
warm-up runs). Standalone training keeps every trial a plain `space.build(hp)` model, so
`get_best_models`, `tfnas results` / `report` and `tfnas export RUN_DIR --trial best` read
one-shot searches unchanged; fine-tuning from the supernet's weights would need a supernet
to standalone weight transfer the fabric does not have yet.

The trials are scored on meta-val, which the supernet never sees: without validation data,
`OneShotTuner.split_data` holds the proxy task's meta-val out of the training data first (its
`validation_fraction` and seed), and the supernet splits only the rest, meta-train, into its
weight and architecture splits. So the architecture parameters are fitted on training images
(not on the validation data, unlike the thesis, whose results leak) and no trial is scored
on an image they, or the supernet's weights and stem, were fitted on.

    tuner = OneShotTuner(FabricSpace(width=32), max_trials=5, search_settings=SearchSettings(),
                         directory="runs", project_name="3m_pose")
    tuner.search(task.builtin_data("train", image_size=64))
    best = tuner.get_best_models(1)[0]
"""

import dataclasses
import json
import os

import keras_tuner
from keras_tuner.engine import trial as trial_module

from tfnas.data import as_examples, split
from tfnas.io import atomic_path
from tfnas.oneshot.gumbel import ArchitectureParameters
from tfnas.oneshot.search import SupernetSearch
from tfnas.oneshot.settings import SearchSettings
from tfnas.tuners.nas_tuner import NASTuner
from tfnas.tuners.oracles import OBJECTIVE, ResumableOracle

#: Folder of the supernet search inside a search directory.
ONESHOT_DIR = "oneshot"


class GumbelOracle(ResumableOracle):
    """Proposes the architectures derived from trained 3M-Pose architecture parameters.

    Until `set_architecture` has been called (`OneShotTuner.search` does it after training
    the supernet) it has nothing to propose. Its state (the architecture parameters and the
    candidate list) is saved with the Oracle, so a resumed search hands out the same
    candidates and does not train the supernet again.

    Args:
        objective: a `keras_tuner.Objective`; default `reward` (max), what NASTuner reports.
        max_trials: int, architectures to score. Default 10.
        samples: int, Dyn-EGS samples drawn for further candidates after the derivations
            (fewer are used when `max_trials` is reached first). Default 100.
        seed: int, seeds the samples. Default 0.
        max_retries_per_trial, max_consecutive_failed_trials: as `keras_tuner.Oracle`.

    Raises:
        ValueError: for `max_trials` or `samples` out of range.
    """

    def __init__(
        self,
        objective=None,
        max_trials=10,
        samples=100,
        seed=0,
        max_retries_per_trial=0,
        max_consecutive_failed_trials=3,
    ):
        if int(max_trials) < 1 or int(samples) < 0:
            raise ValueError(f"max_trials={max_trials!r} must be >= 1 and samples={samples!r} >= 0")
        super().__init__(
            objective=objective or OBJECTIVE,
            max_trials=int(max_trials),
            seed=seed,
            max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials,
        )
        self.seed = int(seed or 0)  # the base class treats seed=0 as "no seed"
        self.samples = int(samples)
        self.architecture = None  # ArchitectureParameters.get_state() of the search
        self.candidates = []  # [{"values": ..., "source": ...}], in the order they are handed out

    def set_architecture(self, space, architecture, temperature):
        """Derives the candidate architectures from trained architecture parameters.

        Args:
            space: the `FabricSpace` the parameters belong to.
            architecture: `ArchitectureParameters.get_state()` (a `SupernetSearch` result's).
            temperature: float, tau the samples are drawn at (the search's last).

        Returns:
            list of the candidates, dicts `values` (decision values) and `source`.
        """
        parameters = ArchitectureParameters(space)
        parameters.set_state(architecture)
        found = [(parameters.derive(), "derived")]
        found += [
            (parameters.derive(keep=k), f"top-{k}")
            for k in range(1, max(space.max_ops, space.max_inputs) + 1)
        ]
        candidates, seen = [], set()
        for i in range(len(found) + self.samples):
            if len(candidates) >= self.max_trials:
                break
            genotype, source = found[i] if i < len(found) else _sample(parameters, temperature, self.seed, i)
            values = space.values(genotype)
            key = json.dumps(values, sort_keys=True)
            if key not in seen:
                seen.add(key)
                candidates.append({"values": values, "source": source})
        self.architecture = architecture
        self.candidates = candidates
        return candidates

    def populate_space(self, trial_id):
        """The next derived architecture, or STOPPED when all have been handed out.

        Raises:
            RuntimeError: before `set_architecture` (no supernet has been trained).
        """
        if self.architecture is None:
            raise RuntimeError(
                "the GumbelOracle has no architecture parameters yet: search with "
                "tfnas.tuners.oneshot.OneShotTuner, which trains the fabric supernet first"
            )
        index = len(self.trials)  # candidates are handed out in order, one per trial
        if index >= len(self.candidates):
            return {"status": trial_module.TrialStatus.STOPPED, "values": None}
        return {"status": trial_module.TrialStatus.RUNNING, "values": dict(self.candidates[index]["values"])}

    def source(self, trial_id):
        """How a trial's architecture was found (`"derived"`, `"top-2"`, `"sample 7"`), or None."""
        index = self.start_order.index(trial_id) if trial_id in self.start_order else None
        return None if index is None or index >= len(self.candidates) else self.candidates[index]["source"]

    def get_state(self):
        state = super().get_state()
        state["gumbel"] = {"architecture": self.architecture, "candidates": self.candidates}
        return state

    def set_state(self, state):
        super().set_state(state)
        self.architecture = state["gumbel"]["architecture"]
        self.candidates = state["gumbel"]["candidates"]


def _sample(parameters, temperature, seed, i):
    return parameters.sample_genotype(temperature, seed=seed * 1_000_003 + i), f"sample {i}"


class OneShotTuner(NASTuner):
    """The 3M-Pose one-shot search: the supernet trained once, its derived architectures scored as trials.

    Args:
        hypermodel: a `tfnas.spaces.fabric.FabricSpace`.
        oracle: a `GumbelOracle`, or None to make one with `max_trials` and the seed.
        max_trials: int, architectures to score when `oracle` is None. Default 5.
        search_settings: `tfnas.oneshot.SearchSettings` of the supernet training (default:
            the thesis', 35 epochs).
        search_batch_size: int, images per supernet update. Default 8.
        search_teacher: None, or a Keras model giving the teacher layers' activations for
            teacher guidance (`SupernetSearch`'s `teacher`). Default None.
        search_latency_table: None, or a `tfnas.latency` table (or its path) of the fabric at the
            search's image size: with `search_settings.latency_target_ms`, the supernet's
            constraint is on its expected latency instead of GFLOPs (`SupernetSearch`).
        inherit_weights: bool, start every derived architecture's trial from the trained
            supernet's weights of its kept ops, inputs, fuses and heads
            (`FabricSupernet.transfer`), fine-tuned by the proxy task, instead of fresh
            weights (default False: the thesis retrains the derived network from scratch; its
            stem comes from the supernet either way).
        settings, **kwargs: as `NASTuner` (the proxy task that scores the derived
            architectures); unless given, `aux_weight=1.0` (every early exit weighs as much as
            the final output, spec section 10) and `warmup_epochs=0` (the stem comes
            trained from the supernet).

    Raises:
        ValueError: for a space other than the fabric or an Oracle other than `GumbelOracle`.
    """

    def __init__(
        self,
        hypermodel,
        oracle=None,
        max_trials=5,
        search_settings=None,
        search_batch_size=8,
        search_teacher=None,
        search_latency_table=None,
        inherit_weights=False,
        settings=None,
        **kwargs,
    ):
        from tfnas.spaces.fabric import FabricSpace

        if not isinstance(hypermodel, FabricSpace):
            raise ValueError(
                f"the one-shot (gumbel) search trains the 3M-Pose fabric supernet; got a "
                f"{type(hypermodel).__name__}, expected a FabricSpace (--space fabric)"
            )
        if settings is None:  # None for a setting (as the CLI passes) takes these too
            for name, value in (("aux_weight", 1.0), ("warmup_epochs", 0)):
                if kwargs.get(name) is None:
                    kwargs[name] = value
        seed = settings.seed if settings is not None else kwargs.get("seed", 0)
        if oracle is None:
            oracle = GumbelOracle(max_trials=max_trials, seed=seed)
        if not isinstance(oracle, GumbelOracle):
            raise ValueError(f"OneShotTuner needs a GumbelOracle, got a {type(oracle).__name__}")
        self.search_settings = search_settings or SearchSettings()
        self.inherit_weights = bool(inherit_weights)
        super().__init__(hypermodel, oracle=oracle, settings=settings, **kwargs)
        self.supernet_search = SupernetSearch(
            hypermodel,
            os.path.join(self.project_dir, ONESHOT_DIR),
            self.search_settings,
            batch_size=search_batch_size,
            seed=self.settings.seed,
            teacher=search_teacher,
            verbose=1 if self._verbosity() else 0,
            latency_table=search_latency_table,
        )

    def search(self, train_data, validation_data=None, callbacks=None, verbose=1):
        """Trains the supernet (or resumes it; skipped once finished), then scores the derived architectures.

        Args:
            train_data: what `NASTuner.search` takes: split into meta-train and meta-val
                (`split_data`); the supernet is trained on meta-train (its weight and
                architecture splits), the derived architectures on meta-train too, and
                they are scored on meta-val.
            validation_data: as `NASTuner.search`: meta-val when given (then the supernet
                trains on all of `train_data`).
            callbacks, verbose: as `NASTuner.search`.

        Raises:
            ValueError: in a distributed search (the supernet trains in one process).
        """
        if not isinstance(self.oracle, keras_tuner.Oracle) or os.environ.get("KERASTUNER_TUNER_ID"):
            raise ValueError("the one-shot search runs in one process; start it without --workers")
        meta_train, meta_val = self.split_data(train_data, validation_data)
        self._write_run_file()
        if self.oracle.architecture is None:
            result = self.supernet_search.run(meta_train)
            self._save_stem()
            self.oracle.set_architecture(self.hypermodel, result["architecture"], result["temperature"])
            self.oracle.save()
            self._write_run_file()
        if self.inherit_weights:
            if self.supernet_search.supernet is None:  # finished before this process
                self.supernet_search.restore_supernet()
            self.proxy.initialize_decoder = self._inherit
        return super().search(meta_train, meta_val, callbacks=callbacks, verbose=verbose)

    def _inherit(self, hp, decoder):
        """A derived trial's decoder takes the trained supernet's weights (`inherit_weights`)."""
        self.supernet_search.supernet.transfer(decoder)

    def split_data(self, train_data, validation_data=None):
        """`(meta_train, meta_val)`: meta-val held out before the supernet sees any image.

        Without `validation_data`, the proxy task's `validation_fraction` of `train_data` is
        held out by element index with its seed (`tfnas.data.split`, what `ProxyTask.prepare`
        would do), so a resumed search holds out the same elements. The supernet trains on
        meta-train only; the trials train on meta-train and are scored on meta-val.

        Args:
            train_data, validation_data: as `search`.

        Returns:
            two unbatched `tf.data` sets of `(image, target)`, disjoint by element.
        """
        train = as_examples(train_data, "train_data")
        validation = as_examples(validation_data, "validation_data")
        if validation is not None:
            return train, validation
        s = self.proxy.settings
        return split(train, fraction=s.validation_fraction, seed=s.seed)

    def _save_stem(self):
        """The supernet's trained stem as the search's encoder weights (what every trial starts from)."""
        search = self.supernet_search
        if search.supernet is None:  # finished before this process: load the last checkpoint
            search.restore_supernet()
        encoder = self.proxy.trial_space.build_encoder()
        encoder.get_layer("stem").set_weights(search.supernet.stem.get_weights())
        with atomic_path(self.search_dir.encoder_weights) as tmp:
            encoder.save_weights(tmp)

    def _write_run_file(self):
        super()._write_run_file()
        result = self.supernet_search.result()
        run = {}
        if self.proxy.data is not None and os.path.exists(self.search_dir.encoder_weights):
            run["encoder"] = "the stem the one-shot supernet trained"
        self.search_dir.update_run(
            {
                **run,
                "oneshot": {
                    "settings": dataclasses.asdict(self.search_settings),
                    "batch_size": self.supernet_search.batch_size,
                    "inherit_weights": self.inherit_weights,
                    "epochs_done": 0 if result is None else result["epoch"] + 1,
                    "candidates": [c["source"] for c in self.oracle.candidates],
                },
            }
        )
