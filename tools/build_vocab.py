"""Learns a vocabulary from raw text files: WordPiece (BERT) or SentencePiece (GPT).

    python tools/build_vocab.py --input='../shared/data/corpus/books/*.txt' \
        --vocab_size=8000 --output=vocab.txt
    python tools/build_vocab.py --input=... --tokenizer=sentencepiece \
        --vocab_size=8000 --output=spm.model

Gutenberg headers and byte-order marks are removed; each paragraph is one text.
Input that is not UTF-8, holds no text, or a --vocab_size with no room for
learned tokens is an error, and nothing is written; the output appears whole
or not at all.
"""

import _cli

_cli.quiet()

import itertools  # noqa: E402
import time  # noqa: E402

from absl import flags  # noqa: E402

from tfplm import publish  # noqa: E402
from tfplm.data import documents, text  # noqa: E402
from tfplm.tokenizers import build_wordpiece_vocab, train_sentencepiece  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("input", None, "Glob(s) of text files, comma-separated.", required=True)
flags.DEFINE_integer("vocab_size", 8000, "Target vocabulary size.")
flags.DEFINE_string("output", None, "vocab.txt (WordPiece) or NAME.model (SentencePiece).", required=True)
flags.DEFINE_enum("tokenizer", "wordpiece", ["wordpiece", "sentencepiece"], "What to learn.")
flags.DEFINE_bool("lowercase", True, "Learn an uncased vocabulary.")
flags.DEFINE_integer("max_lines", 0, "Use at most this many paragraphs (0 = all).")


def main(argv):
    del argv
    start = time.perf_counter()
    files = text.expand_files(FLAGS.input)
    lines = documents.paragraphs(files)  # bytes that are not UTF-8: an error naming the file and line
    if FLAGS.max_lines:
        lines = itertools.islice(lines, FLAGS.max_lines)
    first = next(lines, None)
    if first is None:
        raise ValueError(f"--input={FLAGS.input}: the {len(files)} file(s) hold no text; nothing was written")
    lines = itertools.chain([first], lines)
    if FLAGS.tokenizer == "sentencepiece":
        if not FLAGS.output.endswith(".model"):
            raise ValueError(f"--output={FLAGS.output}: a SentencePiece model's name must end in .model")
        train_sentencepiece(lines, FLAGS.vocab_size, FLAGS.output[: -len(".model")])
        size = FLAGS.vocab_size
    else:
        vocabulary = build_wordpiece_vocab(list(lines), FLAGS.vocab_size, lowercase=FLAGS.lowercase)
        publish.write_text(FLAGS.output, "\n".join(vocabulary) + "\n")
        size = len(vocabulary)
    print(f"wrote {size} tokens from {len(files)} files to {FLAGS.output} in {time.perf_counter() - start:.1f}s")


if __name__ == "__main__":
    _cli.run(main)
