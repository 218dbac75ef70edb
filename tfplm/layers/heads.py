"""Output heads: masked-LM, pooler, classification/regression and span labeling."""

import keras
from keras import ops

from tfplm.layers.dense import Dense

from tfplm.layers.attention import clone_initializer, default_initializer
from tfplm.layers.transformer import get_activation


@keras.saving.register_keras_serializable(package="tfplm")
class MaskedLMHead(keras.layers.Layer):
    """BERT's masked-LM head: transform + LayerNorm + tied projection + bias.

    Only the masked positions are gathered before the vocabulary projection, so
    a batch pays for `max_predictions_per_seq` rows, not `seq_length`.

    Args:
        embedding: the model's `TextEmbedding`; its token matrix is the output
            projection (weight tying). Not serialized: models pass it again.
        activation: activation of the transform ("gelu" in BERT).
        layer_norm_epsilon: LayerNorm epsilon.

    Call args:
        sequence_output: [batch, length, hidden].
        masked_positions: int [batch, predictions]; None for every position.

    Returns:
        logits [batch, predictions, vocab_size].

    Example:
    >>> from tfplm.layers import TextEmbedding
    >>> embedding = TextEmbedding(vocab_size=100, hidden_size=16)
    >>> head = MaskedLMHead(embedding)
    >>> positions = keras.ops.convert_to_tensor([[1, 3]])
    >>> tuple(head(keras.ops.zeros((1, 5, 16)), positions).shape)
    (1, 2, 100)
    """

    def __init__(
        self,
        embedding,
        activation="gelu",
        layer_norm_epsilon=1e-12,
        kernel_initializer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.embedding = embedding
        self.activation = activation
        self.layer_norm_epsilon = layer_norm_epsilon
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or default_initializer()
        )

    def build(self, sequence_output_shape, masked_positions_shape=None):
        if not self.embedding.built:  # its token matrix is this head's output projection
            self.embedding.build()
        hidden_size = sequence_output_shape[-1]
        self.transform = Dense(
            hidden_size,
            activation=get_activation(self.activation),
            kernel_initializer=clone_initializer(self.kernel_initializer),
            dtype=self.dtype_policy,
            name="transform",
        )
        self.transform.build((None, None, hidden_size))
        self.layer_norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="layer_norm"
        )
        self.layer_norm.build((None, None, hidden_size))
        self.bias = self.add_weight(
            name="bias", shape=(self.embedding.vocab_size,), initializer="zeros"
        )
        self.built = True

    def call(self, sequence_output, masked_positions=None):
        if masked_positions is not None:
            sequence_output = ops.take_along_axis(
                sequence_output, ops.cast(masked_positions, "int32")[:, :, None], axis=1
            )
        hidden = self.layer_norm(self.transform(sequence_output))
        return self.embedding.logits(hidden) + ops.cast(self.bias, hidden.dtype)

    def compute_output_shape(self, sequence_output_shape, masked_positions_shape=None):
        length = (masked_positions_shape or sequence_output_shape)[1]
        return (sequence_output_shape[0], length, self.embedding.vocab_size)

    def get_config(self):
        config = super().get_config()
        config.update(
            activation=self.activation,
            layer_norm_epsilon=self.layer_norm_epsilon,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config


@keras.saving.register_keras_serializable(package="tfplm")
class Pooler(keras.layers.Layer):
    """BERT's pooler: dense + tanh on the first ([CLS]) token.

    Call args:
        sequence_output: [batch, length, hidden].

    Returns:
        [batch, hidden].

    Example:
    >>> tuple(Pooler()(keras.ops.zeros((2, 5, 16))).shape)
    (2, 16)
    """

    def __init__(self, kernel_initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or default_initializer()
        )

    def build(self, sequence_output_shape):
        self.dense = Dense(
            sequence_output_shape[-1],
            activation="tanh",
            kernel_initializer=clone_initializer(self.kernel_initializer),
            dtype=self.dtype_policy,
            name="dense",
        )
        self.dense.build((None, sequence_output_shape[-1]))
        self.built = True

    def call(self, sequence_output):
        return self.dense(sequence_output[:, 0, :])

    def compute_output_shape(self, sequence_output_shape):
        return (sequence_output_shape[0], sequence_output_shape[-1])

    def get_config(self):
        config = super().get_config()
        config["kernel_initializer"] = keras.initializers.serialize(self.kernel_initializer)
        return config


@keras.saving.register_keras_serializable(package="tfplm")
class ClassificationHead(keras.layers.Layer):
    """Dropout + dense on a pooled vector: NSP, sentence classification, regression.

    `num_classes=1` gives a regression score (STS-B); the output is always the
    raw logits/score, float32 even under mixed precision.

    Args:
        num_classes: number of classes (1 for regression).
        dropout: dropout rate before the projection.
        kernel_initializer: initializer of the projection kernel.

    Example:
    >>> logits = ClassificationHead(num_classes=3)(keras.ops.zeros((2, 16)))
    >>> tuple(logits.shape), str(logits.dtype)
    ((2, 3), "<dtype: 'float32'>")
    """

    def __init__(self, num_classes, dropout=0.0, kernel_initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = num_classes
        self.dropout = dropout
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or default_initializer()
        )

    def build(self, pooled_shape):
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        self.dense = Dense(
            self.num_classes,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            dtype="float32",
            name="logits",
        )
        self.dense.build(pooled_shape)
        self.built = True

    def call(self, pooled, training=None):
        return self.dense(self.dropout_layer(pooled, training=training))

    def compute_output_shape(self, pooled_shape):
        return (pooled_shape[0], self.num_classes)

    def compute_output_spec(self, pooled, training=None):
        # float32 logits, whatever the policy (Keras would assume compute_dtype).
        return keras.KerasTensor(self.compute_output_shape(pooled.shape), dtype="float32")

    def get_config(self):
        config = super().get_config()
        config.update(
            num_classes=self.num_classes,
            dropout=self.dropout,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config


@keras.saving.register_keras_serializable(package="tfplm")
class SpanHead(keras.layers.Layer):
    """Start/end logits over the sequence, for extractive QA (SQuAD-style spans).

    One dense layer with two outputs scores every token as the answer's start
    and as its end (BERT's SQuAD head); float32 even under mixed precision.

    Args:
        kernel_initializer: initializer of the [hidden, 2] kernel.

    Call args:
        sequence_output: [batch, length, hidden].
        padding_mask: optional [batch, length], 1 where an answer may start or
            end; elsewhere (padding, or the question) the logit is -1e9, so
            its softmax probability is 0.

    Returns:
        (start_logits, end_logits), each float32 [batch, length].

    Example:
    >>> start, end = SpanHead()(keras.ops.zeros((2, 5, 16)),
    ...                         padding_mask=keras.ops.convert_to_tensor([[1, 1, 1, 0, 0]] * 2))
    >>> tuple(start.shape), float(end[0, 4])
    ((2, 5), -1000000000.0)
    """

    def __init__(self, kernel_initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or default_initializer()
        )

    def build(self, sequence_output_shape, padding_mask_shape=None):
        self.dense = Dense(
            2,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            dtype="float32",
            name="span_logits",
        )
        self.dense.build(sequence_output_shape)
        self.built = True

    def call(self, sequence_output, padding_mask=None):
        logits = self.dense(sequence_output)
        if padding_mask is not None:
            logits = ops.where(ops.cast(padding_mask, "bool")[:, :, None], logits, -1e9)
        return logits[:, :, 0], logits[:, :, 1]

    def compute_output_shape(self, sequence_output_shape, padding_mask_shape=None):
        shape = tuple(sequence_output_shape[:2])
        return shape, shape

    def compute_output_spec(self, sequence_output, padding_mask=None):
        # float32 logits, whatever the policy (Keras would assume compute_dtype).
        shape = tuple(sequence_output.shape[:2])
        return keras.KerasTensor(shape, dtype="float32"), keras.KerasTensor(shape, dtype="float32")

    def get_config(self):
        config = super().get_config()
        config["kernel_initializer"] = keras.initializers.serialize(self.kernel_initializer)
        return config
