"""Transformer blocks: the feed-forward network, encoder block and decoder block.

Both blocks support post-LN (BERT, Vaswani et al.) and pre-LN (GPT-2):

    post-LN:  x = norm(x + dropout(sublayer(x)))
    pre-LN:   x = x + dropout(sublayer(norm(x)))
"""

import keras
from keras import ops

from tfplm.layers.dense import Dense

from tfplm.layers.attention import MultiHeadAttention, clone_initializer, default_initializer
from tfplm.layers.masks import causal_attention_mask, padding_attention_mask


def gelu_approximate(x):
    """GELU with the tanh approximation (GPT-2's `gelu_new`)."""
    return keras.activations.gelu(x, approximate=True)


ACTIVATIONS = {
    "gelu": keras.activations.gelu,  # exact (erf) GELU, as in BERT
    "gelu_approximate": gelu_approximate,
    "relu": keras.activations.relu,
}


def get_activation(name):
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; expected one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]


@keras.saving.register_keras_serializable(package="tfplm")
class FeedForward(keras.layers.Layer):
    """Position-wise feed-forward network: dense → activation → dense.

    Args:
        intermediate_size: width of the hidden layer (4 × hidden in BERT/GPT).
        activation: "gelu", "gelu_approximate" or "relu".
        kernel_initializer: initializer of both kernels.

    Example:
    >>> feed_forward = FeedForward(intermediate_size=64)
    >>> tuple(feed_forward(keras.ops.zeros((1, 4, 16))).shape)
    (1, 4, 16)
    """

    def __init__(self, intermediate_size, activation="gelu", kernel_initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.intermediate_size = intermediate_size
        self.activation = activation
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or default_initializer()
        )

    def build(self, input_shape):
        self._activation_fn = get_activation(self.activation)
        # CPUs compute bfloat16 elementwise ops one element at a time: GELU
        # (about ten of them, forward and backward) took twice as long in
        # bfloat16 as cast to float32, computed, cast back (BENCHMARKS.md).
        # Otherwise the activation belongs to the dense layer, where
        # TensorFlow fuses it into the matmul.
        self._activation_in_float32 = self.compute_dtype == "bfloat16"
        self.intermediate_dense = Dense(
            self.intermediate_size,
            activation=None if self._activation_in_float32 else self._activation_fn,
            kernel_initializer=clone_initializer(self.kernel_initializer),
            dtype=self.dtype_policy,
            name="intermediate",
        )
        self.intermediate_dense.build(input_shape)
        self.output_dense = Dense(
            input_shape[-1],
            kernel_initializer=clone_initializer(self.kernel_initializer),
            dtype=self.dtype_policy,
            name="output",
        )
        self.output_dense.build((*input_shape[:-1], self.intermediate_size))
        self.built = True

    def call(self, x):
        hidden = self.intermediate_dense(x)
        if self._activation_in_float32:
            hidden = ops.cast(self._activation_fn(ops.cast(hidden, "float32")), hidden.dtype)
        return self.output_dense(hidden)

    def get_config(self):
        config = super().get_config()
        config.update(
            intermediate_size=self.intermediate_size,
            activation=self.activation,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config


class _TransformerBlock(keras.layers.Layer):
    """What encoder and decoder blocks share: sublayers wrapped in residual + norm."""

    def __init__(
        self,
        num_heads,
        intermediate_size,
        activation="gelu",
        dropout=0.1,
        attention_dropout=0.1,
        layer_norm_epsilon=1e-12,
        norm_first=False,
        kernel_initializer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.intermediate_size = intermediate_size
        self.activation = activation
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.norm_first = norm_first
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or default_initializer()
        )

    def _attention(self, name, hidden_size):
        if hidden_size % self.num_heads:
            raise ValueError(
                f"hidden size {hidden_size} is not divisible by num_heads={self.num_heads}"
            )
        return MultiHeadAttention(
            self.num_heads,
            hidden_size // self.num_heads,
            dropout=self.attention_dropout,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name=name,
        )

    def _norm(self, name, input_shape):
        norm = keras.layers.LayerNormalization(
            epsilon=self.layer_norm_epsilon, dtype=self.dtype_policy, name=name
        )
        norm.build(input_shape)
        return norm

    def _build_feed_forward(self, input_shape):
        self.feed_forward = FeedForward(
            self.intermediate_size,
            self.activation,
            kernel_initializer=self.kernel_initializer,
            dtype=self.dtype_policy,
            name="feed_forward",
        )
        self.feed_forward.build(input_shape)
        self.feed_forward_norm = self._norm("feed_forward_norm", input_shape)
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype=self.dtype_policy)

    def _residual(self, x, sublayer, norm, training):
        """Applies `sublayer` with a residual connection; returns (x, extras)."""
        outputs = sublayer(norm(x) if self.norm_first else x)
        hidden, extras = (outputs[0], outputs[1:]) if isinstance(outputs, tuple) else (outputs, ())
        x = x + self.dropout_layer(hidden, training=training)
        return (x if self.norm_first else norm(x)), extras

    def _feed_forward(self, x, training):
        return self._residual(x, self.feed_forward, self.feed_forward_norm, training)[0]

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            intermediate_size=self.intermediate_size,
            activation=self.activation,
            dropout=self.dropout,
            attention_dropout=self.attention_dropout,
            layer_norm_epsilon=self.layer_norm_epsilon,
            norm_first=self.norm_first,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config


@keras.saving.register_keras_serializable(package="tfplm")
class TransformerEncoderBlock(_TransformerBlock):
    """Bidirectional self-attention + feed-forward (one BERT layer).

    Args:
        num_heads: attention heads; the hidden size must be divisible by it.
        intermediate_size: feed-forward width.
        activation: feed-forward activation ("gelu", "gelu_approximate", "relu").
        dropout: dropout on each sublayer's output.
        attention_dropout: dropout on the attention probabilities.
        layer_norm_epsilon: LayerNorm epsilon (1e-12 in BERT, 1e-5 in GPT-2).
        norm_first: pre-LN (GPT-2) instead of post-LN (BERT).

    Call args:
        x: [batch, length, hidden].
        attention_mask: optional bool [batch, length, length].

    Example:
    >>> block = TransformerEncoderBlock(num_heads=2, intermediate_size=32)
    >>> tuple(block(keras.ops.zeros((1, 4, 16))).shape)
    (1, 4, 16)
    """

    def build(self, input_shape):
        self.self_attention = self._attention("self_attention", input_shape[-1])
        self.self_attention.build(input_shape)
        self.self_attention_norm = self._norm("self_attention_norm", input_shape)
        self._build_feed_forward(input_shape)
        self.built = True

    def call(self, x, attention_mask=None, training=None):
        x, _ = self._residual(
            x,
            lambda h: self.self_attention(h, attention_mask=attention_mask, training=training),
            self.self_attention_norm,
            training,
        )
        return self._feed_forward(x, training)

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="tfplm")
class TransformerDecoderBlock(_TransformerBlock):
    """Causal self-attention, optional cross-attention, then feed-forward.

    GPT blocks use it without cross-attention; encoder-decoder models with.
    Takes the same constructor arguments as `TransformerEncoderBlock` plus
    `cross_attention` (bool).

    Call args:
        x: [batch, length, hidden].
        padding_mask: optional [batch, key_length], 1 for real tokens: over
            `x`, or with a self-attention cache over the cache's positions.
            The block adds the causal mask itself.
        encoder_output: the encoder's sequence output, with cross-attention.
        encoder_padding_mask: optional [batch, encoder_length].
        self_attention_cache, cache_update_index: for incremental decoding
            (`x` starts at absolute position `cache_update_index`); the block
            then returns (x, updated_self_attention_cache). Either cache
            layout of `MultiHeadAttention`: a stacked tensor or a (keys,
            values) pair.
        cross_attention_cache: precomputed encoder keys/values (see
            `MultiHeadAttention.compute_cross_attention_cache`).

    Example:
    >>> block = TransformerDecoderBlock(num_heads=2, intermediate_size=32)
    >>> x = keras.ops.zeros((1, 4, 16))
    >>> tuple(block(x).shape)
    (1, 4, 16)
    >>> cache = keras.ops.zeros((1, 2, 8, 2, 8))  # [batch, 2, max_length, heads, head_size]
    >>> y, cache = block(x[:, :1], self_attention_cache=cache, cache_update_index=0)
    >>> tuple(y.shape), tuple(cache.shape)
    ((1, 1, 16), (1, 2, 8, 2, 8))
    """

    def __init__(self, *args, cross_attention=False, **kwargs):
        super().__init__(*args, **kwargs)
        self.cross_attention = cross_attention

    def build(self, x_shape, encoder_output_shape=None):
        self.self_attention = self._attention("self_attention", x_shape[-1])
        self.self_attention.build(x_shape)
        self.self_attention_norm = self._norm("self_attention_norm", x_shape)
        if self.cross_attention:
            self.cross_attention_layer = self._attention("cross_attention", x_shape[-1])
            self.cross_attention_layer.build(x_shape, encoder_output_shape or x_shape)
            self.cross_attention_norm = self._norm("cross_attention_norm", x_shape)
        self._build_feed_forward(x_shape)
        self.built = True

    def call(
        self,
        x,
        padding_mask=None,
        encoder_output=None,
        encoder_padding_mask=None,
        self_attention_cache=None,
        cache_update_index=None,
        cross_attention_cache=None,
        training=None,
    ):
        length = ops.shape(x)[1]
        if self_attention_cache is None:
            self_attention_mask = causal_attention_mask(length, length)
        else:
            # Axis 2 holds the positions in both cache layouts (see MultiHeadAttention).
            keys = self_attention_cache
            if isinstance(keys, (tuple, list)):
                keys = keys[0]
            cache_length = ops.shape(keys)[2]
            self_attention_mask = causal_attention_mask(length, cache_length, cache_update_index)
        if padding_mask is not None:
            self_attention_mask = ops.logical_and(
                self_attention_mask, padding_attention_mask(padding_mask)
            )
        cross_attention_mask = None
        if encoder_padding_mask is not None:
            cross_attention_mask = padding_attention_mask(encoder_padding_mask)
        x, new_cache = self._residual(
            x,
            lambda h: self.self_attention(
                h,
                attention_mask=self_attention_mask,
                cache=self_attention_cache,
                cache_update_index=cache_update_index,
                training=training,
            ),
            self.self_attention_norm,
            training,
        )
        if self.cross_attention:
            if encoder_output is None and cross_attention_cache is None:
                raise ValueError(
                    "this block has cross-attention: pass encoder_output or cross_attention_cache"
                )
            x, _ = self._residual(
                x,
                lambda h: self.cross_attention_layer(
                    h,
                    encoder_output,
                    attention_mask=cross_attention_mask,
                    cache=cross_attention_cache,
                    training=training,
                ),
                self.cross_attention_norm,
                training,
            )
        x = self._feed_forward(x, training)
        if self_attention_cache is not None:
            return x, new_cache[0]
        return x

    def compute_output_shape(self, x_shape, encoder_output_shape=None):
        return x_shape

    def compute_output_spec(
        self,
        x,
        padding_mask=None,
        encoder_output=None,
        encoder_padding_mask=None,
        self_attention_cache=None,
        cache_update_index=None,
        cross_attention_cache=None,
        training=None,
    ):
        # With a self-attention cache the call also returns the updated cache.
        output = keras.KerasTensor(x.shape, dtype=self.compute_dtype)
        if self_attention_cache is not None:
            cache_spec = keras.tree.map_structure(
                lambda c: keras.KerasTensor(c.shape, dtype=self.compute_dtype), self_attention_cache
            )
            return output, cache_spec
        return output

    def get_config(self):
        config = super().get_config()
        config["cross_attention"] = self.cross_attention
        return config
