"""Checks that tfplm's pretraining data equals google-research/bert's, record for record.

    git clone https://github.com/google-research/bert /tmp/bert
    python tools/compare_with_google_bert.py --bert_dir=/tmp/bert \
        --input=tests/data/pretraining_sample.txt --vocab_file=vocab.txt --dupe_factor=5

Runs the original `create_training_instances` and `write_instance_to_example_files`
from your checkout (TF1 code: it is given a small stand-in for the few
`tf.*` calls it makes) and tfplm's `create_pretraining_data` on the same
one-sentence-per-line input with the same seed, one window holding the whole
corpus, `cycle_length=1` and one shard, and compares every record. Both sides
tokenize with tfplm's `WordPieceTokenizer`, so the comparison is of the
instance algorithm and the record format, not of the tokenizers (those are
compared in tests/test_tokenizers.py). Exits with status 1 on a difference.
"""

import collections
import glob
import importlib.util
import os
import sys
import types

from absl import app, flags

FLAGS = flags.FLAGS
flags.DEFINE_string("bert_dir", None, "A google-research/bert checkout.", required=True)
flags.DEFINE_string("input", None, "Text files, one sentence per line (comma-separated globs).", required=True)
flags.DEFINE_string("vocab_file", None, "WordPiece vocab.txt.", required=True)
flags.DEFINE_bool("do_lower_case", True, "The vocabulary is uncased.")
flags.DEFINE_string("output_dir", "/tmp/compare_with_google_bert", "Where both outputs go.")
flags.DEFINE_integer("max_seq_length", 128, "")
flags.DEFINE_integer("max_predictions_per_seq", 20, "")
flags.DEFINE_float("masked_lm_prob", 0.15, "")
flags.DEFINE_integer("dupe_factor", 3, "")
flags.DEFINE_float("short_seq_prob", 0.1, "")
flags.DEFINE_integer("random_seed", 12345, "")
flags.DEFINE_bool("do_whole_word_mask", False, "")


class _FlagStore:
    """What the original's `tf.flags` module is used for: DEFINE_* and FLAGS."""

    def __init__(self):
        self.FLAGS = types.SimpleNamespace()

    def __getattr__(self, name):
        if name.startswith("DEFINE_"):
            return lambda flag, default, *args, **kwargs: setattr(self.FLAGS, flag, default)
        if name == "mark_flag_as_required":
            return lambda *args, **kwargs: None
        raise AttributeError(name)


def load_original(bert_dir, do_whole_word_mask):
    """Imports the checkout's create_pretraining_data with TF1's names stood in."""
    import tensorflow as tf

    quiet = types.SimpleNamespace(info=lambda *a, **k: None, set_verbosity=lambda *a: None, INFO=20)
    tf1 = types.ModuleType("tensorflow")
    tf1.flags = _FlagStore()
    tf1.gfile = types.SimpleNamespace(GFile=lambda path, mode="r": open(path, mode, encoding="utf-8-sig"), Glob=glob.glob)
    tf1.python_io = types.SimpleNamespace(TFRecordWriter=tf.io.TFRecordWriter)
    tf1.train = tf.train
    tf1.logging = quiet
    saved = sys.modules.get("tensorflow")
    sys.modules["tensorflow"] = tf1
    sys.path.insert(0, bert_dir)
    try:
        spec = importlib.util.spec_from_file_location(
            "google_bert_create_pretraining_data", os.path.join(bert_dir, "create_pretraining_data.py")
        )
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(bert_dir)
        sys.modules["tensorflow"] = saved
    module.FLAGS.do_whole_word_mask = do_whole_word_mask
    return module


class _SameTokens:
    """The interface the original wants from its FullTokenizer, over tfplm's tokenizer."""

    def __init__(self, tokenizer, lines):
        import tensorflow as tf

        vocabulary = tokenizer.get_vocabulary()
        self.vocab = collections.OrderedDict((token, i) for i, token in enumerate(vocabulary))
        unique = sorted(set(lines))
        ids = tokenizer.tokenize(tf.constant(unique)).to_list() if unique else []
        self._tokens = {line: [vocabulary[i] for i in row] for line, row in zip(unique, ids)}

    def tokenize(self, line):
        return self._tokens[line] if line else []

    def convert_tokens_to_ids(self, tokens):
        return [self.vocab[t] for t in tokens]


def read_records(path):
    import tensorflow as tf

    records = []
    for record in tf.data.TFRecordDataset(path).as_numpy_iterator():
        features = tf.train.Example.FromString(record).features.feature
        records.append(
            {name: list(f.int64_list.value) or list(f.float_list.value) for name, f in sorted(features.items())}
        )
    return records


def main(argv):
    del argv
    import random

    from tfplm.data import text
    from tfplm.data.bert_instances import PretrainingDataConfig
    from tfplm.data.pretraining_records import create_pretraining_data
    from tfplm.tokenizers import WordPieceTokenizer

    files = text.expand_files(FLAGS.input)
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    tokenizer = WordPieceTokenizer(FLAGS.vocab_file, lowercase=FLAGS.do_lower_case)
    lines = [line.strip() for path in files for line in open(path, encoding="utf-8-sig")]

    original = load_original(os.path.abspath(FLAGS.bert_dir), FLAGS.do_whole_word_mask)
    same_tokens = _SameTokens(tokenizer, lines)
    instances = original.create_training_instances(
        files, same_tokens, FLAGS.max_seq_length, FLAGS.dupe_factor, FLAGS.short_seq_prob,
        FLAGS.masked_lm_prob, FLAGS.max_predictions_per_seq, random.Random(FLAGS.random_seed),
    )
    google_path = os.path.join(FLAGS.output_dir, "google.tfrecord")
    original.write_instance_to_example_files(
        instances, same_tokens, FLAGS.max_seq_length, FLAGS.max_predictions_per_seq, [google_path]
    )

    config = PretrainingDataConfig(
        max_seq_length=FLAGS.max_seq_length,
        max_predictions_per_seq=FLAGS.max_predictions_per_seq,
        masked_lm_prob=FLAGS.masked_lm_prob,
        dupe_factor=FLAGS.dupe_factor,
        short_seq_prob=FLAGS.short_seq_prob,
        random_seed=FLAGS.random_seed,
        do_whole_word_mask=FLAGS.do_whole_word_mask,
        window_size=sys.maxsize,  # one window: the whole corpus, as the original
        cycle_length=1,
    )
    (tfplm_path,) = create_pretraining_data(
        files, FLAGS.vocab_file, os.path.join(FLAGS.output_dir, "tfplm"), config,
        input_format="bert", lowercase=FLAGS.do_lower_case,
    )

    google, ours = read_records(google_path), read_records(tfplm_path)
    differing = [i for i, (a, b) in enumerate(zip(google, ours)) if a != b]
    print(f"google-research/bert: {len(google)} records; tfplm: {len(ours)} records; "
          f"{len(differing)} of the first {min(len(google), len(ours))} differ")
    if differing:
        i = differing[0]
        print(f"first difference, record {i}:\n  google: {google[i]}\n  tfplm:  {ours[i]}")
    if differing or len(google) != len(ours):
        sys.exit(1)
    print("identical")


if __name__ == "__main__":
    app.run(main)
