"""Exports a trained or pretrained model for TF Serving, TF Hub and TFLite, and proves it.

    python tools/export.py --model_dir=runs/sst2 --export_dir=serving --quantize=dynamic_int8
    python tools/export.py --pretrained=runs/minilm --export_dir=serving

`--model_dir` is a tools/train.py folder: its config.yaml names the experiment
and its settings (`--params_override` changes them, e.g. a moved
task.glue_dir), and its best (else latest) weights are exported. The served
model's name is the experiment's task (`sst2` for glue/sst2) or the
`--pretrained` folder's name, so TF Serving serves EXPORT_DIR/NAME.

Every run writes EXPORT_DIR/export_report.json and prints its table: each
artifact against the Keras model on held-out examples: `--texts_file`, else
the task's held-out data, else a small built-in set of public-domain sentences
(prompts for a GPT). Nothing is published before it passes: each version is
built and checked in a hidden temporary folder and renamed into place only if
every artifact meets its bar; otherwise the run exits non-zero and publishes
nothing, unless --allow_mismatch (which publishes with the report inside each
version). Every flag and input is checked before anything is written; one
export at a time writes to an EXPORT_DIR.
"""

import _cli

_cli.quiet()

import os  # noqa: E402

from absl import flags  # noqa: E402

from tfplm import models, tasks  # noqa: E402
from tfplm.export import exporter, lite, report  # noqa: E402
from tfplm.training import trainer  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "A tools/train.py model_dir: its config.yaml and best (or latest) weights.")
flags.DEFINE_string("experiment", None, "The experiment --model_dir was trained with (default: the one its config.yaml names).")
flags.DEFINE_string("params_override", "", "Dotted overrides of --model_dir's config: 'task.glue_dir=...'.")
flags.DEFINE_string("pretrained", None, "Or: a checkpoint directory from_pretrained reads (tfplm, Hugging Face, Google BERT, keras-nlp).")
flags.DEFINE_string("export_dir", None, "Output root (TF Serving's model base path is EXPORT_DIR/NAME).")
flags.DEFINE_enum("format", "all", ["all", *exporter.FORMATS], "What to write (all: every format that can carry the model).")
flags.DEFINE_string("model_name", None, "Folder and served model name (default: the experiment's task, or the --pretrained folder's name).")
flags.DEFINE_integer("version", None, "Version to write (default: the next one).")
flags.DEFINE_enum("quantize", "none", list(lite.QUANTIZATIONS), "TFLite quantization, written beside float32.")
flags.DEFINE_list("tflite_flavours", list(lite.FLAVOURS), "TFLite inputs: ids (builtin ops) and/or text (tensorflow_text ops).")
flags.DEFINE_integer("seq_length", None, "TFLite static sequence length (default: the model's preprocessor's).")
flags.DEFINE_integer("batch_size", 1, "TFLite static batch size (TFLite files take one example per call).")
flags.DEFINE_string("texts_file", None, "Held-out examples, one per line (text<TAB>text_b for pair models).")
flags.DEFINE_string("calibration_file", None, "Texts to calibrate --quantize=int8 on, as --texts_file (default: the held-out examples).")
flags.DEFINE_integer("num_examples", 200, "Held-out examples in the report, at most.")
flags.DEFINE_list("label_names", None, "Class names for a --pretrained classifier (default: its own, else 0, 1, ...).")
flags.DEFINE_bool("allow_mismatch", False, "Publish and exit 0 even when an artifact misses its bar.")

# Held-out examples for a model that comes without held-out data (prompts for
# a GPT): lines of public-domain books (Austen, Dickens, Melville, Carroll,
# Twain, Shelley, Doyle, Wells, Verne, Thoreau) and plain sentences written
# for this list.
HELD_OUT_SENTENCES = (
    "It is a truth universally acknowledged, that a single man in possession of a good fortune, must be in want of a wife.",
    "It was the best of times, it was the worst of times.",
    "Call me Ishmael.",
    "Alice was beginning to get very tired of sitting by her sister on the bank.",
    "You don't know about me without you have read a book by the name of The Adventures of Tom Sawyer.",
    "I beheld the wretch, the miserable monster whom I had created.",
    "The sea was calm and the wind had fallen with the setting of the sun.",
    "Mr. Sherlock Holmes was seated at the breakfast table.",
    "No one would have believed in the last years of the nineteenth century that this world was being watched.",
    "The year 1866 was signalised by a remarkable incident.",
    "The jungle was quiet, and the wolves slept in the warm afternoon.",
    "I went to the woods because I wished to live deliberately.",
    "The old house stood alone at the end of a long and muddy lane.",
    "She laughed at the letter, folded it twice and put it in the fire.",
    "The captain looked at the clouds and ordered the sails to be taken in.",
    "A dull and tedious evening ended at last, to the relief of everyone.",
    "What a wonderful and moving story, told with warmth and wit.",
    "The train was late, the room was cold, and the dinner was terrible.",
    "He walked slowly down the hill towards the village and the river.",
    "There was nothing so very remarkable in that; nor did Alice think it so very much out of the way.",
)


def _read_examples(path, inputs, limit):
    """{input name: [str]} from a file: one example per line, inputs separated by tabs."""
    with open(path, encoding="utf-8") as f:
        lines = [line.rstrip("\r\n") for line in f if line.strip()][:limit]
    if not lines:
        raise ValueError(f"{path}: no examples (expected one per line)")
    if len(inputs) == 1:
        return {inputs[0]: lines}
    rows = [line.split("\t") for line in lines]
    for number, row in enumerate(rows, 1):
        if len(row) != len(inputs):
            raise ValueError(
                f"{path}: example {number} has {len(row)} column(s); this model takes {'<TAB>'.join(inputs)} on every line"
            )
    return {name: [row[i] for row in rows] for i, name in enumerate(inputs)}


def held_out_sentences(inputs, limit):
    """The built-in examples for a model's `inputs`: sentences, or for a pair
    model each sentence with the next."""
    sentences = list(HELD_OUT_SENTENCES)
    if len(inputs) == 1:
        return {inputs[0]: sentences[:limit]}
    if len(inputs) == 2:
        return {inputs[0]: sentences[:-1][:limit], inputs[1]: sentences[1:][:limit]}
    raise ValueError(f"no built-in examples for a model that takes {', '.join(inputs)}; pass --texts_file")


def _with_label_names(model, label_names):
    """`model` rebuilt with `label_names` in its config (and its weights)."""
    config = model.get_config()
    if "label_names" not in config:
        raise ValueError(f"--label_names is for classifiers; {FLAGS.pretrained} holds a {type(model).__name__}")
    rebuilt = type(model).from_config({**config, "label_names": label_names})
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def _load():
    """(model, served name, held-out examples or None) from the flags."""
    if bool(FLAGS.model_dir) == bool(FLAGS.pretrained):
        raise ValueError("pass exactly one of --model_dir (a tools/train.py run) or --pretrained (a checkpoint directory)")
    if FLAGS.pretrained:
        if FLAGS.experiment or FLAGS.params_override:
            raise ValueError("--experiment and --params_override go with --model_dir, not --pretrained")
        model = models.from_pretrained(FLAGS.pretrained)
        if FLAGS.label_names:
            model = _with_label_names(model, FLAGS.label_names)
        return model, os.path.basename(os.path.normpath(FLAGS.pretrained)), None
    if FLAGS.label_names:
        raise ValueError("--label_names is for --pretrained classifiers; a trained model has its task's labels")
    if not os.path.isdir(FLAGS.model_dir):
        raise ValueError(f"--model_dir {FLAGS.model_dir!r} is not a folder")
    experiment, config = _cli.experiment_config(FLAGS.experiment, FLAGS.model_dir, overrides=[FLAGS.params_override])
    task = _cli.build_task(experiment, config)
    model = trainer.load_trained(task, FLAGS.model_dir)
    return model, experiment.rsplit("/", 1)[-1], task.held_out_examples(FLAGS.num_examples)


def main(argv):
    if len(argv) > 1:
        raise ValueError(f"unexpected argument(s) {' '.join(argv[1:])}; flags are --name=value")
    if not FLAGS.export_dir:
        raise ValueError("--export_dir is required: where the exports and export_report.json go")
    if FLAGS.batch_size != 1:
        raise ValueError("--batch_size: TFLite files here take one example per call (batch 1); SavedModels take any batch")
    model, name, examples = _load()
    inputs = tuple(tasks.serving_head(model).inputs)
    if FLAGS.texts_file:
        examples = _read_examples(FLAGS.texts_file, inputs, FLAGS.num_examples)
    elif not examples:
        examples = held_out_sentences(inputs, FLAGS.num_examples)
    calibration = None
    if FLAGS.calibration_file:
        columns = _read_examples(FLAGS.calibration_file, inputs, 10**9)
        calibration = list(zip(*columns.values())) if len(columns) == 2 else next(iter(columns.values()))
    with _cli.native_logs_hidden():  # the TFLite runtimes log as they start
        result = exporter.export_model(
            model,
            FLAGS.export_dir,
            examples,
            formats=(FLAGS.format,),
            model_name=FLAGS.model_name or name,
            version=FLAGS.version,
            quantize=FLAGS.quantize,
            tflite_flavours=FLAGS.tflite_flavours,
            seq_length=FLAGS.seq_length,
            representative_texts=calibration,
            allow_mismatch=FLAGS.allow_mismatch,
        )
    print(report.format_table(result))
    for row in result["artifacts"]:
        if row["path"]:
            print(f"{row['name']}: {row['path']}")
    print(f"report: {os.path.join(FLAGS.export_dir, exporter.REPORT_FILE)}")
    missed = report.failures(result)
    if missed and not result["published"]:
        raise SystemExit(
            "export missed its bars, so nothing was published (--allow_mismatch publishes anyway):\n  " + "\n  ".join(missed)
        )
    return 0


if __name__ == "__main__":
    _cli.run(main)
