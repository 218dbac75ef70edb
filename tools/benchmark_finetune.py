"""Fine-tuning throughput on real SST-2 sentences: length buckets vs padding to seq_length, vs keras-nlp.

    python tools/benchmark_finetune.py --glue_dir=../shared/data/glue --vocab_file=VOCAB --preset=bert_mini

Three runs over the same training sentences, batch and model sizes, in one
process, alternating rounds (the best round is reported):

* tfplm `glue/sst2`, batched by length (the default): short sentences pay for
  their own length;
* tfplm `glue/sst2` with `task.pad_to_seq_length=true` (static shapes);
* keras-nlp `BertTextClassifier` with its `BertTextClassifierPreprocessor`,
  which pads every sentence to `sequence_length`.

Prints training examples/s (tokenization in the tf.data pipeline included)
for each precision in --precisions (the Keras global policy of both sides),
and the bfloat16 / float32 ratio of each run.
"""

import time

import _benchmarks
import keras
import keras_nlp
import tensorflow as tf
from absl import app, flags

from tfplm import tasks
from tfplm.models import presets
from tfplm.tokenizers import read_vocabulary

FLAGS = flags.FLAGS
flags.DEFINE_string("glue_dir", "../shared/data/glue", "GLUE folder with SST-2/train.tsv.")
flags.DEFINE_string("vocab_file", None, "An uncased WordPiece vocab.txt.")
flags.DEFINE_string("preset", "bert_mini", "BERT preset (sizes of both models).")
flags.DEFINE_integer("seq_length", 128, "Longest packed input.")
flags.DEFINE_integer("batch_size", 32, "Examples per step.")
flags.DEFINE_integer("steps", 30, "Timed steps per round.")
flags.DEFINE_integer("rounds", 2, "Alternating rounds per case.")
flags.DEFINE_list("precisions", ["float32", "mixed_bfloat16"], "Keras dtype policies to compare.")


def tfplm_case(static):
    overrides = (
        f"task.glue_dir={FLAGS.glue_dir},task.vocab_file={FLAGS.vocab_file},task.preset={FLAGS.preset},"
        f"task.seq_length={FLAGS.seq_length},task.global_batch_size={FLAGS.batch_size},"
        f"task.pad_to_seq_length={str(static).lower()},runtime.jit_compile=false"
    )
    task = tasks.get("glue/sst2", overrides=overrides)
    model = task.compile(task.build_model())
    return model, task.build_inputs("train").repeat()


def keras_nlp_case():
    config = presets.get_preset(FLAGS.preset, "bert").config
    vocabulary = read_vocabulary(FLAGS.vocab_file)
    backbone = keras_nlp.models.BertBackbone(**_benchmarks.keras_nlp_sizes({**config, "vocab_size": len(vocabulary)}))
    preprocessor = keras_nlp.models.BertTextClassifierPreprocessor(
        keras_nlp.models.BertTokenizer(vocabulary=vocabulary, lowercase=True), sequence_length=FLAGS.seq_length
    )
    model = keras_nlp.models.BertTextClassifier(backbone, num_classes=2, preprocessor=None)
    model.compile(
        keras.optimizers.AdamW(3e-5), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=False
    )
    task = tasks.get("glue/sst2", overrides=f"task.glue_dir={FLAGS.glue_dir}")
    examples = task.examples("train")
    dataset = (
        tf.data.Dataset.from_tensor_slices((examples.texts, examples.labels))
        .shuffle(10_000)
        .batch(FLAGS.batch_size, drop_remainder=True)
        .map(lambda x, y: (preprocessor(x), y), num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
        .repeat()
    )
    return model, dataset


def time_steps(model, dataset):
    model.fit(dataset, steps_per_epoch=3, epochs=1, verbose=0)  # trace + warm up
    start = time.perf_counter()
    model.fit(dataset, steps_per_epoch=FLAGS.steps, epochs=1, verbose=0)
    return (time.perf_counter() - start) / FLAGS.steps


def main(argv):
    del argv
    if not FLAGS.vocab_file:
        raise app.UsageError("--vocab_file is required (an uncased WordPiece vocab.txt)")
    print(f"{FLAGS.preset}, SST-2 train sentences, seq_length {FLAGS.seq_length}, batch {FLAGS.batch_size}")
    results = {}
    for precision in FLAGS.precisions:
        keras.mixed_precision.set_global_policy(precision)
        cases = {
            "tfplm, batched by length": tfplm_case(static=False),
            "tfplm, padded to seq_length": tfplm_case(static=True),
            "keras-nlp BertTextClassifier": keras_nlp_case(),
        }
        best = _benchmarks.best_of_rounds(cases, time_steps, FLAGS.rounds)
        keras_nlp = best["keras-nlp BertTextClassifier"]
        for name, seconds in best.items():
            results[precision, name] = seconds
            print(
                f"  {precision:14} {name:30}: {seconds * 1e3:6.0f} ms/step  "
                f"{FLAGS.batch_size / seconds:6.0f} examples/s  ({keras_nlp / seconds:.2f}x keras-nlp)"
            )
    keras.mixed_precision.set_global_policy("float32")
    for (precision, name), seconds in results.items():
        if precision != "float32" and ("float32", name) in results:
            print(f"  {name} {precision} vs float32: {results['float32', name] / seconds:.2f}x")


if __name__ == "__main__":
    app.run(main)
