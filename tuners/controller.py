"""LSTM controller that emits an architecture one decision at a time (Nekrasov et al., CVPR 2019, Section 3.2).

The controller of Nekrasov et al. (CVPR 2019) is a two-layer LSTM with 100 units whose
weights are drawn from U(-0.1, 0.1). At each step it reads the embedding of the decision it
took before (a learnable start vector at the first step), and a softmax head of that
decision's size gives the distribution of the next decision. tfnas reads the decisions from
a keras-tuner search space in the order the HyperModel declares them, so one controller
serves any HyperModel made of `hp.Choice`, `hp.Int`, `hp.Boolean` (and `hp.Fixed`, a
decision with one choice).

Sampling runs as one `tf.function` traced once per controller: the numpy generator the
caller passes draws one uniform number per decision and the graph turns each into a choice
by inverting the decision's cumulative distribution, so the generator alone fixes the
sequence of architectures (and a saved generator state resumes it) while no Python runs
per decision.

Example:

    controller = Controller([3, 2, 4])
    actions, log_probs = controller.sample(np.random.default_rng(0))
"""

import keras
import numpy as np
import tensorflow as tf
from keras_tuner.engine.hyperparameters import Boolean, Choice, Fixed, Int


def decision_values(hp):
    """Returns the values one search-space decision can take, in the controller's order.

    Args:
        hp: A keras-tuner hyperparameter: `Choice` (its values in declared order), `Int`
            (its values from `min_value` to `max_value` by `step`), `Boolean`
            (`[False, True]`) or `Fixed` (its one value).

    Returns:
        A list of the possible values.

    Raises:
        ValueError: if `hp` is of another type (e.g. `Float`), naming it.
    """
    if isinstance(hp, Boolean):
        return [False, True]
    if isinstance(hp, Choice):
        return list(hp.values)
    if isinstance(hp, Int):
        return sorted(set(int(v) for v in hp.values))
    if isinstance(hp, Fixed):
        return [hp.value]
    raise ValueError(
        f"hyperparameter '{hp.name}' is a {type(hp).__name__}, but PPOOracle's controller "
        "supports only Choice, Int, Boolean and Fixed hyperparameters: declare it with "
        "hp.Choice over a few values (e.g. hp.Choice('lr', [1e-3, 3e-3, 1e-2])) or hp.Fixed"
    )


#: Logit given to the choices of other decisions: exp() of it underflows to exactly 0.
_MASKED = -1e9


@keras.saving.register_keras_serializable(package="tfnas")
class Controller(keras.Model):
    """Autoregressive LSTM policy over a sequence of categorical decisions.

    The heads of all decisions are one `Dense` layer over the concatenated choices (decision
    i reads its own slice; the others are masked out of its softmax), and the embeddings
    of all fed-back decisions are one table (decision i's choices at their offset), which
    is the same policy as one head and one embedding per decision with a handful of
    variables instead of dozens: the Adam step and the gradient clip then cost a few ops.

    Args:
        num_choices: List of ints, the number of choices of each decision, in the order the
            decisions are emitted. Each must be at least 1.
        units: Int, units of each LSTM cell and size of the decision embeddings. Defaults
            to 100 (Nekrasov et al., CVPR 2019).
        layers: Int, number of stacked LSTM cells. Defaults to 2 (Nekrasov et al., CVPR 2019).
        init_range: Float, every weight is drawn from U(-init_range, init_range) when the
            controller is built. Defaults to 0.1 (authors' code).
        seed: Optional int, seed of that initialisation; the same seed gives the same
            weights.
        **kwargs: Passed to `keras.Model` (e.g. `name`).

    Raises:
        ValueError: if `num_choices` is empty or holds a count below 1, or `units`/`layers`
            is below 1.
    """

    def __init__(self, num_choices, units=100, layers=2, init_range=0.1, seed=None, **kwargs):
        super().__init__(**kwargs)
        num_choices = [int(n) for n in num_choices]
        if not num_choices or min(num_choices) < 1:
            raise ValueError(
                f"num_choices={num_choices}: expected a non-empty list of counts >= 1, one "
                "per decision of the search space"
            )
        if units < 1 or layers < 1:
            raise ValueError(f"units={units}, layers={layers}: both must be at least 1")
        self.num_choices = num_choices
        self.units = int(units)
        self.num_layers = int(layers)
        self.init_range = float(init_range)
        self.seed = seed
        self.offsets = np.concatenate([[0], np.cumsum(num_choices)[:-1]]).astype("int32")
        total = int(sum(num_choices))
        # mask[i, j]: column j of the heads belongs to decision i.
        self.mask = np.zeros((len(num_choices), total), bool)
        for i, (offset, n) in enumerate(zip(self.offsets, num_choices)):
            self.mask[i, offset : offset + n] = True
        self.cells = [keras.layers.LSTMCell(self.units, name=f"lstm_{i}") for i in range(layers)]
        # The last decision is never fed back, so the table has no rows for it.
        self.embedding = keras.layers.Embedding(max(1, total - num_choices[-1]), self.units, name="embedding")
        self.head = keras.layers.Dense(total, name="heads")
        self._sample_function = None

    def build(self, input_shape=None):
        """Creates the weights and draws them from U(-init_range, init_range).

        Args:
            input_shape: Ignored; the shapes follow from `num_choices` and `units`.
        """
        self.start = self.add_weight(shape=(1, self.units), name="start")
        for cell in self.cells:
            cell.build((None, self.units))
        self.embedding.build((None,))
        self.head.build((None, self.units))
        rng = np.random.default_rng(self.seed)
        for variable in self.weights:
            variable.assign(rng.uniform(-self.init_range, self.init_range, variable.shape).astype("float32"))
        self.built = True

    @property
    def num_decisions(self):
        """Int, the number of decisions in one architecture."""
        return len(self.num_choices)

    def _cells(self, inputs, states):
        """Runs the stacked cells once; returns the top output and the new states."""
        x = inputs
        new_states = []
        for cell, state in zip(self.cells, states):
            x, state = cell(x, state)
            new_states.append(state)
        return x, new_states

    def _masked_logits(self, outputs, index):
        """Heads on LSTM outputs `(..., units)`, all but decision `index`'s columns masked."""
        mask = tf.gather(tf.constant(self.mask), index)
        return tf.where(mask, self.head(outputs), _MASKED)

    def _initial(self, batch_size):
        zeros = tf.zeros((batch_size, self.units))
        states = [[zeros, zeros] for _ in self.cells]
        return tf.tile(self.start, [batch_size, 1]), states

    def _fused_layers(self, inputs):
        """Runs the stacked cells over a whole known sequence, one fused op per layer.

        `tf.raw_ops.BlockLSTM` computes a layer over every step in one CPU (or GPU) kernel
        and has a fused gradient, where a loop of `LSTMCell` calls costs a dozen small ops
        per decision in each direction; the PPO update is many sequential steps of this
        pass, so op count, not arithmetic, sets its cost. The cells' Keras weights (gates
        i, f, c, o) are reordered to BlockLSTM's i, c, f, o with a forget bias of 0, which
        is exactly `LSTMCell`'s function (sigmoid gates, tanh), checked against the cells
        by the tests. `BlockLSTMV2` takes Keras' order directly, but TensorFlow 2.21
        registers it with the V1 gradient kernel (`rnn_grad.py`), which reads the gates in
        V1's order, and its gradients came out wrong here.

        Args:
            inputs: Float tensor `(steps, batch, units)`, time-major.

        Returns:
            Float tensor `(steps, batch, units)`: the top cell's outputs.
        """
        zeros = tf.zeros(tf.shape(inputs)[1:])
        steps = tf.cast(tf.shape(inputs)[0], tf.int64)
        no_peephole = tf.zeros([self.units])
        x = inputs
        for cell in self.cells:
            i, f, c, o = tf.split(tf.concat([cell.kernel, cell.recurrent_kernel], axis=0), 4, axis=1)
            bi, bf, bc, bo = tf.split(cell.bias, 4)
            x = tf.raw_ops.BlockLSTM(
                seq_len_max=steps,
                x=x,
                cs_prev=zeros,
                h_prev=zeros,
                w=tf.concat([i, c, f, o], axis=1),
                wci=no_peephole,
                wcf=no_peephole,
                wco=no_peephole,
                b=tf.concat([bi, bc, bf, bo], axis=0),
                forget_bias=0.0,
                cell_clip=-1.0,
                use_peephole=False,
            )[-1]
        return x

    def call(self, actions):
        """Teacher-forced pass: the logits of every decision given the earlier actions.

        The embeddings of the fed-back actions are looked up at once, the stacked cells
        run over the decisions as one fused op per layer (`_fused_layers`), and the heads
        apply to all outputs at once.

        Args:
            actions: Int tensor `(batch, num_decisions)` of choice indices.

        Returns:
            Float tensor `(batch, num_decisions, sum(num_choices))`: row i holds decision
            i's logits in its columns (`offsets[i]` onwards) and -1e9 elsewhere.
        """
        actions = tf.cast(actions, tf.int32)
        first, _ = self._initial(tf.shape(actions)[0])
        inputs = first[None]
        if self.num_decisions > 1:
            fed = self.embedding(actions[:, :-1] + self.offsets[:-1])
            inputs = tf.concat([inputs, tf.transpose(fed, [1, 0, 2])], axis=0)
        outputs = tf.transpose(self._fused_layers(inputs), [1, 0, 2])
        return tf.where(tf.constant(self.mask), self.head(outputs), _MASKED)

    def evaluate_actions(self, actions):
        """Log-probability and entropy of whole architectures under the current weights.

        One teacher-forced pass serves both (the PPO loss needs the first, its entropy
        bonus the second).

        Args:
            actions: Int tensor `(batch, num_decisions)` of choice indices.

        Returns:
            A tuple of float tensors `(batch,)`: the sum over decisions of
            log pi(action_i | earlier actions), and the sum over decisions of the entropy of
            each decision's distribution given the earlier actions.
        """
        actions = tf.cast(actions, tf.int32)
        log_p = tf.nn.log_softmax(self(actions))  # masked columns get probability 0
        taken = tf.gather(log_p, actions + self.offsets, axis=2, batch_dims=2)
        entropy = -tf.reduce_sum(tf.exp(log_p) * log_p, axis=[1, 2])
        return tf.reduce_sum(taken, axis=1), entropy

    def log_prob(self, actions):
        """Log-probability of whole architectures under the current weights.

        Args:
            actions: Int tensor `(batch, num_decisions)` of choice indices.

        Returns:
            Float tensor `(batch,)`: the sum over decisions of log pi(action_i | earlier).
        """
        return self.evaluate_actions(actions)[0]

    def entropy(self, actions):
        """Entropy of the policy along given architectures.

        Args:
            actions: Int tensor `(batch, num_decisions)` of choice indices.

        Returns:
            Float tensor `(batch,)`: the sum over decisions of the entropy of each
            decision's distribution given the earlier actions.
        """
        return self.evaluate_actions(actions)[1]

    def decide(self, choose):
        """Emits one architecture, letting `choose` pick each decision from its distribution.

        Runs eagerly (`choose` is Python); `sample` is the traced path for search.

        Args:
            choose: Callable `(index, probs) -> int`: given the decision index and its
                probabilities (a float64 numpy vector summing to 1), returns the choice.

        Returns:
            A tuple `(actions, log_probs, probs)`: lists with, per decision, the chosen
            index, its log-probability, and the full probability vector.
        """
        if not self.built:
            self.build()
        x, states = self._initial(1)
        actions, log_probs, all_probs = [], [], []
        for i, n in enumerate(self.num_choices):
            output, states = self._cells(x, states)
            offset = self.offsets[i]
            log_p = tf.nn.log_softmax(self._masked_logits(output, i))[0, offset : offset + n]
            log_p = log_p.numpy().astype("float64")
            probs = np.exp(log_p)
            probs /= probs.sum()
            action = int(choose(i, probs))
            if not 0 <= action < n:
                raise ValueError(f"decision {i} got choice {action}, expected 0..{n - 1}")
            actions.append(action)
            log_probs.append(float(log_p[action]))
            all_probs.append(probs)
            if i < self.num_decisions - 1:
                x = self.embedding(tf.constant([offset + action]))
        return actions, log_probs, all_probs

    def sample_from_uniforms(self, uniforms):
        """Samples one architecture, decision i taken by inverting its CDF at `uniforms[i]`.

        Plain TensorFlow (a `tf.while_loop` over the decisions), so it runs inside
        `tf.function` (see `sample`). With `u` drawn from U(0, 1), the chosen index is the
        number of the decision's cumulative probabilities below `u`, which is a draw from
        its distribution.

        Args:
            uniforms: Float tensor `(num_decisions,)` of numbers in [0, 1).

        Returns:
            A tuple `(actions, log_probs)` of tensors `(num_decisions,)`: int32 choice
            indices and float32 log-probabilities of each choice given the earlier ones.
        """
        uniforms = tf.cast(tf.reshape(uniforms, [-1]), tf.float32)
        first, states = self._initial(1)
        offsets = tf.constant(self.offsets)
        sizes = tf.constant(self.num_choices, tf.int32)
        mask = tf.constant(self.mask)
        feedable = max(1, self.embedding.input_dim) - 1

        def body(step, inputs, states, actions, log_probs):
            output, states = self._cells(inputs, states)
            log_p = tf.nn.log_softmax(self._masked_logits(output, step))[0]
            below = tf.logical_and(mask[step], tf.math.cumsum(tf.exp(log_p)) < uniforms[step])
            # Rounding can leave the last cumulative probability just under u.
            action = tf.minimum(tf.reduce_sum(tf.cast(below, tf.int32)), sizes[step] - 1)
            column = offsets[step] + action
            inputs = self.embedding(tf.minimum(column, feedable)[None])
            return (
                step + 1,
                inputs,
                states,
                actions.write(step, action),
                log_probs.write(step, log_p[column]),
            )

        _, _, _, actions, log_probs = tf.while_loop(
            lambda step, *_: step < self.num_decisions,
            body,
            (
                tf.constant(0),
                first,
                states,
                tf.TensorArray(tf.int32, size=self.num_decisions),
                tf.TensorArray(tf.float32, size=self.num_decisions),
            ),
            maximum_iterations=self.num_decisions,
        )
        return actions.stack(), log_probs.stack()

    def sample(self, rng):
        """Samples one architecture from the policy (one call of a traced `tf.function`).

        Args:
            rng: A `numpy.random.Generator`; it draws `num_decisions` uniform numbers, so
                its state advances and a saved and restored generator continues the same
                sequence.

        Returns:
            A tuple `(actions, log_probs)`: lists with, per decision, the sampled index
            (int) and its log-probability (float) under the current weights.
        """
        if not self.built:
            self.build()
        if self._sample_function is None:
            self._sample_function = tf.function(
                self.sample_from_uniforms,
                input_signature=[tf.TensorSpec([self.num_decisions], tf.float32)],
            )
        uniforms = rng.random(self.num_decisions).astype("float32")
        actions, log_probs = self._sample_function(tf.constant(uniforms))
        return [int(a) for a in actions.numpy()], [float(p) for p in log_probs.numpy()]

    def get_config(self):
        """Returns the constructor arguments."""
        config = super().get_config()
        config.update(
            num_choices=self.num_choices,
            units=self.units,
            layers=self.num_layers,
            init_range=self.init_range,
            seed=self.seed,
        )
        return config
