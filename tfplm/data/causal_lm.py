"""Causal-LM data: documents tokenized into one stream, cut into fixed-length blocks.

Every document's tokens are followed by the tokenizer's end token, and the
stream is cut into blocks of `seq_length + 1` tokens, with no padding at all
(only the stream's last partial block is dropped). A block gives the inputs
(its first `seq_length` tokens) and the labels (its last `seq_length`), so
every token is a label exactly once.

Documents: "prose" files (e.g. books) are one document each, paragraphs
separated by a blank line; "bert" files (a sentence per line) have a document
per blank-line-separated block, sentences separated by spaces. Text is
streamed and tokenized a few hundred pieces (paragraphs or lines) at a time;
each piece keeps its separator at its front, so byte-level BPE splits it as it
would split the whole document.
"""

import tensorflow as tf

from tfplm.data import text as text_lib
from tfplm.data.documents import check_input_format
from tfplm.data.pipeline import shard, shard_files

_PIECES_PER_BATCH = 256


def document_pieces(files, input_format="prose"):
    """Yields (text piece, whether it ends its document), documents in file order."""
    check_input_format(input_format)
    for path in files:
        if input_format == "prose":
            pieces = [p for p in text_lib.paragraphs(text_lib.read_text(path))]
            yield from ((p if i == 0 else "\n\n" + p, i == len(pieces) - 1) for i, p in enumerate(pieces))
        else:
            previous = None  # held back until we know whether it ends a document
            for line in text_lib.utf8_lines(path):
                line = line.strip()
                if line:
                    if previous is not None:
                        yield previous, False
                        previous = " " + line
                    else:
                        previous = line
                elif previous is not None:
                    yield previous, True
                    previous = None
            if previous is not None:
                yield previous, True


def token_stream(files, tokenizer, input_format="prose"):
    """A dataset of int32 [None] runs of the token stream (concatenated, the stream)."""
    end = tf.constant([tokenizer.end_token_id], tf.int32)
    pieces = tf.data.Dataset.from_generator(
        lambda: document_pieces(files, input_format),
        output_signature=(tf.TensorSpec([], tf.string), tf.TensorSpec([], tf.bool)),
    )

    def tokenize(texts, ends_document):
        ids = tf.cast(tokenizer.tokenize(texts), tf.int32)
        ends = tf.RaggedTensor.from_row_lengths(
            tf.repeat(end, tf.reduce_sum(tf.cast(ends_document, tf.int32))),
            tf.cast(ends_document, tf.int64),
        )
        return tf.concat([ids, ends], axis=1).flat_values

    return pieces.batch(_PIECES_PER_BATCH).map(tokenize)


def token_blocks(file_pattern, tokenizer, seq_length, input_format="prose", input_context=None):
    """A dataset of int32 [seq_length + 1] blocks: the token stream, cut.

    With `input_context`, each input pipeline reads its own files when there
    are at least as many files as pipelines; otherwise every pipeline reads
    everything and keeps block `j` when `j % num_input_pipelines` is its id
    (`pipeline.shard_files`).
    """
    files, blocks_context = shard_files(text_lib.expand_files(file_pattern), input_context)
    blocks = token_stream(files, tokenizer, input_format).rebatch(seq_length + 1, drop_remainder=True)
    return shard(blocks, blocks_context)


def causal_lm_dataset(
    file_pattern,
    tokenizer,
    seq_length,
    batch_size,
    is_training,
    input_format="prose",
    input_context=None,
    shuffle_buffer_size=10_000,
    seed=None,
):
    """Batches for next-token prediction from raw text.

    Args:
        file_pattern: glob(s) of text files, comma-separated.
        tokenizer: has `tokenize` (strings → ragged ids) and `end_token_id`,
            e.g. `GPT2Tokenizer` or `SentencePieceTokenizer`.
        seq_length: tokens per example.
        batch_size: examples per batch (per replica with `input_context`).
        is_training: shuffle blocks, repeat, drop the last partial batch.
        input_format: "prose" or "bert" (see the module docstring).
        input_context: a `tf.distribute.InputContext` (see `token_blocks`).
        shuffle_buffer_size: blocks shuffled together when training.
        seed: seed of the shuffle.

    Returns:
        A dataset of `(features, labels)`:
        features = {"token_ids": int32 [batch, seq_length],
        "padding_mask": int32 [batch, seq_length], all ones};
        labels = int32 [batch, seq_length], `labels[:, t]` the token after
        `token_ids[:, t]`.

    Example:
    >>> dataset = causal_lm_dataset("books/*.txt", tokenizer, 128, 16,
    ...     is_training=True)  # doctest: +SKIP
    """
    blocks = token_blocks(file_pattern, tokenizer, seq_length, input_format, input_context)
    if is_training:
        if shuffle_buffer_size > 1:
            blocks = blocks.shuffle(shuffle_buffer_size, seed=seed)
        blocks = blocks.repeat()
    blocks = blocks.batch(batch_size, drop_remainder=is_training)

    def split(block):
        block = tf.ensure_shape(block, [batch_size if is_training else None, seq_length + 1])
        inputs = block[:, :-1]
        return {"token_ids": inputs, "padding_mask": tf.ones_like(inputs)}, block[:, 1:]

    return blocks.map(split, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
