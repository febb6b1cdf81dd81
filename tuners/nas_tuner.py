"""NASTuner: a keras-tuner Tuner that scores each architecture with the paper's proxy task (seed 000, Sec. 3.2, 4.1).

Each trial of `NASTuner.search(train_data, validation_data)`:

1. builds the space's encoder (the same weights every trial: pretrained, or warmed up once
   on the search data, see `tfnas.training.warmup`) and the trial's decoder;
2. stage 1: trains the decoder alone on encoder outputs cached once per search (with the
   teacher's logits for distillation, weight 0.3), Adam 3e-3, 5 epochs, Polyak 0.9;
3. scores it on meta-val and applies progressive termination: a weak stage-1 reward ends
   the trial (reported with `terminated = 1`);
4. stage 2: trains the whole network end to end, SGD (momentum 0.9, lr 1e-3) on the encoder
   and Adam on the decoder, 1 epoch, Polyak 0.99;
5. reports the meta-val `reward` (geometric mean of mIoU, frequency-weighted IoU and mean
   accuracy, background left out), the stage-1 reward, parameters, multiply-adds and
   latency of the inference model, and saves the weights of the training model to
   `trial_<id>/model.weights.h5`.

Auxiliary outputs are trained with the segmentation loss (weight 0.15 each). A trial whose
build fails or whose loss or weights stop being finite is recorded as FAILED with the
reason in its `trial.json` message, and the search goes on.

Search directory (`directory/project_name`, the keras-tuner project dir): `run.json`
(space name and config, image size, classes, settings), `oracle.json`, `tuner0.json`,
`trial_<id>/{trial.json, model.weights.h5}`, `encoder.weights.h5` (the encoder every trial
starts from), `warmup.weights.h5` (the warmed model, the default teacher), `cache/` (encoder
and teacher outputs) and `termination.json` (the termination rule's state).

    space = AuxCellSpace(num_classes=11, width=48)
    tuner = NASTuner(space, max_trials=20, directory="runs", project_name="search")
    tuner.search(digit_scenes("train"))
    best = tuner.get_best_models(1)[0]
"""
import copy
import gc
import hashlib
import json
import os
import sys
import time

import keras
import keras_tuner
import numpy as np
import tensorflow as tf
from keras_tuner.src.distribute import utils as dist_utils

from tfnas import profile, retention
from tfnas.data import pipeline, split
from tfnas.preprocessing import IGNORE_LABEL
from tfnas.training import (
    FeatureCache,
    NonFiniteLossError,
    ParameterGroup,
    ProgressiveTermination,
    ProxyModel,
    atomic_write_json,
    evaluate_reward,
    make_optimizer,
    pad_to_batches,
    run_stage,
    set_batchnorm_momentum,
    warm_up,
)

#: The objective every NASTuner oracle must use.
OBJECTIVE = keras_tuner.Objective("reward", "max")
#: File names inside the search directory.
RUN_FILE, ENCODER_WEIGHTS, TERMINATION_FILE, MODEL_WEIGHTS = (
    "run.json", "encoder.weights.h5", "termination.json", "model.weights.h5")


def make_oracle(name, max_trials, seed=0, **kwargs):
    """One of tfnas' Oracles by name, with the `reward` (max) objective.

    Args:
        name: `"ppo"` (the paper's PPO controller), `"reinforce"` (the same controller
            trained with REINFORCE) or `"random"` (random search with near-best sampling).
        max_trials: int >= 1.
        seed: int.
        **kwargs: further Oracle arguments.

    Returns:
        A `keras_tuner.Oracle`.

    Raises:
        ValueError: for an unknown name or `max_trials < 1`.
    """
    if int(max_trials) < 1:
        raise ValueError(f"max_trials={max_trials!r} must be at least 1")
    if name in ("ppo", "reinforce"):
        from tfnas.tuners.ppo import PPOOracle
        return PPOOracle(objective=OBJECTIVE, max_trials=int(max_trials), seed=seed,
                         algorithm=name, **kwargs)
    if name == "random":
        from tfnas.tuners.random_search import NearBestRandomOracle
        return NearBestRandomOracle(objective=OBJECTIVE, max_trials=int(max_trials), seed=seed, **kwargs)
    raise ValueError(f"unknown oracle {name!r}; expected one of {sorted(ORACLES)}")


ORACLES = ("ppo", "random", "reinforce")


def _as_pairs(data, name):
    """Unbatched tf.data of (image, mask) from tf.data (batched or not) or a pair of arrays."""
    if data is None:
        return None
    if isinstance(data, (tuple, list)) and len(data) == 2 and not isinstance(data, tf.data.Dataset):
        data = tf.data.Dataset.from_tensor_slices((np.asarray(data[0]), np.asarray(data[1])))
    if not isinstance(data, tf.data.Dataset):
        raise ValueError(f"{name} is a {type(data).__name__}; expected a tf.data.Dataset of "
                         "(uint8 image, int32 mask) pairs or a tuple (images, masks)")
    spec = data.element_spec
    if not isinstance(spec, tuple) or len(spec) != 2:
        raise ValueError(f"{name} yields {spec}; expected (image, mask) pairs")
    if spec[0].shape.rank == 4:
        data = data.unbatch()
    elif spec[0].shape.rank != 3:
        raise ValueError(f"{name} yields images of shape {spec[0].shape}; expected (H, W, 3) "
                         "(or batches (N, H, W, 3))")
    return data


def _count(dataset):
    count = int(dataset.cardinality())
    if count < 0:
        count = int(dataset.reduce(np.int64(0), lambda total, _: total + 1))
    return count


def _trial_seed(seed, trial_id):
    return (int(seed) * 1_000_003 + int(hashlib.sha256(str(trial_id).encode()).hexdigest()[:8], 16)) % 2**31


class NASTuner(keras_tuner.Tuner):
    """Neural architecture search with the CVPR 2019 proxy task (see the module docstring).

    Args:
        hypermodel: a tfnas space (`tfnas.spaces.DecoderSpace`): `build_encoder()`,
            `build_decoder(hp, specs)`, `assemble`, `inference_model`, `config()`.
        oracle: a `keras_tuner.Oracle` whose objective is `reward` (max); None uses the
            space's `DEFAULT_ORACLE` (`"ppo"` unless the space says otherwise).
        max_trials: int, trials when `oracle` is None. Default 10.
        seed: int, seeds the oracle (when created here), weights, shuffling and termination.
            Default 0.
        stage1_epochs: int, decoder epochs on cached features. Default 5.
        stage2_epochs: int, end-to-end epochs (0 skips stage 2). Default 1.
        batch_size: int. Default 16.
        decoder_learning_rate: float, Adam learning rate of the decoder (both stages).
            Default 3e-3.
        encoder_learning_rate: float, SGD learning rate of the encoder in stage 2. Default 1e-3.
        encoder_momentum: float, SGD momentum. Default 0.9.
        stage1_polyak: float or None, Polyak decay in stage 1. Default 0.9.
        stage2_polyak: float or None, Polyak decay in stage 2. Default 0.99.
        aux_weight: float, weight of each auxiliary output's segmentation loss. Default 0.15.
        teacher: `"auto"` (the warmed-up model when the encoder is warmed up, else none),
            None, a Keras model mapping images in [-1, 1] to logits (or a dict with
            `"logits"`), or the path of a SavedModel (`serving_default`) or `.keras` file.
        distillation_weight: float, weight of the l2 loss to the teacher logits (stage 1).
            Default 0.3.
        cache_images: int or None, meta-train images whose encoder outputs are cached for
            stage 1 (None: all). Default 4000.
        validation_fraction: float, share of the training data held out as meta-val when
            `search` gets no validation data. Default 0.1.
        termination: bool, apply progressive termination after stage 1. Default True.
        termination_decay: float, decay of the rewards' moving average. Default 0.99.
        termination_delta: float, initial tolerance. Default 0.9.
        warmup_epochs: int or None, epochs of encoder warm-up before the search; None warms
            up for 10 epochs when the space has no pretrained `encoder_weights`, else not.
        warmup_learning_rate: float, Adam learning rate of the warm-up (from scratch, a
            high rate gets past predicting background everywhere sooner). Default 1e-2.
        bn_momentum: float, batch-norm momentum while training (PyTorch's 0.1). Default 0.9.
        latency_runs: int, timed forward passes per trial (0 skips timing). Default 10.
        latency_warmup: int, untimed passes before them. Default 2.
        metadata: optional dict merged into `run.json`.
        verbose: Keras verbosity of the stages (0, 1, 2 or "auto"). Default "auto".
        keep_weights: int or None: after each trial, keep the weights of only the best
            `keep_weights` completed trials and the running ones (`tfnas.retention`); None
            keeps every trial's weights. Default None.
        directory, project_name, overwrite, **kwargs: as `keras_tuner.Tuner`; the search
            directory is `directory/project_name`.

    Raises:
        ValueError: if the oracle's objective is not `reward` (max) or a setting is invalid.
    """

    def __init__(self, hypermodel, oracle=None, max_trials=10, seed=0, stage1_epochs=5,
                 stage2_epochs=1, batch_size=16, decoder_learning_rate=3e-3,
                 encoder_learning_rate=1e-3, encoder_momentum=0.9, stage1_polyak=0.9,
                 stage2_polyak=0.99, aux_weight=0.15, teacher="auto", distillation_weight=0.3,
                 cache_images=4000, validation_fraction=0.1, termination=True,
                 termination_decay=0.99, termination_delta=0.9, warmup_epochs=None,
                 warmup_learning_rate=1e-2, bn_momentum=0.9, latency_runs=10, latency_warmup=2, metadata=None,
                 verbose="auto", keep_weights=None, directory=None, project_name=None,
                 overwrite=False, **kwargs):
        if oracle is None:
            oracle = make_oracle(getattr(hypermodel, "DEFAULT_ORACLE", "ppo"), max_trials, seed)
        objective = oracle.objective
        if getattr(objective, "name", None) != "reward" or objective.direction != "max":
            raise ValueError(f"the oracle's objective is {objective!r}; NASTuner reports "
                             "'reward' to maximise: create the oracle with "
                             "objective=keras_tuner.Objective('reward', 'max')")
        if int(stage1_epochs) < 1 or int(stage2_epochs) < 0 or int(batch_size) < 1:
            raise ValueError(f"need stage1_epochs >= 1, stage2_epochs >= 0 and batch_size >= 1; got "
                             f"{stage1_epochs}, {stage2_epochs}, {batch_size}")
        if cache_images is not None and int(cache_images) < 1:
            raise ValueError(f"cache_images={cache_images!r} must be a positive int or None")
        self.seed = int(seed)
        self.stage1_epochs, self.stage2_epochs = int(stage1_epochs), int(stage2_epochs)
        self.batch_size = int(batch_size)
        self.decoder_learning_rate = float(decoder_learning_rate)
        self.encoder_learning_rate = float(encoder_learning_rate)
        self.encoder_momentum = float(encoder_momentum)
        self.stage1_polyak, self.stage2_polyak = stage1_polyak, stage2_polyak
        self.aux_weight, self.distillation_weight = float(aux_weight), float(distillation_weight)
        self.teacher = teacher
        self.cache_images = None if cache_images is None else int(cache_images)
        self.validation_fraction = float(validation_fraction)
        self.termination = bool(termination)
        self.termination_decay, self.termination_delta = termination_decay, termination_delta
        if warmup_epochs is None:
            warmup_epochs = 10 if getattr(hypermodel, "encoder_weights", None) is None else 0
        self.warmup_epochs = int(warmup_epochs)
        self.warmup_learning_rate = float(warmup_learning_rate)
        self.bn_momentum = float(bn_momentum)
        self.latency_runs, self.latency_warmup = int(latency_runs), int(latency_warmup)
        self.metadata = dict(metadata or {})
        self.verbose = verbose
        if keep_weights is not None and int(keep_weights) < 1:
            raise ValueError(f"keep_weights={keep_weights!r} must be at least 1 (or None to keep "
                             "every trial's weights)")
        self.keep_weights = None if keep_weights is None else int(keep_weights)
        self._context = None
        super().__init__(oracle=oracle, hypermodel=hypermodel, directory=directory,
                         project_name=project_name, overwrite=overwrite, **kwargs)
        # Trials start from the search's own encoder weights, never re-download or re-read them.
        self.trial_space = copy.copy(self.hypermodel)
        if hasattr(self.trial_space, "encoder_weights"):
            self.trial_space.encoder_weights = None

    # --- keras-tuner hooks ----------------------------------------------------------------
    def _populate_initial_space(self):
        """Declares the space's decisions without building a model.

        keras-tuner's version also builds the model until every conditional scope is
        active; tfnas spaces declare no conditions, so `declare_hyperparameters` suffices.
        """
        if type(self.hypermodel).declare_hyperparameters is keras_tuner.HyperModel.declare_hyperparameters:
            return super()._populate_initial_space()
        hp = self.oracle.get_space()
        self.hypermodel.declare_hyperparameters(hp)
        self.oracle.update_space(hp)

    @property
    def run_dir(self):
        """The search directory (keras-tuner's project dir)."""
        return self.project_dir

    def _verbosity(self):
        if self.verbose == "auto":
            return 1 if sys.stdout.isatty() else 2
        return int(self.verbose)

    def search(self, train_data, validation_data=None, callbacks=None, verbose=1):
        """Runs the search (see the module docstring).

        Args:
            train_data: `tf.data` of `(uint8 image (H, W, 3), int32 mask (H, W))` pairs,
                all of one size, in a fixed order (batched data are unbatched), or a tuple
                `(images, masks)` of arrays.
            validation_data: the same form, or None to hold out `validation_fraction` of
                `train_data` as meta-val.
            callbacks: Keras callbacks for every stage's `fit` (deep-copied per trial).
            verbose: keras-tuner's trial summaries (0 or 1). Default 1.

        Raises:
            ValueError: for data of the wrong form.
        """
        if dist_utils.is_chief_oracle():
            return super().search(verbose=verbose)
        self._prepare(_as_pairs(train_data, "train_data"),
                      _as_pairs(validation_data, "validation_data"))
        self.save()  # so that a search killed in its first trial resumes rather than restarts
        return super().search(callbacks=callbacks, verbose=verbose)

    def reload(self):
        """Reloads the search; trials that completed are never queued to run again.

        keras-tuner re-queues the trials its last `oracle.json` lists as running; a kill
        between a trial's end and the next save would otherwise run a completed trial twice.
        """
        super().reload()
        done = {t.trial_id for t in self.oracle.trials.values()
                if t.status in (keras_tuner.engine.trial.TrialStatus.COMPLETED,
                                keras_tuner.engine.trial.TrialStatus.FAILED)}
        queue = getattr(self.oracle, "_retry_queue", None)
        if queue:
            queue[:] = [trial_id for trial_id in queue if trial_id not in done]

    def on_trial_end(self, trial):
        """Records the trial (keras-tuner), then prunes weights beyond the best `keep_weights`."""
        super().on_trial_end(trial)
        if self.keep_weights is not None:
            retention.prune_trial_weights(
                self.project_dir, self.keep_weights, self.oracle.trials.values(),
                running_trial_ids=self.oracle.ongoing_trials.values(),
                direction=self.oracle.objective.direction)

    def run_trial(self, trial, callbacks=None, **kwargs):
        """Trains and scores one architecture with the proxy task; returns its metrics.

        Raises:
            keras_tuner.errors.FailedTrialError: when the architecture cannot be built.
            NonFiniteLossError: when the loss or the weights stop being finite.
        """
        if self._context is None:
            raise RuntimeError("run_trial needs the data prepared by NASTuner.search(); "
                               "call search(train_data, validation_data)")
        ctx, space, verbose = self._context, self.trial_space, self._verbosity()
        callbacks = self._deepcopy_callbacks(callbacks or [])
        self._configure_tensorboard_dir(callbacks, trial)
        keras.backend.clear_session()
        gc.collect()
        seed = _trial_seed(self.seed, trial.trial_id)
        keras.utils.set_random_seed(seed)
        start = time.perf_counter()
        encoder = space.build_encoder()
        encoder.set_weights(ctx["encoder_weights"])
        try:
            decoder = space.build_decoder(trial.hyperparameters, space.feature_specs(encoder))
        except Exception as err:  # any build error of a sampled architecture fails the trial
            raise keras_tuner.errors.FailedTrialError(
                f"trial {trial.trial_id}: building the architecture "
                f"{trial.hyperparameters.values} failed: {type(err).__name__}: {err}") from err
        set_batchnorm_momentum(decoder, self.bn_momentum)
        network = space.assemble(encoder, decoder)

        # Stage 1: the decoder alone on cached encoder outputs.
        group = ParameterGroup(make_optimizer("adam", self.decoder_learning_rate, self.stage1_polyak),
                               decoder.trainable_variables, name="decoder_parameters")
        stage1 = ProxyModel(decoder, [group], ctx["num_classes"], self.aux_weight,
                            self.distillation_weight, name="stage1")
        train = ctx["stage1_train"].shuffle(ctx["stage1_count"], seed=seed).batch(
            ctx["stage1_batch"], drop_remainder=True)
        run_stage(stage1, train, self.stage1_epochs, f"trial {trial.trial_id} stage 1",
                  callbacks, verbose)
        scores = evaluate_reward(stage1, ctx["stage1_val"])
        stage1_reward = scores["reward"]
        stage1_seconds = time.perf_counter() - start

        terminated = self.termination and not ctx["termination"].should_continue(
            trial.trial_id, stage1_reward)
        stage2_start = time.perf_counter()
        if terminated:
            print(f"trial {trial.trial_id}: terminated after stage 1 (reward {stage1_reward:.4f} "
                  f"vs moving average {ctx['termination'].average:.4f})")
        elif self.stage2_epochs:
            # Stage 2: the whole network end to end, SGD on the encoder and Adam on the decoder.
            set_batchnorm_momentum(network, self.bn_momentum)
            groups = [
                ParameterGroup(make_optimizer("sgd", self.encoder_learning_rate, self.stage2_polyak,
                                              momentum=self.encoder_momentum),
                               encoder.trainable_variables, name="encoder_parameters"),
                ParameterGroup(make_optimizer("adam", self.decoder_learning_rate, self.stage2_polyak),
                               decoder.trainable_variables, name="decoder_parameters"),
            ]
            stage2 = ProxyModel(network, groups, ctx["num_classes"], self.aux_weight, name="stage2")
            train = pipeline(ctx["meta_train"], ctx["stage2_batch"], shuffle=True, seed=seed,
                             drop_remainder=True)
            run_stage(stage2, train, self.stage2_epochs, f"trial {trial.trial_id} stage 2",
                      callbacks, verbose)
            scores = evaluate_reward(stage2, ctx["stage2_val"])
        stage2_seconds = time.perf_counter() - stage2_start
        self.save_model(trial.trial_id, network)

        profile_start = time.perf_counter()
        inference = space.inference_model(network)
        shape = tuple(ctx["image_size"]) + (3,)
        latency = {}
        if self.latency_runs:
            mean_ms, std_ms = profile.latency(inference, shape, runs=self.latency_runs,
                                              warmup=self.latency_warmup)
            latency = {"latency_ms": mean_ms, "latency_std_ms": std_ms}
        metrics = {
            "reward": scores["reward"], "stage1_reward": stage1_reward,
            "miou": scores["miou"], "fwiou": scores["fwiou"],
            "mean_accuracy": scores["mean_accuracy"], "terminated": float(terminated),
            "params": profile.params(inference)["total"],
            "training_params": profile.params(network)["total"],
            "madds": profile.madds(inference, shape), **latency,
            "stage1_seconds": stage1_seconds, "stage2_seconds": stage2_seconds,
        }
        metrics["profile_seconds"] = time.perf_counter() - profile_start
        metrics["trial_seconds"] = time.perf_counter() - start
        return metrics

    def save_model(self, trial_id, model, step=0):
        """Saves the training model's weights to `trial_<id>/model.weights.h5`."""
        model.save_weights(os.path.join(self.get_trial_dir(trial_id), MODEL_WEIGHTS))

    def load_model(self, trial):
        """Builds the trial's training model (`space.build(hp)`) and loads its weights.

        Raises:
            FileNotFoundError: if the trial saved no weights (it failed) or they were pruned
                (`keep_weights`).
        """
        path = os.path.join(self.get_trial_dir(trial.trial_id), MODEL_WEIGHTS)
        if not os.path.exists(path):
            pruned = retention.pruned_message(self.project_dir, trial.trial_id,
                                              self.oracle.trials.values())
            if pruned:
                raise FileNotFoundError(pruned)
            raise FileNotFoundError(f"trial {trial.trial_id} has no weights at {path!r} "
                                    f"(status {trial.status}); pick a completed trial")
        model = self.trial_space.build(trial.hyperparameters.copy())
        model.load_weights(path)
        return model

    def get_best_models(self, num_models=1):
        """The best trials' training models, built and loaded, best first."""
        trials = [t for t in self.oracle.get_best_trials(num_models)
                  if t.status == keras_tuner.engine.trial.TrialStatus.COMPLETED]
        return [self.load_model(t) for t in trials]

    # --- preparation ------------------------------------------------------------------------
    def _prepare(self, train, val):
        """Splits the data, warms up the encoder, fills the feature cache, writes run.json."""
        verbose = self._verbosity()
        space, run_dir = self.hypermodel, self.project_dir
        # run.json first (settings and metadata, e.g. the CLI's arguments), so that a search
        # killed during the warm-up or the feature cache can be resumed.
        self._write_run_file()
        if val is None:
            train, val = split(train, fraction=self.validation_fraction, seed=self.seed)
        image_spec = train.element_spec[0]
        image_size = [int(d) if d is not None else None for d in image_spec.shape[:2]]
        if None in image_size:
            image, _ = next(iter(train.take(1)))
            image_size = [int(d) for d in image.shape[:2]]
        num_train, num_val = _count(train), _count(val)
        if num_train < 1 or num_val < 1:
            raise ValueError(f"the search needs meta-train and meta-val images; got {num_train} "
                             f"and {num_val}")

        warmed, teacher = None, self.teacher
        if self.warmup_epochs and (teacher == "auto" or not os.path.exists(
                os.path.join(run_dir, ENCODER_WEIGHTS))):
            warmed, _ = warm_up(space, train, run_dir, epochs=self.warmup_epochs,
                                batch_size=self.batch_size, learning_rate=self.warmup_learning_rate,
                                aux_weight=self.aux_weight, bn_momentum=self.bn_momentum,
                                seed=self.seed, verbose=verbose)
        encoder_path = os.path.join(run_dir, ENCODER_WEIGHTS)
        encoder = self.trial_space.build_encoder()
        if os.path.exists(encoder_path):
            encoder.load_weights(encoder_path)
        else:
            source = warmed.get_layer("encoder") if warmed is not None else space.build_encoder()
            encoder.set_weights(source.get_weights())
            tmp = os.path.join(run_dir, f"tmp{os.getpid()}.{ENCODER_WEIGHTS}")
            encoder.save_weights(tmp)
            os.replace(tmp, encoder_path)
        teacher = self._resolve_teacher(teacher, warmed)

        cache = FeatureCache(os.path.join(run_dir, "cache"), verbose=verbose)
        stage1_data = cache.load_or_compute("train", encoder, train, self.cache_images, teacher,
                                            self.batch_size)
        val_data = cache.load_or_compute("val", encoder, val, None, None, self.batch_size)
        stage1_count = len(stage1_data.masks)
        inputs = tuple(tf.constant(np.asarray(f)) for f in stage1_data.features)
        targets = tf.constant(np.asarray(stage1_data.masks))
        if stage1_data.teacher_logits is not None:
            targets = (targets, tf.constant(np.asarray(stage1_data.teacher_logits)))
        val_features, val_masks = pad_to_batches(
            [np.asarray(f) for f in val_data.features], np.asarray(val_data.masks), self.batch_size)
        pad = -num_val % self.batch_size
        padded_val = val
        if pad:
            mask_spec = val.element_spec[1]
            filler = tf.data.Dataset.from_tensors((
                tf.zeros(image_size + [3], image_spec.dtype),
                tf.fill(image_size + list(mask_spec.shape[2:]), tf.cast(IGNORE_LABEL, mask_spec.dtype)),
            )).repeat(pad)
            padded_val = val.concatenate(filler)
        self._context = {
            "num_classes": space.num_classes, "image_size": image_size,
            "encoder_weights": encoder.get_weights(), "meta_train": train,
            "stage1_train": tf.data.Dataset.from_tensor_slices((inputs, targets)),
            "stage1_count": stage1_count, "stage1_batch": min(self.batch_size, stage1_count),
            "stage1_val": tf.data.Dataset.from_tensor_slices(
                (tuple(val_features), val_masks)).batch(self.batch_size),
            "stage2_batch": min(self.batch_size, num_train),
            "stage2_val": pipeline(padded_val, self.batch_size),
            "termination": ProgressiveTermination(
                self.termination_decay, self.termination_delta, seed=self.seed,
                path=os.path.join(run_dir, TERMINATION_FILE)),
        }
        self._write_run_file(image_size, num_train, num_val, stage1_data)

    def _resolve_teacher(self, teacher, warmed):
        if teacher == "auto":
            return warmed
        if teacher is None or isinstance(teacher, keras.layers.Layer):
            return teacher
        if isinstance(teacher, str):
            if teacher.endswith(".keras"):
                return keras.models.load_model(teacher)
            if os.path.isdir(teacher):
                return keras.layers.TFSMLayer(teacher, call_endpoint="serving_default")
            raise ValueError(f"teacher {teacher!r} is neither a .keras file nor a SavedModel "
                             "folder; pass a Keras model, a path, 'auto' or None")
        raise ValueError(f"teacher is a {type(teacher).__name__}; expected a Keras model, a "
                         "SavedModel path, 'auto' or None")

    def _space_name(self):
        from tfnas.spaces import SPACES
        for name, cls in SPACES.items():
            if type(self.hypermodel) is cls:
                return name
        return self.hypermodel.name

    def _write_run_file(self, image_size=None, num_train=None, num_val=None, stage1_data=None):
        """Writes run.json; the data's sizes are added once the feature cache is ready."""
        path = os.path.join(self.project_dir, RUN_FILE)
        previous = {}
        if os.path.exists(path):
            with open(path) as f:
                previous = json.load(f)
        settings = {key: getattr(self, key) for key in (
            "seed", "stage1_epochs", "stage2_epochs", "batch_size", "decoder_learning_rate",
            "encoder_learning_rate", "encoder_momentum", "stage1_polyak", "stage2_polyak",
            "aux_weight", "distillation_weight", "cache_images", "validation_fraction",
            "termination", "termination_decay", "termination_delta", "warmup_epochs",
            "warmup_learning_rate", "bn_momentum", "latency_runs", "keep_weights")}
        run = {**previous, **self.metadata,
               "space": self._space_name(), "space_config": self.hypermodel.config(),
               "num_classes": self.hypermodel.num_classes,
               "objective": {"name": "reward", "direction": "max"},
               "oracle": type(self.oracle).__name__, "max_trials": self.oracle.max_trials,
               "settings": settings, "tfnas_version": _version()}
        if stage1_data is not None:
            run.update({"image_size": image_size, "meta_train_images": num_train,
                        "meta_val_images": num_val, "cached_images": len(stage1_data.masks),
                        "distillation": stage1_data.teacher_logits is not None})
        atomic_write_json(path, run)


def _version():
    try:
        from importlib.metadata import version
        return version("tfnas")
    except Exception:  # not installed (running from a checkout)
        return "unknown"
