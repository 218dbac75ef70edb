"""Exports a model in every requested format and proves each artifact with a report.

    OUT/NAME/VERSION/                              SavedModel for TF Serving (raw text in)
    OUT/hub/NAME/VERSION/{preprocessor,encoder}    TF Hub's BERT layout (BERT models)
    OUT/tflite/NAME/VERSION/FLAVOUR_QUANTIZATION.tflite  (+ .json; vocab.txt for "ids")
    OUT/export_report.json                         every artifact against the Keras model
    (and a copy of it in each VERSION folder: the checks that version passed)

One export run writes one version of each format. Formats are listed in
`FORMATS`, one `Format` each; a format that cannot carry a model raises
`UnsupportedExport` from its `check` and is skipped when "all" formats were
asked for.

Nothing is published before it is checked. Every argument and format is
checked before anything is written; each version is then built in a hidden
temporary folder beside its final name (`tfplm.publish`), run against the
Keras model (`report.build_report`), and renamed into place only if every
artifact meets its bar (or `allow_mismatch`, which publishes with the
failing report inside each version). A killed export leaves only hidden
`.VERSION.tmp-*` folders, which no glob or TF Serving picks up and the next
export to the folder removes; one export at a time holds a folder
(`serving.export_lock`; a second gets an error naming the first).

`export_model` is what `tools/export.py` runs; a notebook can call it the same way.
"""

import contextlib
import dataclasses
import os
import shutil
import tempfile

from absl import logging

from tfplm import publish, tasks
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


@dataclasses.dataclass(frozen=True)
class Format:
    """An export format.

    Attributes:
        folder: where its versions live under the export root; "{name}" is
            the model name (TF Serving's model base path is "{name}").
        write: `(model, version_dir, options) -> [report.Artifact]`: writes
            one version into `version_dir`, a new empty folder (a hidden
            temporary one, renamed once the report passes).
        check: `(model, options) -> None`: raises what `write` would
            (`UnsupportedExport` for a model it cannot carry, ValueError for
            bad options) before anything is written.
    """

    folder: str
    write: object
    check: object = lambda model, options: None


def _saved_model(model, directory, options):
    serving.write_saved_model(model, directory, model_name=options.model_name, warmup_examples=options.examples)
    return [report_lib.Artifact("saved_model", directory, report_lib.saved_model_predict(directory), dict(report_lib.SAVED_MODEL_BAR))]


def _hub(model, directory, options):
    tfhub.write_hub(model, directory, seq_length=options.seq_length)
    encoder = tfhub.encoder_of(model)
    predict = tfhub.hub_predict(directory, options.seq_length or encoder.preprocessor.seq_length)
    # Checked against the Keras encoder's outputs, whatever the model's task type.
    head = tasks.serving_head(encoder)
    return [report_lib.Artifact("tf_hub", directory, predict, dict(report_lib.SAVED_MODEL_BAR), head=head)]


def _check_tflite(model, options):
    if not options.tflite_flavours:
        raise ValueError(f"no TFLite flavour asked for; expected some of {', '.join(lite.FLAVOURS)}")
    for flavour in options.tflite_flavours:
        lite.check(model, flavour, options.quantize, options.seq_length, options.representative_texts)


def _tflite(model, directory, options):
    """float32 (the reference for size and accuracy bars) plus `quantize`, per flavour."""
    artifacts = []
    inputs = tasks.serving_head(model).inputs  # what the examples are keyed by, in the file's order
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
            predict = lambda examples, r=runner: r(*(examples[name] for name in inputs))  # noqa: E731
            artifacts.append(
                report_lib.Artifact(
                    f"tflite_{name}", path, predict, dict(bar), f"tflite_{flavour}_{reference}" if reference else ""
                )
            )
    return artifacts


# Format name → Format. A new format is a function here (or in its own module) and a line below.
FORMATS = {
    "saved_model": Format("{name}", _saved_model, lambda model, options: tasks.serving_head(model)),
    "hub": Format(os.path.join("hub", "{name}"), _hub, lambda model, options: tfhub.check(model, options.seq_length)),
    "tflite": Format(os.path.join("tflite", "{name}"), _tflite, _check_tflite),
}


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
    allow_mismatch=False,
):
    """Exports `model`, checks every artifact, and publishes the versions that pass.

    Writes `export_dir/export_report.json` whatever the outcome, and a copy of
    it inside each published version folder.

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
        allow_mismatch: publish even when an artifact misses its bar (the
            failing report is inside each version folder).

    Returns:
        The report (see `tfplm.export.report.build_report`) plus "published":
        the version folders now in place ([] when a bar was missed and not
        `allow_mismatch`); `tfplm.export.report.failures` lists the misses.

    Raises:
        ValueError: bad arguments, an existing version, or another export
            holding `export_dir` (`tfplm.locking.FolderInUse`); nothing written.
    """
    head = tasks.serving_head(model)
    examples = _checked_examples(head, examples)
    unknown = set(formats) - set(FORMATS) - {"all"}
    if unknown:
        raise ValueError(f"unknown format(s) {sorted(unknown)}; expected some of {', '.join(FORMATS)} or all")
    model_name = model_name or serving.default_model_name(model)
    if model_name.startswith(".") or os.sep in model_name or (os.altsep and os.altsep in model_name):
        raise ValueError(f"model_name {model_name!r} must be a plain folder name (no '/', not starting with '.')")
    if version is not None and (not str(version).isdigit()):
        raise ValueError(f"version {version!r} must be a non-negative integer (TF Serving's version folders are numbers)")
    if representative_texts is None:
        columns = [examples[name] for name in head.inputs]
        representative_texts = list(zip(*columns)) if len(columns) == 2 else list(columns[0])
    options = ExportOptions(model_name, None, examples, quantize, tuple(tflite_flavours), seq_length, representative_texts)
    wanted = []
    for name in [f for f in FORMATS if "all" in formats or f in formats]:
        try:
            FORMATS[name].check(model, options)
        except UnsupportedExport as error:
            if "all" not in formats:
                raise
            logging.info("skipping %s: %s", name, error)
            continue
        wanted.append(name)

    export_dir = os.path.abspath(os.fspath(export_dir))
    bases = {name: os.path.join(export_dir, FORMATS[name].folder.format(name=model_name)) for name in FORMATS}
    with serving.export_lock(export_dir, model_name, folders=[export_dir, *bases.values()]):
        if version is None:
            version = max(serving.next_version(base) for base in bases.values())
        options.version = int(version)
        finals = {name: os.path.join(bases[name], str(options.version)) for name in wanted}
        for final in finals.values():
            if os.path.lexists(final):
                raise ValueError(f"{final} exists; TF Serving may be serving it. Choose another version or omit it")
        report = _build_and_publish(model, head, wanted, export_dir, finals, options, allow_mismatch)
        report_lib.write_report(report, os.path.join(export_dir, REPORT_FILE))
    return report


def _checked_examples(head, examples):
    """{input name: [str]} with every input of `head`, all of one non-zero length."""
    if not isinstance(examples, dict):
        examples = {head.inputs[0]: list(examples or [])}
    missing = [name for name in head.inputs if name not in examples]
    if missing:
        raise ValueError(f"the examples lack input(s) {missing}; this model takes {list(head.inputs)}")
    lengths = {len(examples[name]) for name in head.inputs}
    if lengths == {0}:
        raise ValueError("export_model needs held-out examples for its report; got none")
    if len(lengths) > 1:
        raise ValueError(f"the examples' inputs {list(head.inputs)} have different lengths {sorted(lengths)}; pass one of each per example")
    return {name: list(examples[name]) for name in head.inputs}


class _Unpublished(Exception):
    """Raised inside the publishing block to discard the temporary folders."""


def _build_and_publish(model, head, wanted, export_dir, finals, options, allow_mismatch):
    """Writes each format into a hidden temporary folder, reports, renames if it passes."""
    report = None
    try:
        with _scratch(export_dir), contextlib.ExitStack() as stack:
            staged = {name: stack.enter_context(publish.directory(final)) for name, final in finals.items()}
            artifacts = []
            for name in wanted:
                artifacts += FORMATS[name].write(model, staged[name], options)
            report = report_lib.build_report(head, artifacts, options.examples)
            for row in report["artifacts"]:  # the names they will have
                for name, tmp in staged.items():
                    if row["path"] == tmp or row["path"].startswith(tmp + os.sep):
                        row["path"] = finals[name] + row["path"][len(tmp) :]
            published = not report_lib.failures(report) or allow_mismatch
            report["published"] = sorted(finals.values()) if published else []
            if not published:
                raise _Unpublished
            for tmp in staged.values():
                report_lib.write_report(report, os.path.join(tmp, REPORT_FILE))
    except _Unpublished:
        logging.warning("nothing published: %s", "; ".join(report_lib.failures(report)))
    return report


@contextlib.contextmanager
def _scratch(export_dir):
    """Python's temporary files (the TFLite converter's) go to a hidden folder in
    `export_dir` meanwhile, so a killed export leaves none in /tmp: the next export removes it."""
    scratch = tempfile.mkdtemp(prefix=".export.tmp-", dir=export_dir)
    saved = tempfile.tempdir
    tempfile.tempdir = scratch
    try:
        yield scratch
    finally:
        tempfile.tempdir = saved
        shutil.rmtree(scratch, ignore_errors=True)
