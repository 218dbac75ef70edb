"""Models carry their preprocessing: every round trip keeps it, and tasks make it.

A model's preprocessing (BERT: a `BertPreprocessor` with its tokenizer, length
and pair flag; GPT: its tokenizer) and a classifier's label names are
constructor arguments. `.keras` files (loaded in a fresh process after
`import tfplm` only), `save_pretrained`/`from_pretrained` and
`get_config`/`from_config` must all give back the same preprocessing and the
same outputs on raw text. A BERT task model has one preprocessor, its
encoder's. The pretraining tasks tokenize their inputs with the tokenizer their
model carries, whichever is built first. (The classification task's side is in
test_glue_task.py.)
"""

import json
import os
import pathlib
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import tensorflow as tf

from tfplm import models, tasks
from tfplm.models import GPT, BertClassifier, BertEncoder, BertPretrainer
from tfplm.tokenizers import (
    BertPreprocessor,
    GPT2Tokenizer,
    SentencePieceTokenizer,
    WordPieceTokenizer,
    train_sentencepiece,
)

REPO = pathlib.Path(__file__).resolve().parents[1]

# Cased: "The" and "the" are different tokens, so a restored tokenizer that
# lost its casing (or its vocabulary) gives other ids.
WORDPIECE_VOCAB = [
    "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]",
    "the", "The", "cat", "sat", "on", "mat", "##s", "a", ".", "dog", "ran",
]
TEXT = ["The cats sat on the mat .", "a dog ran", "The The the"]
TEXT_B = ["the dog sat", "", "cats"]
GPT2_VOCAB = {"<|endoftext|>": 0, "a": 1, "b": 2, "c": 3, "Ġ": 4, "Ġa": 5, "ab": 6, "Ġab": 7, "Ġb": 8, "Ġc": 9}
GPT2_MERGES = ["Ġ a", "a b", "Ġa b", "Ġ b", "Ġ c"]
GPT2_TEXT = ["ab a b c", "c ba", "a"]
SPM_TEXT = ["Elizabeth felt persuaded", "Jane had sent Caroline", "a letter"]


def tiny_encoder(preprocessor=None, vocab_size=len(WORDPIECE_VOCAB)):
    return BertEncoder(
        vocab_size=vocab_size,
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        intermediate_size=32,
        max_length=32,
        preprocessor=preprocessor,
    )


def tiny_gpt(tokenizer):
    return GPT(
        vocab_size=tokenizer.vocabulary_size(),
        hidden_size=16,
        num_layers=1,
        num_heads=2,
        intermediate_size=32,
        max_length=32,
        tokenizer=tokenizer,
    )


def wordpiece():
    return WordPieceTokenizer(WORDPIECE_VOCAB, lowercase=False)


def randomize(model, seed=0):
    """Random values in every weight (a fresh head is zero-initialised, which would hide a lost one)."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        variable.assign(rng.normal(0.0, 0.2, variable.shape).astype("float32"))
    return model


@pytest.fixture(scope="module")
def spm_path(tmp_path_factory):
    lines = (REPO / "tests" / "data" / "pretraining_sample.txt").read_text().splitlines()
    prefix = tmp_path_factory.mktemp("spm") / "spm"
    return train_sentencepiece([line for line in lines if line], 128, str(prefix))


def build_models(spm_path):
    """Every kind of model, each with its own preprocessing (name → model)."""
    return {
        "encoder": tiny_encoder(BertPreprocessor(wordpiece(), seq_length=12)),
        "classifier": BertClassifier(
            tiny_encoder(),
            3,
            preprocessor=BertPreprocessor(wordpiece(), seq_length=12),
            label_names=["negative", "neutral", "positive"],
        ),
        "pair_classifier": BertClassifier(
            tiny_encoder(),
            2,
            preprocessor=BertPreprocessor(wordpiece(), seq_length=10, pair=True),
            label_names=["entailment", "contradiction"],
        ),
        "regressor": BertClassifier(tiny_encoder(), 1, preprocessor=BertPreprocessor(wordpiece(), seq_length=12)),
        "pretrainer": BertPretrainer(tiny_encoder(), preprocessor=BertPreprocessor(wordpiece(), seq_length=12)),
        "gpt_bpe": tiny_gpt(GPT2Tokenizer(dict(GPT2_VOCAB), list(GPT2_MERGES))),
        "gpt_sentencepiece": tiny_gpt(SentencePieceTokenizer(proto=spm_path)),
    }


def facts(model):
    """What a model does with raw text, and the preprocessing it does it with (JSON-able).

    Runs in the test and in the fresh process that loads the `.keras` files.
    """
    if isinstance(model, GPT):
        tokenizer = model.tokenizer
        text = GPT2_TEXT if isinstance(tokenizer, GPT2Tokenizer) else SPM_TEXT
        ids = tokenizer.tokenize(tf.constant(text))
        token_ids = ids.to_tensor(0)
        outputs = model({"token_ids": token_ids, "padding_mask": tf.ones_like(ids).to_tensor(0)}, training=False)
        preprocessing = {
            "tokenizer": type(tokenizer).__name__,
            "vocabulary": list(tokenizer.get_vocabulary()),
            "token_ids": ids.to_list(),
            "detokenized": [t.decode() for t in tokenizer.detokenize(ids).numpy()],
        }
    else:
        preprocessor = model.preprocessor
        text = (tf.constant(TEXT), tf.constant(TEXT_B)) if preprocessor.pair else tf.constant(TEXT)
        inputs = dict(preprocessor(text))
        if isinstance(model, BertPretrainer):
            inputs["masked_lm_positions"] = tf.constant([[1, 2]] * len(TEXT))
        outputs = model(inputs, training=False)
        preprocessing = {
            "preprocessor": type(preprocessor).__name__,
            "seq_length": preprocessor.seq_length,
            "pair": preprocessor.pair,
            "tokenizer": type(preprocessor.tokenizer).__name__,
            "vocabulary": list(preprocessor.tokenizer.get_vocabulary()),
            "lowercase": preprocessor.tokenizer.lowercase,
            "input_word_ids": inputs["input_word_ids"].numpy().tolist(),
            "input_type_ids": inputs["input_type_ids"].numpy().tolist(),
            # A task model has one preprocessor: its encoder's.
            "shared_with_encoder": model.encoder.preprocessor is preprocessor if hasattr(model, "encoder") else None,
        }
    if isinstance(model, BertClassifier):
        preprocessing["label_names"] = None if model.label_names is None else list(model.label_names)
    preprocessing["outputs"] = tf.nest.map_structure(lambda t: np.asarray(t).tolist(), outputs)
    return preprocessing


def assert_same_facts(restored, expected, name):
    assert restored.keys() == expected.keys(), name
    for key in expected:
        if key == "outputs":
            tf.nest.map_structure(
                lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=f"{name} outputs"),
                restored[key],
                expected[key],
            )
        else:
            assert restored[key] == expected[key], f"{name}: {key}"


@pytest.fixture(scope="module")
def zoo(spm_path):
    built = build_models(spm_path)
    for i, model in enumerate(built.values()):
        randomize(model, seed=i)
    return built, {name: facts(model) for name, model in built.items()}


def test_the_preprocessing_is_what_the_constructor_was_given(zoo):
    _, expected = zoo
    assert expected["classifier"]["label_names"] == ["negative", "neutral", "positive"]
    assert expected["regressor"]["label_names"] is None
    assert expected["pair_classifier"]["pair"] is True and expected["encoder"]["pair"] is False
    assert expected["pair_classifier"]["seq_length"] == 10
    # The pair model packs text_b as segment 1.
    assert max(map(max, expected["pair_classifier"]["input_type_ids"])) == 1
    assert max(map(max, expected["classifier"]["input_type_ids"])) == 0
    # Cased: "The" (6) and "the" (5) stay apart.
    assert expected["encoder"]["input_word_ids"][2][:4] == [2, 6, 6, 5]
    assert all(expected[name]["shared_with_encoder"] for name in ("classifier", "pair_classifier", "pretrainer"))
    assert expected["gpt_sentencepiece"]["detokenized"] == SPM_TEXT


def test_keras_files_load_in_a_fresh_process_after_import_tfplm_with_their_preprocessing(zoo, tmp_path):
    built, expected = zoo
    paths = {}
    for name, model in built.items():
        paths[name] = str(tmp_path / f"{name}.keras")
        model.save(paths[name])
    # The BERT task models save their one preprocessor's vocabulary once.
    for name in ("classifier", "pretrainer"):
        vocab_files = [n for n in zipfile.ZipFile(paths[name]).namelist() if n.endswith("vocab.txt")]
        assert len(vocab_files) == 1, (name, vocab_files)
    script = (
        "import json, sys\n"
        "import keras\n"
        "import tfplm\n"
        "paths = json.loads(sys.argv[1])\n"
        "loaded = {name: keras.models.load_model(path) for name, path in paths.items()}\n"
        # Only now, with every model loaded, the helper that describes them.
        f"sys.path.insert(0, {str(REPO / 'tests')!r})\n"
        "from test_preprocessing import facts\n"
        "json.dump({name: facts(model) for name, model in loaded.items()}, open(sys.argv[2], 'w'))\n"
    )
    output = tmp_path / "facts.json"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    result = subprocess.run(
        [sys.executable, "-c", script, json.dumps(paths), str(output)], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    restored = json.loads(output.read_text())
    assert restored.keys() == expected.keys()
    for name in expected:
        assert_same_facts(restored[name], expected[name], name)


def test_save_pretrained_then_from_pretrained_keeps_the_preprocessing(zoo, tmp_path):
    built, expected = zoo
    for name, model in built.items():
        model.save_pretrained(tmp_path / name)
        restored = type(model).from_pretrained(tmp_path / name)
        assert type(restored) is type(model)
        assert_same_facts(facts(restored), expected[name], name)
        # The generic loader builds the saved class, the same way.
        assert_same_facts(facts(models.from_pretrained(tmp_path / name)), expected[name], f"{name} (generic)")


def test_from_config_of_get_config_keeps_the_preprocessing(zoo):
    built, expected = zoo
    for name, model in built.items():
        clone = type(model).from_config(model.get_config())
        assert clone.get_config() == model.get_config()
        clone.set_weights(model.get_weights())
        assert_same_facts(facts(clone), expected[name], name)


# --- one preprocessor per task model ---------------------------------------------


def test_a_classifier_uses_its_encoders_preprocessor():
    preprocessor = BertPreprocessor(wordpiece(), seq_length=8)
    encoder = tiny_encoder(preprocessor)
    classifier = BertClassifier(encoder, 2)
    assert classifier.preprocessor is encoder.preprocessor is preprocessor
    assert classifier.tokenizer is preprocessor.tokenizer
    pretrainer = BertPretrainer(tiny_encoder(preprocessor))
    assert pretrainer.preprocessor is pretrainer.encoder.preprocessor is preprocessor


def test_a_preprocessor_passed_to_the_classifier_replaces_the_encoders():
    encoder = tiny_encoder(BertPreprocessor(wordpiece(), seq_length=8))
    pair = BertPreprocessor(WordPieceTokenizer(WORDPIECE_VOCAB, lowercase=True), seq_length=16, pair=True)
    classifier = BertClassifier(encoder, 2, preprocessor=pair)
    assert classifier.preprocessor is pair and encoder.preprocessor is pair
    # The config holds it once, in the encoder's.
    config = classifier.get_config()
    assert "preprocessor" not in config
    assert config["encoder"]["config"]["preprocessor"]["config"]["pair"] is True
    rebuilt = BertClassifier.from_config(config)
    assert rebuilt.preprocessor is rebuilt.encoder.preprocessor
    assert (rebuilt.preprocessor.seq_length, rebuilt.preprocessor.pair, rebuilt.tokenizer.lowercase) == (16, True, True)


def test_a_bare_model_has_no_preprocessing():
    classifier = BertClassifier(tiny_encoder(), 2)
    assert classifier.preprocessor is None and classifier.tokenizer is None
    assert BertClassifier.from_config(classifier.get_config()).preprocessor is None


def test_label_names_must_match_the_classes():
    with pytest.raises(ValueError, match="3 label_names for a 2-class classifier"):
        BertClassifier(tiny_encoder(), 2, label_names=["a", "b", "c"])


# --- pretraining tasks: one tokenizer for the inputs and the model, in any order -----

SAMPLE = REPO / "tests" / "data" / "pretraining_sample.txt"
BERT_VOCAB = REPO / "tests" / "fixtures" / "hf_bert" / "vocab.txt"
HF_GPT2 = REPO / "tests" / "fixtures" / "hf_gpt2"


def pretraining_overrides(vocab_file, init_checkpoint="", seq_length=32):
    data = ",".join(
        f"task.{split}.{key}={value}"
        for split in ("train_data", "validation_data")
        for key, value in (
            ("input_path", SAMPLE),
            ("input_format", "bert"),
            ("seq_length", seq_length),
            ("global_batch_size", 4),
            ("shuffle_buffer_size", 1),
        )
    )
    return f"task.vocab_file={vocab_file},task.init_checkpoint={init_checkpoint},task.model.max_length=64,{data}"


def inputs_and_model(experiment, overrides, inputs_first):
    """The first training batch and the model, built in the given order."""
    task = tasks.get(experiment, overrides=overrides)
    if inputs_first:
        batch = next(iter(task.build_inputs("train")))
        model = task.build_model()
    else:
        model = task.build_model()
        batch = next(iter(task.build_inputs("train")))
    return task, batch, model


def detokenize(tokenizer, ids):
    return tokenizer.detokenize(tf.ragged.constant([list(ids)], dtype=tf.int32)).numpy()[0].decode()


def assert_first_segments_come_from_the_text(batch, tokenizer):
    """Each example's first segment, its masked tokens put back and decoded by
    `tokenizer`, is a passage of the sample text decoded the same way: ids of
    another vocabulary decode to other words."""
    features, labels, weights = batch
    lines = [line for line in SAMPLE.read_text().splitlines() if line]
    reference = " ".join(detokenize(tokenizer, ids) for ids in tokenizer.tokenize(tf.constant(lines)).to_list())
    rows = features["input_word_ids"].numpy().copy()
    positions = features["masked_lm_positions"].numpy()
    for row, (ids, where, original, weight) in enumerate(
        zip(rows, positions, labels["mlm_logits"].numpy(), weights["mlm_logits"].numpy())
    ):
        ids[where[weight > 0]] = original[weight > 0]
        first = list(ids).index(tokenizer.sep_token_id)
        assert ids[0] == tokenizer.cls_token_id and first > 2
        passage = detokenize(tokenizer, ids[1:first]).removeprefix("##")
        assert passage in reference, (row, passage)


@pytest.fixture(scope="module")
def bert_pretrained(tmp_path_factory):
    """A tfplm BertPretrainer checkpoint whose cased vocabulary numbers the
    fixture's tokens in another order than `BERT_VOCAB`."""
    tokens = BERT_VOCAB.read_text().splitlines()
    vocabulary = tokens[:5] + tokens[5:][::-1]
    encoder = BertEncoder(
        vocab_size=len(vocabulary), hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, max_length=64
    )
    preprocessor = BertPreprocessor(WordPieceTokenizer(vocabulary, lowercase=False), seq_length=64)
    model = randomize(BertPretrainer(encoder, preprocessor=preprocessor))
    path = tmp_path_factory.mktemp("bert") / "pretrained"
    model.save_pretrained(path)
    return path, model


@pytest.mark.parametrize("inputs_first", [True, False], ids=["inputs_first", "model_first"])
@pytest.mark.parametrize("with_checkpoint", [False, True], ids=["vocab_file", "init_checkpoint"])
def test_bert_pretraining_inputs_and_model_share_one_tokenizer_in_any_order(bert_pretrained, with_checkpoint, inputs_first):
    checkpoint, saved = bert_pretrained
    overrides = pretraining_overrides(BERT_VOCAB, checkpoint if with_checkpoint else "")
    task, batch, model = inputs_and_model("bert/pretraining", overrides, inputs_first)
    expected = saved.tokenizer if with_checkpoint else WordPieceTokenizer(str(BERT_VOCAB))
    assert model.tokenizer is task.tokenizer
    assert model.tokenizer.get_vocabulary() == expected.get_vocabulary()
    assert model.tokenizer.lowercase is expected.lowercase
    assert model.preprocessor.seq_length == 32
    assert_first_segments_come_from_the_text(batch, model.tokenizer)
    if with_checkpoint:
        for mine, theirs in zip(model.weights, saved.weights):
            np.testing.assert_array_equal(mine.numpy(), theirs.numpy(), err_msg=mine.path)


@pytest.mark.parametrize("inputs_first", [True, False], ids=["inputs_first", "model_first"])
@pytest.mark.parametrize("with_checkpoint", [False, True], ids=["vocab_file", "init_checkpoint"])
def test_gpt_pretraining_inputs_and_model_share_one_tokenizer_in_any_order(spm_path, with_checkpoint, inputs_first):
    overrides = pretraining_overrides(spm_path, HF_GPT2 if with_checkpoint else "", seq_length=16)
    task, (features, labels), model = inputs_and_model("gpt/pretraining", overrides, inputs_first)
    expected = GPT.from_pretrained(HF_GPT2).tokenizer if with_checkpoint else SentencePieceTokenizer(proto=spm_path)
    assert type(model.tokenizer) is type(expected)
    assert model.tokenizer is task.tokenizer
    assert list(model.tokenizer.get_vocabulary()) == list(expected.get_vocabulary())
    # Unshuffled: the first block is the start of the first line, in the model's tokens.
    first_line = SAMPLE.read_text().splitlines()[0]
    start = model.tokenizer.tokenize(tf.constant([first_line])).to_list()[0][:17]
    assert features["token_ids"].numpy()[0].tolist() == start[:16]
    assert labels.numpy()[0].tolist() == start[1:17]


def test_a_pretraining_checkpoint_without_vocabulary_takes_vocab_file(tmp_path):
    size = len(BERT_VOCAB.read_text().splitlines())
    encoder = BertEncoder(vocab_size=size, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, max_length=64)
    BertPretrainer(encoder).save_pretrained(tmp_path / "bare")
    task, batch, model = inputs_and_model("bert/pretraining", pretraining_overrides(BERT_VOCAB, tmp_path / "bare"), True)
    assert model.tokenizer is task.tokenizer
    assert model.tokenizer.get_vocabulary() == WordPieceTokenizer(str(BERT_VOCAB)).get_vocabulary()
    assert_first_segments_come_from_the_text(batch, model.tokenizer)
    bigger = tmp_path / "bigger.txt"
    bigger.write_text(BERT_VOCAB.read_text() + "extra\n")
    task = tasks.get("bert/pretraining", overrides=pretraining_overrides(bigger, tmp_path / "bare"))
    with pytest.raises(ValueError, match=rf"has {size + 1} tokens but the model of .* embeds {size}"):
        task.build_inputs("train")


def test_a_preset_classifier_takes_label_names_and_shares_its_encoders_preprocessor():
    preprocessor = BertPreprocessor(wordpiece(), seq_length=8)
    classifier = BertClassifier.from_preset(
        "bert_tiny", 2, label_names=["no", "yes"], vocab_size=len(WORDPIECE_VOCAB), preprocessor=preprocessor
    )
    assert classifier.label_names == ("no", "yes")
    assert classifier.preprocessor is classifier.encoder.preprocessor is preprocessor
