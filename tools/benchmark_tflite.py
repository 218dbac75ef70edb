"""TFLite float32 against its quantized files: size, batch-1 latency, label agreement with the Keras model.

    python tools/benchmark_tflite.py --model=/tmp/sst2/best \
        --dev_file=../shared/data/glue/SST-2/dev.tsv \
        --calibration_file=../shared/data/glue/SST-2/train.tsv --threads=1,2 --flavours=ids,text

`--model` is a checkpoint folder `models.from_pretrained` reads (a
tools/train.py run's `best/`) or a `.keras` file. Both sides run in this one
process: the Keras model labels every dev sentence, then each file is converted
(`tfplm.export.lite.convert`: float32, dynamic_int8, int8) and run on the
same sentences. Per file it prints the size (MB, % of the float32 file of the
same flavour), the median latency of one interpreter call (batch 1, the
tokenized sentence for "ids", the string for "text", after warm-up) at each
--threads and its speed-up over float32, and the share of dev labels that
agree with the Keras model. "int8" calibrates on --num_calibration sentences
drawn (seeded) from --calibration_file (the "text" file takes the ranges
of the "ids" one, see `lite.convert`). Latency is timed in rounds over all
files, so that load from other processes falls on every file alike.

Dev and calibration files are GLUE TSVs with a header row: the column named
`sentence` is read.
"""

import _cli

_cli.quiet()

import csv  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402

from tfplm import models  # noqa: E402
from tfplm.export import lite  # noqa: E402
from tfplm.tokenizers import BertPreprocessor  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "A from_pretrained checkpoint folder or a .keras file (a BertClassifier).")
flags.DEFINE_string("dev_file", None, "GLUE TSV to measure label agreement on (SST-2 dev.tsv: 872 sentences).")
flags.DEFINE_string("calibration_file", None, "GLUE TSV to draw int8 calibration sentences from (SST-2 train.tsv).")
flags.DEFINE_integer("num_calibration", 300, "Calibration sentences for int8.")
flags.DEFINE_list("threads", ["1", "2"], "Interpreter thread counts to time.")
flags.DEFINE_list("flavours", list(lite.FLAVOURS), "TFLite flavours: ids and/or text.")
flags.DEFINE_list("quantizations", ["none", "dynamic_int8", "int8"], "Files to write; 'none' (float32) is the baseline.")
flags.DEFINE_integer("latency_sentences", 200, "Dev sentences timed per file and thread count (after 10 warm-up calls).")
flags.DEFINE_integer("seq_length", None, "Static sequence length (default: the model's preprocessor's).")
flags.DEFINE_string("output_dir", None, "Where the files go (default: a temporary folder).")


def _sentences(path):
    with open(path, encoding="utf-8") as f:
        rows = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    column = rows[0].index("sentence")
    return [row[column] for row in rows[1:]]


def _load(path):
    if path.endswith(".keras"):
        import keras

        return keras.models.load_model(path)
    return models.from_pretrained(path)


def _keras_labels(model, texts, seq_length):
    preprocessor = BertPreprocessor(model.tokenizer, seq_length=seq_length)
    return np.concatenate(
        [
            np.argmax(model(preprocessor(tf.constant(texts[i : i + 64])), training=False), axis=-1)
            for i in range(0, len(texts), 64)
        ]
    )


def _latency_ms(runner, feeds):
    for feed in feeds[:10]:
        runner(**feed)
    times = []
    for feed in feeds:
        start = time.perf_counter()
        runner(**feed)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main(argv):
    if len(argv) > 1:
        raise ValueError(f"unexpected argument(s) {' '.join(argv[1:])}; flags are --name=value")
    if not FLAGS.model or not FLAGS.dev_file:
        raise ValueError("--model and --dev_file are required")
    if "none" not in FLAGS.quantizations:
        raise ValueError("--quantizations must include none: float32 is what the others are compared with")
    model = _load(FLAGS.model)
    seq_length = FLAGS.seq_length or model.preprocessor.seq_length
    texts = _sentences(FLAGS.dev_file)
    calibration = None
    if "int8" in FLAGS.quantizations:
        if not FLAGS.calibration_file:
            raise ValueError("--quantizations includes int8: pass --calibration_file")
        calibration = random.Random(0).sample(_sentences(FLAGS.calibration_file), FLAGS.num_calibration)
    threads = [int(n) for n in FLAGS.threads]
    expected = _keras_labels(model, texts, seq_length)
    output_dir = FLAGS.output_dir or tempfile.mkdtemp(prefix="benchmark_tflite_")
    print(f"{type(model).__name__} seq_length={seq_length}; {len(texts)} dev sentences; files in {output_dir}")
    print(f"machine: {os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    files = []  # (flavour, quantize, size, runs by thread count, feeds, agreement)
    for flavour in FLAGS.flavours:
        for quantize in FLAGS.quantizations:
            path = os.path.join(output_dir, flavour, f"{quantize}.tflite")
            start = time.perf_counter()
            with _cli.native_logs_hidden():
                lite.convert(
                    model, path, flavour=flavour, quantize=quantize, seq_length=seq_length,
                    representative_texts=calibration if quantize == "int8" else None,
                )
                runs = {n: lite.TFLiteModel(path, model.preprocessor, num_threads=n) for n in threads}
                first = runs[threads[0]]
                labels = np.argmax(first(texts)["probabilities"], axis=-1)
            feeds = list(first._feeds(texts[: FLAGS.latency_sentences], None))  # noqa: SLF001 - the runner's own inputs
            agreement = float(np.mean(labels == expected))
            print(f"  {flavour} {quantize}: written and run in {time.perf_counter() - start:.0f}s", flush=True)
            files.append((flavour, quantize, os.path.getsize(path), runs, feeds, agreement))
    # Timed in rounds, every file once per sentence, so that a change in the
    # machine's load (it may be shared) falls on all files alike.
    latency = {}
    for n in threads:
        times = [[] for _ in files]
        with _cli.native_logs_hidden():
            for i in range(-10, FLAGS.latency_sentences):  # 10 warm-up calls
                for f, (_, _, _, runs, feeds, _) in enumerate(files):
                    runner = runs[n]._runner  # noqa: SLF001
                    start = time.perf_counter()
                    runner(**feeds[max(i, 0)])
                    if i >= 0:
                        times[f].append(time.perf_counter() - start)
        for f in range(len(files)):
            latency[f, n] = 1000 * float(np.median(times[f]))
    print(
        f"{'flavour':7} {'quantize':13} {'MB':>7} {'% f32':>6} "
        + " ".join(f"{f'p50 ms {n}t':>10} {f'x f32 {n}t':>9}" for n in threads)
        + f" {'agreement':>10}"
    )
    for f, (flavour, quantize, size, _, _, agreement) in enumerate(files):
        base = next(i for i, row in enumerate(files) if row[0] == flavour and row[1] == "none")
        cells = " ".join(f"{latency[f, n]:10.2f} {latency[base, n] / latency[f, n]:9.2f}" for n in threads)
        print(
            f"{flavour:7} {quantize:13} {size / 1e6:7.2f} {100 * size / files[base][2]:5.1f}% {cells} "
            f"{100 * agreement:9.2f}%"
        )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    _cli.run(main)
