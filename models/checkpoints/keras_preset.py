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

import json
import os

from absl import logging

from tfplm.models.checkpoints.common import Checkpoint, CheckpointError, NameMap

SUPPORTED = {"BertBackbone": "bert", "GPT2Backbone": "gpt"}


def _read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def is_keras_preset_dir(path):
    config = os.path.join(path, "config.json")
    if not (os.path.isfile(config) and os.path.isfile(os.path.join(path, "metadata.json"))):
        return False
    try:
        content = _read_json(config)
    except json.JSONDecodeError:
        return False
    registered = str(content.get("registered_name") or "")
    module = str(content.get("module") or "")
    return registered.startswith(("keras_hub>", "keras_nlp>")) or module.startswith(("keras_hub", "keras_nlp"))


def _heads_to_hidden(x):  # [hidden, heads, head_size] → [hidden, hidden]
    return x.reshape(x.shape[0], -1)


def _flatten(x):  # [heads, head_size] → [hidden]
    return x.reshape(-1)


def _output_kernel(x):  # [heads, head_size, hidden] → [hidden, hidden]
    return x.reshape(-1, x.shape[-1])


_L = r"transformer_layer_(\d+)/"
_A = _L + r"self_attention(?:_layer)?/"


def _name_map():
    rules = [
        (r"token_embedding/embeddings", "embedding/token_embedding/embeddings", None),
        (r"position_embedding/embeddings", "embedding/position_embedding/embeddings", None),
        (r"segment_embedding/embeddings", "embedding/type_embedding/embeddings", None),
        (r"embeddings_layer_norm/(gamma|beta)", "embedding/layer_norm/{0}", None),
        (_A + r"(query|key|value)/kernel", "block_{0}/self_attention/{1}/kernel", _heads_to_hidden),
        (_A + r"(query|key|value)/bias", "block_{0}/self_attention/{1}/bias", _flatten),
        (_A + r"attention_output/kernel", "block_{0}/self_attention/output/kernel", _output_kernel),
        (_A + r"attention_output/bias", "block_{0}/self_attention/output/bias", None),
        (_L + r"self_attention_layer_norm/(gamma|beta)", "block_{0}/self_attention_norm/{1}", None),
        (_L + r"feedforward_intermediate_dense/(kernel|bias)", "block_{0}/feed_forward/intermediate/{1}", None),
        (_L + r"feedforward_output_dense/(kernel|bias)", "block_{0}/feed_forward/output/{1}", None),
        (_L + r"feedforward_layer_norm/(gamma|beta)", "block_{0}/feed_forward_norm/{1}", None),
        (r"pooled_dense/(kernel|bias)", "pooler/dense/{0}", None),
        (r"layer_norm/(gamma|beta)", "final_norm/{0}", None),
        (r"logits/(kernel|bias)", "classifier/logits/{0}", None),
    ]
    return NameMap(rules)


def _config(class_name, config):
    if class_name == "BertBackbone":
        return dict(
            vocab_size=config["vocabulary_size"],
            hidden_size=config["hidden_dim"],
            num_layers=config["num_layers"],
            num_heads=config["num_heads"],
            intermediate_size=config["intermediate_dim"],
            max_length=config.get("max_sequence_length", 512),
            type_vocab_size=config.get("num_segments", 2),
            activation="gelu_approximate",
            dropout=config.get("dropout", 0.1),
            attention_dropout=config.get("dropout", 0.1),
            layer_norm_epsilon=1e-12,
        )
    return dict(
        vocab_size=config["vocabulary_size"],
        hidden_size=config["hidden_dim"],
        num_layers=config["num_layers"],
        num_heads=config["num_heads"],
        intermediate_size=config["intermediate_dim"],
        max_length=config.get("max_sequence_length", 1024),
        activation="gelu_approximate",
        dropout=config.get("dropout", 0.1),
        layer_norm_epsilon=1e-5,
    )


def _tokenizer(directory, family):
    """The preset's tokenizer as a tfplm tokenizer, or None (backbone-only presets)."""
    if not os.path.isfile(os.path.join(directory, "tokenizer.json")):
        logging.warning("%s has no tokenizer.json (a backbone-only preset); no tokenizer", directory)
        return None
    import keras_hub

    from tfplm.tokenizers import GPT2Tokenizer, WordPieceTokenizer

    source = keras_hub.tokenizers.Tokenizer.from_preset(directory)
    if family == "bert":
        if bool(getattr(source, "strip_accents", source.lowercase)) != bool(source.lowercase):
            logging.warning(
                "%s: keras-hub tokenizer has lowercase=%s, strip_accents=%s; tfplm's "
                "WordPieceTokenizer strips accents exactly when it lower-cases (as BERT does)",
                directory, source.lowercase, source.strip_accents,
            )
        return WordPieceTokenizer(list(source.get_vocabulary()), lowercase=bool(source.lowercase))
    return GPT2Tokenizer(dict(source.vocabulary), list(source.merges))


def read(directory, family=None):
    """Reads a keras-hub BertBackbone / GPT2Backbone preset into a `Checkpoint`.

    Args:
        directory: a directory written by `save_to_preset`.
        family: "bert" or "gpt" to insist on one; None accepts either.
    """
    import keras_hub

    source = f"keras-nlp preset {directory!r}"
    config = _read_json(os.path.join(directory, "config.json"))
    class_name = config.get("class_name")
    if class_name not in SUPPORTED:
        raise CheckpointError(
            f"{source}: a {class_name}; tfplm converts keras-nlp {sorted(SUPPORTED)} presets"
        )
    if family is not None and SUPPORTED[class_name] != family:
        raise CheckpointError(f"{source} is a {class_name}, not a {family} model")
    family = SUPPORTED[class_name]
    num_classes = classifier_dropout = None
    task_file = os.path.join(directory, "task.json")
    if os.path.isfile(task_file):
        task_config = _read_json(task_file)
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
    weights, sources, ignored = _name_map().apply(tensors, source)
    return Checkpoint(
        family=family,
        config=_config(class_name, config["config"]),
        weights=weights,
        sources=sources,
        ignored=ignored,
        tokenizer=_tokenizer(directory, family),
        num_classes=num_classes,
        classifier_dropout=classifier_dropout,
        source_format="keras_nlp",
        path=directory,
    )
