"""Pretraining TFRecords written exactly as google-research/bert writes them."""

import numpy as np
import tensorflow as tf


def google_example(rng, seq_length, max_predictions, num_predictions, vocab_size):
    """One record with the original feature names, dtypes and padding."""
    length = int(rng.integers(10, seq_length))
    ids = [101] + rng.integers(1000, vocab_size, length - 2).tolist() + [102] + [0] * (seq_length - length)
    positions = sorted(rng.choice(np.arange(1, length - 1), num_predictions, replace=False).tolist())
    pad = max_predictions - num_predictions

    def ints(values):
        return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in values]))

    feature = {
        "input_ids": ints(ids),
        "input_mask": ints([1] * length + [0] * (seq_length - length)),
        "segment_ids": ints([0] * (length // 2) + [1] * (length - length // 2) + [0] * (seq_length - length)),
        "masked_lm_positions": ints(positions + [0] * pad),
        "masked_lm_ids": ints([ids[p] for p in positions] + [0] * pad),
        "masked_lm_weights": tf.train.Feature(
            float_list=tf.train.FloatList(value=[1.0] * num_predictions + [0.0] * pad)
        ),
        "next_sentence_labels": ints([rng.integers(0, 2)]),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def write_google_records(path, n=64, seq_length=64, max_predictions=10, num_predictions=5, vocab_size=30522, seed=0):
    rng = np.random.default_rng(seed)
    with tf.io.TFRecordWriter(str(path)) as writer:
        for _ in range(n):
            writer.write(google_example(rng, seq_length, max_predictions, num_predictions, vocab_size))
