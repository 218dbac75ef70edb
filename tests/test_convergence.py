"""Pretraining learns: a few hundred steps on real text beat the unigram baseline."""

import numpy as np
import pytest
import tensorflow as tf

from tfplm import tasks
from tfplm.data import text
from tfplm.tokenizers import build_wordpiece_vocab, train_sentencepiece


@pytest.fixture(scope="module")
def books(tmp_path_factory, shared_data_dir):
    """~150 KB of two novels for training and a third for evaluation."""
    directory = tmp_path_factory.mktemp("books")
    for name, part in (("pride_and_prejudice", "train"), ("emma", "train"), ("frankenstein", "eval")):
        body = text.read_text(shared_data_dir / "corpus" / "books" / f"{name}.txt")[20_000:95_000]
        (directory / f"{part}_{name}.txt").write_text(body, encoding="utf-8")
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
    data = lambda part: f"task.{part}_data.input_format=prose,task.{part}_data.seq_length=64,task.{part}_data.max_predictions_per_seq=10,task.{part}_data.global_batch_size=64"
    task = tasks.get(
        "bert/pretraining",
        overrides=",".join(
            [
                f"task.vocab_file={vocab}",
                f"task.train_data.input_path={books}/train_*",
                f"task.validation_data.input_path={books}/eval_*",
                data("train"),
                data("validation"),
                "trainer.train_steps=400",
                "trainer.optimizer.learning_rate=3e-3",
                "runtime.seed=0",
            ]
        ),
    )
    model = task.build_model()
    task.compile(model)
    model.fit(task.build_inputs("train"), steps_per_epoch=400, epochs=1, verbose=0)
    evaluation = task.build_inputs("validation").take(20)
    labels = [(y["mlm_logits"].numpy(), w["mlm_logits"].numpy()) for _, y, w in evaluation]
    baseline = unigram_entropy(np.concatenate([l for l, _ in labels]), np.concatenate([w for _, w in labels]))
    results = model.evaluate(evaluation, return_dict=True, verbose=0)
    print(f"MLM loss {results['mlm_logits_loss']:.3f} vs unigram entropy {baseline:.3f}; NSP {results['nsp_logits_accuracy']:.3f}")
    assert results["mlm_logits_loss"] < baseline - 0.5
    assert results["nsp_logits_accuracy"] > 0.55  # 1,280 held-out pairs: chance is 0.5 ± 0.014


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
