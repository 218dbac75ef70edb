"""Parallel text (sentence pairs) for translation: files, and batches by token count.

Pairs come from

* a folder of Multi30k-style files `<split>.<language>[.gz]` (`train.de.gz`,
  `train.en.gz`, ...): `split_files(folder, split, "de", "en")`;
* two aligned files, line `i` of one translating line `i` of the other;
* one TSV file with two columns, source then target.

Any file may be gzip-compressed (a `.gz` name). A pair of files whose line
counts differ, or a TSV line without exactly two columns, is a `ValueError`
naming the file, the line and the fix.

`token_batches` tokenizes pairs in tf.data and groups them by length, each
batch holding about `batch_tokens` tokens (padding included), as the
Transformer was trained.

    sources, targets = read_pairs(split_files("multi30k", "train", "de", "en"))
"""

import gzip
import os

import tensorflow as tf

from tfplm.data.pipeline import reshuffled, shard
from tfplm.data.text import not_utf8

_BUCKET_LENGTHS = (8, 12, 16, 20, 24, 28, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 384, 512)


def _lines(path):
    """The lines of a UTF-8 (optionally gzip) file, without line ends."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw_lines = f.read().split(b"\n")
    except (OSError, EOFError) as error:  # a missing file, or a truncated or non-gzip .gz
        raise ValueError(f"{path}: cannot be read ({error})") from None
    if raw_lines and raw_lines[-1] == b"":
        raw_lines.pop()
    lines = []
    for number, raw in enumerate(raw_lines, start=1):
        try:
            lines.append(raw.decode("utf-8-sig" if number == 1 else "utf-8").rstrip("\r"))
        except UnicodeDecodeError as error:
            raise not_utf8(path, number, error) from None
    return lines


def split_files(folder, split, source_language, target_language):
    """The two files of a Multi30k-style split: `folder/<split>.<language>[.gz]`.

    Example:
    >>> split_files("multi30k", "train", "de", "en")  # doctest: +SKIP
    ('multi30k/train.de.gz', 'multi30k/train.en.gz')
    """
    paths = []
    for language in (source_language, target_language):
        plain = os.path.join(folder, f"{split}.{language}")
        found = [p for p in (plain, plain + ".gz") if os.path.isfile(p)]
        if not found:
            raise ValueError(
                f"{plain}[.gz] does not exist; the folder needs <split>.<language>[.gz] files, "
                f"e.g. {split}.{source_language}.gz and {split}.{target_language}.gz"
            )
        paths.append(found[0])
    return tuple(paths)


def _split_rows(parts, *tensors):
    """A dataset of `parts` consecutive row slices of each tensor (the last ones may be shorter)."""
    rows = tf.shape(tensors[0])[0]
    size = (rows + parts - 1) // parts
    starts = tf.range(parts) * size
    return tf.data.Dataset.from_tensor_slices(starts).map(
        lambda start: tuple(t[start : tf.minimum(start + size, rows)] for t in tensors)
    )


def read_pairs(files):
    """Sentence pairs from two aligned files, or from one two-column TSV file.

    Args:
        files: (source file, target file), or a TSV path (or a 1-tuple of one).

    Returns:
        (sources, targets): two lists of str of equal length.

    Raises:
        ValueError: misaligned files (with both line counts), a TSV line without
            exactly two columns, text that is not UTF-8, or no pairs at all.
    """
    if isinstance(files, str):
        files = (files,)
    files = tuple(files)
    if len(files) == 1:
        sources, targets = [], []
        for number, line in enumerate(_lines(files[0]), start=1):
            columns = line.split("\t")
            if len(columns) != 2:
                raise ValueError(
                    f"{files[0]}:{number}: {len(columns)} tab-separated column(s) in {line[:60]!r}; a parallel "
                    "TSV file has two per line: the source, a tab, the target"
                )
            sources.append(columns[0])
            targets.append(columns[1])
    elif len(files) == 2:
        sources, targets = _lines(files[0]), _lines(files[1])
        if len(sources) != len(targets):
            raise ValueError(
                f"{files[0]} has {len(sources)} lines but {files[1]} has {len(targets)}; parallel files must be "
                "aligned line by line (line i of one translates line i of the other)"
            )
    else:
        raise ValueError(f"parallel files: expected (source, target) or one TSV file, got {len(files)} files")
    if not sources:
        raise ValueError(f"{', '.join(files)}: no sentence pairs")
    return sources, targets


def token_batches(
    sources,
    targets,
    tokenizer,
    batch_tokens,
    training,
    max_length=128,
    batch_size=64,
    shuffle_buffer_size=100_000,
    input_context=None,
    seed=None,
):
    """Batches of `(features, labels, weights)` for an encoder-decoder model.

    A source is its tokens and "</s>"; the decoder reads "</s>" then the
    target's tokens and learns to predict the target's tokens then "</s>".

    Args:
        sources, targets: lists of str, aligned.
        tokenizer: has `tokenize` and `end_token_id` (a `SentencePieceTokenizer`).
        batch_tokens: training: about this many tokens (source or target,
            padding included) per batch (per replica with `input_context`).
        training: shuffle anew every pass, repeat, drop pairs with more than
            `max_length` tokens on either side, and batch by length;
            otherwise keep the order and every pair, `batch_size` per batch.
        max_length: training pairs longer than this are skipped.
        batch_size: pairs per evaluation batch.
        shuffle_buffer_size: pairs shuffled together.
        input_context: a `tf.distribute.InputContext` (this pipeline's shard).
        seed: the shuffles' seed (the same seed gives the same batches).

    Returns:
        a dataset of ({"encoder_token_ids", "encoder_padding_mask",
        "decoder_token_ids", "decoder_padding_mask"}, labels, weights): int32
        [batch, length] each, and float32 weights, 1 on target tokens.
    """
    end = tokenizer.end_token_id
    # Consecutive batches go to the replicas of one step: they are cut from one
    # batch of the same length (Keras builds a model from their mean, which
    # needs equal shapes, and no replica then waits on a longer one).
    replicas = input_context.num_replicas_in_sync // input_context.num_input_pipelines if input_context else 1
    pairs = tf.data.Dataset.from_tensor_slices((tf.constant(sources, tf.string), tf.constant(targets, tf.string)))
    pairs = shard(pairs, input_context)
    if training:
        pairs = reshuffled(pairs, shuffle_buffer_size, seed, endless=True)

    def tokenize(source, target):
        ends = tf.constant([end], tf.int32)
        source, target = tf.cast(tokenizer.tokenize(source), tf.int32), tf.cast(tokenizer.tokenize(target), tf.int32)
        return tf.concat([source, ends], axis=0), tf.concat([ends, target, ends], axis=0)

    pairs = pairs.map(tokenize, num_parallel_calls=tf.data.AUTOTUNE)

    def length(source, target):
        return tf.maximum(tf.shape(source)[0], tf.shape(target)[0] - 1)

    if training:
        pairs = pairs.filter(lambda source, target: length(source, target) <= max_length)
        # Buckets of lengths up to 8, 12, ..., max_length; a bucket's batches hold batch_tokens // its longest.
        longest = [b for b in _BUCKET_LENGTHS if b < max_length] + [max_length]
        sizes = [replicas * max(1, batch_tokens // b) for b in longest]
        boundaries = [b + 1 for b in longest[:-1]]  # bucket_by_sequence_length's bounds are exclusive
        batches = pairs.bucket_by_sequence_length(length, boundaries, sizes, pad_to_bucket_boundary=False)
    else:
        batches = pairs.padded_batch(replicas * batch_size)
    if replicas > 1:
        batches = batches.flat_map(lambda source, target: _split_rows(replicas, source, target))

    def features(source, target):
        decoder_ids, labels = target[:, :-1], target[:, 1:]
        # Padding is id 0, which no token has; the decoder reads a token where a label is one.
        mask = tf.cast(labels > 0, tf.int32)
        inputs = {
            "encoder_token_ids": source,
            "encoder_padding_mask": tf.cast(source > 0, tf.int32),
            "decoder_token_ids": decoder_ids,
            "decoder_padding_mask": mask,
        }
        return inputs, labels, tf.cast(mask, tf.float32)

    return batches.map(features, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)

