"""The one config system: typed dataclasses, YAML files, dotted overrides.

Apply in this order: the experiment's defaults, then YAML files, then
`key.sub=value` overrides. Unknown keys, values of the wrong type and values
outside a field's `Range` (declared with `typing.Annotated`) are errors that
name the key.

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


@dataclasses.dataclass(frozen=True)
class Range:
    """Bounds of a numeric config field, declared with `typing.Annotated`.

    Values set from YAML files and overrides are checked, and `validate`
    checks a whole config (the trainer does before it runs).

    Example:
    >>> @dataclasses.dataclass
    ... class Trainer:
    ...     train_steps: typing.Annotated[int, Range(min=1)] = 100
    >>> override(Trainer(), "train_steps=-5")
    Traceback (most recent call last):
    ...
    tfplm.config.ConfigError: train_steps=-5 is out of range: it must be at least 1
    """

    min: float | None = None
    max: float | None = None

    def check(self, value, key):
        if value is None:
            return
        if self.min is not None and value < self.min:
            raise ConfigError(f"{key}={value!r} is out of range: it must be at least {self.min}")
        if self.max is not None and value > self.max:
            raise ConfigError(f"{key}={value!r} is out of range: it must be at most {self.max}")


def _coerce(value, annotation, key):
    """`value` checked (and converted where lossless) against a type annotation."""
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        inner, *extras = typing.get_args(annotation)
        value = _coerce(value, inner, key)
        for extra in extras:
            if isinstance(extra, Range):
                extra.check(value, key)
        return value
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
    if annotation in (int, float) and isinstance(value, bool):
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if annotation is float and value != value:
        raise ConfigError(f"{key}: expected a number, got {value!r}")
    if isinstance(annotation, type) and not isinstance(value, annotation):
        raise ConfigError(
            f"{key}: expected {annotation.__name__}, got {type(value).__name__} {value!r}"
        )
    return value


def _fields(cls):
    hints = typing.get_type_hints(cls, include_extras=True)
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
        if dataclasses.is_dataclass(current) and value is None:
            continue  # an empty YAML section: nothing to change
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                keys = list(_fields(type(current)))
                shown = ", ".join(keys[:5]) + (", ..." if len(keys) > 5 else "")
                raise ConfigError(f"{key}: expected a mapping of its keys ({shown}), got {value!r}")
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
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            raise ConfigError(f"override {item!r}: the value is not a YAML scalar; quote it") from None
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
    """`config` with the YAML (or JSON) file at `path` applied on top."""
    try:
        with open(path, encoding="utf-8") as f:
            values = yaml.safe_load(f) or {}
    except UnicodeDecodeError as error:
        raise ConfigError(f"{path}: not a text file ({error}); expected a YAML or JSON config") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or str(error).splitlines()[0]
        raise ConfigError(f"{path}:{where}: not valid YAML or JSON: {problem}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of config keys at the top level, got {values!r}")
    try:
        return merge(config, values)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def validate(config):
    """Checks every field of `config` (types and `Range`s) as if it had been
    read from YAML, wherever it came from (code, notebook, file); returns it.

    Example:
    >>> @dataclasses.dataclass
    ... class Trainer:
    ...     train_steps: typing.Annotated[int, Range(min=1)] = 100
    >>> validate(Trainer(train_steps=0))
    Traceback (most recent call last):
    ...
    tfplm.config.ConfigError: train_steps=0 is out of range: it must be at least 1
    """
    _validate(config, prefix="")
    return config


def _validate(config, prefix):
    for name, annotation in _fields(type(config)).items():
        value = getattr(config, name)
        if dataclasses.is_dataclass(value):  # also where the field says typing.Any (a task's config)
            _validate(value, f"{prefix}{name}.")
        else:
            _coerce(value, annotation, prefix + name)


def to_dict(config):
    return dataclasses.asdict(config)


def save_yaml(config, path):
    with open(path, "w", encoding="utf-8") as f:
        yaml.safe_dump(to_dict(config), f, sort_keys=False)
