"""tfplm.data.text_dataset: in-memory texts (and labels) → length-bucketed batches."""

import math

import numpy as np
import pytest
import tensorflow as tf

import tfplm.data
from tfplm.data import pipeline
from tfplm.tokenizers import BertPreprocessor, WordPieceTokenizer

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]
SEQ_LENGTH = 128
BOUNDARIES = pipeline.length_buckets(SEQ_LENGTH)  # [17, 33, 65]: buckets <17, 17-32, 33-64, 65-128


@pytest.fixture(scope="module")
def preprocessor():
    return BertPreprocessor(WordPieceTokenizer(VOCAB), SEQ_LENGTH)


def texts_of_lengths(lengths, word="a"):
    """One text of k words per k: packed, it is k + 2 tokens long ([CLS] ... [SEP])."""
    return [" ".join([word] * k) for k in lengths]


def batches(dataset):
    return [(inputs, labels.numpy()) for inputs, labels in dataset]


def test_is_exported_as_tfplm_data_text_dataset():
    assert tfplm.data.text_dataset is pipeline.text_dataset


def test_training_batches_hold_one_length_bucket_each_padded_to_their_longest(preprocessor):
    rng = np.random.default_rng(0)
    words = rng.integers(1, 100, size=200)
    dataset = tfplm.data.text_dataset(
        texts_of_lengths(words), words, preprocessor=preprocessor, batch_size=8, training=True
    )
    seen = 0
    for inputs, labels in batches(dataset):
        lengths = inputs["input_mask"].numpy().sum(1)
        np.testing.assert_array_equal(lengths, labels + 2)  # each label stays with its text
        assert len(set(np.searchsorted(BOUNDARIES, lengths, side="right"))) == 1, lengths
        assert inputs["input_word_ids"].shape[1] == lengths.max()  # padded to the batch's longest only
        seen += len(labels)
    assert seen == 8 * math.ceil(200 / 8)  # full batches: short buckets wait for the next epoch


def test_a_training_epoch_is_ceil_examples_over_batch_size_steps(preprocessor):
    dataset = tfplm.data.text_dataset(
        texts_of_lengths(range(1, 21)), list(range(20)), preprocessor=preprocessor, batch_size=8, training=True
    )
    assert len(dataset) == 3  # known in advance, so fit(epochs=E) runs E * len(dataset) steps
    assert len(list(dataset)) == 3 and len(list(dataset)) == 3  # every epoch


def test_evaluation_batches_keep_the_order_and_pad_to_their_longest(preprocessor):
    lengths = [3, 1, 40, 2, 5, 7, 1]
    texts = texts_of_lengths(lengths)
    dataset = tfplm.data.text_dataset(texts, lengths, preprocessor=preprocessor, batch_size=3)
    result = batches(dataset)
    assert len(dataset) == len(result) == 3
    np.testing.assert_array_equal(np.concatenate([labels for _, labels in result]), lengths)
    assert result[0][1].dtype == np.int32  # class ids as the file readers give them
    assert [inputs["input_word_ids"].shape[1] for inputs, _ in result] == [42, 9, 3]  # longest of each batch + [CLS], [SEP]
    ids = result[0][0]["input_word_ids"].numpy()
    np.testing.assert_array_equal(ids[1], [2, 5, 3] + [0] * 39)  # [CLS] a [SEP], then padding


def test_pairs_pack_both_texts_with_segment_ids(preprocessor):
    texts, texts_b = texts_of_lengths([2, 5]), texts_of_lengths([3, 1], word="b")
    (inputs, labels), = batches(tfplm.data.text_dataset((texts, texts_b), [0, 1], preprocessor=preprocessor))
    np.testing.assert_array_equal(inputs["input_mask"].numpy().sum(1), [2 + 3 + 3, 5 + 1 + 3])
    np.testing.assert_array_equal(inputs["input_type_ids"].numpy().sum(1), [3 + 1, 1 + 1])  # text_b and its [SEP]
    np.testing.assert_array_equal(inputs["input_word_ids"].numpy()[0, :9], [2, 5, 5, 3, 6, 6, 6, 3, 0])
    np.testing.assert_array_equal(labels, [0, 1])


def test_pad_to_seq_length_gives_static_shapes(preprocessor):
    dataset = tfplm.data.text_dataset(
        texts_of_lengths([1, 2, 3, 4]), [0, 1, 0, 1], preprocessor=preprocessor, batch_size=2,
        training=True, pad_to_seq_length=True,
    )
    shapes = {tuple(inputs["input_word_ids"].shape) for inputs, _ in dataset}
    assert shapes == {(2, SEQ_LENGTH)} and len(dataset) == 2


def test_unlabelled_numpy_and_bytes_texts(preprocessor):
    for texts in (np.array(["a a", "b"]), np.array([b"a a", b"b"]), tf.constant(["a a", "b"])):
        (inputs,) = list(tfplm.data.text_dataset(texts, preprocessor=preprocessor))
        np.testing.assert_array_equal(inputs["input_word_ids"].numpy(), [[2, 5, 5, 3], [2, 6, 3, 0]])


@pytest.mark.parametrize(
    "texts, labels, message",
    [
        (["a", "b"], [1], r"texts and labels differ in length \(\[1, 2\]\)"),
        ("a film", None, "texts is a single string; pass a list of texts"),
        ((["a"], ["b"], ["c"]), None, r"a tuple \(texts, texts_b\); got a tuple of 3"),
        (["a", "b"], ["good", "bad"], r"labels must be class ids \(int\) or scores \(float\), got <U4 values"),
    ],
)
def test_bad_inputs_are_one_clear_error(preprocessor, texts, labels, message):
    with pytest.raises(ValueError, match=message):
        tfplm.data.text_dataset(texts, labels, preprocessor=preprocessor)


def test_training_on_no_examples_is_an_error(preprocessor):
    with pytest.raises(ValueError, match="no examples to train on"):
        tfplm.data.text_dataset([], [], preprocessor=preprocessor, training=True)
