"""Hugging Face checkpoints (config.json + model.safetensors) of BERT and GPT-2.

BERT: `BertModel` names (`embeddings.*`, `encoder.layer.N.*`, `pooler.*`) and
the `bert.`-prefixed names of `BertForPreTraining` (+ `cls.predictions.*`,
`cls.seq_relationship.*`) and `BertForSequenceClassification` (+ `classifier.*`).
PyTorch `Linear` weights are [out, in] and are transposed to Keras' [in, out].

GPT-2: `GPT2Model` names (`wte`, `wpe`, `h.N.*`, `ln_f`) and the
`transformer.`-prefixed names of `GPT2LMHeadModel`. GPT-2's `Conv1D` weights
are already [in, out]; the fused `c_attn` projection is split into query, key
and value.

Only safetensors are read; pickled `pytorch_model.bin` files are refused.
"""

import json
import os

import numpy as np
from absl import logging

from tfplm.models.checkpoints import common
from tfplm.models.checkpoints.common import (
    Checkpoint,
    CheckpointError,
    NameMap,
    activation,
    bert_rules,
    check_tied,
    directory_of,
    inside,
    module_rules,
    read_json,
    refuse_pickle,
    tfplm_weight,
    transpose,
)

POSITION_IDS_REASON = "buffer of positions 0..max_length-1 (a constant, not a weight)"

# What `architecture` returns, for messages.
ARCHITECTURE = "Hugging Face model_type"

# How Hugging Face names and lays out the tensors of each kind of module.
_LEAVES = {
    "embedding": [(r"\.weight", "embeddings", None)],
    "dense": [(r"\.weight", "kernel", transpose), (r"\.bias", "bias", None)],  # torch Linear: [out, in]
    "conv1d": [(r"\.weight", "kernel", None), (r"\.bias", "bias", None)],  # GPT-2's Conv1D: [in, out]
    "norm": [(r"\.(?:weight|gamma)", "gamma", None), (r"\.(?:bias|beta)", "beta", None)],
    "bias": [(r"\.bias", "bias", None)],
    "output": [(r"\.weight", "kernel", transpose), (r"\.bias", "bias", None)],
}


def detect(path):
    """Whether `path` is a Hugging Face directory (a config.json with a model_type)."""
    if not os.path.isdir(path) or not os.path.isfile(inside(path, "config.json", "file")):
        return False
    try:
        content = read_json(path, "config.json")
    except CheckpointError:
        return False
    return "model_type" in content or "architectures" in content


def architecture(directory):
    """The checkpoint's `model_type` ("bert", "gpt2", ...)."""
    return read_json(directory, "config.json").get("model_type")


def _shards(directory, index):
    """The files of a sharded checkpoint's `weight_map`, each inside `directory`."""
    weight_map = read_json(directory, index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CheckpointError(f"{directory}: {index} has no 'weight_map' of tensor names to files")
    for tensor, name in weight_map.items():
        inside(directory, name, f"{index} weight_map[{tensor!r}]")
    return sorted(set(weight_map.values()))


def load_safetensors(directory):
    """All tensors of `model.safetensors` (or its shards) as float32/int numpy arrays."""
    index = "model.safetensors.index.json"
    if os.path.isfile(inside(directory, index, "file")):
        files = _shards(directory, index)
    elif os.path.isfile(inside(directory, "model.safetensors", "file")):
        files = ["model.safetensors"]
    else:
        refuse_pickle(directory)
        raise CheckpointError(
            f"{directory!r} has no model.safetensors; tfplm reads Hugging Face weights only "
            "as safetensors (save them with `save_pretrained(..., safe_serialization=True)`)"
        )
    tensors = {}
    for name in files:
        tensors.update(common.load_safetensors(os.path.join(directory, name)))
    return tensors


def _read(path):
    """(directory, config.json, tensors) of a Hugging Face checkpoint; pickles refused."""
    directory = directory_of(path)
    refuse_pickle(directory)
    return directory, read_json(directory, "config.json"), load_safetensors(directory)


# --- BERT --------------------------------------------------------------------

def _bert_name_map():
    rules = [
        *bert_rules(_LEAVES, ".", r"(?:bert\.)?", "layer.{layer}"),
        *module_rules([(r"classifier", "classifier", "dense")], _LEAVES),  # BertForSequenceClassification
    ]
    ignore = [
        (r"(?:bert\.)?embeddings\.position_ids", POSITION_IDS_REASON),
        (r"cls\.predictions\.decoder\.weight", "tied to the word embeddings (checked equal)"),
        (r"cls\.predictions\.decoder\.bias", "the same tensor as cls.predictions.bias (checked equal)"),
    ]
    return NameMap(rules, ignore)


def bert_config(config, source):
    """BertEncoder arguments from a Hugging Face BertConfig dict."""
    if config.get("position_embedding_type", "absolute") != "absolute":
        raise CheckpointError(
            f"{source}: position_embedding_type={config['position_embedding_type']!r}; "
            "tfplm's BERT has absolute (learned) positions only"
        )
    if config.get("is_decoder") or config.get("add_cross_attention"):
        raise CheckpointError(f"{source}: a decoder BERT (is_decoder / add_cross_attention) is not supported")
    try:
        return dict(
            vocab_size=config["vocab_size"],
            hidden_size=config["hidden_size"],
            num_layers=config["num_hidden_layers"],
            num_heads=config["num_attention_heads"],
            intermediate_size=config["intermediate_size"],
            max_length=config.get("max_position_embeddings", 512),
            type_vocab_size=config.get("type_vocab_size", 2),
            activation=activation(config.get("hidden_act", "gelu"), source),
            dropout=config.get("hidden_dropout_prob", 0.1),
            attention_dropout=config.get("attention_probs_dropout_prob", 0.1),
            layer_norm_epsilon=config.get("layer_norm_eps", 1e-12),
        )
    except KeyError as e:
        raise CheckpointError(f"{source}: the BERT config lacks {e.args[0]!r}") from None


def _bert_lowercase(directory, do_lower_case):
    """Whether the vocabulary is uncased: argument, tokenizer_config.json, tokenizer.json."""
    if do_lower_case is not None:
        return do_lower_case
    if os.path.isfile(inside(directory, "tokenizer_config.json", "file")):
        value = read_json(directory, "tokenizer_config.json").get("do_lower_case")
        if value is not None:
            return bool(value)
    if os.path.isfile(inside(directory, "tokenizer.json", "file")):
        normalizer = read_json(directory, "tokenizer.json").get("normalizer") or {}
        normalizers = normalizer.get("normalizers", [normalizer])
        for n in normalizers:
            if n.get("type") == "BertNormalizer":
                return bool(n.get("lowercase", True))
        return any(n.get("type") == "Lowercase" for n in normalizers)
    logging.warning("%s: no tokenizer config says whether it is cased; assuming uncased", directory)
    return True


def _tokenizer_model(directory):
    """The "model" object of tokenizer.json (its vocabulary, merges, ...)."""
    model = read_json(directory, "tokenizer.json").get("model")
    if not isinstance(model, dict):
        raise CheckpointError(f"{directory}: tokenizer.json has no 'model' object")
    return model


def bert_tokenizer(directory, do_lower_case=None):
    """The checkpoint's WordPiece tokenizer (vocab.txt, else tokenizer.json's vocab), or None."""
    from tfplm.tokenizers import WordPieceTokenizer

    lowercase = _bert_lowercase(directory, do_lower_case)
    vocab_txt = inside(directory, "vocab.txt", "file")
    if os.path.isfile(vocab_txt):
        return WordPieceTokenizer(vocab_txt, lowercase=lowercase)
    tokenizer_json = inside(directory, "tokenizer.json", "file")
    if os.path.isfile(tokenizer_json):
        model = _tokenizer_model(directory)
        if model.get("type") != "WordPiece":
            raise CheckpointError(f"{tokenizer_json}: a {model.get('type')} tokenizer; BERT needs WordPiece")
        vocab = model["vocab"]
        return WordPieceTokenizer(sorted(vocab, key=vocab.get), lowercase=lowercase)
    logging.warning("%s has no vocab.txt or tokenizer.json; the model gets no tokenizer", directory)
    return None


# sentence-transformers' Pooling modes, as BertEncoder's `pooling`.
_POOLING_MODES = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}


def sentence_transformers_pooling(directory):
    """`BertEncoder` arguments {"pooling", "normalize"} from a sentence-transformers
    folder's `modules.json` (its Pooling module's config.json, a Normalize
    module), or {} when the folder has no modules.json."""
    path = inside(directory, "modules.json", "file")
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            modules = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: not a JSON file ({error}); the checkpoint is corrupt") from None
    if not isinstance(modules, list) or not all(isinstance(m, dict) for m in modules):
        raise CheckpointError(f"{path}: expected a list of modules (objects with 'type' and 'path')")
    kinds = [str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
    pooling = [m for m, kind in zip(modules, kinds) if kind == "Pooling"]
    if len(pooling) != 1:
        raise CheckpointError(f"{path}: {len(pooling)} Pooling modules; expected one")
    folder = pooling[0].get("path")
    if not isinstance(folder, str) or not folder:
        raise CheckpointError(f"{path}: the Pooling module's 'path' is {folder!r}; expected its folder's name")
    config = read_json(directory, f"{folder}/config.json", "modules.json Pooling path")
    modes = [mode for key, mode in _POOLING_MODES.items() if config.get(key)]
    other = sorted(key for key, value in config.items() if key.startswith("pooling_mode_") and value and key not in _POOLING_MODES)
    if other or len(modes) != 1:
        raise CheckpointError(
            f"{directory}: its Pooling module uses {other or modes or 'no mode'}; tfplm pools with one of "
            f"{sorted(_POOLING_MODES)} (mean or [CLS])"
        )
    unknown = sorted(set(kinds) - {"Transformer", "Pooling", "Normalize"})
    if unknown:
        logging.warning("%s: modules.json has %s modules, which tfplm does not load: its embeddings will differ "
                        "from sentence-transformers'", directory, unknown)
    return {"pooling": modes[0], "normalize": "Normalize" in kinds}


def read_bert(path, do_lower_case=None):
    """Reads a Hugging Face BERT directory into a `Checkpoint` (family "bert").

    Args:
        path: the directory (config.json, model.safetensors or its shards,
            vocab.txt or tokenizer.json), or a file in it.
        do_lower_case: overrides the tokenizer config's casing.
    """
    directory, config, tensors = _read(path)
    source = f"Hugging Face BERT checkpoint {directory!r}"
    model_config = {**bert_config(config, source), **sentence_transformers_pooling(directory)}
    weights, sources, ignored = _bert_name_map().apply(tensors, source)
    word = "bert.embeddings.word_embeddings.weight"
    word = word if word in tensors else "embeddings.word_embeddings.weight"
    if "cls.predictions.decoder.weight" in tensors:
        check_tied(tensors, "cls.predictions.decoder.weight", word, tensors[word], source)
    if "cls.predictions.decoder.bias" in tensors and "cls.predictions.bias" in tensors:
        check_tied(
            tensors, "cls.predictions.decoder.bias", "cls.predictions.bias",
            tensors["cls.predictions.bias"], source,
        )
    num_classes = classifier_dropout = None
    classifier = tfplm_weight("classifier", "kernel")
    if classifier in weights:
        num_classes = weights[classifier].shape[1]
        classifier_dropout = config.get("classifier_dropout") or config.get("hidden_dropout_prob", 0.1)
    return Checkpoint(
        family="bert",
        config=model_config,
        weights=weights,
        sources=sources,
        ignored=ignored,
        tokenizer=bert_tokenizer(directory, do_lower_case),
        num_classes=num_classes,
        classifier_dropout=classifier_dropout,
        source_format="huggingface",
        path=directory,
    )


# --- GPT-2 -------------------------------------------------------------------

_T = r"(?:transformer\.)?"
_H = _T + r"h\.(?P<layer>\d+)\."

_GPT2_BLOCK_MODULES = [  # in block N, after _H (c_attn is split apart, see _split_qkv)
    (r"ln_1", "attention_norm", "norm"),
    (r"attn\.c_proj", "attention_output", "conv1d"),
    (r"ln_2", "feed_forward_norm", "norm"),
    (r"mlp\.c_fc", "intermediate", "conv1d"),
    (r"mlp\.c_proj", "feed_forward_output", "conv1d"),
]
_GPT2_MODULES = [
    (_T + r"wte", "token_embedding", "embedding"),
    (_T + r"wpe", "position_embedding", "embedding"),
    *[(_H + name, part, kind) for name, part, kind in _GPT2_BLOCK_MODULES],
    (_T + r"ln_f", "final_norm", "norm"),
]


def _split_qkv(leaf):
    """Splits the fused c_attn tensor into tfplm's query, key and value."""

    def split(groups, value, name):
        parts = np.split(value, 3, axis=-1)
        width = parts[0].shape[-1]
        return [
            (
                tfplm_weight(part, leaf, layer=groups["layer"]),
                np.ascontiguousarray(array),
                f"{name}[..., {i * width}:{(i + 1) * width}]",
            )
            for i, (part, array) in enumerate(zip(("query", "key", "value"), parts))
        ]

    return split


def _gpt2_name_map():
    rules = [
        (_H + r"attn\.c_attn\.weight", _split_qkv("kernel"), None),
        (_H + r"attn\.c_attn\.bias", _split_qkv("bias"), None),
        *module_rules(_GPT2_MODULES, _LEAVES),
    ]
    ignore = [
        (_H + r"attn\.(?:masked_)?bias", "causal-mask buffer (a constant, not a weight)"),
        (r"lm_head\.weight", "tied to the token embeddings wte (checked equal)"),
    ]
    return NameMap(rules, ignore)


def gpt2_config(config, source):
    """GPT arguments from a Hugging Face GPT2Config dict."""
    if config.get("add_cross_attention"):
        raise CheckpointError(f"{source}: GPT-2 with cross-attention is not supported")
    if config.get("scale_attn_by_inverse_layer_idx"):
        raise CheckpointError(f"{source}: scale_attn_by_inverse_layer_idx=True is not supported")
    if not config.get("scale_attn_weights", True):
        raise CheckpointError(f"{source}: scale_attn_weights=False is not supported")
    try:
        hidden = config["n_embd"]
        return dict(
            vocab_size=config["vocab_size"],
            hidden_size=hidden,
            num_layers=config["n_layer"],
            num_heads=config["n_head"],
            intermediate_size=config.get("n_inner") or 4 * hidden,
            max_length=config.get("n_positions", 1024),
            activation=activation(config.get("activation_function", "gelu_new"), source),
            dropout=config.get("resid_pdrop", 0.1),
            layer_norm_epsilon=config.get("layer_norm_epsilon", 1e-5),
        )
    except KeyError as e:
        raise CheckpointError(f"{source}: the GPT-2 config lacks {e.args[0]!r}") from None


def gpt2_tokenizer(directory):
    """The checkpoint's byte-level BPE (vocab.json + merges.txt, else tokenizer.json), or None."""
    from tfplm.tokenizers import GPT2Tokenizer

    vocab_json = inside(directory, "vocab.json", "file")
    merges_txt = inside(directory, "merges.txt", "file")
    if os.path.isfile(vocab_json) and os.path.isfile(merges_txt):
        return GPT2Tokenizer(vocab_json, merges_txt)
    tokenizer_json = inside(directory, "tokenizer.json", "file")
    if os.path.isfile(tokenizer_json):
        model = _tokenizer_model(directory)
        if model.get("type") != "BPE":
            raise CheckpointError(f"{tokenizer_json}: a {model.get('type')} tokenizer; GPT-2 needs BPE")
        merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
        return GPT2Tokenizer(dict(model["vocab"]), merges)
    logging.warning("%s has no vocab.json + merges.txt or tokenizer.json; no tokenizer", directory)
    return None


def read_gpt2(path, do_lower_case=None):
    """Reads a Hugging Face GPT-2 directory into a `Checkpoint` (family "gpt").

    Args:
        path: the directory (config.json, model.safetensors or its shards,
            vocab.json + merges.txt or tokenizer.json), or a file in it.
        do_lower_case: unused: byte-level BPE keeps case.
    """
    directory, config, tensors = _read(path)
    source = f"Hugging Face GPT-2 checkpoint {directory!r}"
    model_config = gpt2_config(config, source)
    weights, sources, ignored = _gpt2_name_map().apply(tensors, source)
    if "lm_head.weight" in tensors:
        wte = "transformer.wte.weight" if "transformer.wte.weight" in tensors else "wte.weight"
        if wte in tensors:
            check_tied(tensors, "lm_head.weight", wte, tensors[wte], source)
    return Checkpoint(
        family="gpt",
        config=model_config,
        weights=weights,
        sources=sources,
        ignored=ignored,
        tokenizer=gpt2_tokenizer(directory),
        source_format="huggingface",
        path=directory,
    )
