"""Task types: what a trainer and an exporter need to know about an application.

A task type (sentence classification, masked-LM pretraining, ...) is one
module that owns, for its kind of model:

* a `Task`: the head model, the input pipeline, losses, metrics and
  prediction post-processing. The trainer (`tfplm.training.trainer`) only
  runs Keras `fit`/`evaluate` on them, so the same objects work in a notebook;
* a `ServingHead` (`tfplm.tasks.serving`): what its exports take and return;
* its experiments: named config factories for `tools/train.py`.

The module ends with a `TaskType` naming these, and `tfplm.tasks` lists it in
one registry line.

    task = tfplm.tasks.get("bert/pretraining", overrides="task.model.preset=bert_tiny")
    model = task.build_model()
    task.compile(model)
    model.fit(task.build_inputs("train"), steps_per_epoch=100)
"""

import abc
import dataclasses
import functools
import math
import os
import typing
from typing import Annotated

import keras
from absl import logging

from tfplm import publish
from tfplm.config import ConfigError, Range
from tfplm.models import BertEncoder, pretrained
from tfplm.tokenizers import WordPieceTokenizer
from tfplm.training.optimization import OptimizerConfig, build_optimizer
from tfplm.training.trainer import BEST_DIR


@dataclasses.dataclass
class TrainerConfig:
    """Attributes:
    train_steps: optimizer steps in total (0: the task's epochs, for tasks
        that count epochs, as fine-tuning does).
    steps_per_loop: steps between logging, summaries and checkpoints (one
        Keras "epoch"; 0: one epoch, for tasks that count epochs).
    steps_per_execution: steps run per call into the compiled graph.
    eval_steps: evaluation batches; 0 = the whole evaluation set.
    max_checkpoints_to_keep: checkpoints kept by the CheckpointManager.
    log_every_steps: steps between the progress lines the binaries print
        (step, loss, metrics, examples/s); 0 = one line per loop only.
    optimizer: see `OptimizerConfig`.
    """

    train_steps: Annotated[int, Range(min=0)] = 1000
    steps_per_loop: Annotated[int, Range(min=0)] = 100
    steps_per_execution: Annotated[int, Range(min=1)] = 1
    eval_steps: Annotated[int, Range(min=0)] = 0
    max_checkpoints_to_keep: Annotated[int, Range(min=1)] = 3
    log_every_steps: Annotated[int, Range(min=0)] = 100
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)


@dataclasses.dataclass
class RuntimeConfig:
    """Attributes:
    distribution_strategy: default, one_device, mirrored, multi_worker_mirrored or tpu.
    tpu: TPU address for the tpu strategy.
    mixed_precision: auto, float32, mixed_float16 or mixed_bfloat16. "auto":
        mixed_bfloat16 on TPUs and on CPUs with AMX or AVX512-BF16 (measured
        several times faster here, BENCHMARKS.md), else float32 (on GPUs
        choose mixed_float16 yourself); the run's log says which.
    jit_compile: compile train/eval steps with XLA (on this project's CPU it
        made no steady difference for bert_small; see BENCHMARKS.md).
    seed: seeds weight initialisation, dropout and the order of the training
        data. None = a random seed, drawn when a model_dir starts training and
        recorded in its config.yaml, so a resumed run continues the same
        stream (bit-identical to an uninterrupted run either way).
    """

    distribution_strategy: str = "default"
    tpu: str = ""
    mixed_precision: str = "auto"
    jit_compile: bool = False
    seed: int | None = None


@dataclasses.dataclass
class ExperimentConfig:
    """A task's config plus how to train it.

    Attributes:
    task: the task's own dataclass.
    trainer: see `TrainerConfig`.
    runtime: see `RuntimeConfig`.
    experiment: the registered name it came from (written to config.yaml, so
        a model_dir names its own experiment).
    """

    task: typing.Any
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)
    experiment: str = ""


def _at_least_one(trainer, name):
    """`trainer.<name>`, which tasks without epochs need to be 1 or more."""
    value = getattr(trainer, name)
    if value < 1:
        raise ConfigError(
            f"trainer.{name}={value}: 0 means one epoch, which only tasks with epochs have; set it to 1 or more"
        )
    return value


@dataclasses.dataclass(frozen=True)
class TaskType:
    """One kind of application, as its module defines it.

    Attributes:
        name: e.g. "sentence_classification".
        task: its `Task` subclass (None for a type that is only served).
        serving: its `ServingHead` subclass.
        models: the model classes it trains and serves; export finds the
            serving head of a model through them.
        experiments: experiment name → function returning its default
            `ExperimentConfig`.
    """

    name: str
    task: typing.Any
    serving: typing.Any
    models: tuple
    experiments: dict = dataclasses.field(default_factory=dict)


class Task(abc.ABC):
    """Base class of tasks. Subclasses implement the abstract `build_*` methods.

    Args:
        config: the `ExperimentConfig` (its `task` field holds this task's config).
    """

    def __init__(self, config):
        self.config = config

    @property
    def task_config(self):
        return self.config.task

    @abc.abstractmethod
    def build_model(self):
        """The Keras model; call inside the strategy's scope."""

    @abc.abstractmethod
    def build_inputs(self, split, input_context=None):
        """A tf.data.Dataset of (features, labels) for "train" or "validation".

        With an `input_context` (from `distribute_datasets_from_function`) the
        dataset holds this input pipeline's shard, batched per replica.
        """

    @abc.abstractmethod
    def global_batch_size(self, split):
        """Examples per step, summed over replicas."""

    @abc.abstractmethod
    def build_losses(self):
        """Losses for `model.compile` (a loss or a dict keyed by output name)."""

    def describe_inputs(self, split):
        """What data `split` reads, for eval_results.json."""
        return {"split": split}

    def train_steps(self):
        """Optimizer steps of the whole run."""
        return _at_least_one(self.config.trainer, "train_steps")

    def steps_per_loop(self):
        """Steps between logs, validation and checkpoints."""
        return _at_least_one(self.config.trainer, "steps_per_loop")

    def build_callbacks(self, model_dir):
        """Extra Keras callbacks for training (e.g. keep the best checkpoint).

        They run before each loop's checkpoint is saved. Their `on_train_end`
        runs again when a finished run is started again (the run may have
        been killed between its last checkpoint and the end of training), so
        what it writes must be safe to write twice.
        """
        return []

    def predict(self, model, output_dir):
        """Writes predictions for the task's test data; returns the files."""
        raise ValueError(f"{type(self).__name__} has no predict mode")

    def evaluate_predictions(self, model):
        """Metrics of the model's post-processed predictions on the validation
        split that Keras metrics cannot compute batch by batch (SQuAD's exact
        match and F1, entity F1, BLEU): {name: float}, or None.

        The trainer adds them to every loop's validation logs as `val_<name>`
        (so `SaveBest` can monitor them) and to eval_results.json.
        """
        return None

    def held_out_examples(self, limit):
        """Up to `limit` raw held-out inputs for export reports: {input name: [str]},
        keyed like the serving head's inputs; None if the task has none."""
        return None

    def build_metrics(self):
        """Metrics for `model.compile`."""
        return None

    def build_optimizer(self, steps=None):
        """The config's optimizer, its learning-rate schedule spanning `steps`
        optimizer steps (default `train_steps()`)."""
        return build_optimizer(self.config.trainer.optimizer, steps or self.train_steps())

    def compile(self, model, steps=None):
        """Compiles `model` with this task's optimizer, losses and metrics.

        Args:
            model: the task's model (`build_model`).
            steps: the optimizer steps `model.fit` will run, which the
                learning-rate schedule spans: epochs x steps per epoch, e.g.
                `3 * len(dataset)` for a `tfplm.data.text_dataset`. Default:
                the config's `train_steps()`. A zoo model's `fit` over whole
                epochs of a dataset raises a ValueError when it would run a
                different number; one given `steps_per_epoch`, when it would
                run more (`tfplm.training.optimization.ScheduleCheck`).
        """
        model.compile(
            optimizer=self.build_optimizer(steps),
            loss=self.build_losses(),
            metrics=self.build_metrics(),
            steps_per_execution=self.config.trainer.steps_per_execution,
            jit_compile=self.config.runtime.jit_compile,
        )
        return model


class EncoderTask(Task):
    """What tasks that fine-tune a BERT encoder share (classification, tagging,
    question answering, similarity): the tokenizer of `task.init_checkpoint`
    (or `task.vocab_file`), and training counted in epochs of
    `num_examples("train")`: `trainer.train_steps` of 0 means `task.epochs`
    epochs, `trainer.steps_per_loop` of 0 one epoch.

    The task config has `init_checkpoint`, `vocab_file`, `lowercase`,
    `global_batch_size` and `epochs`; subclasses implement `num_examples`.
    """

    @abc.abstractmethod
    def num_examples(self, split):
        """Training examples (rows of the model's batches) in `split`."""

    @functools.cached_property
    def _checkpoint(self):
        """`task.init_checkpoint`, read once: its tokenizer feeds the inputs, its weights the model."""
        return pretrained.read_checkpoint(self.task_config.init_checkpoint, family="bert")

    @functools.cached_property
    def tokenizer(self):
        """`task.init_checkpoint`'s `WordPieceTokenizer`, or `task.vocab_file`'s when
        there is no init checkpoint or it has no vocabulary files. Needs no
        model: `build_inputs` works before (and without) `build_model`."""
        c = self.task_config
        tokenizer = self._checkpoint.tokenizer if c.init_checkpoint else None
        if tokenizer is None:
            if not c.vocab_file:
                raise ConfigError(
                    f"task.init_checkpoint {c.init_checkpoint!r} has no vocabulary files; set task.vocab_file"
                    if c.init_checkpoint
                    else "set task.init_checkpoint (pretrained weights) or task.vocab_file (random preset)"
                )
            tokenizer = WordPieceTokenizer(c.vocab_file, c.lowercase)
            if c.init_checkpoint:
                check_vocabulary_fits(tokenizer, self._checkpoint, f"task.vocab_file {c.vocab_file!r}")
        return tokenizer

    def build_encoder(self, **overrides):
        """`task.init_checkpoint`'s `BertEncoder`, or a random `task.preset` one for `tokenizer`."""
        c = self.task_config
        if c.init_checkpoint:
            return BertEncoder.from_pretrained(self._checkpoint, **overrides)
        return BertEncoder.from_preset(c.preset, vocab_size=self.tokenizer.vocabulary_size(), **overrides)

    def global_batch_size(self, split):
        return self.task_config.global_batch_size

    def steps_per_epoch(self):
        return math.ceil(self.num_examples("train") / self.global_batch_size("train"))

    def train_steps(self):
        return self.config.trainer.train_steps or self.task_config.epochs * self.steps_per_epoch()

    def steps_per_loop(self):
        return self.config.trainer.steps_per_loop or self.steps_per_epoch()


def fine_tuning_experiment(task_config, learning_rate):
    """The `ExperimentConfig` of an `EncoderTask`: BERT's fine-tuning schedule (AdamW
    at `learning_rate`, 10% warmup, linear decay) over `task.epochs` epochs, one
    loop (validation, checkpoint) per epoch."""
    return ExperimentConfig(
        task=task_config,
        trainer=TrainerConfig(
            train_steps=0,  # 0: `task.epochs` epochs
            steps_per_loop=0,  # 0: one epoch per loop
            optimizer=OptimizerConfig(learning_rate=learning_rate, warmup_fraction=0.1),
        ),
    )


def check_vocabulary_fits(tokenizer, checkpoint, source):
    """Fails if `tokenizer` has ids beyond the embeddings of `checkpoint` (a
    vocab file that is not the checkpoint's)."""
    size = checkpoint.config["vocab_size"]
    if tokenizer.vocabulary_size() > size:
        raise ValueError(
            f"{source} has {tokenizer.vocabulary_size()} tokens but the model of {checkpoint.path!r} embeds "
            f"{size}; pass the vocabulary the checkpoint was trained with"
        )


class SaveBest(keras.callbacks.Callback):
    """Writes the model in tfplm's pretrained format (`save_pretrained`) to
    `model_dir/best` each time `monitor` improves: the run's best model,
    complete with its preprocessing and label names, for `--mode=predict`,
    export and fine-tuning (`trainer.load_trained` reads it).

    The metric value is kept beside the weights (`best_metric.txt`), published
    together with them, so a resumed run only replaces the model with a better one.
    """

    METRIC_FILE = "best_metric.txt"

    def __init__(self, model_dir, monitor, mode="max"):
        super().__init__()
        if mode not in ("max", "min"):
            raise ValueError(f"mode={mode!r}; expected 'max' or 'min'")
        self.directory = os.path.join(model_dir, BEST_DIR)
        self.monitor = monitor
        self.better = (lambda a, b: a > b) if mode == "max" else (lambda a, b: a < b)
        self.best = None

    def on_train_begin(self, logs=None):
        path = os.path.join(self.directory, self.METRIC_FILE)
        if self.best is None and os.path.isfile(path):
            with open(path) as f:
                self.best = float(f.read())

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.monitor)
        if value is None:
            logging.warning("SaveBest: no %s in the logs; validate with mode=train_and_eval", self.monitor)
            return
        if self.best is None or self.better(value, self.best):
            self.best = float(value)
            with publish.directory(self.directory, replace=True) as tmp:
                self.model.save_pretrained(tmp)
                with open(os.path.join(tmp, self.METRIC_FILE), "w") as f:
                    f.write(repr(self.best))


class SavePretrained(keras.callbacks.Callback):
    """Writes the trained model in tfplm's format to `directory` when training
    ends, ready for `from_pretrained` (e.g. `--init_checkpoint` of a fine-tuning run).

    `save_pretrained` publishes the folder whole; a run started again after
    it ended writes it again (the trainer calls `on_train_end` then too).
    """

    def __init__(self, directory):
        super().__init__()
        self.directory = directory

    def on_train_end(self, logs=None):
        self.model.save_pretrained(self.directory)
