"""`glue/<task>` fine-tuning, and bring-your-own text classification / regression.

Examples come from GLUE's TSV folder (`task.glue_dir`), from TensorFlow Datasets
(`task.tfds_data_dir`), or from your own TSV/CSV/JSONL files (`task.train_file`
etc. with named columns). They are tokenized in the tf.data pipeline by the
model's own preprocessor and batched by length (buckets of 16/32/64/.../
seq_length tokens), so short sentences do not pay for `seq_length`.

    task = tfplm.tasks.get("glue/sst2", overrides="task.glue_dir=...,task.init_checkpoint=...")
    model = task.build_model()
    task.compile(model)
    model.fit(task.build_inputs("train"), validation_data=task.build_inputs("validation"), epochs=3)
"""

import dataclasses
import json
import math
import os

import keras
import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text
from absl import logging

from tfplm import metrics as metrics_lib
from tfplm.data import text_files
from tfplm.models import BertClassifier, BertEncoder
from tfplm.tasks import base, glue_data
from tfplm.tokenizers import WordPieceTokenizer
from tfplm.training.optimization import OptimizerConfig

LABELS_FILE = "label_names.json"


@dataclasses.dataclass
class GlueConfig:
    """Attributes:
    task_name: a GLUE task (cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli)
        or "custom" for your own files.
    glue_dir: GLUE's folder of TSV directories (CoLA/, SST-2/, ...).
    tfds_data_dir: read `glue/<task>` from TFDS instead (prepared there).
    train_file, validation_file, test_file: your own TSV/CSV/JSONL files
        (task_name="custom"), with `text_column`, `text_b_column` (pairs),
        `label_column`, `id_column` (test files) and `regression`.
    init_checkpoint: pretrained weights: any directory `from_pretrained` reads
        (tfplm, Hugging Face, Google BERT, keras-nlp). Empty: a random
        `preset` encoder with `vocab_file`.
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
    text_column: str = "text"
    text_b_column: str = ""
    label_column: str = "label"
    id_column: str = ""
    regression: bool = False
    init_checkpoint: str = ""
    preset: str = "bert_tiny"
    vocab_file: str = ""
    lowercase: bool = True
    seq_length: int = 128
    global_batch_size: int = 32
    epochs: int = 3
    dropout: float = 0.1
    skip_bad_rows: bool = False
    pad_to_seq_length: bool = False
    early_stopping_patience: int = 0


def _length_buckets(seq_length):
    """Bucket boundaries 16, 32, 64, ... below seq_length."""
    boundaries, size = [], 16
    while size < seq_length:
        boundaries.append(size + 1)  # bucket_by_sequence_length's bounds are exclusive
        size *= 2
    return boundaries


class GlueTask(base.Task):
    """Sentence (pair) classification or regression on a `BertClassifier`."""

    def __init__(self, config):
        super().__init__(config)
        self._examples = {}
        self._model = None

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
        return 1 if self.task_config.regression else len(self.label_names)

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
                layout = text_files.FileLayout(
                    text=c.text_column,
                    text_b=c.text_b_column or None,
                    label=None if split == "test" else c.label_column,
                    id=(c.id_column or None) if split == "test" else None,
                )
                known = None if split == "train" else self.examples("train").label_names
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
        if self.task_config.tfds_data_dir:
            return int(self._raw_dataset(split).reduce(0, lambda n, _: n + 1))
        return len(self.examples(split))

    def global_batch_size(self, split):
        return self.task_config.global_batch_size

    def steps_per_epoch(self):
        return math.ceil(self.num_examples("train") / self.global_batch_size("train"))

    def train_steps(self):
        return self.config.trainer.train_steps or self.task_config.epochs * self.steps_per_epoch()

    def steps_per_loop(self):
        return self.config.trainer.steps_per_loop or self.steps_per_epoch()

    def describe_inputs(self, split):
        c = self.task_config
        source = c.tfds_data_dir or (c.glue_dir if c.task_name != "custom" else self._custom_file(split))
        return {"task": c.task_name, "split": split, "source": source, "examples": self.num_examples(split)}

    def _preprocessor(self):
        if self._model is None:
            raise ValueError("build the model first (task.build_model()): inputs use its tokenizer")
        return self._model.preprocessor

    def build_inputs(self, split, input_context=None):
        """Batches of (encoder inputs, label), tokenized by the model's preprocessor.

        Training batches are shuffled and grouped by length; other splits keep
        the file order and pad each batch to its longest example. With
        `pad_to_seq_length`, every example is `seq_length` long instead.
        """
        preprocessor = self._preprocessor()
        dataset = self._raw_dataset(split)
        if input_context and input_context.num_input_pipelines > 1:
            dataset = dataset.shard(input_context.num_input_pipelines, input_context.input_pipeline_id)
        batch_size = self.global_batch_size(split)
        if input_context:
            batch_size = input_context.get_per_replica_batch_size(batch_size)
        labeled = isinstance(dataset.element_spec, tuple)
        seq_length, static = self.task_config.seq_length, self.task_config.pad_to_seq_length

        def featurize(features, label=None):
            texts = [features["text"][None]]
            if "text_b" in features:
                texts.append(features["text_b"][None])
            packed = preprocessor(tuple(texts))
            # Unpadded: batching pads to the batch's bucket (training) or longest example.
            length = seq_length if static else tf.reduce_sum(packed["input_mask"])
            inputs = {k: v[0, :length] for k, v in packed.items()}
            return (inputs, label) if labeled else inputs

        if split == "train":
            dataset = dataset.shuffle(10_000, reshuffle_each_iteration=True)
        dataset = dataset.map(
            (lambda f, l: featurize(f, l)) if labeled else featurize, num_parallel_calls=tf.data.AUTOTUNE
        )
        if split == "train" and static:
            dataset = dataset.batch(batch_size, drop_remainder=True)
        elif split == "train":
            boundaries = _length_buckets(seq_length)
            dataset = dataset.bucket_by_sequence_length(
                lambda inputs, label: tf.shape(inputs["input_word_ids"])[0],
                bucket_boundaries=boundaries,
                bucket_batch_sizes=[batch_size] * (len(boundaries) + 1),
                pad_to_bucket_boundary=False,
            )
        else:
            dataset = dataset.padded_batch(batch_size)
        return dataset.prefetch(tf.data.AUTOTUNE)

    # --- model, losses, metrics -----------------------------------------------

    def build_model(self):
        c = self.task_config
        if c.init_checkpoint:
            model = BertClassifier.from_pretrained(
                c.init_checkpoint, num_classes=self.num_classes, dropout=c.dropout, seq_length=c.seq_length
            )
        else:
            if not c.vocab_file:
                raise ValueError("set task.init_checkpoint (pretrained weights) or task.vocab_file (random preset)")
            from tfplm.tokenizers import BertPreprocessor

            tokenizer = WordPieceTokenizer(c.vocab_file, c.lowercase)
            encoder = BertEncoder.from_preset(c.preset, vocab_size=tokenizer.vocabulary_size())
            model = BertClassifier(encoder, self.num_classes, c.dropout)
            model.tokenizer = tokenizer
            model.preprocessor = BertPreprocessor(tokenizer, c.seq_length)
        model.label_names = self.label_names
        self._model = model
        return model

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
        """Keeps the weights with the best main metric; optional early stopping."""
        monitor = f"val_{self.main_metric}"
        callbacks = [
            keras.callbacks.ModelCheckpoint(
                os.path.join(model_dir, "best.weights.h5"),
                monitor=monitor,
                mode="max",
                save_best_only=True,
                save_weights_only=True,
            )
        ]
        if self.task_config.early_stopping_patience:
            callbacks.append(
                keras.callbacks.EarlyStopping(monitor=monitor, mode="max", patience=self.task_config.early_stopping_patience)
            )
        return callbacks

    # --- predictions ----------------------------------------------------------

    def predict(self, model, output_dir):
        """Predicts the test split with the best weights (if kept, else the latest);
        GLUE tasks write official submission files."""
        best = os.path.join(output_dir, "best.weights.h5")
        if os.path.exists(best):
            model.load_weights(best)
        dataset = self.build_inputs("test")
        ids = [i.decode() for i in np.concatenate([b["id"].numpy() for b in dataset])] if "id" in dataset.element_spec else None
        logits = model.predict(dataset.map(lambda f: {k: v for k, v in f.items() if k != "id"}), verbose=0)
        c = self.task_config
        os.makedirs(output_dir, exist_ok=True)
        if c.task_name != "custom":
            name = "mnli_matched" if c.task_name == "mnli" else c.task_name
            return [glue_data.write_glue_predictions(name, logits, output_dir, ids=ids)]
        path = os.path.join(output_dir, "predictions.tsv")
        labels = logits[:, 0] if self.num_classes == 1 else [self.label_names[i] for i in logits.argmax(-1)]
        with open(path, "w") as f:
            f.write("index\tprediction\n")
            for index, label in zip(ids or range(len(labels)), labels):
                f.write(f"{index}\t{label}\n")
        return [path]


def glue_experiment(task_name):
    """BERT's fine-tuning recipe: AdamW 3e-5, 10% warmup, linear decay, batch 32, 3 epochs."""

    def make():
        return base.ExperimentConfig(
            task=GlueConfig(task_name=task_name),
            trainer=base.TrainerConfig(
                train_steps=0,  # 0: `epochs` over the training set
                steps_per_loop=0,  # 0: one epoch per loop
                optimizer=OptimizerConfig(learning_rate=3e-5, warmup_fraction=0.1),
            ),
        )

    return make


def custom_experiment():
    """Your own labelled TSV/CSV/JSONL files (set task.train_file etc.), BERT's recipe."""
    config = glue_experiment("custom")()
    return config
