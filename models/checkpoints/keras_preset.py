"""keras-nlp / keras-hub presets of `BertBackbone` and `GPT2Backbone`.

A preset directory is what `backbone.save_to_preset(dir)` or
`task.save_to_preset(dir)` writes: config.json (the backbone), metadata.json,
model.weights.h5, and for tasks task.json / task.weights.h5 and the tokenizer
(tokenizer.json + assets/tokenizer/). keras-hub itself loads the preset; this
module only renames its weights: keras-hub's attention kernels are
[hidden, heads, head_size] and are reshaped to tfplm's [hidden, hidden].

Architecture notes: keras-hub's BERT and GPT-2 use the tanh-approximate GELU
(tfplm "gelu_approximate") and LayerNorm epsilon 1e-12 (BERT) / 1e-5 (GPT-2).
The head of a saved `BertTextClassifier` becomes `BertClassifier`'s head; other
task heads (e.g. `BertMaskedLM`'s) are reported as unused.
"""

import os

from absl import logging

from tfplm.models import presets
from tfplm.models.checkpoints.common import (
    Checkpoint,
    CheckpointError,
    SIZES,
    NameMap,
    confine_folder,
    directory_of,
    inside,
    module_rules,
    read_json,
)

# What `architecture` returns, for messages.
ARCHITECTURE = "keras-nlp backbone"


def detect(path):
    """Whether `path` is a keras-nlp / keras-hub preset directory."""
    if not os.path.isdir(path):
        return False
    if not all(os.path.isfile(inside(path, name, "file")) for name in ("config.json", "metadata.json")):
        return False
    try:
        content = read_json(path, "config.json")
    except CheckpointError:
        return False
    registered = str(content.get("registered_name") or "")
    module = str(content.get("module") or "")
    return registered.startswith(("keras_hub>", "keras_nlp>")) or module.startswith(("keras_hub", "keras_nlp"))


def architecture(directory):
    """The preset's backbone class ("BertBackbone", "GPT2Backbone", ...)."""
    return read_json(directory, "config.json").get("class_name")


def _heads_to_hidden(x):  # [hidden, heads, head_size] → [hidden, hidden]
    return x.reshape(x.shape[0], -1)


def _flatten(x):  # [heads, head_size] → [hidden]
    return x.reshape(-1)


def _output_kernel(x):  # [heads, head_size, hidden] → [hidden, hidden]
    return x.reshape(-1, x.shape[-1])


# How keras-hub names and lays out the tensors of each kind of module.
_LEAVES = {
    "embedding": [("/embeddings", "embeddings", None)],
    "dense": [("/kernel", "kernel", None), ("/bias", "bias", None)],
    "norm": [("/gamma", "gamma", None), ("/beta", "beta", None)],
    "attention_projection": [("/kernel", "kernel", _heads_to_hidden), ("/bias", "bias", _flatten)],
    "attention_output": [("/kernel", "kernel", _output_kernel), ("/bias", "bias", None)],
}

_L = r"transformer_layer_(?P<layer>\d+)/"
_A = _L + r"self_attention(?:_layer)?/"

# One table for keras-hub's BERT and GPT-2: they share the layer names.
_MODULES = [
    (r"token_embedding", "token_embedding", "embedding"),
    (r"position_embedding", "position_embedding", "embedding"),
    (r"segment_embedding", "type_embedding", "embedding"),
    (r"embeddings_layer_norm", "embedding_norm", "norm"),
    *[(_A + part, part, "attention_projection") for part in ("query", "key", "value")],
    (_A + r"attention_output", "attention_output", "attention_output"),
    (_L + r"self_attention_layer_norm", "attention_norm", "norm"),
    (_L + r"feedforward_intermediate_dense", "intermediate", "dense"),
    (_L + r"feedforward_output_dense", "feed_forward_output", "dense"),
    (_L + r"feedforward_layer_norm", "feed_forward_norm", "norm"),
    (r"pooled_dense", "pooler", "dense"),
    (r"layer_norm", "final_norm", "norm"),
    (r"logits", "classifier", "dense"),
]


# keras-hub's names of the backbone arguments its BERT and GPT-2 share with tfplm's.
_CONFIG_NAMES = dict(
    vocab_size="vocabulary_size", hidden_size="hidden_dim", num_layers="num_layers", num_heads="num_heads",
    intermediate_size="intermediate_dim",
)


def _backbone_config(config, max_length, layer_norm_epsilon, **more):
    """tfplm arguments of a keras-hub backbone: it uses the tanh-approximate GELU
    and a fixed LayerNorm epsilon, and one dropout rate everywhere."""
    return dict(
        {ours: config[theirs] for ours, theirs in _CONFIG_NAMES.items()},
        max_length=config.get("max_sequence_length", max_length),
        activation="gelu_approximate",
        dropout=config.get("dropout", 0.1),
        layer_norm_epsilon=layer_norm_epsilon,
        **more,
    )


def _bert_config(config):
    return _backbone_config(
        config, 512, 1e-12, type_vocab_size=config.get("num_segments", 2), attention_dropout=config.get("dropout", 0.1)
    )


def _gpt2_config(config):
    return _backbone_config(config, 1024, 1e-5)


def _source_tokenizer(directory):
    """The preset's keras-hub tokenizer, or None (backbone-only presets)."""
    if not os.path.isfile(inside(directory, "tokenizer.json", "file")):
        logging.warning("%s has no tokenizer.json (a backbone-only preset); no tokenizer", directory)
        return None
    import keras_hub

    return keras_hub.tokenizers.Tokenizer.from_preset(directory)


def _bert_tokenizer(directory, do_lower_case):
    from tfplm.tokenizers import WordPieceTokenizer

    source = _source_tokenizer(directory)
    if source is None:
        return None
    if bool(getattr(source, "strip_accents", source.lowercase)) != bool(source.lowercase):
        logging.warning(
            "%s: keras-hub tokenizer has lowercase=%s, strip_accents=%s; tfplm's "
            "WordPieceTokenizer strips accents exactly when it lower-cases (as BERT does)",
            directory, source.lowercase, source.strip_accents,
        )
    lowercase = source.lowercase if do_lower_case is None else do_lower_case
    return WordPieceTokenizer(list(source.get_vocabulary()), lowercase=bool(lowercase))


def _gpt2_tokenizer(directory, do_lower_case):
    from tfplm.tokenizers import GPT2Tokenizer

    source = _source_tokenizer(directory)
    return None if source is None else GPT2Tokenizer(dict(source.vocabulary), list(source.merges))


def _check_size(directory, family, model_config, config, source):
    """tfplm's arguments of the preset's backbone, refused if they describe a model
    larger than its weight files: keras-hub builds the model before loading them."""
    if not isinstance(config, dict):
        raise CheckpointError(f"{source}: config.json has no backbone 'config' object")
    try:
        arguments = model_config(config)
    except KeyError as error:
        raise CheckpointError(f"{source}: config.json lacks {error.args[0]!r}") from None
    task = read_json(directory, "task.json") if os.path.isfile(os.path.join(directory, "task.json")) else {}
    num_classes = task["config"].get("num_classes", 1) if isinstance(task.get("config"), dict) else 1
    sizes = {key: arguments[key] for key in (*SIZES, "num_layers", "num_heads") if key in arguments}
    for key, value in {**sizes, "num_classes": num_classes}.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise CheckpointError(f"{source}: gives {key}={value!r}; expected a positive integer")
    weight_bytes = sum(
        os.path.getsize(os.path.join(directory, name)) for name in os.listdir(directory) if name.endswith(".h5")
    )
    parameters = presets.count_parameters(family, arguments) + num_classes * arguments["hidden_size"]
    # A weight takes 2 bytes or more (bfloat16): a model with more weights than its
    # files have bytes is not the one they hold.
    if parameters > weight_bytes + 10**7:
        raise CheckpointError(
            f"{source}: its config describes a model of {parameters:,} parameters but its weight files "
            f"hold {weight_bytes:,} bytes; refusing to build it (the config's sizes and the weights disagree)"
        )
    return arguments


def _read(path, family, model_config, tokenizer, do_lower_case):
    """A preset's `Checkpoint`: keras-hub loads the model, its weights are renamed."""
    import keras_hub

    directory = directory_of(path)
    source = f"keras-nlp preset {directory!r}"
    confine_folder(directory)  # keras-hub opens the preset's files itself
    config = read_json(directory, "config.json")
    backbone_config = _check_size(directory, family, model_config, config.get("config"), source)
    num_classes = classifier_dropout = None
    if os.path.isfile(os.path.join(directory, "task.json")):
        task_config = read_json(directory, "task.json")
        task_class = getattr(keras_hub.models, str(task_config.get("class_name")), None)
        if task_class is None:
            raise CheckpointError(f"{source}: unknown keras-hub task {task_config.get('class_name')!r}")
        model = task_class.from_preset(directory, load_weights=True)
        if task_config.get("class_name") == "BertTextClassifier":
            num_classes = task_config["config"]["num_classes"]
            classifier_dropout = task_config["config"].get("dropout", 0.1)
            if task_config["config"].get("activation") not in (None, "linear"):
                logging.warning(
                    "%s: the classifier applies %r; tfplm's BertClassifier returns logits",
                    directory, task_config["config"]["activation"],
                )
    else:
        model = keras_hub.models.Backbone.from_preset(directory, load_weights=True)
    tensors = {variable.path: variable.numpy() for variable in model.weights}
    weights, sources, ignored = NameMap(module_rules(_MODULES, _LEAVES)).apply(tensors, source)
    return Checkpoint(
        family=family,
        config=backbone_config,
        weights=weights,
        sources=sources,
        ignored=ignored,
        tokenizer=tokenizer(directory, do_lower_case),
        num_classes=num_classes,
        classifier_dropout=classifier_dropout,
        source_format="keras_nlp",
        path=directory,
    )


def read_bert(path, do_lower_case=None):
    """Reads a keras-hub `BertBackbone` preset (or a BERT task's) into a `Checkpoint`.

    Args:
        path: a directory written by `save_to_preset`, or a file in it.
        do_lower_case: overrides the preset tokenizer's casing.
    """
    return _read(path, "bert", _bert_config, _bert_tokenizer, do_lower_case)


def read_gpt2(path, do_lower_case=None):
    """Reads a keras-hub `GPT2Backbone` preset (or a GPT-2 task's) into a `Checkpoint`.

    Args:
        path: a directory written by `save_to_preset`, or a file in it.
        do_lower_case: unused: byte-level BPE keeps case.
    """
    return _read(path, "gpt", _gpt2_config, _gpt2_tokenizer, do_lower_case)
