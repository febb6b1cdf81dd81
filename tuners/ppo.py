"""PPO/REINFORCE-trained LSTM controller as a keras-tuner Oracle (Nekrasov et al., CVPR 2019, Section 3.2).

The controller (`tfnas.tuners.controller.Controller`) emits the search space's decisions in
the order the HyperModel declares them; each completed trial's score is the reward, and the
controller is trained with proximal policy optimisation as the authors' code runs it, or
with REINFORCE.

PPO (the authors' `PPO` with its `RolloutStorage`): every completed architecture joins a
rollout buffer of the last `buffer_size` (100) architectures, each kept with the
log-probability the controller gave it when it was sampled. After each new architecture
the moving-average baseline (decay 0.95) absorbs its reward, every buffered architecture's
advantage is its reward minus that baseline, and the controller makes `epochs` (1) passes
over the buffer in `minibatches` (100) random minibatches (one Adam step each, lr 1e-4,
gradient-norm clip 2.0) on the clipped surrogate (clip 0.1, entropy weight 0). Old
architectures were sampled by older policies, so their probability ratio moves away from 1
and the clip binds. One difference from that code: its storage starts as 100 zero rows
(reward 0, log-probability 0) that take part in the minibatches until real architectures
replace them; they never pass gradient (their ratio is far below 1 - clip with a negative
advantage) but still make Adam steps. Here the buffer holds only real architectures, so
the first updates make as many steps as there are buffered architectures.

REINFORCE (`algorithm="reinforce"`, the authors' `REINFORCE`): one step of
-log pi(architecture) * advantage on the newly completed architecture(s).

Sampling and the update each run as one `tf.function` traced once per Oracle (the update
loops over its minibatches inside the graph), and every random draw comes from the Oracle's
numpy generator (uniforms for sampling, permutations for the minibatches), so a seed fixes
the search and a resumed search continues the same sequence.

Everything the controller learns lives on the Oracle, so it works as the chief of
keras-tuner's distributed tuning: the sampled actions and log-probabilities of pending
trials are kept in the Oracle's state keyed by trial id (trials come back rebuilt from
protobuf), the rollout buffer, baseline and generator state are in `oracle.json`, and the
controller weights with the Adam slots are written to `controller_<updates>.npz` in the
project directory after every update. `oracle.json` (written atomically) names the update
count, so a search killed at any point resumes with the controller it last recorded, and a
trial that was running when it died is re-run once and then learnt from once.

Limits: the decisions are fixed when the controller is first built (from the space the
tuner registers by building the HyperModel once); hyperparameters that appear later get
their default values. Conditional scopes are not modelled: the controller emits every
decision and the values of inactive ones are left out of the trial.
"""

import os
import warnings

import keras
import keras_tuner
import numpy as np
import tensorflow as tf
from keras_tuner.engine import trial as trial_module

from tfnas.io import atomic_path
from tfnas.tuners._settings import check_settings
from tfnas.tuners.controller import Controller, decision_values
from tfnas.tuners.oracles import ResumableOracle

ALGORITHMS = ("ppo", "reinforce")


class PPOOracle(ResumableOracle):
    """Oracle whose LSTM controller learns which architectures score best.

    Use it with any `keras_tuner.Tuner` whose HyperModel declares its decisions with
    `hp.Choice`, `hp.Int` or `hp.Boolean`:

        oracle = PPOOracle(objective=keras_tuner.Objective("reward", "max"), max_trials=100)
        tuner = MyTuner(oracle=oracle, hypermodel=space, directory="runs", project_name="s")

    The Tuner builds the HyperModel once when it is created, which registers the decisions;
    the controller is built from them at the first trial. With no HyperModel (a Tuner whose
    `run_trial` declares the hyperparameters), the first trial runs the default values and
    registers the space.

    The defaults are the authors' settings (nas-segm-pytorch `PPO`).

    Args:
        objective: A string or `keras_tuner.Objective`; the reward is the trial's score,
            negated when the objective's direction is "min". Defaults to keras-tuner's
            default objective (minimise the value `run_trial` returns).
        max_trials: Int, the number of trials to run. Defaults to 10.
        algorithm: "ppo" (clipped surrogate over a rollout buffer, Nekrasov et al. (CVPR 2019)) or
            "reinforce" (-log pi * advantage on the new architectures only). Defaults to
            "ppo".
        units: Int, LSTM units. Defaults to 100.
        layers: Int, stacked LSTM cells. Defaults to 2.
        learning_rate: Float, Adam learning rate of the controller. Defaults to 1e-4.
        clip: Float, PPO clip epsilon: the ratio is clipped to [1 - clip, 1 + clip].
            Defaults to 0.1.
        baseline_decay: Float in [0, 1), decay of the reward moving average used as
            baseline (initialised with the first reward). Defaults to 0.95.
        entropy_weight: Float, weight of the entropy bonus subtracted from the loss.
            Defaults to 0.0.
        grad_clip: Optional float, clip of the gradients' global norm (per Adam step);
            None to not clip. Defaults to 2.0.
        update_every: Int, number of completed trials gathered before the controller
            learns (PPO: they join the buffer, then one update; REINFORCE: one step on
            them). Defaults to 1.
        buffer_size: Int, PPO's rollout buffer keeps the last `buffer_size` completed
            architectures. Defaults to 100.
        epochs: Int, PPO's passes over the buffer per update. Defaults to 1.
        minibatches: Int in [1, buffer_size], PPO splits a full buffer into this many
            minibatches of `buffer_size // minibatches` architectures (one Adam step each;
            a partly filled buffer gives as many minibatches of that size as it fills).
            Defaults to 100.
        seed: Optional int. Seeds the controller's initial weights, the sampling and the
            minibatch order; the same seed gives the same sequence of architectures for
            the same rewards.
        hyperparameters: Optional `keras_tuner.HyperParameters` to register or override
            decisions in advance.
        allow_new_entries: Bool, whether the HyperModel may declare hyperparameters not in
            `hyperparameters`. Defaults to True.
        tune_new_entries: Bool, whether such new hyperparameters are searched (else their
            default is used). Defaults to True.
        max_retries_per_trial: Int, how many times a crashed trial is re-run. Defaults to 0.
        max_consecutive_failed_trials: Int, the search stops after this many failed trials
            in a row. Defaults to 3.

    Attributes:
        baseline: Float or None, the moving average of the rewards learnt from.
        updates: Int, how many times the controller has learnt.
        buffer: List of the buffered architectures, oldest first, each a dict with
            `trial_id`, `actions` (choice indices), `log_prob` (sum over decisions, at
            sampling time) and `reward` (PPO only; empty for REINFORCE).
        last_update: Dict of statistics of the latest update (`steps`, `loss`,
            `ratio_min`, `ratio_max`, `clip_fraction`: the share of minibatch entries
            whose ratio left [1 - clip, 1 + clip], `binding_fraction`: the share whose
            clipped term was the smaller one so that they passed no gradient), or None
            before the first update in this process.

    Raises:
        ValueError: if `algorithm` is unknown or a numeric setting is out of range.
    """

    def __init__(
        self,
        objective=None,
        max_trials=10,
        algorithm="ppo",
        units=100,
        layers=2,
        learning_rate=1e-4,
        clip=0.1,
        baseline_decay=0.95,
        entropy_weight=0.0,
        grad_clip=2.0,
        update_every=1,
        buffer_size=100,
        epochs=1,
        minibatches=100,
        seed=None,
        hyperparameters=None,
        allow_new_entries=True,
        tune_new_entries=True,
        max_retries_per_trial=0,
        max_consecutive_failed_trials=3,
    ):
        if algorithm not in ALGORITHMS:
            raise ValueError(f"algorithm={algorithm!r}: expected one of {ALGORITHMS}")
        checks = [
            ("units", units, units >= 1, ">= 1"),
            ("layers", layers, layers >= 1, ">= 1"),
            ("learning_rate", learning_rate, learning_rate > 0, "> 0"),
            ("clip", clip, 0 < clip < 1, "in (0, 1)"),
            ("baseline_decay", baseline_decay, 0 <= baseline_decay < 1, "in [0, 1)"),
            ("entropy_weight", entropy_weight, entropy_weight >= 0, ">= 0"),
            ("grad_clip", grad_clip, grad_clip is None or grad_clip > 0, "None or > 0"),
            ("update_every", update_every, update_every >= 1, ">= 1"),
            ("buffer_size", buffer_size, buffer_size >= 1, ">= 1"),
            ("epochs", epochs, epochs >= 1, ">= 1"),
            (
                "minibatches",
                minibatches,
                1 <= minibatches <= buffer_size,
                f"in [1, buffer_size={buffer_size}]",
            ),
        ]
        check_settings(checks)
        super().__init__(
            objective=objective,
            max_trials=max_trials,
            hyperparameters=hyperparameters,
            allow_new_entries=allow_new_entries,
            tune_new_entries=tune_new_entries,
            seed=seed,
            max_retries_per_trial=max_retries_per_trial,
            max_consecutive_failed_trials=max_consecutive_failed_trials,
        )
        self.algorithm = algorithm
        self.units = int(units)
        self.layers = int(layers)
        self.learning_rate = float(learning_rate)
        self.clip = float(clip)
        self.baseline_decay = float(baseline_decay)
        self.entropy_weight = float(entropy_weight)
        self.grad_clip = grad_clip
        self.update_every = int(update_every)
        self.buffer_size = int(buffer_size)
        self.epochs = int(epochs)
        self.minibatches = int(minibatches)

        if seed is not None:  # the base class treats seed=0 as "no seed"
            self.seed = self._seed_state = int(seed)
        self._rng = np.random.default_rng((self.seed, 1))
        self._controller = None
        self._optimizer = None
        self._train_function = None
        # Names of the decisions, in the controller's order; fixed once built.
        self._decisions = None
        # trial_id -> {"actions": [...], "log_probs": [...]} for trials not learnt from yet.
        self._samples = {}
        # trial_id -> reward, completed trials waiting for the next update.
        self._rewards = {}
        self.buffer = []
        self.baseline = None
        self.history = []
        self.updates = 0
        self.last_update = None

    # Controller -----------------------------------------------------------------------

    def _choices(self):
        """The decision names and, per name, its list of values."""
        names = self._decisions
        space = {}
        for hp in self.hyperparameters.space:
            space.setdefault(hp.name, hp)
        if names is None:
            names = list(space)
        missing = [name for name in names if name not in space]
        if missing:
            raise RuntimeError(
                f"the controller was built for decisions {names}, but {missing} are no "
                "longer in the search space; start a new project (overwrite=True)"
            )
        return names, {name: decision_values(space[name]) for name in names}

    def _checkpoint_path(self, updates):
        return os.path.join(self._project_dir, f"controller_{updates:06d}.npz")

    def _ensure_controller(self):
        """Builds the controller from the space (restoring saved weights); False if empty."""
        if self._controller is not None:
            return True
        names, values = self._choices()
        if not names:
            return False
        controller = Controller(
            [len(values[name]) for name in names],
            units=self.units,
            layers=self.layers,
            seed=self.seed,
            name="controller",
        )
        controller.build()
        # PyTorch's Adam epsilon, as in the authors' code (Keras' default is 1e-7).
        optimizer = keras.optimizers.Adam(self.learning_rate, epsilon=1e-8)
        optimizer.build(controller.trainable_variables)
        if self.updates:
            path = self._checkpoint_path(self.updates)
            if not os.path.exists(path):
                raise FileNotFoundError(
                    f"oracle.json records {self.updates} controller updates but {path} is "
                    "missing: restore that file or start a new project (overwrite=True)"
                )
            with np.load(path) as data:
                for i, variable in enumerate(controller.weights):
                    variable.assign(data[f"weight_{i}"])
                for i, variable in enumerate(optimizer.variables):
                    variable.assign(data[f"optimizer_{i}"])
        self._decisions = names
        self._controller = controller
        self._optimizer = optimizer
        self._train_function = None
        return True

    def _minibatch_size(self):
        """Architectures per minibatch: PPO's buffer_size // minibatches, REINFORCE's all."""
        if self.algorithm == "ppo":
            return self.buffer_size // self.minibatches
        return self.update_every

    def _slots(self):
        """(rows, steps, minibatch size) of the update's fixed-shape inputs."""
        size = self._minibatch_size()
        if self.algorithm == "ppo":
            return self.buffer_size, self.epochs * -(-self.buffer_size // size), size
        return self.update_every, 1, size

    def _make_train_function(self):
        """Traces the update: `steps` Adam steps, each on one minibatch, in one graph.

        The graph takes fixed-shape inputs (padded to the buffer size) so that it is
        traced once: `actions (rows, decisions)`, `old_log_probs (rows,)`, `advantages
        (rows,)`, `order (max_steps, minibatch)` (row indices per step, -1 for padding)
        and the number of steps to run.
        """
        controller, optimizer = self._controller, self._optimizer
        variables = controller.trainable_variables
        ppo = self.algorithm == "ppo"
        clip, entropy_weight, grad_clip = self.clip, self.entropy_weight, self.grad_clip
        rows, steps, size = self._slots()

        def train(actions, old_log_probs, advantages, order, num_steps):
            zero = tf.constant(0.0)
            loss_sum, entropy_sum, outside, binding, count = zero, zero, zero, zero, zero
            ratio_min, ratio_max = tf.constant(np.inf, tf.float32), tf.constant(-np.inf, tf.float32)
            for step in tf.range(num_steps):
                index = order[step]
                mask = tf.cast(index >= 0, tf.float32)
                index = tf.maximum(index, 0)
                advantage = tf.gather(advantages, index)
                with tf.GradientTape() as tape:
                    log_probs, entropy = controller.evaluate_actions(tf.gather(actions, index))
                    if ppo:
                        ratio = tf.exp(log_probs - tf.gather(old_log_probs, index))
                        clipped = tf.clip_by_value(ratio, 1 - clip, 1 + clip)
                        objective = tf.minimum(ratio * advantage, clipped * advantage)
                    else:
                        ratio = tf.ones_like(log_probs)
                        clipped = ratio
                        objective = log_probs * advantage
                    objective += entropy_weight * entropy
                    loss = -tf.reduce_sum(mask * objective) / tf.reduce_sum(mask)
                grads = tape.gradient(loss, variables)
                if grad_clip is not None:
                    grads, _ = tf.clip_by_global_norm(grads, grad_clip)
                optimizer.apply_gradients(zip(grads, variables))
                # Statistics, over the real (unpadded) entries.
                real = mask > 0
                loss_sum += loss
                entropy_sum += tf.reduce_sum(mask * entropy) / tf.reduce_sum(mask)
                count += tf.reduce_sum(mask)
                outside += tf.reduce_sum(mask * tf.cast(tf.not_equal(ratio, clipped), tf.float32))
                binding += tf.reduce_sum(mask * tf.cast(clipped * advantage < ratio * advantage, tf.float32))
                ratio_min = tf.minimum(ratio_min, tf.reduce_min(tf.boolean_mask(ratio, real)))
                ratio_max = tf.maximum(ratio_max, tf.reduce_max(tf.boolean_mask(ratio, real)))
            steps_run = tf.cast(num_steps, tf.float32)
            return {
                "loss": loss_sum / steps_run,
                "entropy": entropy_sum / steps_run,
                "ratio_min": ratio_min,
                "ratio_max": ratio_max,
                "clip_fraction": outside / count,
                "binding_fraction": binding / count,
            }

        return tf.function(
            train,
            input_signature=[
                tf.TensorSpec([rows, len(controller.num_choices)], tf.int32),
                tf.TensorSpec([rows], tf.float32),
                tf.TensorSpec([rows], tf.float32),
                tf.TensorSpec([steps, size], tf.int32),
                tf.TensorSpec([], tf.int32),
            ],
        )

    def _save_controller(self):
        arrays = {f"weight_{i}": v.numpy() for i, v in enumerate(self._controller.weights)}
        arrays.update({f"optimizer_{i}": np.asarray(v) for i, v in enumerate(self._optimizer.variables)})
        with atomic_path(self._checkpoint_path(self.updates)) as tmp:
            np.savez(tmp, **arrays)

    def controller_probabilities(self, values=None):
        """The controller's current distribution of every decision.

        Decision i's distribution is conditioned on the earlier decisions taking the values
        in `values` (when given) or the most likely value at each step (when not).

        Args:
            values: Optional dict `{hyperparameter name: value}` covering the decisions.

        Returns:
            Dict `{decision name: {value: probability}}` in the controller's order.

        Raises:
            RuntimeError: if the search space has no decisions yet.
            ValueError: if `values` lacks a decision or holds a value not in its choices.
        """
        if not self._ensure_controller():
            raise RuntimeError(
                "the search space has no hyperparameters yet: create the Tuner with a "
                "HyperModel (it registers the space) before asking for probabilities"
            )
        names, choices = self._choices()

        def choose(i, probs):
            if values is None:
                return int(np.argmax(probs))
            name = names[i]
            if name not in values or values[name] not in choices[name]:
                raise ValueError(f"values[{name!r}]={values.get(name)!r}: expected one of {choices[name]}")
            return choices[name].index(values[name])

        _, _, probs = self._controller.decide(choose)
        return {name: dict(zip(choices[name], p.tolist())) for name, p in zip(names, probs)}

    # keras-tuner Oracle ---------------------------------------------------------------

    def update_space(self, hyperparameters):
        """Adds new hyperparameters to the space, checking the controller supports them.

        Args:
            hyperparameters: A `keras_tuner.HyperParameters` holding the space.

        Raises:
            ValueError: naming a hyperparameter that is not Choice, Int, Boolean or Fixed.
        """
        for hp in hyperparameters.space:
            decision_values(hp)
        super().update_space(hyperparameters)

    def populate_space(self, trial_id):
        """Samples an architecture from the controller for a new trial.

        Args:
            trial_id: String, the id of the new trial; its sample is kept under this id.

        Returns:
            `{"status": "RUNNING", "values": {name: value}}`.
        """
        if not self._ensure_controller():
            # Empty space: the first trial registers it (RandomSearch does the same).
            return {"status": trial_module.TrialStatus.RUNNING, "values": {}}
        names, choices = self._choices()
        actions, log_probs = self._controller.sample(self._rng)
        self._samples[trial_id] = {"actions": actions, "log_probs": log_probs}
        chosen = {name: choices[name][a] for name, a in zip(names, actions)}
        hps = keras_tuner.HyperParameters()
        for hp in self.hyperparameters.space:
            hps.merge([hp])
            if not hps.is_active(hp):
                continue
            if hp.name in chosen:
                hps.values[hp.name] = chosen[hp.name]
            else:
                warnings.warn(
                    f"hyperparameter '{hp.name}' appeared after the controller was built "
                    f"for {names}; it keeps its default {hp.default!r}",
                    stacklevel=2,
                )
                hps.values[hp.name] = hp.default
        return {"status": trial_module.TrialStatus.RUNNING, "values": hps.values}

    @keras_tuner.synchronized
    def end_trial(self, trial):
        """Records the trial (base class), then learns from it when it completed.

        A completed trial's reward joins the next update; a failed one's sample is
        dropped; an invalid one waiting for a retry keeps its sample.

        Args:
            trial: The `keras_tuner.engine.trial.Trial` that ended.
        """
        super().end_trial(trial)
        trial = self.trials[trial.trial_id]
        if trial.trial_id in self._samples:
            if trial.status == trial_module.TrialStatus.COMPLETED:
                score = float(trial.score)
                self._rewards[trial.trial_id] = score if self.objective.direction == "max" else -score
            elif trial.status == trial_module.TrialStatus.FAILED:
                del self._samples[trial.trial_id]
            if len(self._rewards) >= self.update_every:
                self._update()
        self.save()

    def _learn_baseline(self, reward):
        """Moves the baseline towards `reward` (starts at the first reward)."""
        if self.baseline is None:
            self.baseline = reward
        else:
            self.baseline = self.baseline_decay * self.baseline + (1 - self.baseline_decay) * reward

    def _update(self):
        """Learns from the completed trials waiting in `_rewards`, then saves a checkpoint.

        PPO: each joins the buffer (and the baseline) in completion order; then `epochs`
        passes over the whole buffer in random minibatches, every architecture's
        advantage taken against the new baseline. REINFORCE: each advantage is taken
        against the baseline just after its reward, and one step is made on them.
        """
        self._ensure_controller()
        rows, max_steps, size = self._slots()
        trial_ids = list(self._rewards)
        if self.algorithm == "ppo":
            for trial_id in trial_ids:
                reward = self._rewards[trial_id]
                self._learn_baseline(reward)
                self.buffer.append(
                    {
                        "trial_id": trial_id,
                        "actions": list(self._samples[trial_id]["actions"]),
                        "log_prob": float(sum(self._samples[trial_id]["log_probs"])),
                        "reward": reward,
                    }
                )
            del self.buffer[: -self.buffer_size]
            entries = self.buffer
            advantages = [entry["reward"] - self.baseline for entry in entries]
            order = []
            for _ in range(self.epochs):
                permutation = self._rng.permutation(len(entries))
                for start in range(0, len(entries), size):
                    order.append(permutation[start : start + size])
        else:
            entries, advantages = [], []
            for trial_id in trial_ids:
                self._learn_baseline(self._rewards[trial_id])
                advantages.append(self._rewards[trial_id] - self.baseline)
                entries.append({"actions": self._samples[trial_id]["actions"], "log_prob": 0.0})
            order = [np.arange(len(entries))]
        padded_order = np.full((max_steps, size), -1, np.int32)
        for step, indices in enumerate(order):
            padded_order[step, : len(indices)] = indices
        actions = np.zeros((rows, self._controller.num_decisions), np.int32)
        old_log_probs = np.zeros(rows, np.float32)
        padded_advantages = np.zeros(rows, np.float32)
        for i, entry in enumerate(entries):
            actions[i] = entry["actions"]
            old_log_probs[i] = entry["log_prob"]
            padded_advantages[i] = advantages[i]
        if self._train_function is None:
            self._train_function = self._make_train_function()
        stats = self._train_function(
            tf.constant(actions),
            tf.constant(old_log_probs),
            tf.constant(padded_advantages),
            tf.constant(padded_order),
            tf.constant(len(order), tf.int32),
        )
        self.last_update = {"steps": len(order), **{k: float(v) for k, v in stats.items()}}
        self.updates += 1
        # What `tfnas report` plots: the baseline and the policy's entropy after each update.
        self.history.append(
            {
                "update": self.updates,
                "baseline": self.baseline,
                "entropy": self.last_update["entropy"],
                "loss": self.last_update["loss"],
                "trial_ids": trial_ids,
            }
        )
        for trial_id in trial_ids:
            del self._samples[trial_id]
            del self._rewards[trial_id]
        self._save_controller()

    # State ----------------------------------------------------------------------------

    def get_state(self):
        """Returns the JSON-able state: keras-tuner's plus the controller's bookkeeping.

        Returns:
            Dict with the base Oracle's state and `"controller"`: the decision names,
            pending samples by trial id, rewards waiting for an update, the rollout
            buffer, baseline, number of updates (naming the weights file) and the state
            of the generator that draws the samples and minibatches.
        """
        state = super().get_state()
        state["controller"] = {
            "decisions": self._decisions,
            "samples": self._samples,
            "rewards": self._rewards,
            "buffer": self.buffer,
            "baseline": self.baseline,
            "updates": self.updates,
            "history": self.history,
            "rng": self._rng.bit_generator.state,
        }
        return state

    def set_state(self, state):
        """Restores the state written by `get_state`; weights load at first use.

        Args:
            state: Dict from `get_state`.
        """
        super().set_state(state)
        controller = state["controller"]
        self._decisions = controller["decisions"]
        self._samples = controller["samples"]
        self._rewards = controller["rewards"]
        self.buffer = controller.get("buffer", [])  # absent in states written before it existed
        self.baseline = controller["baseline"]
        self.updates = controller["updates"]
        self.history = controller.get("history", [])
        self._rng = np.random.default_rng()
        self._rng.bit_generator.state = controller["rng"]
        self._controller = None
        self._optimizer = None
        self._train_function = None

    def save(self):
        """Writes `oracle.json` atomically, then deletes superseded controller files."""
        super().save()
        for name in os.listdir(self._project_dir):
            if name.startswith("controller_") and name.endswith(".npz"):
                index = name[len("controller_") : -len(".npz")]
                if index.isdigit() and int(index) < self.updates:
                    os.remove(os.path.join(self._project_dir, name))
