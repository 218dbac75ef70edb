"""The tokenizer a tfplm checkpoint carries: its files and the settings to rebuild it.

`save` writes the vocabulary files (vocab.txt; vocab.json + merges.txt;
spm.model) next to the weights and returns the entry `tfplm_config.json`
records; `load` rebuilds the tokenizer from that entry.
"""

import os

from tfplm.models.checkpoints.common import CheckpointError, inside

# What `tfplm_config.json` calls the entry, for messages.
KEY = "tfplm_config.json key 'tokenizer'"


def _classes():
    """Class name → (its files, build(paths, settings), settings(tokenizer))."""
    from tfplm.tokenizers import GPT2Tokenizer, SentencePieceTokenizer, WordPieceTokenizer

    return {
        "WordPieceTokenizer": (
            ("vocab.txt",),
            lambda paths, c: WordPieceTokenizer(paths[0], lowercase=bool(c.get("lowercase", True))),
            lambda t: {"lowercase": bool(t.lowercase)},
        ),
        "GPT2Tokenizer": (("vocab.json", "merges.txt"), lambda paths, c: GPT2Tokenizer(*paths), lambda t: {}),
        "SentencePieceTokenizer": (("spm.model",), lambda paths, c: SentencePieceTokenizer(proto=paths[0]), lambda t: {}),
    }


def save(tokenizer, directory):
    """Writes `tokenizer`'s files to `directory`; returns its `tfplm_config.json` entry."""
    name = type(tokenizer).__name__
    classes = _classes()
    if name not in classes:
        raise ValueError(f"cannot save a {name}; tfplm checkpoints carry one of {sorted(classes)}")
    files = [os.path.basename(p) for p in tokenizer.save_vocabulary(directory)]
    return {"class_name": name, "config": classes[name][2](tokenizer), "files": files}


def confine(spec, directory):
    """The paths of the files of a `save` entry, each checked to be inside `directory`
    (`common.inside`) before any is opened; [] for no entry."""
    if not spec:
        return []
    classes = _classes()
    if not isinstance(spec, dict) or spec.get("class_name") not in classes:
        class_name = spec.get("class_name") if isinstance(spec, dict) else spec
        raise CheckpointError(f"{directory}: unknown tokenizer class {class_name!r}; expected one of {sorted(classes)}")
    files = spec.get("files", [])
    if not isinstance(files, list):
        raise CheckpointError(f"{directory}: {KEY} 'files' is {files!r}; expected a list of file names")
    paths = [inside(directory, name, f"{KEY} file") for name in files]
    return paths + [inside(directory, name, f"{KEY} file") for name in classes[spec["class_name"]][0]]


def load(spec, directory):
    """The tokenizer of a `save` entry whose files are in `directory`; None for no entry."""
    if not spec:
        return None
    for path in confine(spec, directory):
        if not os.path.isfile(path):
            raise CheckpointError(f"{directory}: tokenizer file {os.path.basename(path)!r} is missing")
    settings = spec.get("config") or {}
    if not isinstance(settings, dict):
        raise CheckpointError(f"{directory}: {KEY} 'config' is {settings!r}; expected a JSON object")
    files, build, _ = _classes()[spec["class_name"]]
    return build([os.path.join(directory, name) for name in files], settings)
