"""SavedModel export: raw-text signatures match the Keras model, TF Serving's contract, TF Hub's BERT interface."""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfplm import export, models, tasks
from tfplm.export import serving as serving_lib
from tfplm.tasks.causal_lm import SAMPLERS
from tfplm.tasks.masked_lm import MaskedLMHead
from tfplm.tokenizers import BertPreprocessor

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"
LABELS = ["negative", "positive"]
SEQ_LENGTH = 32
# Inputs a served model must survive.
HOSTILE = [
    "",
    "   \t\n ",
    "very long " * 10_000,
    b"invalid \xff\xfe utf-8 \xc3",
    "日本語のテキスト 😀 e\u0301te\u0301 Ångström",
    "[MASK] [SEP] [CLS] [PAD]",
]


@pytest.fixture(scope="module")
def sentences(test_data_dir):
    lines = (test_data_dir / "sentences.txt").read_text(encoding="utf-8").splitlines()
    return [line for line in lines if line.strip()][:40]


def encoder():
    return models.BertEncoder.from_pretrained(str(FIXTURES / "hf_bert"), seq_length=SEQ_LENGTH)


def bert_classifier(num_classes, pair=False, label_names=None):
    """The fixture's encoder with a new classifier head whose outputs differ per class."""
    bert = encoder()
    preprocessor = BertPreprocessor(bert.tokenizer, SEQ_LENGTH, pair=pair)
    model = models.BertClassifier(bert, num_classes, preprocessor=preprocessor, label_names=label_names)
    head = model.head.weights[0]
    head.assign(np.random.default_rng(0).normal(0, 0.5, head.shape).astype("float32"))
    return model


@pytest.fixture(scope="module")
def classifier():
    return bert_classifier(2, label_names=LABELS)


@pytest.fixture(scope="module")
def classifier_export(classifier, tmp_path_factory):
    return export.saved_model(classifier, tmp_path_factory.mktemp("serving"), model_name="sst2")


def keras_probabilities(model, texts, texts_b=None):
    segments = (tf.constant(texts),) if texts_b is None else (tf.constant(texts), tf.constant(texts_b))
    return tf.nn.softmax(model(model.preprocessor(segments))).numpy()


def run_in_fresh_process(script, *args):
    """Runs `script` with only tensorflow + tensorflow_text imported; returns its JSON output."""
    result = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


_FRESH_CLASSIFY = """
import json, sys
import tensorflow as tf
import tensorflow_text  # registers the tokenizer ops: all a server needs
loaded = tf.saved_model.load(sys.argv[1])
out = loaded.signatures["serving_default"](text=tf.constant(json.loads(sys.argv[2])))
assert "tfplm" not in sys.modules
print(json.dumps({k: v.numpy().tolist() if v.dtype != tf.string else [s.decode() for s in v.numpy()] for k, v in out.items()}))
"""


def test_a_fresh_process_with_only_tensorflow_text_gives_the_keras_probabilities(classifier, classifier_export, sentences):
    out = run_in_fresh_process(_FRESH_CLASSIFY, classifier_export, json.dumps(sentences))
    expected = keras_probabilities(classifier, sentences)
    assert np.abs(np.array(out["probabilities"]) - expected).max() <= 1e-5
    np.testing.assert_array_equal(out["label_id"], expected.argmax(-1))
    assert out["label"] == [LABELS[i] for i in expected.argmax(-1)]
    assert len(set(out["label"])) == 2  # the test can tell labels apart


def test_serve_tokenized_and_serve_examples_agree_with_serving_default(classifier, classifier_export, sentences):
    loaded = export.load(classifier_export)
    text = tf.constant(sentences[:8])
    default = loaded.signatures["serving_default"](text=text)
    packed = classifier.preprocessor((text,))
    tokenized = loaded.signatures["serve_tokenized"](**packed)
    np.testing.assert_allclose(tokenized["probabilities"], default["probabilities"], atol=1e-6)
    examples = [
        tf.train.Example(features=tf.train.Features(feature={"text": tf.train.Feature(bytes_list=tf.train.BytesList(value=[s.encode()]))})).SerializeToString()
        for s in sentences[:8]
    ]
    classified = loaded.signatures["serve_examples"](inputs=tf.constant(examples))
    np.testing.assert_allclose(classified["scores"], default["probabilities"], atol=1e-6)
    assert classified["classes"].numpy().tolist() == [[b"negative", b"positive"]] * 8


def test_hostile_inputs_give_well_formed_outputs(classifier_export):
    loaded = export.load(classifier_export)
    batch = tf.constant(HOSTILE)
    for texts in [batch] + [batch[i : i + 1] for i in range(len(HOSTILE))]:
        out = loaded.signatures["serving_default"](text=texts)
        probabilities = out["probabilities"].numpy()
        assert probabilities.shape == (len(texts), 2)
        assert np.isfinite(probabilities).all()
        np.testing.assert_allclose(probabilities.sum(-1), 1.0, atol=1e-5)
        assert set(out["label"].numpy()) <= {b"negative", b"positive"}


def saved_model_cli(*args):
    """Runs saved_model_cli with the tensorflow_text ops loaded into its process (`run` needs them)."""
    script = (
        "import sys, tensorflow_text; from tensorflow.python.tools import saved_model_cli; "
        "sys.argv[0] = 'saved_model_cli'; saved_model_cli.main()"
    )
    return subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )


def test_saved_model_cli_shows_the_serving_methods_and_runs_raw_text(classifier_export):
    show = saved_model_cli("show", "--dir", classifier_export, "--all")
    assert show.returncode == 0, show.stderr[-2000:]
    signatures = show.stdout.split("signature_def['")
    by_name = {part.split("'")[0]: part for part in signatures[1:]}
    assert {"serving_default", "serve_tokenized", "serve_examples"} <= set(by_name)
    assert "Method name is: tensorflow/serving/classify" in by_name["serve_examples"]
    assert "Method name is: tensorflow/serving/predict" in by_name["serving_default"]
    assert "inputs['text'] tensor_info:\n        dtype: DT_STRING" in by_name["serving_default"]
    run = saved_model_cli(
        "run", "--dir", classifier_export, "--tag_set", "serve", "--signature_def", "serving_default",
        "--input_exprs", "text=['a gorgeous film','a dull film']",
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "probabilities" in run.stdout and "label" in run.stdout


def _signature_inputs(loaded, name):
    return loaded.signatures[name].structured_input_signature[1]


def check_warmup_requests(path, model_name):
    """Every warmup request names its model and a signature, matches that signature's inputs and
    runs; returns {signature: kind of request}."""
    from tensorflow_serving.apis import prediction_log_pb2

    loaded = export.load(path)
    warmup = os.path.join(path, "assets.extra", "tf_serving_warmup_requests")
    records = [prediction_log_pb2.PredictionLog.FromString(r.numpy()) for r in tf.data.TFRecordDataset(warmup)]
    kinds = {}
    for log in records:
        kind = log.WhichOneof("log_type")
        request = getattr(log, kind).request
        assert request.model_spec.name == model_name
        name = request.model_spec.signature_name
        specs = _signature_inputs(loaded, name)
        kinds[name] = kind
        if kind == "predict_log":
            assert set(request.inputs) == set(specs)
            inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
            for key, spec in specs.items():
                assert tf.as_dtype(request.inputs[key].dtype) == spec.dtype, key
            outputs = loaded.signatures[name](**{k: tf.constant(v) for k, v in inputs.items()})
        else:
            examples = [e.SerializeToString() for e in request.input.example_list.examples]
            assert examples and set(specs) == {"inputs"}
            outputs = loaded.signatures[name](inputs=tf.constant(examples))
        assert all(np.isfinite(v.numpy()).all() for v in outputs.values() if v.dtype.is_floating)
    return kinds


def test_warmup_requests_match_their_signatures_and_run(classifier_export):
    kinds = check_warmup_requests(classifier_export, "sst2")
    assert kinds == {"serving_default": "predict_log", "serve_tokenized": "predict_log", "serve_examples": "classify_log"}


def test_versions_auto_increment_and_an_existing_version_is_never_overwritten(classifier, tmp_path):
    first = export.saved_model(classifier, tmp_path, model_name="m")
    second = export.saved_model(classifier, tmp_path, model_name="m")
    assert [os.path.basename(first), os.path.basename(second)] == ["1", "2"]
    with pytest.raises(ValueError, match="exists"):
        export.saved_model(classifier, tmp_path, model_name="m", version=2)
    assert sorted(os.listdir(tmp_path / "m")) == ["1", "2"]


def test_a_failed_export_leaves_nothing_a_server_could_load(classifier, tmp_path, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(serving_lib, "_warmup_records", crash)
    with pytest.raises(RuntimeError, match="disk full"):
        export.saved_model(classifier, tmp_path, model_name="m")
    assert os.listdir(tmp_path / "m") == []


def test_a_model_without_tokenizer_is_refused_with_the_fix(tmp_path):
    encoder = models.BertEncoder.from_preset("bert_tiny", vocab_size=50)
    with pytest.raises(ValueError, match="no tokenizer.*from_pretrained"):
        export.saved_model(encoder, tmp_path)
    seq2seq = models.Seq2SeqTransformer.from_preset("transformer_tiny", vocab_size=50)
    with pytest.raises(ValueError, match="no tokenizer.*from_pretrained"):
        export.saved_model(seq2seq, tmp_path)
    assert os.listdir(tmp_path) == []


def test_a_model_no_task_type_serves_is_refused_with_the_served_classes(tmp_path):
    unserved = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    with pytest.raises(ValueError, match="no task type serves a Sequential; registered models: .*BertClassifier"):
        export.saved_model(unserved, tmp_path)
    assert os.listdir(tmp_path) == []


def test_load_without_tensorflow_text_says_how_to_fix_it(classifier_export, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_text", None)  # import fails as if not installed
    with pytest.raises(ImportError, match="pip install tensorflow-text"):
        export.load(classifier_export)


def test_sentence_pairs_take_text_b(tmp_path, sentences):
    model = bert_classifier(3, pair=True)
    loaded = export.load(export.saved_model(model, tmp_path))
    assert set(_signature_inputs(loaded, "serving_default")) == {"text", "text_b"}
    a, b = sentences[:6], sentences[6:12]
    out = loaded.signatures["serving_default"](text=tf.constant(a), text_b=tf.constant(b))
    assert np.abs(out["probabilities"].numpy() - keras_probabilities(model, a, b)).max() <= 1e-5
    assert set(out["label"].numpy()) <= {b"0", b"1", b"2"}


def test_a_regressor_serves_scores_and_the_regress_method(tmp_path, sentences):
    model = bert_classifier(1, pair=True)
    path = export.saved_model(model, tmp_path)
    loaded = export.load(path)
    a, b = tf.constant(sentences[:5]), tf.constant(sentences[5:10])
    out = loaded.signatures["serving_default"](text=a, text_b=b)
    expected = model(model.preprocessor((a, b))).numpy()[:, 0]
    assert np.abs(out["score"].numpy() - expected).max() <= 1e-5
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel.FromString(open(os.path.join(path, "saved_model.pb"), "rb").read())
    signature = proto.meta_graphs[0].signature_def["serve_examples"]
    assert signature.method_name == "tensorflow/serving/regress"
    assert list(signature.inputs) == ["inputs"] and list(signature.outputs) == ["outputs"]


def test_an_encoder_serves_pooled_and_sequence_outputs(tmp_path, sentences):
    model = encoder()
    loaded = export.load(export.saved_model(model, tmp_path))
    out = loaded.signatures["serving_default"](text=tf.constant(sentences[:5]))
    expected = model(model.preprocessor(tf.constant(sentences[:5])))
    for name in ("pooled_output", "sequence_output"):
        assert np.abs(out[name].numpy() - expected[name].numpy()).max() <= 1e-5, name


def test_a_masked_lm_serves_the_top_k_tokens_for_each_mask(tmp_path):
    model = models.BertPretrainer(encoder())
    k = MaskedLMHead.top_k
    loaded = export.load(export.saved_model(model, tmp_path))
    texts = ["the [MASK] sat on the [MASK] .", "no mask here", "[MASK]"]
    out = loaded.signatures["serving_default"](text=tf.constant(texts))
    packed = model.preprocessor(tf.constant(texts))
    ids = packed["input_word_ids"].numpy()
    mask_id = model.tokenizer.mask_token_id
    positions = out["masked_positions"].numpy()
    assert positions.shape == (3, 2)
    for row in range(3):
        expected_positions = np.flatnonzero(ids[row] == mask_id)
        np.testing.assert_array_equal(positions[row][: len(expected_positions)], expected_positions)
        assert (positions[row][len(expected_positions) :] == -1).all()
        if len(expected_positions):
            inputs = {k: v[row : row + 1] for k, v in packed.items()}
            logits = model({**inputs, "masked_lm_positions": tf.constant(expected_positions[None], tf.int32)}, training=False)["mlm_logits"]
            expected_top = np.argsort(-logits.numpy()[0], axis=-1)[:, :k]
            np.testing.assert_array_equal(out["top_k_ids"].numpy()[row][: len(expected_positions)], expected_top)
            tokens = [[t.decode() for t in r] for r in out["top_k_tokens"].numpy()[row][: len(expected_positions)]]
            assert tokens == [[model.tokenizer.id_to_token(int(i)) for i in r] for r in expected_top]
    assert (out["top_k_ids"].numpy()[1] == -1).all() and (out["top_k_probabilities"].numpy()[1] == 0).all()


# --- GPT: text generation -----------------------------------------------------------


@pytest.fixture(scope="module")
def gpt_export(tmp_path_factory):
    model = models.GPT.from_pretrained(str(FIXTURES / "hf_gpt2"))
    path = export.saved_model(model, tmp_path_factory.mktemp("gpt"), model_name="gpt")
    return model, path, export.load(path)


def generate(loaded, prompts, max_new_tokens=6, sampler="greedy", seed=0, top_k=5, top_p=0.9, num_beams=3):
    return loaded.signatures["generate"](
        prompt=tf.constant(prompts), max_new_tokens=tf.constant(max_new_tokens), sampler=tf.constant(sampler),
        temperature=tf.constant(1.0), top_k=tf.constant(top_k), top_p=tf.constant(top_p),
        num_beams=tf.constant(num_beams), seed=tf.constant(seed),
    )


def prompt_ids(model, prompts):
    """Token ids as `GPT.generate` feeds them: an empty prompt starts from the end token."""
    end = model.tokenizer.end_token_id
    return [row or [end] for row in model.tokenizer.tokenize(tf.constant(prompts)).to_list()]


def test_gpt_generate_signature_equals_gpt_generate(gpt_export):
    model, _, loaded = gpt_export
    prompts = ["Hello world", "The", ""]
    out = generate(loaded, prompts)
    assert [t.decode() for t in out["text"].numpy()] == model.generate(prompts, max_new_tokens=6)
    end = model.tokenizer.end_token_id
    expected = model.generate_ids([model.tokenizer.tokenize(tf.constant("Hello world")).numpy().tolist()], 6, stop_token_id=end)
    np.testing.assert_array_equal(out["token_ids"].numpy()[0][: expected.shape[1]], expected[0])


@pytest.mark.parametrize(
    "sampler,kwargs",
    [("greedy", {}), ("top_k", {"k": 5}), ("top_p", {"p": 0.9}), ("beam", {"num_beams": 3})],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_every_sampler_of_the_generate_signature_equals_gpt_generate_ids(gpt_export, sampler, kwargs):
    model, _, loaded = gpt_export
    prompts = ["Once upon a time", "The sea", ""]
    out = generate(loaded, prompts, max_new_tokens=8, sampler=sampler, seed=7)["token_ids"].numpy()
    expected = model.generate_ids(
        prompt_ids(model, prompts), 8, sampler=sampler, stop_token_id=model.tokenizer.end_token_id, seed=7, **kwargs
    )
    np.testing.assert_array_equal(out, expected)


def test_beam_search_is_served_and_differs_from_greedy_somewhere(gpt_export):
    model, _, loaded = gpt_export
    prompts = ["Once upon a time", "The sea", "It was", "Hello"]
    beam = generate(loaded, prompts, max_new_tokens=8, sampler="beam", num_beams=4)["token_ids"].numpy()
    greedy = generate(loaded, prompts, max_new_tokens=8)["token_ids"].numpy()
    end = model.tokenizer.end_token_id
    np.testing.assert_array_equal(
        beam, model.generate_ids(prompt_ids(model, prompts), 8, sampler="beam", num_beams=4, stop_token_id=end)
    )
    assert not np.array_equal(beam, greedy)  # the beam input is used, not ignored


def test_gpt_sampling_is_seeded_and_bad_parameters_are_clipped_or_refused(gpt_export):
    _, _, loaded = gpt_export
    for sampler in ("top_k", "top_p"):
        a = generate(loaded, ["Hello"], sampler=sampler, seed=1)["token_ids"].numpy()
        b = generate(loaded, ["Hello"], sampler=sampler, seed=1)["token_ids"].numpy()
        np.testing.assert_array_equal(a, b)
    # A prompt longer than the context keeps its end; k beyond the vocabulary is clipped.
    out = generate(loaded, ["word " * 2000], max_new_tokens=3, sampler="top_k", top_k=10**6)
    assert out["token_ids"].shape[1] <= 64
    with pytest.raises(tf.errors.InvalidArgumentError, match="sampler must be one of") as error:
        generate(loaded, ["Hello"], sampler="nucleus")
    assert all(name in str(error.value) for name in SAMPLERS) and "nucleus" in str(error.value)


def test_gpt_serving_default_takes_only_the_prompt(gpt_export):
    model, _, loaded = gpt_export
    # TF Serving's REST row format {"instances": ["..."]} maps each row to the one named input.
    assert set(_signature_inputs(loaded, "serving_default")) == {"prompt"}
    out = loaded.signatures["serving_default"](prompt=tf.constant(["Hello world", ""]))
    head = tasks.serving_head(model)
    expected = head.reference({"prompt": ["Hello world", ""]})["token_ids"]
    np.testing.assert_array_equal(out["token_ids"].numpy(), expected)


def test_saved_model_cli_runs_the_gpt_serving_default_on_a_prompt(gpt_export):
    _, path, _ = gpt_export
    show = saved_model_cli("show", "--dir", path, "--tag_set", "serve", "--signature_def", "serving_default")
    assert show.returncode == 0, show.stderr[-2000:]
    assert "inputs['prompt'] tensor_info:\n      dtype: DT_STRING" in show.stdout
    assert show.stdout.count("tensor_info:") == 3  # one input, outputs text and token_ids
    run = saved_model_cli(
        "run", "--dir", path, "--tag_set", "serve", "--signature_def", "serving_default",
        "--input_exprs", 'prompt=["hello"]',
    )
    assert run.returncode == 0, run.stderr[-2000:]
    assert "text" in run.stdout and "token_ids" in run.stdout and "hello" in run.stdout


def test_gpt_warmup_requests_match_their_signatures_and_run(gpt_export):
    _, path, _ = gpt_export
    assert check_warmup_requests(path, "gpt") == {"serving_default": "predict_log", "generate": "predict_log"}


# --- TF Hub's BERT interface -----------------------------------------------------


@pytest.fixture(scope="module")
def hub_export_dir(tmp_path_factory):
    model = encoder()
    directory = tmp_path_factory.mktemp("hub") / "bert"
    return model, export.hub(model, directory)


def test_hub_preprocessor_and_encoder_match_the_keras_encoder(hub_export_dir, sentences):
    model, (preprocessor_path, encoder_path) = hub_export_dir
    preprocessor, encoder = export.load(preprocessor_path), export.load(encoder_path)
    text = tf.constant(sentences[:6])
    inputs = preprocessor(text)
    expected_inputs = model.preprocessor(text)
    for name in expected_inputs:
        np.testing.assert_array_equal(inputs[name], expected_inputs[name])
    outputs = encoder(inputs, training=False)
    expected = model(expected_inputs)
    assert np.abs(outputs["pooled_output"].numpy() - expected["pooled_output"].numpy()).max() <= 1e-5
    assert len(outputs["encoder_outputs"]) == model.num_layers
    packed = preprocessor.bert_pack_inputs([preprocessor.tokenize(text), preprocessor.tokenize(text[::-1])], seq_length=24)
    reference = model.preprocessor.__class__(model.tokenizer, 24)((text, text[::-1]))
    np.testing.assert_array_equal(packed["input_word_ids"], reference["input_word_ids"])
    assert preprocessor.vocab_file.asset_path.numpy().decode().endswith("vocab.txt")


_HUB_KERAS_LAYER = """
import json, sys
import tensorflow as tf, tensorflow_hub as hub, tensorflow_text  # noqa: F401
import tf_keras
# TF Hub's own BERT example, unchanged but for the paths.
text_input = tf_keras.layers.Input(shape=(), dtype=tf.string)
preprocessor = hub.KerasLayer(sys.argv[1])
encoder = hub.KerasLayer(sys.argv[2], trainable=True)
outputs = encoder(preprocessor(text_input))
model = tf_keras.Model(text_input, outputs["pooled_output"])
pooled = model(tf.constant(json.loads(sys.argv[3]))).numpy()
# ... and the tokenize / bert_pack_inputs variant for sentence pairs.
loaded = hub.load(sys.argv[1])
segments = [tf_keras.layers.Input(shape=(), dtype=tf.string) for _ in range(2)]
tokenize = hub.KerasLayer(loaded.tokenize)
pack = hub.KerasLayer(loaded.bert_pack_inputs, arguments=dict(seq_length=24))
pair_model = tf_keras.Model(segments, encoder(pack([tokenize(s) for s in segments]))["pooled_output"])
pair = pair_model([tf.constant(["a"]), tf.constant(["b"])]).numpy()
print(json.dumps({"pooled": pooled.tolist(), "pair_shape": pair.shape, "trainable": len(encoder.trainable_weights)}))
"""


def test_tf_hub_keras_layer_code_works_unchanged(hub_export_dir, sentences):
    model, (preprocessor_path, encoder_path) = hub_export_dir
    out = run_in_fresh_process(_HUB_KERAS_LAYER, preprocessor_path, encoder_path, json.dumps(sentences[:4]))
    expected = model(model.preprocessor(tf.constant(sentences[:4])))["pooled_output"].numpy()
    assert np.abs(np.array(out["pooled"]) - expected).max() <= 1e-5
    assert out["pair_shape"] == [1, model.hidden_size]
    assert out["trainable"] == len(model.trainable_weights)


def test_a_model_with_dropout_exports_to_tf_hub_and_serving(tmp_path, sentences):
    """Dropout layers hold seed-state variables; exports must track them (a past bug)."""
    tokenizer = encoder().tokenizer
    bert = models.BertEncoder.from_preset(
        "bert_tiny", vocab_size=tokenizer.vocabulary_size(), max_length=64, dropout=0.1,
        preprocessor=BertPreprocessor(tokenizer, 16),
    )
    model = models.BertClassifier(bert, 2, dropout=0.1)
    assert any("seed" in v.path for v in model.variables)  # what the bug was about
    preprocessor_path, encoder_path = export.hub(model, tmp_path / "hub")
    loaded = export.load(encoder_path)
    inputs = export.load(preprocessor_path)(tf.constant(sentences[:4]))
    expected = bert(model.preprocessor(tf.constant(sentences[:4])), training=False)["pooled_output"].numpy()
    assert np.abs(loaded(inputs, training=False)["pooled_output"].numpy() - expected).max() <= 1e-5
    assert np.abs(loaded(inputs, training=True)["pooled_output"].numpy() - expected).max() > 1e-4  # dropout is on
    served = export.load(export.saved_model(model, tmp_path / "serving"))
    out = served.signatures["serving_default"](text=tf.constant(sentences[:4]))["probabilities"].numpy()
    assert np.abs(out - keras_probabilities(model, sentences[:4])).max() <= 1e-5
