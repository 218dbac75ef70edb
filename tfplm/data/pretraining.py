"""BERT pretraining data: documents → MLM + NSP instances → TFRecords, and back.

Instances follow google-research/bert's `create_pretraining_data.py` exactly
(segment pairs, 50% random next sentence, 15% masking split 80/10/10, optional
whole-word masking) and are written with its feature names and dtypes, so files
made by either tool train in both.

Unlike the original, which keeps every instance of the corpus in memory, this
streams: documents are read in windows of `window_size` documents; a window is
tokenized in one batch, turned into instances (a random next segment comes
from another document of the same window), shuffled and written out before
the next window is read. Window `i` goes to shard `i % num_shards`, and each
shard is written by one worker, so the output bytes depend only on the inputs,
the flags and the seed — not on `num_workers`.
"""

import collections
import dataclasses
import multiprocessing
import os
import random

import numpy as np
import tensorflow as tf
from absl import logging

from tfplm.data import text as text_lib

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
    """The flags of `create_pretraining_data`, with BERT's defaults."""

    max_seq_length: int = 128
    max_predictions_per_seq: int = 20
    masked_lm_prob: float = 0.15
    dupe_factor: int = 10
    short_seq_prob: float = 0.1
    random_seed: int = 12345
    do_whole_word_mask: bool = False
    window_size: int = 200


Instance = collections.namedtuple(
    "Instance", "input_ids segment_ids masked_lm_positions masked_lm_ids is_random_next"
)


# --- reading documents ----------------------------------------------------------


def read_documents(files, input_format="bert", sentences_per_document=40):
    """Yields documents as lists of sentences (strings).

    Args:
        files: text files.
        input_format: "bert": one sentence per line, blank lines between
            documents (google-research/bert's format). "prose": raw text such
            as Project Gutenberg books; paragraphs are split into sentences and
            consecutive paragraphs are grouped into documents of about
            `sentences_per_document` sentences, so the "actual next" segment
            is coherent prose and "random next" comes from elsewhere.
    """
    if input_format not in ("bert", "prose"):
        raise ValueError(f"input_format={input_format!r}; expected 'bert' or 'prose'")
    for path in files:
        if input_format == "bert":
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
        else:
            document = []
            for paragraph in text_lib.paragraphs(text_lib.read_text(path)):
                document.extend(text_lib.split_sentences(paragraph))
                if len(document) >= sentences_per_document:
                    yield document
                    document = []
            if document:
                yield document


# --- instances, as google-research/bert defines them ------------------------------


class InstanceMaker:
    """Turns tokenized documents into masked-LM + NSP instances (BERT's algorithm).

    Args:
        config: a `PretrainingDataConfig`.
        vocabulary: the tokenizer's vocabulary (list of tokens).
    """

    def __init__(self, config, vocabulary):
        self.config = config
        self.vocab_size = len(vocabulary)
        self.cls_id = vocabulary.index("[CLS]")
        self.sep_id = vocabulary.index("[SEP]")
        self.mask_id = vocabulary.index("[MASK]")
        self.is_subword = np.array([t.startswith("##") for t in vocabulary])

    def from_document(self, documents, index, rng):
        """Instances of `documents[index]`, a list of sentences as token-id lists."""
        document = documents[index]
        max_num_tokens = self.config.max_seq_length - 3
        target_length = max_num_tokens
        if rng.random() < self.config.short_seq_prob:
            target_length = rng.randint(2, max_num_tokens)
        instances, chunk, chunk_length, i = [], [], 0, 0
        while i < len(document):
            chunk.append(document[i])
            chunk_length += len(document[i])
            if i == len(document) - 1 or chunk_length >= target_length:
                if chunk:
                    a_end = rng.randint(1, len(chunk) - 1) if len(chunk) >= 2 else 1
                    tokens_a = [t for sentence in chunk[:a_end] for t in sentence]
                    tokens_b = []
                    is_random_next = len(chunk) == 1 or rng.random() < 0.5
                    if is_random_next:
                        target_b_length = target_length - len(tokens_a)
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
                        i -= len(chunk) - a_end  # put the unused segments back
                    else:
                        tokens_b = [t for sentence in chunk[a_end:] for t in sentence]
                    if tokens_a and tokens_b:
                        self._truncate_pair(tokens_a, tokens_b, max_num_tokens, rng)
                        instances.append(self._instance(tokens_a, tokens_b, is_random_next, rng))
                chunk, chunk_length = [], 0
            i += 1
        return instances

    @staticmethod
    def _truncate_pair(tokens_a, tokens_b, max_num_tokens, rng):
        """Removes tokens from the longer segment, at a random end, until they fit."""
        while len(tokens_a) + len(tokens_b) > max_num_tokens:
            longer = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
            if rng.random() < 0.5:
                del longer[0]
            else:
                longer.pop()

    def _instance(self, tokens_a, tokens_b, is_random_next, rng):
        tokens = [self.cls_id, *tokens_a, self.sep_id, *tokens_b, self.sep_id]
        segment_ids = [0] * (len(tokens_a) + 2) + [1] * (len(tokens_b) + 1)
        candidates = []
        for position, token in enumerate(tokens):
            if token in (self.cls_id, self.sep_id):
                continue
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
                continue
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


def serialize_instance(instance, max_seq_length, max_predictions_per_seq):
    """A tf.train.Example with google-research/bert's feature names, padded as it pads."""
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


def _windows(files, input_format, window_size):
    window = []
    for document in read_documents(files, input_format):
        window.append(document)
        if len(window) == window_size:
            yield window
            window = []
    if window:
        yield window


def shard_paths(output_prefix, num_shards):
    return [f"{output_prefix}-{k:05d}-of-{num_shards:05d}.tfrecord" for k in range(num_shards)]


def _write_shards(args):
    """Worker: writes the shards assigned to `worker` (shard % num_workers == worker)."""
    files, input_format, vocab_file, lowercase, config, output_prefix, num_shards, worker, num_workers = args
    from tfplm.tokenizers import WordPieceTokenizer  # each process builds its own

    tokenizer = WordPieceTokenizer(vocab_file, lowercase=lowercase)
    maker = InstanceMaker(config, tokenizer.get_vocabulary())
    paths = shard_paths(output_prefix, num_shards)
    mine = [k for k in range(num_shards) if k % num_workers == worker]
    writers = {k: tf.io.TFRecordWriter(paths[k] + ".incomplete") for k in mine}
    counts = collections.Counter()
    for window_index, window in enumerate(_windows(files, input_format, config.window_size)):
        shard = window_index % num_shards
        if shard not in writers:
            continue
        sentences = [s for document in window for s in document]
        ids = tokenizer.tokenize(tf.constant(sentences)).to_list()
        documents, start = [], 0
        for document in window:
            tokenized = [s for s in ids[start : start + len(document)] if s]
            start += len(document)
            if tokenized:
                documents.append(tokenized)
        rng = random.Random(config.random_seed * 1_000_003 + window_index)
        instances = []
        for _ in range(config.dupe_factor):
            for index in range(len(documents)):
                instances.extend(maker.from_document(documents, index, rng))
        rng.shuffle(instances)
        for instance in instances:
            writers[shard].write(
                serialize_instance(instance, config.max_seq_length, config.max_predictions_per_seq)
            )
        counts[shard] += len(instances)
    for k, writer in writers.items():
        writer.close()
        os.replace(paths[k] + ".incomplete", paths[k])  # never leave a half-written shard
    return dict(counts)


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
    """Writes BERT pretraining TFRecords for `files`; returns {shard path: instances}."""
    if not files:
        raise ValueError("no input files")
    if config.max_seq_length < 5:
        raise ValueError(f"max_seq_length={config.max_seq_length} is too short; BERT needs at least 5")
    os.makedirs(os.path.dirname(os.path.abspath(output_prefix)), exist_ok=True)
    num_workers = max(1, min(num_workers, num_shards))
    jobs = [
        (files, input_format, vocab_file, lowercase, config, output_prefix, num_shards, w, num_workers)
        for w in range(num_workers)
    ]
    if num_workers == 1:
        results = [_write_shards(jobs[0])]
    else:
        with multiprocessing.get_context("spawn").Pool(num_workers) as pool:
            results = pool.map(_write_shards, jobs)
    paths = shard_paths(output_prefix, num_shards)
    counts = {paths[k]: 0 for k in range(num_shards)}
    for result in results:
        for k, n in result.items():
            counts[paths[k]] += n
    logging.info("wrote %d instances to %d shards", sum(counts.values()), num_shards)
    return counts


# --- reading TFRecords back ------------------------------------------------------


def _parse(seq_length, max_predictions_per_seq):
    spec = {
        name: tf.io.FixedLenFeature(
            [1 if name == "next_sentence_labels" else (max_predictions_per_seq if name.startswith("masked_lm") else seq_length)],
            tf.float32 if dtype == "float32" else tf.int64,
        )
        for name, dtype in FEATURES.items()
    }

    def parse(record):
        example = tf.io.parse_single_example(record, spec)
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
            "next_sentence_labels": as_int["next_sentence_labels"][0],
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
):
    """Batches of BERT pretraining data from TFRecords in BERT's format.

    Args:
        file_pattern: glob(s), comma-separated.
        seq_length, max_predictions_per_seq: as the files were written.
        batch_size: examples per batch (per replica when `input_context` is given).
        is_training: shuffle, repeat forever, drop the last partial batch.
        input_context: a `tf.distribute.InputContext`; the files (or, with fewer
            files than input pipelines, the records) are sharded across pipelines.

    Returns:
        A dataset of (features, labels):
        features = {"input_word_ids", "input_mask", "input_type_ids": int32
        [batch, seq_length], "masked_lm_positions": int32 [batch, predictions]};
        labels = {"masked_lm_ids": int32 [batch, predictions],
        "masked_lm_weights": float32 [batch, predictions],
        "next_sentence_labels": int32 [batch]} (1 = B is a random segment).
    """
    files = text_lib.expand_files(file_pattern)
    dataset = tf.data.Dataset.from_tensor_slices(files)
    shard_records = False
    if input_context and input_context.num_input_pipelines > 1:
        if len(files) >= input_context.num_input_pipelines:
            dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        else:
            shard_records = True
    if is_training:
        if shuffle_buffer_size > 1:
            dataset = dataset.shuffle(len(files), seed=seed)
        dataset = dataset.repeat()
    dataset = dataset.interleave(
        tf.data.TFRecordDataset,
        cycle_length=min(len(files), 8),
        num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=not is_training or shuffle_buffer_size <= 1,
    )
    if shard_records:
        dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
    if is_training and shuffle_buffer_size > 1:
        dataset = dataset.shuffle(shuffle_buffer_size, seed=seed)
    dataset = dataset.map(_parse(seq_length, max_predictions_per_seq), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.batch(batch_size, drop_remainder=is_training).prefetch(tf.data.AUTOTUNE)
