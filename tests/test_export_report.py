"""The export report and tools/export.py: artifacts measured against the Keras model, bars enforced."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tfplm import export, models, tasks
from tfplm.export import report as report_lib
from tfplm.training import trainer

REPO = pathlib.Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures"


@pytest.fixture(scope="module")
def sentences(test_data_dir):
    lines = (test_data_dir / "sentences.txt").read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip()][:30]


@pytest.fixture(scope="module")
def classifier():
    model = models.BertClassifier.from_pretrained(str(FIXTURES / "hf_bert"), num_classes=2, seq_length=32)
    head = model.head.weights[0]
    head.assign(np.random.default_rng(0).normal(0, 0.5, head.shape).astype("float32"))
    return model


def test_a_faithful_saved_model_passes_and_a_perturbed_artifact_is_named(classifier, sentences, tmp_path):
    path = export.saved_model(classifier, tmp_path)
    good = report_lib.saved_model_predict(path, "classifier")

    def off_by_a_little(texts, texts_b=None):
        out = good(texts, texts_b)
        return {"probabilities": out["probabilities"] + 1e-3}

    def flipped(texts, texts_b=None):
        return {"probabilities": good(texts, texts_b)["probabilities"][:, ::-1]}

    artifacts = [
        report_lib.Artifact("saved_model", path, good, dict(report_lib.SAVED_MODEL_BAR)),
        report_lib.Artifact("slightly_off", path, off_by_a_little, dict(report_lib.SAVED_MODEL_BAR)),
        report_lib.Artifact("flipped", path, flipped, dict(report_lib.SAVED_MODEL_BAR)),
    ]
    result = report_lib.build_report(classifier, artifacts, sentences, latency_runs=2)
    rows = {row["name"]: row for row in result["artifacts"]}
    assert rows["saved_model"]["max_abs_diff"] <= 1e-5 and rows["saved_model"]["agreement"] == 1.0
    assert rows["saved_model"]["failures"] == [] and rows["saved_model"]["size_bytes"] > 0
    assert rows["slightly_off"]["failures"] == ["max abs diff 0.001 > 1e-05"]
    assert rows["flipped"]["agreement"] < 1.0 and any("agreement" in f for f in rows["flipped"]["failures"])
    assert [f.split(":")[0] for f in report_lib.failures(result)] == ["slightly_off", "flipped", "flipped"]
    table = report_lib.format_table(result)
    assert "FAILED" in table and "saved_model" in table


def test_the_size_bar_compares_with_the_float_file():
    row = {"bar": dict(report_lib.TFLITE_DYNAMIC_INT8_BAR), "max_abs_diff": 0.01, "agreement": 1.0, "size_ratio": 0.31}
    assert report_lib.check(row) == ["size 31% of float32 > 30%"]
    row.update(size_ratio=0.26, agreement=0.985)
    assert report_lib.check(row) == ["agreement 98.50% < 99%"]


def test_masked_lm_reports_mask_a_word_and_match(tmp_path, sentences):
    model = models.BertPretrainer.from_pretrained(str(FIXTURES / "hf_bert"), seq_length=32)
    path = export.saved_model(model, tmp_path)
    artifact = report_lib.Artifact("saved_model", path, report_lib.saved_model_predict(path, "masked_lm"), dict(report_lib.SAVED_MODEL_BAR))
    result = report_lib.build_report(model, [artifact], sentences[:8], latency_runs=1)
    assert report_lib.failures(result) == []
    assert report_lib.mask_a_word(["a b c", "x [MASK]"]) == ["a [MASK] c", "x [MASK]"]


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
    assert names == ["keras", "saved_model", "tflite_ids_float32", "tflite_text_float32"]
    assert report["examples"] == 20 and report_lib.failures(report) == []
    assert (out / "sst2" / "1" / "saved_model.pb").is_file()
    assert (out / "hub" / "sst2" / "1" / "encoder" / "saved_model.pb").is_file()
    assert (out / "tflite" / "sst2" / "1" / "ids_float32.tflite").is_file()
    assert "tflite_ids_float32" in result.stdout and "max abs diff" in result.stdout
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
    result = run_export(f"--pretrained={FIXTURES / 'hf_bert'}", f"--export_dir={tmp_path}")
    assert result.returncode != 0 and "--texts_file" in result.stderr
    result = run_export(f"--export_dir={tmp_path}")
    assert result.returncode != 0 and "exactly one of --model_dir" in result.stderr


def test_a_glue_run_exports_from_its_model_dir_with_its_validation_data(tmp_path, test_data_dir):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text((FIXTURES / "hf_bert" / "vocab.txt").read_text())
    overrides = (
        f"task.glue_dir={test_data_dir / 'glue'},task.vocab_file={vocab},task.seq_length=16,"
        "trainer.train_steps=2,trainer.steps_per_loop=2,runtime.seed=0"
    )
    task = tasks.get("glue/sst2", overrides=overrides)
    results = trainer.run_experiment(task, "train_and_eval", str(tmp_path / "run"))
    again = tasks.get("glue/sst2", config_files=[str(tmp_path / "run" / "config.yaml")])
    restored = trainer.load_trained(again, str(tmp_path / "run"))
    again.compile(restored)
    metrics = restored.evaluate(again.build_inputs("validation"), return_dict=True, verbose=0)
    assert metrics["loss"] == pytest.approx(results["metrics"]["loss"], rel=1e-5)  # the trained weights
    assert restored.label_names == task.label_names
    result = run_export("--experiment=glue/sst2", f"--model_dir={tmp_path / 'run'}", f"--export_dir={tmp_path / 'out'}", "--format=saved_model")
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "export_report.json").read_text())
    assert report["examples"] == len(task.examples("validation").texts)
