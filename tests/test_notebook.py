"""The notebook workflow: raw text in `predict`/`fit`/`evaluate`, `.keras` files
without optimizer state, `fit(epochs=N)` against the learning-rate schedule,
and the whole flow in real Jupyter kernels (nbclient)."""

import json
import os
import pathlib
import sys
import zipfile

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf

import tfplm
from tfplm.data import text_dataset
from tfplm.models import BertClassifier, BertPretrainer
from tfplm.training.optimization import OptimizerConfig, build_optimizer

FIXTURE = pathlib.Path(__file__).parent / "fixtures" / "hf_bert"  # tiny BERT, 800-token vocab
TEXTS = ["a fine film", "dull and long", "great acting", "boring", "a lovely story", "tedious", "moving", "flat"]
LABELS = [1, 0, 1, 0, 1, 0, 1, 0]


def classifier(**kwargs):
    return BertClassifier.from_pretrained(FIXTURE, num_classes=2, **kwargs)


def compiled(model, optimizer="adam"):
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=optimizer, loss=loss, metrics=["accuracy"])
    return model


def test_predict_takes_a_list_an_array_and_pairs_of_strings():
    model = classifier()
    texts, texts_b = ["a film", "dull and long and boring"], ["yes", "no"]
    # Reference: the same texts packed to seq_length by the preprocessor, as Keras inputs.
    expected = model.predict(model.preprocessor(tf.constant(texts)), verbose=0)
    np.testing.assert_allclose(model.predict(texts, verbose=0), expected, atol=1e-5)
    np.testing.assert_allclose(model.predict(np.array(texts), verbose=0), expected, atol=1e-5)
    np.testing.assert_allclose(model.predict(np.array(texts, dtype=object), verbose=0), expected, atol=1e-5)
    expected_pairs = model.predict(model.preprocessor((tf.constant(texts), tf.constant(texts_b))), verbose=0)
    np.testing.assert_allclose(model.predict((texts, texts_b), verbose=0), expected_pairs, atol=1e-5)
    assert not np.allclose(expected_pairs, expected, atol=1e-3)  # the second texts were read


def test_predict_keeps_the_order_across_batches():
    model = classifier()
    texts = [" ".join(["film"] * (i % 7 + 1)) for i in range(10)]
    one_batch = model.predict(texts, batch_size=10, verbose=0)
    assert len(np.unique(one_batch.round(5), axis=0)) == 7  # the texts' order shows in the outputs
    np.testing.assert_allclose(model.predict(texts, batch_size=3, verbose=0), one_batch, atol=1e-5)


def test_encoder_predict_pads_sequence_outputs_to_seq_length():
    encoder = classifier().encoder
    outputs = encoder.predict(["a film", "a much longer film than that"], batch_size=1, verbose=0)
    assert outputs["sequence_output"].shape == (2, encoder.preprocessor.seq_length, encoder.hidden_size)
    assert outputs["pooled_output"].shape == (2, encoder.hidden_size)


def test_raw_text_without_a_preprocessor_is_one_clear_error():
    bare = BertClassifier.from_preset("bert_tiny", num_classes=2, vocab_size=100)
    with pytest.raises(ValueError, match="this BertClassifier has no preprocessor, so it cannot read raw text"):
        bare.predict(["a film"])


def test_raw_text_for_a_model_with_other_inputs_is_one_clear_error():
    pretrainer = BertPretrainer.from_pretrained(FIXTURE)
    with pytest.raises(ValueError, match=r"BertPretrainer also takes \['masked_lm_positions'\]"):
        pretrainer.predict(["a film"])


def test_fit_and_evaluate_take_raw_texts_and_labels():
    # One batch of all 8 texts per epoch, no dropout, plain gradient descent
    # (Adam would magnify float rounding in near-zero gradients): raw-text fit
    # must train as fit on the equivalent text_dataset.
    raw, packed = (compiled(classifier(dropout=0.0), keras.optimizers.SGD(0.1)) for _ in range(2))
    packed.set_weights(raw.get_weights())  # the same new classifier head
    history = raw.fit(TEXTS, LABELS, batch_size=8, epochs=3, validation_data=(TEXTS, LABELS), verbose=0)
    dataset = text_dataset(TEXTS, LABELS, preprocessor=packed.preprocessor, batch_size=8, training=True)
    packed.fit(dataset, epochs=3, verbose=0)
    for a, b in zip(raw.get_weights(), packed.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5)
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert len(history.history["val_loss"]) == 3
    evaluated = raw.evaluate(TEXTS, LABELS, return_dict=True, verbose=0)
    dataset = text_dataset(TEXTS, LABELS, preprocessor=raw.preprocessor)
    assert evaluated == pytest.approx(raw.evaluate(dataset, return_dict=True, verbose=0))
    assert history.history["val_loss"][-1] == pytest.approx(evaluated["loss"])
    with pytest.raises(ValueError, match=r"raw texts need their labels here: pass \(texts, labels\)"):
        raw.fit(TEXTS, epochs=1)


def test_save_leaves_out_the_optimizer_unless_asked(tmp_path):
    model = compiled(classifier(), build_optimizer(OptimizerConfig(), total_steps=2))
    model.fit(TEXTS, LABELS, batch_size=4, epochs=1, verbose=0)
    optimizer = model.optimizer
    model.save(tmp_path / "inference.keras")
    model.save(tmp_path / "training.keras", include_optimizer=True)
    assert model.optimizer is optimizer and model.compiled  # saving changed nothing

    def weight_groups(path):
        with zipfile.ZipFile(path) as archive, archive.open("model.weights.h5") as f, h5py.File(f) as h5:
            return set(h5)

    assert "optimizer" not in weight_groups(tmp_path / "inference.keras")
    assert "optimizer" in weight_groups(tmp_path / "training.keras")
    # Adam keeps two values per weight: the file without them is about a third.
    assert os.path.getsize(tmp_path / "inference.keras") < 0.5 * os.path.getsize(tmp_path / "training.keras")

    inference = keras.models.load_model(tmp_path / "inference.keras")
    assert not inference.compiled
    np.testing.assert_allclose(inference.predict(TEXTS, verbose=0), model.predict(TEXTS, verbose=0), atol=1e-6)
    training = keras.models.load_model(tmp_path / "training.keras")
    assert training.compiled and int(training.optimizer.iterations.numpy()) == 2


def test_fit_for_other_steps_than_the_schedule_is_one_clear_error():
    model = classifier()
    train = text_dataset(TEXTS, LABELS, preprocessor=model.preprocessor, batch_size=4, training=True)
    assert len(train) == 2
    compiled(model, build_optimizer(OptimizerConfig(), total_steps=3 * len(train)))
    with pytest.raises(ValueError, match=r"fit runs 4 optimizer steps \(2 epochs x 2 steps\) but the learning-rate "
                                         r"schedule was made for 6; compile for the steps fit runs"):
        model.fit(train, epochs=2, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 0  # refused before training
    model.fit(train, epochs=3, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 6


def test_fit_with_steps_per_epoch_may_stop_early_but_not_run_past_the_schedule():
    model = classifier()
    train = text_dataset(TEXTS, LABELS, preprocessor=model.preprocessor, batch_size=4, training=True).repeat()
    compiled(model, build_optimizer(OptimizerConfig(), total_steps=6))
    model.fit(train, steps_per_epoch=2, epochs=2, verbose=0)  # a budget of 4 steps, as a benchmark runs
    assert int(model.optimizer.iterations.numpy()) == 4
    with pytest.raises(ValueError, match=r"fit runs 8 optimizer steps \(2 epochs x 4 steps\) but .* made for 6"):
        model.fit(train, steps_per_epoch=4, epochs=2, verbose=0)


def test_a_dataset_of_unknown_length_is_checked_after_its_first_epoch():
    model = classifier()
    train = text_dataset(TEXTS, LABELS, preprocessor=model.preprocessor, batch_size=4, training=True)
    unknown = train.filter(lambda inputs, label: True)
    assert unknown.cardinality() == tf.data.UNKNOWN_CARDINALITY
    compiled(model, build_optimizer(OptimizerConfig(), total_steps=100))
    with pytest.raises(ValueError, match=r"fit runs \d+ optimizer steps \(3 epochs x \d+ steps, counted in the "
                                         r"first epoch\) but .* made for 100") as error:
        model.fit(unknown, epochs=3, verbose=0)
    # Stopped after the first epoch, whose optimizer steps (what the schedule
    # sees; Keras adds one at the end of data) the message counts.
    steps = int(model.optimizer.iterations.numpy())
    assert steps in (2, 3) and f"(3 epochs x {steps} steps" in str(error.value)


def test_task_compile_takes_the_steps_fit_runs(tmp_path):
    train_file = tmp_path / "train.tsv"
    train_file.write_text("".join(f"{label}\t{text}\n" for text, label in zip(TEXTS, LABELS)))
    task = tfplm.tasks.get(
        "text/classification",
        overrides=f"task.train_file={train_file},task.text_column=1,task.label_column=0,"
        f"task.init_checkpoint={FIXTURE},task.global_batch_size=4,task.seq_length=64",
    )
    model = task.build_model()
    train = task.build_inputs("train")
    task.compile(model)  # the config's schedule: task.epochs=3 epochs of 2 steps
    with pytest.raises(ValueError, match=r"fit runs 2 optimizer steps \(1 epochs x 2 steps\) .* made for 6"):
        model.fit(train, epochs=1, verbose=0)
    task.compile(model, steps=len(train))
    model.fit(train, epochs=1, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 2


# --- A real Jupyter kernel -------------------------------------------------------

TRAIN_NOTEBOOK = f"""
import json
import keras
import numpy as np
import tfplm
from tfplm.training.optimization import OptimizerConfig, build_optimizer

texts, labels = {TEXTS!r}, {LABELS!r}
classifier = tfplm.models.BertClassifier.from_pretrained({str(FIXTURE)!r}, num_classes=2)
before = classifier.predict(["a fine film", "dull"], verbose=0)
train = tfplm.data.text_dataset(texts, labels, preprocessor=classifier.preprocessor, batch_size=4, training=True)
classifier.compile(
    optimizer=build_optimizer(OptimizerConfig(learning_rate=1e-2), total_steps=3 * len(train)),
    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
)
classifier.fit(train, epochs=3, verbose=0)
logits = classifier.predict(["a fine film", "dull"], verbose=0)
classifier.save("x.keras")
print(json.dumps({{"before": before.tolist(), "logits": logits.tolist()}}))
"""

RELOAD_NOTEBOOK = """
import json
import keras
import tfplm

model = keras.models.load_model("x.keras")
print(json.dumps({"logits": model.predict(["a fine film", "dull"], verbose=0).tolist()}))
"""


def run_notebook(source, directory, kernel_name):
    """Runs `source` as a one-cell notebook in a fresh kernel; returns its printed JSON."""
    import nbclient
    import nbformat

    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source)])
    client = nbclient.NotebookClient(
        notebook, kernel_name=kernel_name, timeout=120, resources={"metadata": {"path": str(directory)}}
    )
    client.execute()
    outputs = notebook.cells[0].outputs
    printed = "".join(o.get("text", "") for o in outputs if o.output_type == "stream" and o.name == "stdout")
    return json.loads(printed.strip().splitlines()[-1])


def test_train_predict_save_then_reload_in_a_fresh_kernel(tmp_path, monkeypatch):
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from jupyter_client.kernelspec import KernelSpecManager

    # A kernel spec naming this interpreter: the installed "python3" spec runs
    # whatever `python` is first on PATH, which need not be this venv's.
    spec_dir = tmp_path / "jupyter" / "kernels" / "tfplm-test"
    spec_dir.mkdir(parents=True)
    spec = {
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "tfplm test",
        "language": "python",
        "env": {"TF_CPP_MIN_LOG_LEVEL": "3"},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path / "jupyter"))
    monkeypatch.setenv("JUPYTER_RUNTIME_DIR", str(tmp_path / "runtime"))
    monkeypatch.setenv("IPYTHONDIR", str(tmp_path / "ipython"))
    assert KernelSpecManager().get_kernel_spec("tfplm-test").argv[0] == sys.executable

    work = tmp_path / "work"
    work.mkdir()
    trained = run_notebook(TRAIN_NOTEBOOK, work, "tfplm-test")
    assert (work / "x.keras").is_file()
    assert not np.allclose(trained["logits"], trained["before"], atol=1e-3)  # fit changed the model
    reloaded = run_notebook(RELOAD_NOTEBOOK, work, "tfplm-test")
    np.testing.assert_allclose(reloaded["logits"], trained["logits"], atol=1e-6)
