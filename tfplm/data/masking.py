"""Dynamic masking: BERT pretraining batches straight from raw text, new masks each epoch.

Sentence pairs (50% actual next, 50% from another document) are drawn in
Python from the documents — cheap, no tensors — and everything else runs in
the tf.data graph with tensorflow_text: WordPiece, round-robin trimming,
packing, and masking with `RandomItemSelector` + `MaskValuesChooser`
(15% of the tokens, of which 80% [MASK], 10% random, 10% kept; [CLS], [SEP]
and padding are never selected). Masks are drawn anew each time the dataset is
iterated, so every epoch sees different ones.
"""

import random

import tensorflow as tf
import tensorflow_text as tf_text

from tfplm.data.pretraining import read_documents
from tfplm.data.text import expand_files


def sentence_pairs(documents, seed, max_segment_sentences=3):
    """Yields (text_a, text_b, is_random_next) from documents (lists of sentences)."""
    rng = random.Random(seed)
    for index, document in enumerate(documents):
        i = 0
        while i < len(document) - 1:
            length = rng.randint(1, max_segment_sentences)
            text_a = " ".join(document[i : i + length])
            i += length
            if i >= len(document) or rng.random() < 0.5:
                other = documents[rng.choice([k for k in range(len(documents)) if k != index] or [index])]
                start = rng.randint(0, len(other) - 1)
                yield text_a, " ".join(other[start : start + length]), 1
            else:
                yield text_a, " ".join(document[i : i + length]), 0
                i += length


def mask_tokens(token_ids, tokenizer, max_predictions_per_seq, masked_lm_prob=0.15):
    """Masks ragged packed ids [batch, None].

    Returns:
        (masked ids [batch, None] ragged, positions, original ids and weights,
        each [batch, max_predictions_per_seq] padded with 0).
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
):
    """BERT pretraining batches from raw text, with the structure of
    `tfplm.data.pretraining.bert_pretraining_dataset`.

    Args:
        file_pattern: glob(s) of text files.
        tokenizer: a `WordPieceTokenizer`.
        input_format: "bert" or "prose" (see `read_documents`).
        input_context: a `tf.distribute.InputContext`; documents are sharded.
    """
    documents = list(read_documents(expand_files(file_pattern), input_format))
    if input_context and input_context.num_input_pipelines > 1:
        documents = documents[input_context.input_pipeline_id :: input_context.num_input_pipelines]
    epoch = [seed]

    def pairs():
        epoch[0] += 1  # new pairs each time the dataset is iterated
        yield from sentence_pairs(documents, epoch[0] if is_training else seed)

    dataset = tf.data.Dataset.from_generator(
        pairs,
        output_signature=(
            tf.TensorSpec([], tf.string),
            tf.TensorSpec([], tf.string),
            tf.TensorSpec([], tf.int32),
        ),
    )
    if is_training:
        dataset = dataset.shuffle(10_000).repeat()
    dataset = dataset.batch(batch_size, drop_remainder=is_training)

    def featurize(text_a, text_b, is_random_next):
        segments = [tokenizer.tokenize(text_a), tokenizer.tokenize(text_b)]
        trimmed = tf_text.RoundRobinTrimmer(max_seq_length=seq_length - 3).trim(segments)
        ids, type_ids = tf_text.combine_segments(trimmed, tokenizer.cls_token_id, tokenizer.sep_token_id)
        masked, positions, original, weights = mask_tokens(
            ids, tokenizer, max_predictions_per_seq, masked_lm_prob
        )
        masked, input_mask = tf_text.pad_model_inputs(masked, seq_length, pad_value=tokenizer.pad_token_id)
        type_ids, _ = tf_text.pad_model_inputs(type_ids, seq_length)
        features = {
            "input_word_ids": tf.cast(masked, tf.int32),
            "input_mask": tf.cast(input_mask, tf.int32),
            "input_type_ids": tf.cast(type_ids, tf.int32),
            "masked_lm_positions": tf.cast(positions, tf.int32),
        }
        labels = {
            "masked_lm_ids": tf.cast(original, tf.int32),
            "masked_lm_weights": weights,
            "next_sentence_labels": is_random_next,
        }
        return features, labels

    return dataset.map(featurize, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
