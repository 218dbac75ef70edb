"""Exports a model in every requested format and proves each artifact with a report.

    OUT/NAME/VERSION/                         SavedModel for TF Serving (raw text in)
    OUT/hub/NAME/VERSION/{preprocessor,encoder}  TF Hub's BERT layout (BERT models)
    OUT/tflite/NAME/VERSION/FLAVOUR_QUANTIZATION.tflite  (+ .json; vocab.txt for "ids")
    OUT/export_report.json                    every artifact against the Keras model

One export run writes one version of each format it is asked for.

`export_model` is what `tools/export.py` runs; a notebook can call it the same way.
"""

import os

from absl import logging

from tfplm.export import tfhub
from tfplm.export import lite, report as report_lib, serving

FORMATS = ("saved_model", "tflite", "hub", "all")
REPORT_FILE = "export_report.json"


def _tflite_artifacts(model, directory, quantize, flavours, pair, label_names, representative_texts, seq_length):
    """Writes float32 (the reference for size and accuracy bars) plus `quantize`, per flavour."""
    artifacts = []
    for flavour in flavours:
        levels = ["none"] + ([quantize] if quantize != "none" else [])
        for level in levels:
            name = f"tflite_{flavour}_{'float32' if level == 'none' else level}"
            path = lite.convert(
                model,
                os.path.join(directory, f"{name[len('tflite_'):]}.tflite"),
                flavour=flavour,
                quantize=level,
                seq_length=seq_length,
                representative_texts=representative_texts,
                pair=pair,
                label_names=label_names,
            )
            runner = lite.TFLiteModel(path, preprocessor=getattr(model, "preprocessor", None))
            bars = {
                "none": (report_lib.TFLITE_FLOAT_BAR, ""),
                "dynamic_int8": (report_lib.TFLITE_DYNAMIC_INT8_BAR, f"tflite_{flavour}_float32"),
            }
            bar, reference = bars.get(level, ({}, ""))
            artifacts.append(report_lib.Artifact(name, path, lambda a, b, r=runner: r(a, b), dict(bar), reference))
    return artifacts


def export_model(
    model,
    export_dir,
    texts,
    texts_b=None,
    *,
    formats=("all",),
    model_name=None,
    version=None,
    quantize="none",
    tflite_flavours=lite.FLAVOURS,
    seq_length=None,
    label_names=None,
    representative_texts=None,
):
    """Exports `model` and writes `export_dir/export_report.json`; returns the report.

    Args:
        model: a zoo model with its tokenizer (see `tfplm.export.saved_model`).
        export_dir: the output root (see the module docstring).
        texts, texts_b: held-out examples for the report (texts_b for pairs).
        formats: any of "saved_model", "tflite", "hub", or "all".
        model_name: the SavedModel / TFLite / TF Hub folder name.
        version: the SavedModel version (default: the next one).
        quantize: the TFLite quantization besides float32 (one of
            `tfplm.export.lite.QUANTIZATIONS`).
        tflite_flavours: "ids" and/or "text".
        seq_length: the TFLite static length (default the model's preprocessor's).
        label_names: class names (default `model.label_names`).
        representative_texts: calibration texts for int8 (default `texts`).

    Returns:
        The report (see `tfplm.export.report.build_report`); check it with
        `tfplm.export.report.failures`.
    """
    unknown = set(formats) - set(FORMATS)
    if unknown:
        raise ValueError(f"unknown format(s) {sorted(unknown)}; expected some of {', '.join(FORMATS)}")
    kind = serving.model_kind(model)
    bert_only = kind != "generator"
    wanted = set(FORMATS[:-1]) if "all" in formats else set(formats)
    if not bert_only and wanted - {"saved_model"}:
        if "all" not in formats:
            raise ValueError("GPT exports as a SavedModel with a generate signature; TFLite and TF Hub formats are for BERT models")
        wanted = {"saved_model"}
    if kind == "masked_lm":
        wanted -= {"tflite"}  # TFLite carries classifiers and encoders
    pair = texts_b is not None
    label_names = label_names if label_names is not None else getattr(model, "label_names", None)
    model_name = model_name or serving.default_model_name(model)
    export_dir = os.path.abspath(os.fspath(export_dir))
    bases = {f: os.path.join(export_dir, *([] if f == "saved_model" else [f]), model_name) for f in FORMATS[:-1]}
    version = int(version) if version is not None else max(serving.next_version(b) for b in bases.values())
    os.makedirs(export_dir, exist_ok=True)
    artifacts = []
    if "saved_model" in wanted:
        path = serving.saved_model(
            model, export_dir, model_name=model_name, version=version, label_names=label_names, pair=pair,
            warmup_texts=list(texts[:2]),
        )
        predict = report_lib.saved_model_predict(path, kind, pair=pair)
        artifacts.append(report_lib.Artifact("saved_model", path, predict, dict(report_lib.SAVED_MODEL_BAR)))
    if "hub" in wanted:
        preprocessor, encoder = tfhub.hub(model, os.path.join(bases["hub"], str(version)))
        logging.info("TF Hub layout: %s, %s", preprocessor, encoder)
    if "tflite" in wanted:
        calibration = representative_texts or (list(zip(texts, texts_b)) if pair else list(texts))
        artifacts += _tflite_artifacts(
            model, os.path.join(bases["tflite"], str(version)), quantize, tflite_flavours, pair,
            label_names, calibration, seq_length,
        )
    report = report_lib.build_report(model, artifacts, texts, texts_b)
    report_lib.write_report(report, os.path.join(export_dir, REPORT_FILE))
    return report
