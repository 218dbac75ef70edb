"""Exports a trained or pretrained model for TF Serving, TF Hub and TFLite, and proves it.

    python tools/export.py --experiment=glue/sst2 --model_dir=runs/sst2 --export_dir=serving \
        --format=all --quantize=dynamic_int8
    python tools/export.py --pretrained=runs/minilm --export_dir=serving --texts_file=texts.txt

Every run writes EXPORT_DIR/export_report.json and prints its table: each
artifact against the Keras model on held-out examples (the task's validation
data, or --texts_file). It exits non-zero when an artifact misses its bar,
unless --allow_mismatch.
"""

import sys

from absl import app, flags

from tfplm import models, tasks
from tfplm.export import exporter, lite, report
from tfplm.training import trainer

FLAGS = flags.FLAGS
flags.DEFINE_string("experiment", None, "The experiment --model_dir was trained with (e.g. glue/sst2).")
flags.DEFINE_string("model_dir", None, "A tools/train.py model_dir: its config.yaml and best (or latest) weights.")
flags.DEFINE_string("pretrained", None, "Or: a checkpoint directory from_pretrained reads.")
flags.DEFINE_string("export_dir", None, "Output root (TF Serving's model base path is EXPORT_DIR/NAME).")
flags.DEFINE_enum("format", "all", list(exporter.FORMATS), "What to write.")
flags.DEFINE_string("model_name", None, "Folder and served model name (default: the class name in snake case).")
flags.DEFINE_integer("version", None, "Version to write (default: the next one).")
flags.DEFINE_enum("quantize", "none", list(lite.QUANTIZATIONS), "TFLite quantization, written beside float32.")
flags.DEFINE_list("tflite_flavours", list(lite.FLAVOURS), "TFLite inputs: ids (builtin ops) and/or text (tensorflow_text ops).")
flags.DEFINE_integer("seq_length", None, "TFLite static sequence length (default: the model's preprocessor's).")
flags.DEFINE_integer("batch_size", 1, "TFLite static batch size (TFLite files take one example per call).")
flags.DEFINE_string("texts_file", None, "Held-out examples, one per line (text<TAB>text_b for pairs).")
flags.DEFINE_integer("num_examples", 200, "Held-out examples in the report.")
flags.DEFINE_list("label_names", None, "Class names for --pretrained classifiers (default 0, 1, ...).")
flags.DEFINE_bool("allow_mismatch", False, "Exit 0 even when an artifact misses its bar.")


def _texts_from_file(path, limit):
    with open(path, encoding="utf-8") as f:
        rows = [line.rstrip("\n").split("\t") for line in f if line.strip()][:limit]
    if any(len(r) > 2 for r in rows) or len({len(r) for r in rows}) > 1:
        raise ValueError(f"{path}: expected one text per line, or text<TAB>text_b on every line")
    return [r[0] for r in rows], ([r[1] for r in rows] if rows and len(rows[0]) == 2 else None)


def _load():
    """(model, texts, texts_b, calibration texts) from the flags."""
    if bool(FLAGS.model_dir) == bool(FLAGS.pretrained):
        raise ValueError("pass exactly one of --model_dir (with --experiment) or --pretrained")
    texts = texts_b = calibration = None
    if FLAGS.texts_file:
        texts, texts_b = _texts_from_file(FLAGS.texts_file, FLAGS.num_examples)
    if FLAGS.pretrained:
        model = models.from_pretrained(FLAGS.pretrained)
        if FLAGS.label_names:
            model.label_names = FLAGS.label_names
        if texts is None:
            raise ValueError("--pretrained needs --texts_file: held-out examples for the export report")
        return model, texts, texts_b, None
    if not FLAGS.experiment:
        raise ValueError("--model_dir needs --experiment, the one it was trained with")
    task = tasks.get(FLAGS.experiment, config_files=[f"{FLAGS.model_dir}/config.yaml"])
    model = trainer.load_trained(task, FLAGS.model_dir)
    if texts is None:
        if not hasattr(task, "examples"):
            raise ValueError(f"{FLAGS.experiment} has no labelled text examples: pass --texts_file")
        validation = task.examples("validation")
        texts = validation.texts[: FLAGS.num_examples]
        texts_b = validation.texts_b[: FLAGS.num_examples] if validation.texts_b else None
        train = task.examples("train")
        calibration = train.texts[:200] if not train.texts_b else list(zip(train.texts[:200], train.texts_b[:200]))
    return model, texts, texts_b, calibration


def main(argv):
    del argv
    if not FLAGS.export_dir:
        sys.exit("--export_dir is required")
    if FLAGS.batch_size != 1:
        sys.exit("--batch_size: TFLite files here take one example per call (batch 1); SavedModels take any batch")
    try:
        model, texts, texts_b, calibration = _load()
        result = exporter.export_model(
            model,
            FLAGS.export_dir,
            texts,
            texts_b,
            formats=(FLAGS.format,),
            model_name=FLAGS.model_name,
            version=FLAGS.version,
            quantize=FLAGS.quantize,
            tflite_flavours=FLAGS.tflite_flavours,
            seq_length=FLAGS.seq_length,
            representative_texts=calibration,
        )
    except ValueError as error:
        sys.exit(f"error: {error}")
    print(report.format_table(result))
    print(f"report: {FLAGS.export_dir}/{exporter.REPORT_FILE}")
    missed = report.failures(result)
    if missed and not FLAGS.allow_mismatch:
        sys.exit("export missed its bars (--allow_mismatch to accept):\n  " + "\n  ".join(missed))
    return 0


if __name__ == "__main__":
    app.run(main)
