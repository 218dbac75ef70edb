"""Pretrained checkpoints: tfplm's own format, and loading other libraries' checkpoints.

`from_pretrained(path)` recognises, without being told:

* tfplm's format (written by `save_pretrained`): a directory with
  `tfplm_config.json` (model class + `get_config()`, tokenizer class and
  settings, preprocessor length and pair flag), `model.safetensors` (every weight under its
  Keras weight path, e.g. `block_0/self_attention/query/kernel`) and the
  tokenizer files (vocab.txt; vocab.json + merges.txt; or spm.model);
* Hugging Face directories (config.json + model.safetensors);
* Google BERT directories (bert_config.json + bert_model.ckpt.* + vocab.txt);
* keras-nlp / keras-hub presets.

Which model families each format can hold, their classes and how each is
built are in `tfplm.models.families`; this module treats every family alike.

Weights are safetensors, not Keras `.weights.h5`: the file is keyed by weight
path instead of by Keras' layer-tracking order, so it survives refactors that
keep names, can be inspected or read without Keras (or TensorFlow), is
memory-mapped, and cannot execute code on load — the same reasons the
ecosystem moved away from pickles.

Every load checks that each weight of the target model is assigned exactly
once, with its shape; anything the checkpoint holds that the model does not use
is reported (`LoadReport`), never silently dropped.

A checkpoint folder is untrusted input: every file its config names (and every
file tfplm opens in it) must resolve, symlinks followed, inside the folder
(`checkpoints.common.inside`), and the sizes in its config are checked against
its tensors before a model of them is built (`checkpoints.common.check_sizes`).
A truncated or corrupt file is a `CheckpointError` naming it.

Example:
>>> model, report = load_pretrained("path/to/hf_bert")  # doctest: +SKIP
>>> print(report.summary())  # doctest: +SKIP
>>> model(model.preprocessor(tf.constant(["hello world"])))  # doctest: +SKIP
"""

import dataclasses
import json
import os

import numpy as np
from absl import logging

from tfplm import publish
from tfplm.models.base import TextModel
from tfplm.models.checkpoints import google, huggingface, keras_preset, tokenizer_files
from tfplm.models.checkpoints.common import (
    HEAD_PREFIXES,
    Checkpoint,
    CheckpointError,
    check_sizes,
    directory_of,
    inside,
    load_safetensors,
    read_json,
    refuse_pickle,
    tfplm_weight,
)

FORMAT_FILE = "tfplm_config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1

# Other libraries' formats, in the order they are detected (a keras-nlp preset
# has a config.json too, so it goes before Hugging Face). Each module has
# `detect(path)`, `architecture(directory)` and `ARCHITECTURE`; the families a
# format can hold, with their readers, are in `tfplm.models.families`.
SOURCE_FORMATS = {"google": google, "keras_nlp": keras_preset, "huggingface": huggingface}
FORMATS = ("tfplm", *SOURCE_FORMATS)


def _families():
    # The family table imports the model classes, whose `from_pretrained` and
    # `save_pretrained` call this module: it is imported when first needed.
    from tfplm.models import families

    return families


# --- tfplm's own format ------------------------------------------------------


def is_tfplm_dir(path):
    return os.path.isfile(os.path.join(path, FORMAT_FILE))


def _constructor_config(config):
    """Backbone constructor arguments: no Keras bookkeeping, no preprocessing (it
    travels as tokenizer files)."""
    skip = ("name", "trainable", "dtype", "preprocessor", "tokenizer")
    return {k: v for k, v in config.items() if k not in skip}


def _without_preprocessing(config):
    """A model's config with the serialized preprocessor/tokenizer left out."""
    config = {k: v for k, v in config.items() if k not in ("preprocessor", "tokenizer")}
    if isinstance(config.get("encoder"), dict):
        encoder = config["encoder"]
        config["encoder"] = {**encoder, "config": _without_preprocessing(encoder["config"])}
    return config


def read_tfplm(directory, do_lower_case=None):
    """Reads a directory written by `save_pretrained` into a `Checkpoint`.

    Every file its config names must be inside the directory (`inside`).

    Args:
        directory: the checkpoint directory.
        do_lower_case: override the casing its WordPiece tokenizer records.
    """
    spec = read_json(directory, FORMAT_FILE)
    version = spec.get("format_version", 0)
    if spec.get("format") != "tfplm" or not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{directory}: {FORMAT_FILE} is not tfplm format version <= {FORMAT_VERSION}; "
            "upgrade tfplm to read it"
        )
    class_name = spec.get("class_name")
    if not isinstance(class_name, str) or class_name not in _families().model_classes():
        raise CheckpointError(f"{directory}: unknown model class {class_name!r} in {FORMAT_FILE}")
    family, _ = _families().model_classes()[class_name]
    config, head = spec.get("config"), {}
    if isinstance(config, dict) and isinstance(config.get("encoder"), dict):
        # A task model: its heads' arguments around its backbone's config.
        config, head = config["encoder"].get("config"), config
    preprocessor = spec.get("preprocessor") or {}
    for key, value in [("config", config), ("tokenizer", spec.get("tokenizer") or {}), ("preprocessor", preprocessor)]:
        if not isinstance(value, dict):
            raise CheckpointError(f"{directory}: {FORMAT_FILE} key {key!r} is {value!r}; expected a JSON object")
    # Every file the config names is checked before any is opened.
    weights_file = inside(directory, spec.get("weights", WEIGHTS_FILE), f"{FORMAT_FILE} key 'weights'")
    tokenizer_files.confine(spec.get("tokenizer"), directory)
    weights = load_safetensors(weights_file)
    classifier = tfplm_weight("classifier", "kernel")
    if head.get("num_classes") is not None and np.shape(weights.get(classifier))[-1:] != (head["num_classes"],):
        raise CheckpointError(
            f"{directory}: {FORMAT_FILE} says num_classes={head['num_classes']!r} but the classifier "
            f"tensor {classifier!r} has shape {np.shape(weights.get(classifier))}; its config and weights disagree"
        )
    tokenizer = tokenizer_files.load(spec.get("tokenizer"), directory)
    if do_lower_case is not None and hasattr(tokenizer, "lowercase"):
        tokenizer.lowercase = bool(do_lower_case)
    return Checkpoint(
        family=family.name,
        config=_constructor_config(config),
        weights=weights,
        sources={path: path for path in weights},
        ignored={},
        tokenizer=tokenizer,
        num_classes=head.get("num_classes"),
        classifier_dropout=head.get("dropout"),
        source_format="tfplm",
        path=directory,
        class_name=class_name,
        seq_length=preprocessor.get("seq_length"),
        pair=bool(preprocessor.get("pair", False)),
        label_names=head.get("label_names"),
    )


def save_pretrained(model, directory):
    """Writes `model` in tfplm's format: config, safetensors weights, tokenizer files.

    The checkpoint is written into a hidden sibling directory that is renamed
    into place at the end (`tfplm.publish`), so a crash never leaves a
    half-written one. An existing tfplm checkpoint at `directory` is replaced.

    Args:
        model: a model of a class in `tfplm.models.families`; its tokenizer
            (and its preprocessor's sequence length, if it has one) ship with it.
        directory: where to write.

    Returns:
        `directory`.
    """
    from safetensors.numpy import save_file

    class_name = type(model).__name__
    classes = _families().model_classes()
    if class_name not in classes:
        raise ValueError(f"cannot save a {class_name}; expected one of {sorted(classes)}")
    tokenizer = model.tokenizer
    if tokenizer is None:
        logging.warning("saving %s without a tokenizer: the checkpoint cannot preprocess text", class_name)
    preprocessor = model.preprocessor if isinstance(model, TextModel) else None
    seq_length = preprocessor.seq_length if preprocessor is not None else None
    weights = {}
    for variable in model.weights:
        if variable.path in weights:
            raise ValueError(f"two weights of {class_name} share the path {variable.path!r}")
        weights[variable.path] = np.ascontiguousarray(np.asarray(variable.numpy()))

    directory = os.path.abspath(os.fspath(directory))
    if os.path.lexists(directory) and not (
        os.path.isdir(directory) and (is_tfplm_dir(directory) or not os.listdir(directory))
    ):
        raise ValueError(
            f"{directory!r} exists and is not a tfplm checkpoint; refusing to overwrite it "
            "(remove it or choose another directory)"
        )
    with publish.directory(directory, replace=True) as tmp:
        save_file(weights, os.path.join(tmp, WEIGHTS_FILE), metadata={"format": "tfplm", "class_name": class_name})
        spec = {
            "format": "tfplm",
            "format_version": FORMAT_VERSION,
            "class_name": class_name,
            "config": _without_preprocessing(model.get_config()),
            "weights": WEIGHTS_FILE,
            "tokenizer": tokenizer_files.save(tokenizer, tmp) if tokenizer is not None else None,
            "preprocessor": {"seq_length": seq_length, "pair": preprocessor.pair} if seq_length else None,
        }
        with open(os.path.join(tmp, FORMAT_FILE), "w", encoding="utf-8") as f:
            json.dump(spec, f, indent=2)
    logging.info("saved %s (%d weights) to %s", class_name, len(weights), directory)
    return directory


# --- detection and reading ---------------------------------------------------


def detect_format(path):
    """Which checkpoint format `path` holds: one of `FORMATS`; a clear error otherwise."""
    path = os.fspath(path)
    refuse_pickle(path)
    if os.path.isfile(path) and path.endswith(".safetensors"):
        return detect_format(os.path.dirname(path) or ".")
    if os.path.isdir(path) and is_tfplm_dir(path):
        return "tfplm"
    for name, source in SOURCE_FORMATS.items():
        if source.detect(path):
            return name
    if os.path.isfile(path):
        raise CheckpointError(f"{path!r} is a file; pass the checkpoint directory")
    if not os.path.isdir(path):
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    raise CheckpointError(
        f"{path!r} is not a checkpoint tfplm recognises: expected {FORMAT_FILE} (tfplm), "
        "config.json + model.safetensors (Hugging Face), bert_config.json + bert_model.ckpt "
        "(Google BERT) or config.json + metadata.json (keras-nlp preset)"
    )


def _reader(source_format, path, family):
    """The family table's reader of the checkpoint at `path`, checked against `family`."""
    source = SOURCE_FORMATS[source_format]
    architecture = source.architecture(directory_of(path))
    readers = _families().converters(source_format)
    if architecture not in readers:
        raise CheckpointError(
            f"{path!r}: {source.ARCHITECTURE} {architecture!r} is not supported; tfplm converts "
            f"{source.ARCHITECTURE} {sorted(readers)}"
        )
    holds, reader = readers[architecture]
    if family is not None and holds.name != family:
        raise CheckpointError(f"{path!r} holds a {holds.name} model ({architecture}), not a {family} one")
    return reader


def read_checkpoint(path, family=None, do_lower_case=None):
    """Reads any supported checkpoint into a `Checkpoint` (no model is built).

    Args:
        path: a checkpoint directory (or a file inside it).
        family: the name of a family of `tfplm.models.families` to insist on.
        do_lower_case: WordPiece vocabularies: override the casing the
            checkpoint records (or, for Google BERT, its directory name implies).
    """
    path = os.fspath(path)
    family = _families().get(family).name if family is not None else None
    source_format = detect_format(path)
    if source_format == "tfplm":
        checkpoint = read_tfplm(directory_of(path), do_lower_case)
    else:
        checkpoint = _reader(source_format, path, family)(path, do_lower_case=do_lower_case)
    if family is not None and checkpoint.family != family:
        raise CheckpointError(f"{path!r} holds a {checkpoint.family} model, not a {family} one")
    return checkpoint


# --- building a model from a checkpoint --------------------------------------


@dataclasses.dataclass
class LoadReport:
    """What a load did: each source tensor → tfplm weight, and what was left out.

    Attributes:
        source_format, path: the checkpoint.
        model_class: the class built.
        mapped: (source name, tfplm weight path, shape) for every model weight
            taken from the checkpoint.
        unused: source name → why it was not loaded.
        initialized: weights newly initialised on purpose (a new classifier head).
    """

    source_format: str
    path: str
    model_class: str
    mapped: list
    unused: dict
    initialized: list

    def summary(self):
        lines = [
            f"{self.model_class} from {self.source_format} checkpoint {self.path}: "
            f"{len(self.mapped)} weights loaded, {len(self.initialized)} newly initialised, "
            f"{len(self.unused)} source tensors unused"
        ]
        width = max([len(s) for s, _, _ in self.mapped] + [10])
        for source, target, shape in self.mapped:
            lines.append(f"  {source:<{width}} -> {target} {list(shape)}")
        for target in self.initialized:
            lines.append(f"  (newly initialised) {target}")
        for source, reason in self.unused.items():
            lines.append(f"  unused: {source}: {reason}")
        return "\n".join(lines)


def _head_of(path):
    return next((name for prefix, name in HEAD_PREFIXES.items() if path.startswith(prefix)), None)


def _describe(checkpoint, path):
    source = checkpoint.sources.get(path, path)
    return repr(path) if source == path else f"{source!r} (tfplm weight {path!r})"


def assign_weights(model, checkpoint, fresh_prefixes=(), backbone="its backbone class"):
    """Assigns `checkpoint.weights` to `model`, each model weight exactly once.

    Args:
        model: a built model.
        checkpoint: a `Checkpoint` of it.
        fresh_prefixes: weight-path prefixes of heads to leave as initialised.
        backbone: the name of the model's backbone class, for messages.

    Raises `CheckpointError` naming the first model weight the checkpoint lacks
    or has with another shape, and for backbone tensors the model has no place
    for (config and weights disagree). Tensors of heads the model does not have
    are reported as unused.

    Returns:
        a `LoadReport`.
    """
    class_name = type(model).__name__
    source = f"{checkpoint.source_format} checkpoint {checkpoint.path!r}"
    variables = {}
    for variable in model.weights:
        if variable.path in variables:
            raise CheckpointError(f"two weights of {class_name} share the path {variable.path!r}")
        variables[variable.path] = variable
    plan, initialized = [], []
    for path, variable in variables.items():
        if path.startswith(tuple(fresh_prefixes)):
            initialized.append(path)
            continue
        if path not in checkpoint.weights:
            head = _head_of(path)
            hint = (
                f" The checkpoint has no {head}; to start one from scratch build "
                f"{class_name}({backbone}.from_pretrained(path), ...)."
                if head
                else " Its config and weights disagree, or it is not a checkpoint of this model."
            )
            raise CheckpointError(
                f"{source} has no tensor for weight {path!r} {tuple(variable.shape)} of {class_name}.{hint}"
            )
        value = checkpoint.weights[path]
        if tuple(value.shape) != tuple(variable.shape):
            raise CheckpointError(
                f"{source}: tensor {_describe(checkpoint, path)} has shape {tuple(value.shape)} but "
                f"weight {path!r} of the {class_name} built from its config has shape "
                f"{tuple(variable.shape)}; the checkpoint's config and weights disagree"
            )
        plan.append((path, variable, value))
    unused = dict(checkpoint.ignored)
    for path in checkpoint.weights:
        if path in variables:
            continue
        head = _head_of(path)
        if head is None:
            raise CheckpointError(
                f"{source}: tensor {_describe(checkpoint, path)} has no place in the {class_name} "
                "built from its config; the checkpoint's config and weights disagree"
            )
        unused[checkpoint.sources.get(path, path)] = f"the {head}, which {class_name} does not have"
    for path, variable, value in plan:
        variable.assign(np.asarray(value, dtype=variable.dtype))
    assert len(plan) + len(initialized) == len(variables)
    report = LoadReport(
        source_format=checkpoint.source_format,
        path=checkpoint.path,
        model_class=class_name,
        mapped=[(checkpoint.sources.get(p, p), p, tuple(v.shape)) for p, v, _ in plan],
        unused=unused,
        initialized=initialized,
    )
    logging.info(
        "loaded %s from %s: %d weights, %d newly initialised", class_name, source, len(plan), len(initialized)
    )
    for name, reason in unused.items():
        logging.log(
            logging.WARNING if "unrecognised" in reason else logging.INFO,
            "unused tensor %s: %s", name, reason,
        )
    return report


def _load(checkpoint, model_class, num_classes=None, dropout=None, seq_length=None, overrides=None):
    """Builds `model_class` (None: the checkpoint's own) from a read `Checkpoint`."""
    family = _families().get(checkpoint.family)
    model_class = model_class or checkpoint.class_name
    if model_class is None:
        model = family.default_model(checkpoint)
    elif model_class in (m.cls.__name__ for m in family.models):
        model = family.model(model_class)
    else:
        raise CheckpointError(
            f"{checkpoint.path!r} holds a {checkpoint.family} model; it cannot load into {model_class}"
        )
    config = {**checkpoint.config, **(overrides or {})}
    check_sizes(checkpoint, config)
    preprocessing = {}
    if checkpoint.tokenizer is not None:
        preprocessing = family.preprocessing(checkpoint, seq_length or checkpoint.seq_length, config)
    built, fresh = model.build(checkpoint, config, preprocessing, num_classes=num_classes, dropout=dropout)
    report = assign_weights(built, checkpoint, fresh_prefixes=fresh, backbone=family.backbone.__name__)
    return built, report


def load_pretrained(
    path,
    model_class=None,
    *,
    num_classes=None,
    dropout=None,
    do_lower_case=None,
    seq_length=None,
    **overrides,
):
    """Builds a model from any supported checkpoint; returns (model, LoadReport).

    Args:
        path: a checkpoint directory (see the module docstring for formats),
            or a `Checkpoint` that `read_checkpoint` returned.
        model_class: a class of `tfplm.models.families` or its name; None
            picks the checkpoint's own: the saved class for tfplm checkpoints,
            else the family's model with every head the checkpoint has.
        num_classes: classifiers only. Required when the checkpoint has no
            classifier head (a new head is initialised); must match it otherwise.
        dropout: a classifier head's dropout for a classifier (as in its
            constructor), the backbone's dropout for the other classes.
        do_lower_case: override a WordPiece vocabulary's casing.
        seq_length: length of the model's preprocessor, for families whose
            models have one; defaults to the saved one, else the family's default.
        **overrides: backbone constructor arguments to change, e.g.
            `attention_dropout=0.0` (shape-changing ones fail the shape checks).

    Returns:
        (model, report); the model carries the checkpoint's tokenizer the way
        its family's models do (`Family.preprocessing`); none when the
        checkpoint has no tokenizer files.
    """
    if isinstance(model_class, type):
        model_class = model_class.__name__
    classes = _families().model_classes()
    if model_class is not None and model_class not in classes:
        raise ValueError(f"model_class={model_class!r}; expected one of {sorted(classes)}")
    family = classes[model_class][0].name if model_class else None
    if isinstance(path, Checkpoint):
        checkpoint = path
        if family is not None and checkpoint.family != family:
            raise CheckpointError(f"{checkpoint.path!r} holds a {checkpoint.family} model, not a {family} one")
    else:
        checkpoint = read_checkpoint(path, family=family, do_lower_case=do_lower_case)
    return _load(checkpoint, model_class, num_classes, dropout, seq_length, overrides)


def from_pretrained(path, model_class=None, **kwargs):
    """The model of any supported checkpoint (see `load_pretrained`).

    Example:
    >>> model = from_pretrained("path/to/hf_gpt2")  # doctest: +SKIP
    >>> model.generate("The meaning of life is", max_new_tokens=8)  # doctest: +SKIP
    """
    return load_pretrained(path, model_class, **kwargs)[0]


def convert_checkpoint(input_path, output_dir, family=None, do_lower_case=None, seq_length=None):
    """Converts any supported checkpoint to tfplm's format; returns the `LoadReport`.

    The model class is the checkpoint's own: the family's model with every
    head the checkpoint has (a BERT with masked-LM and next-sentence heads
    becomes the BERT pretrainer, one without heads the encoder).

    Args:
        input_path: any checkpoint `from_pretrained` reads.
        output_dir: where to write tfplm's format.
        family: the name (or an alias) of a family to insist on.
        do_lower_case, seq_length: as in `load_pretrained`.
    """
    checkpoint = read_checkpoint(input_path, family=family, do_lower_case=do_lower_case)
    model, report = _load(checkpoint, None, seq_length=seq_length)
    save_pretrained(model, output_dir)
    return report
