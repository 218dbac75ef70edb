"""Semantic textual similarity: `sts/stsbenchmark` (evaluate and fine-tune sentence embeddings).

The model is a `BertSimilarity`: one `BertEncoder` embeds each sentence of a
pair on its own, pooled as the checkpoint was trained (mean + L2 norm for
sentence-transformers checkpoints), and the cosine of the two embeddings is
the prediction. The metric is STS Benchmark's: the Spearman rank correlation
between cosines and the gold scores (reported x100). Fine-tuning uses
sentence-transformers' `CosineSimilarityLoss`: the squared error between the
cosine and the gold score scaled to [0, 1].

Data: STS Benchmark's `sts-{train,dev,test}.csv` (tab-separated despite the
name; genre, file, year, id, score 0-5, sentence 1, sentence 2, sometimes
more columns; quotes are text).

    # all-MiniLM-L6-v2 as it comes, on the test set:
    task = tfplm.tasks.get("sts/stsbenchmark", overrides=f"task.data_dir=...,task.init_checkpoint={MINILM},task.eval_split=test")
    model = task.build_model(); task.compile(model)
    model.evaluate(task.build_inputs("validation"), return_dict=True)["spearman_correlation"]
"""

import csv
import dataclasses
import functools
import os
from typing import Annotated

import keras
import numpy as np
import tensorflow as tf

from tfplm import metrics as metrics_lib
from tfplm.config import ConfigError, Range
from tfplm.data import pipeline, text_files
from tfplm.models import BertEncoder, BertSimilarity
from tfplm.tasks import base, embedding
from tfplm.tokenizers import BertPreprocessor

SPLIT_FILES = {"train": "sts-train.csv", "dev": "sts-dev.csv", "test": "sts-test.csv"}
MAX_SCORE = 5.0
# sts-*.csv: genre, file, year, id, score, sentence 1, sentence 2 (+ sources on some rows).
LAYOUT = text_files.FileLayout(text=5, text_b=6, label=4, header=False, quoting=csv.QUOTE_NONE, format="tsv")


@dataclasses.dataclass
class StsConfig:
    """Attributes:
    data_dir: the STS Benchmark folder (sts-train.csv, sts-dev.csv, sts-test.csv).
    eval_split: the file evaluation and validation read: "dev" (choose
        models on it) or "test" (report on it).
    init_checkpoint: the encoder: any folder `from_pretrained` reads
        (sentence-transformers folders bring their pooling). Empty: a random
        `preset` encoder with `vocab_file`.
    preset, vocab_file, lowercase: a random encoder (no init_checkpoint).
    pooling: "" = the checkpoint's (mean for sentence-transformers folders,
        else "pooler"); or "mean", "cls", "pooler".
    normalize: L2-normalize embeddings; null = the checkpoint's.
    seq_length: longest packed sentence (sentence-transformers' all-MiniLM-L6-v2 uses 256;
        STS Benchmark sentences fit in 128).
    global_batch_size: pairs per step (sentence-transformers' STS recipe: 16).
    epochs: training epochs when trainer.train_steps is 0 (their recipe: 4).
    """

    data_dir: str = ""
    eval_split: str = "dev"
    init_checkpoint: str = ""
    preset: str = "bert_tiny"
    vocab_file: str = ""
    lowercase: bool = True
    pooling: str = ""
    normalize: bool | None = None
    seq_length: Annotated[int, Range(min=3)] = 128
    global_batch_size: Annotated[int, Range(min=1)] = 16
    epochs: Annotated[int, Range(min=1)] = 4


class StsTask(base.EncoderTask):
    """Sentence-pair similarity on a `BertSimilarity`, STS Benchmark's files and metric."""

    def __init__(self, config):
        super().__init__(config)
        c = self.task_config
        if c.eval_split not in ("dev", "test"):
            raise ConfigError(f"task.eval_split={c.eval_split!r}; expected 'dev' or 'test'")
        self._examples = {}

    def _file(self, split):
        name = {"train": "train", "validation": self.task_config.eval_split, "test": "test"}[split]
        if not self.task_config.data_dir:
            raise ValueError("task.data_dir is empty; point it at the STS Benchmark folder (sts-train.csv, ...)")
        return os.path.join(self.task_config.data_dir, SPLIT_FILES[name])

    def examples(self, split):
        """The split's `LabeledExamples` (pairs, scores 0-5), read once."""
        if split not in self._examples:
            self._examples[split] = text_files.read_labeled_examples(
                self._file(split), LAYOUT, regression=True, label_range=(0.0, MAX_SCORE)
            )
        return self._examples[split]

    def num_examples(self, split):
        return len(self.examples(split))

    def describe_inputs(self, split):
        return {"split": split, "source": self._file(split), "examples": self.num_examples(split)}

    @functools.cached_property
    def preprocessor(self):
        """The single-text `BertPreprocessor` (each sentence is packed alone)."""
        return BertPreprocessor(self.tokenizer, self.task_config.seq_length)

    def build_inputs(self, split, input_context=None):
        """Batches of ({encoder inputs of the first sentences, the same `_b` for
        the second}, gold score / 5); training batches reshuffled every pass."""
        examples = self.examples(split)
        scores = np.asarray(examples.labels, np.float32) / MAX_SCORE
        dataset = tf.data.Dataset.from_tensor_slices((list(examples.texts), list(examples.texts_b), scores))
        dataset = pipeline.shard(dataset, input_context)
        training = split == "train"
        if training:
            dataset = pipeline.reshuffled(dataset, len(scores), self.config.runtime.seed, endless=True)
        batch_size = pipeline.per_replica_batch_size(self.global_batch_size(split), input_context)
        dataset = dataset.batch(batch_size, drop_remainder=training)

        # Several replicas get batches of seq_length: Keras builds a distributed
        # model on the mean of the replicas' first batches, which must have one shape.
        longest = not (input_context and input_context.num_replicas_in_sync > 1)

        def pack(a, b, score):
            first = self.preprocessor(a, pad_to_longest=longest)
            second = self.preprocessor(b, pad_to_longest=longest)
            return {**first, **{f"{name}_b": value for name, value in second.items()}}, score

        dataset = dataset.map(pack, num_parallel_calls=tf.data.AUTOTUNE)
        if training:  # an epoch of len(dataset) steps, as the trainer counts them
            dataset = dataset.take(self.steps_per_epoch())
        return dataset.prefetch(tf.data.AUTOTUNE)

    def build_model(self):
        c = self.task_config
        if c.pooling and c.pooling not in ("mean", "cls", "pooler"):
            raise ConfigError(f"task.pooling={c.pooling!r}; expected '', 'mean', 'cls' or 'pooler'")
        if c.init_checkpoint:
            overrides = {"pooling": c.pooling or self._checkpoint.config.get("pooling", "pooler")}
            if c.normalize is not None:
                overrides["normalize"] = c.normalize
            encoder = BertEncoder.from_pretrained(self._checkpoint, **overrides)
        else:
            encoder = BertEncoder.from_preset(
                c.preset,
                vocab_size=self.preprocessor.tokenizer.vocabulary_size(),
                pooling=c.pooling or "mean",
                normalize=bool(c.normalize),
            )
        # BERT's pooler gets no gradient unless it pools.
        encoder.pooler.trainable = encoder.pooling == "pooler"
        return BertSimilarity(encoder, preprocessor=self.preprocessor)

    def build_losses(self):
        # sentence-transformers' CosineSimilarityLoss: MSE(cosine, score / 5).
        return keras.losses.MeanSquaredError()

    def build_metrics(self):
        return [
            metrics_lib.SpearmanCorrelation(name="spearman_correlation"),
            metrics_lib.PearsonCorrelation(name="pearson_correlation"),
        ]

    def build_callbacks(self, model_dir):
        return [base.SaveBest(model_dir, "val_spearman_correlation")]

    def held_out_examples(self, limit):
        examples = self.examples("validation")
        return {"text": (list(examples.texts[: (limit + 1) // 2]) + list(examples.texts_b[: limit // 2]))[:limit]}


def sts_experiment():
    """sentence-transformers' STS Benchmark recipe: batch 16, 4 epochs, AdamW 2e-5, 10% warmup."""
    return base.fine_tuning_experiment(StsConfig(), learning_rate=2e-5)


TASK_TYPE = base.TaskType(
    name="sentence_similarity",
    task=StsTask,
    serving=embedding.EmbeddingHead,
    models=(BertSimilarity,),
    experiments={"sts/stsbenchmark": sts_experiment},
)
