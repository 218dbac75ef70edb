"""`gpt/finetune` (issue 15): a pretrained GPT and its own tokenizer on your text,
held-out perplexity, samples every loop, and the exported `generate` signature."""

import os

import numpy as np
import pytest
import tensorflow as tf

from tfplm import export, tasks
from tfplm.models import GPT
from tfplm.tasks.causal_lm import GENERATE_DEFAULTS
from tfplm.training import trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GPT2 = os.path.join(REPO, "tests", "fixtures", "hf_gpt2")  # a tiny random GPT-2 with a 600-token BPE
TRAIN = os.path.join(REPO, "tests", "data", "books", "emma.txt")
HELD_OUT = os.path.join(REPO, "tests", "data", "pretraining_sample.txt")
OVERRIDES = (
    f"task.init_checkpoint={GPT2},task.train_file={TRAIN},task.validation_file={HELD_OUT},task.seq_length=32,"
    "task.global_batch_size=8,task.sample_prompts=Emma|She said,task.sample_tokens=8,runtime.seed=1,"
    "trainer.optimizer.learning_rate=3e-3,trainer.eval_steps=0"
)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """Held-out perplexity of the checkpoint, then a fine-tuning run of 40 steps (two loops)."""
    model_dir = str(tmp_path_factory.mktemp("finetune"))
    before = trainer.run_experiment(tasks.get("gpt/finetune", overrides=OVERRIDES), "eval", model_dir + "_before")
    task = tasks.get("gpt/finetune", overrides=[OVERRIDES, "trainer.train_steps=40,trainer.steps_per_loop=20"])
    after = trainer.run_experiment(task, "train_and_eval", model_dir, progress="lines")
    return task, model_dir, before["metrics"]["perplexity"], after["metrics"]["perplexity"]


def test_fine_tuning_lowers_held_out_perplexity(run):
    _, _, before, after = run
    assert after < 0.5 * before, (before, after)


def test_the_model_of_the_best_perplexity_is_kept_with_its_tokenizer(run):
    task, model_dir, _, after = run
    model = trainer.load_trained(task, model_dir)
    assert isinstance(model, GPT)
    assert model.tokenizer.get_vocabulary() == task.tokenizer.get_vocabulary()
    assert float(open(os.path.join(model_dir, "best", "best_metric.txt")).read()) == pytest.approx(after, rel=1e-4)


def test_samples_are_printed_every_loop(run, capfd):
    task, model_dir, _, _ = run
    # The run printed them; do it again for one loop's end to capture the lines.
    model = trainer.load_trained(task, model_dir)
    callback = [c for c in task.build_callbacks(model_dir) if hasattr(c, "samples")][0]
    callback.set_model(model)
    model.compile(optimizer="adam")
    callback.on_epoch_end(0)
    lines = [line for line in capfd.readouterr().out.splitlines() if " sample " in line]
    assert [line.split("sample ")[1].split(":")[0] for line in lines] == ["'Emma'", "'She said'"]
    assert all(len(line.split(": ", 1)[1]) > len("'She said'") for line in lines)


def test_exported_generate_continues_like_the_keras_model(run, tmp_path):
    task, model_dir, _, _ = run
    model = trainer.load_trained(task, model_dir)
    examples = task.held_out_examples(2)
    report = export.export_model(model, str(tmp_path / "export"), examples, formats=("saved_model",))
    assert export.report.failures(report) == []
    loaded = export.load(report["artifacts"][1]["path"])
    inputs = {k: tf.constant(v) for k, v in GENERATE_DEFAULTS.items()}
    inputs.update(max_new_tokens=tf.constant(6))
    served = loaded.signatures["generate"](prompt=tf.constant(["Emma"]), **inputs)["token_ids"].numpy()
    prompt = model.tokenizer.tokenize(["Emma"]).to_list()
    expected = model.generate_ids(prompt, 6, stop_token_id=model.tokenizer.end_token_id)
    np.testing.assert_array_equal(served, expected)


def test_finetune_without_a_checkpoint_says_how_to_give_one():
    task = tasks.get("gpt/finetune", overrides=f"task.train_file={TRAIN}")
    with pytest.raises(ValueError, match=r"task.init_checkpoint is empty; gpt/finetune starts from a pretrained GPT"):
        task.build_model()
