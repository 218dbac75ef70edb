"""Token + position (+ segment) embeddings, with the tied output projection."""

import math

import keras
import tensorflow as tf
from keras import ops

from tfplm.layers.attention import clone_initializer, default_initializer


def sinusoidal_positions(length, width, start_index=0):
    """The fixed sin/cos position encodings of Vaswani et al. (2017), [length, width].

    Column i < ceil(width/2) is sin(pos / 10000^(2i/width)) and column
    ceil(width/2) + i is cos(pos / 10000^(2i/width)): the paper's (sin, cos)
    pairs with all sines first (as Marian's sinusoidal embedding in Hugging
    Face transformers), not interleaved as the paper writes them.

    Args:
        length: number of positions.
        width: encoding size.
        start_index: the first position (for cached decoding).

    Returns:
        float32 [length, width].

    Example:
    >>> keras.ops.convert_to_numpy(sinusoidal_positions(2, 4)).astype(float).round(3).tolist()
    [[0.0, 0.0, 1.0, 1.0], [0.841, 0.01, 0.54, 1.0]]
    """
    positions = ops.cast(ops.arange(length) + start_index, "float32")[:, None]
    timescales = ops.exp(
        ops.cast(ops.arange(0, width, 2), "float32") * (-math.log(10000.0) / width)
    )
    angles = positions * timescales[None, :]
    return ops.concatenate([ops.sin(angles), ops.cos(angles)], axis=-1)[:, :width]


@keras.saving.register_keras_serializable(package="tfplm")
class TextEmbedding(keras.layers.Layer):
    """Sum of token, position and (optionally) segment embeddings.

    BERT: learned positions, 2 segment types, LayerNorm + dropout.
    GPT-2: learned positions, no segments, no LayerNorm.
    Vaswani et al.: sinusoidal positions, embeddings scaled by sqrt(hidden).

    Args:
        vocab_size: number of token ids.
        hidden_size: embedding width.
        max_length: longest sequence (learned positions only).
        type_vocab_size: number of segment types; 0 for none.
        position_embedding: "learned" or "sinusoidal".
        scale: multiply token embeddings by sqrt(hidden_size).
        normalize: apply LayerNorm to the sum.
        layer_norm_epsilon: LayerNorm epsilon.
        dropout: dropout rate on the output.

    Call args:
        token_ids: int [batch, length].
        type_ids: int [batch, length], when type_vocab_size > 0.
        start_index: absolute position of the first token (for cached decoding).
        reverse: if True, `token_ids` are hidden states [batch, length, hidden]
            and the call returns their vocabulary logits through the tied
            token embedding (the output layer of GPT and seq2seq models).

    Example:
    >>> embedding = TextEmbedding(vocab_size=100, hidden_size=16, max_length=32)
    >>> tuple(embedding(keras.ops.ones((2, 5), "int32")).shape)
    (2, 5, 16)
    >>> tuple(embedding(keras.ops.zeros((2, 5, 16)), reverse=True).shape)  # tied logits
    (2, 5, 100)
    """

    def __init__(
        self,
        vocab_size,
        hidden_size,
        max_length=512,
        type_vocab_size=0,
        position_embedding="learned",
        scale=False,
        normalize=True,
        layer_norm_epsilon=1e-12,
        dropout=0.1,
        embeddings_initializer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if position_embedding not in ("learned", "sinusoidal"):
            raise ValueError(
                f"position_embedding={position_embedding!r}; expected 'learned' or 'sinusoidal'"
            )
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.max_length = max_length
        self.type_vocab_size = type_vocab_size
        self.position_embedding = position_embedding
        self.scale = scale
        self.normalize = normalize
        self.layer_norm_epsilon = layer_norm_epsilon
        self.dropout = dropout
        self.embeddings_initializer = keras.initializers.get(
            embeddings_initializer or default_initializer()
        )

    def build(self, token_ids_shape=None, type_ids_shape=None):
        def embedding(name, rows):
            layer = keras.layers.Embedding(
                rows,
                self.hidden_size,
                embeddings_initializer=clone_initializer(self.embeddings_initializer),
                dtype=self.dtype_policy,
                name=name,
            )
            layer.build(None)
            return layer

        self.token_embedding = embedding("token_embedding", self.vocab_size)
        if self.position_embedding == "learned":
            self.position_embedding_layer = embedding("position_embedding", self.max_length)
        if self.type_vocab_size:
            self.type_embedding = embedding("type_embedding", self.type_vocab_size)
        if self.normalize:
            self.layer_norm = keras.layers.LayerNormalization(
                epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name="layer_norm"
            )
            self.layer_norm.build((None, None, self.hidden_size))
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)
        self.built = True

    def call(self, token_ids, type_ids=None, start_index=0, reverse=False, training=None):
        if reverse:
            return self.logits(token_ids)
        x = self.token_embedding(token_ids)
        if self.scale:
            x = x * ops.cast(math.sqrt(self.hidden_size), x.dtype)
        length = ops.shape(token_ids)[1]
        if self.position_embedding == "learned":
            positions = self.position_embedding_layer(ops.arange(length) + start_index)
        else:
            positions = ops.cast(
                sinusoidal_positions(length, self.hidden_size, start_index), x.dtype
            )
        x = x + positions[None, :, :]
        if self.type_vocab_size:
            if type_ids is None:
                type_ids = ops.zeros_like(token_ids)
            x = x + self.type_embedding(type_ids)
        if self.normalize:
            x = self.layer_norm(x)
        return self.dropout_layer(x, training=training)

    def logits(self, hidden):
        """Projects hidden states onto the vocabulary with the tied token embedding.

        Call it inside a layer's `call`; a functional model must use
        `embedding(hidden, reverse=True)` so the live weights stay in the graph.

        `hidden` is [batch, length, hidden], or [batch, hidden] for one token
        a row (a decoding step), which returns [batch, vocab]. Per token,
        reading the [vocab, hidden] table is a large part of a decoding step,
        and how fast a product reads it depends on its form (TF 2.21's oneDNN
        kernels, gpt2_small's 50257 x 768 table on a 2-core AVX-512 CPU): at
        batch 1 a matrix-vector MatMul takes 9-12 ms where the batched
        product takes 13-21 ms; at batch 8 MatMul takes 35-45 ms where the
        batched product, with `transpose_b` rather than a transposed operand,
        takes 18 ms (47 ms through `ops.transpose`). One-token rows therefore
        pick the product by batch size. In bfloat16 (AMX) both lose to
        `table @ hidden^T`, [vocab, batch], transposed after (gpt2_small's
        table: 6.5 against 8.4 ms at batch 1, 5.6 against 8.3 at batch 8;
        oneDNN's bfloat16 kernels stream a [large, k] @ [k, small] product at
        memory speed but not an [small, k] @ [k, large] one), so bfloat16 rows
        always take it.
        """
        table = ops.cast(self.token_embedding.embeddings, hidden.dtype)
        if len(hidden.shape) == 3:
            return ops.matmul(hidden, ops.transpose(table))
        if hidden.dtype == "bfloat16":
            return tf.transpose(tf.matmul(table, hidden, transpose_b=True))

        def matrix_vector():
            return tf.matmul(hidden, table, transpose_b=True)

        def batched():
            return tf.matmul(hidden[:, None, :], table, transpose_b=True)[:, 0, :]

        batch = hidden.shape[0]
        if batch is not None:
            return matrix_vector() if batch == 1 else batched()
        return tf.cond(tf.shape(hidden)[0] == 1, matrix_vector, batched)

    def get_config(self):
        config = super().get_config()
        config.update(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            max_length=self.max_length,
            type_vocab_size=self.type_vocab_size,
            position_embedding=self.position_embedding,
            scale=self.scale,
            normalize=self.normalize,
            layer_norm_epsilon=self.layer_norm_epsilon,
            dropout=self.dropout,
            embeddings_initializer=keras.initializers.serialize(self.embeddings_initializer),
        )
        return config
