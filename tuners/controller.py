"""LSTM controller that emits an architecture one decision at a time (seed 000, Section 3.2).

The controller of Nekrasov et al. (CVPR 2019) is a two-layer LSTM with 100 units whose
weights are drawn from U(-0.1, 0.1). At each step it reads the embedding of the decision it
took before (a learnable start vector at the first step), and a softmax head of that
decision's size gives the distribution of the next decision. tfnas reads the decisions from
a keras-tuner search space in the order the HyperModel declares them, so one controller
serves any HyperModel made of `hp.Choice`, `hp.Int`, `hp.Boolean` (and `hp.Fixed`, a
decision with one choice).

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


@keras.saving.register_keras_serializable(package="tfnas")
class Controller(keras.Model):
    """Autoregressive LSTM policy over a sequence of categorical decisions.

    Args:
        num_choices: List of ints, the number of choices of each decision, in the order the
            decisions are emitted. Each must be at least 1.
        units: Int, units of each LSTM cell and size of the decision embeddings. Defaults
            to 100 (seed 000).
        layers: Int, number of stacked LSTM cells. Defaults to 2 (seed 000).
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
        self.cells = [keras.layers.LSTMCell(self.units, name=f"lstm_{i}") for i in range(layers)]
        # The last decision is never fed back, so it has no embedding.
        self.embeddings = [
            keras.layers.Embedding(n, self.units, name=f"embedding_{i}")
            for i, n in enumerate(num_choices[:-1])
        ]
        self.heads = [keras.layers.Dense(n, name=f"head_{i}") for i, n in enumerate(num_choices)]

    def build(self, input_shape=None):
        """Creates the weights and draws them from U(-init_range, init_range).

        Args:
            input_shape: Ignored; the shapes follow from `num_choices` and `units`.
        """
        self.start = self.add_weight(shape=(1, self.units), name="start")
        for cell in self.cells:
            cell.build((None, self.units))
        for embedding in self.embeddings:
            embedding.build((None,))
        for head in self.heads:
            head.build((None, self.units))
        rng = np.random.default_rng(self.seed)
        for variable in self.weights:
            variable.assign(
                rng.uniform(-self.init_range, self.init_range, variable.shape).astype("float32")
            )
        self.built = True

    @property
    def num_decisions(self):
        """Int, the number of decisions in one architecture."""
        return len(self.num_choices)

    def _step(self, inputs, states, index):
        """Runs the stacked cells once and returns decision `index`'s logits and new states."""
        x = inputs
        new_states = []
        for cell, state in zip(self.cells, states):
            x, state = cell(x, state)
            new_states.append(state)
        return self.heads[index](x), new_states

    def _initial(self, batch_size):
        zeros = tf.zeros((batch_size, self.units))
        states = [[zeros, zeros] for _ in self.cells]
        return tf.tile(self.start, [batch_size, 1]), states

    def call(self, actions):
        """Teacher-forced pass: the logits of every decision given the earlier actions.

        Args:
            actions: Int tensor `(batch, num_decisions)` of choice indices.

        Returns:
            A list of `num_decisions` float tensors; item i is `(batch, num_choices[i])`.
        """
        actions = tf.cast(actions, tf.int32)
        x, states = self._initial(tf.shape(actions)[0])
        logits = []
        for i in range(self.num_decisions):
            step_logits, states = self._step(x, states, i)
            logits.append(step_logits)
            if i < len(self.embeddings):
                x = self.embeddings[i](actions[:, i])
        return logits

    def log_prob(self, actions):
        """Log-probability of whole architectures under the current weights.

        Args:
            actions: Int tensor `(batch, num_decisions)` of choice indices.

        Returns:
            Float tensor `(batch,)`: the sum over decisions of log pi(action_i | earlier).
        """
        actions = tf.cast(actions, tf.int32)
        total = 0.0
        for i, logits in enumerate(self(actions)):
            log_p = tf.nn.log_softmax(logits)
            total += tf.gather(log_p, actions[:, i], axis=1, batch_dims=1)
        return total

    def entropy(self, actions):
        """Entropy of the policy along given architectures.

        Args:
            actions: Int tensor `(batch, num_decisions)` of choice indices.

        Returns:
            Float tensor `(batch,)`: the sum over decisions of the entropy of each
            decision's distribution given the earlier actions.
        """
        total = 0.0
        for logits in self(actions):
            log_p = tf.nn.log_softmax(logits)
            total += -tf.reduce_sum(tf.exp(log_p) * log_p, axis=1)
        return total

    def decide(self, choose):
        """Emits one architecture, letting `choose` pick each decision from its distribution.

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
            logits, states = self._step(x, states, i)
            log_p = tf.nn.log_softmax(logits)[0].numpy().astype("float64")
            probs = np.exp(log_p)
            probs /= probs.sum()
            action = int(choose(i, probs))
            if not 0 <= action < n:
                raise ValueError(f"decision {i} got choice {action}, expected 0..{n - 1}")
            actions.append(action)
            log_probs.append(float(log_p[action]))
            all_probs.append(probs)
            if i < len(self.embeddings):
                x = self.embeddings[i](tf.constant([action]))
        return actions, log_probs, all_probs

    def sample(self, rng):
        """Samples one architecture from the policy.

        Args:
            rng: A `numpy.random.Generator`; its state advances, so a saved and restored
                generator continues the same sequence.

        Returns:
            A tuple `(actions, log_probs)`: per decision, the sampled index and its
            log-probability under the current weights.
        """
        actions, log_probs, _ = self.decide(lambda i, probs: rng.choice(len(probs), p=probs))
        return actions, log_probs

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
