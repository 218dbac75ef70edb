"""Dynamic masking: BERT pretraining batches straight from raw text, new masks every epoch.

The sentence pairs are BERT's own (`InstanceMaker.segment_pairs`: target
lengths, A/B chunks of whole sentences, 50% actual next / 50% from another
document of the window, `truncate_seq_pair`), made from the same streamed,
batch-tokenized windows as the TFRecord writer; when training they are drawn
anew every epoch. The masking runs in the tf.data graph
(`mask_tokens`): it picks `masked_lm_prob` of the tokens that are not [CLS],
[SEP] or padding (at most `max_predictions_per_seq` per row), replaces 80% of
them with [MASK], 10% with a random token and keeps 10%. Its random numbers are
stateless, keyed by (seed, input pipeline, batch number): the same seed gives
the same masks in any process, whatever ran before it; training batches get new
masks every epoch (the batch number keeps counting) and every evaluation pass
masks its batches alike.
"""

import itertools
import random

import tensorflow as tf
import tensorflow_text as tf_text

from tfplm.data.bert_instances import InstanceMaker, PretrainingDataConfig
from tfplm.data.documents import check_input_format, tokenized_windows
from tfplm.data.pipeline import input_pipeline
from tfplm.data.text import expand_files


def mask_tokens(token_ids, tokenizer, max_predictions_per_seq, seed, masked_lm_prob=0.15):
    """BERT's masking of packed ids, drawn in the graph with stateless random ops.

    Per row, `min(max_predictions_per_seq, ceil(masked_lm_prob * n))` of the
    `n` tokens that are not [CLS], [SEP] or [PAD] are chosen, each subset
    equally likely; 80% of them become [MASK], 10% a random id, 10% stay.

    Args:
        token_ids: int RaggedTensor [batch, None], e.g. `[CLS] A [SEP] B [SEP]` rows.
        tokenizer: gives `vocabulary_size()` and the special ids.
        seed: int [2]: the same seed gives the same masks, in any process and
            whatever random ops ran before.

    Returns:
        (masked ids: ragged like `token_ids`; positions, original ids: int32
        [batch, max_predictions_per_seq] (sorted positions, padded with 0);
        weights: float32 [batch, max_predictions_per_seq], 1 for a real
        prediction, 0 for padding).
    """
    choice_seed, value_seed, token_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    token_ids = tf.cast(token_ids, tf.int32)
    specials = tf.constant([tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id], tf.int32)
    selectable = tf.reduce_all(tf.not_equal(token_ids.flat_values[:, None], specials), axis=1)
    # A uniformly random subset of each row's selectable tokens: those with the smallest
    # random scores. Specials score 2 and padding 3, so they come after every selectable token.
    scores = tf.random.stateless_uniform(tf.shape(selectable), choice_seed)
    scores = token_ids.with_flat_values(tf.where(selectable, scores, 2.0)).to_tensor(3.0)
    batch = tf.shape(scores)[0]
    scores = tf.concat([scores, tf.fill([batch, max_predictions_per_seq], 3.0)], axis=1)
    candidates = tf.argsort(scores, axis=1, stable=True)[:, :max_predictions_per_seq]
    selectable_per_row = tf.reduce_sum(tf.cast(scores < 2.0, tf.float32), axis=1)
    count = tf.minimum(max_predictions_per_seq, tf.cast(tf.math.ceil(selectable_per_row * masked_lm_prob), tf.int32))
    chosen = tf.range(max_predictions_per_seq)[None, :] < count[:, None]
    # In position order; the unchosen columns (sorted last) become 0.
    beyond = tf.shape(scores)[1]
    positions = tf.sort(tf.where(chosen, candidates, beyond), axis=1)
    positions = tf.where(chosen, positions, 0)
    ids = token_ids.to_tensor(0)
    original = tf.where(chosen, tf.gather(ids, positions, batch_dims=1), 0)
    # 80% [MASK], 10% a random id of the vocabulary, 10% the original id.
    shape = tf.shape(positions)
    draw = tf.random.stateless_uniform(shape, value_seed)
    random_ids = tf.random.stateless_uniform(shape, token_seed, 0, tokenizer.vocabulary_size(), dtype=tf.int32)
    values = tf.where(draw < 0.8, tokenizer.mask_token_id, tf.where(draw < 0.9, random_ids, original))
    rows = tf.broadcast_to(tf.range(batch)[:, None], shape)
    updates = tf.boolean_mask(tf.stack([rows, positions], axis=-1), chosen)
    masked = tf.tensor_scatter_nd_update(ids, updates, tf.boolean_mask(values, chosen))
    masked = tf.RaggedTensor.from_tensor(masked, lengths=token_ids.row_lengths())
    return masked, positions, original, tf.cast(chosen, tf.float32)


def segment_pairs(files, tokenizer, input_format, config, seed, epoch=0, pipeline=0, num_pipelines=1):
    """Yields unmasked BERT inputs (ids, segment ids, is_random_next) from text files.

    `[CLS] A [SEP] B [SEP]` as int lists; windows `i` with
    `i % num_pipelines == pipeline` only. The pairs depend on (seed, epoch).
    """
    maker = InstanceMaker(config, tokenizer.get_vocabulary())
    cls_id, sep_id = maker.cls_id, maker.sep_id
    windows = tokenized_windows(files, tokenizer, input_format, config, keep=lambda i: i % num_pipelines == pipeline)
    for window_index, documents in windows:
        rng = random.Random(f"{seed}/{epoch}/{window_index}")
        for index in range(len(documents)):
            for tokens_a, tokens_b, is_random_next in maker.segment_pairs(documents, index, rng):
                ids = [cls_id, *tokens_a, sep_id, *tokens_b, sep_id]
                segment_ids = [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1)
                yield ids, segment_ids, int(is_random_next)


def dynamic_masking_dataset(
    file_pattern,
    tokenizer,
    seq_length,
    max_predictions_per_seq,
    batch_size,
    is_training,
    input_format="bert",
    masked_lm_prob=0.15,
    input_context=None,
    seed=0,
    short_seq_prob=0.1,
    shuffle_buffer_size=10_000,
    window_size=200,
    cycle_length=8,
):
    """BERT pretraining batches from raw text, masked on the fly.

    Args:
        file_pattern: glob(s) of text files, comma-separated.
        tokenizer: a `WordPieceTokenizer`.
        seq_length, max_predictions_per_seq: the shapes of the outputs.
        batch_size: examples per batch (per replica with `input_context`).
        is_training: new pairs every epoch, shuffle, repeat, drop the last
            partial batch.
        input_format: "bert" or "prose" (see `documents.read_documents`).
        masked_lm_prob: fraction of the tokens to predict.
        input_context: a `tf.distribute.InputContext`; each input pipeline
            makes pairs from its own windows of documents.
        seed: seed of the pairs (the masks are drawn by TensorFlow ops).
        short_seq_prob, window_size, cycle_length: as in `PretrainingDataConfig`.
        shuffle_buffer_size: examples shuffled together when training.

    Returns:
        A dataset of (features, labels) with exactly the structure, dtypes and
        shapes of `tfplm.data.pretraining_records.bert_pretraining_dataset`:
        features = {"input_word_ids", "input_mask", "input_type_ids": int32
        [batch, seq_length], "masked_lm_positions": int32 [batch,
        max_predictions_per_seq]}; labels = {"masked_lm_ids": int32,
        "masked_lm_weights": float32, both [batch, max_predictions_per_seq];
        "next_sentence_labels": int32 [batch]}.

    Example:
    >>> dataset = dynamic_masking_dataset("books/*.txt", tokenizer, 128, 20, 32,
    ...     is_training=True, input_format="prose")  # doctest: +SKIP
    """
    check_input_format(input_format)
    files = expand_files(file_pattern)
    config = PretrainingDataConfig(
        max_seq_length=seq_length,
        max_predictions_per_seq=max_predictions_per_seq,
        masked_lm_prob=masked_lm_prob,
        short_seq_prob=short_seq_prob,
        window_size=window_size,
        cycle_length=cycle_length,
    )
    pipeline, num_pipelines = input_pipeline(input_context)
    # Without a single pair, a repeated dataset would wait forever for its first batch.
    if next(segment_pairs(files, tokenizer, input_format, config, seed, 0, pipeline, num_pipelines), None) is None:
        if num_pipelines == 1:
            raise ValueError(f"{file_pattern!r}: the files hold no text (input_format={input_format!r}); pass files with text")
        raise ValueError(
            f"{file_pattern!r}: input pipeline {pipeline} of {num_pipelines} gets no text: the files hold fewer "
            f"than {num_pipelines} windows of {window_size} documents; use a smaller window_size or more text"
        )
    epochs = itertools.count()

    def generate():
        # tf.data calls this once per pass (each `repeat`): a new epoch, new pairs.
        epoch = next(epochs) if is_training else 0
        yield from segment_pairs(files, tokenizer, input_format, config, seed, epoch, pipeline, num_pipelines)

    dataset = tf.data.Dataset.from_generator(
        generate,
        output_signature=(
            tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([None], tf.int32),
            tf.TensorSpec([], tf.int32),
        ),
    )
    if is_training:
        if shuffle_buffer_size > 1:
            dataset = dataset.shuffle(shuffle_buffer_size, seed=seed)
        dataset = dataset.repeat()
    dataset = dataset.ragged_batch(batch_size, drop_remainder=is_training)

    static_batch = batch_size if is_training else None
    pipeline_seed = tf.constant([seed, pipeline], tf.int64)

    def featurize(batch_number, pairs):
        ids, segment_ids, is_random_next = pairs
        batch_seed = tf.random.experimental.stateless_fold_in(pipeline_seed, batch_number)
        masked, positions, original, weights = mask_tokens(ids, tokenizer, max_predictions_per_seq, batch_seed, masked_lm_prob)
        word_ids, input_mask = tf_text.pad_model_inputs(masked, seq_length, pad_value=tokenizer.pad_token_id)
        type_ids, _ = tf_text.pad_model_inputs(segment_ids, seq_length)
        features = {
            "input_word_ids": tf.cast(word_ids, tf.int32),
            "input_mask": tf.cast(input_mask, tf.int32),
            "input_type_ids": tf.cast(type_ids, tf.int32),
            "masked_lm_positions": positions,
        }
        labels = {
            "masked_lm_ids": original,
            "masked_lm_weights": weights,
            "next_sentence_labels": is_random_next,
        }
        # Static shapes, as the TFRecord reader gives (XLA wants them).
        return tf.nest.map_structure(lambda t: tf.ensure_shape(t, [static_batch, *t.shape[1:]]), (features, labels))

    # The masks of batch i are drawn from (seed, input pipeline, i) alone, so a
    # resumed run that skips the batches it already trained on sees the masks an
    # uninterrupted run did, and the batches can be masked in parallel.
    dataset = dataset.enumerate().map(featurize, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)
