"""Google's original BERT checkpoints (github.com/google-research/bert).

A directory with `bert_config.json`, `bert_model.ckpt.{index,data-*}` and
`vocab.txt`. Variables are read by name with `tf.train.load_checkpoint` (no
graph, no `tf.compat.v1`): `bert/embeddings/word_embeddings`,
`bert/encoder/layer_N/attention/self/query/kernel`, ..., `bert/pooler/dense/*`,
the masked-LM head `cls/predictions/transform/*` + `cls/predictions/output_bias`,
the NSP head `cls/seq_relationship/output_weights` [2, hidden] + `output_bias`,
and, in checkpoints written by `run_classifier.py`, `output_weights`
[num_labels, hidden] + `output_bias`. TF kernels are already [in, out].

Activation: "gelu" in bert_config.json becomes tfplm's exact (erf) "gelu", as
Hugging Face reads these checkpoints; later versions of Google's modeling.py
compute it with the tanh approximation (`activation="gelu_approximate"` as a
`from_pretrained` override reproduces that; the two differ by < 1e-3).

Casing: the checkpoint does not record it. Pass `do_lower_case`; otherwise it
is inferred from the directory name as Google names its releases
(`uncased_L-12_H-768_A-12` → lower-case, `cased_L-12_H-768_A-12` → keep case),
and defaults to lower-case (with a warning) when the name says neither.
"""

import os
import re

import tensorflow as tf
from absl import logging

from tfplm.models.checkpoints.common import (
    Checkpoint,
    CheckpointError,
    NameMap,
    bert_rules,
    directory_of,
    inside,
    read_json,
    tfplm_weight,
    transpose,
)

CONFIG_FILE = "bert_config.json"

# What `architecture` returns, for messages.
ARCHITECTURE = "Google checkpoint architecture"


def checkpoint_prefix(directory):
    """The checkpoint prefix in `directory`: bert_model.ckpt, else the latest one its
    `checkpoint` file names (refused unless inside `directory`), else the only one."""
    if os.path.isfile(inside(directory, "bert_model.ckpt.index", "file")):
        return os.path.join(directory, "bert_model.ckpt")
    state = None
    if os.path.isfile(inside(directory, "checkpoint", "file")):
        state = tf.train.get_checkpoint_state(directory)  # None if unreadable
    if state is not None and state.model_checkpoint_path:
        # TensorFlow joins a relative path to `directory`; an absolute one stays as written.
        name = os.path.relpath(state.model_checkpoint_path, directory)
        latest = inside(directory, name, "the 'checkpoint' file's model_checkpoint_path")
        if os.path.isfile(inside(directory, name + ".index", "file")):
            return latest
    indexes = sorted(f[: -len(".index")] for f in os.listdir(directory) if f.endswith(".index"))
    if len(indexes) == 1:
        return os.path.join(directory, indexes[0])
    return None


def _confine_prefix(prefix):
    """Refuses a checkpoint whose files (prefix.index, prefix.data-*) lead outside its folder."""
    directory, name = os.path.split(prefix)
    directory = directory or "."
    for file in os.listdir(directory):
        if file.startswith(name + "."):
            inside(directory, file, "checkpoint file")


def is_google_dir(path):
    return os.path.isfile(inside(path, CONFIG_FILE, "file")) and checkpoint_prefix(path) is not None


def detect(path):
    """Whether `path` is a Google BERT directory, its `.index` file or a checkpoint prefix in one."""
    if os.path.isdir(path):
        return is_google_dir(path)
    if os.path.isfile(path):
        return path.endswith(".index") and is_google_dir(os.path.dirname(path) or ".")
    return os.path.isfile(path + ".index")


def architecture(directory):
    """Google's repository publishes BERT only."""
    return "bert"


def infer_lowercase(directory):
    """Google's release names say the casing: "uncased_..." or "cased_..."."""
    name = os.path.basename(os.path.normpath(os.path.abspath(directory))).lower()
    if re.search(r"(^|[^a-z])uncased", name):
        return True
    if re.search(r"(^|[^a-z])cased", name):
        return False
    logging.warning(
        "%s: cannot tell from the name whether the vocabulary is cased; assuming uncased "
        "(pass do_lower_case=False for a cased checkpoint)",
        directory,
    )
    return True


# How Google's BERT names the tensors of each kind of module (TF kernels are [in, out]).
_LEAVES = {
    "embedding": [("", "embeddings", None)],
    "dense": [("/kernel", "kernel", None), ("/bias", "bias", None)],
    "norm": [("/gamma", "gamma", None), ("/beta", "beta", None)],
    "bias": [("/output_bias", "bias", None)],
    # The NSP layer's own layout: output_weights is [2, hidden].
    "output": [("/output_weights", "kernel", transpose), ("/output_bias", "bias", None)],
}


def _name_map():
    rules = [
        *bert_rules(_LEAVES, "/", "bert/", "layer_{layer}"),
        # run_classifier.py's classifier: top-level output_weights [num_labels, hidden] + output_bias.
        (r"output_weights", tfplm_weight("classifier", "kernel"), transpose),
        (r"output_bias", tfplm_weight("classifier", "bias"), None),
    ]
    ignore = [
        (r"global_step", "training step counter"),
        (r".*/adam_[mv]", "Adam optimizer slot"),
    ]
    return NameMap(rules, ignore)


def read(path, do_lower_case=None):
    """Reads a Google BERT checkpoint into a `Checkpoint` (family "bert").

    Args:
        path: a directory with bert_config.json, bert_model.ckpt.* (else the
            only or latest checkpoint) and vocab.txt; or a checkpoint prefix
            (or its .index file) in such a directory.
        do_lower_case: whether the vocabulary is uncased; None infers it from
            the directory name (see the module docstring).
    """
    from tfplm.models.checkpoints.huggingface import bert_config
    from tfplm.tokenizers import WordPieceTokenizer

    path = os.fspath(path)
    directory = directory_of(path)
    prefix = checkpoint_prefix(directory) if os.path.isdir(path) else path.removesuffix(".index")
    source = f"Google BERT checkpoint {directory!r}"
    config = read_json(directory, CONFIG_FILE)
    # Google's LayerNorm epsilon is 1e-12 (tf.contrib.layers.layer_norm); its config omits it.
    config.setdefault("layer_norm_eps", 1e-12)
    model_config = bert_config(config, source)
    _confine_prefix(prefix)
    try:
        reader = tf.train.load_checkpoint(prefix)
        tensors = {name: reader.get_tensor(name) for name in reader.get_variable_to_shape_map()}
    except (tf.errors.OpError, IndexError) as error:  # IndexError: a data file shorter than its index says
        message = (str(error).splitlines() or [type(error).__name__])[0]
        raise CheckpointError(
            f"{prefix}: cannot read the TensorFlow checkpoint ({message}); it is truncated or corrupt: "
            "download it again"
        ) from None
    weights, sources, ignored = _name_map().apply(tensors, source)
    if tfplm_weight("query", "kernel", layer=0) not in weights:
        raise CheckpointError(
            f"{source}: no variable has Google BERT's names (bert/encoder/layer_N/...); "
            f"found e.g. {sorted(tensors)[:3]}. TF2 object-based checkpoints are not this format"
        )
    lowercase = infer_lowercase(directory) if do_lower_case is None else do_lower_case
    vocab = inside(directory, "vocab.txt", "file")
    tokenizer = WordPieceTokenizer(vocab, lowercase=lowercase) if os.path.isfile(vocab) else None
    if tokenizer is None:
        logging.warning("%s has no vocab.txt; the model gets no tokenizer", directory)
    classifier = tfplm_weight("classifier", "kernel")
    num_classes = weights[classifier].shape[1] if classifier in weights else None
    return Checkpoint(
        family="bert",
        config=model_config,
        weights=weights,
        sources=sources,
        ignored=ignored,
        tokenizer=tokenizer,
        num_classes=num_classes,
        source_format="google",
        path=directory,
    )
