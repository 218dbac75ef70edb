"""BERT pretraining data: documents → MLM + NSP instances → TFRecords, and back.

Instances follow google-research/bert's `create_pretraining_data.py` step for
step, drawing from a `random.Random` in the same order: a target length (10%
of the time a shorter one), chunks of whole sentences split into segments A and
B, B the actual continuation or (50%, and always for a one-sentence chunk)
sentences from another document, `truncate_seq_pair`, then 15% of the tokens
(at most `max_predictions_per_seq`, never [CLS]/[SEP]) chosen for prediction,
80% replaced by [MASK], 10% by a random token, 10% kept; optionally whole
words. Records carry its feature names, dtypes and padding, so files made by
either tool train in both.

Memory stays bounded. The original holds every instance of the corpus in RAM;
this streams:

* documents come from up to `cycle_length` input files at a time, round
  robin, so a window mixes files (books) and a "random next" segment usually
  comes from another file;
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

import collections
import dataclasses
import itertools
import multiprocessing
import os
import random

import tensorflow as tf
from absl import logging

from tfplm.data import text as text_lib

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


@dataclasses.dataclass(frozen=True)
class PretrainingDataConfig:
    """The flags of `create_pretraining_data`, with google-research/bert's defaults.

    Attributes:
        max_seq_length: tokens per instance, [CLS] and both [SEP]s included.
        max_predictions_per_seq: masked positions per instance, at most.
        masked_lm_prob: fraction of the tokens to predict.
        dupe_factor: passes over each window, each with different pairs and masks.
        short_seq_prob: probability of a random shorter target length.
        random_seed: the same seed gives the same bytes.
        do_whole_word_mask: mask all pieces of a word ("##" continuations) together.
        window_size: documents tokenized and turned into instances at a time;
            memory grows with it (times `dupe_factor`).
        cycle_length: input files read at a time, documents taken round robin.
        sentences_per_document: "prose" input only; see `read_documents`.
    """

    max_seq_length: int = 128
    max_predictions_per_seq: int = 20
    masked_lm_prob: float = 0.15
    dupe_factor: int = 10
    short_seq_prob: float = 0.1
    random_seed: int = 12345
    do_whole_word_mask: bool = False
    window_size: int = 200
    cycle_length: int = 8
    sentences_per_document: int = 40

    def __post_init__(self):
        if self.max_seq_length < 5:
            raise ValueError(
                f"max_seq_length={self.max_seq_length} is too short: [CLS] A [SEP] B [SEP] needs at least 5"
            )
        if self.max_predictions_per_seq < 1:
            raise ValueError(f"max_predictions_per_seq={self.max_predictions_per_seq}; expected >= 1")
        if not 0 < self.masked_lm_prob <= 1:
            raise ValueError(f"masked_lm_prob={self.masked_lm_prob}; expected a fraction in (0, 1]")
        if not 0 <= self.short_seq_prob <= 1:
            raise ValueError(f"short_seq_prob={self.short_seq_prob}; expected a probability in [0, 1]")
        for name in ("dupe_factor", "window_size", "cycle_length", "sentences_per_document"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)}; expected >= 1")


Instance = collections.namedtuple(
    "Instance", "input_ids segment_ids masked_lm_positions masked_lm_ids is_random_next"
)
Instance.__doc__ = """One training instance: token ids after masking ([CLS] A [SEP] B [SEP],
unpadded), segment ids, sorted masked positions with their original ids, and
whether B is a random segment (the NSP label 1)."""


# --- reading documents ----------------------------------------------------------


def read_documents(files, input_format="bert", sentences_per_document=40):
    """Yields documents, as lists of sentences (strings), file after file.

    Args:
        files: text files (UTF-8; a BOM is ignored).
        input_format: "bert": one sentence per line, blank lines between
            documents (google-research/bert's format). "prose": running text
            such as Project Gutenberg books (BOM, header and licence removed):
            paragraphs are split into sentences and consecutive paragraphs are
            grouped into documents of about `sentences_per_document` sentences.
            Paragraphs alone would be poor documents: many are one line of
            dialogue, and a one-sentence chunk always takes a random next
            segment, while a whole book as one document leaves no "other
            document" nearby to draw random segments from. Runs of ~40
            sentences fill 128-token pairs with coherent actual-next text, and
            random segments then come from elsewhere (usually another book,
            see `interleave_documents`).
        sentences_per_document: see "prose".
    """
    check_input_format(input_format)
    for path in files:
        if input_format == "bert":
            yield from _bert_format_documents(path)
        else:
            yield from _prose_documents(path, sentences_per_document)


def check_input_format(input_format):
    if input_format not in ("bert", "prose"):
        raise ValueError(f"input_format={input_format!r}; expected 'bert' or 'prose'")


def _bert_format_documents(path):
    document = []
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        for line in f:
            line = line.strip()
            if line:
                document.append(line)
            elif document:
                yield document
                document = []
    if document:
        yield document


def _prose_documents(path, sentences_per_document):
    document = []
    for paragraph in text_lib.paragraphs(text_lib.read_text(path)):
        document.extend(text_lib.split_sentences(paragraph))
        if len(document) >= sentences_per_document:
            yield document
            document = []
    if document:
        yield document


def interleave_documents(files, input_format="bert", cycle_length=8, sentences_per_document=40):
    """Documents of up to `cycle_length` files at a time, taken round robin.

    Like `tf.data.Dataset.interleave` with `block_length=1`: a file that runs
    out is replaced, in its slot, by the next file. Deterministic.
    """
    pending = iter(files)

    def open_next():
        path = next(pending, None)
        return None if path is None else read_documents([path], input_format, sentences_per_document)

    slots = [reader for reader in (open_next() for _ in range(cycle_length)) if reader is not None]
    while slots:
        for k in range(len(slots)):
            while slots[k] is not None:
                document = next(slots[k], None)
                if document is not None:
                    yield document
                    break
                slots[k] = open_next()  # an empty file yields nothing: try the next one
        slots = [reader for reader in slots if reader is not None]


def _windows(documents, window_size):
    iterator = iter(documents)
    while True:
        window = list(itertools.islice(iterator, window_size))
        if not window:
            return
        yield window


def tokenize_window(tokenizer, window):
    """Documents of sentences → documents of token-id lists, in one tokenizer call.

    Sentences without tokens and documents without sentences are dropped, as
    the original drops them.
    """
    sentences = [s for document in window for s in document]
    if not sentences:
        return []
    ids = tokenizer.tokenize(tf.constant(sentences, tf.string))
    flat, splits = ids.flat_values.numpy().tolist(), ids.row_splits.numpy().tolist()
    documents, k = [], 0
    for document in window:
        tokenized = [flat[splits[j] : splits[j + 1]] for j in range(k, k + len(document))]
        k += len(document)
        tokenized = [s for s in tokenized if s]
        if tokenized:
            documents.append(tokenized)
    return documents


def tokenized_windows(files, tokenizer, input_format, config, keep=None):
    """Yields (window index, tokenized documents) for the windows `keep(index)` accepts."""
    documents = interleave_documents(files, input_format, config.cycle_length, config.sentences_per_document)
    for index, window in enumerate(_windows(documents, config.window_size)):
        if keep is None or keep(index):
            yield index, tokenize_window(tokenizer, window)


def window_rng(seed, window_index):
    """The random generator of window `window_index`.

    Window 0 draws from `random.Random(seed)`, as google-research/bert draws
    for its whole corpus; the others from a generator seeded by "seed/index"
    (string seeds hash the same in every process and Python version).
    """
    return random.Random(seed if window_index == 0 else f"{seed}/{window_index}")


# --- instances, as google-research/bert defines them ------------------------------


class InstanceMaker:
    """Turns tokenized documents into masked-LM + NSP instances (BERT's algorithm).

    Every random draw is the original's, in the original's order, so the same
    documents and the same `random.Random` state give the same instances.

    Args:
        config: a `PretrainingDataConfig`.
        vocabulary: the tokenizer's vocabulary (list of tokens); it must hold
            [CLS], [SEP] and [MASK].

    Example:
    >>> maker = InstanceMaker(PretrainingDataConfig(max_seq_length=16),
    ...     ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c"])
    >>> documents = [[[5, 6], [7, 5]], [[6, 6, 7]]]  # two documents of sentences
    >>> instances = maker.from_documents(documents, random.Random(0))
    >>> instances[0].input_ids[0] == maker.cls_id
    True
    """

    def __init__(self, config, vocabulary):
        missing = [t for t in ("[CLS]", "[SEP]", "[MASK]") if t not in vocabulary]
        if missing:
            raise ValueError(f"the vocabulary lacks {missing}; BERT pretraining needs [CLS], [SEP] and [MASK]")
        self.config = config
        self.vocab_size = len(vocabulary)
        self.cls_id = vocabulary.index("[CLS]")
        self.sep_id = vocabulary.index("[SEP]")
        self.mask_id = vocabulary.index("[MASK]")
        self.is_subword = [token.startswith("##") for token in vocabulary]

    def from_documents(self, documents, rng):
        """All instances of a list of documents, as the original makes them for a corpus:
        shuffle the documents, `dupe_factor` passes over them, shuffle the instances."""
        documents = list(documents)
        rng.shuffle(documents)
        instances = []
        for _ in range(self.config.dupe_factor):
            for index in range(len(documents)):
                instances.extend(self.from_document(documents, index, rng))
        rng.shuffle(instances)
        return instances

    def from_document(self, documents, index, rng):
        """Instances of `documents[index]` (original: create_instances_from_document)."""
        return [
            self.make_instance(tokens_a, tokens_b, is_random_next, rng)
            for tokens_a, tokens_b, is_random_next in self.segment_pairs(documents, index, rng)
        ]

    def segment_pairs(self, documents, index, rng):
        """Yields (tokens_a, tokens_b, is_random_next) for `documents[index]`, truncated.

        Each document is a list of sentences, each a non-empty list of token ids.
        A generator: the caller's draws between pairs (the masking) keep the
        original's order of draws.
        """
        document = documents[index]
        max_num_tokens = self.config.max_seq_length - 3
        target_length = max_num_tokens
        if rng.random() < self.config.short_seq_prob:
            target_length = rng.randint(2, max_num_tokens)
        chunk, chunk_length, i = [], 0, 0
        while i < len(document):
            chunk.append(document[i])
            chunk_length += len(document[i])
            if i == len(document) - 1 or chunk_length >= target_length:
                a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
                tokens_a = [t for sentence in chunk[:a_end] for t in sentence]
                tokens_b = []
                is_random_next = len(chunk) == 1 or rng.random() < 0.5
                if is_random_next:
                    target_b_length = target_length - len(tokens_a)
                    # Ten tries for another document (one-document windows reuse their own).
                    for _ in range(10):
                        other = rng.randint(0, len(documents) - 1)
                        if other != index:
                            break
                    random_document = documents[other]
                    start = rng.randint(0, len(random_document) - 1)
                    for sentence in random_document[start:]:
                        tokens_b.extend(sentence)
                        if len(tokens_b) >= target_b_length:
                            break
                    i -= len(chunk) - a_end  # the unused sentences start the next chunk
                else:
                    tokens_b = [t for sentence in chunk[a_end:] for t in sentence]
                truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng)
                yield tokens_a, tokens_b, is_random_next
                chunk, chunk_length = [], 0
            i += 1

    def make_instance(self, tokens_a, tokens_b, is_random_next, rng):
        """[CLS] A [SEP] B [SEP] with masked-LM predictions (original: create_masked_lm_predictions)."""
        tokens = [self.cls_id, *tokens_a, self.sep_id, *tokens_b, self.sep_id]
        segment_ids = [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1)
        candidates = []
        for position, token in enumerate(tokens):
            if token == self.cls_id or token == self.sep_id:
                continue
            # As the original, a "##" piece joins the previous candidate, even across [SEP].
            if self.config.do_whole_word_mask and candidates and self.is_subword[token]:
                candidates[-1].append(position)
            else:
                candidates.append([position])
        rng.shuffle(candidates)
        num_to_predict = min(
            self.config.max_predictions_per_seq,
            max(1, int(round(len(tokens) * self.config.masked_lm_prob))),
        )
        output = list(tokens)
        masked = []  # (position, original id)
        for positions in candidates:
            if len(masked) >= num_to_predict:
                break
            if len(masked) + len(positions) > num_to_predict:
                continue  # a whole word that does not fit: try the next candidate
            for position in positions:
                if rng.random() < 0.8:
                    replacement = self.mask_id
                elif rng.random() < 0.5:
                    replacement = tokens[position]
                else:
                    replacement = rng.randint(0, self.vocab_size - 1)
                output[position] = replacement
                masked.append((position, tokens[position]))
        masked.sort()
        return Instance(
            output, segment_ids, [p for p, _ in masked], [t for _, t in masked], is_random_next
        )


def truncate_seq_pair(tokens_a, tokens_b, max_num_tokens, rng):
    """Removes tokens from the longer segment, at a random end, until both fit (in place)."""
    while len(tokens_a) + len(tokens_b) > max_num_tokens:
        longer = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        if rng.random() < 0.5:
            del longer[0]
        else:
            longer.pop()


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


# --- the streaming writer ------------------------------------------------------


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
    output_prefix: str
    num_shards: int
    worker: int
    num_workers: int


def _write_shards(job):
    """One worker: writes shards k with k % num_workers == worker; returns {k: instances}."""
    from tfplm.tokenizers import WordPieceTokenizer  # each process builds its own

    config = job.config
    tokenizer = WordPieceTokenizer(job.vocab_file, lowercase=job.lowercase)
    maker = InstanceMaker(config, tokenizer.get_vocabulary())
    paths = shard_paths(job.output_prefix, job.num_shards)
    mine = [k for k in range(job.num_shards) if k % job.num_workers == job.worker]
    writers = {k: tf.io.TFRecordWriter(paths[k] + ".incomplete") for k in mine}
    counts = dict.fromkeys(mine, 0)
    windows = tokenized_windows(
        job.files, tokenizer, job.input_format, config, keep=lambda i: i % job.num_shards in writers
    )
    for window_index, documents in windows:
        shard = window_index % job.num_shards
        instances = maker.from_documents(documents, window_rng(config.random_seed, window_index))
        for instance in instances:
            writers[shard].write(
                serialize_instance(instance, config.max_seq_length, config.max_predictions_per_seq)
            )
        counts[shard] += len(instances)
        logging.log_every_n(logging.INFO, "worker %d: window %d, %d instances", 20, job.worker, window_index, len(instances))
    for k, writer in writers.items():
        writer.close()
        os.replace(paths[k] + ".incomplete", paths[k])  # never leave a half-written shard
    return counts


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

    Args:
        files: input text files, in a fixed order (the output depends on it).
        vocab_file: the WordPiece vocab.txt the model will use.
        output_prefix: shards are `{output_prefix}-00000-of-0000K.tfrecord`.
        config: a `PretrainingDataConfig`.
        input_format: "bert" or "prose" (see `read_documents`).
        lowercase: the vocabulary is uncased.
        num_shards: output files; window `i` goes to shard `i % num_shards`.
        num_workers: processes, each writing whole shards (at most `num_shards`
            are used). The output does not depend on it.

    Returns:
        {shard path: number of instances}.

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
    os.makedirs(os.path.dirname(os.path.abspath(output_prefix)), exist_ok=True)
    num_workers = max(1, min(num_workers, num_shards))
    jobs = [
        _Job(files, input_format, str(vocab_file), lowercase, config, str(output_prefix), num_shards, w, num_workers)
        for w in range(num_workers)
    ]
    if num_workers == 1:
        results = [_write_shards(jobs[0])]
    else:
        # "spawn": a fresh TensorFlow runtime per worker (forking one is unsafe).
        with multiprocessing.get_context("spawn").Pool(num_workers) as pool:
            results = pool.map(_write_shards, jobs)
    paths = shard_paths(output_prefix, num_shards)
    counts = {paths[k]: n for result in results for k, n in result.items()}
    counts = {path: counts[path] for path in paths}
    logging.info("wrote %d instances to %d shards", sum(counts.values()), num_shards)
    return counts


# --- reading TFRecords back ------------------------------------------------------


def _feature_lengths(seq_length, max_predictions_per_seq):
    return {
        name: 1 if name == "next_sentence_labels" else (max_predictions_per_seq if name.startswith("masked_lm") else seq_length)
        for name in FEATURES
    }


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
            (record `j` of a file goes to pipeline `j % num_input_pipelines`).
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
    files = text_lib.expand_files(file_pattern)
    _check_first_record(files[0], seq_length, max_predictions_per_seq)
    num_pipelines = input_context.num_input_pipelines if input_context else 1
    pipeline = input_context.input_pipeline_id if input_context else 0
    shard_records = False
    if num_pipelines > 1:
        if len(files) >= num_pipelines:
            files = files[pipeline::num_pipelines]
        else:
            shard_records = True
    shuffle = is_training and shuffle_buffer_size > 1
    dataset = tf.data.Dataset.from_tensor_slices(files)
    if shuffle:
        dataset = dataset.shuffle(len(files), seed=seed)
    if is_training:
        dataset = dataset.repeat()

    def read(path):
        records = tf.data.TFRecordDataset(path)
        # Sharding each file's records is a partition whatever order files come in.
        return records.shard(num_pipelines, pipeline) if shard_records else records

    dataset = dataset.interleave(
        read,
        cycle_length=min(len(files), cycle_length),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=not shuffle,
    )
    if shuffle:
        dataset = dataset.shuffle(shuffle_buffer_size, seed=seed)
    # Parsing whole batches is several times faster than one record at a time.
    dataset = dataset.batch(batch_size, drop_remainder=is_training)
    dataset = dataset.map(_parse_batch(seq_length, max_predictions_per_seq), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)
