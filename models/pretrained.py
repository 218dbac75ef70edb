"""Pretrained checkpoints: tfplm's own format, and loading other libraries' checkpoints.

`from_pretrained(path)` recognises, without being told:

* tfplm's format (written by `save_pretrained`): a directory with
  `tfplm_config.json` (model class + `get_config()`, tokenizer class and
  settings, preprocessor length), `model.safetensors` (every weight under its
  Keras weight path, e.g. `block_0/self_attention/query/kernel`) and the
  tokenizer files (vocab.txt; vocab.json + merges.txt; or spm.model);
* Hugging Face BERT / GPT-2 directories (config.json + model.safetensors);
* Google BERT directories (bert_config.json + bert_model.ckpt.* + vocab.txt);
* keras-nlp / keras-hub `BertBackbone` / `GPT2Backbone` presets.

Weights are safetensors, not Keras `.weights.h5`: the file is keyed by weight
path instead of by Keras' layer-tracking order, so it survives refactors that
keep names, can be inspected or read without Keras (or TensorFlow), is
memory-mapped, and cannot execute code on load — the same reasons the
ecosystem moved away from pickles.

Every load checks that each weight of the target model is assigned exactly
once, with its shape; anything the checkpoint holds that the model does not use
is reported (`LoadReport`), never silently dropped.

Example:
>>> encoder = BertEncoder.from_pretrained("path/to/hf_bert")  # doctest: +SKIP
>>> inputs = encoder.preprocessor(tf.constant(["hello world"]))  # doctest: +SKIP
>>> encoder(inputs)["sequence_output"].shape  # doctest: +SKIP
TensorShape([1, 128, 768])
"""

import dataclasses
import json
import os
import shutil
import tempfile

import numpy as np
from absl import logging

from tfplm.models.checkpoints import google, huggingface, keras_preset
from tfplm.models.checkpoints.common import (
    HEAD_PREFIXES,
    Checkpoint,
    CheckpointError,
    refuse_pickle,
)

FORMAT_FILE = "tfplm_config.json"
WEIGHTS_FILE = "model.safetensors"
FORMAT_VERSION = 1

# Model class name → family. The classes themselves are imported lazily
# (bert.py and gpt.py import this module for `PretrainedMixin`).
MODEL_FAMILIES = {
    "BertEncoder": "bert",
    "BertPretrainer": "bert",
    "BertClassifier": "bert",
    "GPT": "gpt",
}


def _model_class(name):
    from tfplm.models.bert import BertClassifier, BertEncoder, BertPretrainer
    from tfplm.models.gpt import GPT

    classes = {c.__name__: c for c in (BertEncoder, BertPretrainer, BertClassifier, GPT)}
    return classes[name]


# --- tokenizers that travel with the model -----------------------------------


def _tokenizer_classes():
    from tfplm.tokenizers import GPT2Tokenizer, SentencePieceTokenizer, WordPieceTokenizer

    return {
        "WordPieceTokenizer": (
            lambda d, c: WordPieceTokenizer(os.path.join(d, "vocab.txt"), lowercase=c["lowercase"]),
            lambda t: {"lowercase": bool(t.lowercase)},
        ),
        "GPT2Tokenizer": (
            lambda d, c: GPT2Tokenizer(os.path.join(d, "vocab.json"), os.path.join(d, "merges.txt")),
            lambda t: {},
        ),
        "SentencePieceTokenizer": (
            lambda d, c: SentencePieceTokenizer(proto=os.path.join(d, "spm.model")),
            lambda t: {},
        ),
    }


def _save_tokenizer(tokenizer, directory):
    name = type(tokenizer).__name__
    classes = _tokenizer_classes()
    if name not in classes:
        raise ValueError(f"cannot save a {name}; tfplm checkpoints carry one of {sorted(classes)}")
    files = [os.path.basename(p) for p in tokenizer.save_vocabulary(directory)]
    return {"class_name": name, "config": classes[name][1](tokenizer), "files": files}


def _load_tokenizer(spec, directory):
    if not spec:
        return None
    classes = _tokenizer_classes()
    if spec["class_name"] not in classes:
        raise CheckpointError(f"{directory}: unknown tokenizer class {spec['class_name']!r}")
    for name in spec.get("files", []):
        if not os.path.isfile(os.path.join(directory, name)):
            raise CheckpointError(f"{directory}: tokenizer file {name!r} is missing")
    return classes[spec["class_name"]][0](directory, spec.get("config", {}))


# --- tfplm's own format ------------------------------------------------------


def is_tfplm_dir(path):
    return os.path.isfile(os.path.join(path, FORMAT_FILE))


def _constructor_config(config):
    return {k: v for k, v in config.items() if k not in ("name", "trainable", "dtype")}


def read_tfplm(directory):
    """Reads a directory written by `save_pretrained` into a `Checkpoint`."""
    from safetensors.numpy import load_file

    with open(os.path.join(directory, FORMAT_FILE), encoding="utf-8") as f:
        spec = json.load(f)
    if spec.get("format") != "tfplm" or spec.get("format_version", 0) > FORMAT_VERSION:
        raise CheckpointError(
            f"{directory}: {FORMAT_FILE} is not tfplm format version <= {FORMAT_VERSION}; "
            "upgrade tfplm to read it"
        )
    class_name = spec["class_name"]
    if class_name not in MODEL_FAMILIES:
        raise CheckpointError(f"{directory}: unknown model class {class_name!r}")
    config = spec["config"]
    num_classes = classifier_dropout = None
    if class_name in ("BertPretrainer", "BertClassifier"):
        if class_name == "BertClassifier":
            num_classes, classifier_dropout = config["num_classes"], config["dropout"]
        config = config["encoder"]["config"]
    weights = load_file(os.path.join(directory, spec.get("weights", WEIGHTS_FILE)))
    checkpoint = Checkpoint(
        family=MODEL_FAMILIES[class_name],
        config=_constructor_config(config),
        weights=weights,
        sources={path: path for path in weights},
        ignored={},
        tokenizer=_load_tokenizer(spec.get("tokenizer"), directory),
        num_classes=num_classes,
        classifier_dropout=classifier_dropout,
        source_format="tfplm",
        path=directory,
        class_name=class_name,
        seq_length=(spec.get("preprocessor") or {}).get("seq_length"),
    )
    return checkpoint


def _replace_directory(tmp, directory):
    """Moves the finished `tmp` to `directory`, replacing an older tfplm checkpoint there."""
    if not os.path.exists(directory):
        os.rename(tmp, directory)
        return
    if not os.path.isdir(directory) or (os.listdir(directory) and not is_tfplm_dir(directory)):
        raise ValueError(
            f"{directory!r} exists and is not a tfplm checkpoint; refusing to overwrite it "
            "(remove it or choose another directory)"
        )
    backup = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.old-", dir=os.path.dirname(directory))
    os.rmdir(backup)
    os.rename(directory, backup)
    os.rename(tmp, directory)
    shutil.rmtree(backup, ignore_errors=True)


def save_pretrained(model, directory, tokenizer=None, seq_length=None):
    """Writes `model` in tfplm's format: config, safetensors weights, tokenizer files.

    Everything is written to a temporary sibling directory which is renamed
    into place at the end, so a crash never leaves a half-written checkpoint.
    An existing tfplm checkpoint at `directory` is replaced.

    Args:
        model: a `BertEncoder`, `BertPretrainer`, `BertClassifier` or `GPT`.
        directory: where to write.
        tokenizer: the tokenizer to ship; defaults to `model.tokenizer`.
        seq_length: the BERT preprocessor length to record; defaults to that
            of `model.preprocessor`.

    Returns:
        `directory`.
    """
    from safetensors.numpy import save_file

    class_name = type(model).__name__
    if class_name not in MODEL_FAMILIES:
        raise ValueError(f"cannot save a {class_name}; expected one of {sorted(MODEL_FAMILIES)}")
    tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if tokenizer is None:
        logging.warning("saving %s without a tokenizer: the checkpoint cannot preprocess text", class_name)
    preprocessor = getattr(model, "preprocessor", None)
    if seq_length is None and preprocessor is not None:
        seq_length = preprocessor.seq_length
    weights = {}
    for variable in model.weights:
        if variable.path in weights:
            raise ValueError(f"two weights of {class_name} share the path {variable.path!r}")
        weights[variable.path] = np.ascontiguousarray(np.asarray(variable.numpy()))

    directory = os.path.abspath(os.fspath(directory))
    parent = os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.tmp-", dir=parent)
    try:
        save_file(weights, os.path.join(tmp, WEIGHTS_FILE), metadata={"format": "tfplm", "class_name": class_name})
        spec = {
            "format": "tfplm",
            "format_version": FORMAT_VERSION,
            "class_name": class_name,
            "config": model.get_config(),
            "weights": WEIGHTS_FILE,
            "tokenizer": _save_tokenizer(tokenizer, tmp) if tokenizer is not None else None,
            "preprocessor": {"seq_length": seq_length} if seq_length else None,
        }
        # The config file is written last: its presence marks a complete checkpoint.
        with open(os.path.join(tmp, FORMAT_FILE), "w", encoding="utf-8") as f:
            json.dump(spec, f, indent=2)
        _replace_directory(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logging.info("saved %s (%d weights) to %s", class_name, len(weights), directory)
    return directory


# --- detection and reading ---------------------------------------------------

FORMATS = ("tfplm", "huggingface", "google", "keras_nlp")


def detect_format(path):
    """Which checkpoint format `path` holds: one of `FORMATS`; a clear error otherwise."""
    path = os.fspath(path)
    refuse_pickle(path)
    if os.path.isfile(path):
        if path.endswith(".safetensors"):
            return detect_format(os.path.dirname(path) or ".")
        if path.endswith(".index") and google.is_google_dir(os.path.dirname(path) or "."):
            return "google"
        raise CheckpointError(f"{path!r} is a file; pass the checkpoint directory")
    if not os.path.isdir(path):
        if os.path.isfile(path + ".index"):  # a Google checkpoint prefix
            return "google"
        raise CheckpointError(f"checkpoint {path!r} does not exist")
    if is_tfplm_dir(path):
        return "tfplm"
    if google.is_google_dir(path):
        return "google"
    if keras_preset.is_keras_preset_dir(path):
        return "keras_nlp"
    if huggingface.is_huggingface_dir(path):
        return "huggingface"
    raise CheckpointError(
        f"{path!r} is not a checkpoint tfplm recognises: expected {FORMAT_FILE} (tfplm), "
        "config.json + model.safetensors (Hugging Face), bert_config.json + bert_model.ckpt "
        "(Google BERT) or config.json + metadata.json (keras-nlp preset)"
    )


def read_checkpoint(path, family=None, do_lower_case=None):
    """Reads any supported checkpoint into a `Checkpoint` (no model is built).

    Args:
        path: a checkpoint directory (or a file inside it).
        family: "bert" or "gpt" to insist on one.
        do_lower_case: BERT vocabularies: override the casing the checkpoint
            records (Hugging Face) or that its directory name implies (Google).
    """
    path = os.fspath(path)
    kind = detect_format(path)
    directory = path if os.path.isdir(path) else (os.path.dirname(path) or ".")
    if kind == "tfplm":
        checkpoint = read_tfplm(directory)
    elif kind == "huggingface":
        checkpoint = huggingface.read(directory, family=family, do_lower_case=do_lower_case)
    elif kind == "google":
        prefix = None if os.path.isdir(path) else path.removesuffix(".index")
        checkpoint = google.read(directory, do_lower_case=do_lower_case, prefix=prefix)
    else:
        checkpoint = keras_preset.read(directory, family=family)
    if family is not None and checkpoint.family != family:
        raise CheckpointError(f"{path!r} holds a {checkpoint.family} model, not a {family} one")
    if do_lower_case is not None and kind in ("tfplm", "keras_nlp") and hasattr(checkpoint.tokenizer, "lowercase"):
        checkpoint.tokenizer.lowercase = bool(do_lower_case)
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


def _build(class_name, checkpoint, num_classes, classifier_dropout, overrides):
    config = {**checkpoint.config, **overrides}
    if class_name == "GPT":
        return _model_class("GPT")(**config)
    encoder = _model_class("BertEncoder")(**config)
    if class_name == "BertEncoder":
        return encoder
    if class_name == "BertPretrainer":
        return _model_class("BertPretrainer")(encoder)
    return _model_class("BertClassifier")(encoder, num_classes, classifier_dropout)


def _head_of(path):
    return next((name for prefix, name in HEAD_PREFIXES.items() if path.startswith(prefix)), None)


def _describe(checkpoint, path):
    source = checkpoint.sources.get(path, path)
    return repr(path) if source == path else f"{source!r} (tfplm weight {path!r})"


def assign_weights(model, checkpoint, fresh_prefixes=()):
    """Assigns `checkpoint.weights` to `model`, each model weight exactly once.

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
                f"{class_name}(BertEncoder.from_pretrained(path), ...)."
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


def _default_class(checkpoint):
    if checkpoint.source_format == "tfplm":
        return checkpoint.class_name
    if checkpoint.family == "gpt":
        return "GPT"
    if checkpoint.has_head("classifier/"):
        return "BertClassifier"
    if checkpoint.has_head("masked_lm_head/") and checkpoint.has_head("next_sentence_head/"):
        return "BertPretrainer"
    return "BertEncoder"


def _load(checkpoint, model_class, num_classes=None, dropout=None, seq_length=None, overrides=None):
    """Builds `model_class` (None: the checkpoint's own) from a read `Checkpoint`."""
    model_class = model_class or _default_class(checkpoint)
    if MODEL_FAMILIES[model_class] != checkpoint.family:
        raise CheckpointError(
            f"{checkpoint.path!r} holds a {checkpoint.family} model; it cannot load into {model_class}"
        )
    overrides = dict(overrides or {})
    if model_class != "BertClassifier":
        if num_classes is not None:
            raise TypeError(f"num_classes is a BertClassifier argument, not {model_class}'s")
        if dropout is not None:
            overrides["dropout"] = dropout
    fresh = ()
    if model_class == "BertClassifier":
        if checkpoint.num_classes is None:
            if num_classes is None:
                raise CheckpointError(
                    f"{checkpoint.path!r} has no classifier head: pass num_classes= to start a new one"
                )
            fresh = ("classifier/",)
        elif num_classes is not None and num_classes != checkpoint.num_classes:
            raise CheckpointError(
                f"{checkpoint.path!r} has a {checkpoint.num_classes}-class classifier head, not "
                f"{num_classes}; for a new head use "
                f"BertClassifier(BertEncoder.from_pretrained(path), {num_classes})"
            )
        num_classes = num_classes or checkpoint.num_classes
        if dropout is None:
            dropout = 0.1 if checkpoint.classifier_dropout is None else checkpoint.classifier_dropout
    model = _build(model_class, checkpoint, num_classes, dropout, overrides)
    report = assign_weights(model, checkpoint, fresh_prefixes=fresh)
    tokenizer = checkpoint.tokenizer
    model.tokenizer = tokenizer
    if checkpoint.family == "bert":
        model.preprocessor = None
        if tokenizer is not None:
            from tfplm.tokenizers import BertPreprocessor

            length = seq_length or checkpoint.seq_length or min(128, checkpoint.config["max_length"])
            model.preprocessor = BertPreprocessor(tokenizer, seq_length=length)
    return model, report


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
        path: a checkpoint directory (see the module docstring for formats).
        model_class: "BertEncoder", "BertPretrainer", "BertClassifier", "GPT"
            (or the class); None picks the checkpoint's own: the saved class
            for tfplm checkpoints, else the BERT model with every head the
            checkpoint has, or GPT.
        num_classes: BertClassifier only. Required when the checkpoint has no
            classifier head (a new head is initialised); must match it otherwise.
        dropout: the classifier head's dropout for BertClassifier (as in its
            constructor), the backbone's dropout for the other classes.
        do_lower_case: override the BERT vocabulary's casing.
        seq_length: length of `model.preprocessor` (BERT); defaults to the
            saved one, else min(128, max_length).
        **overrides: backbone constructor arguments to change, e.g. `dropout=0.0`
            for a BertEncoder (shape-changing ones fail the shape checks).

    Returns:
        (model, report); the model has `tokenizer` and, for BERT models,
        `preprocessor` (a `BertPreprocessor`) attached; None when the
        checkpoint has no tokenizer files.
    """
    if isinstance(model_class, type):
        model_class = model_class.__name__
    family = MODEL_FAMILIES.get(model_class) if model_class else None
    if model_class is not None and family is None:
        raise ValueError(f"model_class={model_class!r}; expected one of {sorted(MODEL_FAMILIES)}")
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

    The model class is the checkpoint's own: a BERT with MLM + NSP heads
    becomes a `BertPretrainer`, with a classifier head a `BertClassifier`,
    without heads a `BertEncoder`; GPT-2 becomes a `GPT`.

    Args:
        input_path: any checkpoint `from_pretrained` reads.
        output_dir: where to write tfplm's format.
        family: "bert" or "gpt2" (or "gpt") to insist on one.
        do_lower_case, seq_length: as in `load_pretrained`.
    """
    family = {"gpt2": "gpt"}.get(family, family)
    if family not in (None, "bert", "gpt"):
        raise ValueError(f"family={family!r}; expected 'bert' or 'gpt2'")
    checkpoint = read_checkpoint(input_path, family=family, do_lower_case=do_lower_case)
    model, report = _load(checkpoint, None, seq_length=seq_length)
    save_pretrained(model, output_dir)
    return report


class PretrainedMixin:
    """`save_pretrained` / `from_pretrained` for the zoo's models.

    `from_pretrained` reads tfplm, Hugging Face, Google BERT and keras-nlp
    checkpoints (see `tfplm.models.pretrained`) and attaches `tokenizer` (and
    `preprocessor` for BERT models).
    """

    tokenizer = None
    preprocessor = None

    def save_pretrained(self, directory, tokenizer=None, seq_length=None):
        """Writes this model + its tokenizer in tfplm's format (see `save_pretrained`)."""
        return save_pretrained(self, directory, tokenizer=tokenizer, seq_length=seq_length)

    @classmethod
    def from_pretrained(cls, path, **kwargs):
        """This class from a checkpoint directory (see `load_pretrained` for arguments)."""
        return load_pretrained(path, cls.__name__, **kwargs)[0]
