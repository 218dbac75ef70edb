"""What every checkpoint reader shares: the neutral `Checkpoint`, name tables, safety checks.

A reader turns one source format into a `Checkpoint`: the model config in tfplm's
argument names and every tensor under the tfplm weight path it belongs to
(`block_0/self_attention/query/kernel`, ...), already transposed/reshaped to
tfplm's layout. Building the model and assigning the weights is done once, in
`tfplm.models.pretrained`, for all sources alike.
"""

import dataclasses
import json
import os
import re

import numpy as np

from tfplm.models import presets

# Files that can only be read by unpickling them, which runs arbitrary code.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt.pt")
PICKLE_FILES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "training_args.bin")

# Activation names of the sources → tfplm's (see tfplm.layers.transformer.ACTIVATIONS).
ACTIVATIONS = {
    "gelu": "gelu",  # exact erf GELU (BERT)
    "gelu_new": "gelu_approximate",  # tanh approximation (GPT-2)
    "gelu_pytorch_tanh": "gelu_approximate",
    "gelu_fast": "gelu_approximate",
    "relu": "relu",
}

# Where each part of a tfplm Transformer lives: the one place the converters
# learn tfplm's weight paths (the names of the layers in tfplm.models and
# tfplm.layers). "{layer}" is a block index; see `tfplm_weight`.
PARTS = {
    "token_embedding": "embedding/token_embedding",
    "position_embedding": "embedding/position_embedding",
    "type_embedding": "embedding/type_embedding",
    "embedding_norm": "embedding/layer_norm",
    "query": "block_{layer}/self_attention/query",
    "key": "block_{layer}/self_attention/key",
    "value": "block_{layer}/self_attention/value",
    "attention_output": "block_{layer}/self_attention/output",
    "attention_norm": "block_{layer}/self_attention_norm",
    "intermediate": "block_{layer}/feed_forward/intermediate",
    "feed_forward_output": "block_{layer}/feed_forward/output",
    "feed_forward_norm": "block_{layer}/feed_forward_norm",
    "pooler": "pooler/dense",
    "final_norm": "final_norm",
    "masked_lm": "masked_lm_head",
    "masked_lm_transform": "masked_lm_head/transform",
    "masked_lm_norm": "masked_lm_head/layer_norm",
    "next_sentence": "next_sentence_head/logits",
    "classifier": "classifier/logits",
}

# Weight-path prefixes of the task heads; everything else belongs to the backbone.
HEAD_PREFIXES = {
    "masked_lm_head/": "masked-LM head",
    "next_sentence_head/": "next-sentence head",
    "classifier/": "classifier head",
    "span_labeler/": "question-answering span head",
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as asked; the message says why and what to do."""


# --- what a checkpoint folder may make tfplm read ------------------------------------


def _roots(directory):
    """Where the files of checkpoint folder `directory` may live (real paths): the
    folder, and for a Hugging Face hub cache snapshot (`.../snapshots/<revision>/`,
    whose files are links to `../../blobs/`) its repository's blobs."""
    real = os.path.realpath(directory)
    parent = os.path.dirname(real)
    if os.path.basename(parent) == "snapshots":
        return [real, os.path.join(os.path.dirname(parent), "blobs")]
    return [real]


def inside(directory, name, key):
    """`directory/name`: a file of a checkpoint folder, refused unless it stays in the folder.

    A downloaded checkpoint names files (a config's "weights", a shard map, a
    `checkpoint` file, tokenizer files) and holds files tfplm opens by name
    (vocab.txt, ...). Each must be a relative name that resolves, symlinks
    followed, inside the folder: otherwise the checkpoint could make tfplm
    read, or reveal whether there is, any file of the machine. The check
    happens before anything at the path is opened or tested for existence.

    Args:
        directory: the checkpoint folder.
        name: the name, relative to the folder.
        key: where the name comes from, for the message
            (e.g. "tfplm_config.json key 'weights'").

    Returns:
        `os.path.join(directory, name)`.

    Example:
    >>> inside("ckpt", "model.safetensors", "weights")
    'ckpt/model.safetensors'
    """
    if not isinstance(name, str) or not name or "\0" in name:
        raise CheckpointError(
            f"{directory}: {key} is {name!r}; expected the name of a file in the checkpoint folder"
        )
    path = os.path.join(directory, name)
    escapes = os.path.isabs(name) or os.path.normpath(name).split(os.sep)[0] == os.pardir
    if escapes or not any(_within(os.path.realpath(path), root) for root in _roots(directory)):
        raise CheckpointError(
            f"{directory}: {key} {name!r} is outside the checkpoint folder; a checkpoint may only "
            "name files inside its folder: copy the file into the folder and name it relative to it"
        )
    return path


def _within(path, root):
    return os.path.commonpath([path, os.path.realpath(root)]) == os.path.realpath(root)


def confine_folder(directory):
    """Refuses a checkpoint folder any of whose files or subfolders resolves outside it.

    For folders read by another library (keras-hub opens a preset's files by
    itself), where tfplm cannot check each file as it is opened (`inside`).
    """
    for root, folders, files in os.walk(directory):
        for name in folders + files:
            relative = os.path.relpath(os.path.join(root, name), directory)
            inside(directory, relative, "file")


def read_json(directory, name, key="file"):
    """The JSON object in `directory/name` (see `inside`); a clear error if it is not one."""
    path = inside(directory, name, key)
    try:
        with open(path, encoding="utf-8") as f:
            content = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: not a JSON file ({error}); the checkpoint is corrupt") from None
    if not isinstance(content, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(content).__name__}")
    return content


def load_safetensors(path):
    """Every tensor of the safetensors file `path` as numpy (bfloat16 as float32).

    A truncated or corrupt file is a `CheckpointError` naming it.
    """
    from safetensors import SafetensorError, safe_open

    tensors = {}
    try:
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
    except (SafetensorError, OSError) as error:
        raise CheckpointError(
            f"{path}: cannot be read as safetensors ({error}); the file is truncated or corrupt: "
            "download or write it again"
        ) from None
    return tensors


# --- sizes in a config, checked before a model of them is built -----------------------

# Backbone size arguments and the tensor (a `PARTS` part and leaf, block 0) and axis that show each.
SIZES = {
    "vocab_size": ("token_embedding", "embeddings", 0),
    "hidden_size": ("token_embedding", "embeddings", 1),
    "max_length": ("position_embedding", "embeddings", 0),
    "type_vocab_size": ("type_embedding", "embeddings", 0),
    "intermediate_size": ("intermediate", "kernel", 1),
}


def check_sizes(checkpoint, config):
    """Checks a backbone config's sizes against the checkpoint's tensors, before any is allocated.

    A downloaded config could otherwise make tfplm allocate any amount of
    memory (`vocab_size=10**12`) before the weights are compared. Each size
    must be a positive integer equal to the size of the tensor that has it,
    and the whole model may not be much larger than the weights it is loaded
    from (for sizes whose tensor the checkpoint lacks).

    Args:
        checkpoint: a `Checkpoint`, as read.
        config: the constructor arguments of its backbone (with a caller's overrides).
    """
    weights, source = checkpoint.weights, f"{checkpoint.source_format} checkpoint {checkpoint.path!r}"
    # An encoder-decoder counts its two stacks' layers separately.
    layer_keys = ("num_encoder_layers", "num_decoder_layers") if "num_encoder_layers" in config else ("num_layers",)
    for key in ("vocab_size", "hidden_size", *layer_keys, "num_heads", "intermediate_size"):
        if key not in config:
            raise CheckpointError(f"{source}: its config lacks {key!r}")
    for key in (*SIZES, *layer_keys, "num_heads"):
        value = config.get(key, 1)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise CheckpointError(f"{source}: config {key}={value!r}; expected a positive integer")
    for key, (part, leaf, axis) in SIZES.items():
        path = tfplm_weight(part, leaf, layer=0)
        if key in config and path in weights and config[key] != np.shape(weights[path])[axis]:
            shape = tuple(np.shape(weights[path]))
            origin = checkpoint.sources.get(path, path)
            tensor = repr(path) if origin == path else f"{origin!r} (tfplm weight {path!r})"
            raise CheckpointError(
                f"{source}: config {key}={config[key]} but tensor {tensor} has shape {shape}, "
                f"i.e. {key}={shape[axis]}; the checkpoint's config and weights disagree"
            )
    query = re.compile(re.escape(tfplm_weight("query", "kernel")).replace(re.escape("{layer}"), r"(\d+)") + r"\Z")
    layers = {match.group(1) for match in map(query.match, weights) if match}
    if layers and config.get("num_layers") != len(layers):
        raise CheckpointError(
            f"{source}: config num_layers={config.get('num_layers')} but the checkpoint has "
            f"{len(layers)} blocks; the checkpoint's config and weights disagree"
        )
    if "hidden_size" in config and config["hidden_size"] % config.get("num_heads", 1):
        raise CheckpointError(
            f"{source}: config hidden_size={config['hidden_size']} is not divisible by "
            f"num_heads={config['num_heads']}"
        )
    parameters = presets.count_parameters(checkpoint.family, config)
    held = sum(int(np.size(w)) for w in weights.values())
    if parameters > 2 * held + 10**6:
        raise CheckpointError(
            f"{source}: its config describes a model of {parameters:,} parameters but the checkpoint "
            f"holds {held:,} weights; refusing to build it (the config's sizes and the weights disagree)"
        )


@dataclasses.dataclass
class Checkpoint:
    """A checkpoint read into tfplm's names, before any model is built.

    Attributes:
        family: "bert" or "gpt".
        config: constructor arguments of `BertEncoder` or `GPT`.
        weights: tfplm weight path → numpy array in tfplm's layout.
        sources: tfplm weight path → the source tensor it came from (for
            messages and the conversion summary).
        ignored: source tensor name → why it is not loaded.
        tokenizer: the tfplm tokenizer of the checkpoint, or None.
        num_classes: classes of the checkpoint's classifier head, if it has one.
        classifier_dropout: that head's dropout, when the source records it.
        source_format: "tfplm", "huggingface", "google" or "keras_nlp".
        path: where it was read from.
        class_name: the saved model class (tfplm checkpoints only).
        seq_length: the saved preprocessor length (tfplm checkpoints only).
        pair: the saved preprocessor reads sentence pairs (tfplm checkpoints only).
        label_names: the classifier's class names (tfplm checkpoints only).
    """

    family: str
    config: dict
    weights: dict
    sources: dict
    ignored: dict
    tokenizer: object = None
    num_classes: int = None
    classifier_dropout: float = None
    source_format: str = ""
    path: str = ""
    class_name: str = None
    seq_length: int = None
    pair: bool = False
    label_names: list = None

    def has_head(self, prefix):
        return any(name.startswith(prefix) for name in self.weights)


def tfplm_weight(part, leaf, layer="{layer}"):
    """tfplm's weight path of `leaf` ("kernel", "gamma", ...) of a `PARTS` part.

    Example:
    >>> tfplm_weight("query", "kernel", layer=3)
    'block_3/self_attention/query/kernel'
    >>> tfplm_weight("query", "{leaf}")  # a `NameMap` target template
    'block_{layer}/self_attention/query/{leaf}'
    """
    return PARTS[part].replace("{layer}", str(layer)) + "/" + leaf


def activation(name, source):
    """tfplm's name for a source activation, or an error naming the supported ones."""
    if name not in ACTIVATIONS:
        raise CheckpointError(
            f"{source}: activation {name!r} is not supported; tfplm models use one of "
            f"{sorted(set(ACTIVATIONS))}"
        )
    return ACTIVATIONS[name]


def directory_of(path):
    """The checkpoint directory of `path`: itself, or the folder of a file in it."""
    path = os.fspath(path)
    return path if os.path.isdir(path) else (os.path.dirname(path) or ".")


def refuse_pickle(path):
    """Raises if `path` is (or only offers) a pickled checkpoint: loading one runs code."""
    how = (
        "tfplm never unpickles checkpoints (a pickle can run arbitrary code). Convert it to "
        "safetensors, e.g. with transformers: `AutoModel.from_pretrained(path)"
        ".save_pretrained(out_dir, safe_serialization=True)`, then load out_dir"
    )
    name = os.path.basename(os.path.normpath(path))
    if os.path.isfile(path) and (name in PICKLE_FILES or name.endswith(PICKLE_SUFFIXES)):
        raise CheckpointError(f"{path!r} is a pickled checkpoint. {how}")
    if os.path.isdir(path):
        pickled = sorted(
            f for f in os.listdir(path) if f in PICKLE_FILES or f.endswith(PICKLE_SUFFIXES)
        )
        has_safe = any(f.endswith(".safetensors") or f.endswith(".safetensors.index.json") for f in os.listdir(path))
        if pickled and not has_safe:
            raise CheckpointError(
                f"{path!r} holds only pickled weights ({', '.join(pickled)}). {how}"
            )


class NameMap:
    """Maps source tensor names to tfplm weight paths with regular expressions.

    Each rule is (pattern, target, transform): `target` is a template filled
    with the pattern's named groups (e.g. "block_{layer}/self_attention/query/kernel"
    for a pattern with `(?P<layer>\\d+)`), or a function `(groups, value, name)`
    returning [(target, array, origin), ...] when one source tensor feeds
    several tfplm weights (GPT-2's fused query/key/value). `transform` turns
    the source array into tfplm's layout (e.g. a transpose).
    """

    def __init__(self, rules, ignore=()):
        self.rules = [(re.compile(p + r"\Z"), t, f) for p, t, f in rules]
        self.ignore = [(re.compile(p + r"\Z"), reason) for p, reason in ignore]

    def apply(self, tensors, source):
        """Returns (weights, sources, ignored) for a dict name → array (or a loader)."""
        weights, sources, ignored = {}, {}, {}
        for name in sorted(tensors):
            reason = next((r for p, r in self.ignore if p.match(name)), None)
            if reason is not None:
                ignored[name] = reason
                continue
            for pattern, target, transform in self.rules:
                match = pattern.match(name)
                if not match:
                    continue
                value = transform(np.asarray(tensors[name])) if transform else np.asarray(tensors[name])
                if callable(target):
                    pairs = target(match.groupdict(), value, name)
                else:
                    pairs = [(target.format(**match.groupdict()), value, name)]
                for path, array, origin in pairs:
                    if path in weights:
                        raise CheckpointError(
                            f"{source}: both {sources[path]!r} and {origin!r} map to tfplm "
                            f"weight {path!r}; the checkpoint has duplicate tensors"
                        )
                    weights[path] = array
                    sources[path] = origin
                break
            else:
                ignored[name] = "not a tensor of a tfplm model (unrecognised name)"
        return weights, sources, ignored


def module_rules(modules, leaves):
    r"""`NameMap` rules for a source's modules, each mapped onto a tfplm part.

    Args:
        modules: [(source module pattern, `PARTS` key, kind)], e.g.
            (r"encoder\.layer\.(?P<layer>\d+)\.intermediate\.dense", "intermediate", "dense").
        leaves: kind → [(source suffix pattern, tfplm leaf, transform)]: how
            this source names and lays out the tensors of that kind of module,
            e.g. "dense": [(r"\.weight", "kernel", transpose), (r"\.bias", "bias", None)].
    """
    return [
        (module + suffix, tfplm_weight(part, leaf), transform)
        for module, part, kind in modules
        for suffix, leaf, transform in leaves[kind]
    ]


# The original BERT's module names (google-research/bert), which Hugging Face
# kept with "." for "/" and "layer.N" for "layer_N": each with its tfplm part and
# kind. "{block}" is a block's name; the backbone's modules are under "bert/".
BERT_BACKBONE_MODULES = [
    ("embeddings/word_embeddings", "token_embedding", "embedding"),
    ("embeddings/position_embeddings", "position_embedding", "embedding"),
    ("embeddings/token_type_embeddings", "type_embedding", "embedding"),
    ("embeddings/LayerNorm", "embedding_norm", "norm"),
    *[(f"encoder/{{block}}/attention/self/{part}", part, "dense") for part in ("query", "key", "value")],
    ("encoder/{block}/attention/output/dense", "attention_output", "dense"),
    ("encoder/{block}/attention/output/LayerNorm", "attention_norm", "norm"),
    ("encoder/{block}/intermediate/dense", "intermediate", "dense"),
    ("encoder/{block}/output/dense", "feed_forward_output", "dense"),
    ("encoder/{block}/output/LayerNorm", "feed_forward_norm", "norm"),
    ("pooler/dense", "pooler", "dense"),
]
BERT_HEAD_MODULES = [
    ("cls/predictions/transform/dense", "masked_lm_transform", "dense"),
    ("cls/predictions/transform/LayerNorm", "masked_lm_norm", "norm"),
    ("cls/predictions", "masked_lm", "bias"),
    ("cls/seq_relationship", "next_sentence", "output"),
]


def bert_rules(leaves, separator, backbone_prefix, block):
    r"""`NameMap` rules for the original BERT's names, as a source spells them.

    Args:
        leaves: as in `module_rules`, for the kinds "embedding", "dense",
            "norm", "bias" (the masked-LM output bias) and "output" (the NSP layer).
        separator: between the parts of a name: "/" (Google) or "." (Hugging Face).
        backbone_prefix: a pattern before the backbone's names: "bert/"
            (Google), r"(?:bert\.)?" (Hugging Face, whose `BertModel` drops it).
        block: the source's name of block N, "{layer}" standing for N:
            "layer_{layer}" (Google) or "layer.{layer}" (Hugging Face).
    """

    def pattern(name):
        pieces = [block if piece == "{block}" else piece for piece in name.split("/")]
        return re.escape(separator).join(map(re.escape, pieces)).replace(re.escape("{layer}"), r"(?P<layer>\d+)")

    modules = [(backbone_prefix + pattern(name), part, kind) for name, part, kind in BERT_BACKBONE_MODULES]
    modules += [(pattern(name), part, kind) for name, part, kind in BERT_HEAD_MODULES]
    return module_rules(modules, leaves)


def transpose(x):
    return np.ascontiguousarray(x.T)


def check_tied(tensors, name, tied_to, value_of_tied, source):
    """A tensor that tfplm ties to another (output embedding, decoder bias) must equal it."""
    value = np.asarray(tensors[name])
    if value.shape != value_of_tied.shape or not np.array_equal(value, value_of_tied):
        raise CheckpointError(
            f"{source}: {name!r} differs from {tied_to!r}; tfplm ties them (one shared "
            "weight), so an untied checkpoint cannot be loaded without losing one of them"
        )
