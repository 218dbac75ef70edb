"""Makes tests/fixtures/sst2_teacher_tiny: a tiny fine-tuned SST-2 teacher for the distillation tests.

The Hugging Face BERT fixture (tests/fixtures/hf_bert: 2 layers, width 32,
800-token vocabulary) fine-tuned on the 3,000 SST-2 sentences of
tools/demo_data for 300 steps, saved in tfplm's format (about 200 KB).

    python tools/make_distillation_fixture.py
"""

import _cli

_cli.quiet()

import os  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402

from tfplm import tasks  # noqa: E402
from tfplm.training import trainer  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUTPUT = os.path.join(REPO, "tests", "fixtures", "sst2_teacher_tiny")


def main(argv):
    del argv
    overrides = (
        f"task.glue_dir={REPO}/tools/demo_data,task.init_checkpoint={REPO}/tests/fixtures/hf_bert,"
        "task.seq_length=32,trainer.train_steps=300,trainer.steps_per_loop=300,"
        "trainer.optimizer.learning_rate=3e-3,runtime.seed=1,runtime.mixed_precision=float32"
    )
    task = tasks.get("glue/sst2", overrides=overrides)
    with tempfile.TemporaryDirectory() as model_dir:
        results = trainer.run_experiment(task, "train_and_eval", model_dir, progress=None)
        print(f"dev accuracy {results['metrics']['accuracy']:.3f}")
        shutil.rmtree(OUTPUT, ignore_errors=True)
        trainer.load_trained(task, model_dir).save_pretrained(OUTPUT)
    print(f"wrote {OUTPUT}")


if __name__ == "__main__":
    _cli.run(main)
