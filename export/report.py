"""The export report: every artifact against the Keras model, on held-out examples.

For each artifact: the max abs difference of its main output from the Keras
model's, the agreement of predicted labels (classifiers; greedy continuations
for GPT), its size on disk and its single-example latency (median). The bars:

* SavedModel: max abs difference <= 1e-5 and 100% agreement;
* TFLite float32: max abs difference <= 1e-4;
* TFLite dynamic-range int8: >= 99% agreement and <= 30% of the float32 file.

`check` lists what missed a bar; `tools/export.py` fails unless `--allow_mismatch`.
"""

import dataclasses
import json
import os
import statistics
import time

import numpy as np
import tensorflow as tf

from tfplm.export.serving import model_kind

# The output compared for each kind of model.
MAIN_OUTPUT = {
    "classifier": "probabilities",
    "regressor": "score",
    "encoder": "pooled_output",
    "masked_lm": "top_k_probabilities",
    "generator": "token_ids",
}
SAVED_MODEL_BAR = {"max_abs_diff": 1e-5, "agreement": 1.0}
TFLITE_FLOAT_BAR = {"max_abs_diff": 1e-4}
TFLITE_DYNAMIC_INT8_BAR = {"agreement": 0.99, "size_ratio": 0.30}
GENERATE_ARGS = {"max_new_tokens": 16, "sampler": "greedy", "temperature": 1.0, "top_k": 1, "top_p": 1.0, "seed": 0}


@dataclasses.dataclass
class Artifact:
    """An exported file or directory and how to run it.

    Attributes:
        name: e.g. "saved_model", "tflite_ids_dynamic_int8".
        path: the file or directory.
        predict: (texts, texts_b or None) -> {output name: numpy array [batch, ...]}.
        bar: the limits it must meet (`max_abs_diff`, `agreement`, `size_ratio`).
        size_reference: the artifact whose size `size_ratio` is relative to.
    """

    name: str
    path: str
    predict: object
    bar: dict = dataclasses.field(default_factory=dict)
    size_reference: str = ""


def size_bytes(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def keras_predict(model, texts, texts_b=None, top_k=5):
    """The Keras model's outputs for raw text, named as the exports name them."""
    kind = model_kind(model)
    if kind == "generator":
        prompts = [[t for t in row] or [model.tokenizer.end_token_id] for row in model.tokenizer.tokenize(tf.constant(texts)).to_list()]
        end = model.tokenizer.end_token_id
        return {"token_ids": [model.generate_ids([p], GENERATE_ARGS["max_new_tokens"], stop_token_id=end)[0] for p in prompts]}
    segments = (tf.constant(texts),) if texts_b is None else (tf.constant(texts), tf.constant(texts_b))
    inputs = model.preprocessor(segments)
    if kind == "masked_lm":
        return {"top_k_probabilities": _masked_lm_top_k(model, inputs, top_k)}
    outputs = model(inputs, training=False)
    if kind == "classifier":
        return {"probabilities": tf.nn.softmax(outputs, axis=-1).numpy()}
    if kind == "regressor":
        return {"score": outputs.numpy()[:, 0]}
    return {"pooled_output": outputs["pooled_output"].numpy(), "sequence_output": outputs["sequence_output"].numpy()}


def _masked_lm_top_k(model, inputs, top_k):
    """The top-k probabilities at each [MASK] (rows padded with zeros), from the Keras model."""
    ids = inputs["input_word_ids"].numpy()
    positions = [np.flatnonzero(row == model.tokenizer.mask_token_id) for row in ids]
    width = max(map(len, positions))
    padded = np.array([np.pad(p, (0, width - len(p))) for p in positions], np.int32).reshape(len(ids), width)
    logits = model({**inputs, "masked_lm_positions": tf.constant(padded)}, training=False)["mlm_logits"]
    top = -np.sort(-tf.nn.softmax(logits, axis=-1).numpy(), axis=-1)[..., :top_k]
    valid = np.arange(width)[None, :] < np.array([len(p) for p in positions])[:, None]
    return np.where(valid[..., None], top, 0.0)


def mask_a_word(texts):
    """Texts without "[MASK]" get their middle word replaced by it (for masked-LM reports)."""
    masked = []
    for text in texts:
        words = text.split()
        if "[MASK]" not in text and words:
            words[len(words) // 2] = "[MASK]"
            text = " ".join(words)
        masked.append(text)
    return masked


def saved_model_predict(path, kind, pair=False):
    """`predict` for an exported SavedModel, through its serving_default signature."""
    from tfplm.export.serving import load

    signature = load(path).signatures["serving_default"]

    def predict(texts, texts_b=None):
        if kind == "generator":
            outputs = signature(prompt=tf.constant(texts), **{k: tf.constant(v) for k, v in GENERATE_ARGS.items()})
            return {"token_ids": list(outputs["token_ids"].numpy())}
        inputs = {"text": tf.constant(texts)}
        if pair:
            inputs["text_b"] = tf.constant(texts_b)
        return {k: v.numpy() for k, v in signature(**inputs).items()}

    return predict


def _compare(kind, reference, outputs):
    """(max abs difference, agreement) of one artifact's main output."""
    name = MAIN_OUTPUT[kind]
    if kind == "generator":
        same = [np.array_equal(a[: len(b)], b) for a, b in zip(outputs[name], reference[name])]
        return None, float(np.mean(same))
    expected, actual = np.asarray(reference[name]), np.asarray(outputs[name])
    if actual.shape != expected.shape:
        raise ValueError(f"{name}: shape {actual.shape} differs from the Keras model's {expected.shape}")
    max_abs_diff = float(np.abs(actual - expected).max()) if expected.size else 0.0
    agreement = float(np.mean(actual.argmax(-1) == expected.argmax(-1))) if kind == "classifier" else None
    return max_abs_diff, agreement


def _latency_ms(predict, texts, texts_b, runs=20):
    times = []
    for i in range(runs + 1):
        j = i % len(texts)
        start = time.perf_counter()
        predict(texts[j : j + 1], None if texts_b is None else texts_b[j : j + 1])
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times[1:])  # the first call may trace or allocate


def build_report(model, artifacts, texts, texts_b=None, latency_runs=20):
    """Runs every artifact on the examples and compares it with `model`.

    Args:
        model: the Keras model that was exported.
        artifacts: a list of `Artifact`s.
        texts, texts_b: the held-out examples (texts_b for pairs).

    Returns:
        A JSON-ready dict: {"examples", "model", "artifacts": [{name, path,
        size_bytes, max_abs_diff, agreement, latency_ms, bar, failures}]}.
    """
    if not texts:
        raise ValueError("the export report needs at least one example text")
    kind = model_kind(model)
    if kind == "masked_lm":
        texts = mask_a_word(texts)
    reference = keras_predict(model, texts, texts_b)
    keras_latency = _latency_ms(lambda a, b: keras_predict(model, a, b), texts, texts_b, latency_runs)
    rows = [{"name": "keras", "path": "", "size_bytes": None, "max_abs_diff": 0.0, "agreement": 1.0, "latency_ms": keras_latency, "bar": {}, "failures": []}]
    sizes = {}
    for artifact in artifacts:
        outputs = artifact.predict(texts, texts_b)
        max_abs_diff, agreement = _compare(kind, reference, outputs)
        sizes[artifact.name] = size_bytes(artifact.path)
        row = {
            "name": artifact.name,
            "path": artifact.path,
            "size_bytes": sizes[artifact.name],
            "max_abs_diff": max_abs_diff,
            "agreement": agreement,
            "latency_ms": _latency_ms(artifact.predict, texts, texts_b, latency_runs),
            "bar": dict(artifact.bar),
        }
        if artifact.size_reference:
            row["size_ratio"] = sizes[artifact.name] / sizes[artifact.size_reference]
        row["failures"] = check(row)
        rows.append(row)
    return {"model": type(model).__name__, "kind": kind, "examples": len(texts), "artifacts": rows}


def check(row):
    """What in one report row missed its bar (an empty list when all is well)."""
    failures = []
    bar = row["bar"]
    if "max_abs_diff" in bar and (row["max_abs_diff"] is None or row["max_abs_diff"] > bar["max_abs_diff"]):
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
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    os.replace(tmp, path)


def format_table(report):
    """The report as a text table."""

    def fmt(value, spec):
        return "—" if value is None else format(value, spec)

    lines = [
        f"{report['model']} ({report['kind']}) on {report['examples']} examples",
        f"{'artifact':<30} {'size':>10} {'max abs diff':>13} {'agreement':>10} {'latency':>10}  bar",
    ]
    for row in report["artifacts"]:
        size = "—" if row["size_bytes"] is None else f"{row['size_bytes'] / 2**20:.1f} MB"
        verdict = "FAILED: " + "; ".join(row["failures"]) if row["failures"] else ("ok" if row["bar"] else "")
        lines.append(
            f"{row['name']:<30} {size:>10} {fmt(row['max_abs_diff'], '.2e'):>13} "
            f"{fmt(None if row['agreement'] is None else 100 * row['agreement'], '.1f'):>9}% "
            f"{row['latency_ms']:>7.2f} ms  {verdict}"
        )
    return "\n".join(lines)
