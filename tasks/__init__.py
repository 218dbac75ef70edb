"""Tasks: what to train, on which data, with which losses and metrics.

Experiments are listed explicitly below; importing a module registers nothing.

    task = tfplm.tasks.get("bert/pretraining", overrides="task.model.preset=bert_mini")
"""

from tfplm import config as config_lib
from tfplm.registry import Registry
from tfplm.tasks import glue, pretraining
from tfplm.tasks.base import ExperimentConfig, RuntimeConfig, Task, TrainerConfig

EXPERIMENTS = Registry("experiment")
EXPERIMENTS.register(
    "bert/pretraining", (pretraining.BertPretrainingTask, pretraining.bert_pretraining_experiment)
)
EXPERIMENTS.register(
    "gpt/pretraining", (pretraining.GPTPretrainingTask, pretraining.gpt_pretraining_experiment)
)
for _name in ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"):
    EXPERIMENTS.register(f"glue/{_name}", (glue.GlueTask, glue.glue_experiment(_name)))
EXPERIMENTS.register("text/classification", (glue.GlueTask, glue.custom_experiment))


def list_experiments():
    return EXPERIMENTS.names()


def get_config(name, config_files=(), overrides=()):
    """The experiment's config: defaults, then YAML files, then dotted overrides."""
    _, default_config = EXPERIMENTS.get(name)
    config = default_config()
    for path in config_files:
        config = config_lib.load_yaml(config, path)
    for text in [overrides] if isinstance(overrides, str) else overrides:
        config = config_lib.override(config, text)
    return config


def get(name, config_files=(), overrides=()):
    """The named experiment's `Task`, configured (see `get_config`)."""
    task_class, _ = EXPERIMENTS.get(name)
    return task_class(get_config(name, config_files, overrides))


__all__ = ["EXPERIMENTS", "ExperimentConfig", "RuntimeConfig", "Task", "TrainerConfig", "get", "get_config", "list_experiments"]
