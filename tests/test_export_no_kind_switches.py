"""Export dispatches through task types' serving heads, never on model kinds (issue 9).

A new task type is one module in tasks/: if export/ switched on kind strings, or
if code fished a model's preprocessing out with `getattr(model, ..., None)`
instead of taking it from the model's constructor arguments, a new type would
need edits all over. These checks keep those patterns from coming back.
"""

import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
KIND_SWITCH = re.compile(r"model_kind|\bkind\s*(==|!=|in\b)")
# getattr(model, "tokenizer", None) and the like: side channels the new design removed.
PINNED_ATTRIBUTE = re.compile(r"""getattr\(\s*[\w.]+\s*,\s*["'](tokenizer|preprocessor|label_names)["']""")


def python_files(*folders):
    return sorted(path for folder in folders for path in (REPO / folder).rglob("*.py"))


def offending_lines(paths, pattern):
    return [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in paths
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if pattern.search(line)
    ]


@pytest.mark.parametrize(
    "line",
    ['if model_kind(model) == "gpt":', 'if kind == "classifier":', "kind != 'gpt'", 'if kind in ("a", "b"):'],
)
def test_the_kind_switch_pattern_catches_the_old_style(line):
    assert KIND_SWITCH.search(line)


@pytest.mark.parametrize(
    "line",
    ['getattr(model, "tokenizer", None)', "getattr(model,'label_names', ())", 'getattr(self.model, "preprocessor")'],
)
def test_the_pinned_attribute_pattern_catches_the_old_style(line):
    assert PINNED_ATTRIBUTE.search(line)


def test_export_has_no_kind_switches():
    paths = python_files("export")
    assert {path.name for path in paths} >= {"serving.py", "lite.py", "report.py", "exporter.py", "tfhub.py"}
    assert offending_lines(paths, KIND_SWITCH) == []


def test_no_code_reads_preprocessing_pinned_on_a_model():
    paths = python_files("models", "tasks", "export", "tools")
    assert len(paths) > 20
    assert offending_lines(paths, PINNED_ATTRIBUTE) == []
