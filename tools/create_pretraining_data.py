"""Writes BERT pretraining TFRecords (masked LM + next sentence prediction).

    python tools/create_pretraining_data.py --input='../shared/data/corpus/books/*.txt' \
        --input_format=prose --vocab_file=vocab.txt --output=data/books \
        --max_seq_length=128 --max_predictions_per_seq=20 --dupe_factor=5 --num_shards=4

Instances are google-research/bert's (same algorithm, feature names, dtypes
and padding; see tfplm/data/bert_instances.py), made in bounded memory: documents
are processed `--window_size` at a time, over `--num_workers` processes. The
same flags and seed give the same bytes, whatever `--num_workers`.

Shards appear under their names only when all of them are complete (a glob
`PREFIX-*` never reads a partial one); workers end with this process, and a
run stopped by Ctrl-C or SIGTERM removes its temporary files (one killed with
SIGKILL leaves hidden ones, which the next run with the same --output removes).
Input that is not UTF-8, holds no text, or a bad vocabulary is a one-line
error, and nothing is written.
"""

import _cli

_cli.quiet()

import resource  # noqa: E402
import time  # noqa: E402

from absl import flags  # noqa: E402

from tfplm.data import text  # noqa: E402
from tfplm.data.bert_instances import PretrainingDataConfig  # noqa: E402
from tfplm.data.pretraining_records import create_pretraining_data  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("input", None, "Glob(s) of text files, comma-separated.", required=True)
flags.DEFINE_enum("input_format", "bert", ["bert", "prose"], "bert: a sentence per line, blank lines between documents; prose: raw text (e.g. Gutenberg books).")
flags.DEFINE_string("vocab_file", None, "WordPiece vocab.txt.", required=True)
flags.DEFINE_bool("do_lower_case", True, "The vocabulary is uncased.")
flags.DEFINE_string("output", None, "Output prefix; shards are PREFIX-00000-of-0000K.tfrecord.", required=True)
flags.DEFINE_integer("max_seq_length", 128, "Tokens per instance.")
flags.DEFINE_integer("max_predictions_per_seq", 20, "Masked positions per instance, at most.")
flags.DEFINE_float("masked_lm_prob", 0.15, "Fraction of tokens to mask.")
flags.DEFINE_integer("dupe_factor", 10, "Passes over the data, each with different masks.")
flags.DEFINE_float("short_seq_prob", 0.1, "Probability of a shorter target length.")
flags.DEFINE_integer("random_seed", 12345, "Seed; the same seed gives the same bytes.")
flags.DEFINE_bool("do_whole_word_mask", False, "Mask whole words rather than word pieces.")
flags.DEFINE_integer("num_shards", 1, "Output files.")
flags.DEFINE_integer("num_workers", 1, "Processes (at most num_shards).")
flags.DEFINE_integer("window_size", 200, "Documents tokenized and turned into instances at a time (memory grows with it).")
flags.DEFINE_integer("cycle_length", 8, "Input files read at a time; documents are taken from them round robin.")
flags.DEFINE_integer("sentences_per_document", 40, "prose: sentences grouped into one document.")


def main(argv):
    del argv
    start = time.perf_counter()
    counts = _create()  # a bad flag or input is a ValueError: _cli.run says which, in one line
    elapsed = time.perf_counter() - start
    total = sum(counts.values())
    for path, n in counts.items():
        print(f"{path}: {n} instances")
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(
        f"{total} instances in {elapsed:.1f}s ({total / elapsed:.0f}/s); "
        f"peak RSS {peak_mb:.0f} MB (largest worker process {children_mb:.0f} MB)"
    )


def _create():
    config = PretrainingDataConfig(
        max_seq_length=FLAGS.max_seq_length,
        max_predictions_per_seq=FLAGS.max_predictions_per_seq,
        masked_lm_prob=FLAGS.masked_lm_prob,
        dupe_factor=FLAGS.dupe_factor,
        short_seq_prob=FLAGS.short_seq_prob,
        random_seed=FLAGS.random_seed,
        do_whole_word_mask=FLAGS.do_whole_word_mask,
        window_size=FLAGS.window_size,
        cycle_length=FLAGS.cycle_length,
        sentences_per_document=FLAGS.sentences_per_document,
    )
    return create_pretraining_data(
        text.expand_files(FLAGS.input),
        FLAGS.vocab_file,
        FLAGS.output,
        config,
        input_format=FLAGS.input_format,
        lowercase=FLAGS.do_lower_case,
        num_shards=FLAGS.num_shards,
        num_workers=FLAGS.num_workers,
    )


if __name__ == "__main__":
    _cli.run(main)
