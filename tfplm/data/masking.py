"""Dynamic masking: BERT pretraining batches straight from raw text, new masks every pass.

The sentence pairs are BERT's own (`InstanceMaker.segment_pairs`: target
lengths, A/B chunks of whole sentences, 50% actual next / 50% from another
document of the window, `truncate_seq_pair`), made from the same streamed,
batch-tokenized windows as the TFRecord writer; when training they are drawn
anew every epoch. The masking runs in the tf.data graph with tensorflow_text:
`RandomItemSelector` picks `masked_lm_prob` of the tokens that are not [CLS],
[SEP] or padding (at most `max_predictions_per_seq` per row) and
`MaskValuesChooser` replaces 80% of them with [MASK], 10% with a random token
and keeps 10%. The masks change every time the dataset is iterated, for
training and evaluation alike (write TFRecords for a fixed evaluation set);
the same seed gives the same masks.
"""

import itertools
import random

import tensorflow as tf
import tensorflow_text as tf_text

from tfplm.data.bert_instances import InstanceMaker, PretrainingDataConfig
from tfplm.data.documents import check_input_format, tokenized_windows
from tfplm.data.pipeline import input_pipeline
from tfplm.data.text import expand_files


def mask_tokens(token_ids, tokenizer, max_predictions_per_seq, masked_lm_prob=0.15):
    """BERT's masking of packed ids, drawn in the graph.

    Per row, `min(max_predictions_per_seq, ceil(masked_lm_prob * n))` of the
    `n` tokens that are not [CLS], [SEP] or [PAD] are chosen; 80% of them
    become [MASK], 10% a random id, 10% stay.

    Args:
        token_ids: int RaggedTensor [batch, None], e.g. `[CLS] A [SEP] B [SEP]` rows.
        tokenizer: gives `vocabulary_size()` and the special ids.

    Returns:
        (masked ids: ragged like `token_ids`; positions, original ids: int
        [batch, max_predictions_per_seq] (sorted positions, padded with 0);
        weights: float32 [batch, max_predictions_per_seq], 1 for a real
        prediction, 0 for padding).
    """
    selector = tf_text.RandomItemSelector(
        max_selections_per_batch=max_predictions_per_seq,
        selection_rate=masked_lm_prob,
        unselectable_ids=[tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id],
    )
    chooser = tf_text.MaskValuesChooser(
        tokenizer.vocabulary_size(), tokenizer.mask_token_id, mask_token_rate=0.8, random_token_rate=0.1
    )
    masked, positions, original = tf_text.mask_language_model(token_ids, selector, chooser)
    positions, weights = tf_text.pad_model_inputs(positions, max_predictions_per_seq)
    original, _ = tf_text.pad_model_inputs(original, max_predictions_per_seq)
    return masked, positions, original, tf.cast(weights, tf.float32)


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

    def featurize(ids, segment_ids, is_random_next):
        masked, positions, original, weights = mask_tokens(ids, tokenizer, max_predictions_per_seq, masked_lm_prob)
        word_ids, input_mask = tf_text.pad_model_inputs(masked, seq_length, pad_value=tokenizer.pad_token_id)
        type_ids, _ = tf_text.pad_model_inputs(segment_ids, seq_length)
        features = {
            "input_word_ids": tf.cast(word_ids, tf.int32),
            "input_mask": tf.cast(input_mask, tf.int32),
            "input_type_ids": tf.cast(type_ids, tf.int32),
            "masked_lm_positions": tf.cast(positions, tf.int32),
        }
        labels = {
            "masked_lm_ids": tf.cast(original, tf.int32),
            "masked_lm_weights": weights,
            "next_sentence_labels": is_random_next,
        }
        # Static shapes, as the TFRecord reader gives (XLA wants them).
        return tf.nest.map_structure(lambda t: tf.ensure_shape(t, [static_batch, *t.shape[1:]]), (features, labels))

    # One batch at a time: tensorflow_text draws the masks with stateful random
    # ops, whose stream the batches would otherwise take in a varying order. In
    # order, the same seed (`keras.utils.set_random_seed`) gives the same masks
    # in every iterator, so a resumed run that skips the batches it already
    # trained on sees the masks an uninterrupted run did.
    return dataset.map(featurize).prefetch(tf.data.AUTOTUNE)
