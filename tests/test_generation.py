"""Cached decoding equals full recomputation; samplers behave as defined."""

import numpy as np
import pytest
import tensorflow as tf

from tfplm import generation
from tfplm import models

VOCAB = 61


@pytest.fixture(scope="module")
def gpt():
    return models.GPT.from_preset("gpt_nano", vocab_size=VOCAB, max_length=32, dropout=0.0)


@pytest.fixture(scope="module")
def seq2seq():
    return models.Seq2SeqTransformer(
        vocab_size=VOCAB,
        hidden_size=32,
        num_encoder_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        intermediate_size=64,
        dropout=0.0,
    )


def full_gpt_logits(gpt, ids):
    ids = np.asarray(ids, "int32")
    return gpt({"token_ids": ids, "padding_mask": np.ones_like(ids)}).numpy()


def test_cached_gpt_logits_equal_full_recomputation(gpt):
    ids = np.random.default_rng(0).integers(0, VOCAB, (2, 10)).astype("int32")
    full = full_gpt_logits(gpt, ids)
    cache = gpt.empty_cache(2, 10)
    logits, cache = gpt.next_logits(ids[:, :4], cache, 0)  # prefill
    np.testing.assert_allclose(logits, full[:, 3], atol=1e-5)
    for index in range(4, 10):
        logits, cache = gpt.next_logits(ids[:, index : index + 1], cache, index)
        np.testing.assert_allclose(logits, full[:, index], atol=1e-5)


def naive_greedy(gpt, prompt, steps):
    ids = list(prompt)
    for _ in range(steps):
        ids.append(int(np.argmax(full_gpt_logits(gpt, [ids])[0, -1])))
    return ids


def test_greedy_generation_equals_naive_loop_for_prompts_of_different_lengths(gpt):
    prompts = [[3, 14, 15, 9, 2], [6, 5]]
    out = gpt.generate_ids(prompts, max_new_tokens=6)
    assert out.shape == (2, 11)
    assert out[0].tolist() == naive_greedy(gpt, prompts[0], 6)
    # The short prompt continues right after its own end.
    assert out[1].tolist() == naive_greedy(gpt, prompts[1], 9)


def test_generate_compiles_once_for_repeated_calls(gpt):
    gpt.generate_ids([[1, 2, 3]], max_new_tokens=3)
    decode = gpt._decode_function(generation.get_sampler("greedy"), None)
    traces = decode.experimental_get_tracing_count()
    gpt.generate_ids([[4, 5], [6, 7, 8, 9]], max_new_tokens=7)
    gpt.generate_ids([[1]], max_new_tokens=2)
    assert decode.experimental_get_tracing_count() == traces


def test_stop_token_ends_a_row_and_pads_the_rest(gpt):
    prompts = [[3, 14, 15], [9, 2, 6]]
    greedy = gpt.generate_ids(prompts, max_new_tokens=8)
    stop = int(greedy[0, 3])  # row 0's first generated token
    out = gpt.generate_ids(prompts, max_new_tokens=8, stop_token_id=stop)
    assert out[0].tolist() == prompts[0] + [stop] * 8
    # Row 1 runs on until it produces the stop token itself.
    row = greedy[1].tolist()
    end = row.index(stop, 3) + 1 if stop in row[3:] else len(row)
    assert out[1, :end].tolist() == row[:end]
    assert (out[1, end:] == stop).all()


def test_beam_search_with_one_beam_is_greedy(gpt):
    prompts = [[3, 14, 15], [9, 2, 6]]
    np.testing.assert_array_equal(
        gpt.generate_ids(prompts, 5, sampler="beam", num_beams=1),
        gpt.generate_ids(prompts, 5),
    )


def sequence_log_prob(gpt, ids, prompt_length):
    logits = full_gpt_logits(gpt, [ids])[0]
    log_probs = tf.nn.log_softmax(logits).numpy()
    return sum(log_probs[t - 1, ids[t]] for t in range(prompt_length, len(ids)))


def test_beam_search_finds_a_sequence_at_least_as_likely_as_greedy(gpt):
    prompt = [7, 8, 9]
    greedy = gpt.generate_ids([prompt], 4)[0].tolist()
    beam = gpt.generate_ids([prompt], 4, sampler="beam", num_beams=5)[0].tolist()
    assert beam[:3] == prompt
    assert sequence_log_prob(gpt, beam, 3) >= sequence_log_prob(gpt, greedy, 3) - 1e-5


def test_top_k_samples_only_among_the_k_best():
    logits = tf.constant([[0.0, 5.0, 4.0, -1.0, 3.0, 2.0]] * 200)
    sampler = generation.TopKSampler(k=2)
    drawn = set(sampler(logits, tf.constant([1, 2])).numpy().tolist())
    assert drawn == {1, 2}


def test_top_p_keeps_the_smallest_nucleus():
    probabilities = np.array([0.5, 0.3, 0.15, 0.05])
    logits = tf.constant(np.log(np.tile(probabilities, (500, 1))), tf.float32)
    drawn = generation.TopPSampler(p=0.75)(logits, tf.constant([3, 4])).numpy()
    assert set(drawn.tolist()) == {0, 1}  # 0.5 < 0.75, 0.5 + 0.3 reaches it
    assert abs(np.mean(drawn == 0) - 0.5 / 0.8) < 0.08


def test_sampling_is_reproducible_with_a_seed(gpt):
    a = gpt.generate_ids([[1, 2]], 6, sampler="top_k", k=20, seed=7)
    b = gpt.generate_ids([[1, 2]], 6, sampler="top_k", k=20, seed=7)
    np.testing.assert_array_equal(a, b)


def test_generate_rejects_empty_prompts_and_overlong_requests(gpt):
    with pytest.raises(ValueError, match="at least one token"):
        gpt.generate_ids([[]], 3)
    with pytest.raises(ValueError, match="exceeds max_length=32"):
        gpt.generate_ids([[1] * 30], 5)
    with pytest.raises(ValueError, match="unknown sampler 'nucleus'"):
        gpt.generate_ids([[1]], 3, sampler="nucleus")


def test_seq2seq_cached_greedy_decoding_equals_full_recomputation(seq2seq):
    sources = [[5, 6, 7, 8], [9, 10]]
    out = seq2seq.generate_ids(sources, max_new_tokens=5, start_token_id=1)
    for row, source in enumerate(sources):
        target = [1]
        for _ in range(5):
            logits = seq2seq(
                {
                    "encoder_token_ids": np.array([source], "int32"),
                    "encoder_padding_mask": np.ones((1, len(source)), "int32"),
                    "decoder_token_ids": np.array([target], "int32"),
                    "decoder_padding_mask": np.ones((1, len(target)), "int32"),
                }
            ).numpy()
            target.append(int(np.argmax(logits[0, -1])))
        assert out[row].tolist() == target
