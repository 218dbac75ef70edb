"""Learns a WordPiece vocabulary from raw text files.

    python tools/build_vocab.py --input='../shared/data/corpus/books/*.txt' \
        --vocab_size=8000 --output=vocab.txt

Gutenberg headers and byte-order marks are removed; each paragraph is one text.
"""

import itertools
import time

from absl import app, flags

from tfplm.data import text
from tfplm.tokenizers import build_wordpiece_vocab

FLAGS = flags.FLAGS
flags.DEFINE_string("input", None, "Glob(s) of text files, comma-separated.", required=True)
flags.DEFINE_integer("vocab_size", 8000, "Target vocabulary size.")
flags.DEFINE_string("output", None, "Where to write vocab.txt.", required=True)
flags.DEFINE_bool("lowercase", True, "Learn an uncased vocabulary.")
flags.DEFINE_integer("max_lines", 0, "Use at most this many paragraphs (0 = all).")


def main(argv):
    del argv
    start = time.perf_counter()
    files = text.expand_files(FLAGS.input)
    lines = text.iter_lines(files)
    if FLAGS.max_lines:
        lines = itertools.islice(lines, FLAGS.max_lines)
    vocabulary = build_wordpiece_vocab(list(lines), FLAGS.vocab_size, lowercase=FLAGS.lowercase)
    with open(FLAGS.output, "w", encoding="utf-8") as f:
        f.write("\n".join(vocabulary) + "\n")
    print(
        f"wrote {len(vocabulary)} tokens from {len(files)} files to {FLAGS.output} "
        f"in {time.perf_counter() - start:.1f}s"
    )


if __name__ == "__main__":
    app.run(main)
