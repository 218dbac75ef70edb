"""The export report and tools/export.py: artifacts measured against the Keras model, bars enforced."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tfplm import export, models, tasks
from tfplm.export import serving as serving_lib
from tfplm.export import report as report_lib
from tfplm.tasks.masked_lm import mask_a_word
from tfplm.tokenizers import BertPreprocessor
from tfplm.training import trainer

REPO = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"


@pytest.fixture(scope="module")
def sentences(test_data_dir):
    lines = (test_data_dir / "sentences.txt").read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip()][:30]


def bert_classifier(num_classes=2, pair=False):
    """The fixture's encoder with a new classifier head whose outputs differ per class."""
    encoder = models.BertEncoder.from_pretrained(str(FIXTURES / "hf_bert"))
    preprocessor = BertPreprocessor(encoder.tokenizer, 32, pair=pair)
    model = models.BertClassifier(encoder, num_classes, preprocessor=preprocessor)
    head = model.head.weights[0]
    head.assign(np.random.default_rng(0).normal(0, 0.5, head.shape).astype("float32"))
    return model


@pytest.fixture(scope="module")
def classifier():
    return bert_classifier()


def rows_by_name(report):
    return {row["name"]: row for row in report["artifacts"]}


def test_a_faithful_saved_model_passes_and_a_perturbed_artifact_is_named(classifier, sentences, tmp_path):
    path = export.saved_model(classifier, tmp_path)
    good = report_lib.saved_model_predict(path)

    def off_by_a_little(examples):
        return {"probabilities": good(examples)["probabilities"] + 1e-3}

    def flipped(examples):
        return {"probabilities": good(examples)["probabilities"][:, ::-1]}

    artifacts = [
        report_lib.Artifact("saved_model", path, good, dict(report_lib.SAVED_MODEL_BAR)),
        report_lib.Artifact("slightly_off", path, off_by_a_little, dict(report_lib.SAVED_MODEL_BAR)),
        report_lib.Artifact("flipped", path, flipped, dict(report_lib.SAVED_MODEL_BAR)),
    ]
    result = report_lib.build_report(tasks.serving_head(classifier), artifacts, {"text": sentences}, latency_runs=2)
    assert (result["model"], result["task_type"], result["examples"]) == ("BertClassifier", "ClassifierHead", 30)
    rows = rows_by_name(result)
    assert rows["saved_model"]["max_abs_diff"] <= 1e-5 and rows["saved_model"]["agreement"] == 1.0
    assert rows["saved_model"]["failures"] == [] and rows["saved_model"]["size_bytes"] > 0
    assert rows["slightly_off"]["failures"] == ["max abs diff 0.001 > 1e-05"]
    assert rows["flipped"]["agreement"] < 1.0 and any("agreement" in f for f in rows["flipped"]["failures"])
    assert [f.split(":")[0] for f in report_lib.failures(result)] == ["slightly_off", "flipped", "flipped"]
    table = report_lib.format_table(result)
    assert "FAILED" in table and "saved_model" in table


def test_the_report_names_inputs_the_examples_lack(classifier):
    with pytest.raises(ValueError, match=r"lack input\(s\) \['text_b'\].*\['text', 'text_b'\]"):
        report_lib.build_report(tasks.serving_head(bert_classifier(pair=True)), [], {"text": ["a"]})
    with pytest.raises(ValueError, match="at least one example"):
        report_lib.build_report(tasks.serving_head(classifier), [], {"text": []})


def test_the_size_bar_compares_with_the_float_file():
    row = {"bar": dict(report_lib.TFLITE_DYNAMIC_INT8_BAR), "max_abs_diff": 0.01, "agreement": 1.0, "size_ratio": 0.31}
    assert report_lib.check(row) == ["size 31% of float32 > 30%"]
    row.update(size_ratio=0.26, agreement=0.985)
    assert report_lib.check(row) == ["agreement 98.50% < 99%"]


def test_masked_lm_reports_mask_a_word_and_match(tmp_path, sentences):
    model = models.BertPretrainer.from_pretrained(str(FIXTURES / "hf_bert"), seq_length=32)
    path = export.saved_model(model, tmp_path)
    artifact = report_lib.Artifact("saved_model", path, report_lib.saved_model_predict(path), dict(report_lib.SAVED_MODEL_BAR))
    result = report_lib.build_report(tasks.serving_head(model), [artifact], {"text": sentences[:8]}, latency_runs=1)
    assert report_lib.failures(result) == []
    assert rows_by_name(result)["saved_model"]["agreement"] == 1.0
    assert mask_a_word(["a b c", "x [MASK]"]) == ["a [MASK] c", "x [MASK]"]


# --- TF Hub rows -------------------------------------------------------------------


def test_tf_hub_rows_pass_for_an_encoder_and_a_pair_classifier(sentences, tmp_path):
    encoder = models.BertEncoder.from_pretrained(str(FIXTURES / "hf_bert"), seq_length=32)
    report = export.export_model(encoder, tmp_path / "encoder", sentences[:6], formats=("hub",), model_name="enc")
    row = rows_by_name(report)["tf_hub"]
    assert row["max_abs_diff"] <= 1e-5 and row["bar"] == report_lib.SAVED_MODEL_BAR and row["failures"] == []
    assert row["path"] == str(tmp_path / "encoder" / "hub" / "enc" / "1")
    # A classifier's TF Hub export is its encoder, checked against the Keras encoder on both texts.
    examples = {"text": sentences[:6], "text_b": sentences[6:12]}
    report = export.export_model(bert_classifier(3, pair=True), tmp_path / "pairs", examples, formats=("hub",))
    assert [row["name"] for row in report["artifacts"]] == ["keras", "tf_hub"]
    row = rows_by_name(report)["tf_hub"]
    assert row["max_abs_diff"] <= 1e-5 and row["failures"] == [] and report_lib.failures(report) == []


# --- GPT -------------------------------------------------------------------------------


def test_export_model_checks_a_gpt_token_for_token(sentences, tmp_path):
    model = models.GPT.from_pretrained(str(FIXTURES / "hf_gpt2"))
    report = export.export_model(model, tmp_path, {"prompt": sentences[:4]})
    assert (report["model"], report["task_type"], report["examples"]) == ("GPT", "GeneratorHead", 4)
    # TF Hub's BERT layout and TFLite cannot carry a GPT: "all" skips them.
    assert [row["name"] for row in report["artifacts"]] == ["keras", "saved_model"]
    row = rows_by_name(report)["saved_model"]
    assert row["agreement"] == 1.0 and row["max_abs_diff"] is None and row["failures"] == []
    assert report_lib.failures(report) == []
    assert "—" in report_lib.format_table(report)  # no max abs diff for generated tokens
    assert json.loads((tmp_path / "export_report.json").read_text()) == json.loads(json.dumps(report))
    assert sorted(os.listdir(tmp_path)) == [serving_lib.LOCK_FILE, "export_report.json", "gpt"]  # the lock stays, unheld
    with pytest.raises(ValueError, match="TFLite export does not cover a GPT"):
        export.export_model(model, tmp_path, {"prompt": sentences[:2]}, formats=("tflite",))


def test_a_gpt_that_generates_other_tokens_misses_its_bar(sentences, tmp_path):
    model = models.GPT.from_pretrained(str(FIXTURES / "hf_gpt2"))
    head = tasks.serving_head(model)
    reference = head.reference({"prompt": sentences[:4]})

    def one_token_off(examples):
        token_ids = np.array(reference["token_ids"])
        token_ids[0, -1] = (token_ids[0, -1] + 1) % model.vocab_size
        return {"token_ids": token_ids}

    artifact = report_lib.Artifact("off", str(tmp_path), one_token_off, dict(report_lib.SAVED_MODEL_BAR))
    report = report_lib.build_report(head, [artifact], {"prompt": sentences[:4]}, latency_runs=1)
    assert rows_by_name(report)["off"]["agreement"] == 0.75
    assert report_lib.failures(report) == ["off: agreement 75.00% < 100%"]


# --- tools/export.py ---------------------------------------------------------------------


def run_export(*flags):
    return subprocess.run(
        [sys.executable, str(REPO / "tools" / "export.py"), *flags],
        capture_output=True, text=True, timeout=600, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


def test_export_binary_writes_every_format_and_its_report(classifier, sentences, tmp_path):
    checkpoint = tmp_path / "checkpoint"
    classifier.save_pretrained(checkpoint)
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(sentences[:20]) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    result = run_export(f"--pretrained={checkpoint}", f"--export_dir={out}", f"--texts_file={texts}", "--model_name=sst2", "--label_names=negative,positive")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "export_report.json").read_text())
    names = [row["name"] for row in report["artifacts"]]
    assert names == ["keras", "saved_model", "tf_hub", "tflite_ids_float32", "tflite_text_float32"]
    assert report["examples"] == 20 and report_lib.failures(report) == []
    assert (out / "sst2" / "1" / "saved_model.pb").is_file()
    assert (out / "hub" / "sst2" / "1" / "encoder" / "saved_model.pb").is_file()
    assert (out / "tflite" / "sst2" / "1" / "ids_float32.tflite").is_file()
    assert "tflite_ids_float32" in result.stdout and "max abs diff" in result.stdout
    labels = export.load(str(out / "sst2" / "1")).signatures["serving_default"](text=np.array(sentences[:20]))["label"]
    assert set(labels.numpy()) == {b"negative", b"positive"}  # --label_names, served
    # A second run writes version 2 of everything, never over version 1.
    again = run_export(f"--pretrained={checkpoint}", f"--export_dir={out}", f"--texts_file={texts}", "--model_name=sst2", "--format=saved_model")
    assert again.returncode == 0, again.stderr[-3000:]
    assert sorted(os.listdir(out / "sst2")) == ["1", "2"]


def test_export_binary_fails_on_a_missed_bar_unless_allowed(classifier, sentences, tmp_path):
    checkpoint = tmp_path / "checkpoint"
    classifier.save_pretrained(checkpoint)
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(sentences[:10]) + "\n", encoding="utf-8")
    # int8 weights of this tiny model are not 30% of its float file: the size bar is missed.
    flags = [f"--pretrained={checkpoint}", f"--texts_file={texts}", "--format=tflite", "--quantize=dynamic_int8", "--tflite_flavours=ids"]
    strict = run_export(*flags, f"--export_dir={tmp_path / 'strict'}")
    assert strict.returncode != 0 and "tflite_ids_dynamic_int8: size" in strict.stderr
    assert (tmp_path / "strict" / "export_report.json").is_file()  # the report is written either way
    allowed = run_export(*flags, f"--export_dir={tmp_path / 'allowed'}", "--allow_mismatch")
    assert allowed.returncode == 0, allowed.stderr[-3000:]


def test_export_binary_explains_missing_inputs(tmp_path):
    result = run_export(f"--pretrained={FIXTURES / 'hf_bert'}")
    assert result.returncode != 0 and "--export_dir is required" in result.stderr
    result = run_export(f"--export_dir={tmp_path}")
    assert result.returncode != 0 and "exactly one of --model_dir" in result.stderr
    assert "Traceback" not in result.stderr
    assert os.listdir(tmp_path) == []


def test_export_binary_exports_a_gpt_folder(tmp_path):
    # No --texts_file: the report runs the binary's built-in prompts.
    out = tmp_path / "out"
    result = run_export(f"--pretrained={FIXTURES / 'hf_gpt2'}", f"--export_dir={out}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((out / "export_report.json").read_text())
    assert (report["model"], report["task_type"]) == ("GPT", "GeneratorHead") and report["examples"] > 0
    assert [row["name"] for row in report["artifacts"]] == ["keras", "saved_model"]
    assert rows_by_name(report)["saved_model"]["agreement"] == 1.0 and report_lib.failures(report) == []
    assert (out / "hf_gpt2" / "1" / "saved_model.pb").is_file()  # named after the folder
    assert f"saved_model: {out / 'hf_gpt2' / '1'}" in result.stdout
    # What a GPT cannot be exported as is a one-line error, not a traceback.
    tflite = run_export(f"--pretrained={FIXTURES / 'hf_gpt2'}", f"--export_dir={out}", "--format=tflite")
    assert tflite.returncode != 0 and "TFLite export does not cover a GPT" in tflite.stderr
    assert "Traceback" not in tflite.stderr


def test_a_glue_run_exports_from_its_model_dir_with_its_validation_data(tmp_path, test_data_dir):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text((FIXTURES / "hf_bert" / "vocab.txt").read_text())
    overrides = (
        f"task.glue_dir={test_data_dir / 'glue'},task.vocab_file={vocab},task.seq_length=16,"
        # float32: the run evaluates in the precision it trains in, and the reloaded
        # model (float32, as exports are) must reproduce its loss exactly.
        "trainer.train_steps=2,trainer.steps_per_loop=2,runtime.seed=0,runtime.mixed_precision=float32"
    )
    task = tasks.get("glue/sst2", overrides=overrides)
    results = trainer.run_experiment(task, "train_and_eval", str(tmp_path / "run"))
    again = tasks.get("glue/sst2", config_files=[str(tmp_path / "run" / "config.yaml")])
    restored = trainer.load_trained(again, str(tmp_path / "run"))
    again.compile(restored)
    metrics = restored.evaluate(again.build_inputs("validation"), return_dict=True, verbose=0)
    assert metrics["loss"] == pytest.approx(results["metrics"]["loss"], rel=1e-5)  # the trained weights
    assert list(restored.label_names) == task.label_names
    result = run_export("--experiment=glue/sst2", f"--model_dir={tmp_path / 'run'}", f"--export_dir={tmp_path / 'out'}", "--format=saved_model")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "export_report.json").read_text())
    assert report["examples"] == len(task.examples("validation").texts)
