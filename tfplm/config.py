"""The one config system: typed dataclasses, YAML files, dotted overrides.

Apply in this order: the experiment's defaults, then YAML files, then
`key.sub=value` overrides. Unknown keys and values of the wrong type are
errors that name the key.

Example:
>>> @dataclasses.dataclass
... class Trainer:
...     train_steps: int = 100
>>> @dataclasses.dataclass
... class Experiment:
...     trainer: Trainer = dataclasses.field(default_factory=Trainer)
>>> override(Experiment(), "trainer.train_steps=5").trainer.train_steps
5
"""

import dataclasses
import types
import typing

import yaml


class ConfigError(ValueError):
    """A config key or value that does not fit the experiment's dataclasses."""


def _coerce(value, annotation, key):
    """`value` checked (and converted where lossless) against a type annotation."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(value, option, key)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0])
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return from_dict(annotation, value, prefix=f"{key}.")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        (item_type, *_) = typing.get_args(annotation) or (typing.Any,)
        items = [_coerce(v, item_type, f"{key}[{i}]") for i, v in enumerate(value)]
        return origin(items)
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is typing.Any:
        return value
    if annotation is float and isinstance(value, (int, str)) and not isinstance(value, bool):
        try:  # YAML reads 1e-3 (no dot) as a string
            return float(value)
        except ValueError:
            raise ConfigError(f"{key}: expected float, got {value!r}") from None
    if annotation is bool and not isinstance(value, bool):
        raise ConfigError(f"{key}: expected true or false, got {value!r}")
    if annotation is int and isinstance(value, bool):
        raise ConfigError(f"{key}: expected an integer, got {value!r}")
    if isinstance(annotation, type) and not isinstance(value, annotation):
        raise ConfigError(
            f"{key}: expected {annotation.__name__}, got {type(value).__name__} {value!r}"
        )
    return value


def _fields(cls):
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def from_dict(cls, values, prefix=""):
    """Builds dataclass `cls` from a (nested) dict; unknown keys are errors."""
    fields = _fields(cls)
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown config key {prefix}{unknown[0]}; valid keys here: "
            + ", ".join(f"{prefix}{name}" for name in fields)
        )
    kwargs = {name: _coerce(values[name], fields[name], prefix + name) for name in values}
    return cls(**kwargs)


def merge(config, values, prefix=""):
    """A copy of dataclass `config` with the (nested, partial) dict `values` applied."""
    fields = _fields(type(config))
    changes = {}
    for name, value in values.items():
        key = prefix + name
        if name not in fields:
            raise ConfigError(
                f"unknown config key {key}; valid keys here: "
                + ", ".join(prefix + f for f in fields)
            )
        current = getattr(config, name)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            changes[name] = merge(current, value, prefix=key + ".")
        else:
            changes[name] = _coerce(value, fields[name], key)
    return dataclasses.replace(config, **changes)


def parse_overrides(text):
    """`"a.b=1,c=x"` → `{"a": {"b": 1}, "c": "x"}`; values are parsed as YAML scalars."""
    nested = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value")
        key, raw = (s.strip() for s in item.split("=", 1))
        value = yaml.safe_load(raw) if raw else ""
        node = nested
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return nested


def override(config, text):
    """`config` with dotted overrides applied, e.g. "trainer.train_steps=10"."""
    return merge(config, parse_overrides(text))


def load_yaml(config, path):
    """`config` with the YAML file at `path` applied on top."""
    with open(path, encoding="utf-8") as f:
        values = yaml.safe_load(f) or {}
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return merge(config, values)


def to_dict(config):
    return dataclasses.asdict(config)


def save_yaml(config, path):
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(to_dict(config), f, sort_keys=False)
