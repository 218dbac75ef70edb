"""Exports a model in every requested format and proves each artifact with a report.

    OUT/NAME/VERSION/                              SavedModel for TF Serving (raw text in)
    OUT/hub/NAME/VERSION/{preprocessor,encoder}    TF Hub's BERT layout (BERT models)
    OUT/tflite/NAME/VERSION/FLAVOUR_QUANTIZATION.tflite  (+ .json; vocab.txt for "ids")
    OUT/export_report.json                         every artifact against the Keras model

One export run writes one version of each format. Formats are listed in
`FORMATS`, one function each: `(model, directory, options) -> [Artifact]`; a
format that cannot carry a model raises `UnsupportedExport` and is skipped
when "all" formats were asked for.

`export_model` is what `tools/export.py` runs; a notebook can call it the same way.
"""

import dataclasses
import os

from absl import logging

from tfplm import tasks
from tfplm.export import lite, report as report_lib, serving, tfhub
from tfplm.tasks.serving import UnsupportedExport

REPORT_FILE = "export_report.json"


@dataclasses.dataclass
class ExportOptions:
    """What the formats share. `examples`: {input name: [str]}, held out."""

    model_name: str
    version: int
    examples: dict
    quantize: str = "none"
    tflite_flavours: tuple = lite.FLAVOURS
    seq_length: int = None
    representative_texts: list = None


def _saved_model(model, directory, options):
    path = serving.saved_model(
        model, directory, model_name=options.model_name, version=options.version, warmup_examples=options.examples
    )
    return [report_lib.Artifact("saved_model", path, report_lib.saved_model_predict(path), dict(report_lib.SAVED_MODEL_BAR))]


def _hub(model, directory, options):
    path = os.path.join(directory, "hub", options.model_name, str(options.version))
    tfhub.hub(model, path, seq_length=options.seq_length)
    encoder = tfhub.encoder_of(model)
    predict = tfhub.hub_predict(path, options.seq_length or encoder.preprocessor.seq_length)
    # Checked against the Keras encoder's outputs, whatever the model's task type.
    head = tasks.serving_head(encoder)
    return [report_lib.Artifact("tf_hub", path, predict, dict(report_lib.SAVED_MODEL_BAR), head=head)]


def _tflite(model, directory, options):
    """float32 (the reference for size and accuracy bars) plus `quantize`, per flavour."""
    directory = os.path.join(directory, "tflite", options.model_name, str(options.version))
    artifacts = []
    bars = {
        "none": (report_lib.TFLITE_FLOAT_BAR, ""),
        "dynamic_int8": (report_lib.TFLITE_DYNAMIC_INT8_BAR, "float32"),
    }
    for flavour in options.tflite_flavours:
        for level in ["none"] + ([options.quantize] if options.quantize != "none" else []):
            name = f"{flavour}_{'float32' if level == 'none' else level}"
            path = lite.convert(
                model,
                os.path.join(directory, f"{name}.tflite"),
                flavour=flavour,
                quantize=level,
                seq_length=options.seq_length,
                representative_texts=options.representative_texts,
            )
            runner = lite.TFLiteModel(path, preprocessor=model.preprocessor)
            bar, reference = bars.get(level, ({}, ""))
            predict = lambda examples, r=runner: r(examples["text"], examples.get("text_b"))  # noqa: E731
            artifacts.append(
                report_lib.Artifact(
                    f"tflite_{name}", path, predict, dict(bar), f"tflite_{flavour}_{reference}" if reference else ""
                )
            )
    return artifacts


# Format name → writer. A new format is a function here (or in its own module) and a line below.
FORMATS = {"saved_model": _saved_model, "hub": _hub, "tflite": _tflite}


def export_model(
    model,
    export_dir,
    examples,
    *,
    formats=("all",),
    model_name=None,
    version=None,
    quantize="none",
    tflite_flavours=lite.FLAVOURS,
    seq_length=None,
    representative_texts=None,
):
    """Exports `model` and writes `export_dir/export_report.json`; returns the report.

    Args:
        model: a zoo model with its preprocessing, of any registered task type.
        export_dir: the output root (see the module docstring).
        examples: held-out inputs for the report, {input name: [str]} with the
            names its serving head takes (e.g. {"text": [...]} for a classifier,
            {"prompt": [...]} for a GPT); a plain list means {"text": list}
            (or "prompt").
        formats: any of `FORMATS`, or "all" (those that can carry the model).
        model_name: the SavedModel / TFLite / TF Hub folder name.
        version: the version written in every format (default: the next one).
        quantize: the TFLite quantization besides float32 (one of
            `tfplm.export.lite.QUANTIZATIONS`).
        tflite_flavours: "ids" and/or "text".
        seq_length: the TFLite static length (default the model's preprocessor's).
        representative_texts: calibration texts for int8 (default the examples).

    Returns:
        The report (see `tfplm.export.report.build_report`); check it with
        `tfplm.export.report.failures`.
    """
    head = tasks.serving_head(model)
    if not isinstance(examples, dict):
        examples = {head.inputs[0]: list(examples)}
    if not examples or not all(len(v) for v in examples.values()):
        raise ValueError("export_model needs held-out examples for its report; got none")
    unknown = set(formats) - set(FORMATS) - {"all"}
    if unknown:
        raise ValueError(f"unknown format(s) {sorted(unknown)}; expected some of {', '.join(FORMATS)} or all")
    wanted = list(FORMATS) if "all" in formats else [f for f in FORMATS if f in formats]
    model_name = model_name or serving.default_model_name(model)
    export_dir = os.path.abspath(os.fspath(export_dir))
    if version is None:
        bases = [os.path.join(export_dir, model_name)] + [os.path.join(export_dir, f, model_name) for f in ("hub", "tflite")]
        version = max(serving.next_version(base) for base in bases)
    if representative_texts is None:
        columns = [examples[name] for name in head.inputs]
        representative_texts = list(zip(*columns)) if len(columns) == 2 else list(columns[0])
    options = ExportOptions(
        model_name, int(version), examples, quantize, tuple(tflite_flavours), seq_length, representative_texts
    )
    artifacts = []
    for name in wanted:
        try:
            artifacts += FORMATS[name](model, export_dir, options)
        except UnsupportedExport as error:
            if "all" not in formats:
                raise
            logging.info("skipping %s: %s", name, error)
    report = report_lib.build_report(head, artifacts, examples)
    report_lib.write_report(report, os.path.join(export_dir, REPORT_FILE))
    return report
