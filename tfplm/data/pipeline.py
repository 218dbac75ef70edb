"""tf.data building blocks every task's input pipeline shares.

* `shard` and `per_replica_batch_size`: a dataset's share under a
  `tf.distribute.InputContext` (one input pipeline per worker); `shard_files`
  for readers of many files (each pipeline its own files when there are enough);
* `text_dataset` (also `tfplm.data.text_dataset`): raw texts (and labels),
  in memory or as a dataset, tokenized by a model's `BertPreprocessor` in the
  pipeline and batched by length, so short sentences do not pay for
  `seq_length`. The GLUE and text-classification tasks use it; so can a notebook:

    dataset = text_dataset(["a fine film", "dull"], [1, 0], preprocessor=classifier.preprocessor,
                           batch_size=32, training=True)
    classifier.fit(dataset, epochs=3)  # len(dataset) steps per epoch
"""

import math

import numpy as np
import tensorflow as tf


def shard(dataset, input_context):
    """This input pipeline's shard of `dataset` (all of it without a context)."""
    if input_context and input_context.num_input_pipelines > 1:
        return dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    return dataset


def input_pipeline(input_context):
    """(this input pipeline's id, the number of input pipelines); (0, 1) without a context."""
    if input_context:
        return input_context.input_pipeline_id, input_context.num_input_pipelines
    return 0, 1


def shard_files(files, input_context):
    """This input pipeline's files, and the context to `shard` what it reads from them.

    With at least as many files as input pipelines, each pipeline reads its own
    files (file `j` goes to pipeline `j % num_input_pipelines`) and keeps all it
    reads. With fewer, every pipeline reads every file and keeps its share of
    the elements: `shard(elements, context)` with the returned context.

    Args:
        files: a list of paths, in a fixed order.
        input_context: a `tf.distribute.InputContext`, or None.

    Returns:
        (files, context): the files to read; None or `input_context`, for `shard`.

    Example:
    >>> context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=1)
    >>> shard_files(["a", "b", "c"], context)
    (['b'], None)
    >>> files, context = shard_files(["a"], context)  # every pipeline reads "a" ...
    >>> [int(x) for x in shard(tf.data.Dataset.range(4), context)]  # ... and keeps its share
    [1, 3]
    """
    pipeline, num_pipelines = input_pipeline(input_context)
    if 1 < num_pipelines <= len(files):
        return files[pipeline::num_pipelines], None
    return files, input_context


def per_replica_batch_size(global_batch_size, input_context):
    """The batch each replica gets of a global batch."""
    if input_context:
        return input_context.get_per_replica_batch_size(global_batch_size)
    return global_batch_size


def length_buckets(seq_length):
    """Bucket boundaries 16, 32, 64, ... below seq_length (for `bucket_by_sequence_length`)."""
    boundaries, size = [], 16
    while size < seq_length:
        boundaries.append(size + 1)  # bucket_by_sequence_length's bounds are exclusive
        size *= 2
    return boundaries


def _strings(values, name):
    """A column of in-memory texts as a list of str (bytes are read as UTF-8)."""
    if isinstance(values, (str, bytes)):
        raise ValueError(f"{name} is a single string; pass a list of texts, e.g. [{values!r:.40}]")
    if isinstance(values, tf.Tensor):
        values = values.numpy()
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def _as_dataset(texts, labels):
    """(texts, labels) in memory → a dataset of ({"text"[, "text_b"]}, label)."""
    if isinstance(texts, tf.data.Dataset):
        if labels is not None:
            raise ValueError("labels go inside a dataset of texts: pass a dataset of (features, label)")
        return texts
    if isinstance(texts, tuple):
        if len(texts) != 2:
            raise ValueError(f"sentence pairs are a tuple (texts, texts_b); got a tuple of {len(texts)}")
        columns = {"text": _strings(texts[0], "texts"), "text_b": _strings(texts[1], "texts_b")}
    else:
        columns = {"text": _strings(texts, "texts")}
    lengths = {len(values) for values in columns.values()}
    if labels is not None:
        labels = np.asarray(labels)
        if labels.dtype.kind not in "iubf":
            raise ValueError(
                f"labels must be class ids (int) or scores (float), got {labels.dtype} values such as "
                f"{labels.flat[0]!r:.40}; map label names to ids first"
            )
        # As the file readers give them: int32 class ids, float32 scores.
        labels = labels.astype(np.int32 if labels.dtype.kind in "iub" else np.float32)
        lengths.add(len(labels))
    if len(lengths) > 1:
        raise ValueError(f"texts and labels differ in length ({sorted(lengths)}); pass one label per text")
    features = {name: tf.constant(values, tf.string, shape=[len(values)]) for name, values in columns.items()}
    return tf.data.Dataset.from_tensor_slices(features if labels is None else (features, labels))


def reshuffled(dataset, buffer_size, seed, endless):
    """`dataset` shuffled anew on every pass, and with `endless` passed over forever.

    The same seed gives the same stream however far ahead the pipeline read,
    which `shuffle(..., reshuffle_each_iteration=True).repeat()` does not
    promise: it draws new seeds for every pass the pipeline merely started,
    so what a `fit` epoch or a resumed run read depended on the speed of the
    one before (two runs with one seed ended with different weights). Here
    each iteration of the result draws one seed from a generator that
    advances once per iteration, and each pass orders blocks of `buffer_size`
    elements by keys drawn statelessly from (that seed, pass, element).
    """
    passes = tf.data.Dataset.counter() if endless else tf.data.Dataset.range(1)

    def stream(iteration_seed):
        def one_pass(number):
            def keyed(index, element):
                key = tf.random.stateless_uniform([], seed=tf.stack([iteration_seed, number * 2**32 + index]))
                return key, element

            def ordered(keys, elements):
                order = tf.argsort(keys)
                return tf.nest.map_structure(lambda values: tf.gather(values, order), elements)

            blocks = dataset.enumerate().map(keyed).batch(buffer_size).map(ordered)
            return blocks.unbatch()

        return passes.flat_map(one_pass)

    iteration_seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).take(1)
    return iteration_seeds.flat_map(stream)


def text_dataset(
    texts,
    labels=None,
    *,
    preprocessor,
    batch_size=32,
    training=False,
    pad_to_seq_length=False,
    shuffle_buffer_size=10_000,
    input_context=None,
    seed=None,
):
    """Batches of (encoder inputs[, label]) from raw text, tokenized in the pipeline.

    Training batches are shuffled and grouped by length (buckets of
    16/32/64/.../seq_length tokens), each padded to its longest example; other
    batches keep the order and are padded to their longest example. With
    `pad_to_seq_length` every example is `seq_length` long (static shapes, as
    TPUs want).

    An epoch of a training dataset of N examples is `ceil(N / batch_size)`
    batches drawn from an endlessly reshuffled stream, as the tasks count their
    steps: `len(dataset)` is known, `fit(dataset, epochs=E)` runs
    `E * len(dataset)` steps, and a bucket's last few examples wait for the
    next epoch instead of making a small batch.

    Args:
        texts: a list/array of str, a tuple (texts, texts_b) for sentence
            pairs, or a dataset of ({"text"[, "text_b"], other features}[, label]).
        labels: class ids or scores, one per text (in-memory texts only).
        preprocessor: the model's `BertPreprocessor`.
        batch_size: examples per batch (per replica under `input_context`).
        training: shuffle and bucket by length.
        pad_to_seq_length: pad every batch to `preprocessor.seq_length`.
        shuffle_buffer_size: examples shuffled together when training (each
            pass orders blocks of this many anew).
        input_context: a `tf.distribute.InputContext`: this pipeline's shard.
        seed: seed of the training shuffles: the same seed gives the same
            batches (a training run that resumes reads the same stream);
            None = TensorFlow's global seed.

    Returns:
        A `tf.data.Dataset`, prefetched.

    Example:
    >>> from tfplm.tokenizers import BertPreprocessor, WordPieceTokenizer
    >>> tokenizer = WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "film"])
    >>> dataset = text_dataset(["a film", "a"], [1, 0], preprocessor=BertPreprocessor(tokenizer), batch_size=2)
    >>> inputs, labels = next(iter(dataset))
    >>> inputs["input_word_ids"].numpy().tolist(), labels.numpy().tolist()
    ([[2, 5, 6, 3], [2, 5, 3, 0]], [1, 0])
    """
    dataset = shard(_as_dataset(texts, labels), input_context)
    labeled = isinstance(dataset.element_spec, tuple)
    seq_length = preprocessor.seq_length
    examples = int(dataset.cardinality())  # negative: unknown or infinite
    if training and examples == 0:
        raise ValueError("no examples to train on: the texts (or this input pipeline's shard) are empty")
    steps = math.ceil(examples / batch_size) if training and examples > 0 else None

    def featurize(features, label=None):
        segments = [features["text"][None]]
        if "text_b" in features:
            segments.append(features["text_b"][None])
        packed = preprocessor(tuple(segments))
        # Unpadded: batching pads to the batch's longest example.
        length = seq_length if pad_to_seq_length else tf.reduce_sum(packed["input_mask"])
        inputs = {name: value[0, :length] for name, value in packed.items()}
        inputs.update({name: value for name, value in features.items() if name not in ("text", "text_b")})
        return (inputs, label) if labeled else inputs

    if training:
        dataset = reshuffled(dataset, shuffle_buffer_size, seed, endless=bool(steps))
    dataset = dataset.map(
        (lambda features, label: featurize(features, label)) if labeled else featurize,
        num_parallel_calls=tf.data.AUTOTUNE,
    )
    if training and pad_to_seq_length:
        dataset = dataset.batch(batch_size, drop_remainder=True)
    elif training:
        boundaries = length_buckets(seq_length)
        dataset = dataset.bucket_by_sequence_length(
            lambda inputs, *label: tf.shape(inputs["input_word_ids"])[0],
            bucket_boundaries=boundaries,
            bucket_batch_sizes=[batch_size] * (len(boundaries) + 1),
            pad_to_bucket_boundary=False,
        )
    else:
        dataset = dataset.padded_batch(batch_size)
    if steps:
        dataset = dataset.take(steps).apply(tf.data.experimental.assert_cardinality(steps))
    return dataset.prefetch(tf.data.AUTOTUNE)
