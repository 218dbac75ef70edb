"""The zoo's models: masking, serialization, presets, and training steps."""

import numpy as np
import pytest
import tensorflow as tf

import keras
from tfplm import models
from tfplm.models import presets

VOCAB = 97


def bert_inputs(batch=2, length=10, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, VOCAB, (batch, length)).astype("int32")
    mask = np.ones((batch, length), "int32")
    mask[0, 6:] = 0
    types = np.zeros((batch, length), "int32")
    types[:, 4:] = 1
    return {"input_word_ids": ids, "input_mask": mask, "input_type_ids": types}


def tiny_encoder(**overrides):
    return models.BertEncoder.from_preset("bert_tiny", vocab_size=VOCAB, **overrides)


def tiny_gpt():
    return models.GPT.from_preset("gpt_nano", vocab_size=VOCAB, max_length=32)


def tiny_seq2seq():
    return models.Seq2SeqTransformer(
        vocab_size=VOCAB,
        hidden_size=32,
        num_encoder_layers=2,
        num_decoder_layers=2,
        num_heads=4,
        intermediate_size=64,
    )


def seq2seq_inputs(batch=2):
    rng = np.random.default_rng(1)
    enc = rng.integers(3, VOCAB, (batch, 7)).astype("int32")
    dec = rng.integers(3, VOCAB, (batch, 5)).astype("int32")
    enc_mask = np.ones_like(enc)
    enc_mask[0, 4:] = 0
    return {
        "encoder_token_ids": enc,
        "encoder_padding_mask": enc_mask,
        "decoder_token_ids": dec,
        "decoder_padding_mask": np.ones_like(dec),
    }


def test_bert_encoder_outputs_use_tf_hub_names_and_shapes():
    encoder = tiny_encoder()
    outputs = encoder(bert_inputs())
    assert set(outputs) == {"sequence_output", "pooled_output", "encoder_outputs"}
    assert outputs["sequence_output"].shape == (2, 10, 128)
    assert outputs["pooled_output"].shape == (2, 128)
    assert len(outputs["encoder_outputs"]) == 2
    np.testing.assert_array_equal(outputs["encoder_outputs"][-1], outputs["sequence_output"])


def test_padded_positions_change_no_unpadded_output():
    encoder = tiny_encoder()
    inputs = bert_inputs()
    changed = {k: v.copy() for k, v in inputs.items()}
    changed["input_word_ids"][0, 6:] = 3  # only row 0's padding
    a = encoder(inputs)["sequence_output"].numpy()
    b = encoder(changed)["sequence_output"].numpy()
    np.testing.assert_allclose(a[0, :6], b[0, :6], atol=1e-6)
    assert not np.allclose(a[0, 6:], b[0, 6:])  # the padding itself did change


def test_gpt_never_looks_ahead():
    gpt = tiny_gpt()
    ids = np.random.default_rng(0).integers(0, VOCAB, (2, 12)).astype("int32")
    changed = ids.copy()
    changed[:, 7:] = (changed[:, 7:] + 1) % VOCAB
    mask = np.ones_like(ids)
    a = gpt({"token_ids": ids, "padding_mask": mask}).numpy()
    b = gpt({"token_ids": changed, "padding_mask": mask}).numpy()
    np.testing.assert_allclose(a[:, :7], b[:, :7], atol=1e-6)
    assert not np.allclose(a[:, 7:], b[:, 7:])


def test_seq2seq_decoder_is_causal_and_ignores_source_padding():
    model = tiny_seq2seq()
    inputs = seq2seq_inputs()
    changed = {k: v.copy() for k, v in inputs.items()}
    changed["decoder_token_ids"][:, 3:] = 2
    changed["encoder_token_ids"][0, 4:] = 1  # padding of row 0
    a, b = model(inputs).numpy(), model(changed).numpy()
    np.testing.assert_allclose(a[:, :3], b[:, :3], atol=1e-6)


MODEL_BUILDERS = {
    "bert_encoder": (tiny_encoder, bert_inputs),
    "bert_pretrainer": (
        lambda: models.BertPretrainer(tiny_encoder()),
        lambda: {**bert_inputs(), "masked_lm_positions": np.array([[1, 2], [3, 0]], "int32")},
    ),
    "bert_classifier": (lambda: models.BertClassifier(tiny_encoder(), 3), bert_inputs),
    "bert_regressor": (lambda: models.BertClassifier(tiny_encoder(), 1), bert_inputs),
    "gpt": (
        tiny_gpt,
        lambda: {"token_ids": np.arange(12, dtype="int32").reshape(2, 6), "padding_mask": np.ones((2, 6), "int32")},
    ),
    "seq2seq": (tiny_seq2seq, seq2seq_inputs),
}


@pytest.mark.parametrize("name", sorted(MODEL_BUILDERS))
def test_keras_file_round_trip_gives_identical_outputs(name, tmp_path):
    build, make_inputs = MODEL_BUILDERS[name]
    model = build()
    inputs = make_inputs()
    expected = model(inputs)
    path = tmp_path / f"{name}.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    assert type(restored) is type(model)
    assert restored.get_config() == model.get_config()
    tf.nest.map_structure(
        lambda a, b: np.testing.assert_array_equal(np.asarray(a), np.asarray(b)),
        expected,
        restored(inputs),
    )


def test_pretrainer_ties_mlm_projection_to_word_embeddings():
    pretrainer = models.BertPretrainer(tiny_encoder())
    table = pretrainer.encoder.embedding.token_embedding.embeddings
    assert pretrainer.masked_lm_head.embedding.token_embedding.embeddings is table
    # Tied: counted once.
    assert pretrainer.count_params() == pretrainer.encoder.count_params() + (
        128 * 128 + 128 + 2 * 128 + VOCAB + 128 * 2 + 2
    )


@pytest.mark.parametrize(
    "name, published",
    [("bert_base", 110e6), ("bert_large", 340e6), ("gpt2_small", 124e6), ("gpt2_medium", 355e6)],
)
def test_preset_parameter_counts_match_published_sizes(name, published):
    count = presets.parameter_count(presets.get_preset(name))
    assert abs(count - published) / published < 0.02, count


@pytest.mark.parametrize(
    "name, build",
    [
        ("bert_tiny", lambda: models.BertEncoder.from_preset("bert_tiny")),
        ("bert_base", lambda: models.BertEncoder.from_preset("bert_base")),
        ("gpt_nano", lambda: models.GPT.from_preset("gpt_nano")),
        ("transformer_base", lambda: models.Seq2SeqTransformer.from_preset("transformer_base")),
    ],
)
def test_computed_parameter_count_equals_built_model(name, build):
    assert build().count_params() == presets.parameter_count(presets.get_preset(name))


def test_flops_per_token_follow_the_formula():
    preset = presets.get_preset("bert_base")
    n = presets.parameter_count(preset, embeddings=False)
    assert presets.flops_per_token(preset) == 2 * n + 4 * 12 * 128 * 768
    assert presets.flops_per_token(preset, training=True) == 3 * presets.flops_per_token(preset)


def test_list_presets_and_wrong_family_error():
    assert "bert_base" in models.list_presets("bert")
    assert "gpt2_small" not in models.list_presets("bert")
    with pytest.raises(ValueError, match="gpt2_small.*gpt model"):
        models.BertEncoder.from_preset("gpt2_small")
    with pytest.raises(ValueError, match="unknown preset 'bert_huge'"):
        models.BertEncoder.from_preset("bert_huge")


def test_indivisible_heads_error_names_the_problem():
    with pytest.raises(ValueError, match="not divisible by num_heads=3"):
        models.BertEncoder(vocab_size=10, hidden_size=16, num_layers=1, num_heads=3, intermediate_size=8)


# --- one training step for every head, on the default and a mirrored strategy ---


def _fit_case(name):
    """(model, dataset, loss) for one step of `fit`."""
    batch = 4
    if name == "bert_pretrainer":
        model = models.BertPretrainer(tiny_encoder())
        x = {**bert_inputs(batch), "masked_lm_positions": np.tile(np.array([[1, 2]], "int32"), (batch, 1))}
        y = {"mlm_logits": np.ones((batch, 2), "int32"), "nsp_logits": np.zeros((batch,), "int32")}
        loss = {
            "mlm_logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            "nsp_logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        }
    elif name == "bert_classifier":
        model = models.BertClassifier(tiny_encoder(), 3)
        x, y = bert_inputs(batch), np.array([0, 1, 2, 1])
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    elif name == "bert_regressor":
        model = models.BertClassifier(tiny_encoder(), 1)
        x, y = bert_inputs(batch), np.array([[0.5], [1.0], [4.0], [2.5]], "float32")
        loss = keras.losses.MeanSquaredError()
    elif name == "gpt":
        model = tiny_gpt()
        ids = np.arange(4 * 9, dtype="int32").reshape(4, 9) % VOCAB
        x = {"token_ids": ids[:, :-1], "padding_mask": np.ones((4, 8), "int32")}
        y = ids[:, 1:]
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    else:
        model = tiny_seq2seq()
        x = seq2seq_inputs(batch)
        y = np.roll(x["decoder_token_ids"], -1, axis=1)
        loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    return model, tf.data.Dataset.from_tensor_slices((x, y)).batch(batch), loss


@pytest.mark.parametrize("strategy_name", ["default", "mirrored"])
@pytest.mark.parametrize(
    "name", ["bert_pretrainer", "bert_classifier", "bert_regressor", "gpt", "seq2seq"]
)
def test_one_fit_step_updates_weights(name, strategy_name, request):
    strategy = (
        request.getfixturevalue("mirrored_strategy")
        if strategy_name == "mirrored"
        else tf.distribute.get_strategy()
    )
    with strategy.scope():
        model, dataset, loss = _fit_case(name)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss)
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(dataset, epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    changed = [not np.array_equal(b, w.numpy()) for b, w in zip(before, model.trainable_weights)]
    assert sum(changed) >= 0.9 * len(changed)


def test_mixed_precision_outputs_float32_logits():
    policy = keras.mixed_precision.DTypePolicy("mixed_float16")
    encoder = tiny_encoder(dtype=policy)
    classifier = models.BertClassifier(encoder, 2)
    assert encoder(bert_inputs())["sequence_output"].dtype == "float16"
    logits = classifier(bert_inputs())
    assert logits.dtype == "float32" and np.all(np.isfinite(logits.numpy()))


def test_raw_text_classifier_round_trips_through_a_keras_file(tmp_path):
    from tfplm.tokenizers import BertPreprocessor, WordPieceTokenizer

    vocabulary = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "film", "##s"]
    preprocessor = BertPreprocessor(WordPieceTokenizer(vocabulary), seq_length=8)
    classifier = models.BertClassifier(models.BertEncoder.from_preset("bert_tiny", vocab_size=len(vocabulary)), 2)
    text = keras.Input(shape=(), dtype="string")
    model = keras.Model(text, classifier(preprocessor(text)))
    probe = tf.constant(["good films", "bad film", ""])
    expected = classifier(preprocessor(probe)).numpy()
    np.testing.assert_array_equal(model(probe).numpy(), expected)  # same graph as the eager call
    model.save(tmp_path / "text_classifier.keras")
    np.testing.assert_array_equal(keras.models.load_model(tmp_path / "text_classifier.keras")(probe).numpy(), expected)
