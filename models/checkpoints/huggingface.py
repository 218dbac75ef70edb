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

from tfplm.models.checkpoints.common import (
    Checkpoint,
    CheckpointError,
    NameMap,
    activation,
    check_tied,
    layer_norm_rules,
    refuse_pickle,
    transpose,
)

POSITION_IDS_REASON = "buffer of positions 0..max_length-1 (a constant, not a weight)"


def is_huggingface_dir(path):
    config = os.path.join(path, "config.json")
    if not os.path.isfile(config):
        return False
    with open(config, encoding="utf-8") as f:
        try:
            content = json.load(f)
        except json.JSONDecodeError:
            return False
    return isinstance(content, dict) and ("model_type" in content or "architectures" in content)


def read_json(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def load_safetensors(directory):
    """All tensors of `model.safetensors` (or its shards) as float32/int numpy arrays."""
    from safetensors import safe_open

    index = os.path.join(directory, "model.safetensors.index.json")
    if os.path.isfile(index):
        files = sorted(set(read_json(index)["weight_map"].values()))
    elif os.path.isfile(os.path.join(directory, "model.safetensors")):
        files = ["model.safetensors"]
    else:
        refuse_pickle(directory)
        raise CheckpointError(
            f"{directory!r} has no model.safetensors; tfplm reads Hugging Face weights only "
            "as safetensors (save them with `save_pretrained(..., safe_serialization=True)`)"
        )
    tensors = {}
    for name in files:
        path = os.path.join(directory, name)
        try:
            with safe_open(path, framework="numpy") as f:
                for key in f.keys():
                    value = f.get_tensor(key)
                    tensors[key] = value.astype(np.float32) if value.dtype.name == "bfloat16" else value
        except TypeError:  # bfloat16 has no numpy dtype; read through TensorFlow
            import tensorflow as tf

            with safe_open(path, framework="tf") as f:
                for key in f.keys():
                    tensors[key] = tf.cast(f.get_tensor(key), tf.float32).numpy()
    return tensors


# --- BERT --------------------------------------------------------------------

_B = r"(?:bert\.)?"  # BertForPreTraining / ForSequenceClassification prefix
_L = _B + r"encoder\.layer\.(\d+)\."


def _bert_name_map():
    rules = [
        (_B + r"embeddings\.word_embeddings\.weight", "embedding/token_embedding/embeddings", None),
        (_B + r"embeddings\.position_embeddings\.weight", "embedding/position_embedding/embeddings", None),
        (_B + r"embeddings\.token_type_embeddings\.weight", "embedding/type_embedding/embeddings", None),
        *layer_norm_rules(_B + r"embeddings\.LayerNorm", "embedding/layer_norm"),
    ]
    for part in ("query", "key", "value"):
        rules += [
            (_L + rf"attention\.self\.{part}\.weight", "block_{0}/self_attention/" + part + "/kernel", transpose),
            (_L + rf"attention\.self\.{part}\.bias", "block_{0}/self_attention/" + part + "/bias", None),
        ]
    rules += [
        (_L + r"attention\.output\.dense\.weight", "block_{0}/self_attention/output/kernel", transpose),
        (_L + r"attention\.output\.dense\.bias", "block_{0}/self_attention/output/bias", None),
        *layer_norm_rules(_L + r"attention\.output\.LayerNorm", "block_{0}/self_attention_norm"),
        (_L + r"intermediate\.dense\.weight", "block_{0}/feed_forward/intermediate/kernel", transpose),
        (_L + r"intermediate\.dense\.bias", "block_{0}/feed_forward/intermediate/bias", None),
        (_L + r"output\.dense\.weight", "block_{0}/feed_forward/output/kernel", transpose),
        (_L + r"output\.dense\.bias", "block_{0}/feed_forward/output/bias", None),
        *layer_norm_rules(_L + r"output\.LayerNorm", "block_{0}/feed_forward_norm"),
        (_B + r"pooler\.dense\.weight", "pooler/dense/kernel", transpose),
        (_B + r"pooler\.dense\.bias", "pooler/dense/bias", None),
        (r"cls\.predictions\.transform\.dense\.weight", "masked_lm_head/transform/kernel", transpose),
        (r"cls\.predictions\.transform\.dense\.bias", "masked_lm_head/transform/bias", None),
        *layer_norm_rules(r"cls\.predictions\.transform\.LayerNorm", "masked_lm_head/layer_norm"),
        (r"cls\.predictions\.bias", "masked_lm_head/bias", None),
        (r"cls\.seq_relationship\.weight", "next_sentence_head/logits/kernel", transpose),
        (r"cls\.seq_relationship\.bias", "next_sentence_head/logits/bias", None),
        (r"classifier\.weight", "classifier/logits/kernel", transpose),
        (r"classifier\.bias", "classifier/logits/bias", None),
    ]
    ignore = [
        (_B + r"embeddings\.position_ids", POSITION_IDS_REASON),
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
    tokenizer_config = os.path.join(directory, "tokenizer_config.json")
    if os.path.isfile(tokenizer_config):
        value = read_json(tokenizer_config).get("do_lower_case")
        if value is not None:
            return bool(value)
    tokenizer_json = os.path.join(directory, "tokenizer.json")
    if os.path.isfile(tokenizer_json):
        normalizer = read_json(tokenizer_json).get("normalizer") or {}
        normalizers = normalizer.get("normalizers", [normalizer])
        for n in normalizers:
            if n.get("type") == "BertNormalizer":
                return bool(n.get("lowercase", True))
        return any(n.get("type") == "Lowercase" for n in normalizers)
    logging.warning("%s: no tokenizer config says whether it is cased; assuming uncased", directory)
    return True


def bert_tokenizer(directory, do_lower_case=None):
    """The checkpoint's WordPiece tokenizer (vocab.txt, else tokenizer.json's vocab), or None."""
    from tfplm.tokenizers import WordPieceTokenizer

    lowercase = _bert_lowercase(directory, do_lower_case)
    vocab_txt = os.path.join(directory, "vocab.txt")
    if os.path.isfile(vocab_txt):
        return WordPieceTokenizer(vocab_txt, lowercase=lowercase)
    tokenizer_json = os.path.join(directory, "tokenizer.json")
    if os.path.isfile(tokenizer_json):
        model = read_json(tokenizer_json)["model"]
        if model.get("type") != "WordPiece":
            raise CheckpointError(f"{tokenizer_json}: a {model.get('type')} tokenizer; BERT needs WordPiece")
        vocab = model["vocab"]
        return WordPieceTokenizer(sorted(vocab, key=vocab.get), lowercase=lowercase)
    logging.warning("%s has no vocab.txt or tokenizer.json; the model gets no tokenizer", directory)
    return None


def read_bert(directory, config, tensors, do_lower_case=None):
    source = f"Hugging Face BERT checkpoint {directory!r}"
    model_config = bert_config(config, source)
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
    if "classifier/logits/kernel" in weights:
        num_classes = weights["classifier/logits/kernel"].shape[1]
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
_H = _T + r"h\.(\d+)\."


def _split_qkv(kind):
    def split(groups, value, name):
        parts = np.split(value, 3, axis=-1)
        width = parts[0].shape[-1]
        return [
            (
                f"block_{groups[0]}/self_attention/{part}/{kind}",
                np.ascontiguousarray(array),
                f"{name}[..., {i * width}:{(i + 1) * width}]",
            )
            for i, (part, array) in enumerate(zip(("query", "key", "value"), parts))
        ]

    return split


def _gpt2_name_map():
    rules = [
        (_T + r"wte\.weight", "embedding/token_embedding/embeddings", None),
        (_T + r"wpe\.weight", "embedding/position_embedding/embeddings", None),
        *layer_norm_rules(_H + r"ln_1", "block_{0}/self_attention_norm"),
        (_H + r"attn\.c_attn\.weight", _split_qkv("kernel"), None),
        (_H + r"attn\.c_attn\.bias", _split_qkv("bias"), None),
        (_H + r"attn\.c_proj\.weight", "block_{0}/self_attention/output/kernel", None),
        (_H + r"attn\.c_proj\.bias", "block_{0}/self_attention/output/bias", None),
        *layer_norm_rules(_H + r"ln_2", "block_{0}/feed_forward_norm"),
        (_H + r"mlp\.c_fc\.weight", "block_{0}/feed_forward/intermediate/kernel", None),
        (_H + r"mlp\.c_fc\.bias", "block_{0}/feed_forward/intermediate/bias", None),
        (_H + r"mlp\.c_proj\.weight", "block_{0}/feed_forward/output/kernel", None),
        (_H + r"mlp\.c_proj\.bias", "block_{0}/feed_forward/output/bias", None),
        *layer_norm_rules(_T + r"ln_f", "final_norm"),
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

    vocab_json = os.path.join(directory, "vocab.json")
    merges_txt = os.path.join(directory, "merges.txt")
    if os.path.isfile(vocab_json) and os.path.isfile(merges_txt):
        return GPT2Tokenizer(vocab_json, merges_txt)
    tokenizer_json = os.path.join(directory, "tokenizer.json")
    if os.path.isfile(tokenizer_json):
        model = read_json(tokenizer_json)["model"]
        if model.get("type") != "BPE":
            raise CheckpointError(f"{tokenizer_json}: a {model.get('type')} tokenizer; GPT-2 needs BPE")
        merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
        return GPT2Tokenizer(dict(model["vocab"]), merges)
    logging.warning("%s has no vocab.json + merges.txt or tokenizer.json; no tokenizer", directory)
    return None


def read_gpt2(directory, config, tensors):
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


_FAMILIES = {"bert": "bert", "gpt2": "gpt"}


def read(directory, family=None, do_lower_case=None):
    """Reads a Hugging Face BERT or GPT-2 directory into a `Checkpoint`.

    Args:
        directory: holds config.json, model.safetensors (or shards) and the
            tokenizer files (vocab.txt / tokenizer.json, or vocab.json + merges.txt).
        family: "bert" or "gpt" to insist on one; None accepts either.
        do_lower_case: BERT only; overrides the tokenizer config's casing.
    """
    refuse_pickle(directory)
    config = read_json(os.path.join(directory, "config.json"))
    model_type = config.get("model_type")
    if model_type not in _FAMILIES:
        raise CheckpointError(
            f"{directory!r}: model_type {model_type!r} is not supported; tfplm converts "
            f"Hugging Face {sorted(_FAMILIES)} checkpoints"
        )
    if family is not None and _FAMILIES[model_type] != family:
        raise CheckpointError(
            f"{directory!r} is a {model_type} checkpoint, not a {family} one"
        )
    tensors = load_safetensors(directory)
    if model_type == "bert":
        return read_bert(directory, config, tensors, do_lower_case)
    return read_gpt2(directory, config, tensors)
