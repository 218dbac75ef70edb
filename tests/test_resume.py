"""Crash safety of training runs: a run killed at any moment and resumed ends
bit-identical to an uninterrupted one; what a killed run leaves half-done is
finished or removed; one training run per model_dir."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf
import yaml

from records import write_google_records
from tfplm import config as config_lib
from tfplm import locking, tasks
from tfplm.models import BertPretrainer
from tfplm.tasks import base
from tfplm.training import trainer

LOCK_FILE = ".lock"  # tfplm.locking's default, in the model_dir

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "tools", "demo_data")
VOCAB = os.path.join(REPO, "tests", "fixtures", "hf_bert", "vocab.txt")
SEQ, PREDICTIONS = 32, 5
# 7 steps in loops of 3: checkpoints at 3, 6 and 7; float32, so that the
# comparisons do not depend on the CPU's bfloat16 support.
TRAINER = "trainer.train_steps=7,trainer.steps_per_loop=3,runtime.seed=3,runtime.mixed_precision=float32"
# Dropout on (the presets' 0.1) and shuffled data: what must be resumed exactly.
CLASSIFICATION = f"task.glue_dir={DEMO},task.vocab_file={VOCAB},task.seq_length=16,task.global_batch_size=8,{TRAINER}"


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    path = tmp_path_factory.mktemp("records") / "data.tfrecord"
    write_google_records(path, n=48, seq_length=SEQ, max_predictions=PREDICTIONS)
    return str(path)


def pretraining(records, vocab):
    data = [
        f"task.{split}.{key}={value}"
        for split in ("train_data", "validation_data")
        for key, value in [
            ("input_path", records),
            ("seq_length", SEQ),
            ("max_predictions_per_seq", PREDICTIONS),
            ("global_batch_size", 4),
            ("shuffle_buffer_size", 16),
        ]
    ]
    return ",".join([f"task.vocab_file={vocab}", *data, "trainer.eval_steps=1", TRAINER])


class Killed(Exception):
    """Stands for kill -9: nothing after it runs."""


class KillAt(keras.callbacks.Callback):
    """Stops the run before step `step + 1`, as a kill at that moment would."""

    def __init__(self, step):
        super().__init__()
        self.step = step

    def on_train_batch_begin(self, batch, logs=None):
        if int(self.model.optimizer.iterations.numpy()) == self.step:
            raise Killed(self.step)


def train(experiment, overrides, model_dir, kill_at=None, mode="train"):
    """`run_experiment` with a fresh task and model; killed after step `kill_at` if given."""
    task = tasks.get(experiment, overrides=overrides)
    if kill_at is None:
        return trainer.run_experiment(task, mode, str(model_dir), progress=None)
    build_callbacks = task.build_callbacks
    task.build_callbacks = lambda directory: build_callbacks(directory) + [KillAt(kill_at)]
    with pytest.raises(Killed):
        trainer.run_experiment(task, mode, str(model_dir), progress=None)


def checkpoint_values(model_dir, step=7):
    """Every value of checkpoint `step`: weights, optimizer slots and step, dropout random states."""
    reader = tf.train.load_checkpoint(os.path.join(str(model_dir), "checkpoints", f"ckpt-{step}"))
    names = [n for n in reader.get_variable_to_shape_map() if not n.startswith(("save_counter", "_CHECKPOINTABLE"))]
    return {name: reader.get_tensor(name) for name in names}


def assert_same_values(actual, expected):
    assert sorted(actual) == sorted(expected)
    assert any(name.startswith("random_states/") for name in expected)
    different = [name for name in expected if not np.array_equal(actual[name], expected[name])]
    assert not different, f"{len(different)} of {len(expected)} values differ, e.g. {different[:3]}"


def log_steps(model_dir):
    with open(os.path.join(str(model_dir), "train_log.jsonl")) as f:
        return [json.loads(line)["step"] for line in f]


@pytest.fixture(scope="module")
def classification_reference(tmp_path_factory):
    model_dir = tmp_path_factory.mktemp("uninterrupted")
    train("glue/sst2", CLASSIFICATION, model_dir)
    return model_dir


@pytest.fixture(scope="module")
def pretraining_reference(tmp_path_factory, records, minilm_dir):
    model_dir = tmp_path_factory.mktemp("uninterrupted")
    train("bert/pretraining", pretraining(records, minilm_dir / "vocab.txt"), model_dir)
    return model_dir


# --- exact resume -------------------------------------------------------------


def test_a_killed_fine_tuning_run_resumes_bit_identical_to_an_uninterrupted_one(tmp_path, classification_reference):
    # Killed mid-loop (after step 4: loop 3..6 lost) and right after a checkpoint (6).
    train("glue/sst2", CLASSIFICATION, tmp_path, kill_at=4)
    assert log_steps(tmp_path) == [3]
    train("glue/sst2", CLASSIFICATION, tmp_path, kill_at=6)
    train("glue/sst2", CLASSIFICATION, tmp_path)
    assert_same_values(checkpoint_values(tmp_path), checkpoint_values(classification_reference))
    assert log_steps(tmp_path) == log_steps(classification_reference) == [3, 6, 7]


def test_a_killed_pretraining_run_resumes_bit_identical_to_an_uninterrupted_one(
    tmp_path, records, minilm_dir, pretraining_reference
):
    params = pretraining(records, minilm_dir / "vocab.txt")
    train("bert/pretraining", params, tmp_path, kill_at=5)
    train("bert/pretraining", params, tmp_path)
    assert_same_values(checkpoint_values(tmp_path), checkpoint_values(pretraining_reference))
    expected = BertPretrainer.from_pretrained(str(pretraining_reference / "pretrained")).get_weights()
    for actual, wanted in zip(BertPretrainer.from_pretrained(str(tmp_path / "pretrained")).get_weights(), expected):
        np.testing.assert_array_equal(actual, wanted)


def test_a_killed_pretraining_run_on_raw_text_resumes_bit_identical(tmp_path, test_data_dir, minilm_dir):
    # Pairs drawn per epoch and masks drawn in the pipeline: both must follow the step.
    params = pretraining(str(test_data_dir / "pretraining_sample.txt"), minilm_dir / "vocab.txt")
    params += ",task.train_data.input_format=bert,task.validation_data.input_format=bert"
    train("bert/pretraining", params, tmp_path / "reference")
    train("bert/pretraining", params, tmp_path / "killed", kill_at=5)
    train("bert/pretraining", params, tmp_path / "killed")
    assert_same_values(checkpoint_values(tmp_path / "killed"), checkpoint_values(tmp_path / "reference"))


def test_a_run_without_a_seed_records_the_one_it_drew_and_resumes_with_it(tmp_path):
    unseeded = CLASSIFICATION.replace("runtime.seed=3", "runtime.seed=null")
    train("glue/sst2", unseeded, tmp_path, kill_at=4)
    with open(tmp_path / "config.yaml") as f:
        seed = yaml.safe_load(f)["runtime"]["seed"]
    assert isinstance(seed, int)
    train("glue/sst2", unseeded, tmp_path)
    reference = tmp_path.parent / "seeded"
    train("glue/sst2", CLASSIFICATION.replace("runtime.seed=3", f"runtime.seed={seed}"), reference)
    assert_same_values(checkpoint_values(tmp_path), checkpoint_values(reference))


def test_kill_9_of_the_train_binary_then_rerun_ends_bit_identical(tmp_path, classification_reference):
    """The binary, killed by SIGKILL once its first checkpoint is written, then
    run again; meanwhile its model_dir refuses a second training run."""
    model_dir = tmp_path / "run"
    command = [
        sys.executable,
        os.path.join(REPO, "tools", "train.py"),
        "--experiment=glue/sst2",
        f"--model_dir={model_dir}",
        "--mode=train",
        f"--params_override={CLASSIFICATION}",
    ]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while not os.path.exists(model_dir / "checkpoints" / "checkpoint") and process.poll() is None:
            time.sleep(0.01)
        with pytest.raises(locking.FolderInUse, match=rf"in use by a training run \(pid {process.pid} on "):
            train("glue/sst2", CLASSIFICATION, model_dir)
        if process.poll() is None:
            process.send_signal(signal.SIGKILL)
    finally:
        process.wait()
    if process.returncode == 0:
        pytest.fail("the run ended before it was killed")
    assert process.returncode == -signal.SIGKILL, process.stderr.read().decode()[-2000:]
    assert tf.train.latest_checkpoint(str(model_dir / "checkpoints")) is not None

    rerun = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "training from step " in rerun.stdout
    assert_same_values(checkpoint_values(model_dir), checkpoint_values(classification_reference))
    assert log_steps(model_dir) == [3, 6, 7]


# --- what a killed run leaves ---------------------------------------------------


def test_a_rerun_of_a_finished_run_writes_the_pretrained_dir_a_kill_left_unwritten(
    tmp_path, records, minilm_dir, pretraining_reference, capsys
):
    params = pretraining(records, minilm_dir / "vocab.txt")
    model_dir = tmp_path / "run"
    train("bert/pretraining", params, model_dir)
    shutil.rmtree(model_dir / "pretrained")  # as a kill after the last checkpoint leaves it
    task = tasks.get("bert/pretraining", overrides=params)
    assert trainer.run_experiment(task, "train", str(model_dir), progress="lines") == {"step": 7}
    assert "already trained 7 of 7 steps" in capsys.readouterr().out
    expected = BertPretrainer.from_pretrained(str(pretraining_reference / "pretrained")).get_weights()
    for actual, wanted in zip(BertPretrainer.from_pretrained(str(model_dir / "pretrained")).get_weights(), expected):
        np.testing.assert_array_equal(actual, wanted)


def test_leftovers_are_removed_and_an_unreadable_latest_checkpoint_falls_back(
    tmp_path, classification_reference, caplog
):
    train("glue/sst2", CLASSIFICATION, tmp_path)
    checkpoints = tmp_path / "checkpoints"
    # A save killed before TensorFlow merged its shards, publish's hidden temporaries, ...
    leftovers = [checkpoints / "ckpt-9_temp", tmp_path / ".best.tmp-x1", tmp_path / ".pretrained.tmp-x2"]
    for path in leftovers:
        path.mkdir()
        (path / "part").write_bytes(b"\0" * 10)
    (checkpoints / "ckpt-9.index").write_bytes(b"\0")
    # ... and a latest checkpoint cut short (as a machine crash may leave it).
    index = checkpoints / "ckpt-7.index"
    index.write_bytes(index.read_bytes()[:40])

    train("glue/sst2", CLASSIFICATION, tmp_path)
    assert not any(path.exists() for path in leftovers) and not (checkpoints / "ckpt-9.index").exists()
    assert "removed what an interrupted run left half-written" in caplog.text
    assert f"checkpoint {checkpoints / 'ckpt-7'} cannot be read" in caplog.text
    assert f"resuming from {checkpoints / 'ckpt-6'} instead" in caplog.text
    assert_same_values(checkpoint_values(tmp_path), checkpoint_values(classification_reference))
    assert log_steps(tmp_path) == [3, 6, 7]


def test_no_readable_checkpoint_is_one_line_naming_the_folder(tmp_path):
    overrides = CLASSIFICATION.replace("train_steps=7", "train_steps=3")
    train("glue/sst2", overrides, tmp_path)
    (tmp_path / "checkpoints" / "ckpt-3.index").write_bytes(b"\0" * 8)
    with pytest.raises(ValueError) as error:
        train("glue/sst2", overrides, tmp_path)
    message = str(error.value)
    assert message.startswith(f"no checkpoint in {tmp_path / 'checkpoints'} can be read (the oldest, ")
    assert message.endswith("move that folder aside to train from the start") and "\n" not in message


def test_a_resumed_run_drops_the_log_lines_past_its_checkpoint(tmp_path, classification_reference):
    train("glue/sst2", CLASSIFICATION, tmp_path, kill_at=6)
    with open(tmp_path / "train_log.jsonl", "a") as f:
        f.write(json.dumps({"step": 7, "loss": 1.0}) + "\n")  # logged, then killed before its checkpoint
        f.write('{"step": 8, "lo')  # cut short by the kill
    train("glue/sst2", CLASSIFICATION, tmp_path)
    assert log_steps(tmp_path) == [3, 6, 7]
    with open(tmp_path / "train_log.jsonl") as f, open(classification_reference / "train_log.jsonl") as g:
        assert [json.loads(line)["loss"] for line in f] == [json.loads(line)["loss"] for line in g]


def test_a_failed_best_model_write_keeps_the_earlier_best(tmp_path, monkeypatch):
    task = tasks.get("glue/sst2", overrides=CLASSIFICATION)
    model = task.build_model()
    callback = base.SaveBest(str(tmp_path), "val_accuracy")
    callback.set_model(model)
    callback.on_epoch_end(0, {"val_accuracy": 0.5})
    before = model.get_weights()

    def crash(directory):
        with open(os.path.join(directory, "model.safetensors"), "wb") as f:
            f.write(b"\0" * 3)
        raise Killed()

    model.weights[-1].assign(np.ones(model.weights[-1].shape))  # a better model, whose write is killed
    monkeypatch.setattr(model, "save_pretrained", crash)
    with pytest.raises(Killed):
        callback.on_epoch_end(1, {"val_accuracy": 0.9})
    assert (tmp_path / "best" / base.SaveBest.METRIC_FILE).read_text() == "0.5"
    kept = trainer.load_trained(task, str(tmp_path))
    for actual, expected in zip(kept.get_weights(), before):
        np.testing.assert_array_equal(actual, expected)


# --- one writer, one model ------------------------------------------------------


def test_a_second_training_run_on_a_model_dir_fails_naming_the_first(tmp_path):
    train("glue/sst2", CLASSIFICATION.replace("train_steps=7", "train_steps=3"), tmp_path)
    with trainer.model_dir_lock(tmp_path):
        with pytest.raises(locking.FolderInUse) as error:
            train("glue/sst2", CLASSIFICATION, tmp_path)
        # Evaluation writes nothing a training run writes: it needs no lock.
        results = train("glue/sst2", CLASSIFICATION + ",trainer.eval_steps=1", tmp_path, mode="eval")
    message = str(error.value)
    assert message.startswith(f"{tmp_path} is in use by a training run (pid {os.getpid()} on ")
    assert message.endswith("wait for it to end or stop it, or train in another model_dir")
    assert results["step"] == 3
    assert log_steps(tmp_path) == [3]
    # Released with its holder: training continues.
    assert train("glue/sst2", CLASSIFICATION, tmp_path) == {"step": 7}


def test_the_lock_of_a_killed_process_is_released(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'w'); "
         "fcntl.flock(f, fcntl.LOCK_EX); print(flush=True); time.sleep(600)", str(tmp_path / LOCK_FILE)],
        stdout=subprocess.PIPE,
    )
    holder.stdout.readline()  # it holds the lock
    with pytest.raises(locking.FolderInUse):
        trainer.model_dir_lock(tmp_path).__enter__()
    holder.kill()
    holder.wait()
    with trainer.model_dir_lock(tmp_path):
        assert json.loads((tmp_path / LOCK_FILE).read_text())["pid"] == os.getpid()


def test_resuming_with_another_preset_names_the_difference(tmp_path):
    overrides = CLASSIFICATION.replace("train_steps=7", "train_steps=3")
    train("glue/sst2", overrides, tmp_path)
    saved = (tmp_path / "config.yaml").read_text()
    with pytest.raises(config_lib.ConfigError) as error:
        train("glue/sst2", overrides + ",task.preset=bert_mini", tmp_path)
    assert str(error.value) == (
        f"{tmp_path / 'checkpoints' / 'ckpt-3'} holds another model than this config builds "
        "(task.preset: 'bert_tiny' in config.yaml, 'bert_mini' now); resume with the config it was trained "
        "with (MODEL_DIR/config.yaml) or train in another model_dir"
    )
    assert (tmp_path / "config.yaml").read_text() == saved
