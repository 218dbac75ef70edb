"""What every checkpoint reader shares: the neutral `Checkpoint`, name tables, safety checks.

A reader turns one source format into a `Checkpoint`: the model config in tfplm's
argument names and every tensor under the tfplm weight path it belongs to
(`block_0/self_attention/query/kernel`, ...), already transposed/reshaped to
tfplm's layout. Building the model and assigning the weights is done once, in
`tfplm.models.pretrained`, for all sources alike.
"""

import dataclasses
import os
import re

import numpy as np

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
}


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded as asked; the message says why and what to do."""


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
