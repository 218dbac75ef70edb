"""The end-to-end demo on data shipped in the repo (tools/demo_data), on a CPU:

1. learn a WordPiece vocabulary from two public-domain novels;
2. write BERT pretraining TFRecords (masked LM + next sentence);
3. pretrain a tiny BERT with `tools/train.py`'s library call;
4. fine-tune the pretrained model it leaves (tfplm's format) with the `glue/sst2`
   experiment on a 3,000-sentence SST-2 sample, scored on the real SST-2 dev set;
5. save the best classifier as a `.keras` model that takes raw text;
6. export it for TF Serving (raw text in), TF Hub and TFLite (float32 and
   dynamic-range int8), each checked against the Keras model on SST-2 dev.

    python tools/demo.py --output_dir=demo_output

It prints its steps, progress, metrics, paths and the export report;
`--verbosity=1` adds TensorFlow's own logs.
"""

import _cli

_cli.quiet()

import os  # noqa: E402
import time  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402

from tfplm import tasks  # noqa: E402
from tfplm.data import text  # noqa: E402
from tfplm.data.bert_instances import PretrainingDataConfig  # noqa: E402
from tfplm.data.pretraining_records import create_pretraining_data  # noqa: E402
from tfplm.export import exporter, report  # noqa: E402
from tfplm.tokenizers import build_wordpiece_vocab  # noqa: E402
from tfplm.training import trainer  # noqa: E402

FLAGS = flags.FLAGS
DATA = os.path.join(os.path.dirname(os.path.abspath(__file__)), "demo_data")
flags.DEFINE_string("output_dir", "demo_output", "Where the artifacts go.")
flags.DEFINE_string("data_dir", DATA, "Folder with books.txt and SST-2/{train,dev}.tsv.")
flags.DEFINE_integer("vocab_size", 4000, "WordPiece vocabulary size.")
flags.DEFINE_integer("pretrain_steps", 300, "Pretraining steps.")
flags.DEFINE_integer("finetune_epochs", 3, "Fine-tuning epochs.")
flags.DEFINE_integer("seq_length", 64, "Tokens per example.")


def step(title):
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def main(argv):
    del argv
    out = os.path.abspath(FLAGS.output_dir)
    os.makedirs(out, exist_ok=True)
    books = os.path.join(FLAGS.data_dir, "books.txt")

    start = step("1. vocabulary")
    vocab_file = os.path.join(out, "vocab.txt")
    vocabulary = build_wordpiece_vocab(list(text.iter_lines([books])), FLAGS.vocab_size)
    with open(vocab_file, "w", encoding="utf-8") as f:
        f.write("\n".join(vocabulary) + "\n")
    print(f"{len(vocabulary)} WordPiece tokens -> {vocab_file} ({time.perf_counter() - start:.0f}s)")

    start = step("2. pretraining data")
    config = PretrainingDataConfig(
        max_seq_length=FLAGS.seq_length, max_predictions_per_seq=10, dupe_factor=3, window_size=50
    )
    counts = create_pretraining_data(
        [books], vocab_file, os.path.join(out, "data", "books"), config, input_format="prose", num_shards=1
    )
    print(f"{sum(counts.values())} instances -> {os.path.join(out, 'data')} ({time.perf_counter() - start:.0f}s)")

    start = step("3. pretrain bert_tiny (masked LM + next sentence)")
    data_glob = os.path.join(out, "data", "books-*")
    task = tasks.get(
        "bert/pretraining",
        overrides=",".join(
            [
                f"task.vocab_file={vocab_file}",
                f"task.train_data.input_path={data_glob}",
                f"task.validation_data.input_path={data_glob}",
                f"task.train_data.seq_length={FLAGS.seq_length}",
                f"task.validation_data.seq_length={FLAGS.seq_length}",
                "task.train_data.max_predictions_per_seq=10",
                "task.validation_data.max_predictions_per_seq=10",
                f"trainer.train_steps={FLAGS.pretrain_steps}",
                f"trainer.steps_per_loop={max(FLAGS.pretrain_steps // 5, 1)}",
                "trainer.eval_steps=20",
                f"trainer.log_every_steps={max(FLAGS.pretrain_steps // 10, 1)}",
                "trainer.optimizer.learning_rate=2e-3",
            ]
        ),
    )
    pretrain_dir = os.path.join(out, "pretrain")
    results = trainer.run_experiment(task, "train_and_eval", pretrain_dir, progress="lines")
    print(
        f"MLM accuracy {results['metrics']['mlm_logits_accuracy']:.3f}, "
        f"NSP accuracy {results['metrics']['nsp_logits_accuracy']:.3f} ({time.perf_counter() - start:.0f}s)"
    )

    start = step("4. fine-tune glue/sst2 on 3,000 SST-2 sentences, score on the real dev set")
    pretrained = os.path.join(pretrain_dir, "pretrained")  # written when training ends
    print(f"pretrained BERT -> {pretrained}")
    glue = tasks.get(
        "glue/sst2",
        overrides=",".join(
            [
                f"task.glue_dir={FLAGS.data_dir}",
                f"task.init_checkpoint={pretrained}",
                f"task.seq_length={FLAGS.seq_length}",
                f"task.epochs={FLAGS.finetune_epochs}",
                "trainer.optimizer.learning_rate=5e-4",
            ]
        ),
    )
    finetune_dir = os.path.join(out, "sst2")
    results = trainer.run_experiment(glue, "train_and_eval", finetune_dir, progress="lines")
    print(
        f"SST-2 dev accuracy {results['metrics']['accuracy']:.3f} on "
        f"{results['data']['examples']} sentences ({time.perf_counter() - start:.0f}s)"
    )
    classifier = trainer.load_trained(glue, finetune_dir)
    preprocessor = classifier.preprocessor

    step("5. save: a .keras model that takes raw text")
    text_input = keras.Input(shape=(), dtype="string", name="text")
    end_to_end = keras.Model(text_input, classifier(preprocessor(text_input)))
    path = os.path.join(out, "sst2_classifier.keras")
    end_to_end.save(path)
    restored = keras.models.load_model(path)
    texts = ["a gorgeous, witty, moving film", "dull and lifeless"]
    probe = tf.constant(texts)
    np.testing.assert_allclose(restored(probe), end_to_end(probe), atol=1e-6)
    logits = np.asarray(restored(probe), dtype=np.float64).round(2).tolist()
    print(f"{path}: logits for {texts} = {logits}")

    start = step("6. export for TF Serving, TF Hub and TFLite; check each on 200 SST-2 dev sentences")
    serving_dir = os.path.join(out, "serving")
    with _cli.native_logs_hidden():  # the TFLite runtimes log as they start
        # A demo publishes what it made and shows the report, bars missed or not.
        result = exporter.export_model(
            classifier, serving_dir, glue.held_out_examples(200), model_name="sst2", quantize="dynamic_int8",
            allow_mismatch=True,
        )
    print(report.format_table(result))
    missed = report.failures(result)
    print(("missed bars: " + "; ".join(missed)) if missed else "every artifact met its bar", f"({time.perf_counter() - start:.0f}s)")
    print(f"TF Serving: docker run -p 8501:8501 -v {serving_dir}/sst2:/models/sst2 -e MODEL_NAME=sst2 tensorflow/serving")
    print(f"\nartifacts in {out}")


if __name__ == "__main__":
    _cli.run(main)
