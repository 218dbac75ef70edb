"""How fast the pretraining input pipelines produce batches, to compare with a training step.

    python tools/benchmark_input.py --records='runs/data/books-*' --text='../shared/data/corpus/books/*.txt' \
        --vocab_file=runs/vocab.txt

Prints examples/s of the TFRecord reader and of dynamic masking from raw text,
batch 32, sequence length 128. A pipeline keeps up if it makes batches faster
than the model consumes them (BENCHMARKS.md has the training step times).
"""

import time

from absl import app, flags

from tfplm.data import masking, pretraining_records
from tfplm.tokenizers import WordPieceTokenizer

FLAGS = flags.FLAGS
flags.DEFINE_string("records", None, "BERT pretraining TFRecords (glob).", required=True)
flags.DEFINE_string("text", None, "Raw text files (glob) for dynamic masking.", required=True)
flags.DEFINE_string("vocab_file", None, "WordPiece vocab.txt.", required=True)
flags.DEFINE_integer("batches", 50, "Batches to time after 5 warm-up batches.")


def rate(dataset):
    iterator = iter(dataset)
    for _ in range(5):
        next(iterator)
    start = time.perf_counter()
    for _ in range(FLAGS.batches):
        next(iterator)
    return FLAGS.batches * 32 / (time.perf_counter() - start)


def main(argv):
    del argv
    tokenizer = WordPieceTokenizer(FLAGS.vocab_file)
    records = pretraining_records.bert_pretraining_dataset(FLAGS.records, 128, 20, 32, is_training=True)
    dynamic = masking.dynamic_masking_dataset(
        FLAGS.text, tokenizer, 128, 20, 32, is_training=True, input_format="prose"
    )
    print(f"TFRecord reader:             {rate(records):8.0f} examples/s")
    print(f"dynamic masking of raw text: {rate(dynamic):8.0f} examples/s")


if __name__ == "__main__":
    app.run(main)
