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

    def has_head(self, prefix):
        return any(name.startswith(prefix) for name in self.weights)


def activation(name, source):
    """tfplm's name for a source activation, or an error naming the supported ones."""
    if name not in ACTIVATIONS:
        raise CheckpointError(
            f"{source}: activation {name!r} is not supported; tfplm models use one of "
            f"{sorted(set(ACTIVATIONS))}"
        )
    return ACTIVATIONS[name]


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
    with the pattern's groups (e.g. "block_{0}/self_attention/query/kernel"),
    or a function returning [(target, array), ...] when one source tensor feeds
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
                    pairs = target(match.groups(), value, name)
                else:
                    pairs = [(target.format(*match.groups()), value, name)]
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


def transpose(x):
    return np.ascontiguousarray(x.T)


def layer_norm_rules(source_prefix, target_prefix, gamma="weight", beta="bias"):
    """LayerNorm scale/offset, accepting both `weight/bias` and old `gamma/beta` names."""
    return [
        (source_prefix + rf"\.(?:{gamma}|gamma)", target_prefix + "/gamma", None),
        (source_prefix + rf"\.(?:{beta}|beta)", target_prefix + "/beta", None),
    ]


def check_tied(tensors, name, tied_to, value_of_tied, source):
    """A tensor that tfplm ties to another (output embedding, decoder bias) must equal it."""
    value = np.asarray(tensors[name])
    if value.shape != value_of_tied.shape or not np.array_equal(value, value_of_tied):
        raise CheckpointError(
            f"{source}: {name!r} differs from {tied_to!r}; tfplm ties them (one shared "
            "weight), so an untied checkpoint cannot be loaded without losing one of them"
        )
