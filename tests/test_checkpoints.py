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
from tfplm.tokenizers import BertPreprocessor, GPT2Tokenizer, WordPieceTokenizer

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


def tiny_bert(vocab_size=len(WORDPIECE_VOCAB), preprocessor=None):
    return BertEncoder(
        vocab_size=vocab_size,
        hidden_size=16,
        num_layers=2,
        num_heads=2,
        intermediate_size=32,
        max_length=24,
        preprocessor=preprocessor,
    )


def tiny_gpt(vocab_size=len(GPT2_VOCAB), tokenizer=None):
    return GPT(
        vocab_size=vocab_size,
        hidden_size=16,
        num_layers=2,
        num_heads=2,
        intermediate_size=32,
        max_length=24,
        tokenizer=tokenizer,
    )


def cased_preprocessor():
    """A cased WordPiece preprocessor of length 12 (neither is a default, so both must travel)."""
    return BertPreprocessor(WordPieceTokenizer(WORDPIECE_VOCAB, lowercase=False), seq_length=12)


# --- tfplm's own format ------------------------------------------------------

ROUND_TRIP = {
    "BertEncoder": (lambda: tiny_bert(preprocessor=cased_preprocessor()), lambda v: bert_inputs(v)),
    "BertPretrainer": (
        lambda: BertPretrainer(tiny_bert(), preprocessor=cased_preprocessor()),
        lambda v: {**bert_inputs(v), "masked_lm_positions": np.array([[1, 2], [3, 0]], "int32")},
    ),
    "BertClassifier": (
        lambda: BertClassifier(tiny_bert(), 3, dropout=0.2, preprocessor=cased_preprocessor()),
        lambda v: bert_inputs(v),
    ),
    "GPT": (
        lambda: tiny_gpt(tokenizer=GPT2Tokenizer(dict(GPT2_VOCAB), list(GPT2_MERGES))),
        lambda v: {"token_ids": np.arange(10, dtype="int32").reshape(2, 5) % v, "padding_mask": np.ones((2, 5), "int32")},
    ),
}


@pytest.mark.parametrize("class_name", sorted(ROUND_TRIP))
def test_save_then_load_gives_bit_identical_outputs_and_tokenizer(class_name, tmp_path):
    build, make_inputs = ROUND_TRIP[class_name]
    model = randomize(build())
    text = ["ab a b c", "c ba"] if class_name == "GPT" else ["the cats sat on a mat .", "The cat"]
    inputs = make_inputs(model.tokenizer.vocabulary_size())
    model.save_pretrained(tmp_path / "ckpt")

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
    encoder = BertEncoder.from_pretrained(tmp_path / "ckpt", dropout=0.0)  # a backbone override
    assert encoder.dropout == 0.0 and encoder.attention_dropout == 0.1


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
    from safetensors.numpy import load_file, save_file

    tiny_bert().save_pretrained(tmp_path / "ckpt")
    weights = load_file(tmp_path / "ckpt" / pretrained.WEIGHTS_FILE)
    weights["pooler/dense/kernel"] = np.zeros((16, 8), "float32")
    save_file(weights, tmp_path / "ckpt" / pretrained.WEIGHTS_FILE)
    with pytest.raises(CheckpointError, match=r"'pooler/dense/kernel' has shape \(16, 8\) .*shape \(16, 16\)"):
        BertEncoder.from_pretrained(tmp_path / "ckpt")


def test_a_config_size_that_disagrees_with_its_tensor_is_named_before_the_model_is_built(tmp_path):
    tiny_bert().save_pretrained(tmp_path / "ckpt")
    _edit_tfplm_config(tmp_path / "ckpt", intermediate_size=48)
    with pytest.raises(
        CheckpointError,
        match=r"config intermediate_size=48 but tensor 'block_0/feed_forward/intermediate/kernel' has shape \(16, 32\)",
    ):
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
    from safetensors.numpy import load_file, save_file

    tiny_bert().save_pretrained(tmp_path / "ckpt")
    weights = load_file(tmp_path / "ckpt" / pretrained.WEIGHTS_FILE)
    weights["block_1/self_attention/extra/kernel"] = np.zeros((16, 16), "float32")
    save_file(weights, tmp_path / "ckpt" / pretrained.WEIGHTS_FILE)
    with pytest.raises(CheckpointError, match="tensor 'block_1/self_attention/extra/kernel' has no place"):
        BertEncoder.from_pretrained(tmp_path / "ckpt")


def test_a_config_with_fewer_layers_than_the_weights_names_num_layers(tmp_path):
    tiny_bert().save_pretrained(tmp_path / "ckpt")
    _edit_tfplm_config(tmp_path / "ckpt", num_layers=1)
    with pytest.raises(CheckpointError, match="config num_layers=1 but the checkpoint has 2 blocks"):
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
        print(f"keras-nlp BertBackbone {name} max abs diff: {diff:.2e}")
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
    print(f"keras-nlp BertTextClassifier logits max abs diff: {diff:.2e}")
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
    print(f"keras-nlp GPT2Backbone logits max abs diff: {diff:.2e}")
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


# --- Hugging Face fixtures: parity with transformers' stored outputs ----------------


def max_diff(a, b):
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())


@pytest.fixture(scope="module")
def bert_reference():
    return dict(np.load(fixture("hf_bert_reference.npz")))


@pytest.fixture(scope="module")
def gpt2_reference():
    return dict(np.load(fixture("hf_gpt2_reference.npz")))


def bert_reference_inputs(reference):
    return {k: reference[k] for k in ("input_word_ids", "input_mask", "input_type_ids")}


def assert_encoder_matches(encoder, reference, label):
    """Every layer, the embeddings, the last hidden state and the pooled output within 1e-4."""
    inputs = bert_reference_inputs(reference)
    outputs = encoder(inputs)
    diffs = {
        "embedding_output": max_diff(encoder.embedding(inputs["input_word_ids"], inputs["input_type_ids"]), reference["embedding_output"]),
        **{
            f"layer_{i}": max_diff(layer, reference["encoder_outputs"][i])
            for i, layer in enumerate(outputs["encoder_outputs"])
        },
        "sequence_output": max_diff(outputs["sequence_output"], reference["sequence_output"]),
        "pooled_output": max_diff(outputs["pooled_output"], reference["pooled_output"]),
    }
    assert len(outputs["encoder_outputs"]) == len(reference["encoder_outputs"])
    print(f"{label} max abs diff: {diffs}")
    assert max(diffs.values()) < 1e-4, diffs
    return diffs


def assert_pretrainer_matches(pretrainer, reference, label):
    assert_encoder_matches(pretrainer.encoder, reference, label)
    outputs = pretrainer({**bert_reference_inputs(reference), "masked_lm_positions": reference["masked_lm_positions"]})
    diffs = {
        "mlm_logits": max_diff(outputs["mlm_logits"], reference["mlm_logits"]),
        "nsp_logits": max_diff(outputs["nsp_logits"], reference["nsp_logits"]),
    }
    print(f"{label} heads max abs diff: {diffs}")
    assert max(diffs.values()) < 1e-4, diffs


def test_hf_bert_for_pretraining_matches_transformers(bert_reference):
    pretrainer, report = pretrained.load_pretrained(fixture("hf_bert"), "BertPretrainer")
    assert report.initialized == [] and report.unused == {}  # every tensor of the file is used
    assert_pretrainer_matches(pretrainer, bert_reference, "HF BertForPreTraining")


def test_hf_bert_model_names_load_into_an_encoder(bert_reference):
    encoder = BertEncoder.from_pretrained(fixture("hf_bert_model"))
    assert_encoder_matches(encoder, bert_reference, "HF BertModel")


def test_hf_bert_pretrainer_from_a_checkpoint_without_heads_names_the_missing_weight():
    with pytest.raises(CheckpointError, match=r"no tensor for weight 'masked_lm_head/.*BertEncoder.from_pretrained"):
        BertPretrainer.from_pretrained(fixture("hf_bert_model"))


def test_hf_bert_tokenizer_packs_the_reference_text_to_the_reference_ids(bert_reference):
    pretrainer = BertPretrainer.from_pretrained(fixture("hf_bert"), seq_length=bert_reference["input_word_ids"].shape[1])
    text_b = [str(t) for t in bert_reference["text_b"]]
    packed = {}
    for row, (a, b) in enumerate(zip(bert_reference["text_a"], text_b)):
        segments = (tf.constant([str(a)]), tf.constant([b])) if b else tf.constant([str(a)])
        for key, value in pretrainer.preprocessor(segments).items():
            packed.setdefault(key, []).append(value.numpy()[0])
    ids = np.array(packed["input_word_ids"])
    # The reference replaced the predicted tokens by [MASK]; put the originals back.
    expected = bert_reference["input_word_ids"].copy()
    for row, positions in enumerate(bert_reference["masked_lm_positions"]):
        for position, original, weight in zip(positions, bert_reference["masked_lm_ids"][row], bert_reference["masked_lm_weights"][row]):
            if weight:
                expected[row, position] = original
    np.testing.assert_array_equal(ids, expected)
    np.testing.assert_array_equal(np.array(packed["input_mask"]), bert_reference["input_mask"])
    np.testing.assert_array_equal(np.array(packed["input_type_ids"]), bert_reference["input_type_ids"])


def test_hf_tokenizers_are_rebuilt_from_tokenizer_json_alone(tmp_path, bert_reference, gpt2_reference):
    for name, drop in (("hf_bert", ["vocab.txt"]), ("hf_gpt2", ["vocab.json", "merges.txt"])):
        shutil.copytree(fixture(name), tmp_path / name, ignore=shutil.ignore_patterns(*drop))
    bert = BertEncoder.from_pretrained(tmp_path / "hf_bert")
    assert bert.tokenizer.get_vocabulary() == BertEncoder.from_pretrained(fixture("hf_bert")).tokenizer.get_vocabulary()
    assert bert.tokenizer.lowercase is True  # tokenizer.json's BertNormalizer
    gpt = GPT.from_pretrained(tmp_path / "hf_gpt2")
    ids = gpt.tokenizer.tokenize(tf.constant([str(t) for t in gpt2_reference["texts"]])).to_list()
    lengths = gpt2_reference["padding_mask"].sum(1)
    assert ids == [row[:n].tolist() for row, n in zip(gpt2_reference["token_ids"], lengths)]


def test_hf_bert_shape_mismatch_names_the_source_tensor(tmp_path):
    directory = tmp_path / "hf_bert"
    shutil.copytree(fixture("hf_bert"), directory)
    config = json.loads((directory / "config.json").read_text())
    config["intermediate_size"] += 8
    (directory / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"'bert\.encoder\.layer\.0\.intermediate\.dense\.weight' \(tfplm weight"):
        BertPretrainer.from_pretrained(directory)


def gpt2_hidden_states(gpt, token_ids, padding_mask):
    x = gpt.embedding(token_ids)
    states = [x]
    for block in gpt.blocks:
        x = block(x, padding_mask=padding_mask)
        states.append(x)
    return states, gpt.final_norm(x)


def test_hf_gpt2_lm_head_model_matches_transformers(gpt2_reference):
    gpt, report = pretrained.load_pretrained(fixture("hf_gpt2"), "GPT")
    assert len(report.mapped) == len(gpt.weights)
    ids, mask = gpt2_reference["token_ids"], gpt2_reference["padding_mask"]
    real = mask.astype(bool)
    states, final = gpt2_hidden_states(gpt, ids, mask)
    logits = np.asarray(gpt({"token_ids": ids, "padding_mask": mask}))
    diffs = {
        "embedding_output": max_diff(np.asarray(states[0])[real], gpt2_reference["embedding_output"][real]),
        **{
            f"block_{i}": max_diff(np.asarray(s)[real], gpt2_reference["block_outputs"][i][real])
            for i, s in enumerate(states[1:])
        },
        "final_hidden": max_diff(np.asarray(final)[real], gpt2_reference["final_hidden"][real]),
        "logits": max_diff(logits[real], gpt2_reference["logits"][real]),
    }
    print(f"HF GPT2LMHeadModel max abs diff: {diffs}")
    assert max(diffs.values()) < 1e-4, diffs


def test_hf_gpt2_tokenizer_gives_the_reference_ids(gpt2_reference):
    gpt = GPT.from_pretrained(fixture("hf_gpt2"))
    ids = gpt.tokenizer.tokenize(tf.constant([str(t) for t in gpt2_reference["texts"]])).to_list()
    lengths = gpt2_reference["padding_mask"].sum(1)
    assert ids == [row[:n].tolist() for row, n in zip(gpt2_reference["token_ids"], lengths)]
    assert gpt.tokenizer.end_token_id == int(gpt2_reference["end_token_id"])


def test_hf_gpt2_greedy_generation_emits_transformers_tokens(gpt2_reference):
    gpt = GPT.from_pretrained(fixture("hf_gpt2"))
    for prompt, expected in (("prompt_ids", "generated_ids"), ("batch_prompt_ids", "batch_generated_ids")):
        out = gpt.generate_ids(gpt2_reference[prompt], max_new_tokens=12)
        np.testing.assert_array_equal(out, gpt2_reference[expected])
    lengths = gpt2_reference["ragged_prompt_lengths"]
    prompts = [row[:n].tolist() for row, n in zip(gpt2_reference["ragged_prompt_ids"], lengths)]
    out = gpt.generate_ids(prompts, max_new_tokens=12)
    new = np.stack([row[n : n + 12] for row, n in zip(out, lengths)])
    np.testing.assert_array_equal(new, gpt2_reference["ragged_new_ids"])


# --- Google BERT format, written with Google's exact variable names ---------------


def google_name(hf_name, value):
    """Google's variable name and layout for a Hugging Face BertForPreTraining tensor."""
    if hf_name.startswith("cls.seq_relationship."):  # output_weights is [2, hidden], like torch
        return "cls/seq_relationship/output_" + {"weight": "weights", "bias": "bias"}[hf_name.rsplit(".", 1)[1]], value
    if hf_name == "cls.predictions.bias":
        return "cls/predictions/output_bias", value
    *scope, leaf = hf_name.replace("encoder.layer.", "encoder.layer_").split(".")
    scope = "/".join(scope)
    if scope.endswith("LayerNorm"):
        return f"{scope}/{'gamma' if leaf == 'weight' else 'beta'}", value
    if scope.endswith("_embeddings"):
        return scope, value
    return f"{scope}/{'kernel' if leaf == 'weight' else 'bias'}", (value.T if leaf == "weight" else value)


def write_google_checkpoint(hf_dir, directory):
    from safetensors.numpy import load_file

    directory.mkdir(parents=True)
    tensors = {}
    for name, value in load_file(hf_dir / "model.safetensors").items():
        if name.endswith("position_ids") or name.startswith("cls.predictions.decoder"):
            continue
        google, array = google_name(name, value)
        tensors[google] = np.ascontiguousarray(array)
    # What real Google checkpoints also hold: a step counter and Adam slots.
    tensors["global_step"] = np.array(1000, np.int64)
    tensors["bert/pooler/dense/kernel/adam_m"] = np.zeros_like(tensors["bert/pooler/dense/kernel"])
    names = sorted(tensors)
    tf.raw_ops.SaveV2(
        prefix=str(directory / "bert_model.ckpt"),
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=[tf.constant(tensors[n]) for n in names],
    )
    hf_config = json.loads((hf_dir / "config.json").read_text())
    keys = (
        "attention_probs_dropout_prob", "hidden_act", "hidden_dropout_prob", "hidden_size", "initializer_range",
        "intermediate_size", "max_position_embeddings", "num_attention_heads", "num_hidden_layers",
        "type_vocab_size", "vocab_size",
    )
    (directory / "bert_config.json").write_text(json.dumps({k: hf_config[k] for k in keys}))
    shutil.copy(hf_dir / "vocab.txt", directory / "vocab.txt")
    return names


def test_google_bert_checkpoint_matches_transformers(tmp_path, bert_reference):
    directory = tmp_path / "uncased_L-2_H-32_A-4"
    names = write_google_checkpoint(fixture("hf_bert"), directory)
    assert "bert/encoder/layer_0/attention/self/query/kernel" in names
    assert "cls/seq_relationship/output_weights" in names
    assert pretrained.detect_format(directory) == "google"
    pretrainer, report = pretrained.load_pretrained(directory, "BertPretrainer")
    assert report.unused == {"global_step": "training step counter", "bert/pooler/dense/kernel/adam_m": "Adam optimizer slot"}
    assert pretrainer.tokenizer.lowercase is True  # "uncased" in the directory name
    assert_pretrainer_matches(pretrainer, bert_reference, "Google BERT")


def test_google_bert_casing_follows_the_directory_name_unless_told(tmp_path):
    directory = tmp_path / "cased_L-2_H-32_A-4"
    write_google_checkpoint(fixture("hf_bert"), directory)
    assert BertEncoder.from_pretrained(directory).tokenizer.lowercase is False
    assert BertEncoder.from_pretrained(directory, do_lower_case=True).tokenizer.lowercase is True


def test_convert_checkpoint_binary_writes_tfplm_format_and_prints_the_mapping(tmp_path, bert_reference):
    import subprocess
    import sys

    google_dir, output = tmp_path / "uncased_L-2_H-32_A-4", tmp_path / "converted"
    write_google_checkpoint(fixture("hf_bert"), google_dir)
    tool = pathlib.Path(__file__).resolve().parents[1] / "tools" / "convert_checkpoint.py"
    result = subprocess.run(
        [sys.executable, str(tool), f"--input={google_dir}", f"--output={output}", "--model=bert"],
        capture_output=True, text=True, check=True,
    )
    assert "bert/encoder/layer_0/attention/self/query/kernel" in result.stdout
    assert "-> block_0/self_attention/query/kernel [32, 32]" in result.stdout
    assert "unused: global_step: training step counter" in result.stdout
    assert f"wrote BertPretrainer to {output}" in result.stdout
    assert pretrained.detect_format(output) == "tfplm"
    restored = BertPretrainer.from_pretrained(output)
    assert restored.tokenizer.lowercase is True and restored.preprocessor.seq_length == 64
    assert_pretrainer_matches(restored, bert_reference, "Google BERT converted by the binary")
