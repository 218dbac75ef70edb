"""Trains, evaluates or predicts with a registered experiment.

    python tools/train.py --experiment=glue/sst2 --model_dir=runs/sst2 \
        --glue_dir=glue_data --init_checkpoint=runs/minilm
    python tools/train.py --model_dir=runs/sst2 --mode=predict

A model folder is enough to come back to a run: training writes
MODEL_DIR/config.yaml (naming its experiment), and every later command reads it
back, so --experiment and the training's overrides need not be given again;
flags and overrides that are given again win. Running a training command again
resumes from the last checkpoint.

`--list_experiments` prints the registered experiments; `--print_config` every
key of one (`--experiment` or `--model_dir`) with its value and what it means.
Progress is printed every `trainer.log_every_steps` steps; `--verbosity=1`
shows TensorFlow's own logs too.
"""

import _cli

_cli.quiet()

import os  # noqa: E402

from absl import flags  # noqa: E402

from tfplm import console, tasks  # noqa: E402
from tfplm.training import trainer  # noqa: E402
from tfplm.training.distribute import PRECISIONS, STRATEGIES  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string(
    "experiment",
    None,
    "Registered experiment: " + ", ".join(tasks.list_experiments())
    + ". Optional when --model_dir has a config.yaml (it names its experiment).",
)
flags.DEFINE_bool("list_experiments", False, "Print the registered experiments and exit.")
flags.DEFINE_bool("print_config", False, "Print every config key of the experiment with its value and doc, and exit.")
flags.DEFINE_string("model_dir", None, "Checkpoints, logs, config.yaml, eval results and predictions.")
flags.DEFINE_multi_string("config_file", [], "YAML files applied over the defaults (and MODEL_DIR/config.yaml), in order.")
flags.DEFINE_string("params_override", "", "Dotted overrides applied after the config files: 'a.b=1,c=x'.")
flags.DEFINE_enum("mode", "train_and_eval", list(trainer.MODES), "What to run.")
flags.DEFINE_string("glue_dir", None, "GLUE's folder of TSV directories (CoLA/, SST-2/, ...): sets task.glue_dir.")
flags.DEFINE_string("init_checkpoint", None, "Pretrained weights to start from: sets task.init_checkpoint.")
flags.DEFINE_enum("distribution_strategy", None, list(STRATEGIES), "Sets runtime.distribution_strategy.")
flags.DEFINE_string("tpu", None, "TPU address for --distribution_strategy=tpu: sets runtime.tpu.")
flags.DEFINE_enum("mixed_precision", None, list(PRECISIONS), "Sets runtime.mixed_precision.")
flags.DEFINE_bool("jit_compile", None, "Sets runtime.jit_compile (XLA).")


def _flag_values():
    """The dedicated flags as a nested config dict (applied last)."""
    task = {"glue_dir": FLAGS.glue_dir, "init_checkpoint": FLAGS.init_checkpoint}
    runtime = {
        "distribution_strategy": FLAGS.distribution_strategy,
        "tpu": FLAGS.tpu,
        "mixed_precision": FLAGS.mixed_precision,
        "jit_compile": FLAGS.jit_compile,
    }
    values = {
        "task": {k: v for k, v in task.items() if v is not None},
        "runtime": {k: v for k, v in runtime.items() if v is not None},
    }
    return {k: v for k, v in values.items() if v}


def main(argv):
    if len(argv) > 1:
        raise ValueError(f"unexpected argument(s) {' '.join(argv[1:])}; flags are --name=value")
    if FLAGS.list_experiments:
        print("\n".join(tasks.list_experiments()))
        return 0
    experiment, config = _cli.experiment_config(
        FLAGS.experiment, FLAGS.model_dir, FLAGS.config_file, [FLAGS.params_override], _flag_values()
    )
    if FLAGS.print_config:
        title = f"# {experiment}: every key, as --params_override=KEY=VALUE takes it, with its value and doc"
        print(console.format_config(config, title))
        return 0
    if not FLAGS.model_dir:
        raise ValueError("--model_dir is required: where the run's checkpoints, logs and results go")
    task = _cli.build_task(experiment, config)
    results = trainer.run_experiment(task, FLAGS.mode, FLAGS.model_dir, progress="lines")
    if "metrics" in results:
        print(f"eval results: {os.path.join(FLAGS.model_dir, 'eval_results.json')}")
    best = os.path.join(FLAGS.model_dir, trainer.BEST_DIR)
    if FLAGS.mode != "predict" and os.path.isdir(best):
        print(f"best model: {best}")
    return 0


if __name__ == "__main__":
    _cli.run(main)
