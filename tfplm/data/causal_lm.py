"""Causal-LM data: documents tokenized into one stream, cut into fixed-length blocks.

Documents are joined with the tokenizer's end token and the stream is cut into
blocks of `seq_length + 1` tokens with no padding at all; a block gives the
inputs (its first `seq_length` tokens) and the labels (its last `seq_length`).
"""

import tensorflow as tf

from tfplm.data.pretraining import read_documents
from tfplm.data.text import expand_files


def token_blocks(file_pattern, tokenizer, seq_length, input_format="prose", input_context=None):
    """A dataset of int32 [seq_length + 1] blocks: the token stream, cut."""
    documents = [" ".join(d) for d in read_documents(expand_files(file_pattern), input_format)]
    if input_context and input_context.num_input_pipelines > 1:
        documents = documents[input_context.input_pipeline_id :: input_context.num_input_pipelines]
    if not documents:
        raise ValueError(f"no text in {file_pattern!r}")
    end = tf.constant([tokenizer.end_token_id], tf.int32)
    dataset = tf.data.Dataset.from_tensor_slices(documents).batch(256)
    # Each batch of documents becomes one flat run of tokens, end token after each.
    dataset = dataset.map(
        lambda texts: _append_end(tf.cast(tokenizer.tokenize(texts), tf.int32), end).flat_values
    )
    return dataset.rebatch(seq_length + 1, drop_remainder=True)


def _append_end(ids, end):
    ends = tf.RaggedTensor.from_row_lengths(
        tf.repeat(end, ids.nrows()), tf.ones([ids.nrows()], tf.int64)
    )
    return tf.concat([ids, ends], axis=1)


def causal_lm_dataset(
    file_pattern,
    tokenizer,
    seq_length,
    batch_size,
    is_training,
    input_format="prose",
    input_context=None,
    shuffle_buffer_size=10_000,
):
    """Batches of ({"token_ids", "padding_mask"}, labels), all int32 [batch, seq_length].

    `labels[:, t]` is the token after `token_ids[:, t]`; there is no padding,
    so `padding_mask` is all ones.
    """
    blocks = token_blocks(file_pattern, tokenizer, seq_length, input_format, input_context)
    if is_training:
        blocks = blocks.cache()
        if shuffle_buffer_size > 1:
            blocks = blocks.shuffle(shuffle_buffer_size)
        blocks = blocks.repeat()

    def split(block):
        return (
            {"token_ids": block[:-1], "padding_mask": tf.ones([seq_length], tf.int32)},
            block[1:],
        )

    blocks = blocks.map(split, num_parallel_calls=tf.data.AUTOTUNE)
    return blocks.batch(batch_size, drop_remainder=is_training).prefetch(tf.data.AUTOTUNE)
