"""The Task interface: what a trainer needs to know about an experiment.

A task owns its model, input pipeline, losses, metrics and optimizer; the
trainer (`tfplm.training.trainer`) only runs Keras `fit`/`evaluate` on them, so
the same objects work in a notebook:

    task = tfplm.tasks.get("bert/pretraining", "task.model.preset=bert_tiny")
    model = task.build_model()
    task.compile(model)
    model.fit(task.build_inputs("train"), steps_per_epoch=100)
"""

import abc
import dataclasses
import typing

from tfplm.training.optimization import OptimizerConfig, build_optimizer


@dataclasses.dataclass
class TrainerConfig:
    """Attributes:
    train_steps: optimizer steps in total.
    steps_per_loop: steps between logging, summaries and checkpoints (one
        Keras "epoch").
    steps_per_execution: steps run per call into the compiled graph.
    eval_steps: evaluation batches; 0 = the whole evaluation set.
    max_checkpoints_to_keep: checkpoints kept by the CheckpointManager.
    optimizer: see `OptimizerConfig`.
    """

    train_steps: int = 1000
    steps_per_loop: int = 100
    steps_per_execution: int = 1
    eval_steps: int = 0
    max_checkpoints_to_keep: int = 3
    optimizer: OptimizerConfig = dataclasses.field(default_factory=OptimizerConfig)


@dataclasses.dataclass
class RuntimeConfig:
    """Attributes:
    distribution_strategy: default, one_device, mirrored, multi_worker_mirrored or tpu.
    tpu: TPU address for the tpu strategy.
    mixed_precision: float32, mixed_float16 or mixed_bfloat16.
    jit_compile: compile train/eval steps with XLA (on this project's CPU it
        made no steady difference for bert_small; see BENCHMARKS.md).
    seed: seeds weight initialisation and dropout; None = random.
    """

    distribution_strategy: str = "default"
    tpu: str = ""
    mixed_precision: str = "float32"
    jit_compile: bool = False
    seed: int | None = None


@dataclasses.dataclass
class ExperimentConfig:
    """A task's config plus how to train it. `task` is the task's own dataclass."""

    task: typing.Any
    trainer: TrainerConfig = dataclasses.field(default_factory=TrainerConfig)
    runtime: RuntimeConfig = dataclasses.field(default_factory=RuntimeConfig)


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
        return self.config.trainer.train_steps

    def steps_per_loop(self):
        """Steps between logs, validation and checkpoints."""
        return self.config.trainer.steps_per_loop

    def build_callbacks(self, model_dir):
        """Extra Keras callbacks for training (e.g. keep the best checkpoint)."""
        return []

    def predict(self, model, output_dir):
        """Writes predictions for the task's test data; returns the files."""
        raise ValueError(f"{type(self).__name__} has no predict mode")

    def build_metrics(self):
        """Metrics for `model.compile`."""
        return None

    def build_optimizer(self):
        return build_optimizer(self.config.trainer.optimizer, self.train_steps())

    def compile(self, model):
        """Compiles `model` with this task's optimizer, losses and metrics."""
        model.compile(
            optimizer=self.build_optimizer(),
            loss=self.build_losses(),
            metrics=self.build_metrics(),
            steps_per_execution=self.config.trainer.steps_per_execution,
            jit_compile=self.config.runtime.jit_compile,
        )
        return model
