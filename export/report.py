"""The export report: every artifact against the Keras model, on held-out examples.

For each artifact: the max abs difference of its main output from the Keras
model's (none for generated tokens), the agreement of predictions (labels for
classifiers, top-1 tokens for masked LMs, whole greedy continuations for GPT:
token for token), its size on disk and its single-example latency (median).
What is compared is the model's serving head's (`reference`, `compare`); a
TF Hub export (`tf_hub`) is compared with the Keras encoder. The bars:

* SavedModel and TF Hub: max abs difference <= 1e-5 and 100% agreement;
* TFLite float32: max abs difference <= 1e-4;
* TFLite dynamic-range int8: >= 99% agreement and <= 30% of the float32 file.

`check` lists what missed a bar; `tools/export.py` fails unless `--allow_mismatch`.
"""

import dataclasses
import json
import os
import statistics
import time

import tensorflow as tf

from tfplm import publish

SAVED_MODEL_BAR = {"max_abs_diff": 1e-5, "agreement": 1.0}
TFLITE_FLOAT_BAR = {"max_abs_diff": 1e-4}
TFLITE_DYNAMIC_INT8_BAR = {"agreement": 0.99, "size_ratio": 0.30}


@dataclasses.dataclass
class Artifact:
    """An exported file or directory and how to run it.

    Attributes:
        name: e.g. "saved_model", "tflite_ids_dynamic_int8".
        path: the file or directory.
        predict: {input name: [str]} -> {output name: numpy array [batch, ...]}.
        bar: the limits it must meet (`max_abs_diff`, `agreement`, `size_ratio`).
        size_reference: the artifact whose size `size_ratio` is relative to.
        head: the serving head whose Keras reference this artifact is compared
            with; default the report's (a TF Hub export is checked against
            the encoder's).
    """

    name: str
    path: str
    predict: object
    bar: dict = dataclasses.field(default_factory=dict)
    size_reference: str = ""
    head: object = None


def size_bytes(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def saved_model_predict(path, signature="serving_default"):
    """`predict` for an exported SavedModel, through one of its signatures."""
    from tfplm.export.serving import load

    function = load(path).signatures[signature]

    def predict(examples):
        outputs = function(**{name: tf.constant(texts, tf.string) for name, texts in examples.items()})
        return {name: value.numpy() for name, value in outputs.items()}

    return predict


def _latency_ms(predict, examples, runs=20):
    """Median latency of single-example calls."""
    count = len(next(iter(examples.values())))
    times = []
    for i in range(runs + 1):
        j = i % count
        one = {name: texts[j : j + 1] for name, texts in examples.items()}
        start = time.perf_counter()
        predict(one)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times[1:])  # the first call may trace or allocate


def build_report(head, artifacts, examples, latency_runs=20):
    """Runs every artifact on the examples and compares it with the Keras model.

    Args:
        head: the model's serving head (`tfplm.tasks.serving_head(model)`):
            it gives the Keras reference and says how outputs compare.
        artifacts: a list of `Artifact`s.
        examples: {input name: [str]}, held-out inputs.

    Returns:
        A JSON-ready dict: {"model", "task_type", "examples", "artifacts":
        [{name, path, size_bytes, max_abs_diff, agreement, latency_ms, bar, failures}]}.
    """
    if not examples or not all(len(texts) for texts in examples.values()):
        raise ValueError("the export report needs at least one example text")
    missing = set(head.inputs) - set(examples)
    if missing:
        raise ValueError(f"the examples lack input(s) {sorted(missing)}; this model takes {list(head.inputs)}")
    examples = head.report_examples({name: list(examples[name]) for name in head.inputs})
    references = {id(head): head.reference(examples)}
    keras_latency = _latency_ms(head.reference, examples, latency_runs)
    rows = [{"name": "keras", "path": "", "size_bytes": None, "max_abs_diff": 0.0, "agreement": 1.0, "latency_ms": keras_latency, "bar": {}, "failures": []}]
    sizes = {}
    for artifact in artifacts:
        row = {"name": artifact.name, "path": artifact.path, "size_bytes": size_bytes(artifact.path)}
        judge = artifact.head or head
        if id(judge) not in references:
            references[id(judge)] = judge.reference(examples)
        row.update(judge.compare(references[id(judge)], artifact.predict(examples)))
        row["latency_ms"] = _latency_ms(artifact.predict, examples, latency_runs)
        row["bar"] = dict(artifact.bar)
        sizes[artifact.name] = row["size_bytes"]
        if artifact.size_reference:
            row["size_ratio"] = sizes[artifact.name] / sizes[artifact.size_reference]
        row["failures"] = check(row)
        rows.append(row)
    model = head.model
    return {
        "model": type(model).__name__,
        "task_type": type(head).__name__,
        "examples": len(examples[head.inputs[0]]),
        "artifacts": rows,
    }


def check(row):
    """What in one report row missed its bar (an empty list when all is well)."""
    failures = []
    bar = row["bar"]
    # Outputs without a numeric difference (generated tokens) are judged by agreement alone.
    if "max_abs_diff" in bar and row["max_abs_diff"] is not None and row["max_abs_diff"] > bar["max_abs_diff"]:
        failures.append(f"max abs diff {row['max_abs_diff']:.3g} > {bar['max_abs_diff']:g}")
    if "agreement" in bar and row["agreement"] is not None and row["agreement"] < bar["agreement"]:
        failures.append(f"agreement {row['agreement']:.2%} < {bar['agreement']:.0%}")
    if "size_ratio" in bar and row.get("size_ratio", 0) > bar["size_ratio"]:
        failures.append(f"size {row['size_ratio']:.0%} of float32 > {bar['size_ratio']:.0%}")
    return failures


def failures(report):
    """Every missed bar, as "artifact: what"."""
    return [f"{row['name']}: {f}" for row in report["artifacts"] for f in row["failures"]]


def write_report(report, path):
    """Writes the report as JSON atomically."""
    publish.write_text(path, json.dumps(report, indent=2) + "\n")


def format_table(report):
    """The report as a text table."""

    def fmt(value, spec):
        return "—" if value is None else format(value, spec)

    lines = [
        f"{report['model']} ({report['task_type']}) on {report['examples']} examples",
        f"{'artifact':<30} {'size':>10} {'max abs diff':>13} {'agreement':>10} {'latency':>10}  bar",
    ]
    for row in report["artifacts"]:
        size = "—" if row["size_bytes"] is None else f"{row['size_bytes'] / 2**20:.1f} MB"
        agreement = "—" if row["agreement"] is None else f"{100 * row['agreement']:.1f}%"
        verdict = "FAILED: " + "; ".join(row["failures"]) if row["failures"] else ("ok" if row["bar"] else "")
        lines.append(
            f"{row['name']:<30} {size:>10} {fmt(row['max_abs_diff'], '.2e'):>13} "
            f"{agreement:>10} {row['latency_ms']:>7.2f} ms  {verdict}"
        )
    return "\n".join(lines)
