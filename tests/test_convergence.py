"""Pretraining learns: a few hundred steps on real text beat the unigram baseline."""

import numpy as np
import pytest
import tensorflow as tf

from tfplm import tasks
from tfplm.data import text
from tfplm.data.bert_instances import PretrainingDataConfig
from tfplm.data.pretraining_records import create_pretraining_data
from tfplm.tokenizers import build_wordpiece_vocab, train_sentencepiece


@pytest.fixture(scope="module", params=["shipped", pytest.param("full", marks=pytest.mark.full_data)])
def books(request, tmp_path_factory, test_data_dir):
    """Two novels: 60 KB of each to train on, the 20 KB that follow to evaluate on.

    shipped: Pride and Prejudice and Frankenstein from tools/demo_data/books.txt (the first
    200,000 characters of each, Gutenberg text removed); full: Pride and Prejudice and Emma.
    """
    if request.param == "shipped":
        demo = (test_data_dir.parents[1] / "tools" / "demo_data" / "books.txt").read_text(encoding="utf-8")
        pride, frankenstein = demo.split("\n\nFrankenstein;\n", 1)
        bodies = {"pride_and_prejudice": pride, "frankenstein": "Frankenstein;\n" + frankenstein}
    else:
        shared_data_dir = request.getfixturevalue("shared_data_dir")
        bodies = {
            name: text.read_text(shared_data_dir / "corpus" / "books" / f"{name}.txt")
            for name in ("pride_and_prejudice", "emma")
        }
    directory = tmp_path_factory.mktemp("books")
    for name, body in bodies.items():
        assert len(body) >= 100_000, name
        (directory / f"train_{name}.txt").write_text(body[20_000:80_000], encoding="utf-8")
        (directory / f"eval_{name}.txt").write_text(body[80_000:100_000], encoding="utf-8")
    return directory


def unigram_entropy(token_ids, weights=None):
    """Entropy (nats) of the token distribution: the loss of the best unigram model."""
    ids = np.asarray(token_ids).ravel()
    if weights is not None:
        ids = ids[np.asarray(weights).ravel() > 0]
    counts = np.bincount(ids)
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def test_bert_tiny_beats_the_unigram_baseline_and_learns_nsp(books, tmp_path):
    lines = list(text.iter_lines(sorted(str(p) for p in books.glob("train_*"))))
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("\n".join(build_wordpiece_vocab(lines, 2000)) + "\n")
    config = PretrainingDataConfig(max_seq_length=64, max_predictions_per_seq=10, dupe_factor=5, window_size=20)
    for part in ("train", "eval"):
        files = sorted(str(p) for p in books.glob(f"{part}_*"))
        create_pretraining_data(files, str(vocab), str(tmp_path / part / "data"), config, input_format="prose")
    data = lambda part: f"task.{part}_data.seq_length=64,task.{part}_data.max_predictions_per_seq=10,task.{part}_data.global_batch_size=64"
    task = tasks.get(
        "bert/pretraining",
        overrides=",".join(
            [
                f"task.vocab_file={vocab}",
                f"task.train_data.input_path={tmp_path / 'train' / 'data'}-*",
                f"task.validation_data.input_path={tmp_path / 'eval' / 'data'}-*",
                data("train"),
                data("validation"),
                "trainer.train_steps=300",
                "trainer.optimizer.learning_rate=3e-3",
                "runtime.seed=0",
            ]
        ),
    )
    model = task.build_model()
    task.compile(model)
    model.fit(task.build_inputs("train"), steps_per_epoch=300, epochs=1, verbose=0)
    evaluation = task.build_inputs("validation")
    labels = [(y["mlm_logits"].numpy(), w["mlm_logits"].numpy()) for _, y, w in evaluation]
    baseline = unigram_entropy(np.concatenate([l for l, _ in labels]), np.concatenate([w for _, w in labels]))
    results = model.evaluate(evaluation, return_dict=True, verbose=0)
    pairs = sum(len(l) for l, _ in labels)
    print(f"MLM loss {results['mlm_logits_loss']:.3f} vs unigram entropy {baseline:.3f}; NSP {results['nsp_logits_accuracy']:.3f} on {pairs}")
    assert results["mlm_logits_loss"] < baseline - 0.3
    # Held-out pairs: above chance by more than two standard deviations of a coin flip.
    assert results["nsp_logits_accuracy"] > 0.5 + 2 * (0.25 / pairs) ** 0.5


def test_gpt_nano_beats_the_unigram_baseline(books, tmp_path):
    lines = list(text.iter_lines(sorted(str(p) for p in books.glob("train_*"))))
    spm = train_sentencepiece(lines, 1000, str(tmp_path / "spm"))
    task = tasks.get(
        "gpt/pretraining",
        overrides=",".join(
            [
                f"task.vocab_file={spm}",
                f"task.train_data.input_path={books}/train_*",
                f"task.validation_data.input_path={books}/eval_*",
                "task.train_data.seq_length=64",
                "task.validation_data.seq_length=64",
                "trainer.train_steps=300",
                "trainer.optimizer.learning_rate=3e-3",
                "runtime.seed=0",
            ]
        ),
    )
    model = task.build_model()
    task.compile(model)
    model.fit(task.build_inputs("train"), steps_per_epoch=300, epochs=1, verbose=0)
    evaluation = task.build_inputs("validation")
    baseline = unigram_entropy(np.concatenate([y.numpy() for _, y in evaluation]))
    loss = model.evaluate(evaluation, return_dict=True, verbose=0)["loss"]
    print(f"LM loss {loss:.3f} vs unigram entropy {baseline:.3f}")
    assert loss < baseline - 0.5
