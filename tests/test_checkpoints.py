"""Pretrained checkpoints: parity with transformers and keras-nlp, tfplm's format, refusals.

Reference outputs come from tests/fixtures (made with transformers by
tools/make_reference_fixtures.py and tools/make_minilm_reference.py).
"""

import json
import os
import pathlib
import pickle
import shutil

import numpy as np
import pytest
import tensorflow as tf

from tfplm.models import GPT, BertClassifier, BertEncoder, BertPretrainer
from tfplm.models import pretrained
from tfplm.models.checkpoints import CheckpointError
from tfplm.tokenizers import GPT2Tokenizer, WordPieceTokenizer

FIXTURES = pathlib.Path(__file__).resolve().parent / "fixtures"

WORDPIECE_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "sat", "on", "mat", "##s", "a", "."]
GPT2_VOCAB = {"<|endoftext|>": 0, "a": 1, "b": 2, "c": 3, "Ġ": 4, "Ġa": 5, "ab": 6, "Ġab": 7, "Ġb": 8, "Ġc": 9}
GPT2_MERGES = ["Ġ a", "a b", "Ġa b", "Ġ b", "Ġ c"]


def fixture(name):
    path = FIXTURES / name
    if not path.exists():
        pytest.fail(f"fixture {path} is missing; create it with tools/make_reference_fixtures.py")
    return path


def randomize(model, seed=0):
    """Random values in every weight, so a wrong transpose or mapping cannot pass."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        variable.assign(rng.normal(0.0, 0.2, variable.shape).astype("float32"))
    return model


def bert_inputs(vocab_size, batch=2, length=9, seed=1):
    rng = np.random.default_rng(seed)
    mask = np.ones((batch, length), "int32")
    mask[0, 6:] = 0
    types = np.zeros((batch, length), "int32")
    types[:, 4:] = 1
    return {
        "input_word_ids": rng.integers(0, vocab_size, (batch, length)).astype("int32"),
        "input_mask": mask,
        "input_type_ids": types,
    }


def to_numpy(structure):
    return tf.nest.map_structure(lambda t: np.asarray(t), structure)


def _without_names(config):
    if isinstance(config, dict):
        return {k: _without_names(v) for k, v in config.items() if k != "name"}
    return config


def tiny_bert(vocab_size=len(WORDPIECE_VOCAB)):
    return BertEncoder(
        vocab_size=vocab_size, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32, max_length=24
    )


def tiny_gpt(vocab_size=len(GPT2_VOCAB)):
    return GPT(vocab_size=vocab_size, hidden_size=16, num_layers=2, num_heads=2, intermediate_size=32, max_length=24)


# --- tfplm's own format ------------------------------------------------------

ROUND_TRIP = {
    "BertEncoder": (lambda: tiny_bert(), lambda v: bert_inputs(v)),
    "BertPretrainer": (
        lambda: BertPretrainer(tiny_bert()),
        lambda v: {**bert_inputs(v), "masked_lm_positions": np.array([[1, 2], [3, 0]], "int32")},
    ),
    "BertClassifier": (lambda: BertClassifier(tiny_bert(), 3, dropout=0.2), lambda v: bert_inputs(v)),
    "GPT": (
        lambda: tiny_gpt(),
        lambda v: {"token_ids": np.arange(10, dtype="int32").reshape(2, 5) % v, "padding_mask": np.ones((2, 5), "int32")},
    ),
}


@pytest.mark.parametrize("class_name", sorted(ROUND_TRIP))
def test_save_then_load_gives_bit_identical_outputs_and_tokenizer(class_name, tmp_path):
    build, make_inputs = ROUND_TRIP[class_name]
    model = randomize(build())
    if class_name == "GPT":
        model.tokenizer = GPT2Tokenizer(dict(GPT2_VOCAB), list(GPT2_MERGES))
        text = ["ab a b c", "c ba"]
    else:
        model.tokenizer = WordPieceTokenizer(WORDPIECE_VOCAB, lowercase=False)
        text = ["the cats sat on a mat .", "The cat"]
    inputs = make_inputs(model.tokenizer.vocabulary_size())
    model.save_pretrained(tmp_path / "ckpt", seq_length=12)

    restored = type(model).from_pretrained(tmp_path / "ckpt")
    assert type(restored) is type(model)
    tf.nest.map_structure(np.testing.assert_array_equal, to_numpy(model(inputs)), to_numpy(restored(inputs)))
    assert _without_names(restored.get_config()) == _without_names(model.get_config())
    assert type(restored.tokenizer) is type(model.tokenizer)
    ids = model.tokenizer.tokenize(tf.constant(text)).to_list()
    assert restored.tokenizer.tokenize(tf.constant(text)).to_list() == ids
    assert min(map(len, ids)) >= 2
    if class_name != "GPT":
        assert restored.tokenizer.lowercase is False  # the tokenizer config travels too
        assert restored.preprocessor.seq_length == 12
        packed = restored.preprocessor(tf.constant(text))
        assert packed["input_word_ids"].shape == (2, 12)
    # Nothing but the checkpoint is left next to it (the temp dir was renamed).
    assert os.listdir(tmp_path) == ["ckpt"]


def test_generic_from_pretrained_returns_the_saved_class(tmp_path):
    model = randomize(BertClassifier(tiny_bert(), 2))
    model.save_pretrained(tmp_path / "ckpt")
    restored = pretrained.from_pretrained(tmp_path / "ckpt")
    assert isinstance(restored, BertClassifier) and restored.num_classes == 2


def test_classifier_from_an_encoder_checkpoint_gets_a_new_head_and_the_encoder_weights(tmp_path):
    encoder = randomize(tiny_bert())
    encoder.save_pretrained(tmp_path / "encoder")
    with pytest.raises(CheckpointError, match="num_classes"):
        BertClassifier.from_pretrained(tmp_path / "encoder")
    classifier, report = pretrained.load_pretrained(tmp_path / "encoder", "BertClassifier", num_classes=4)
    assert report.initialized == ["classifier/logits/kernel", "classifier/logits/bias"]
    inputs = bert_inputs(encoder.vocab_size)
    np.testing.assert_array_equal(encoder(inputs)["pooled_output"], classifier.encoder(inputs)["pooled_output"])
    assert classifier(inputs).shape == (2, 4)


def test_loading_a_pretrainer_checkpoint_into_an_encoder_reports_the_unused_heads(tmp_path):
    model = randomize(BertPretrainer(tiny_bert()))
    model.save_pretrained(tmp_path / "ckpt")
    encoder, report = pretrained.load_pretrained(tmp_path / "ckpt", "BertEncoder")
    assert sorted(report.unused) == sorted(w.path for w in model.weights if w.path.startswith(("masked_lm", "next_")))
    assert len(report.mapped) == len(encoder.weights)


def test_saving_over_a_checkpoint_replaces_it_but_never_a_foreign_directory(tmp_path):
    first, second = randomize(tiny_bert(), seed=1), randomize(tiny_bert(), seed=2)
    first.save_pretrained(tmp_path / "ckpt")
    second.save_pretrained(tmp_path / "ckpt")
    restored = BertEncoder.from_pretrained(tmp_path / "ckpt")
    np.testing.assert_array_equal(restored.weights[0].numpy(), second.weights[0].numpy())
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ValueError, match="not a tfplm checkpoint"):
        first.save_pretrained(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert sorted(os.listdir(tmp_path)) == ["ckpt", "mine"]


def test_a_crash_while_saving_leaves_no_partial_checkpoint(tmp_path, monkeypatch):
    import safetensors.numpy

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.numpy, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        tiny_bert().save_pretrained(tmp_path / "ckpt")
    assert os.listdir(tmp_path) == []


# --- errors --------------------------------------------------------------------


def _malicious_pickle(path, marker):
    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    path.write_bytes(pickle.dumps(Payload()))


def test_pickled_checkpoints_are_refused_unopened(tmp_path):
    directory = tmp_path / "hf"
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps({"model_type": "bert"}))
    marker = tmp_path / "pwned"
    _malicious_pickle(directory / "pytorch_model.bin", marker)
    for path in (directory, directory / "pytorch_model.bin"):
        with pytest.raises(CheckpointError, match=r"pickle.*safe_serialization=True"):
            BertEncoder.from_pretrained(path)
    _malicious_pickle(tmp_path / "model.pkl", marker)
    with pytest.raises(CheckpointError, match="never unpickles"):
        pretrained.from_pretrained(tmp_path / "model.pkl")
    assert not marker.exists()


def _edit_tfplm_config(directory, **changes):
    spec = json.loads((directory / pretrained.FORMAT_FILE).read_text())
    spec["config"].update(changes)
    (directory / pretrained.FORMAT_FILE).write_text(json.dumps(spec))


def test_a_shape_mismatch_names_the_first_mismatching_weight(tmp_path):
    tiny_bert().save_pretrained(tmp_path / "ckpt")
    _edit_tfplm_config(tmp_path / "ckpt", intermediate_size=48)
    with pytest.raises(CheckpointError, match=r"'block_0/feed_forward/intermediate/kernel' .*\(16, 48\)"):
        BertEncoder.from_pretrained(tmp_path / "ckpt")


def test_a_missing_weight_is_named(tmp_path):
    from safetensors.numpy import load_file, save_file

    tiny_bert().save_pretrained(tmp_path / "ckpt")
    weights = load_file(tmp_path / "ckpt" / pretrained.WEIGHTS_FILE)
    del weights["block_1/self_attention/value/bias"]
    save_file(weights, tmp_path / "ckpt" / pretrained.WEIGHTS_FILE)
    with pytest.raises(CheckpointError, match="no tensor for weight 'block_1/self_attention/value/bias'"):
        BertEncoder.from_pretrained(tmp_path / "ckpt")


def test_weights_the_config_has_no_place_for_are_an_error_not_dropped(tmp_path):
    tiny_bert().save_pretrained(tmp_path / "ckpt")
    _edit_tfplm_config(tmp_path / "ckpt", num_layers=1)
    with pytest.raises(CheckpointError, match="tensor 'block_1/[^']*' has no place"):
        BertEncoder.from_pretrained(tmp_path / "ckpt")


def test_a_bert_checkpoint_does_not_load_into_gpt(tmp_path):
    tiny_bert().save_pretrained(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="bert model"):
        GPT.from_pretrained(tmp_path / "ckpt")


def test_an_unknown_directory_says_what_was_expected(tmp_path):
    with pytest.raises(CheckpointError, match="bert_config.json"):
        BertEncoder.from_pretrained(tmp_path)


# --- keras-nlp presets -----------------------------------------------------------


@pytest.fixture(scope="module")
def keras_hub():
    import keras_hub

    return keras_hub


def test_keras_nlp_bert_backbone_preset_matches_keras_nlp(keras_hub, tmp_path):
    backbone = randomize(
        keras_hub.models.BertBackbone(
            vocabulary_size=50, num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=24
        )
    )
    backbone.save_to_preset(str(tmp_path / "preset"))
    inputs = bert_inputs(50)
    expected = backbone(
        {"token_ids": inputs["input_word_ids"], "segment_ids": inputs["input_type_ids"], "padding_mask": inputs["input_mask"]}
    )
    encoder, report = pretrained.load_pretrained(tmp_path / "preset", "BertEncoder")
    assert report.source_format == "keras_nlp" and report.unused == {}
    assert encoder.activation == "gelu_approximate" and encoder.num_layers == 2
    outputs = encoder(inputs)
    for name in ("sequence_output", "pooled_output"):
        diff = np.abs(np.asarray(outputs[name]) - np.asarray(expected[name])).max()
        assert diff < 1e-5, (name, diff)
    assert encoder.tokenizer is None  # a backbone-only preset ships no tokenizer


def test_keras_nlp_bert_classifier_task_preset_loads_head_and_tokenizer(keras_hub, tmp_path):
    vocab = WORDPIECE_VOCAB
    backbone = keras_hub.models.BertBackbone(
        vocabulary_size=len(vocab), num_layers=1, num_heads=2, hidden_dim=16, intermediate_dim=32, max_sequence_length=24
    )
    tokenizer = keras_hub.models.BertTokenizer(vocabulary=vocab, lowercase=True)
    preprocessor = keras_hub.models.BertTextClassifierPreprocessor(tokenizer, sequence_length=10)
    task = keras_hub.models.BertTextClassifier(backbone, num_classes=3, preprocessor=preprocessor, dropout=0.0)
    randomize(task)
    task.save_to_preset(str(tmp_path / "preset"))
    text = tf.constant(["The cats sat on a mat.", "a cat"])
    expected = task.predict(text, verbose=0)

    classifier = BertClassifier.from_pretrained(tmp_path / "preset", seq_length=10)
    assert classifier.num_classes == 3
    inputs = classifier.preprocessor(text)
    reference_inputs = preprocessor(text)
    np.testing.assert_array_equal(inputs["input_word_ids"], reference_inputs["token_ids"])
    diff = np.abs(np.asarray(classifier(inputs)) - expected).max()
    assert diff < 1e-5, diff


def test_keras_nlp_gpt2_preset_matches_keras_nlp_logits_and_tokenizer(keras_hub, tmp_path):
    backbone = randomize(
        keras_hub.models.GPT2Backbone(
            vocabulary_size=len(GPT2_VOCAB), num_layers=2, num_heads=2, hidden_dim=16, intermediate_dim=32,
            max_sequence_length=24,
        )
    )
    tokenizer = keras_hub.models.GPT2Tokenizer(vocabulary=dict(GPT2_VOCAB), merges=list(GPT2_MERGES))
    causal_lm = keras_hub.models.GPT2CausalLM(
        backbone, preprocessor=keras_hub.models.GPT2CausalLMPreprocessor(tokenizer, sequence_length=8)
    )
    causal_lm.save_to_preset(str(tmp_path / "preset"))
    ids = np.array([[1, 5, 2, 9, 3, 0], [4, 7, 8, 6, 0, 0]], "int32")
    mask = np.array([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0]], "int32")
    hidden = backbone({"token_ids": ids, "padding_mask": mask})
    expected = np.asarray(backbone.token_embedding(hidden, reverse=True))

    gpt = GPT.from_pretrained(tmp_path / "preset")
    logits = np.asarray(gpt({"token_ids": ids, "padding_mask": mask}))
    real = mask.astype(bool)
    diff = np.abs(logits[real] - expected[real]).max()
    assert diff < 1e-5, diff
    text = ["ab a b c", " cab"]
    assert gpt.tokenizer.tokenize(tf.constant(text)).to_list() == [np.asarray(tokenizer(t)).tolist() for t in text]


# --- a real checkpoint: all-MiniLM-L6-v2 (Hugging Face BertModel, uncased) ------


@pytest.fixture(scope="module")
def minilm(minilm_dir):
    encoder, report = pretrained.load_pretrained(minilm_dir, "BertEncoder", seq_length=32)
    return encoder, report


@pytest.fixture(scope="module")
def minilm_reference():
    return dict(np.load(fixture("minilm_reference.npz")))


def test_minilm_loads_every_weight_and_reports_only_the_position_ids_buffer(minilm):
    encoder, report = minilm
    assert (encoder.num_layers, encoder.hidden_size, encoder.num_heads) == (6, 384, 12)
    assert len(report.mapped) == len(encoder.weights) == 103
    assert list(report.unused) == ["embeddings.position_ids"]
    assert encoder.tokenizer.lowercase is True  # from tokenizer_config.json's do_lower_case


def test_minilm_tokenizer_gives_the_ids_of_the_checkpoints_tokenizer_json(minilm, minilm_dir, minilm_reference):
    import tokenizers as hf_tokenizers

    encoder, _ = minilm
    sentences = [str(s) for s in minilm_reference["sentences"]]
    reference = hf_tokenizers.Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    reference.no_padding()
    reference.no_truncation()
    packed = encoder.preprocessor(tf.constant(sentences))
    ours = [row[: int(n)].tolist() for row, n in zip(packed["input_word_ids"].numpy(), packed["input_mask"].numpy().sum(1))]
    assert ours == [e.ids for e in reference.encode_batch(sentences)]
    np.testing.assert_array_equal(packed["input_word_ids"], minilm_reference["input_ids"])
    assert len(sentences) >= 50


def test_minilm_hidden_states_match_transformers_on_real_sentences(minilm, minilm_reference):
    encoder, _ = minilm
    sentences = [str(s) for s in minilm_reference["sentences"]]
    outputs = encoder(encoder.preprocessor(tf.constant(sentences)))
    real = np.arange(32)[None, :] < minilm_reference["lengths"][:, None]
    hidden_diff = np.abs(outputs["sequence_output"].numpy()[real] - minilm_reference["last_hidden"]).max()
    pooled_diff = np.abs(outputs["pooled_output"].numpy() - minilm_reference["pooled"]).max()
    print(f"MiniLM max abs diff: last hidden {hidden_diff:.2e}, pooled {pooled_diff:.2e}")
    assert hidden_diff < 1e-4 and pooled_diff < 1e-4, (hidden_diff, pooled_diff)
