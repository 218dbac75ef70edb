"""The tokenizer a tfplm checkpoint carries: its files and the settings to rebuild it.

`save` writes the vocabulary files (vocab.txt; vocab.json + merges.txt;
spm.model) next to the weights and returns the entry `tfplm_config.json`
records; `load` rebuilds the tokenizer from that entry.
"""

import os

from tfplm.models.checkpoints.common import CheckpointError


def _classes():
    """Class name → (build(directory, settings), settings(tokenizer))."""
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


def save(tokenizer, directory):
    """Writes `tokenizer`'s files to `directory`; returns its `tfplm_config.json` entry."""
    name = type(tokenizer).__name__
    classes = _classes()
    if name not in classes:
        raise ValueError(f"cannot save a {name}; tfplm checkpoints carry one of {sorted(classes)}")
    files = [os.path.basename(p) for p in tokenizer.save_vocabulary(directory)]
    return {"class_name": name, "config": classes[name][1](tokenizer), "files": files}


def load(spec, directory):
    """The tokenizer of a `save` entry whose files are in `directory`; None for no entry."""
    if not spec:
        return None
    classes = _classes()
    if spec["class_name"] not in classes:
        raise CheckpointError(f"{directory}: unknown tokenizer class {spec['class_name']!r}")
    for name in spec.get("files", []):
        if not os.path.isfile(os.path.join(directory, name)):
            raise CheckpointError(f"{directory}: tokenizer file {name!r} is missing")
    return classes[spec["class_name"]][0](directory, spec.get("config", {}))
