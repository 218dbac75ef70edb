"""Sentence (pair) classification and regression: `glue/<task>` and `text/classification`.

Examples come from GLUE's TSV folder (`task.glue_dir`), from TensorFlow Datasets
(`task.tfds_data_dir`), or from your own TSV/CSV/JSONL files (`task.train_file`
etc., columns by name or number). They are tokenized in the tf.data pipeline by
the task's `BertPreprocessor` (`tfplm.data.pipeline.text_dataset`) and batched
by length. The model is a `BertClassifier` that carries that preprocessor and
the label names; its serving head (`ClassifierHead`) takes raw text and returns
probabilities and labels (or a score).

    task = tfplm.tasks.get("glue/sst2", overrides="task.glue_dir=...,task.init_checkpoint=...")
    model = task.build_model()
    task.compile(model)
    model.fit(task.build_inputs("train"), validation_data=task.build_inputs("validation"), epochs=3)
"""

import dataclasses
from typing import Annotated
import os

import functools

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfplm.config import Range
from tfplm import metrics as metrics_lib
from tfplm.data import glue as glue_data
from tfplm.data import pipeline, text_files
from tfplm.models import BertClassifier
from tfplm.tasks import base, serving
from tfplm.tokenizers import BertPreprocessor


@dataclasses.dataclass
class GlueConfig:
    """Attributes:
    task_name: a GLUE task (cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli)
        or "custom" for your own files.
    glue_dir: GLUE's folder of TSV directories (CoLA/, SST-2/, ...).
    tfds_data_dir: read `glue/<task>` from TFDS instead (prepared there).
    train_file, validation_file, test_file: your own TSV/CSV/JSONL files
        (task_name="custom").
    text_column, text_b_column, label_column, id_column: the columns of
        your files holding the text, the pair's second text, the label and
        (test files) the example id: header names (JSON keys) or 0-based
        numbers (negative: from the end of the row); "" = none.
    regression: your labels are real-valued scores (one output, MSE loss).
    has_header: whether the TSV/CSV files start with a row of column names;
        null (default): they do unless every column is given by number. E.g.
        CoLA's raw files (source, label, original label, sentence; no header):
        `task.text_column=3,task.label_column=1`.
    init_checkpoint: pretrained weights: any directory `from_pretrained` reads
        (tfplm, Hugging Face, Google BERT, keras-nlp). Empty: a random
        `preset` encoder with `vocab_file`.
    preset: the architecture of a random encoder (no init_checkpoint).
    vocab_file: vocab.txt of a random encoder, or of a checkpoint without one.
    lowercase: vocab_file is uncased (lower-case and strip accents).
    seq_length: longest packed input; batches are padded to a length bucket.
    global_batch_size: training examples per step, over all replicas.
    epochs: training epochs (used when trainer.train_steps is 0).
    dropout: dropout before the classifier.
    skip_bad_rows: skip (and count) malformed rows instead of failing.
    pad_to_seq_length: pad every batch to `seq_length` (static shapes, as
        TPUs want) instead of batching by length.
    early_stopping_patience: stop after this many evaluations without a
        better main metric (0 = never); needs mode=train_and_eval.
    """

    task_name: str = "sst2"
    glue_dir: str = ""
    tfds_data_dir: str = ""
    train_file: str = ""
    validation_file: str = ""
    test_file: str = ""
    text_column: str | int = "text"
    text_b_column: str | int = ""
    label_column: str | int = "label"
    id_column: str | int = ""
    has_header: bool | None = None
    regression: bool = False
    init_checkpoint: str = ""
    preset: str = "bert_tiny"
    vocab_file: str = ""
    lowercase: bool = True
    seq_length: Annotated[int, Range(min=3)] = 128
    global_batch_size: Annotated[int, Range(min=1)] = 32
    epochs: int = 3
    dropout: float = 0.1
    skip_bad_rows: bool = False
    pad_to_seq_length: bool = False
    early_stopping_patience: int = 0


SMALL_DATA = 10_000  # training examples below which BERT's default recipe is flagged


class ClassificationTask(base.EncoderTask):
    """Sentence (pair) classification or regression on a `BertClassifier`."""

    def __init__(self, config):
        super().__init__(config)
        self._examples = {}
        self._tfds_counts = {}

    # --- data ---------------------------------------------------------------

    @property
    def info(self):
        """The GLUE task's description, or one made from the custom files."""
        c = self.task_config
        if c.task_name != "custom":
            return glue_data.get_task_info(c.task_name)
        return None

    @property
    def label_names(self):
        info = self.info
        if info is not None:
            return None if info.is_regression else list(info.label_names)
        return self.examples("train").label_names if self.task_config.train_file else None

    @property
    def num_classes(self):
        if self.info is not None:
            return self.info.num_classes
        return 1 if self.task_config.regression else len(self.examples("train").label_names)

    def _custom_file(self, split):
        c = self.task_config
        path = {"train": c.train_file, "validation": c.validation_file, "test": c.test_file}.get(split)
        if not path:
            raise ValueError(f"task.{split}_file is empty; task_name=custom reads your own files")
        return path

    def examples(self, split):
        """The split's `LabeledExamples` (GLUE TSV or custom files), read once."""
        split = self._split(split)
        if split not in self._examples:
            c = self.task_config
            if c.task_name == "custom":
                columns = dict(
                    text=c.text_column,
                    text_b=_column(c.text_b_column),
                    label=None if split == "test" else c.label_column,
                    id=_column(c.id_column) if split == "test" else None,
                )
                header = c.has_header
                if header is None:
                    header = not all(isinstance(v, int) for v in columns.values() if v is not None)
                    if not header:
                        logging.info("reading %s without a header row (columns given by number); "
                                     "set task.has_header=true if its first line names the columns",
                                     self._custom_file(split))
                layout = text_files.FileLayout(**columns, header=header)
                # Evaluation sets use the training set's label ids; test sets have no labels.
                known = None if split in ("train", "test") else self.examples("train").label_names
                self._examples[split] = text_files.read_labeled_examples(
                    self._custom_file(split),
                    layout,
                    label_names=known,
                    regression=c.regression,
                    skip_bad_rows=c.skip_bad_rows,
                )
            else:
                if not c.glue_dir:
                    raise ValueError("task.glue_dir is empty; point it at GLUE's folder (or set task.tfds_data_dir)")
                self._examples[split] = glue_data.read_glue_split(
                    c.glue_dir, c.task_name, split, skip_bad_rows=c.skip_bad_rows
                )
            bad = self._examples[split].bad_rows
            if bad:
                logging.warning("%s: skipped bad rows %s", split, bad)
        return self._examples[split]

    def _split(self, split):
        """MNLI's "validation"/"test" are its matched sets."""
        if self.task_config.task_name == "mnli" and split in ("validation", "test"):
            return f"{split}_matched"
        return split

    def _raw_dataset(self, split):
        split = self._split(split)
        c = self.task_config
        if c.tfds_data_dir and c.task_name != "custom":
            return glue_data.load_glue_tfds(c.task_name, split, data_dir=c.tfds_data_dir)
        return self.examples(split).to_dataset()

    def num_examples(self, split):
        if not self.task_config.tfds_data_dir:
            return len(self.examples(split))
        if split not in self._tfds_counts:  # asked for by steps, the optimizer and reports: count once
            dataset = self._raw_dataset(split)
            count = int(dataset.cardinality())
            self._tfds_counts[split] = count if count >= 0 else int(dataset.reduce(0, lambda n, _: n + 1))
        return self._tfds_counts[split]

    def build_optimizer(self, steps=None):
        examples = self.num_examples("train")
        rate = self.config.trainer.optimizer.learning_rate
        if examples < SMALL_DATA and rate <= 3e-5 and (steps or self.train_steps()) * self.global_batch_size("train") < 3 * examples:
            logging.warning(
                "%d training examples, learning rate %g, fewer than 3 epochs: BERT's recipe underfits small "
                "data (all-MiniLM-L6-v2 on 3,000 SST-2 sentences: dev accuracy 0.748 at 3e-5 x 1 epoch, 0.856 "
                "at 1e-4 x 3 epochs); try trainer.optimizer.learning_rate=1e-4 and task.epochs=3 (README, Small data)",
                examples, rate,
            )
        return super().build_optimizer(steps)

    def describe_inputs(self, split):
        c = self.task_config
        source = c.tfds_data_dir or (c.glue_dir if c.task_name != "custom" else self._custom_file(split))
        return {"task": c.task_name, "split": split, "source": source, "examples": self.num_examples(split)}

    @property
    def is_pair(self):
        c = self.task_config
        return self.info.is_pair if self.info is not None else _column(c.text_b_column) is not None

    @functools.cached_property
    def preprocessor(self):
        """The `BertPreprocessor` that tokenizes the inputs (`tokenizer`); the model carries it."""
        return BertPreprocessor(self.tokenizer, self.task_config.seq_length, pair=self.is_pair)

    def split_preprocessor(self, split):
        """The preprocessor of `split`'s batches: `preprocessor` (a hook for distillation)."""
        return self.preprocessor

    def build_inputs(self, split, input_context=None):
        """Batches of (encoder inputs, label), tokenized by `preprocessor`.

        Training batches are shuffled and grouped by length; other splits keep
        the file order and pad each batch to its longest example. With
        `pad_to_seq_length`, every example is `seq_length` long instead.
        """
        return pipeline.text_dataset(
            self._raw_dataset(split),
            preprocessor=self.split_preprocessor(split),
            batch_size=pipeline.per_replica_batch_size(self.global_batch_size(split), input_context),
            training=split == "train",
            pad_to_seq_length=self.task_config.pad_to_seq_length,
            input_context=input_context,
            seed=self.config.runtime.seed,
        )

    # --- model, losses, metrics -----------------------------------------------

    def build_model(self):
        c = self.task_config
        encoder = self.build_encoder()
        return BertClassifier(
            encoder, self.num_classes, c.dropout, preprocessor=self.preprocessor, label_names=self.label_names
        )

    def build_losses(self):
        if self.num_classes == 1:
            return keras.losses.MeanSquaredError()
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def build_metrics(self):
        if self.info is not None:
            return self.info.build_metrics()
        if self.num_classes == 1:
            return [metrics_lib.PearsonCorrelation(name="pearson_correlation"), metrics_lib.SpearmanCorrelation(name="spearman_correlation")]
        return [keras.metrics.SparseCategoricalAccuracy(name="accuracy")]

    @property
    def main_metric(self):
        if self.info is not None:
            return self.info.main_metric
        return "spearman_correlation" if self.num_classes == 1 else "accuracy"

    def build_callbacks(self, model_dir):
        """Keeps the model with the best main metric in `model_dir/best`; optional early stopping."""
        monitor = f"val_{self.main_metric}"
        callbacks = [base.SaveBest(model_dir, monitor)]
        if self.task_config.early_stopping_patience:
            callbacks.append(
                keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=self.task_config.early_stopping_patience)
            )
        return callbacks

    # --- predictions ----------------------------------------------------------

    def predict(self, model, output_dir):
        """Predicts the test split with `model`'s own preprocessing and label names.

        GLUE tasks write the official submission files; custom files give
        predictions.tsv (index, label name or score). Needs only the test
        data: the model (e.g. `model_dir/best`) carries everything else.
        """
        if model.preprocessor is None:
            raise ValueError("the model has no preprocessor; build it with BertClassifier(..., preprocessor=...)")
        dataset = pipeline.text_dataset(
            self._raw_dataset("test"),
            preprocessor=model.preprocessor,
            batch_size=self.global_batch_size("test"),
            training=False,
        )
        ids, logits = [], []
        for batch in dataset:
            if "id" in batch:
                ids.extend(i.decode() for i in batch.pop("id").numpy())
            logits.append(model.predict_on_batch(batch))
        logits = np.concatenate(logits)
        c = self.task_config
        os.makedirs(output_dir, exist_ok=True)
        if c.task_name != "custom":
            name = "mnli_matched" if c.task_name == "mnli" else c.task_name
            return [glue_data.write_glue_predictions(name, logits, output_dir, ids=ids or None)]
        path = os.path.join(output_dir, "predictions.tsv")
        if model.num_classes == 1:
            labels = logits[:, 0]
        else:
            names = model.label_names or [str(i) for i in range(model.num_classes)]
            labels = [names[i] for i in logits.argmax(-1)]
        with open(path, "w") as f:
            f.write("index\tprediction\n")
            for index, label in zip(ids or range(len(labels)), labels):
                f.write(f"{index}\t{label}\n")
        return [path]

    def held_out_examples(self, limit):
        validation = self.examples("validation")
        examples = {"text": validation.texts[:limit]}
        if validation.texts_b:
            examples["text_b"] = validation.texts_b[:limit]
        return examples


def _column(column):
    """A config's column: a name or number, or None for "" (no such column)."""
    return None if column == "" else column


class ClassifierHead(serving.BertTextHead):
    """Serves a `BertClassifier`: raw text (and `text_b` for pairs) in;
    `probabilities` [batch, classes], `label_id` and `label` (the label names)
    out, or `score` [batch] for a regressor (`num_classes=1`).
    `serve_examples` answers TF Serving's Classify (or Regress) API."""

    def __init__(self, model):
        super().__init__(model)
        self.regression = model.num_classes == 1
        self.main_output = "score" if self.regression else "probabilities"
        self.method_names = {"serve_examples": serving.REGRESS_METHOD if self.regression else serving.CLASSIFY_METHOD}
        if not self.regression:
            self.label_names = tf.constant(list(model.label_names or map(str, range(model.num_classes))))

    def describe(self):
        names = None if self.regression else [n.decode() for n in self.label_names.numpy()]
        return {**super().describe(), "label_names": names}

    def tflite_outputs(self, packed):
        logits = tf.cast(self.model(packed, training=False), tf.float32)
        if self.regression:
            return {"score": logits[:, 0]}
        return {"probabilities": tf.nn.softmax(logits, axis=-1)}

    def outputs(self, packed):
        outputs = self.tflite_outputs(packed)
        if not self.regression:
            label_id = tf.argmax(outputs["probabilities"], axis=-1, output_type=tf.int32)
            outputs.update(label_id=label_id, label=tf.gather(self.label_names, label_id))
        return outputs

    def examples_outputs(self, outputs):
        if self.regression:
            return {"outputs": outputs["score"]}
        classes = tf.broadcast_to(self.label_names, tf.shape(outputs["probabilities"]))
        return {"classes": classes, "scores": outputs["probabilities"]}

    def compare(self, reference, outputs):
        result = super().compare(reference, outputs)
        if not self.regression:
            same = np.argmax(outputs["probabilities"], -1) == np.argmax(reference["probabilities"], -1)
            result["agreement"] = float(np.mean(same))
        return result


def glue_experiment(task_name):
    """BERT's fine-tuning recipe: AdamW 3e-5, 10% warmup, linear decay, batch 32, 3 epochs."""

    def make():
        return base.fine_tuning_experiment(GlueConfig(task_name=task_name), learning_rate=3e-5)

    return make


def custom_experiment():
    """Your own labelled TSV/CSV/JSONL files (set task.train_file etc.), BERT's recipe."""
    return glue_experiment("custom")()


GLUE_TASK_NAMES = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")

TASK_TYPE = base.TaskType(
    name="sentence_classification",
    task=ClassificationTask,
    serving=ClassifierHead,
    models=(BertClassifier,),
    experiments={
        **{f"glue/{name}": glue_experiment(name) for name in GLUE_TASK_NAMES},
        "text/classification": custom_experiment,
    },
)
