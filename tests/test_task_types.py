"""One harness for every task type: the same checks for each registered type.

For each task type (the zoo's, plus the toy token tagger of `toy_tagging.py`,
added the way a new type is: one module + one `register` line): the model's
config and `.keras` round trips, batches of different lengths, a fit step under
the default and the mirrored strategy, mixed precision, SavedModel export
against the Keras model, and TFLite where its serving head has a function.
"""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import toy_tagging
from tfplm import export, tasks
from tfplm.export import report as report_lib
from tfplm.models import BertEncoder
from tfplm.tasks.serving import UnsupportedExport
from tfplm.tokenizers import BertPreprocessor, WordPieceTokenizer
from tfplm.training import trainer
from tfplm.training.distribute import precision

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "tools", "demo_data")
VOCAB = os.path.join(REPO, "tests", "fixtures", "hf_bert", "vocab.txt")
TEXT = os.path.join(REPO, "tests", "data", "pretraining_sample.txt")
GPT2 = os.path.join(REPO, "tests", "fixtures", "hf_gpt2")
TRAINER = "trainer.train_steps=2,trainer.steps_per_loop=2,trainer.eval_steps=1,runtime.seed=1"

# The toy type is registered as a user would register a new one.
if toy_tagging.TASK_TYPE.name not in tasks.TASK_TYPES:
    tasks.register(toy_tagging.TASK_TYPE)


def _pretraining_data(seq_length, input_format):
    return ",".join(
        f"task.{split}.{key}={value}"
        for split in ("train_data", "validation_data")
        for key, value in (
            ("input_path", TEXT),
            ("input_format", input_format),
            ("seq_length", seq_length),
            ("global_batch_size", 4),
            ("shuffle_buffer_size", 1),
        )
    )


# A tiny experiment of every task type that trains, on data shipped in the repository.
EXPERIMENTS = {
    "glue/sst2": f"task.glue_dir={DEMO},task.vocab_file={VOCAB},task.seq_length=16,task.global_batch_size=8",
    "text/classification": (
        f"task.train_file={DEMO}/SST-2/dev.tsv,task.validation_file={DEMO}/SST-2/dev.tsv,"
        f"task.text_column=sentence,task.vocab_file={VOCAB},task.seq_length=16,task.global_batch_size=8"
    ),
    "bert/pretraining": f"task.vocab_file={VOCAB},task.model.max_length=64,{_pretraining_data(16, 'bert')}",
    "gpt/pretraining": f"task.init_checkpoint={GPT2},{_pretraining_data(16, 'bert')}",
    "toy/tagging": f"task.data_dir={DEMO},task.vocab_file={VOCAB},task.seq_length=16",
    "seq2seq/translation": (
        f"task.data_dir={REPO}/tests/data/parallel,task.validation_split=val,task.test_split=test,"
        "task.vocab_size=200,task.batch_tokens=128,task.eval_batch_size=8,task.bleu_examples=4"
    ),
    "gpt/finetune": (
        f"task.init_checkpoint={GPT2},task.train_file={TEXT},task.validation_file={TEXT},task.seq_length=16,"
        "task.global_batch_size=4,task.shuffle_buffer_size=1,task.sample_prompts=The|She,task.sample_tokens=4"
    ),
    "tagging/conll2003": f"task.data_dir={REPO}/tests/data/conll_synthetic,task.vocab_file={VOCAB},task.seq_length=16,task.global_batch_size=8",
    "sts/stsbenchmark": f"task.data_dir={REPO}/tests/data/stsbenchmark,task.vocab_file={VOCAB},task.seq_length=16,task.global_batch_size=8",
    "distill/sst2": (
        f"task.glue_dir={DEMO},task.teacher={REPO}/tests/fixtures/sst2_teacher_tiny,task.student_layers=1,"
        "task.hidden_weight=1.0,task.seq_length=16,task.global_batch_size=8"
    ),
    "squad/v1.1": (
        f"task.eval_file={REPO}/tests/data/squad_sample.json,task.train_articles=1,task.eval_articles=2,"
        f"task.vocab_file={VOCAB},task.max_seq_length=32,task.max_query_length=8,task.doc_stride=16,task.global_batch_size=8"
    ),
}


def test_every_task_type_with_a_task_has_a_harness_experiment():
    covered = {tasks.EXPERIMENTS.get(name)[0].name for name in EXPERIMENTS}
    assert {t.name for t in tasks.TASK_TYPES.values() if t.task is not None} <= covered


def make_task(name, extra=""):
    return tasks.get(name, overrides=[EXPERIMENTS[name], TRAINER, extra])


def first_batch(task, split="validation"):
    batch = next(iter(task.build_inputs(split)))
    return batch[0] if isinstance(batch, tuple) else batch


def outputs_of(model, batch):
    return tf.nest.map_structure(np.asarray, model(batch, training=False))


def assert_same_outputs(a, b, atol=0.0):
    for x, y in zip(tf.nest.flatten(a), tf.nest.flatten(b)):
        np.testing.assert_allclose(x, y, atol=atol, rtol=0)


@pytest.fixture(scope="module", params=sorted(EXPERIMENTS))
def built(request):
    task = make_task(request.param)
    model = task.build_model()
    return request.param, task, model


def test_config_round_trip_gives_the_same_model(built):
    _, task, model = built
    rebuilt = type(model).from_config(model.get_config())
    assert rebuilt.get_config() == model.get_config()
    rebuilt.set_weights(model.get_weights())
    batch = first_batch(task)
    assert_same_outputs(outputs_of(model, batch), outputs_of(rebuilt, batch))


def test_keras_file_round_trip_keeps_weights_and_preprocessing(built, tmp_path):
    _, task, model = built
    path = str(tmp_path / "model.keras")
    model.save(path)
    restored = keras.models.load_model(path)
    batch = first_batch(task)
    assert_same_outputs(outputs_of(model, batch), outputs_of(restored, batch))
    assert restored.tokenizer.get_vocabulary() == model.tokenizer.get_vocabulary()


def test_batches_of_different_lengths_run_through_one_compiled_predict(built):
    _, task, model = built
    lengths = set()
    for batch in task.build_inputs("train").take(6):
        inputs = batch[0] if isinstance(batch, tuple) else batch
        lengths.add(int(tf.shape(tf.nest.flatten(inputs)[0])[1]))
        outputs = model.predict_on_batch(inputs)
        assert all(np.isfinite(np.asarray(o)).all() for o in tf.nest.flatten(outputs))
    assert lengths, "no batches"


# Each type trains under MirroredStrategy in float32 here, and under the default
# strategy in bfloat16 below: both strategies and both precisions, on any CPU.
@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_a_float32_fit_step_under_mirrored_strategy(name, mirrored_strategy, tmp_path):
    task = make_task(name, "runtime.mixed_precision=float32")
    results = trainer.run_experiment(task, "train_and_eval", str(tmp_path), strategy=mirrored_strategy)
    assert results["step"] == 2
    assert np.isfinite(results["metrics"]["loss"])


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_mixed_bfloat16_trains_and_stays_close_to_float32(name, tmp_path):
    task = make_task(name, "runtime.mixed_precision=mixed_bfloat16")
    results = trainer.run_experiment(task, "train_and_eval", str(tmp_path))
    assert keras.mixed_precision.global_policy().name == "float32"  # the caller's policy is back
    assert np.isfinite(results["metrics"]["loss"])
    with precision("mixed_bfloat16"):
        model = trainer.load_trained(task, str(tmp_path))
    assert model.compute_dtype == "bfloat16"
    reference = trainer.load_trained(task, str(tmp_path))
    batch = first_batch(task)
    for low, full in zip(tf.nest.flatten(outputs_of(model, batch)), tf.nest.flatten(outputs_of(reference, batch))):
        assert low.dtype == np.float32  # outputs stay float32 for losses and exports
        scale = max(1.0, float(np.abs(full).max()))
        assert np.abs(low - full).max() < 0.1 * scale


def _served_models():
    for name in sorted(EXPERIMENTS):
        yield name
    yield "encoder"


def _model_and_examples(name):
    if name == "encoder":  # a type with a serving head and no task
        preprocessor = BertPreprocessor(WordPieceTokenizer(VOCAB), 16)
        model = BertEncoder.from_preset("bert_tiny", vocab_size=preprocessor.tokenizer.vocabulary_size(), preprocessor=preprocessor)
        return model, {"text": ["the film was fine", "", "a long and winding story about nothing"]}
    task = make_task(name)
    model = task.build_model()
    examples = task.held_out_examples(3) or {
        tasks.serving_head(model).inputs[0]: ["the film was fine", "", "a long and winding story"]
    }
    return model, examples


@pytest.mark.parametrize("name", list(_served_models()))
def test_saved_model_answers_like_the_keras_model(name, tmp_path):
    model, examples = _model_and_examples(name)
    head = tasks.serving_head(model)
    path = export.saved_model(model, str(tmp_path), warmup_examples=examples)
    report = report_lib.build_report(
        head, [report_lib.Artifact("saved_model", path, report_lib.saved_model_predict(path), dict(report_lib.SAVED_MODEL_BAR))], examples, latency_runs=1
    )
    row = report["artifacts"][1]
    assert row["failures"] == [], row
    assert row["agreement"] in (None, 1.0)


@pytest.mark.parametrize("name", list(_served_models()))
def test_tflite_where_the_serving_head_has_a_function(name, tmp_path):
    model, examples = _model_and_examples(name)
    head = tasks.serving_head(model)
    try:
        head.tflite_function("ids", 16)
    except UnsupportedExport:
        with pytest.raises(UnsupportedExport):
            export.tflite(model, str(tmp_path / "m.tflite"))
        return
    path = export.tflite(model, str(tmp_path / "m.tflite"))
    runner = export.TFLiteModel(path)
    outputs = runner(*(examples[name] for name in head.inputs))
    reference = head.reference(head.report_examples(examples))
    for key, value in outputs.items():
        expected = reference[key]
        if value.ndim >= 2 and value.shape[1] != expected.shape[1]:
            # Per-token outputs: TFLite pads to its static seq_length, the
            # SavedModel to the longest text; the positions both have must agree.
            assert value.shape[1] == 16 and expected.shape[1] < 16, (value.shape, expected.shape)
            value = value[:, : expected.shape[1]]
        np.testing.assert_allclose(value, expected, atol=1e-4)


def test_the_toy_type_learns_its_rule_and_exports_with_no_edit_elsewhere(tmp_path):
    task = tasks.get("toy/tagging", overrides=EXPERIMENTS["toy/tagging"] + ",trainer.optimizer.learning_rate=3e-3")
    before = trainer.run_experiment(task, "eval", str(tmp_path / "untrained"))["metrics"]["accuracy"]
    after = trainer.run_experiment(task, "train_and_eval", str(tmp_path / "run"))["metrics"]["accuracy"]
    assert after > max(before + 0.2, 0.6), (before, after)
    model = trainer.load_trained(task, str(tmp_path / "run"))
    report = export.export_model(model, str(tmp_path / "export"), task.held_out_examples(8), formats=("saved_model",))
    assert report_lib.failures(report) == []
    loaded = export.load(report["artifacts"][1]["path"])
    tags = loaded.signatures["serving_default"](text=tf.constant(["an apple", "an apple and a pear"]))["tags"]
    assert tags.shape[1] < 32  # padded to the request's longest text, not seq_length
    assert tags[0, 0] == 0 and tags[0, -1] == -1  # [CLS]; the shorter text's padding
