"""Token tagging (named entities, parts of speech): `tagging/conll2003`, `tagging/wnut17`, `tagging/conll`.

Sentences come from CoNLL-style files (`tfplm.data.conll`: one word per line,
the tag in `task.tag_column`, blank lines between sentences, `-DOCSTART-`
lines between documents); the label set is read from the training file. Each
word is tokenized into WordPieces and labelled on its first piece (the other
pieces are left out of the loss and the metrics, as in BERT's CoNLL-2003
recipe); sentences longer than `seq_length` are split into windows at word
boundaries (or truncated, counted). The model is a `BertTokenClassifier` that
carries its preprocessing and its tag names.

Scores are entity-level (conlleval's definition, `tfplm.data.conll.entity_scores`):
precision, recall and F1 over the validation file after every loop (`val_f1`
picks `model_dir/best`), per type too. `--mode=predict` writes
`predictions.conll` (the test file's lines, the predicted tag appended) and,
when the test file has tags, `test_results.json`.

The serving head (`TaggerHead`) takes raw sentences and returns the entities
with their character offsets, computed in the graph.

    task = tfplm.tasks.get("tagging/conll2003", overrides="task.data_dir=...,task.init_checkpoint=...")
    model = task.build_model()
    task.compile(model)
    model.fit(task.build_inputs("train"), epochs=3)
    task.evaluate_predictions(model)   # {"precision": ..., "recall": ..., "f1": ...}
"""

import dataclasses
import functools
import json
import math
import os
from typing import Annotated

import keras
import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text
from absl import logging

from tfplm import publish
from tfplm.config import ConfigError, Range
from tfplm.data import conll, pipeline
from tfplm.models import BertTokenClassifier
from tfplm.models.base import ENCODER_INPUTS
from tfplm.tasks import base, serving
from tfplm.tokenizers import BertPreprocessor
from tfplm.tokenizers.wordpiece import pack_segments

SEPARATORS = {"": "", "whitespace": "", "tab": "\t", "\\t": "\t", "space": " "}


@dataclasses.dataclass
class TaggingConfig:
    """Attributes:
    data_dir: the folder of the files below when they are relative names.
    train_file, eval_file, test_file: CoNLL-style files (eval: validation
        during training; test: `--mode=predict`, with or without tags).
    tag_column: the column of the tag, 0-based, negative from the end (-1:
        the last; CoNLL-2003's `word POS chunk NER` has it at 3 or -1).
    separator: the column separator: "whitespace" (any run of it), "tab",
        "space" or the separator itself.
    tag_scheme: IOB1, IOB2 (BIO) or BIOES. IOB1 files are learnt as IOB2
        (the same entities, each starting with B-) and predicted back in IOB1.
    init_checkpoint: pretrained weights: any directory `from_pretrained`
        reads. Empty: a random `preset` encoder with `vocab_file`.
    preset: the architecture of a random encoder (no init_checkpoint).
    vocab_file: vocab.txt of a random encoder, or of a checkpoint without one.
    lowercase: vocab_file is uncased.
    seq_length: pieces per window, [CLS] and [SEP] included.
    global_batch_size: training windows per step, over all replicas.
    epochs: training epochs (when trainer.train_steps is 0).
    dropout: dropout before the tag classifier.
    split_long_sentences: split sentences longer than seq_length into
        windows (every word tagged); false: truncate them (the words cut are
        predicted O, and counted in the log).
    max_train_sentences: train on the first N sentences only (0 = all).
    """

    data_dir: str = ""
    train_file: str = ""
    eval_file: str = ""
    test_file: str = ""
    tag_column: int = -1
    separator: str = "whitespace"
    tag_scheme: str = "IOB2"
    init_checkpoint: str = ""
    preset: str = "bert_tiny"
    vocab_file: str = ""
    lowercase: bool = True
    seq_length: Annotated[int, Range(min=3)] = 128
    global_batch_size: Annotated[int, Range(min=1)] = 32
    epochs: Annotated[int, Range(min=1)] = 3
    dropout: Annotated[float, Range(min=0.0, max=1.0)] = 0.1
    split_long_sentences: bool = True
    max_train_sentences: Annotated[int, Range(min=0)] = 0


PREDICT_BATCH_SIZE = 64


class TaggingTask(base.EncoderTask):
    """Token tagging on a `BertTokenClassifier` (see the module docstring)."""

    def __init__(self, config):
        super().__init__(config)
        c = self.task_config
        if c.tag_scheme not in conll.SCHEMES:
            raise ConfigError(f"task.tag_scheme={c.tag_scheme!r}; expected one of {', '.join(conll.SCHEMES)} (BIO is IOB2)")
        self._tagged, self._encoded = {}, {}

    # --- data ---------------------------------------------------------------

    @property
    def separator(self):
        value = self.task_config.separator
        return SEPARATORS.get(value, value)

    def path(self, split):
        """The file of "train", "validation" or "test"."""
        c = self.task_config
        key = {"train": "train_file", "validation": "eval_file", "test": "test_file"}[split]
        name = getattr(c, key)
        if not name:
            raise ConfigError(f"task.{key} is empty; set it to a CoNLL-style file")
        return os.path.join(c.data_dir, name) if c.data_dir and not os.path.isabs(name) else name

    def tagged(self, split):
        """The split's `conll.TaggedFile`, read once (test files may have no tags)."""
        if split not in self._tagged:
            c = self.task_config
            tagged = conll.read_conll(
                self.path(split), c.tag_column, self.separator, c.tag_scheme, has_tags=True if split != "test" else None
            )
            if split == "train" and c.max_train_sentences:
                keep = c.max_train_sentences
                tagged = dataclasses.replace(
                    tagged, words=tagged.words[:keep], tags=tagged.tags[:keep], line_numbers=tagged.line_numbers[:keep]
                )
            self._tagged[split] = tagged
        return self._tagged[split]

    @functools.cached_property
    def label_names(self):
        """"O", then each type's tags, read from the training file."""
        return conll.label_names(self.tagged("train"))

    @functools.cached_property
    def preprocessor(self):
        """The `BertPreprocessor` of the model (`tokenizer`: init_checkpoint's or vocab_file's)."""
        return BertPreprocessor(self.tokenizer, self.task_config.seq_length)

    def encoded(self, split, preprocessor=None):
        """The split's words as windows of pieces (`conll.EncodedFile`), labelled unless "test"."""
        preprocessor = preprocessor or self.preprocessor
        key = (split, id(preprocessor))
        if key not in self._encoded or self._encoded[key][0] is not preprocessor:
            tagged = self.tagged(split)
            names = self.label_names if tagged.tags is not None and split != "test" else None
            encoded = conll.encode(
                tagged, preprocessor.tokenizer, preprocessor.seq_length - 2, names, self.task_config.split_long_sentences
            )
            self._encoded[key] = (preprocessor, encoded)
        return self._encoded[key][1]

    def num_examples(self, split):
        return len(self.encoded(split).piece_ids)

    def describe_inputs(self, split):
        encoded = self.encoded(split)
        return {
            "split": split,
            "source": self.path(split),
            "sentences": len(self.tagged(split)),
            "windows": len(encoded.piece_ids),
            "words_cut": encoded.words_cut,
        }

    def build_inputs(self, split, input_context=None):
        """Batches of (encoder inputs, tag ids): the tag on each word's first
        piece, `conll.IGNORED` (-1) elsewhere ([CLS], [SEP], later pieces, padding).

        Training batches are shuffled and grouped by length; others keep the
        file's order, padded to their longest window.
        """
        return self._dataset(
            self.encoded(split),
            self.preprocessor,
            pipeline.per_replica_batch_size(self.global_batch_size(split), input_context),
            training=split == "train",
            input_context=input_context,
        )

    def _dataset(self, encoded, preprocessor, batch_size, training=False, input_context=None):
        tokenizer = preprocessor.tokenizer
        cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
        piece_ids, labels = encoded.to_tensors()
        # Indices are shuffled, sharded and batched by length; windows are looked up by index.
        dataset = pipeline.shard(tf.data.Dataset.range(len(encoded.piece_ids)), input_context)
        examples = int(dataset.cardinality())
        if training and examples == 0:
            raise ValueError("no sentences to train on: the training file (or this input pipeline's shard) is empty")

        def features(index):
            word_ids = tf.concat([[cls], piece_ids[index], [sep]], 0)
            window_labels = tf.concat([[conll.IGNORED], labels[index], [conll.IGNORED]], 0)
            inputs = {
                "input_mask": tf.ones_like(word_ids),
                "input_type_ids": tf.zeros_like(word_ids),
                "input_word_ids": word_ids,
            }
            return inputs, window_labels

        if training:
            dataset = pipeline.reshuffled(dataset, 10_000, self.config.runtime.seed, endless=True)
        dataset = dataset.map(features, num_parallel_calls=tf.data.AUTOTUNE)
        if training:
            boundaries = pipeline.length_buckets(preprocessor.seq_length)
            dataset = dataset.bucket_by_sequence_length(
                lambda inputs, _: tf.shape(inputs["input_word_ids"])[0],
                bucket_boundaries=boundaries,
                bucket_batch_sizes=[batch_size] * (len(boundaries) + 1),
                padding_values=({name: 0 for name in ENCODER_INPUTS}, conll.IGNORED),
            )
            steps = math.ceil(examples / batch_size)
            dataset = dataset.take(steps).apply(tf.data.experimental.assert_cardinality(steps))
        else:
            dataset = dataset.padded_batch(batch_size, padding_values=({name: 0 for name in ENCODER_INPUTS}, conll.IGNORED))
        return dataset.prefetch(tf.data.AUTOTUNE)

    # --- model, losses, metrics -----------------------------------------------

    def build_model(self):
        c = self.task_config
        encoder = self.build_encoder()
        return BertTokenClassifier(
            encoder, len(self.label_names), c.dropout, preprocessor=self.preprocessor, label_names=self.label_names
        )

    def build_losses(self):
        # Averaged over the labelled pieces of the batch, as BERT's and Hugging
        # Face's token classifiers average (ignored pieces are masked out).
        return keras.losses.SparseCategoricalCrossentropy(
            from_logits=True, ignore_class=conll.IGNORED, reduction="mean_with_sample_weight"
        )

    def build_metrics(self):
        return [TagAccuracy(name="accuracy")]

    def build_callbacks(self, model_dir):
        """Keeps the model with the best validation entity F1 in `model_dir/best`."""
        return [base.SaveBest(model_dir, "val_f1")]

    # --- predictions ----------------------------------------------------------

    def predict_tags(self, model, split):
        """Per sentence of `split`, the tag `model` predicts for each word (in
        the file's scheme); words cut by truncation are predicted O."""
        if model.preprocessor is None:
            raise ValueError("the model has no preprocessor; build it with BertTokenClassifier(..., preprocessor=...)")
        names = model.label_names or tuple(map(str, range(model.num_classes)))
        encoded = self.encoded(split, model.preprocessor)
        dataset = self._dataset(encoded, model.preprocessor, PREDICT_BATCH_SIZE)
        pieces = []
        for inputs, _ in dataset:
            predicted = np.argmax(np.asarray(model.predict_on_batch(inputs)), axis=-1)
            lengths = inputs["input_mask"].numpy().sum(axis=1)
            pieces.extend(row[1 : length - 1] for row, length in zip(predicted, lengths))
        ids = conll.word_predictions(encoded, self.tagged(split), pieces, default=names.index(conll.OUTSIDE))
        tags = [[names[i] for i in sentence] for sentence in ids]
        return [conll.to_iob1(sentence) for sentence in tags] if self.task_config.tag_scheme == "IOB1" else tags

    def score(self, model, split):
        """conlleval's `conll.EntityScores` of `model` on a tagged split."""
        tagged = self.tagged(split)
        if tagged.tags is None:
            raise ValueError(f"{tagged.path} has no tags to score against")
        return conll.entity_scores(tagged.tags, self.predict_tags(model, split))

    def evaluate_predictions(self, model):
        """Entity-level precision, recall and F1 on the validation file (overall, and F1 per type)."""
        # The last loop's validation and the final evaluation see the same weights: score them once.
        optimizer = getattr(model, "optimizer", None)
        key = (id(model), int(optimizer.iterations.numpy())) if optimizer is not None and model.compiled else None
        if key is None or getattr(self, "_last_scores", (None,))[0] != key:
            scores = self.score(model, "validation")
            metrics = {"precision": scores.precision, "recall": scores.recall, "f1": scores.f1}
            metrics.update({f"f1_{kind}": row["f1"] for kind, row in scores.per_type.items()})
            self._last_scores = (key, metrics)
        return dict(self._last_scores[1])

    def predict(self, model, output_dir):
        """Tags the test file: predictions.conll (its lines, the predicted tag
        appended) and, if it has tags, test_results.json (entity scores)."""
        tags = self.predict_tags(model, "test")
        tagged = self.tagged("test")
        os.makedirs(output_dir, exist_ok=True)
        files = [conll.write_predictions(os.path.join(output_dir, "predictions.conll"), tagged, tags, self.separator)]
        if tagged.tags is not None:
            scores = conll.entity_scores(tagged.tags, tags)
            logging.info("test entity F1 %.4f (precision %.4f, recall %.4f)", scores.f1, scores.precision, scores.recall)
            results = {"file": tagged.path, **scores.as_dict()}
            files.append(publish.write_text(os.path.join(output_dir, "test_results.json"), json.dumps(results, indent=2)))
        return files

    def held_out_examples(self, limit):
        return {"text": [" ".join(words) for words in self.tagged("validation").words[:limit]]}


@keras.saving.register_keras_serializable(package="tfplm")
class TagAccuracy(keras.metrics.Mean):
    """The share of labelled pieces (tag >= 0: words' first pieces) whose tag is predicted right."""

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = keras.ops.cast(y_true, "int32")
        correct = keras.ops.equal(keras.ops.argmax(y_pred, axis=-1), y_true)
        labelled = keras.ops.cast(y_true >= 0, "float32")
        if sample_weight is not None:
            labelled = labelled * keras.ops.cast(sample_weight, "float32")
        return super().update_state(keras.ops.cast(correct, "float32"), sample_weight=labelled)


class TaggerHead(serving.BertTextHead):
    """Serves a `BertTokenClassifier`: raw sentences in, entities out.

    `serving_default` takes `text` (tf.string [batch]) and returns

    * `entity_text`, `entity_type` (tf.string), `start`, `end` (int32,
      character offsets: `text[start:end] == entity_text` for a Python str),
      `score` (float32: the mean probability of its words' tags), each
      [batch, max entities of the request], padded with "", -1 and 0;
      `num_entities` (int32 [batch]) says how many of each row are real;
    * `tag_probabilities` (float32 [batch, length, tags]), `tag_ids` (int32,
      -1 on padding) and `tags` (tf.string, "" on padding) of every piece of
      the packed input ([CLS] first), `length` being the request's longest;
    * `pieces_cut` (int32 [batch]): pieces beyond `seq_length` that were not
      tagged (a text longer than the model's window is truncated).

    Words are split as BERT's basic tokenizer splits them (whitespace,
    punctuation, CJK characters); a word's tag is that of its first piece, and
    entities are read from the words' tags as conlleval reads them. Offsets
    index the text after invalid UTF-8 is repaired (each bad byte one U+FFFD).
    """

    main_output = "tag_probabilities"

    def __init__(self, model):
        super().__init__(model)
        names = list(model.label_names or map(str, range(model.num_classes)))
        starts, kinds, types = conll.chunk_tables(names)
        self.label_names = tf.constant(names)
        self.chunk_starts = tf.constant(starts)
        self.label_kinds = tf.constant(kinds)
        self.entity_types = tf.constant(types or [""])
        self.outside_id = names.index(conll.OUTSIDE) if conll.OUTSIDE in names else -1

    def describe(self):
        return {
            **super().describe(),
            "label_names": [n.decode() for n in self.label_names.numpy()],
            "entities": "padded to the request's most; num_entities per text; start/end are character offsets",
        }

    def tflite_outputs(self, packed):
        logits = tf.cast(self.model(packed, training=False), tf.float32)
        return {"tag_probabilities": tf.nn.softmax(logits, axis=-1)}

    def outputs(self, packed):
        outputs = self.tflite_outputs(packed)
        tag_ids = tf.argmax(outputs["tag_probabilities"], axis=-1, output_type=tf.int32)
        real = packed["input_mask"] > 0
        outputs["tag_ids"] = tf.where(real, tag_ids, -1)
        outputs["tags"] = tf.where(real, tf.gather(self.label_names, tag_ids), "")
        return outputs

    def predict(self, text):
        text = tf_text.coerce_to_structurally_valid_utf8(tf.convert_to_tensor(text, tf.string))
        tokenizer = self.model.tokenizer
        ids, starts, ends = tokenizer.tokenize_with_offsets(text, unit="UTF8_CHAR")
        keep = self.preprocessor.seq_length - 2
        pieces_cut = tf.cast(tf.maximum(ids.row_lengths() - keep, 0), tf.int32)
        ids, starts, ends = ids[:, :keep], starts[:, :keep], ends[:, :keep]
        packed = pack_segments(
            ids, self.preprocessor.seq_length, tokenizer.cls_token_id, tokenizer.sep_token_id,
            tokenizer.pad_token_id, pad_to_longest=True,
        )
        outputs = self._in_chunks(packed)
        outputs.update(self._entities(text, starts, ends, outputs["tag_probabilities"]))
        outputs["pieces_cut"] = pieces_cut
        return outputs

    def _entities(self, text, starts, ends, probabilities):
        """Entities of each text from its pieces' offsets and tag probabilities."""
        dense_starts = starts.to_tensor(-1)
        width = tf.shape(dense_starts)[1]
        real = tf.sequence_mask(starts.row_lengths(), width)
        before = tf.pad(dense_starts, [[0, 0], [1, 0]], constant_values=-1)[:, :-1]
        first = real & tf.not_equal(dense_starts, before)  # the first piece of each word
        piece_probabilities = probabilities[:, 1 : 1 + width]  # after [CLS]
        words = tf.ragged.boolean_mask(piece_probabilities, first)  # [batch, words, tags]
        word_starts = tf.ragged.boolean_mask(dense_starts, first).flat_values
        word_ends = tf.ragged.boolean_mask(ends.to_tensor(-1), first).flat_values
        flat = words.flat_values
        tag = tf.argmax(flat, axis=-1, output_type=tf.int32)
        tag_score = tf.reduce_max(flat, axis=-1)
        row = tf.cast(words.value_rowids(), tf.int32)
        count = tf.shape(tag)[0]
        position = tf.range(count)
        row_first = tf.equal(position, tf.gather(tf.cast(words.row_splits, tf.int32), row))
        sentence_start = tf.shape(self.chunk_starts)[0] - 1
        previous = tf.where(row_first, sentence_start, tf.concat([[sentence_start], tag[:-1]], 0))
        starts_chunk = tf.gather_nd(self.chunk_starts, tf.stack([previous, tag], axis=1))
        inside = tf.gather(self.label_kinds, tag) >= 0
        entity = tf.cumsum(tf.cast(starts_chunk, tf.int32)) - 1  # each word's chunk, if inside one
        num = tf.reduce_sum(tf.cast(starts_chunk, tf.int32))
        first_word = tf.boolean_mask(position, starts_chunk)
        last_word = tf.math.unsorted_segment_max(tf.boolean_mask(position, inside), tf.boolean_mask(entity, inside), num)
        score = tf.math.unsorted_segment_mean(tf.boolean_mask(tag_score, inside), tf.boolean_mask(entity, inside), num)
        entity_row = tf.gather(row, first_word)
        start = tf.cast(tf.gather(word_starts, first_word), tf.int32)
        end = tf.cast(tf.gather(word_ends, last_word), tf.int32)
        kind = tf.gather(self.entity_types, tf.maximum(tf.gather(self.label_kinds, tf.gather(tag, first_word)), 0))
        entity_text = tf.strings.substr(tf.gather(text, entity_row), start, end - start, unit="UTF8_CHAR")
        rows = tf.shape(text, out_type=tf.int64)[0]

        def padded(values, value):
            return tf.RaggedTensor.from_value_rowids(values, tf.cast(entity_row, tf.int64), nrows=rows).to_tensor(value)

        return {
            "entity_text": padded(entity_text, ""),
            "entity_type": padded(kind, ""),
            "start": padded(start, -1),
            "end": padded(end, -1),
            "score": padded(score, 0.0),
            "num_entities": tf.math.bincount(entity_row, minlength=tf.cast(rows, tf.int32), dtype=tf.int32),
        }

    def compare(self, reference, outputs):
        """The tag probabilities' max abs difference at the texts' pieces, and the
        share of texts whose entities (text, type, offsets) are the Keras model's;
        for TFLite files (tag probabilities only, padded to their seq_length), the
        share of the texts' pieces that get the Keras model's tag."""
        expected, actual = np.asarray(reference["tag_probabilities"]), np.asarray(outputs["tag_probabilities"])
        if actual.shape[0] != expected.shape[0] or actual.shape[2:] != expected.shape[2:]:
            raise ValueError(f"tag_probabilities: shape {actual.shape} does not match the Keras model's {expected.shape}")
        length = min(actual.shape[1], expected.shape[1])
        expected, actual = expected[:, :length], actual[:, :length]
        real = np.asarray(reference["tag_ids"])[:, :length] >= 0
        diff = float(np.abs(actual - expected)[real].max()) if real.any() else 0.0
        if "num_entities" in outputs:
            same = [entity_list(reference, i) == entity_list(outputs, i) for i in range(expected.shape[0])]
        else:
            same = (actual.argmax(-1) == expected.argmax(-1))[real]
        return {"max_abs_diff": diff, "agreement": float(np.mean(same)) if len(same) else 1.0}


def entity_list(outputs, row):
    """The entities of one row of `TaggerHead` outputs: [(text, type, start, end)]."""
    count = int(outputs["num_entities"][row])

    def column(name):
        return [v.decode() if isinstance(v, bytes) else v for v in np.asarray(outputs[name])[row, :count].tolist()]

    return list(zip(column("entity_text"), column("entity_type"), column("start"), column("end")))


def _experiment(**files):
    """BERT's CoNLL-2003 fine-tuning recipe: AdamW 5e-5, 10% warmup, linear decay, batch 32, 3 epochs."""

    def make():
        return base.fine_tuning_experiment(TaggingConfig(**files), learning_rate=5e-5)

    return make


TASK_TYPE = base.TaskType(
    name="token_tagging",
    task=TaggingTask,
    serving=TaggerHead,
    models=(BertTokenClassifier,),
    experiments={
        # task.data_dir=../shared/data/ner/conll2003 (IOB2, `word POS chunk NER`)
        "tagging/conll2003": _experiment(train_file="train.txt", eval_file="valid.txt", test_file="test.txt"),
        # task.data_dir=../shared/data/ner/wnut17 (IOB2, `word<TAB>tag`)
        "tagging/wnut17": _experiment(
            train_file="wnut17train.conll", eval_file="emerging.dev.conll", test_file="emerging.test.annotated",
            separator="tab",
        ),
        # your own files: task.train_file, task.eval_file, task.tag_column, task.separator, task.tag_scheme
        "tagging/conll": _experiment(),
    },
)
