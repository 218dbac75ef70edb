"""Teacher vs student of a `distill/*` run, on the same held-out data: the distillation report.

For the teacher (the run's `task.teacher`) and the student (`model_dir/best`):
accuracy on the task's whole validation set (Keras model, and the int8
text-in TFLite file), parameters, SavedModel and text-in TFLite sizes
(float32, dynamic-range int8) and latency per sentence (batch 1, median of
20 calls on held-out sentences, as the export report measures; Keras, SavedModel,
TFLite; and the int8 file's mean over the whole validation set).
Each model is exported with `tfplm.export.export_model` (so every artifact
is checked against its Keras model, export_report.json beside it) under
OUTPUT_DIR/{teacher,student}; the comparison goes to
OUTPUT_DIR/distillation_report.json and a Markdown table to stdout.

    python tools/distillation_report.py --model_dir=runs/sst2_student --output_dir=runs/sst2_student_report
"""

import _cli

_cli.quiet()

import json  # noqa: E402
import os  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from tfplm import publish, tasks  # noqa: E402
from tfplm.export import TFLiteModel, exporter  # noqa: E402
from tfplm.models import from_pretrained  # noqa: E402
from tfplm.training import trainer  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_string("model_dir", None, "A distill/* run of tools/train.py (its config.yaml and best/).")
flags.DEFINE_string("output_dir", None, "Where the exports and distillation_report.json go.")
flags.DEFINE_string("params_override", "", "Dotted overrides of --model_dir's config (e.g. task.glue_dir=...).")
flags.DEFINE_integer("seq_length", None, "TFLite static sequence length (default: the run's task.seq_length).")
flags.DEFINE_integer("num_examples", 200, "Held-out sentences in each export report and latency measurement.")


def _accuracy(probabilities, labels):
    return float(np.mean(np.argmax(probabilities, -1) == np.asarray(labels)))


def _row(name, model, examples, labels, report):
    """One model's line of the comparison, from its export report."""
    artifacts = {row["name"]: row for row in report["artifacts"]}
    int8 = TFLiteModel(artifacts["tflite_text_dynamic_int8"]["path"], preprocessor=model.preprocessor)
    start = time.perf_counter()
    int8_probabilities = int8(examples["text"], examples.get("text_b"))["probabilities"]
    int8_seconds = time.perf_counter() - start
    head = tasks.serving_head(model)
    keras_probabilities = np.concatenate(
        [head.reference({k: v[i : i + 256] for k, v in examples.items()})["probabilities"] for i in range(0, len(labels), 256)]
    )

    def measured(key, field):
        return artifacts[key][field] if key in artifacts else None

    return {
        "model": name,
        "parameters": int(model.count_params()),
        "accuracy_keras": _accuracy(keras_probabilities, labels),
        "accuracy_tflite_int8": _accuracy(int8_probabilities, labels),
        "saved_model_bytes": measured("saved_model", "size_bytes"),
        "tflite_float32_bytes": measured("tflite_text_float32", "size_bytes"),
        "tflite_int8_bytes": measured("tflite_text_dynamic_int8", "size_bytes"),
        "latency_ms_keras": measured("keras", "latency_ms"),
        "latency_ms_saved_model": measured("saved_model", "latency_ms"),
        "latency_ms_tflite_float32": measured("tflite_text_float32", "latency_ms"),
        "latency_ms_tflite_int8": measured("tflite_text_dynamic_int8", "latency_ms"),
        "tflite_int8_ms_per_sentence_whole_set": 1000 * int8_seconds / len(labels),
        "export_failures": [f"{row['name']}: {f}" for row in report["artifacts"] for f in row["failures"]],
    }


def format_table(rows):
    """The comparison as a Markdown table (the student's share of the teacher in brackets)."""
    teacher = rows[0]

    def mb(value):
        return f"{value / 1e6:.1f} MB"

    lines = [
        "| model | parameters | dev accuracy (Keras / TFLite int8) | SavedModel | TFLite float32 | TFLite int8 "
        "| latency Keras / SavedModel / TFLite float32 / TFLite int8 |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        share = "" if row is teacher else f" ({row['parameters'] / teacher['parameters']:.1%})"
        kept = "" if row is teacher else f" ({row['accuracy_keras'] / teacher['accuracy_keras']:.1%} of the teacher's)"
        lines.append(
            f"| {row['model']} | {row['parameters'] / 1e6:.2f}M{share} | {row['accuracy_keras']:.4f}{kept} / "
            f"{row['accuracy_tflite_int8']:.4f} | {mb(row['saved_model_bytes'])} | {mb(row['tflite_float32_bytes'])} | "
            f"{mb(row['tflite_int8_bytes'])} | {row['latency_ms_keras']:.2f} / {row['latency_ms_saved_model']:.2f} / "
            f"{row['latency_ms_tflite_float32']:.2f} / {row['latency_ms_tflite_int8']:.2f} ms |"
        )
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise ValueError(f"unexpected argument(s) {' '.join(argv[1:])}; flags are --name=value")
    if not FLAGS.model_dir or not FLAGS.output_dir:
        raise ValueError("--model_dir (a distill/* run) and --output_dir are required")
    experiment, config = _cli.experiment_config(None, FLAGS.model_dir, overrides=[FLAGS.params_override])
    if not experiment.startswith("distill/"):
        raise ValueError(f"--model_dir {FLAGS.model_dir!r} is a {experiment} run; pass a distill/* run")
    task = _cli.build_task(experiment, config)
    student = trainer.load_trained(task, FLAGS.model_dir)
    teacher = from_pretrained(task.task_config.teacher)
    validation = task.examples("validation")
    examples = {"text": list(validation.texts)}
    if validation.texts_b:
        examples["text_b"] = list(validation.texts_b)
    held_out = {name: texts[: FLAGS.num_examples] for name, texts in examples.items()}
    seq_length = FLAGS.seq_length or task.task_config.seq_length
    rows = []
    for name, model in (("teacher", teacher), ("student", student)):
        with _cli.native_logs_hidden():
            report = exporter.export_model(
                model,
                os.path.join(FLAGS.output_dir, name),
                held_out,
                formats=("saved_model", "tflite"),
                quantize="dynamic_int8",
                tflite_flavours=("text",),
                seq_length=seq_length,
                allow_mismatch=True,
            )
            rows.append(_row(name, model, examples, validation.labels, report))
    result = {
        "experiment": experiment,
        "teacher": task.task_config.teacher,
        "student": os.path.join(FLAGS.model_dir, trainer.BEST_DIR),
        "validation": task.describe_inputs("validation"),
        "seq_length": seq_length,
        "models": rows,
    }
    path = os.path.join(FLAGS.output_dir, "distillation_report.json")
    publish.write_text(path, json.dumps(result, indent=2) + "\n")
    print(format_table(rows))
    print(f"report: {path}")
    return 0


if __name__ == "__main__":
    _cli.run(main)
