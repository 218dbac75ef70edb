"""The config system: dataclasses, YAML, dotted overrides, errors that name the key."""

import dataclasses

import pytest

from tfplm import config as config_lib
from tfplm.registry import Registry


@dataclasses.dataclass
class Model:
    preset: str = "bert_tiny"
    dropout: float = 0.1
    layers: list[int] = dataclasses.field(default_factory=lambda: [1, 2])


@dataclasses.dataclass
class Trainer:
    train_steps: int = 100
    jit_compile: bool = False
    tpu: str | None = None


@dataclasses.dataclass
class Experiment:
    model: Model = dataclasses.field(default_factory=Model)
    trainer: Trainer = dataclasses.field(default_factory=Trainer)


def test_overrides_apply_after_yaml_which_applies_after_defaults(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text("model:\n  preset: bert_mini\n  dropout: 0\ntrainer:\n  train_steps: 7\n")
    config = config_lib.load_yaml(Experiment(), path)
    config = config_lib.override(config, "trainer.train_steps=9, trainer.jit_compile=true")
    assert config.model.preset == "bert_mini"
    assert config.model.dropout == 0.0 and isinstance(config.model.dropout, float)
    assert config.trainer.train_steps == 9
    assert config.trainer.jit_compile is True
    assert config.model.layers == [1, 2]  # untouched defaults stay


def test_unknown_key_error_names_the_key():
    with pytest.raises(config_lib.ConfigError, match=r"unknown config key trainer\.train_step\b"):
        config_lib.override(Experiment(), "trainer.train_step=3")


@pytest.mark.parametrize(
    "text, message",
    [
        ("trainer.train_steps=many", r"trainer\.train_steps: expected int, got str"),
        ("trainer.train_steps=1.5", r"trainer\.train_steps: expected int"),
        ("trainer.jit_compile=3", r"trainer\.jit_compile: expected true or false"),
        ("model.layers=3", r"model\.layers: expected a list"),
        ("model=3", r"model: expected"),
        ("trainer.train_steps", "not of the form key=value"),
    ],
)
def test_wrong_types_are_errors_that_name_the_key(text, message):
    with pytest.raises(config_lib.ConfigError, match=message):
        config_lib.override(Experiment(), text)


def test_optional_fields_accept_none_and_their_type():
    assert config_lib.override(Experiment(), "trainer.tpu=grpc://1.2.3.4").trainer.tpu == "grpc://1.2.3.4"
    assert config_lib.override(Experiment(), "trainer.tpu=null").trainer.tpu is None


def test_yaml_round_trip(tmp_path):
    config = config_lib.override(Experiment(), "model.preset=bert_base,trainer.train_steps=3")
    config_lib.save_yaml(config, tmp_path / "c.yaml")
    assert config_lib.load_yaml(Experiment(), tmp_path / "c.yaml") == config


def test_registry_lists_and_rejects_unknown_names():
    registry = Registry("experiment")
    registry.register("b/x", dict)
    registry.register("a/y", dict)
    assert registry.names() == ["a/y", "b/x"]
    with pytest.raises(ValueError, match="unknown experiment 'c'; available: a/y, b/x"):
        registry.get("c")
    with pytest.raises(ValueError, match="already registered"):
        registry.register("a/y", dict)
