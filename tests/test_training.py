"""Training end to end: the train binary, resume, the best model, mirrored strategies."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from records import write_google_records
from tfplm import tasks
from tfplm.training import distribute, optimization, trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEQ, PREDICTIONS = 64, 10


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    path = tmp_path_factory.mktemp("records") / "data.tfrecord"
    write_google_records(path, n=96, seq_length=SEQ, max_predictions=PREDICTIONS)
    return str(path)


def overrides(records, vocab_file, steps=4, batch=8):
    return ",".join(
        [
            f"task.vocab_file={vocab_file}",
            f"task.train_data.input_path={records}",
            f"task.validation_data.input_path={records}",
            f"task.train_data.seq_length={SEQ}",
            f"task.validation_data.seq_length={SEQ}",
            f"task.train_data.max_predictions_per_seq={PREDICTIONS}",
            f"task.validation_data.max_predictions_per_seq={PREDICTIONS}",
            f"task.train_data.global_batch_size={batch}",
            f"task.validation_data.global_batch_size={batch}",
            "task.train_data.shuffle_buffer_size=1",
            "task.model.dropout=0.0",
            f"trainer.train_steps={steps}",
            "trainer.steps_per_loop=2",
            "trainer.eval_steps=2",
            "runtime.seed=1",
            "runtime.jit_compile=false",
        ]
    )


def run_binary(args, env=None, check=True):
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "train.py"), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=600,
    )
    if check:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


def read_log(model_dir):
    with open(os.path.join(model_dir, "train_log.jsonl")) as f:
        return [json.loads(line) for line in f]


def final_weights(model_dir):
    """The trained variables in the last checkpoint (saved under the optimizer's list)."""
    reader = tf.train.load_checkpoint(os.path.join(model_dir, "checkpoints"))
    return {
        name: reader.get_tensor(name)
        for name in reader.get_variable_to_shape_map()
        if name.startswith("optimizer/_trainable_variables/")
    }


def test_binary_lists_experiments():
    result = run_binary(["--list_experiments"])
    assert "bert/pretraining" in result.stdout.split()
    assert "gpt/pretraining" in result.stdout.split()


def test_binary_rejects_unknown_config_keys(tmp_path):
    result = run_binary(
        ["--experiment=bert/pretraining", f"--model_dir={tmp_path}", "--params_override=trainer.train_step=3"],
        check=False,
    )
    assert result.returncode != 0
    assert result.stderr.strip().startswith("error: unknown config key trainer.train_step")


def test_binary_trains_evaluates_and_resumes_where_it_stopped(tmp_path, records, minilm_dir):
    model_dir = str(tmp_path / "run")
    args = ["--experiment=bert/pretraining", f"--model_dir={model_dir}", "--mode=train_and_eval"]
    vocab = str(minilm_dir / "vocab.txt")
    run_binary(args + [f"--params_override={overrides(records, vocab, steps=4)}"])
    assert [entry["step"] for entry in read_log(model_dir)] == [2, 4]
    results = json.load(open(os.path.join(model_dir, "eval_results.json")))
    assert results["step"] == 4 and "mlm_logits_accuracy" in results["metrics"]
    assert os.path.exists(os.path.join(model_dir, "config.yaml"))

    # The same command with more steps continues at step 4, with the learning
    # rate where a single 8-step run would have it.
    run_binary(args + [f"--params_override={overrides(records, vocab, steps=8)}"])
    log = read_log(model_dir)
    assert [entry["step"] for entry in log] == [2, 4, 6, 8]
    config = tasks.get_config("bert/pretraining", overrides=overrides(records, vocab, steps=8))
    schedule = optimization.learning_rate_schedule(config.trainer.optimizer, total_steps=8)
    assert log[2]["learning_rate"] == pytest.approx(float(schedule(6)), rel=1e-5)


def test_mirrored_strategy_matches_the_default_strategy(tmp_path, records, minilm_dir, mirrored_strategy):
    vocab = str(minilm_dir / "vocab.txt")
    results = {}
    for name, strategy in [("default", tf.distribute.get_strategy()), ("mirrored", mirrored_strategy)]:
        task = tasks.get("bert/pretraining", overrides=overrides(records, vocab, steps=4))
        results[name] = trainer.run_experiment(task, "train_and_eval", str(tmp_path / name), strategy=strategy)
        results[name]["weights"] = final_weights(str(tmp_path / name))
    # Adam scales every update to about ±lr whatever the gradient's size, so a
    # near-zero gradient whose sign differs in the last float bit between the
    # two all-reduce orders moves a weight by up to 2·lr per step: compare
    # weights to that bound and the losses tightly.
    bound = 2 * 4 * 1e-4  # 4 steps at the peak learning rate
    for key in results["default"]["weights"]:
        np.testing.assert_allclose(
            results["mirrored"]["weights"][key], results["default"]["weights"][key], atol=bound, err_msg=key
        )
    assert results["mirrored"]["metrics"]["loss"] == pytest.approx(results["default"]["metrics"]["loss"], rel=1e-3)
    mirrored_log, default_log = read_log(str(tmp_path / "mirrored")), read_log(str(tmp_path / "default"))
    np.testing.assert_allclose([e["loss"] for e in mirrored_log], [e["loss"] for e in default_log], rtol=1e-4)


def test_pretraining_leaves_a_pretrained_dir_that_fine_tuning_and_more_pretraining_start_from(tmp_path, records, minilm_dir, test_data_dir):
    from tfplm.models import BertPretrainer

    vocab = str(minilm_dir / "vocab.txt")
    model_dir = tmp_path / "pretrain"
    task = tasks.get("bert/pretraining", overrides=overrides(records, vocab, steps=2))
    trainer.run_experiment(task, "train", str(model_dir))
    pretrained = model_dir / "pretrained"
    trained = final_weights(str(model_dir))
    loaded = BertPretrainer.from_pretrained(str(pretrained))
    assert loaded.preprocessor.seq_length == SEQ
    word_embeddings = loaded.encoder.embedding.weights[0].numpy()
    assert any(np.array_equal(word_embeddings, value) for value in trained.values())

    glue = tasks.get("glue/sst2", overrides=f"task.glue_dir={test_data_dir / 'glue'},task.init_checkpoint={pretrained}")
    classifier = glue.build_model()
    np.testing.assert_array_equal(classifier.encoder.embedding.weights[0].numpy(), word_embeddings)

    again = tasks.get("bert/pretraining", overrides=overrides(records, vocab, steps=2) + f",task.init_checkpoint={pretrained}")
    np.testing.assert_array_equal(again.build_model().encoder.embedding.weights[0].numpy(), word_embeddings)


def test_a_glue_run_keeps_its_best_model_in_model_dir_best(tmp_path, test_data_dir):
    from tfplm.models import BertClassifier

    model_dir = tmp_path / "sst2"
    fixture = test_data_dir.parent / "fixtures" / "hf_bert"
    task = tasks.get(
        "glue/sst2",
        overrides=f"task.glue_dir={test_data_dir / 'glue'},task.init_checkpoint={fixture},task.seq_length=16,"
        "trainer.train_steps=4,trainer.steps_per_loop=2,trainer.optimizer.learning_rate=1e-2,runtime.seed=0",
    )
    trainer.run_experiment(task, "train_and_eval", str(model_dir), progress=None)
    assert not (model_dir / "best.weights.h5").exists()
    best = trainer.load_trained(task, str(model_dir))
    assert isinstance(best, BertClassifier) and best.label_names == ("0", "1")
    assert best.preprocessor.seq_length == 16

    # The kept model is the checkpoint of the loop with the best validation accuracy (the first, on ties).
    log = read_log(str(model_dir))
    best_step = max(log, key=lambda entry: (entry["val_accuracy"], -entry["step"]))["step"]
    at_best = task.build_model()
    tf.train.Checkpoint(model=at_best).restore(str(model_dir / "checkpoints" / f"ckpt-{best_step}")).expect_partial()
    for kept, expected in zip(best.get_weights(), at_best.get_weights()):
        np.testing.assert_array_equal(kept, expected)


def test_prediction_metrics_reach_each_loops_validation_logs_and_eval_results(tmp_path, test_data_dir):
    from tfplm.tasks.classification import ClassificationTask

    class WithPredictionAccuracy(ClassificationTask):
        """Accuracy again, computed from predictions as SQuAD's or entity F1 are: it must equal Keras's."""

        def evaluate_predictions(self, model):
            correct = total = 0
            for features, labels in self.build_inputs("validation"):
                predicted = np.argmax(model.predict_on_batch(features), axis=-1)
                correct += int((predicted == labels.numpy()).sum())
                total += len(predicted)
            return {"prediction_accuracy": correct / total}

    config = tasks.get_config(
        "glue/sst2",
        overrides=f"task.glue_dir={test_data_dir / 'glue'},task.init_checkpoint={test_data_dir.parent / 'fixtures' / 'hf_bert'},"
        "task.seq_length=16,trainer.train_steps=4,trainer.steps_per_loop=2,trainer.optimizer.learning_rate=1e-2,runtime.seed=0",
    )
    results = trainer.run_experiment(WithPredictionAccuracy(config), "train_and_eval", str(tmp_path), progress=None)
    log = read_log(str(tmp_path))
    assert [entry["step"] for entry in log] == [2, 4]
    for entry in log:
        assert entry["val_prediction_accuracy"] == pytest.approx(entry["val_accuracy"], abs=1e-6)
    assert results["metrics"]["prediction_accuracy"] == pytest.approx(results["metrics"]["accuracy"], abs=1e-6)


def test_a_last_loop_shorter_than_steps_per_loop_ends_training_at_train_steps(tmp_path, records, minilm_dir):
    vocab = str(minilm_dir / "vocab.txt")
    params = overrides(records, vocab, steps=5)  # loops of 2 steps
    task = tasks.get("bert/pretraining", overrides=params)
    results = trainer.run_experiment(task, "train", str(tmp_path), progress=None)
    log = read_log(str(tmp_path))
    assert results["step"] == 5 and [entry["step"] for entry in log] == [2, 4, 5]
    schedule = optimization.learning_rate_schedule(tasks.get_config("bert/pretraining", overrides=params).trainer.optimizer, total_steps=5)
    assert log[-1]["learning_rate"] == pytest.approx(float(schedule(5)), abs=1e-9)


def test_progress_lines_and_silence(tmp_path, records, minilm_dir, capsys):
    vocab = str(minilm_dir / "vocab.txt")
    task = tasks.get("bert/pretraining", overrides=overrides(records, vocab, steps=4) + ",trainer.log_every_steps=1")
    trainer.run_experiment(task, "train", str(tmp_path / "lines"), progress="lines")
    printed = capsys.readouterr().out
    steps = [int(line.split()[1].split("/")[0]) for line in printed.splitlines() if line.startswith("step ")]
    assert steps == [1, 2, 3, 4], printed
    assert all("examples/s" in line for line in printed.splitlines() if line.startswith("step "))

    trainer.run_experiment(task, "train", str(tmp_path / "silent"), progress=None)
    assert capsys.readouterr().out == ""


CPUINFO = "processor\t: 0\nmodel name\t: Intel(R) Xeon(R)\nflags\t\t: fpu sse2 avx512f {extra}\n\nprocessor\t: 1\n"


@pytest.mark.parametrize(
    "extra, expected",
    [("amx_bf16 amx_tile avx512_bf16", ("amx_bf16", "avx512_bf16")), ("avx512_bf16", ("avx512_bf16",)), ("avx2", ())],
)
def test_cpu_bfloat16_flags_come_from_cpuinfo(tmp_path, extra, expected):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(CPUINFO.format(extra=extra))
    assert distribute.cpu_bfloat16_flags(str(cpuinfo)) == expected
    assert distribute.cpu_bfloat16_flags(str(tmp_path / "missing")) == ()


@pytest.mark.parametrize(
    "flags, strategy, expected",
    [
        (("amx_bf16",), "default", "mixed_bfloat16"),
        ((), "default", "float32"),
        ((), "tpu", "mixed_bfloat16"),
    ],
)
def test_auto_precision_is_bfloat16_where_the_hardware_computes_it(monkeypatch, flags, strategy, expected):
    monkeypatch.setattr(distribute, "cpu_bfloat16_flags", lambda: flags)
    policy, why = distribute.resolve_precision("auto", strategy)
    assert policy == expected and why
    assert distribute.resolve_precision("mixed_float16", strategy) == ("mixed_float16", "as configured")
    with pytest.raises(ValueError, match="mixed_precision='bf16'; expected one of auto, float32"):
        distribute.resolve_precision("bf16")


def test_precision_sets_the_policy_for_the_block_only():
    with distribute.precision("mixed_bfloat16") as (policy, _):
        assert policy == keras.mixed_precision.global_policy().name == "mixed_bfloat16"
    assert keras.mixed_precision.global_policy().name == "float32"
