"""tfplm.layers: numerics against NumPy and Keras references, masks, caches, configs, mixed precision."""

import doctest
import importlib
import itertools
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfplm.layers import (
    ClassificationHead,
    FeedForward,
    MaskedLMHead,
    MultiHeadAttention,
    Pooler,
    SpanHead,
    TextEmbedding,
    TransformerDecoderBlock,
    TransformerEncoderBlock,
    causal_attention_mask,
    padding_attention_mask,
    sinusoidal_positions,
)
from tfplm.layers.dense import Dense
from tfplm.layers.transformer import get_activation

BATCH, LENGTH, HIDDEN, HEADS = 2, 6, 8, 2
VOCAB = 23


def normal(*shape, seed=0):
    return np.random.default_rng(seed).normal(size=shape).astype("float32")


def token_ids(*shape, seed=0):
    return np.random.default_rng(seed).integers(0, VOCAB, shape).astype("int32")


def randomize(layer, seed=0, scale=0.5):
    """Random weights, biases and LayerNorm parameters included: the default
    N(0, 0.02) kernels and zero biases would make attention nearly uniform and
    let wrong masks or wiring pass unnoticed."""
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.normal(0.0, scale, w.shape).astype("float32") for w in layer.get_weights()])
    return layer


def built(layer, *args, **kwargs):
    layer(*args, **kwargs)
    return layer


def numpy(x):
    return keras.ops.convert_to_numpy(keras.ops.cast(x, "float32"))


# --- NumPy references ---------------------------------------------------------------------

_erf = np.vectorize(math.erf)

NP_ACTIVATIONS = {
    "gelu": lambda x: 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0))),
    "gelu_approximate": lambda x: 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3))),
    "relu": lambda x: np.maximum(x, 0.0),
}


def np_dense(x, dense):
    return x @ np.asarray(dense.kernel) + np.asarray(dense.bias)


def np_layer_norm(x, norm):
    mean = x.mean(-1, keepdims=True)
    variance = x.var(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + norm.epsilon) * np.asarray(norm.gamma) + np.asarray(norm.beta)


def np_softmax(x):
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_attention(query, value, attention, mask=None):
    """softmax(Q Kᵀ / √d) V over heads, then the output projection."""
    (batch, q_len, _), s_len = query.shape, value.shape[1]
    heads, size = attention.num_heads, attention.head_size
    q = np_dense(query, attention.query_dense).reshape(batch, q_len, heads, size)
    k = np_dense(value, attention.key_dense).reshape(batch, s_len, heads, size)
    v = np_dense(value, attention.value_dense).reshape(batch, s_len, heads, size)
    scores = np.einsum("btnh,bsnh->bnts", q, k) / math.sqrt(size)
    if mask is not None:
        scores = np.where(np.broadcast_to(mask, (batch, q_len, s_len))[:, None], scores, -np.inf)
    context = np.einsum("bnts,bsnh->btnh", np_softmax(scores), v).reshape(batch, q_len, heads * size)
    return np_dense(context, attention.output_dense)


def np_feed_forward(x, feed_forward):
    hidden = NP_ACTIVATIONS[feed_forward.activation](np_dense(x, feed_forward.intermediate_dense))
    return np_dense(hidden, feed_forward.output_dense)


def np_block(x, block, self_mask=None, encoder_output=None, cross_mask=None):
    """Post-LN: norm(x + f(x)); pre-LN: x + f(norm(x)) — for each sublayer in turn."""

    def sublayer(x, f, norm):
        return x + f(np_layer_norm(x, norm)) if block.norm_first else np_layer_norm(x + f(x), norm)

    x = sublayer(x, lambda h: np_attention(h, h, block.self_attention, self_mask), block.self_attention_norm)
    if encoder_output is not None:
        x = sublayer(
            x,
            lambda h: np_attention(h, encoder_output, block.cross_attention_layer, cross_mask),
            block.cross_attention_norm,
        )
    return sublayer(x, lambda h: np_feed_forward(h, block.feed_forward), block.feed_forward_norm)


def np_causal(length):
    return np.tril(np.ones((length, length), bool))[None]


def padding(lengths, length=LENGTH):
    return (np.arange(length)[None, :] < np.asarray(lengths)[:, None]).astype("int32")


# --- masks --------------------------------------------------------------------------------


def test_padding_attention_mask_lets_every_query_see_only_real_keys():
    mask = padding_attention_mask(np.array([[1, 1, 0], [1, 0, 0]], "int32"))
    assert mask.dtype == "bool" and tuple(mask.shape) == (2, 1, 3)
    np.testing.assert_array_equal(mask, [[[True, True, False]], [[True, False, False]]])


def test_causal_attention_mask_is_lower_triangular():
    mask = causal_attention_mask(4, 4)
    assert mask.dtype == "bool" and tuple(mask.shape) == (1, 4, 4)
    np.testing.assert_array_equal(mask[0], np.tril(np.ones((4, 4), bool)))


def test_causal_attention_mask_with_offset_lets_query_see_keys_up_to_its_absolute_position():
    # Two new queries at absolute positions 3 and 4, over a 6-slot cache.
    mask = causal_attention_mask(2, 6, query_offset=3)
    np.testing.assert_array_equal(mask[0], [[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0]])


# --- MultiHeadAttention -------------------------------------------------------------------


def keras_attention_with_weights_of(attention, query, value):
    """keras.layers.MultiHeadAttention carrying `attention`'s weights."""
    reference = keras.layers.MultiHeadAttention(num_heads=attention.num_heads, key_dim=attention.head_size)
    reference(query, value)
    heads, size = attention.num_heads, attention.head_size
    weights = []
    for dense in (attention.query_dense, attention.key_dense, attention.value_dense):
        weights += [np.asarray(dense.kernel).reshape(-1, heads, size), np.asarray(dense.bias).reshape(heads, size)]
    out = attention.output_dense
    weights += [np.asarray(out.kernel).reshape(heads, size, -1), np.asarray(out.bias)]
    assert [w.shape for w in reference.get_weights()] == [w.shape for w in weights]
    reference.set_weights(weights)
    return reference


@pytest.mark.parametrize("cross", [False, True], ids=["self", "cross"])
def test_attention_matches_keras_multi_head_attention(cross):
    query = normal(BATCH, LENGTH, HIDDEN, seed=1)
    value = normal(BATCH, 4, 6, seed=2) if cross else query
    mask = np.random.default_rng(3).random((BATCH, LENGTH, value.shape[1])) < 0.7
    mask[..., 0] = True  # no query without keys
    attention = MultiHeadAttention(HEADS, 4)
    randomize(built(attention, query, None if not cross else value))
    reference = keras_attention_with_weights_of(attention, query, value)
    ours = attention(query, value if cross else None, attention_mask=mask)
    np.testing.assert_allclose(ours, reference(query, value, attention_mask=mask), atol=1e-5)
    np.testing.assert_allclose(ours, np_attention(query, value, attention, mask), atol=1e-5)


def test_masked_keys_do_not_change_attention_outputs():
    x = normal(BATCH, LENGTH, HIDDEN, seed=1)
    attention = randomize(built(MultiHeadAttention(HEADS, 4), x))
    mask = padding_attention_mask(padding([4, 2]))
    changed = x.copy()
    changed[0, 4:] = normal(2, HIDDEN, seed=5) * 10
    changed[1, 2:] = normal(4, HIDDEN, seed=6) * 10
    a, b = numpy(attention(x, attention_mask=mask)), numpy(attention(changed, attention_mask=mask))
    np.testing.assert_allclose(a[0, :4], b[0, :4], atol=1e-6)
    np.testing.assert_allclose(a[1, :2], b[1, :2], atol=1e-6)
    # Without the mask the same change does reach every query.
    assert not np.allclose(numpy(attention(x))[0, :4], numpy(attention(changed))[0, :4], atol=1e-3)


def test_attention_self_cache_written_token_by_token_equals_full_causal_attention():
    x = normal(BATCH, LENGTH, HIDDEN, seed=1)
    attention = randomize(built(MultiHeadAttention(HEADS, 4), x))
    full = numpy(attention(x, attention_mask=causal_attention_mask(LENGTH, LENGTH)))
    cache = np.zeros((BATCH, 2, LENGTH, HEADS, 4), "float32")
    for index in range(LENGTH):
        mask = causal_attention_mask(1, LENGTH, index)
        out, cache = attention(x[:, index : index + 1], attention_mask=mask, cache=cache, cache_update_index=index)
        np.testing.assert_allclose(out[:, 0], full[:, index], atol=1e-5)
    # The filled cache holds every token's keys and values, in order.
    np.testing.assert_allclose(cache, attention.compute_cross_attention_cache(x), atol=1e-6)


def test_attention_cross_cache_equals_attending_to_the_encoder_output():
    query, encoder_output = normal(BATCH, 3, HIDDEN, seed=1), normal(BATCH, 5, HIDDEN, seed=2)
    attention = randomize(built(MultiHeadAttention(HEADS, 4), query, encoder_output))
    mask = padding_attention_mask(padding([5, 3], 5))
    cache = attention.compute_cross_attention_cache(encoder_output)
    assert tuple(cache.shape) == (BATCH, 2, 5, HEADS, 4)
    np.testing.assert_allclose(
        attention(query, attention_mask=mask, cache=cache),
        attention(query, encoder_output, attention_mask=mask),
        atol=1e-6,
    )


def test_attention_dropout_acts_only_in_training():
    x = normal(BATCH, LENGTH, HIDDEN, seed=1)
    attention = randomize(built(MultiHeadAttention(HEADS, 4, dropout=0.5), x))
    reference = np_attention(x, x, attention)
    np.testing.assert_allclose(attention(x), reference, atol=1e-5)
    assert not np.allclose(attention(x, training=True), reference, atol=1e-3)


# --- embeddings ---------------------------------------------------------------------------


def paper_positions(length, width, start=0):
    """Vaswani et al. (2017), §3.5: PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(…)."""
    pos = np.arange(start, start + length, dtype="float64")[:, None]
    i = np.arange(width)[None, :]
    angles = pos / 10000.0 ** (2 * (i // 2) / width)
    return np.where(i % 2 == 0, np.sin(angles), np.cos(angles))


@pytest.mark.parametrize("width", [8, 7])
@pytest.mark.parametrize("start", [0, 5])
def test_sinusoidal_positions_are_the_papers_sines_then_cosines(width, start):
    ours = numpy(sinusoidal_positions(12, width, start))
    paper = paper_positions(12, width, start)
    sines = (width + 1) // 2
    assert ours.shape == (12, width)
    # The paper's (sin, cos) pairs, laid out as all sines then all cosines.
    np.testing.assert_allclose(ours[:, :sines], paper[:, 0::2], atol=2e-5)
    np.testing.assert_allclose(ours[:, sines:], paper[:, 1::2], atol=2e-5)


def embedding_weights(embedding):
    token = np.asarray(embedding.token_embedding.embeddings)
    position = (
        np.asarray(embedding.position_embedding_layer.embeddings)
        if embedding.position_embedding == "learned"
        else None
    )
    return token, position


def test_bert_embedding_is_layer_norm_of_token_position_and_segment_embeddings():
    ids, types = token_ids(BATCH, LENGTH), np.array([[0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 1, 1]], "int32")
    embedding = TextEmbedding(VOCAB, HIDDEN, max_length=10, type_vocab_size=2, layer_norm_epsilon=1e-6)
    randomize(built(embedding, ids, types))
    token, position = embedding_weights(embedding)
    segment = np.asarray(embedding.type_embedding.embeddings)
    expected = np_layer_norm(token[ids] + position[:LENGTH] + segment[types], embedding.layer_norm)
    np.testing.assert_allclose(embedding(ids, types), expected, atol=1e-5)
    # Without type_ids every token is segment 0.
    np.testing.assert_allclose(embedding(ids), embedding(ids, np.zeros_like(ids)), atol=0)


def test_gpt_embedding_is_token_plus_learned_position():
    ids = token_ids(BATCH, LENGTH)
    embedding = randomize(built(TextEmbedding(VOCAB, HIDDEN, max_length=10, normalize=False, dropout=0.0), ids))
    token, position = embedding_weights(embedding)
    assert len(embedding.get_weights()) == 2  # no segment table, no LayerNorm
    np.testing.assert_allclose(embedding(ids), token[ids] + position[:LENGTH], atol=1e-6)


def test_sinusoidal_embedding_scales_tokens_by_sqrt_width_and_adds_fixed_positions():
    ids = token_ids(BATCH, LENGTH)
    embedding = TextEmbedding(VOCAB, HIDDEN, position_embedding="sinusoidal", scale=True, normalize=False)
    randomize(built(embedding, ids))
    assert len(embedding.get_weights()) == 1  # positions are not learned
    token, _ = embedding_weights(embedding)
    expected = token[ids] * math.sqrt(HIDDEN) + paper_positions(LENGTH, HIDDEN)[:, [0, 2, 4, 6, 1, 3, 5, 7]]
    np.testing.assert_allclose(embedding(ids), expected, atol=1e-5)


@pytest.mark.parametrize("position_embedding", ["learned", "sinusoidal"])
def test_embedding_start_index_continues_the_positions(position_embedding):
    ids = token_ids(BATCH, LENGTH)
    embedding = randomize(built(TextEmbedding(VOCAB, HIDDEN, max_length=10, position_embedding=position_embedding), ids))
    full = numpy(embedding(ids))
    np.testing.assert_allclose(embedding(ids[:, 4:], start_index=4), full[:, 4:], atol=1e-5)
    assert not np.allclose(numpy(embedding(ids[:, 4:])), full[:, 4:], atol=1e-3)


def test_tied_output_embedding_is_hidden_times_token_matrix_transposed():
    ids, hidden = token_ids(BATCH, LENGTH), normal(BATCH, LENGTH, HIDDEN, seed=1)
    embedding = randomize(built(TextEmbedding(VOCAB, HIDDEN, max_length=10), ids))
    token, _ = embedding_weights(embedding)
    logits = embedding(hidden, reverse=True)
    assert tuple(logits.shape) == (BATCH, LENGTH, VOCAB)
    np.testing.assert_allclose(logits, hidden @ token.T, atol=1e-5)
    np.testing.assert_allclose(embedding.logits(hidden), hidden @ token.T, atol=1e-5)


def test_embedding_dropout_acts_only_in_training():
    ids = token_ids(BATCH, LENGTH)
    embedding = randomize(built(TextEmbedding(VOCAB, HIDDEN, max_length=10, normalize=False, dropout=0.5), ids))
    token, position = embedding_weights(embedding)
    np.testing.assert_allclose(embedding(ids), token[ids] + position[:LENGTH], atol=1e-6)
    dropped = numpy(embedding(ids, training=True))
    assert 0.2 < np.mean(dropped == 0) < 0.8


def test_embedding_rejects_unknown_position_embedding():
    with pytest.raises(ValueError, match="expected 'learned' or 'sinusoidal'"):
        TextEmbedding(VOCAB, HIDDEN, position_embedding="rotary")


# --- feed-forward and Transformer blocks ---------------------------------------------------


@pytest.mark.parametrize("shape", [(5, HIDDEN), (BATCH, LENGTH, HIDDEN), (2, 3, LENGTH, HIDDEN)])
@pytest.mark.parametrize("activation", ["gelu", "gelu_approximate", "relu"])
def test_dense_matches_numpy_eagerly_and_in_the_graph_tensorflow_fuses(shape, activation):
    # In a tf.function grappler fuses its MatMul + BiasAdd + activation into one kernel.
    x = normal(*shape, seed=2)
    dense = randomize(built(Dense(7, activation=get_activation(activation)), x))
    expected = NP_ACTIVATIONS[activation](np_dense(x, dense))
    np.testing.assert_allclose(dense(x), expected, atol=1e-5)
    np.testing.assert_allclose(tf.function(dense)(x), expected, atol=1e-5)


@pytest.mark.parametrize("activation", ["gelu", "gelu_approximate", "relu"])
def test_feed_forward_matches_numpy(activation):
    x = normal(BATCH, LENGTH, HIDDEN, seed=1)
    feed_forward = randomize(built(FeedForward(32, activation=activation), x))
    np.testing.assert_allclose(feed_forward(x), np_feed_forward(x, feed_forward), atol=1e-5)


@pytest.mark.parametrize("activation", ["gelu", "gelu_approximate", "relu"])
def test_bfloat16_feed_forward_matches_numpy_to_bfloat16_precision(activation):
    # Its activation runs in float32 (the fast path on CPUs); inputs and output stay bfloat16.
    x = normal(BATCH, LENGTH, HIDDEN, seed=1)
    feed_forward = randomize(built(FeedForward(32, activation=activation, dtype="mixed_bfloat16"), x))
    y = feed_forward(keras.ops.cast(x, "bfloat16"))
    assert y.dtype == "bfloat16"
    expected = np_feed_forward(x, feed_forward)
    np.testing.assert_allclose(numpy(y), expected, atol=0.05 * np.abs(expected).max())


def test_gelu_is_the_exact_erf_form_and_gelu_approximate_the_tanh_form():
    x = np.linspace(-4, 4, 33).astype("float32")
    np.testing.assert_allclose(get_activation("gelu")(x), NP_ACTIVATIONS["gelu"](x), atol=1e-6)
    np.testing.assert_allclose(get_activation("gelu_approximate")(x), NP_ACTIVATIONS["gelu_approximate"](x), atol=1e-6)
    assert not np.allclose(NP_ACTIVATIONS["gelu"](x), NP_ACTIVATIONS["gelu_approximate"](x), atol=1e-5)
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        get_activation("swish")


@pytest.mark.parametrize("norm_first", [False, True], ids=["post_ln", "pre_ln"])
def test_encoder_block_matches_numpy(norm_first):
    x = normal(BATCH, LENGTH, HIDDEN, seed=1)
    block = TransformerEncoderBlock(HEADS, 32, layer_norm_epsilon=1e-5, norm_first=norm_first)
    randomize(built(block, x))
    mask = padding_attention_mask(padding([6, 4]))
    np.testing.assert_allclose(block(x, attention_mask=mask), np_block(x, block, numpy(mask) > 0), atol=1e-4)


def test_encoder_block_padded_keys_do_not_change_real_positions():
    x = normal(BATCH, LENGTH, HIDDEN, seed=1)
    block = randomize(built(TransformerEncoderBlock(HEADS, 32), x))
    mask = padding_attention_mask(padding([6, 3]))
    changed = x.copy()
    changed[1, 3:] += 5.0
    a, b = numpy(block(x, attention_mask=mask)), numpy(block(changed, attention_mask=mask))
    np.testing.assert_allclose(a[1, :3], b[1, :3], atol=1e-5)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.allclose(a[1, 3:], b[1, 3:], atol=1e-3)


def test_blocks_reject_a_width_not_divisible_by_the_heads():
    with pytest.raises(ValueError, match="hidden size 9 is not divisible by num_heads=2"):
        TransformerEncoderBlock(2, 16)(np.zeros((1, 3, 9), "float32"))


def test_block_dropout_acts_only_in_training():
    x = normal(BATCH, LENGTH, HIDDEN, seed=1)
    block = randomize(built(TransformerEncoderBlock(HEADS, 32, dropout=0.5, attention_dropout=0.0), x))
    np.testing.assert_allclose(block(x), np_block(x, block), atol=1e-4)
    assert not np.allclose(block(x, training=True), block(x), atol=1e-3)


def decoder_inputs():
    x = normal(BATCH, LENGTH, HIDDEN, seed=1)
    encoder_output = normal(BATCH, 5, HIDDEN, seed=2)
    encoder_mask = padding([5, 3], 5)
    return x, encoder_output, encoder_mask


@pytest.mark.parametrize("norm_first", [False, True], ids=["post_ln", "pre_ln"])
def test_decoder_block_matches_numpy(norm_first):
    x, encoder_output, encoder_mask = decoder_inputs()
    block = TransformerDecoderBlock(HEADS, 32, norm_first=norm_first, cross_attention=True)
    randomize(built(block, x, encoder_output=encoder_output))
    pad = padding([6, 5])
    ours = block(x, padding_mask=pad, encoder_output=encoder_output, encoder_padding_mask=encoder_mask)
    expected = np_block(
        x,
        block,
        self_mask=np_causal(LENGTH) & (pad[:, None, :] > 0),
        encoder_output=encoder_output,
        cross_mask=encoder_mask[:, None, :] > 0,
    )
    np.testing.assert_allclose(ours, expected, atol=1e-4)


def test_decoder_block_output_at_t_ignores_tokens_after_t():
    x = normal(BATCH, LENGTH, HIDDEN, seed=1)
    block = randomize(built(TransformerDecoderBlock(HEADS, 32, norm_first=True), x))
    full = numpy(block(x))
    for t in range(LENGTH - 1):
        changed = x.copy()
        changed[:, t + 1 :] = normal(BATCH, LENGTH - t - 1, HIDDEN, seed=10 + t)
        out = numpy(block(changed))
        np.testing.assert_allclose(out[:, : t + 1], full[:, : t + 1], atol=1e-5)
        assert not np.allclose(out[:, t + 1 :], full[:, t + 1 :], atol=1e-3)


def test_decoder_block_encoder_padding_is_masked():
    x, encoder_output, encoder_mask = decoder_inputs()
    block = randomize(built(TransformerDecoderBlock(HEADS, 32, cross_attention=True), x, encoder_output=encoder_output))
    changed = encoder_output.copy()
    changed[1, 3:] += 5.0  # row 1's encoder padding
    a = numpy(block(x, encoder_output=encoder_output, encoder_padding_mask=encoder_mask))
    b = numpy(block(x, encoder_output=changed, encoder_padding_mask=encoder_mask))
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert not np.allclose(a[1], numpy(block(x, encoder_output=changed))[1], atol=1e-3)


def test_decoder_block_without_encoder_output_is_a_clear_error():
    x, encoder_output, _ = decoder_inputs()
    block = built(TransformerDecoderBlock(HEADS, 32, cross_attention=True), x, encoder_output=encoder_output)
    with pytest.raises(ValueError, match="pass encoder_output or cross_attention_cache"):
        block(x)


@pytest.mark.parametrize("norm_first", [False, True], ids=["post_ln", "pre_ln"])
@pytest.mark.parametrize("cross_attention", [False, True], ids=["gpt", "seq2seq"])
def test_decoder_block_incremental_decoding_with_caches_equals_full_forward(norm_first, cross_attention):
    x, encoder_output, encoder_mask = decoder_inputs()
    block = TransformerDecoderBlock(HEADS, 32, norm_first=norm_first, cross_attention=cross_attention)
    randomize(built(block, x, encoder_output=encoder_output if cross_attention else None))
    cross = {}
    full_cross = {}
    if cross_attention:
        full_cross = {"encoder_output": encoder_output, "encoder_padding_mask": encoder_mask}
        cache = block.cross_attention_layer.compute_cross_attention_cache(encoder_output)
        cross = {"cross_attention_cache": cache, "encoder_padding_mask": encoder_mask}
    full = numpy(block(x, **full_cross))
    cache = np.zeros((BATCH, 2, LENGTH, HEADS, HIDDEN // HEADS), "float32")
    # Prefill three tokens at once, then one token per step.
    out, cache = block(x[:, :3], self_attention_cache=cache, cache_update_index=0, **cross)
    np.testing.assert_allclose(out, full[:, :3], atol=1e-5)
    for index in range(3, LENGTH):
        out, cache = block(x[:, index : index + 1], self_attention_cache=cache, cache_update_index=index, **cross)
        assert tuple(cache.shape) == (BATCH, 2, LENGTH, HEADS, HIDDEN // HEADS)
        np.testing.assert_allclose(out[:, 0], full[:, index], atol=1e-5)


def test_decoder_block_padding_mask_over_the_cache_equals_full_forward():
    x = normal(BATCH, LENGTH, HIDDEN, seed=1)
    block = randomize(built(TransformerDecoderBlock(HEADS, 32), x))
    pad = np.array([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]], "int32")  # row 0 left-padded
    full = numpy(block(x, padding_mask=pad))
    cache = np.zeros((BATCH, 2, LENGTH, HEADS, HIDDEN // HEADS), "float32")
    for index in range(LENGTH):
        out, cache = block(
            x[:, index : index + 1], padding_mask=pad, self_attention_cache=cache, cache_update_index=index
        )
        rows = [0, 1] if index >= 2 else [1]  # a padded query has no key to attend to
        np.testing.assert_allclose(numpy(out)[rows, 0], full[rows, index], atol=1e-5)
    assert not np.allclose(full[0, 2:], numpy(block(x))[0, 2:], atol=1e-3)


# --- heads --------------------------------------------------------------------------------


def test_masked_lm_head_is_transform_norm_tied_projection_and_bias_at_masked_positions():
    sequence = normal(BATCH, LENGTH, HIDDEN, seed=1)
    positions = np.array([[0, 3, 3], [5, 1, 2]], "int32")
    embedding = built(TextEmbedding(VOCAB, HIDDEN, max_length=10), token_ids(BATCH, LENGTH))
    head = randomize(built(MaskedLMHead(embedding, activation="gelu"), sequence, positions))
    token = np.asarray(embedding.token_embedding.embeddings)

    def reference(x):
        hidden = np_layer_norm(NP_ACTIVATIONS["gelu"](np_dense(x, head.transform)), head.layer_norm)
        return hidden @ token.T + np.asarray(head.bias)

    gathered = np.take_along_axis(sequence, positions[:, :, None], axis=1)
    logits = head(sequence, positions)
    assert tuple(logits.shape) == (BATCH, 3, VOCAB)
    np.testing.assert_allclose(logits, reference(gathered), atol=1e-4)
    np.testing.assert_allclose(head(sequence), reference(sequence), atol=1e-4)


def test_masked_lm_head_shares_the_embedding_matrix():
    sequence = normal(BATCH, LENGTH, HIDDEN, seed=1)
    embedding = built(TextEmbedding(VOCAB, HIDDEN, max_length=10), token_ids(BATCH, LENGTH))
    head = randomize(built(MaskedLMHead(embedding), sequence))
    before = numpy(head(sequence))
    embedding.token_embedding.embeddings.assign(normal(VOCAB, HIDDEN, seed=9))
    assert not np.allclose(numpy(head(sequence)), before, atol=1e-3)
    assert any(w is embedding.token_embedding.embeddings for w in head.weights)  # one variable, not a copy


def test_masked_lm_head_builds_an_unbuilt_embedding_and_ties_to_it():
    embedding = TextEmbedding(VOCAB, HIDDEN, max_length=10)
    head = MaskedLMHead(embedding)
    sequence = normal(BATCH, LENGTH, HIDDEN, seed=1)
    logits = head(sequence)
    assert embedding.built and tuple(logits.shape) == (BATCH, LENGTH, VOCAB)
    assert any(w is embedding.token_embedding.embeddings for w in head.weights)


def test_pooler_is_tanh_dense_of_the_first_token():
    sequence = normal(BATCH, LENGTH, HIDDEN, seed=1)
    pooler = randomize(built(Pooler(), sequence))
    pooled = numpy(pooler(sequence))
    np.testing.assert_allclose(pooled, np.tanh(np_dense(sequence[:, 0], pooler.dense)), atol=1e-5)
    changed = sequence.copy()
    changed[:, 1:] = 0.0
    np.testing.assert_array_equal(pooler(changed), pooled)


@pytest.mark.parametrize("num_classes", [3, 1], ids=["classification", "regression"])
def test_classification_head_is_dense_logits_with_dropout_only_in_training(num_classes):
    pooled = normal(BATCH, HIDDEN, seed=1)
    head = randomize(built(ClassificationHead(num_classes, dropout=0.5), pooled))
    logits = head(pooled)
    assert tuple(logits.shape) == (BATCH, num_classes)
    np.testing.assert_allclose(logits, np_dense(pooled, head.dense), atol=1e-5)
    assert not np.allclose(head(pooled, training=True), logits, atol=1e-3)


def test_span_head_gives_start_and_end_logits_per_token():
    sequence = normal(BATCH, LENGTH, HIDDEN, seed=1)
    head = randomize(built(SpanHead(), sequence))
    start, end = head(sequence)
    assert tuple(start.shape) == tuple(end.shape) == (BATCH, LENGTH)
    assert start.dtype == end.dtype == "float32"
    kernel, bias = np.asarray(head.dense.kernel), np.asarray(head.dense.bias)
    assert kernel.shape == (HIDDEN, 2)
    np.testing.assert_allclose(start, sequence @ kernel[:, 0] + bias[0], atol=1e-5)
    np.testing.assert_allclose(end, sequence @ kernel[:, 1] + bias[1], atol=1e-5)
    assert not np.allclose(start, end)


def test_span_head_gives_masked_positions_no_probability():
    sequence = normal(BATCH, LENGTH, HIDDEN, seed=1)
    head = randomize(built(SpanHead(), sequence))
    mask = padding([6, 3])
    unmasked_start, unmasked_end = (numpy(t) for t in head(sequence))
    for masked, unmasked in zip(head(sequence, padding_mask=mask), (unmasked_start, unmasked_end)):
        masked = numpy(masked)
        np.testing.assert_array_equal(masked[mask > 0], unmasked[mask > 0])
        probabilities = numpy(keras.ops.softmax(masked, axis=-1))
        np.testing.assert_array_equal(probabilities[mask == 0], 0.0)
        np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-6)


def span_examples(count, seed):
    """Noise with a start marker (feature 0) and an end marker (feature 1) on
    the answer's tokens, and stronger decoy markers on a padded token."""
    rng = np.random.default_rng(seed)
    sequence = rng.normal(0.0, 0.1, (count, LENGTH, HIDDEN)).astype("float32")
    starts = rng.integers(0, 3, count)
    ends = starts + rng.integers(0, 2, count)
    rows = np.arange(count)
    sequence[rows, starts, 0] += 1.0
    sequence[rows, ends, 1] += 1.0
    sequence[:, LENGTH - 1, :2] += 3.0  # the last token is padding in every row
    return sequence, padding(np.full(count, LENGTH - 1)), starts, ends


def test_span_head_learns_to_point_at_the_labelled_start_and_end_tokens():
    inputs = {
        "sequence_output": keras.Input((LENGTH, HIDDEN), name="sequence_output"),
        "padding_mask": keras.Input((LENGTH,), dtype="int32", name="padding_mask"),
    }
    start, end = SpanHead()(inputs["sequence_output"], padding_mask=inputs["padding_mask"])
    model = keras.Model(inputs, {"start": start, "end": end})
    model.compile(keras.optimizers.Adam(0.1), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    sequence, mask, starts, ends = span_examples(16, seed=1)
    steps = 100  # one epoch of repeated batches: Keras pays its per-epoch overhead once

    def repeat(a):
        return np.tile(a, (steps,) + (1,) * (a.ndim - 1))

    model.fit(
        {"sequence_output": repeat(sequence), "padding_mask": repeat(mask)},
        {"start": repeat(starts), "end": repeat(ends)},
        batch_size=16,
        verbose=0,
    )
    sequence, mask, starts, ends = span_examples(16, seed=2)  # unseen examples
    predicted = model({"sequence_output": sequence, "padding_mask": mask})
    np.testing.assert_array_equal(np.argmax(predicted["start"], -1), starts)
    np.testing.assert_array_equal(np.argmax(predicted["end"], -1), ends)


# --- every layer: config round trip, symbolic call, mixed precision ------------------------

X = normal(BATCH, LENGTH, HIDDEN, seed=1)
ENCODER_OUTPUT = normal(BATCH, 5, 6, seed=2)
PAD = padding([6, 4])


def cases():
    """name → (make(dtype) → layer, args, kwargs). Non-default constructor
    arguments everywhere, so a config that dropped one would change outputs."""
    initializer = keras.initializers.TruncatedNormal(stddev=0.05)
    block_kwargs = dict(
        activation="gelu_approximate",
        dropout=0.2,
        attention_dropout=0.3,
        layer_norm_epsilon=1e-5,
        kernel_initializer=initializer,
    )
    cache = np.zeros((BATCH, 2, LENGTH, HEADS, 4), "float32")

    def masked_lm_head(dtype):
        embedding = TextEmbedding(VOCAB, HIDDEN, max_length=10, dtype=dtype)
        embedding(token_ids(BATCH, LENGTH))
        return MaskedLMHead(embedding, activation="relu", layer_norm_epsilon=1e-6, dtype=dtype)

    return {
        "attention": (
            lambda dtype: MultiHeadAttention(HEADS, 4, dropout=0.1, kernel_initializer=initializer, dtype=dtype),
            (X,),
            {"attention_mask": padding_attention_mask(PAD)},
        ),
        "cross_attention": (
            lambda dtype: MultiHeadAttention(HEADS, 4, dtype=dtype),
            (X, ENCODER_OUTPUT),
            {"attention_mask": padding_attention_mask(padding([5, 2], 5))},
        ),
        "cached_attention": (
            lambda dtype: MultiHeadAttention(HEADS, 4, dtype=dtype),
            (X[:, :2],),
            {"attention_mask": causal_attention_mask(2, LENGTH, 1), "cache": cache, "cache_update_index": 1},
        ),
        "feed_forward": (
            lambda dtype: FeedForward(32, activation="relu", kernel_initializer=initializer, dtype=dtype),
            (X,),
            {},
        ),
        "encoder_block": (
            lambda dtype: TransformerEncoderBlock(HEADS, 32, norm_first=True, dtype=dtype, **block_kwargs),
            (X,),
            {"attention_mask": padding_attention_mask(PAD)},
        ),
        "decoder_block": (
            lambda dtype: TransformerDecoderBlock(HEADS, 32, cross_attention=True, dtype=dtype, **block_kwargs),
            (X,),
            {"padding_mask": PAD, "encoder_output": ENCODER_OUTPUT, "encoder_padding_mask": padding([5, 2], 5)},
        ),
        "cached_decoder_block": (
            lambda dtype: TransformerDecoderBlock(HEADS, 32, norm_first=True, dtype=dtype, **block_kwargs),
            (X[:, :2],),
            {"self_attention_cache": cache, "cache_update_index": 1},
        ),
        "bert_embedding": (
            lambda dtype: TextEmbedding(
                VOCAB, HIDDEN, max_length=10, type_vocab_size=2, layer_norm_epsilon=1e-6, dropout=0.2,
                embeddings_initializer=initializer, dtype=dtype,
            ),
            (token_ids(BATCH, LENGTH),),
            {"type_ids": PAD},
        ),
        "sinusoidal_embedding": (
            lambda dtype: TextEmbedding(
                VOCAB, HIDDEN, position_embedding="sinusoidal", scale=True, normalize=False, dtype=dtype
            ),
            (token_ids(BATCH, 3),),
            {"start_index": 2},
        ),
        "tied_logits": (
            lambda dtype: TextEmbedding(VOCAB, HIDDEN, max_length=10, dtype=dtype),
            (X,),
            {"reverse": True},
        ),
        "masked_lm_head": (masked_lm_head, (X,), {"masked_positions": np.array([[0, 2], [5, 1]], "int32")}),
        "pooler": (lambda dtype: Pooler(kernel_initializer=initializer, dtype=dtype), (X,), {}),
        "classification_head": (
            lambda dtype: ClassificationHead(3, dropout=0.2, kernel_initializer=initializer, dtype=dtype),
            (X[:, 0],),
            {},
        ),
        "span_head": (lambda dtype: SpanHead(kernel_initializer=initializer, dtype=dtype), (X,), {"padding_mask": PAD}),
    }


CASES = cases()
FLOAT32_OUTPUTS = {"classification_head", "span_head"}  # logits stay float32 under mixed precision


def make(name, dtype="float32", seed=0):
    factory, args, kwargs = CASES[name]
    layer = factory(dtype)
    layer(*args, **kwargs)
    return randomize(layer, seed), args, kwargs


def outputs(layer, args, kwargs):
    return [numpy(t) for t in keras.tree.flatten(layer(*args, **kwargs))]


def rebuild(layer, config):
    if isinstance(layer, MaskedLMHead):  # the tied embedding is passed again, not serialized
        return MaskedLMHead.from_config({**config, "embedding": layer.embedding})
    return keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))


@pytest.mark.parametrize("name", CASES)
def test_config_round_trip_rebuilds_an_identical_layer(name):
    layer, args, kwargs = make(name)
    config = layer.get_config()
    clone = rebuild(layer, config)
    assert type(clone) is type(layer)
    assert clone.get_config() == config
    clone(*args, **kwargs)
    clone.set_weights(layer.get_weights())
    for ours, theirs in zip(outputs(layer, args, kwargs), outputs(clone, args, kwargs), strict=True):
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("name", CASES)
def test_no_two_weights_start_with_the_same_values(name):
    """One initializer shared by several weights must not give them one draw
    (Keras 3 initializers fix their seed when created)."""
    factory, args, kwargs = CASES[name]
    layer = factory("float32")
    layer(*args, **kwargs)
    matrices = {w.path: np.asarray(w).ravel() for w in layer.weights if len(w.shape) >= 2}
    for (a, x), (b, y) in itertools.combinations(matrices.items(), 2):
        n = min(x.size, y.size)
        assert not np.allclose(x[:n], y[:n]), f"{a} and {b} start with the same values"


def test_default_initializer_is_truncated_normal_with_stddev_0_02():
    block = built(TransformerDecoderBlock(HEADS, 32, cross_attention=True), X, encoder_output=X)
    kernels = np.concatenate([np.asarray(w).ravel() for w in block.weights if len(w.shape) == 2])
    assert kernels.size > 1000
    assert np.abs(kernels).max() <= 0.04 + 1e-6  # truncated at two standard deviations
    assert 0.016 < kernels.std() < 0.0195  # 0.02 before truncation, ≈0.0176 after
    biases = [np.asarray(w) for w in block.weights if len(w.shape) == 1 and "bias" in w.path]
    assert biases and not any(b.any() for b in biases)


@pytest.mark.parametrize("dtype", ["float32", "mixed_bfloat16"])
@pytest.mark.parametrize("name", CASES)
def test_symbolic_call_predicts_the_eager_output_shapes_and_dtypes(name, dtype):
    layer, args, kwargs = make(name, dtype)

    def symbolic(x):
        if isinstance(x, np.ndarray):
            return keras.Input(x.shape[1:], dtype=str(x.dtype))
        return x  # Python values and constant masks

    spec = keras.tree.flatten(layer(*[symbolic(a) for a in args], **{k: symbolic(v) for k, v in kwargs.items()}))
    eager = keras.tree.flatten(layer(*args, **kwargs))
    assert [(tuple(s.shape[1:]), s.dtype) for s in spec] == [(tuple(e.shape[1:]), e.dtype) for e in eager]


@pytest.mark.parametrize("name", CASES)
def test_mixed_bfloat16_keeps_float32_weights_and_stays_close_to_float32(name):
    layer, args, kwargs = make(name)
    mixed, _, _ = make(name, "mixed_bfloat16")
    mixed.set_weights(layer.get_weights())
    assert {w.dtype for w in mixed.weights} == {"float32"}
    expected_dtype = "float32" if name in FLOAT32_OUTPUTS else "bfloat16"
    for tensor in keras.tree.flatten(mixed(*args, **kwargs)):
        assert keras.backend.standardize_dtype(tensor.dtype) == expected_dtype
    for low, full in zip(outputs(mixed, args, kwargs), outputs(layer, args, kwargs), strict=True):
        assert np.all(np.isfinite(low))
        scale = max(np.linalg.norm(full), 1e-6)
        assert np.linalg.norm(low - full) / scale < 0.03, name


@pytest.mark.parametrize("module", ["attention", "embeddings", "heads", "masks", "transformer"])
def test_docstring_examples_run_as_written(module):
    module = importlib.import_module(f"tfplm.layers.{module}")
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0
    assert result.failed == 0
