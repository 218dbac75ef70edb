"""The corpus of bad inputs in tests/hostile/: every case gets one clear line, and nothing is written.

Each `tests/hostile/*_cases.json` manifest (one per area: data, training,
export, ...) holds

    {"files": {name: content, ...},          # written into every case's folder
     "cases": [{"name": "what is bad",
                "files": {name: content},     # the case's own files
                "run": ["create_pretraining_data", "--input=in.txt", ...],   # tools/NAME.py and its flags
                "output": "out",              # run cases: the path that must stay as it was ("." if absent)
                "error": "in.txt:2: not UTF-8"},
               {"name": ..., "files": ...,
                "call": "tfplm.data.text:read_utf8", "args": [...], "kwargs": {...},
                "error": "..."}]}

Contents are UTF-8 text, or {"latin1": text} / {"hex": "6400 0000"} for bytes.
A case runs in a fresh folder that is its working directory, so paths are
relative to it.

A "run" case runs the binary as a person does and must exit non-zero, print
the `error` text within one line, print no traceback, and leave `output`
exactly as it was (nothing new, nothing half-written). A "call" case calls the
library function the binary would call (where a binary run only adds
TensorFlow's start-up): it must raise one of the errors the binaries print as
one line (`tools/_cli.py`'s USER_ERRORS) with the `error` text and no line
break, and write nothing.
"""

import binascii
import importlib
import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
HOSTILE = REPO / "tests" / "hostile"

_spec = importlib.util.spec_from_file_location("_cli", REPO / "tools" / "_cli.py")
_cli = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_cli)


def _cases():
    cases = []
    for manifest in sorted(HOSTILE.glob("*_cases.json")):
        data = json.loads(manifest.read_text(encoding="utf-8"))
        for case in data["cases"]:
            case = {**case, "files": {**data.get("files", {}), **case.get("files", {})}}
            cases.append(pytest.param(case, id=f"{manifest.stem}: {case['name']}"))
    return cases


def _content(value):
    if isinstance(value, str):
        return value.encode("utf-8")
    if "latin1" in value:
        return value["latin1"].encode("latin-1")
    return binascii.unhexlify(value["hex"].replace(" ", ""))


def _write_files(folder, files):
    for name, value in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_content(value))


def _snapshot(path):
    """{relative path: bytes (files) or None (folders)} of everything under `path`; None if it is absent."""
    if not path.exists():
        return None
    if path.is_file():
        return {".": path.read_bytes()}
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else None) for p in path.rglob("*")}


def _run(case, folder):
    tool, *args = case["run"]
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", "TFPLM_VERBOSE")}
    result = subprocess.run(
        [sys.executable, str(REPO / "tools" / f"{tool}.py"), *args],
        capture_output=True, text=True, cwd=folder, env=env, timeout=300,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-3000:]
    assert "Traceback" not in output, output[-3000:]
    return [line for line in output.splitlines() if case["error"] in line], output


def _call(case):
    module, name = case["call"].split(":")
    function = getattr(importlib.import_module(module), name)
    with pytest.raises(_cli.USER_ERRORS) as raised:
        function(*case.get("args", ()), **case.get("kwargs", {}))
    message = str(raised.value)
    assert "\n" not in message, message
    return [message] if case["error"] in message else [], message


@pytest.mark.parametrize("case", _cases())
def test_bad_input_gets_one_line_and_nothing_is_written(case, tmp_path, monkeypatch):
    folder = tmp_path / "case"
    folder.mkdir()
    _write_files(folder, case["files"])
    watched = folder / case.get("output", ".")
    before = _snapshot(watched)
    monkeypatch.chdir(folder)
    lines, output = _run(case, folder) if "run" in case else _call(case)
    assert len(lines) == 1, f"expected {case['error']!r} on one line of:\n{output[-3000:]}"
    assert _snapshot(watched) == before, f"{watched} changed"


def test_every_manifest_case_is_well_formed():
    cases = [param.values[0] for param in _cases()]
    assert len(cases) >= 12
    for case in cases:
        assert case["name"] and case["error"], case
        assert ("run" in case) != ("call" in case), case["name"]
        if "run" in case:
            assert (REPO / "tools" / f"{case['run'][0]}.py").is_file(), case["name"]
