"""BERT pretraining TFRecords: written from raw text (`create_pretraining_data`) and
read back for training (`bert_pretraining_dataset`).

Records carry google-research/bert's feature names, dtypes and padding, so
files made by either tool train in both; the instances are its own
(`bert_instances`). Memory stays bounded. The original holds every instance of
the corpus in RAM; this streams:

* documents come from up to `cycle_length` input files at a time, round
  robin, so a window mixes files (books) and a "random next" segment usually
  comes from another file (`documents.interleave_documents`);
* every `window_size` documents form a window: it is tokenized in one batch,
  turned into instances exactly as the original turns a whole corpus (shuffle
  the documents, `dupe_factor` passes, shuffle the instances; the random next
  document comes from the same window) and written out before the next window
  is read;
* window `i` goes to shard `i % num_shards`, and each shard is written by one
  worker process, with a random generator seeded from (seed, i). The bytes of
  every shard depend only on the inputs, the flags and the seed, never on
  `num_workers`.

Window 0 uses `random.Random(random_seed)` itself: a corpus that fits in one
window, read with `cycle_length=1` into one shard, gives exactly the instances,
in the same order, that google-research/bert's script gives with the same seed
and vocabulary.
"""

import contextlib
import ctypes
import dataclasses
import glob
import multiprocessing
import os
import random
import signal
import sys

import tensorflow as tf
from absl import logging

from tfplm import publish
from tfplm.data import text as text_lib
from tfplm.data.bert_instances import InstanceMaker, PretrainingDataConfig
from tfplm.data.documents import check_input_format, tokenized_windows
from tfplm.data.pipeline import shard, shard_files
from tfplm.tokenizers.wordpiece import check_bert_vocabulary, read_vocabulary

# google-research/bert's feature names and dtypes (also what its run_pretraining.py reads).
FEATURES = {
    "input_ids": "int64",
    "input_mask": "int64",
    "segment_ids": "int64",
    "masked_lm_positions": "int64",
    "masked_lm_ids": "int64",
    "masked_lm_weights": "float32",
    "next_sentence_labels": "int64",
}


# --- writing ---------------------------------------------------------------------


def window_rng(seed, window_index):
    """The random generator of window `window_index`.

    Window 0 draws from `random.Random(seed)`, as google-research/bert draws
    for its whole corpus; the others from a generator seeded by "seed/index"
    (string seeds hash the same in every process and Python version).
    """
    return random.Random(seed if window_index == 0 else f"{seed}/{window_index}")


def serialize_instance(instance, max_seq_length, max_predictions_per_seq):
    """A serialized tf.train.Example with google-research/bert's features, padded as it pads."""
    pad = max_seq_length - len(instance.input_ids)
    predictions = len(instance.masked_lm_positions)
    pad_predictions = max_predictions_per_seq - predictions

    def ints(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=values))

    features = {
        "input_ids": ints(instance.input_ids + [0] * pad),
        "input_mask": ints([1] * len(instance.input_ids) + [0] * pad),
        "segment_ids": ints(instance.segment_ids + [0] * pad),
        "masked_lm_positions": ints(instance.masked_lm_positions + [0] * pad_predictions),
        "masked_lm_ids": ints(instance.masked_lm_ids + [0] * pad_predictions),
        "masked_lm_weights": tf.train.Feature(
            float_list=tf.train.FloatList(value=[1.0] * predictions + [0.0] * pad_predictions)
        ),
        "next_sentence_labels": ints([1 if instance.is_random_next else 0]),
    }
    example = tf.train.Example(features=tf.train.Features(feature=features))
    return example.SerializeToString(deterministic=True)  # same bytes in every process


def shard_paths(output_prefix, num_shards):
    """`PREFIX-00000-of-0000K.tfrecord`, ..., one path per shard."""
    return [f"{output_prefix}-{k:05d}-of-{num_shards:05d}.tfrecord" for k in range(num_shards)]


@dataclasses.dataclass(frozen=True)
class _Job:
    files: list
    input_format: str
    vocab_file: str
    lowercase: bool
    config: PretrainingDataConfig
    num_shards: int
    outputs: dict  # shard k -> the temporary file it is written to, for this worker's shards
    worker: int
    parent: int = 0  # the pid whose end ends this worker (0: none, it runs in that process)


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent(parent):
    """Pool initializer: a worker ends when the process that started it ends.

    A worker that outlived a killed parent would finish its shards for nobody
    (the parent publishes them, and is gone). On Linux the kernel kills the
    worker (prctl PR_SET_PDEATHSIG); elsewhere `_write_shards` checks between
    windows.
    """
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
            logging.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    if os.getppid() != parent:  # the parent ended before prctl took effect
        os._exit(1)


def _write_shards(job):
    """One worker: writes its shards to their temporary files; returns {k: instances}."""
    from tfplm.tokenizers import WordPieceTokenizer  # each process builds its own

    config = job.config
    tokenizer = WordPieceTokenizer(job.vocab_file, lowercase=job.lowercase)
    maker = InstanceMaker(config, tokenizer.get_vocabulary())
    counts = dict.fromkeys(job.outputs, 0)
    with contextlib.ExitStack() as stack:
        writers = {k: stack.enter_context(tf.io.TFRecordWriter(path)) for k, path in job.outputs.items()}
        windows = tokenized_windows(
            job.files, tokenizer, job.input_format, config, keep=lambda i: i % job.num_shards in writers
        )
        for window_index, documents in windows:
            if job.parent and os.getppid() != job.parent:
                raise RuntimeError(f"worker {job.worker}: the process that started it has ended")
            k = window_index % job.num_shards
            instances = maker.from_documents(documents, window_rng(config.random_seed, window_index))
            for instance in instances:
                writers[k].write(serialize_instance(instance, config.max_seq_length, config.max_predictions_per_seq))
            counts[k] += len(instances)
            logging.log_every_n(
                logging.INFO, "worker %d: window %d, %d instances", 20, job.worker, window_index, len(instances)
            )
    return counts


def _leftover_temporaries(paths):
    """Hidden temporaries (`tfplm.publish`'s `.NAME.tmp-*`) that a killed run left beside `paths`."""
    found = []
    for path in paths:
        folder, name = os.path.split(path)
        found += glob.glob(os.path.join(glob.escape(folder), f".{glob.escape(name)}.tmp-*"))
    return found


@contextlib.contextmanager
def _folder_removed_on_failure(folder):
    """Creates `folder` (and its parents) if missing; removes what it created if the block fails."""
    created, path = [], os.path.abspath(folder)
    while not os.path.exists(path):
        created.append(path)
        path = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    try:
        yield
    except BaseException:
        for path in created:  # deepest first; a folder someone else wrote into stays
            with contextlib.suppress(OSError):
                os.rmdir(path)
        raise


def create_pretraining_data(
    files,
    vocab_file,
    output_prefix,
    config=PretrainingDataConfig(),
    input_format="bert",
    lowercase=True,
    num_shards=1,
    num_workers=1,
):
    """Writes BERT pretraining TFRecords for `files` (see the module docstring).

    Nothing is visible under a shard's name before every shard is complete:
    each is written under a hidden temporary name (`tfplm.publish`) and all
    are renamed into place at the end, so a glob like `PREFIX-*` never picks
    up a partial shard or a partial set. Worker processes end with the process
    that started them. Hidden temporaries that a killed run (kill -9) leaves
    are removed by the next run with the same `output_prefix` and
    `num_shards`; run one writer per prefix at a time.

    Args:
        files: input text files, in a fixed order (the output depends on it).
        vocab_file: the WordPiece vocab.txt the model will use.
        output_prefix: shards are `{output_prefix}-00000-of-0000K.tfrecord`.
        config: a `PretrainingDataConfig`.
        input_format: "bert" or "prose" (see `documents.read_documents`).
        lowercase: the vocabulary is uncased.
        num_shards: output files; window `i` goes to shard `i % num_shards`.
        num_workers: processes, each writing whole shards (at most `num_shards`
            are used). The output does not depend on it.

    Returns:
        {shard path: number of instances}.

    Raises:
        ValueError: for missing or non-UTF-8 input files (naming the file and
            line), a bad vocabulary, or input without any text (0 instances);
            nothing is written then.

    Example:
    >>> create_pretraining_data(["wiki.txt"], "vocab.txt", "data/wiki",
    ...     PretrainingDataConfig(dupe_factor=5), num_shards=4, num_workers=2)  # doctest: +SKIP
    """
    files = [str(f) for f in files]
    if not files:
        raise ValueError("no input files; pass at least one text file")
    missing = [f for f in files if not os.path.isfile(f)]
    if missing:
        raise ValueError(f"input files not found: {missing[:5]}")
    if num_shards < 1:
        raise ValueError(f"num_shards={num_shards}; expected >= 1")
    check_input_format(input_format)
    # A bad vocabulary fails here, before any worker starts.
    check_bert_vocabulary(read_vocabulary(vocab_file), f"vocab file {str(vocab_file)!r}")
    output_prefix = str(output_prefix)
    paths = shard_paths(output_prefix, num_shards)
    for path in _leftover_temporaries(paths):
        logging.warning("removing %s, left by a run that was killed", path)
        os.remove(path)
    num_workers = max(1, min(num_workers, num_shards))
    with _folder_removed_on_failure(os.path.dirname(os.path.abspath(output_prefix))), contextlib.ExitStack() as stack:
        temporary = {k: stack.enter_context(publish.file(path)) for k, path in enumerate(paths)}
        parent = os.getpid() if num_workers > 1 else 0
        jobs = [
            _Job(files, input_format, str(vocab_file), lowercase, config, num_shards,
                 {k: path for k, path in temporary.items() if k % num_workers == w}, w, parent)
            for w in range(num_workers)
        ]
        if num_workers == 1:
            results = [_write_shards(jobs[0])]
        else:
            # "spawn": a fresh TensorFlow runtime per worker (forking one is unsafe).
            context = multiprocessing.get_context("spawn")
            with context.Pool(num_workers, initializer=_die_with_parent, initargs=(parent,)) as pool:
                results = pool.map(_write_shards, jobs)
        counts = {paths[k]: n for result in results for k, n in result.items()}
        counts = {path: counts[path] for path in paths}
        if not sum(counts.values()):
            shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
            raise ValueError(
                f"no instances: the input ({shown}) holds no text in input_format={input_format!r}; "
                "pass files with text (nothing was written)"
            )
        empty = [path for path, n in counts.items() if not n]
        if empty:
            logging.warning(
                "%d of %d shards have no instances (fewer windows of %d documents than shards): %s; "
                "readers skip them, or use fewer shards",
                len(empty), num_shards, config.window_size, ", ".join(os.path.basename(p) for p in empty[:3]),
            )
    # Renamed into place: the ExitStack published every shard when its block ended.
    logging.info("wrote %d instances to %d shards", sum(counts.values()), num_shards)
    return counts


# --- reading -----------------------------------------------------------------------


def _feature_lengths(seq_length, max_predictions_per_seq):
    return {
        name: 1 if name == "next_sentence_labels" else (max_predictions_per_seq if name.startswith("masked_lm") else seq_length)
        for name in FEATURES
    }


def check_record_files(files):
    """The files holding records, after checking each one's framing.

    A TFRecord file is a sequence of (8-byte length, 4-byte CRC, data, 4-byte
    CRC) records. Walking the lengths (seeking past the data, so this reads a
    few bytes per record) finds a file that a killed writer cut short or that
    is not TFRecords at all, which TensorFlow would report mid-training as
    "truncated record at <offset>" without naming the file. Empty (0-byte)
    files hold no records: they are skipped with a warning that counts them
    (training on them alone would wait forever for a first batch).

    Args:
        files: TFRecord paths.

    Returns:
        The files that are not empty, in order.

    Raises:
        ValueError: naming the first truncated or malformed file and the
            record where it breaks, or when every file is empty.
    """
    kept = []
    for path in files:
        size = tf.io.gfile.stat(path).length
        if size:
            _check_framing(path, size)
            kept.append(path)
    if len(kept) < len(files):
        kept_set = set(kept)
        empty = [path for path in files if path not in kept_set]
        if not kept:
            raise ValueError(f"all {len(files)} record files are empty (0 bytes), e.g. {empty[0]}; write them again")
        if tuple(empty) not in _WARNED_EMPTY:  # once per process: a run reads its files again for every fit
            _WARNED_EMPTY.add(tuple(empty))
            logging.warning(
                "skipping %d empty (0-byte) record files of %d: %s", len(empty), len(files),
                ", ".join(empty[:5]) + (", ..." if len(empty) > 5 else ""),
            )
    return kept


_WARNED_EMPTY = set()


def _check_framing(path, size):
    # Python's own buffered file for local paths: ~1 µs a record, GFile's ~15.
    with (tf.io.gfile.GFile(path, "rb") if "://" in path else open(path, "rb")) as f:
        offset, count = 0, 0
        while offset < size:
            f.seek(offset)
            header = f.read(8)
            end = offset + 16 + int.from_bytes(header, "little") if len(header) == 8 else size + 1
            if end > size:
                raise ValueError(
                    f"{path}: truncated or not a TFRecord file: record {count} at byte {offset} "
                    f"runs past the end of the file ({size} bytes); remove the file or write it again"
                )
            offset, count = end, count + 1


def _check_first_record(path, seq_length, max_predictions_per_seq):
    """A clear error for files written with other lengths or without BERT's features."""
    record = next(iter(tf.data.TFRecordDataset(path).take(1)), None)
    if record is None:
        return
    try:
        example = tf.train.Example.FromString(record.numpy())
    except Exception as error:  # noqa: BLE001 - any parse failure means "not this format"
        raise ValueError(f"{path!r} does not hold tf.train.Example records: {error}") from None
    features = example.features.feature
    missing = [name for name in FEATURES if name not in features]
    if missing:
        raise ValueError(
            f"records in {path!r} lack the features {missing}; expected BERT pretraining "
            f"records ({', '.join(FEATURES)})"
        )
    for name, expected in _feature_lengths(seq_length, max_predictions_per_seq).items():
        kind = "float_list" if FEATURES[name] == "float32" else "int64_list"
        actual = len(getattr(features[name], kind).value)
        if actual != expected:
            flag = "seq_length" if expected == seq_length else "max_predictions_per_seq"
            raise ValueError(
                f"records in {path!r} have {actual} values of {name!r} but {flag} is {expected}; "
                f"pass the max_seq_length / max_predictions_per_seq the data was written with"
            )


def _parse_batch(seq_length, max_predictions_per_seq):
    spec = {
        name: tf.io.FixedLenFeature([length], tf.float32 if FEATURES[name] == "float32" else tf.int64)
        for name, length in _feature_lengths(seq_length, max_predictions_per_seq).items()
    }

    def parse(records):
        example = tf.io.parse_example(records, spec)
        as_int = {k: tf.cast(v, tf.int32) for k, v in example.items() if k != "masked_lm_weights"}
        features = {
            "input_word_ids": as_int["input_ids"],
            "input_mask": as_int["input_mask"],
            "input_type_ids": as_int["segment_ids"],
            "masked_lm_positions": as_int["masked_lm_positions"],
        }
        labels = {
            "masked_lm_ids": as_int["masked_lm_ids"],
            "masked_lm_weights": example["masked_lm_weights"],
            "next_sentence_labels": as_int["next_sentence_labels"][:, 0],
        }
        return features, labels

    return parse


def bert_pretraining_dataset(
    file_pattern,
    seq_length,
    max_predictions_per_seq,
    batch_size,
    is_training,
    input_context=None,
    shuffle_buffer_size=10_000,
    seed=None,
    cycle_length=8,
):
    """Batches of BERT pretraining data from TFRecords in google-research/bert's format.

    Args:
        file_pattern: glob(s), comma-separated.
        seq_length, max_predictions_per_seq: as the files were written.
        batch_size: examples per batch (per replica when `input_context` is given).
        is_training: shuffle files and records, repeat forever, drop the last
            partial batch. Otherwise one pass in file order.
        input_context: a `tf.distribute.InputContext`. With at least as many
            files as input pipelines each pipeline reads its own files;
            otherwise each reads every file and keeps its own records
            (record `j` of a file goes to pipeline `j % num_input_pipelines`;
            see `pipeline.shard_files`).
        shuffle_buffer_size: records shuffled together when training; 1 keeps
            the files' order (and a deterministic interleave).
        seed: seed of the shuffles.
        cycle_length: files read in parallel.

    Returns:
        A `tf.data.Dataset` of `(features, labels)`:

            features = {
                "input_word_ids":      int32 [batch, seq_length],
                "input_mask":          int32 [batch, seq_length],  # 1 = real token
                "input_type_ids":      int32 [batch, seq_length],  # 0 = A, 1 = B
                "masked_lm_positions": int32 [batch, max_predictions_per_seq],
            }
            labels = {
                "masked_lm_ids":        int32 [batch, max_predictions_per_seq],
                "masked_lm_weights":    float32 [batch, max_predictions_per_seq],  # 0 = padding
                "next_sentence_labels": int32 [batch],  # 1 = B is a random segment
            }

        The batch dimension is static when training (`drop_remainder`).

    Example:
    >>> dataset = bert_pretraining_dataset("data/books-*", 128, 20, 32,
    ...     is_training=True)  # doctest: +SKIP
    """
    files = check_record_files(text_lib.expand_files(file_pattern))
    _check_first_record(files[0], seq_length, max_predictions_per_seq)
    files, records_context = shard_files(files, input_context)
    shuffle = is_training and shuffle_buffer_size > 1
    dataset = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        dataset = dataset.shuffle(len(files), seed=seed)
    if is_training:
        dataset = dataset.repeat()

    def read(path):
        # Sharding each file's records is a partition whatever order files come in.
        return shard(tf.data.TFRecordDataset(path), records_context)

    dataset = dataset.interleave(
        read,
        cycle_length=min(len(files), cycle_length),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True,  # the same stream for the same seed: exact resumes
    )
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer_size, seed=seed)
    # Parsing whole batches is several times faster than one record at a time.
    dataset = dataset.batch(batch_size, drop_remainder=is_training)
    dataset = dataset.map(_parse_batch(seq_length, max_predictions_per_seq), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)
