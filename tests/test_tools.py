"""The binaries as a person runs them: quiet, with progress, one model folder, one-line errors.

Every run here goes through `run_tool`, which also checks that nothing
TensorFlow logs (C++ or Python) reaches the console.
"""

import importlib.util
import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfplm import console, export, models, tasks

REPO = pathlib.Path(__file__).resolve().parents[1]
# tools/_cli.py, what every binary shares (loaded by path: tools/ is not a package).
_spec = importlib.util.spec_from_file_location("_cli", REPO / "tools" / "_cli.py")
_cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_cli)

FIXTURES = REPO / "tests" / "fixtures"
# What TensorFlow's C++ (absl format: I0000 00:00:...) and its load-time
# messages look like, absl's Python log prefix (I1231 12:00:00.1 ...), the
# TFLite runtime's note, Python logging's and warnings' marks of TF/Keras code.
TF_LOG = re.compile(
    r"^[IWEF]\d{4} \d\d:\d\d:\d\d|oneDNN|cuda|cpu_feature_guard|absl::InitializeLog|XNNPACK|"
    r"^WARNING:(absl|tensorflow)|site-packages",
    re.IGNORECASE,
)


def tool_env(**extra):
    """The environment of a fresh shell: none of the test session's TensorFlow settings."""
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TFPLM_VERBOSE")}
    return {**env, **extra}


def log_lines(result):
    return [line for line in (result.stdout + result.stderr).splitlines() if TF_LOG.search(line)]


def run_tool(name, *args, env=None, check=True, quiet=True):
    """Runs tools/NAME.py; asserts it exited 0 (`check`) and printed no log line (`quiet`)."""
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / f"{name}.py"), *map(str, args)],
        capture_output=True,
        text=True,
        env=env or tool_env(),
        timeout=600,
        cwd=REPO,
    )
    if check:
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    if quiet:
        assert log_lines(result) == [], result.stdout[-3000:] + result.stderr[-3000:]
    return result


def assert_one_line_error(result, *fragments):
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0]
    assert "Traceback" not in result.stdout + result.stderr


SST2_OVERRIDES = "task.seq_length=16,trainer.train_steps=4,trainer.steps_per_loop=2,trainer.log_every_steps=3,runtime.seed=0"


@pytest.fixture(scope="module")
def sst2_run(tmp_path_factory, test_data_dir):
    """A 4-step glue/sst2 run of tools/train.py on the shipped GLUE sample: (model_dir, result)."""
    model_dir = tmp_path_factory.mktemp("sst2") / "run"
    result = run_tool(
        "train",
        "--experiment=glue/sst2",
        f"--model_dir={model_dir}",
        f"--glue_dir={test_data_dir / 'glue'}",
        f"--init_checkpoint={FIXTURES / 'hf_bert'}",
        f"--params_override={SST2_OVERRIDES}",
    )
    return model_dir, result


# --- quiet by default --------------------------------------------------------------------


def test_verbose_runs_show_the_logs_that_quiet_runs_hide():
    # TensorFlow logs while it loads (oneDNN, CUDA, CPU features): proof that
    # there is something to hide, and that --verbosity/TFPLM_VERBOSE show it.
    for env, flags in [(tool_env(TFPLM_VERBOSE="1"), []), (tool_env(), ["--verbosity=1"])]:
        verbose = run_tool("train", "--list_experiments", *flags, env=env, quiet=False)
        assert log_lines(verbose), verbose.stderr[-2000:]
        assert "glue/sst2" in verbose.stdout.split()
    # (Every run_tool call checks that a quiet run prints none of them.)


@pytest.mark.parametrize("binary", ["build_vocab", "create_pretraining_data", "convert_checkpoint"])
def test_data_and_checkpoint_binaries_print_their_result_and_no_logs(binary, tmp_path, test_data_dir):
    args = {
        "build_vocab": [f"--input={test_data_dir / 'books' / 'emma.txt'}", "--vocab_size=300", "--max_lines=300", f"--output={tmp_path / 'vocab.txt'}"],
        "create_pretraining_data": [
            f"--input={test_data_dir / 'pretraining_sample.txt'}",
            f"--vocab_file={FIXTURES / 'hf_bert' / 'vocab.txt'}",
            f"--output={tmp_path / 'data'}",
            "--max_seq_length=32",
            "--max_predictions_per_seq=5",
            "--dupe_factor=1",
        ],
        "convert_checkpoint": [f"--input={FIXTURES / 'hf_bert'}", f"--output={tmp_path / 'converted'}"],
    }[binary]
    result = run_tool(binary, *args)
    assert str(tmp_path) in result.stdout  # where the result went


def test_native_log_lines_are_told_from_what_a_binary_prints():
    native = [
        "I0000 00:00:1796185523.072046   15101 port.cc:153] oneDNN custom operations are on.",
        "E0000 00:00:1796184104.611999   28295 cuda_platform.cc:52] failed call to cuInit",
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
    ]
    kept = ["error: unknown config key trainer.train_step", "warning: skipped bad rows [3]", "F0000 00:00:1.2 7 a.cc:3] Check failed"]
    assert [bool(_cli._NATIVE_LOG.match(line)) for line in native + kept] == [True] * len(native) + [False] * len(kept)


@pytest.mark.parametrize(
    "argv, verbosity",
    [(["--verbosity=1"], 1), (["-v", "2"], 2), (["--v=0"], 0), (["-verbosity", "-1"], -1), (["--mode=eval"], None), (["--", "--verbosity=1"], None)],
)
def test_verbosity_is_read_before_flags_are_parsed(argv, verbosity):
    assert _cli._verbosity_flag(["tool.py", *argv]) == verbosity


def test_the_demo_runs_quietly_end_to_end(tmp_path, test_data_dir):
    """tools/demo.py, scaled down: a book chapter, 300 SST-2 sentences, a few steps."""
    data = tmp_path / "data"
    (data / "SST-2").mkdir(parents=True)
    book = (test_data_dir / "books" / "emma.txt").read_text(encoding="utf-8")
    (data / "books.txt").write_text(book[:30_000], encoding="utf-8")
    shutil.copy(test_data_dir / "sst2_train_head" / "SST-2" / "train.tsv", data / "SST-2" / "train.tsv")
    shutil.copy(test_data_dir / "glue" / "SST-2" / "dev.tsv", data / "SST-2" / "dev.tsv")
    out = tmp_path / "out"
    result = run_tool(
        "demo", f"--output_dir={out}", f"--data_dir={data}", "--vocab_size=400", "--pretrain_steps=4",
        "--finetune_epochs=1", "--seq_length=32",
    )
    assert re.search(r"^step 4/4  validation: loss", result.stdout, re.M)  # pretraining progress
    assert re.search(r"^SST-2 dev accuracy [\d.]+ on 2 sentences", result.stdout, re.M)
    assert "tflite_text_dynamic_int8" in result.stdout  # the report table
    assert (out / "serving" / "sst2" / "1" / "saved_model.pb").is_file()
    assert result.stderr == ""


# --- progress ------------------------------------------------------------------------------


def test_train_prints_progress_every_log_every_steps_and_at_each_loop_end(sst2_run):
    _, result = sst2_run
    train_lines = re.findall(r"^step (\d+)/4  loss [\d.]+  accuracy [\d.]+  [\d.]+ examples/s$", result.stdout, re.M)
    validation_lines = re.findall(r"^step (\d+)/4  validation: loss [\d.]+  accuracy [\d.]+$", result.stdout, re.M)
    # log_every_steps=3 with loops of 2 steps: step 3, plus the end of each loop.
    assert [int(s) for s in train_lines] == [2, 3, 4], result.stdout
    assert [int(s) for s in validation_lines] == [2, 4], result.stdout
    assert re.search(r"^evaluation at step 4: loss [\d.]+  accuracy [\d.]+$", result.stdout, re.M)


def test_train_prints_where_its_results_are(sst2_run):
    model_dir, result = sst2_run
    assert f"eval results: {model_dir / 'eval_results.json'}" in result.stdout
    assert f"best model: {model_dir / 'best'}" in result.stdout
    assert (model_dir / "best").is_dir() and not (model_dir / "best.weights.h5").exists()


# --- one model folder ------------------------------------------------------------------------


def test_config_yaml_names_the_experiment(sst2_run):
    model_dir, _ = sst2_run
    config = tasks.get_config("glue/sst2", config_files=[str(model_dir / "config.yaml")])
    assert config.experiment == "glue/sst2"
    assert config.task.seq_length == 16 and config.trainer.log_every_steps == 3


def test_predict_needs_only_the_model_dir(sst2_run):
    model_dir, _ = sst2_run
    result = run_tool("train", "--mode=predict", f"--model_dir={model_dir}")
    predictions = model_dir / "SST-2.tsv"
    assert f"predictions: {predictions}" in result.stdout
    rows = predictions.read_text().splitlines()
    assert rows[0] == "index\tprediction" and len(rows) == 3  # the sample's 2 test sentences


def test_eval_reads_the_model_dir_and_flags_given_again_override_it(sst2_run, tmp_path, test_data_dir):
    model_dir, _ = sst2_run
    saved_config = (model_dir / "config.yaml").read_text()
    moved = tmp_path / "glue"
    shutil.copytree(test_data_dir / "glue" / "SST-2", moved / "SST-2")
    run_tool("train", "--mode=eval", f"--model_dir={model_dir}", f"--glue_dir={moved}")
    results = json.loads((model_dir / "eval_results.json").read_text())
    assert results["step"] == 4 and results["data"]["source"] == str(moved)
    assert (model_dir / "config.yaml").read_text() == saved_config  # an evaluation keeps the run's config


def test_experiment_is_required_without_a_config_yaml_and_must_agree_with_one(sst2_run, tmp_path):
    model_dir, _ = sst2_run
    result = run_tool("train", "--mode=eval", f"--model_dir={model_dir}", "--experiment=glue/cola", check=False)
    assert_one_line_error(result, "--experiment=glue/cola", "glue/sst2")
    result = run_tool("train", f"--model_dir={tmp_path}", check=False)
    assert_one_line_error(result, "--experiment is required")


# --- --print_config and user errors ---------------------------------------------------------


def test_print_config_lists_every_key_with_its_value_and_doc():
    result = run_tool("train", "--experiment=glue/sst2", "--print_config", "--params_override=trainer.train_steps=7")
    lines = result.stdout.splitlines()
    config = tasks.get_config("glue/sst2")
    keys = [line.split(" = ")[0] for line in lines if " = " in line and not line.startswith(" ")]
    assert keys == [key for key, _, _ in console.config_keys(config)]
    assert "trainer.train_steps = 7" in lines  # the values in effect
    index = lines.index("task.glue_dir = ''")
    assert lines[index + 1] == "    GLUE's folder of TSV directories (CoLA/, SST-2/, ...)."
    assert "trainer.optimizer.learning_rate = 3.0e-05" in lines


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--experiment=glue/nope", "--model_dir=RUN"], ["unknown experiment 'glue/nope'", "glue/sst2"]),
        (["--experiment=glue/sst2", "--model_dir=RUN", "--params_override=trainer.train_step=3"], ["unknown config key trainer.train_step"]),
        (["--experiment=glue/sst2", "--model_dir=RUN", "--params_override=trainer.train_steps=many"], ["trainer.train_steps"]),
        (
            ["--experiment=glue/sst2", "--model_dir=RUN", "--glue_dir=GLUE", f"--params_override=task.preset=bert_huge,task.vocab_file={FIXTURES / 'hf_bert' / 'vocab.txt'}"],
            ["bert_huge"],
        ),
        (["--experiment=glue/sst2", "--model_dir=RUN", "--glue_dir=GLUE", "--init_checkpoint=NOWHERE"], ["NOWHERE"]),
        (["--experiment=glue/sst2", "--modle_dir=RUN"], ["modle_dir"]),
        (["--experiment=glue/sst2", "--model_dir=RUN", "--mode=serve"], ["--mode", "train_and_eval"]),
    ],
    ids=["unknown_experiment", "unknown_key", "bad_value", "unknown_preset", "missing_checkpoint", "unknown_flag", "bad_flag_value"],
)
def test_user_errors_are_one_line_and_a_nonzero_exit(args, fragments, tmp_path, test_data_dir):
    replace = {"RUN": str(tmp_path / "run"), "GLUE": str(test_data_dir / "glue"), "NOWHERE": str(tmp_path / "nowhere")}
    args = [re.sub("RUN|GLUE|NOWHERE", lambda m: replace[m.group(0)], a) for a in args]
    fragments = [re.sub("NOWHERE", replace["NOWHERE"], f) for f in fragments]
    assert_one_line_error(run_tool("train", *args, check=False), *fragments)


def test_config_keys_reads_attribute_docs_of_several_names_and_continued_lines():
    docs = console.attribute_docs(tasks.get_config("bert/pretraining").task.__class__)
    assert docs["train_data"] == docs["validation_data"] == "the inputs."
    assert docs["init_checkpoint"].startswith("pretrained weights to continue from: any directory")
    assert docs["init_checkpoint"].endswith("Its tokenizer then replaces `vocab_file`'s.")


# --- export ----------------------------------------------------------------------------------


def test_export_from_a_model_dir_serves_it_under_its_task_name_on_its_held_out_data(sst2_run, tmp_path):
    model_dir, _ = sst2_run
    out = tmp_path / "serving"
    result = run_tool("export", f"--model_dir={model_dir}", f"--export_dir={out}", "--format=saved_model")
    assert (out / "sst2" / "1" / "saved_model.pb").is_file()
    report = json.loads((out / "export_report.json").read_text())
    assert report["examples"] == 2  # the sample's dev set
    assert [row["name"] for row in report["artifacts"]] == ["keras", "saved_model"]
    assert f"saved_model: {out / 'sst2' / '1'}" in result.stdout
    assert f"report: {out / 'export_report.json'}" in result.stdout


@pytest.mark.parametrize("folder, model_class", [("hf_bert", "BertPretrainer"), ("hf_bert_model", "BertEncoder")])
def test_export_of_a_pretrained_model_of_every_kind_needs_no_texts(folder, model_class, tmp_path):
    # (The formats of each kind are test_export_*'s subject; this is the binary's: loading, naming, examples.
    # A GPT folder: test_export_report.test_export_binary_exports_a_gpt_folder.)
    out = tmp_path / "serving"
    result = run_tool(
        "export", f"--pretrained={FIXTURES / folder}", f"--export_dir={out}", "--num_examples=3", "--format=saved_model"
    )
    report = json.loads((out / "export_report.json").read_text())
    assert report["model"] == model_class and report["examples"] == 3  # the built-in held-out sentences
    assert [row["name"] for row in report["artifacts"]] == ["keras", "saved_model"]
    assert all(row["failures"] == [] for row in report["artifacts"])
    assert (out / folder / "1" / "saved_model.pb").is_file()  # named after the folder
    assert f"saved_model: {out / folder / '1'}" in result.stdout


@pytest.fixture(scope="module")
def unlabelled_classifier(tmp_path_factory):
    """A 2-class classifier checkpoint without label names, with a head that separates classes."""
    encoder = models.BertEncoder.from_pretrained(str(FIXTURES / "hf_bert"), seq_length=16)
    model = models.BertClassifier(encoder, 2)
    head = model.head.weights[0]
    head.assign(np.random.default_rng(0).normal(0, 0.5, head.shape).astype("float32"))
    path = tmp_path_factory.mktemp("classifier") / "movie_reviews"
    model.save_pretrained(path)
    return path, model


def test_label_names_of_a_pretrained_classifier_are_served(unlabelled_classifier, tmp_path):
    path, model = unlabelled_classifier
    out = tmp_path / "serving"
    run_tool("export", f"--pretrained={path}", f"--export_dir={out}", "--format=saved_model", "--label_names=neg,pos", "--num_examples=4")
    served = export.load(str(out / "movie_reviews" / "1")).signatures["serving_default"]
    texts = ["a gorgeous, witty film", "dull and lifeless"]
    outputs = served(text=tf.constant(texts))
    expected = np.argmax(model(model.preprocessor(tf.constant(texts))), -1)
    assert [label.decode() for label in outputs["label"].numpy()] == [["neg", "pos"][i] for i in expected]
    report = json.loads((out / "export_report.json").read_text())
    assert report["examples"] == 4  # the built-in held-out sentences


def test_label_names_must_fit_the_classifier(unlabelled_classifier, tmp_path):
    path, _ = unlabelled_classifier
    result = run_tool("export", f"--pretrained={path}", f"--export_dir={tmp_path}", "--label_names=a,b,c", check=False)
    assert_one_line_error(result, "3 label_names for a 2-class classifier")


# --- library errors through every binary: one line; TensorFlow/Keras errors: a traceback ------


def _hostile_checkpoint(tmp_path, change):
    """A copy of the hf_bert fixture converted to tfplm's format, its config changed by `change`."""
    path = tmp_path / "ckpt"
    models.BertEncoder.from_pretrained(str(FIXTURES / "hf_bert"), seq_length=16).save_pretrained(path)
    spec = json.loads((path / "tfplm_config.json").read_text())
    change(spec)
    (path / "tfplm_config.json").write_text(json.dumps(spec))
    return path


@pytest.mark.parametrize(
    "change, fragments",
    [
        (lambda spec: spec.update(weights="../../etc/passwd"), ["tfplm_config.json key 'weights' '../../etc/passwd' is outside the checkpoint folder"]),
        (lambda spec: spec["config"].update(vocab_size=10**12), ["config vocab_size=1000000000000 but tensor", "vocab_size=800"]),
    ],
    ids=["outside_path", "huge_vocab"],
)
def test_hostile_checkpoints_are_one_line_errors_of_every_binary_that_reads_them(change, fragments, tmp_path):
    checkpoint = _hostile_checkpoint(tmp_path, change)
    for binary, args in [
        ("convert_checkpoint", [f"--input={checkpoint}", f"--output={tmp_path / 'out'}"]),
        ("export", [f"--pretrained={checkpoint}", f"--export_dir={tmp_path / 'export'}"]),
    ]:
        result = run_tool(binary, *args, check=False)
        assert_one_line_error(result, *fragments)
    assert not (tmp_path / "out").exists() and not (tmp_path / "export").exists()


def test_a_truncated_checkpoint_is_a_one_line_error_naming_the_file(tmp_path):
    checkpoint = _hostile_checkpoint(tmp_path, lambda spec: None)
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    result = run_tool("convert_checkpoint", f"--input={checkpoint}", f"--output={tmp_path / 'out'}", check=False)
    assert_one_line_error(result, f"{weights}: cannot be read as safetensors", "truncated or corrupt")


@pytest.mark.parametrize(
    "content, fragments",
    [
        ("task: 5\n", ["c.yaml: task: expected a mapping of its keys", "got 5"]),
        ('{"trainer": {"train_steps": 3,}\n', ["c.yaml: line 2, column 1: not valid YAML or JSON"]),
        ("\udcff\udcfe[[[", ["c.yaml: not a text file"]),
    ],
    ids=["scalar_task", "not_json", "binary"],
)
def test_a_bad_config_file_is_a_one_line_error_naming_it(content, fragments, tmp_path, test_data_dir):
    path = tmp_path / "c.yaml"
    path.write_bytes(content.encode("utf-8", "surrogateescape"))
    result = run_tool(
        "train", "--experiment=glue/sst2", f"--model_dir={tmp_path / 'run'}", f"--glue_dir={test_data_dir / 'glue'}",
        f"--config_file={path}", check=False,
    )
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "run").exists()


def test_value_errors_from_inside_tensorflow_or_keras_are_bugs_not_user_errors():
    import keras

    from tfplm.config import ConfigError
    from tfplm.models.checkpoints import CheckpointError

    def raised(function):
        try:
            function()
        except Exception as error:  # noqa: BLE001
            return error
        raise AssertionError("nothing raised")

    keras_error = raised(lambda: keras.layers.Dense(-1))
    assert isinstance(keras_error, ValueError) and not _cli.is_user_error(keras_error)

    def library_error():
        raise CheckpointError("x: bad")

    for error in (raised(library_error), raised(lambda: open("/no/such/file")), ConfigError("k: bad")):
        assert _cli.is_user_error(error), error
    assert not _cli.is_user_error(raised(lambda: {}["key"]))
