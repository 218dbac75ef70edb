"""The config system: dataclasses, YAML, dotted overrides, errors that name the key."""

import dataclasses
import doctest
import typing

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


@dataclasses.dataclass
class Bounded:
    steps: typing.Annotated[int, config_lib.Range(min=1)] = 10
    rate: typing.Annotated[float, config_lib.Range(min=0, max=1)] = 0.5
    seed: typing.Annotated[int, config_lib.Range(min=0)] | None = None
    task: typing.Any = dataclasses.field(default_factory=Model)


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


@pytest.mark.parametrize(
    "text, message",
    [
        ("steps=-5", "steps=-5 is out of range: it must be at least 1"),
        ("steps=0", "steps=0 is out of range: it must be at least 1"),
        ("rate=-1", "rate=-1.0 is out of range: it must be at least 0"),
        ("rate=1.5", "rate=1.5 is out of range: it must be at most 1"),
        ("seed=-1", "seed=-1 is out of range: it must be at least 0"),
        ("rate=.nan", "rate: expected a number, got nan"),
        ("rate=true", "rate: expected a number, got True"),
    ],
)
def test_values_outside_a_fields_range_are_errors_that_name_key_and_value(text, message):
    with pytest.raises(config_lib.ConfigError) as error:
        config_lib.override(Bounded(), text)
    assert str(error.value) == message


def test_values_inside_a_fields_range_and_none_for_optional_ones_are_kept():
    config = config_lib.override(Bounded(), "steps=1,rate=0,seed=null")
    assert (config.steps, config.rate, config.seed) == (1, 0.0, None)
    assert config_lib.override(Bounded(), "seed=3").seed == 3


def test_a_range_is_checked_in_yaml_files_too_and_the_error_names_the_file(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("steps: -5\n")
    with pytest.raises(config_lib.ConfigError) as error:
        config_lib.load_yaml(Bounded(), path)
    assert str(error.value) == f"{path}: steps=-5 is out of range: it must be at least 1"


@pytest.mark.parametrize("section", ["task: 5", "task: [1, 2]", "task: bert_tiny"])
def test_a_scalar_where_a_section_of_keys_belongs_is_an_error(tmp_path, section):
    path = tmp_path / "c.yaml"
    path.write_text(section + "\n")
    with pytest.raises(config_lib.ConfigError, match=r": task: expected a mapping of its keys \(preset, dropout, layers\), got "):
        config_lib.load_yaml(Bounded(), path)


def test_an_empty_section_changes_nothing(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("task:\n  # preset: bert_mini\nsteps: 3\n")
    config = config_lib.load_yaml(Bounded(), path)
    assert config.task == Model() and config.steps == 3


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"trainer": {"train_steps": 3,}\n', r"c.yaml: line 2, column 1: not valid YAML or JSON: expected ',' or '}'"),
        (b"trainer:\n  train_steps: 3\n bad: [\n", r"c.yaml: line 3, column 2: not valid YAML or JSON: "),
        (b"\x00\x01\xff\xfe [[[", r"c.yaml: not a text file \('utf-8' codec can't decode byte 0xff"),
        (b"!!python/object/apply:os.system ['touch pwned']\n", r"c.yaml: line 1, column 1: not valid YAML or JSON: "),
        (b"just a sentence\n", r"c.yaml: expected a mapping of config keys at the top level, got 'just a sentence'"),
    ],
    ids=["json_syntax", "yaml_syntax", "binary", "python_tag", "scalar"],
)
def test_a_config_file_that_is_not_yaml_or_json_is_one_error_naming_file_and_line(tmp_path, content, message):
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    with pytest.raises(config_lib.ConfigError, match=message) as error:
        config_lib.load_yaml(Experiment(), path)
    assert "\n" not in str(error.value)
    assert not (tmp_path / "pwned").exists()


def test_an_override_value_that_is_not_yaml_names_the_override():
    with pytest.raises(config_lib.ConfigError) as error:
        config_lib.override(Experiment(), "model.preset=[")
    assert str(error.value) == "override 'model.preset=[': the value is not a YAML scalar; quote it"


def test_docstring_examples_run_as_written():
    result = doctest.testmod(config_lib)
    assert result.attempted > 0 and result.failed == 0


def test_every_experiments_default_config_is_valid():
    from tfplm import tasks

    for name in tasks.list_experiments():
        assert config_lib.validate(tasks.get_config(name)) is not None, name


@pytest.mark.parametrize(
    "override, message",
    [
        ("trainer.train_steps=-5", "trainer.train_steps=-5 is out of range: it must be at least 0"),
        ("trainer.optimizer.learning_rate=-1", "trainer.optimizer.learning_rate=-1.0 is out of range: it must be at least 0"),
        ("trainer.optimizer.beta_2=1.5", "trainer.optimizer.beta_2=1.5 is out of range: it must be at most 1"),
        ("task.train_data.global_batch_size=0", "task.train_data.global_batch_size=0 is out of range: it must be at least 1"),
    ],
)
def test_out_of_range_values_are_refused_from_overrides_and_from_code(override, message):
    from tfplm import tasks

    with pytest.raises(config_lib.ConfigError, match=rf"^{message}$".replace(".", r"\.").replace("(", r"\(")):
        tasks.get_config("bert/pretraining", overrides=override)
    # Built in code (a notebook): the trainer validates the whole config before it runs.
    key, value = override.split("=")
    *sections, field = key.split(".")
    config = tasks.get_config("bert/pretraining")
    parents = [config]
    for section in sections:
        parents.append(getattr(parents[-1], section))
    changed = dataclasses.replace(parents[-1], **{field: type(getattr(parents[-1], field))(float(value))})
    for parent, section in zip(reversed(parents[:-1]), reversed(sections)):
        changed = dataclasses.replace(parent, **{section: changed})
    with pytest.raises(config_lib.ConfigError, match=message.split(" is ")[0].replace(".", r"\.")):
        config_lib.validate(changed)


@pytest.mark.parametrize("field", ["train_steps", "steps_per_loop"])
def test_zero_steps_means_an_epoch_only_where_a_task_has_epochs(field):
    from tfplm import tasks

    task = tasks.get("bert/pretraining", overrides=f"trainer.{field}=0")
    with pytest.raises(config_lib.ConfigError, match=f"trainer.{field}=0: 0 means one epoch, which only tasks with epochs have"):
        getattr(task, field)()
