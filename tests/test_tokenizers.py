"""Tokenizers: parity with Hugging Face `tokenizers`, packing, vocab learning, serialization."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
import tokenizers as hf_tokenizers

from tfplm.tokenizers import (
    BertPreprocessor,
    GPT2Tokenizer,
    SentencePieceTokenizer,
    WordPieceTokenizer,
    build_wordpiece_vocab,
    pack_segments,
    train_sentencepiece,
)

EDGE_CASES = [
    "",
    "   \t\n ",
    "Café, naïve, Ångström, résumé — déjà vu!",
    "中文字符 and 日本語のテキスト, 한국어",
    "emoji 😀👍🏽 and symbols ½ ² ﬁ ™ ©",
    "the [MASK] sat on the [MASK].[SEP]x",
    "[mask] is not special, [MASK] is",
    "punctuation!!!???...---(((",
    "control\x00chars\x07 and zero\u200bwidth soft\u00adhyphen",
    "İstanbul ǅungla Straße",
    "word " * 4000,  # 20k characters
]


@pytest.fixture(scope="module")
def minilm_tokenizers(minilm_dir):
    reference = hf_tokenizers.Tokenizer.from_file(str(minilm_dir / "tokenizer.json"))
    reference.no_padding()
    reference.no_truncation()
    return WordPieceTokenizer(str(minilm_dir / "vocab.txt")), reference


def test_real_vocab_has_30522_entries(minilm_tokenizers):
    assert minilm_tokenizers[0].vocabulary_size() == 30522


def test_wordpiece_matches_hugging_face_on_real_sentences(minilm_tokenizers, test_data_dir):
    tokenizer, reference = minilm_tokenizers
    sentences = (test_data_dir / "sentences.txt").read_text(encoding="utf-8").splitlines()
    assert len(sentences) >= 1000
    ours = tokenizer(tf.constant(sentences)).to_list()
    theirs = [e.ids for e in reference.encode_batch(sentences, add_special_tokens=False)]
    mismatches = [(s, a, b) for s, a, b in zip(sentences, ours, theirs) if a != b]
    assert not mismatches, mismatches[:3]


@pytest.mark.parametrize("text", EDGE_CASES, ids=range(len(EDGE_CASES)))
def test_wordpiece_matches_hugging_face_on_edge_cases(minilm_tokenizers, text):
    tokenizer, reference = minilm_tokenizers
    assert tokenizer(tf.constant([text])).to_list()[0] == reference.encode(text, add_special_tokens=False).ids


def _word_spans_of_hugging_face(encoding):
    """Hugging Face's per-piece character offsets widened to their words: a "##" piece continues the word before it."""
    spans = []
    for token, (start, end) in zip(encoding.tokens, encoding.offsets):
        if token.startswith("##") and spans:
            spans[-1][1] = end
        else:
            spans.append([start, end])
    return _spans_per_piece(encoding.tokens, spans)


def _spans_per_piece(tokens, word_spans):
    spans, word = [], -1
    for token in tokens:
        word += not token.startswith("##") or word < 0
        spans.append(tuple(word_spans[word]))
    return spans


@pytest.mark.parametrize("unit", ["UTF8_CHAR", "BYTE"])
def test_tokenize_with_offsets_gives_each_piece_its_word_as_hugging_face_does(minilm_tokenizers, test_data_dir, unit):
    tokenizer, reference = minilm_tokenizers
    sentences = (test_data_dir / "sentences.txt").read_text(encoding="utf-8").splitlines()[:300]
    texts = sentences + [text for text in EDGE_CASES if "control" not in text]
    ids, starts, ends = tokenizer.tokenize_with_offsets(tf.constant(texts), unit=unit)
    assert ids.to_list() == tokenizer(tf.constant(texts)).to_list()
    for text, row_starts, row_ends, encoding in zip(
        texts, starts.to_list(), ends.to_list(), reference.encode_batch(texts, add_special_tokens=False)
    ):
        expected = _word_spans_of_hugging_face(encoding)
        if unit == "BYTE":
            expected = [(len(text[:s].encode()), len(text[:e].encode())) for s, e in expected]
        assert list(zip(row_starts, row_ends)) == expected, text


def test_tokenize_with_offsets_in_a_graph_on_hostile_text(minilm_tokenizers):
    tokenizer, _ = minilm_tokenizers
    texts = tf.constant(["", "  \t ", b"ok \xff bytes", "猫が😀 sat."])
    ids, starts, ends = tf.function(lambda t: tokenizer.tokenize_with_offsets(t, unit="UTF8_CHAR"))(texts)
    assert ids.to_list()[:2] == [[], []]
    assert ids.to_list() == tokenizer(texts).to_list()
    repaired = ["", "", "ok \ufffd bytes", "猫が😀 sat."]
    words = [[text[s:e] for s, e in zip(*row)] for text, *row in zip(repaired, starts.to_list(), ends.to_list())]
    # A CJK ideograph is a word of its own; kana and emoji are not (as in BERT).
    assert words[2] == ["ok", "bytes"] and words[3] == ["猫", "が😀", "sat", "."]


def test_invalid_utf8_is_repaired_not_fatal(minilm_tokenizers):
    tokenizer, _ = minilm_tokenizers
    ids = tokenizer(tf.constant([b"ok \xff\xfe bytes \xc3"])).to_list()[0]
    assert ids == tokenizer(tf.constant(["ok bytes"])).to_list()[0]


def test_scalar_input_gives_a_flat_tensor(minilm_tokenizers):
    tokenizer, reference = minilm_tokenizers
    ids = tokenizer.tokenize(tf.constant("hello world"))
    assert ids.shape.rank == 1
    assert ids.numpy().tolist() == reference.encode("hello world", add_special_tokens=False).ids


def test_detokenize_joins_wordpieces(minilm_tokenizers):
    tokenizer, _ = minilm_tokenizers
    ids = tokenizer(tf.constant(["Tokenization isn't trivial"]))
    assert tokenizer.detokenize(ids).numpy()[0] == b"tokenization isn ' t trivial"


def test_special_token_ids_and_lookups(minilm_tokenizers):
    tokenizer, reference = minilm_tokenizers
    for name in ("pad", "unk", "cls", "sep", "mask"):
        token = f"[{name.upper()}]"
        assert getattr(tokenizer, f"{name}_token_id") == reference.token_to_id(token)
        assert tokenizer.id_to_token(reference.token_to_id(token)) == token
    with pytest.raises(ValueError, match="not in the vocabulary"):
        tokenizer.token_to_id("qwertyuiop")


TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b", "c", "d", "e", "##s"]


def ragged(rows):
    return tf.ragged.constant(rows, dtype=tf.int32)


def test_pack_segments_single_segment_adds_cls_sep_and_pads():
    packed = pack_segments(ragged([[5, 6], [7, 8, 9, 10, 5, 6]]), 6, cls_token_id=2, sep_token_id=3, pad_token_id=0)
    out = {k: v.numpy().tolist() for k, v in packed.items()}
    assert out["input_word_ids"] == [[2, 5, 6, 3, 0, 0], [2, 7, 8, 9, 10, 3]]
    assert out["input_mask"] == [[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]]
    assert out["input_type_ids"] == [[0] * 6, [0] * 6]
    assert {v.dtype for v in packed.values()} == {tf.int32}


def test_pack_segments_pads_words_with_the_pad_id_and_types_with_zero():
    packed = pack_segments([ragged([[5]]), ragged([[6]])], 7, cls_token_id=2, sep_token_id=3, pad_token_id=9)
    assert packed["input_word_ids"].numpy().tolist() == [[2, 5, 3, 6, 3, 9, 9]]
    assert packed["input_type_ids"].numpy().tolist() == [[0, 0, 0, 1, 1, 0, 0]]
    assert packed["input_mask"].numpy().tolist() == [[1, 1, 1, 1, 1, 0, 0]]


def test_pack_segments_trims_pairs_round_robin():
    a = ragged([[11, 12, 13, 14, 15], [11], [11, 12, 13, 14, 15, 16]])
    b = ragged([[21, 22, 23, 24, 25], [21, 22, 23, 24, 25, 26, 27], [21, 22]])
    out = pack_segments([a, b], 9, cls_token_id=2, sep_token_id=3)
    # Budget 9 - 3 specials = 6 tokens, one from each segment in turn.
    assert out["input_word_ids"].numpy().tolist() == [
        [2, 11, 12, 13, 3, 21, 22, 23, 3],
        [2, 11, 3, 21, 22, 23, 24, 25, 3],
        [2, 11, 12, 13, 14, 3, 21, 22, 3],
    ]
    assert out["input_type_ids"].numpy().tolist()[0] == [0, 0, 0, 0, 0, 1, 1, 1, 1]
    assert out["input_mask"].numpy().tolist() == [[1] * 9] * 3


def test_pack_segments_rejects_three_segments():
    with pytest.raises(ValueError, match="BERT packs 1 or 2 segments, got 3"):
        pack_segments([ragged([[5]])] * 3, 8, cls_token_id=2, sep_token_id=3)


def test_preprocessor_packs_one_text_and_pads():
    preprocessor = BertPreprocessor(WordPieceTokenizer(TINY_VOCAB), seq_length=6)
    out = {k: v.numpy().tolist() for k, v in preprocessor(tf.constant(["a bs", "c d e a b"])).items()}
    assert out["input_word_ids"] == [[2, 5, 6, 10, 3, 0], [2, 7, 8, 9, 5, 3]]
    assert out["input_mask"] == [[1, 1, 1, 1, 1, 0], [1] * 6]
    assert out["input_type_ids"] == [[0] * 6, [0] * 6]


def test_preprocessor_packs_text_pairs():
    preprocessor = BertPreprocessor(WordPieceTokenizer(TINY_VOCAB), seq_length=8)
    out = preprocessor((tf.constant(["a bs"]), tf.constant(["C d x"])))
    assert out["input_word_ids"].numpy().tolist() == [[2, 5, 6, 10, 3, 7, 8, 3]]
    assert out["input_mask"].numpy().tolist() == [[1] * 8]
    assert out["input_type_ids"].numpy().tolist() == [[0, 0, 0, 0, 0, 1, 1, 1]]


def test_tokenizer_runs_in_tf_data_and_tf_function(minilm_tokenizers):
    tokenizer, reference = minilm_tokenizers
    preprocessor = BertPreprocessor(tokenizer, seq_length=16)
    texts = ["hello there", "the quick brown fox jumps"]
    dataset = tf.data.Dataset.from_tensor_slices(texts).batch(2).map(preprocessor)
    from_data = next(iter(dataset))["input_word_ids"].numpy()

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def serve(text):
        return preprocessor(text)["input_word_ids"]

    np.testing.assert_array_equal(serve(tf.constant(texts)).numpy(), from_data)
    assert from_data[1, : len(reference.encode(texts[1]).ids)].tolist() == reference.encode(texts[1]).ids


def test_preprocessor_survives_a_keras_file_round_trip(tmp_path):
    inputs = keras.Input(shape=(), dtype="string")
    preprocessor = BertPreprocessor(WordPieceTokenizer(TINY_VOCAB), seq_length=6)
    model = keras.Model(inputs, preprocessor(inputs))
    model.save(tmp_path / "p.keras")
    restored = keras.models.load_model(tmp_path / "p.keras")
    text = tf.constant(["a b c", "d e"])
    for key, value in model(text).items():
        np.testing.assert_array_equal(value, restored(text)[key])


def test_missing_or_empty_vocab_files_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        WordPieceTokenizer(str(tmp_path / "nope.txt"))
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(ValueError, match="has 0 lines; expected one token per line"):
        WordPieceTokenizer(str(tmp_path / "empty.txt"))
    with pytest.raises(ValueError, match=r"lacks the special token\(s\) \['\[MASK\]'\]"):
        WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a"])


def test_vocab_with_a_token_twice_names_the_token_and_both_places(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\ncat\nthe\n")
    with pytest.raises(ValueError, match=rf"vocab file '{path}' lists the token 'the' twice \(lines 6 and 8\)"):
        WordPieceTokenizer(str(path))
    with pytest.raises(ValueError, match=r"the vocabulary lists the token 'cat' twice \(ids 5 and 6\)"):
        WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "cat", "cat"])


def test_vocab_whose_pad_is_not_id_0_is_refused(tmp_path):
    # Padding is id 0 everywhere BERT pads (its TFRecords, masks, checkpoints):
    # with [UNK] first, padded positions would read as unknown words.
    path = tmp_path / "vocab.txt"
    path.write_text("[UNK]\n[PAD]\n[CLS]\n[SEP]\n[MASK]\nthe\n")
    with pytest.raises(ValueError, match=rf"vocab file '{path}' has '\[PAD\]' at id 1 \(line 2\); BERT pads with id 0"):
        WordPieceTokenizer(str(path))
    with pytest.raises(ValueError, match=r"the vocabulary has '\[PAD\]' at id 4"):
        WordPieceTokenizer(["[UNK]", "[CLS]", "[SEP]", "[MASK]", "[PAD]"])


def test_vocab_file_that_is_not_utf8_names_the_line(tmp_path):
    path = tmp_path / "vocab.txt"
    path.write_bytes("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\ncaf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"vocab file '{path}':6: not UTF-8"):
        WordPieceTokenizer(str(path))


def test_learning_a_vocab_needs_room_beyond_the_reserved_tokens_and_some_text():
    with pytest.raises(ValueError, match=r"vocab_size=0; expected more than the 5 reserved tokens"):
        build_wordpiece_vocab(["the cat sat"], vocab_size=0)
    with pytest.raises(ValueError, match=r"vocab_size=5; expected more than the 5 reserved tokens"):
        build_wordpiece_vocab(["the cat sat"], vocab_size=5)
    with pytest.raises(ValueError, match="no words to learn a vocabulary from"):
        build_wordpiece_vocab([], vocab_size=100)


def test_sentencepiece_without_text_is_an_error_and_writes_nothing(tmp_path):
    with pytest.raises(ValueError, match="no text to learn a SentencePiece model from"):
        train_sentencepiece([], 100, str(tmp_path / "spm"))
    with pytest.raises(ValueError, match="SentencePiece cannot train with vocab_size=2"):
        train_sentencepiece(["the cat sat on the mat"] * 10, 2, str(tmp_path / "spm"))
    assert not list(tmp_path.iterdir())


def test_learned_vocab_starts_with_reserved_tokens_and_covers_its_text(test_data_dir):
    sentences = (test_data_dir / "sentences.txt").read_text(encoding="utf-8").splitlines()[:400]
    vocabulary = build_wordpiece_vocab(sentences, vocab_size=800)
    assert vocabulary[:5] == ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    assert 500 < len(vocabulary) <= 800
    ids = WordPieceTokenizer(vocabulary).tokenize(tf.constant(sentences)).flat_values.numpy()
    assert np.mean(ids == 1) < 0.01  # almost no [UNK]


@pytest.fixture(scope="module")
def byte_level_bpe(tmp_path_factory, test_data_dir):
    """A small GPT-2 style vocab learned by Hugging Face's ByteLevelBPE trainer."""
    directory = tmp_path_factory.mktemp("bpe")
    sentences = (test_data_dir / "sentences.txt").read_text(encoding="utf-8").splitlines()
    trainer = hf_tokenizers.ByteLevelBPETokenizer()
    trainer.train_from_iterator(sentences, vocab_size=600, special_tokens=["<|endoftext|>"])
    trainer.save_model(str(directory))
    return directory, sentences


def test_gpt2_bpe_matches_hugging_face_and_round_trips(byte_level_bpe):
    directory, sentences = byte_level_bpe
    ours = GPT2Tokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))
    reference = hf_tokenizers.ByteLevelBPETokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))
    sample = sentences[:200] + ["Hello  world\n\ttabs", "emoji 😀 ok", "<|endoftext|>next doc"]
    ids = ours(tf.constant(sample)).to_list()
    assert ids[:200] == [e.ids for e in reference.encode_batch(sentences[:200])]
    assert ids[-1][0] == ours.end_token_id
    decoded = [t.decode("utf-8") for t in ours.detokenize(tf.ragged.constant(ids)).numpy()]
    assert decoded == sample


def test_gpt2_vocabulary_files_round_trip(byte_level_bpe, tmp_path):
    directory, sentences = byte_level_bpe
    ours = GPT2Tokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))
    ours.save_vocabulary(str(tmp_path))
    again = GPT2Tokenizer(str(tmp_path / "vocab.json"), str(tmp_path / "merges.txt"))
    assert again(tf.constant(sentences[:50])).to_list() == ours(tf.constant(sentences[:50])).to_list()
    assert json.loads((tmp_path / "vocab.json").read_text())["<|endoftext|>"] == ours.end_token_id


def test_sentencepiece_matches_the_sentencepiece_library(tmp_path, test_data_dir):
    import sentencepiece

    sentences = (test_data_dir / "sentences.txt").read_text(encoding="utf-8").splitlines()
    path = train_sentencepiece(sentences, vocab_size=500, output_prefix=str(tmp_path / "spm"))
    ours = SentencePieceTokenizer(proto=path)
    reference = sentencepiece.SentencePieceProcessor(model_file=path)
    ids = ours(tf.constant(sentences[:100])).to_list()
    assert ids == reference.encode(sentences[:100])
    decoded = [t.decode("utf-8") for t in ours.detokenize(tf.ragged.constant(ids)).numpy()]
    assert decoded == reference.decode(ids)


def test_subword_tokenizers_return_tensors_eagerly_for_python_inputs(byte_level_bpe):
    directory, sentences = byte_level_bpe
    tokenizer = GPT2Tokenizer(str(directory / "vocab.json"), str(directory / "merges.txt"))
    ids = tokenizer.tokenize(sentences[:3])  # a Python list, not a tensor
    assert isinstance(ids, tf.RaggedTensor) and ids.dtype == tf.int32
    assert ids.to_list() == tokenizer.tokenize(tf.constant(sentences[:3])).to_list()
    single = tokenizer.tokenize(sentences[0])
    assert isinstance(single, tf.Tensor) and single.numpy().tolist() == ids.to_list()[0]
    text = tokenizer.detokenize(ids.to_list())
    assert isinstance(text, tf.Tensor) and text.dtype == tf.string
    assert [t.decode("utf-8") for t in text.numpy()] == sentences[:3]
