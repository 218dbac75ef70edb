"""Multi-head attention with padding/causal masks and a key/value cache."""

import math

import keras
import tensorflow as tf
from keras import ops

from tfplm.layers.dense import Dense

# The attention products go to TensorFlow's Einsum op, which oneDNN runs as
# one kernel reading its inputs in any layout. `keras.ops.einsum` lowers the
# same products to transposes (copies) around batch matmuls: at batch 1 each
# oneDNN transpose has a fixed cost several times that of its data
# (BENCHMARKS.md, serving).
_einsum = tf.einsum


def default_initializer(stddev=0.02):
    """BERT and GPT-2 initialise every kernel from N(0, 0.02) truncated."""
    return keras.initializers.TruncatedNormal(stddev=stddev)


def clone_initializer(initializer):
    """A copy of `initializer` for one weight.

    A Keras 3 random initializer fixes its seed when it is created (a random
    one when it is unseeded), so one instance shared by several weights gives
    them the same values: query, key and value kernels would start equal, and
    the position table would repeat the first rows of the token table. Each
    weight therefore gets its own copy, as in keras-hub: an unseeded copy
    draws a new seed (reproducible under `keras.utils.set_random_seed`). A
    seeded copy keeps its seed, so weights of one shape would still start
    equal: seed runs with `keras.utils.set_random_seed`, not the initializer.
    """
    if not isinstance(initializer, keras.initializers.Initializer):
        return initializer
    return initializer.__class__.from_config(initializer.get_config())


@keras.saving.register_keras_serializable(package="tfplm")
class MultiHeadAttention(keras.layers.Layer):
    """Scaled dot-product attention over `num_heads` heads (Vaswani et al., 2017).

    Self-attention when `value` is omitted, cross-attention otherwise. For
    incremental decoding pass a `cache` of shape [batch, 2, max_length, heads,
    head_size] (keys, values):

    * self-attention: the keys/values of the new tokens are written into the
      cache at `cache_update_index` and the query attends over the whole cache
      (mask the unwritten part with `attention_mask`);
    * cross-attention: pass the cache from `compute_cross_attention_cache` and
      no `cache_update_index`; the encoder keys/values are then reused.

    A cache may also be a `(keys, values)` pair of [batch, heads, max_length,
    head_size] tensors, the layout decoding loops use (`GPT.empty_cache`), and
    the call then returns such a pair: a step writes its keys and values into
    the two tensors without restacking the whole cache, and with heads before
    positions the attention products read the cache as it lies, where the
    stacked [.., max_length, heads, ..] layout makes them transpose (copy) all
    of it every step.

    Args:
        num_heads: number of attention heads.
        head_size: size of each head; the input width must equal
            `num_heads * head_size`.
        dropout: dropout rate on the attention probabilities.
        kernel_initializer: initializer of the projection kernels.

    Example:
    >>> attention = MultiHeadAttention(num_heads=2, head_size=8)
    >>> tuple(attention(keras.ops.zeros((1, 4, 16))).shape)
    (1, 4, 16)
    """

    def __init__(self, num_heads, head_size, dropout=0.0, kernel_initializer=None, **kwargs):
        super().__init__(**kwargs)
        self.num_heads = num_heads
        self.head_size = head_size
        self.dropout = dropout
        self.kernel_initializer = keras.initializers.get(
            kernel_initializer or default_initializer()
        )

    def build(self, query_shape, value_shape=None):
        width = self.num_heads * self.head_size
        value_shape = value_shape or query_shape

        def projection(name, input_shape, units):
            layer = Dense(
                units,
                kernel_initializer=clone_initializer(self.kernel_initializer),
                dtype=self.dtype_policy,
                name=name,
            )
            layer.build(input_shape)
            return layer

        self.query_dense = projection("query", query_shape, width)
        self.key_dense = projection("key", value_shape, width)
        self.value_dense = projection("value", value_shape, width)
        self.output_dense = projection("output", (*query_shape[:-1], width), query_shape[-1])
        # On the float32 probabilities: CPUs compute bfloat16 elementwise ops
        # (dropout's mask and scale) one element at a time.
        self.dropout_layer = keras.layers.Dropout(self.dropout, dtype="float32")
        self.built = True

    def _split_heads(self, x, heads_first=False):
        """[batch, length, width] -> [batch, length, heads, head_size], or with
        `heads_first` [batch, heads, length, head_size]."""
        batch, length = ops.shape(x)[0], ops.shape(x)[1]
        x = ops.reshape(x, (batch, length, self.num_heads, self.head_size))
        return ops.transpose(x, (0, 2, 1, 3)) if heads_first else x

    def compute_cross_attention_cache(self, value, heads_first=False):
        """Encoder keys and values, [batch, 2, length, heads, head_size]; with
        `heads_first` the decoding layout, a (keys, values) pair of
        [batch, heads, length, head_size]."""
        key = self._split_heads(self.key_dense(value), heads_first)
        value = self._split_heads(self.value_dense(value), heads_first)
        return (key, value) if heads_first else ops.stack([key, value], axis=1)

    def call(
        self,
        query,
        value=None,
        attention_mask=None,
        cache=None,
        cache_update_index=None,
        training=None,
    ):
        is_cross_attention_cache = cache is not None and cache_update_index is None
        # A (keys, values) pair is the decoding layout: heads before positions.
        heads_first = isinstance(cache, (tuple, list))
        if is_cross_attention_cache:
            key, value = cache if heads_first else (cache[:, 0], cache[:, 1])
        else:
            source = query if value is None else value
            key = self._split_heads(self.key_dense(source), heads_first)
            value = self._split_heads(self.value_dense(source), heads_first)
            if heads_first:
                start = [0, 0, cache_update_index, 0]
                key = ops.slice_update(cache[0], start, key)
                value = ops.slice_update(cache[1], start, value)
                cache = (key, value)
            elif cache is not None:
                start = [0, cache_update_index, 0, 0]
                key = ops.slice_update(cache[:, 0], start, key)
                value = ops.slice_update(cache[:, 1], start, value)
                cache = ops.stack([key, value], axis=1)

        query = self._split_heads(self.query_dense(query))
        keys_layout = "bnsh" if heads_first else "bsnh"
        scores = _einsum(f"btnh,{keys_layout}->bnts", query, key)
        # Softmax in float32: large negative mask values overflow float16.
        scores = ops.cast(scores, "float32") * (1.0 / math.sqrt(self.head_size))
        if attention_mask is not None:
            mask = ops.cast(attention_mask, "bool")[:, None, :, :]
            scores = ops.where(mask, scores, -1e9)
        probabilities = self.dropout_layer(ops.softmax(scores, axis=-1), training=training)
        probabilities = ops.cast(probabilities, self.compute_dtype)
        context = _einsum(f"bnts,{keys_layout}->btnh", probabilities, value)
        batch, length = ops.shape(context)[0], ops.shape(context)[1]
        context = ops.reshape(context, (batch, length, self.num_heads * self.head_size))
        output = self.output_dense(context)
        if cache is not None and not is_cross_attention_cache:
            return output, cache
        return output

    def compute_output_shape(self, query_shape, value_shape=None):
        return query_shape

    def compute_output_spec(
        self,
        query,
        value=None,
        attention_mask=None,
        cache=None,
        cache_update_index=None,
        training=None,
    ):
        # Not from compute_output_shape: with a self-attention cache the call
        # also returns the updated cache, which shapes alone cannot tell from
        # a cross-attention cache (cache_update_index may be a Python int).
        output = keras.KerasTensor(query.shape, dtype=self.compute_dtype)
        if cache is not None and cache_update_index is not None:
            cache_spec = keras.tree.map_structure(
                lambda c: keras.KerasTensor(c.shape, dtype=self.compute_dtype), cache
            )
            return output, cache_spec
        return output

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            head_size=self.head_size,
            dropout=self.dropout,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
        )
        return config
