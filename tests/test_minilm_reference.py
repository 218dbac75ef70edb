"""Recomputes tests/fixtures/minilm_reference.npz live with transformers.

Runs only where torch and transformers are importable, i.e. the reference
environment (TensorFlow is not needed, hence `--noconftest`):

    .venv-ref/bin/python -m pytest --noconftest tests/test_minilm_reference.py

Elsewhere it is skipped; tests/test_checkpoints.py compares tfplm with the
stored file.
"""

import pathlib
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tools"))

import make_minilm_reference  # noqa: E402


@pytest.mark.full_data  # reads SST-2 dev from ../shared/data
def test_stored_minilm_reference_matches_a_live_transformers_run(tmp_path, monkeypatch, minilm_dir, shared_data_dir):
    del shared_data_dir  # the tool reads ../shared/data itself; the fixture skips where it is absent
    stored = np.load(REPO / "tests" / "fixtures" / "minilm_reference.npz")
    argv = ["make_minilm_reference", f"--minilm_dir={minilm_dir}", f"--output={tmp_path / 'live.npz'}"]
    monkeypatch.setattr(sys, "argv", argv)
    make_minilm_reference.main()
    live = np.load(tmp_path / "live.npz")
    assert live["sentences"].tolist() == stored["sentences"].tolist()
    np.testing.assert_array_equal(live["input_ids"], stored["input_ids"])
    np.testing.assert_allclose(live["last_hidden"], stored["last_hidden"], atol=1e-5)
    np.testing.assert_allclose(live["pooled"], stored["pooled"], atol=1e-5)
