"""What tfplm shows a person: an experiment's config keys with their docs, and
one-line metric summaries (the trainer's progress lines).

    print(console.format_config(tfplm.tasks.get_config("glue/sst2")))

Keys are documented where their dataclass is defined, in its Google-style
`Attributes:` docstring; `config_keys` reads them from there, so the listing
cannot drift from the code.
"""

import dataclasses
import inspect
import re

import yaml

_ENTRY = re.compile(r"^([A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)*)\s*:\s*(.*)$")


def attribute_docs(cls):
    """{field name: description} from the `Attributes:` sections of `cls` and its bases.

    An entry may name several fields ("train_data, validation_data: the inputs.")
    and continue on more deeply indented lines.

    Example:
    >>> @dataclasses.dataclass
    ... class Data:
    ...     '''Attributes:
    ...     path: where the data is; a glob,
    ...         or several, comma-separated.
    ...     '''
    ...     path: str = ""
    >>> attribute_docs(Data)
    {'path': 'where the data is; a glob, or several, comma-separated.'}
    """
    docs = {}
    for klass in reversed(inspect.getmro(cls)):
        docs.update(_parse_attributes(inspect.getdoc(klass) if klass.__doc__ else ""))
    return docs


def _parse_attributes(docstring):
    lines = docstring.splitlines()
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Attributes:")
    except StopIteration:
        return {}
    body = lines[start + 1 :]
    indents = [len(line) - len(line.lstrip()) for line in body if line.strip()]
    if not indents:
        return {}
    base = indents[0]
    docs, names = {}, []
    for line in body:
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip())
        if indent < base:
            break  # the section ended
        entry = _ENTRY.match(line.strip()) if indent == base else None
        if entry:
            names = [name.strip() for name in entry.group(1).split(",")]
            for name in names:
                docs[name] = entry.group(2).strip()
        elif indent > base and names:
            for name in names:
                docs[name] = f"{docs[name]} {line.strip()}".strip()
        else:
            break
    return docs


def config_keys(config, prefix=""):
    """Every leaf key of a (nested) config dataclass: [(dotted key, value, doc)].

    Example:
    >>> from tfplm import tasks
    >>> keys = config_keys(tasks.get_config("glue/sst2"))
    >>> [k for k in keys if k[0] == "trainer.eval_steps"]  # doctest: +ELLIPSIS
    [('trainer.eval_steps', 0, 'evaluation batches; 0 = the whole evaluation set.')]
    """
    docs = attribute_docs(type(config))
    keys = []
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            keys += config_keys(value, f"{prefix}{field.name}.")
        else:
            keys.append((prefix + field.name, value, docs.get(field.name, "")))
    return keys


def yaml_value(value):
    """`value` as it would be written in YAML or a dotted override."""
    text = yaml.safe_dump(value, default_flow_style=True, width=float("inf")).strip()
    return text[: -len("...")].strip() if text.endswith("...") else text


def format_config(config, title=None):
    """The config as `key = value` lines, each followed by its doc (indented).

    Every key can be given back as `--params_override=key=value`.
    """
    lines = [title] if title else []
    for key, value, doc in config_keys(config):
        lines.append(f"{key} = {yaml_value(value)}")
        if doc:
            lines.append(f"    {doc}")
    return "\n".join(lines)


def format_scalars(scalars, skip=()):
    """`name value` pairs for a progress line, 4 significant digits, the loss first.

    Example:
    >>> format_scalars({"accuracy": 0.5, "loss": 0.693147})
    'loss 0.6931  accuracy 0.5'
    """
    names = sorted((name for name in scalars if name not in skip), key=lambda name: name != "loss")
    return "  ".join(f"{name} {scalars[name]:.4g}" for name in names)
