"""Trains and evaluates a registered experiment.

    python tools/train.py --experiment=bert/pretraining --model_dir=runs/bert \
        --params_override='task.model.preset=bert_mini,trainer.train_steps=1000' \
        --mode=train_and_eval

Running the same command again resumes from the last checkpoint in --model_dir.
`--list_experiments` prints the registered experiments.
"""

import sys

from absl import app, flags

from tfplm import tasks
from tfplm.training import trainer
from tfplm.training.distribute import PRECISIONS, STRATEGIES

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "experiment", None, "Registered experiment: " + ", ".join(tasks.list_experiments())
)
flags.DEFINE_bool("list_experiments", False, "Print the registered experiments and exit.")
flags.DEFINE_string("model_dir", None, "Checkpoints, logs, config.yaml and eval results.")
flags.DEFINE_multi_string("config_file", [], "YAML files applied over the defaults, in order.")
flags.DEFINE_string("params_override", "", "Dotted overrides applied last: 'a.b=1,c=x'.")
flags.DEFINE_enum("mode", "train_and_eval", list(trainer.MODES), "What to run.")
flags.DEFINE_enum("distribution_strategy", None, list(STRATEGIES), "Overrides runtime.distribution_strategy.")
flags.DEFINE_string("tpu", None, "TPU address for --distribution_strategy=tpu.")
flags.DEFINE_enum("mixed_precision", None, list(PRECISIONS), "Overrides runtime.mixed_precision.")
flags.DEFINE_bool("jit_compile", None, "Overrides runtime.jit_compile (XLA).")
flags.DEFINE_string("init_checkpoint", None, "Pretrained weights to start from (overrides task.init_checkpoint).")


def _flag_overrides():
    """The dedicated flags as a dotted-override string (applied after --params_override)."""
    mapping = {
        "runtime.distribution_strategy": FLAGS.distribution_strategy,
        "runtime.tpu": FLAGS.tpu,
        "runtime.mixed_precision": FLAGS.mixed_precision,
        "runtime.jit_compile": FLAGS.jit_compile,
        "task.init_checkpoint": FLAGS.init_checkpoint,
    }
    return ",".join(f"{key}={value}" for key, value in mapping.items() if value is not None)


def main(argv):
    del argv
    if FLAGS.list_experiments:
        print("\n".join(tasks.list_experiments()))
        return 0
    if not FLAGS.experiment or not FLAGS.model_dir:
        sys.exit("--experiment and --model_dir are required (see --list_experiments)")
    try:
        task = tasks.get(
            FLAGS.experiment,
            config_files=FLAGS.config_file,
            overrides=[FLAGS.params_override, _flag_overrides()],
        )
    except ValueError as error:  # unknown experiment, config key or value
        sys.exit(f"error: {error}")
    results = trainer.run_experiment(task, FLAGS.mode, FLAGS.model_dir)
    for name, value in results.get("metrics", {}).items():
        print(f"{name}: {value:.4f}")
    return 0


if __name__ == "__main__":
    app.run(main)
