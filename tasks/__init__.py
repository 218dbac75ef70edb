"""Task types and their experiments.

Each task type is one module ending in a `TaskType` (its `Task`, its serving
head, its model classes, its experiments), listed here, in one line each:

    task = tfplm.tasks.get("glue/sst2", overrides="task.init_checkpoint=...")
    head = tfplm.tasks.serving_head(model)   # what its exports take and return

A new task type is a new module plus `register(module.TASK_TYPE)` (a line
below, or in your own code); importing a module registers nothing.
"""

from tfplm import config as config_lib
from tfplm.registry import Registry
from tfplm.tasks import causal_lm, classification, distillation, embedding, masked_lm, question_answering, similarity, tagging, translation
from tfplm.tasks.base import ExperimentConfig, RuntimeConfig, Task, TaskType, TrainerConfig

TASK_TYPES = Registry("task type")
EXPERIMENTS = Registry("experiment")


def register(task_type):
    """Adds a `TaskType` and its experiments."""
    TASK_TYPES.register(task_type.name, task_type)
    for name, make_config in task_type.experiments.items():
        EXPERIMENTS.register(name, (task_type, make_config))


register(classification.TASK_TYPE)
register(masked_lm.TASK_TYPE)
register(causal_lm.TASK_TYPE)
register(causal_lm.FINETUNE_TASK_TYPE)
register(embedding.TASK_TYPE)
register(similarity.TASK_TYPE)
register(distillation.TASK_TYPE)
register(translation.TASK_TYPE)
register(tagging.TASK_TYPE)
register(question_answering.TASK_TYPE)


def list_experiments():
    return EXPERIMENTS.names()


def get_config(name, config_files=(), overrides=()):
    """The experiment's config: defaults, then YAML files, then dotted overrides."""
    _, default_config = EXPERIMENTS.get(name)
    config = default_config()
    config.experiment = name
    for path in config_files:
        config = config_lib.load_yaml(config, path)
    for text in [overrides] if isinstance(overrides, str) else overrides:
        config = config_lib.override(config, text)
    return config


def get(name, config_files=(), overrides=()):
    """The named experiment's `Task`, configured (see `get_config`)."""
    task_type, _ = EXPERIMENTS.get(name)
    return task_type.task(get_config(name, config_files, overrides))


def task_type_of(model):
    """The registered `TaskType` whose models include `model`'s class."""
    types = [t for t in TASK_TYPES.values() if isinstance(model, t.models)]
    exact = [t for t in types if type(model) in t.models]
    if not (exact or types):
        served = sorted({m.__name__ for t in TASK_TYPES.values() for m in t.models})
        raise ValueError(f"no task type serves a {type(model).__name__}; registered models: {', '.join(served)}")
    return (exact or types)[0]


def serving_head(model):
    """The serving head (`tfplm.tasks.serving.ServingHead`) of `model`'s task type."""
    return task_type_of(model).serving(model)


__all__ = [
    "EXPERIMENTS",
    "TASK_TYPES",
    "ExperimentConfig",
    "RuntimeConfig",
    "Task",
    "TaskType",
    "TrainerConfig",
    "get",
    "get_config",
    "list_experiments",
    "register",
    "serving_head",
    "task_type_of",
]
