"""GLUE-style fine-tuning end to end: tasks that learn, predictions, your own files."""

import csv
import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tfplm import tasks
from tfplm.models import BertEncoder, from_pretrained, pretrained
from tfplm.tokenizers import BertPreprocessor, WordPieceTokenizer
from tfplm.training import trainer

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "good", "bad", "the", "film", "was", "yes", "no", "a", "plot", "very"]
FILLER = ["the", "film", "was", "a", "plot", "very"]


@pytest.fixture(scope="module")
def vocab_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("vocab") / "vocab.txt"
    path.write_text("\n".join(VOCAB) + "\n")
    return str(path)


def write_csv(path, rows, header):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return str(path)


def run(experiment, overrides, model_dir, mode="train_and_eval"):
    task = tasks.get(experiment, overrides=overrides + ",runtime.jit_compile=false,runtime.seed=0")
    return task, trainer.run_experiment(task, mode, str(model_dir))


def losses(model_dir):
    return [json.loads(line)["loss"] for line in open(os.path.join(model_dir, "train_log.jsonl"))]


def test_regression_task_learns(tmp_path, vocab_file):
    rng = np.random.default_rng(0)

    def rows(n):
        out = []
        for _ in range(n):
            goods = int(rng.integers(0, 5))
            words = ["good"] * goods + list(rng.choice(FILLER, 6 - goods))
            rng.shuffle(words)
            out.append([" ".join(words), goods])
        return out

    train = write_csv(tmp_path / "train.csv", rows(512), ["sentence", "score"])
    dev = write_csv(tmp_path / "dev.csv", rows(128), ["sentence", "score"])
    overrides = (
        f"task.task_name=custom,task.regression=true,task.train_file={train},task.validation_file={dev},"
        f"task.text_column=sentence,task.label_column=score,task.vocab_file={vocab_file},task.seq_length=16,"
        "task.dropout=0.0,trainer.train_steps=120,trainer.steps_per_loop=40,trainer.optimizer.learning_rate=3e-3"
    )
    _, results = run("text/classification", overrides, tmp_path / "run")
    log = losses(tmp_path / "run")
    assert log[-1] < 0.5 * log[0]
    assert results["metrics"]["pearson_correlation"] > 0.8
    assert results["metrics"]["spearman_correlation"] > 0.8


def test_pair_task_learns_and_reports_f1(tmp_path, vocab_file):
    rng = np.random.default_rng(1)

    def rows(n):
        out = []
        for i in range(n):
            label = int(rng.integers(0, 2))
            a = " ".join(rng.choice(FILLER, 5))
            b = " ".join(list(rng.choice(FILLER, 4)) + ["yes" if label else "no"])
            out.append([i, a, b, label])
        return out

    directory = tmp_path / "glue" / "MRPC"
    directory.mkdir(parents=True)
    for split, n in (("train", 512), ("dev", 128)):
        with open(directory / f"{split}.tsv", "w") as f:
            f.write("Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n")
            for i, a, b, label in rows(n):
                f.write(f"{label}\t{i}\t{i + 1}\t{a}\t{b}\n")
    overrides = (
        f"task.glue_dir={tmp_path / 'glue'},task.vocab_file={vocab_file},task.seq_length=16,task.dropout=0.0,"
        "trainer.train_steps=120,trainer.steps_per_loop=40,trainer.optimizer.learning_rate=3e-3"
    )
    _, results = run("glue/mrpc", overrides, tmp_path / "run")
    assert losses(tmp_path / "run")[-1] < 0.5 * losses(tmp_path / "run")[0]
    assert results["metrics"]["f1"] > 0.9 and results["metrics"]["accuracy"] > 0.9
    assert os.path.exists(tmp_path / "run" / "best" / pretrained.FORMAT_FILE)  # best model by F1
    best = from_pretrained(tmp_path / "run" / "best")
    assert best.preprocessor.pair and best.label_names == ("0", "1")
    kept = float((tmp_path / "run" / "best" / "best_metric.txt").read_text())
    assert kept == max(json.loads(line)["val_f1"] for line in open(tmp_path / "run" / "train_log.jsonl"))


def test_predict_writes_the_official_submission_file(tmp_path, vocab_file, test_data_dir):
    overrides = f"task.glue_dir={test_data_dir / 'glue'},task.vocab_file={vocab_file},task.seq_length=16,trainer.train_steps=2"
    run("glue/sst2", overrides, tmp_path / "run", mode="train")
    _, results = run("glue/sst2", overrides, tmp_path / "run", mode="predict")
    (path,) = results["files"]
    assert os.path.basename(path) == "SST-2.tsv"
    lines = open(path).read().splitlines()
    test_rows = open(test_data_dir / "glue" / "SST-2" / "test.tsv").read().splitlines()[1:]
    assert lines[0] == "index\tprediction"
    assert [line.split("\t")[0] for line in lines[1:]] == [row.split("\t")[0] for row in test_rows]
    assert {line.split("\t")[1] for line in lines[1:]} <= {"0", "1"}


def test_your_own_csv_with_string_labels_round_trips(tmp_path, vocab_file):
    rows = [[f"the film was {'good' if i % 2 else 'bad'}", "positive" if i % 2 else "negative"] for i in range(64)]
    train = write_csv(tmp_path / "train.csv", rows, ["review", "sentiment"])
    test = write_csv(tmp_path / "test.csv", [[i, r[0]] for i, r in enumerate(rows[:10])], ["id", "review"])
    overrides = (
        f"task.task_name=custom,task.train_file={train},task.validation_file={train},task.test_file={test},"
        f"task.text_column=review,task.label_column=sentiment,task.id_column=id,task.vocab_file={vocab_file},"
        "task.seq_length=16,trainer.train_steps=60,trainer.steps_per_loop=30,trainer.optimizer.learning_rate=3e-3"
    )
    task, _ = run("text/classification", overrides, tmp_path / "run", mode="train")
    assert task.label_names == ["negative", "positive"]
    _, results = run("text/classification", overrides, tmp_path / "run", mode="predict")
    lines = open(results["files"][0]).read().splitlines()
    assert lines[0] == "index\tprediction" and len(lines) == 11
    predicted = [line.split("\t")[1] for line in lines[1:]]
    assert predicted == [r[1] for r in rows[:10]]


def test_bad_rows_fail_with_file_and_line_or_are_skipped(tmp_path, vocab_file):
    train = tmp_path / "train.csv"
    train.write_text("review,sentiment\nfine film,positive\n,negative\nbad film,\n")
    overrides = f"task.task_name=custom,task.train_file={train},task.validation_file={train},task.text_column=review,task.label_column=sentiment,task.vocab_file={vocab_file}"
    with pytest.raises(ValueError, match=r"train.csv:3: .*empty"):
        tasks.get("text/classification", overrides=overrides).examples("train")
    task = tasks.get("text/classification", overrides=overrides + ",task.skip_bad_rows=true")
    examples = task.examples("train")
    assert len(examples) == 1 and sum(examples.bad_rows.values()) == 2


def test_length_buckets_pad_short_batches_less(vocab_file, tmp_path):
    rows = [["good " * (3 if i % 2 else 40), i % 2] for i in range(64)]
    train = write_csv(tmp_path / "train.csv", rows, ["text", "label"])
    task = tasks.get("text/classification", overrides=f"task.task_name=custom,task.train_file={train},task.vocab_file={vocab_file},task.seq_length=64")
    lengths = {int(x["input_word_ids"].shape[1]) for x, _ in task.build_inputs("train")}
    assert lengths == {5, 42}  # each batch padded to its longest example, not 64


# --- the task makes its own preprocessing; the model carries it -----------------


def sst2_texts(test_data_dir, split="dev"):
    lines = (test_data_dir / "glue" / "SST-2" / f"{split}.tsv").read_text().splitlines()[1:]
    return [line.split("\t")[0] for line in lines]


def expected_batch(preprocessor, texts):
    """What the pipeline must give for `texts` in one batch: packed and cut to the longest."""
    packed = preprocessor(tf.constant(texts))
    length = int(tf.reduce_max(tf.reduce_sum(packed["input_mask"], axis=1)))
    return {name: value[:, :length].numpy() for name, value in packed.items()}


def assert_batch(batch, expected):
    for name, value in expected.items():
        np.testing.assert_array_equal(batch[name].numpy(), value, err_msg=name)


def test_build_inputs_needs_no_model(vocab_file, test_data_dir):
    task = tasks.get("glue/sst2", overrides=f"task.glue_dir={test_data_dir / 'glue'},task.vocab_file={vocab_file},task.seq_length=16")
    features, labels = next(iter(task.build_inputs("validation")))  # no build_model() before
    expected = expected_batch(BertPreprocessor(WordPieceTokenizer(vocab_file), 16), sst2_texts(test_data_dir))
    assert_batch(features, expected)
    assert labels.numpy().tolist() == [1, 0]
    assert len(list(task.build_inputs("train"))) == 1
    model = task.build_model()
    assert model.preprocessor is task.preprocessor
    assert model.label_names == ("0", "1")


def tiny_checkpoint(directory, vocabulary, lowercase=False):
    """A tfplm BertEncoder checkpoint; with a tokenizer unless `vocabulary` is None."""
    preprocessor = None if vocabulary is None else BertPreprocessor(WordPieceTokenizer(vocabulary, lowercase), 32)
    size = len(vocabulary or VOCAB)
    encoder = BertEncoder(vocab_size=size, hidden_size=16, num_layers=1, num_heads=2, intermediate_size=32, preprocessor=preprocessor)
    encoder.save_pretrained(directory)
    return encoder


def test_build_inputs_tokenizes_with_the_init_checkpoints_vocabulary(vocab_file, test_data_dir, tmp_path):
    # Another vocabulary than vocab_file's (other ids for the same words), cased.
    vocabulary = VOCAB[:5] + ["it", "'s", "a", "charming", "and", "often", "bleak", "desperate", "."][::-1]
    encoder = tiny_checkpoint(tmp_path / "ckpt", vocabulary)
    overrides = (
        f"task.glue_dir={test_data_dir / 'glue'},task.init_checkpoint={tmp_path / 'ckpt'},"
        f"task.vocab_file={vocab_file},task.seq_length=16"
    )
    task = tasks.get("glue/sst2", overrides=overrides)
    features, _ = next(iter(task.build_inputs("validation")))
    expected = expected_batch(BertPreprocessor(WordPieceTokenizer(vocabulary, lowercase=False), 16), sst2_texts(test_data_dir))
    assert_batch(features, expected)
    assert expected["input_word_ids"].max() > 5 and expected["input_word_ids"][0, 1] == vocabulary.index("it")
    model = task.build_model()
    assert model.preprocessor is task.preprocessor and model.tokenizer.get_vocabulary() == vocabulary
    assert model.tokenizer.lowercase is False and model.preprocessor.seq_length == 16
    for mine, saved in zip(model.encoder.weights, encoder.weights):
        np.testing.assert_array_equal(mine.numpy(), saved.numpy(), err_msg=mine.path)


def test_an_init_checkpoint_without_vocabulary_takes_vocab_file(vocab_file, test_data_dir, tmp_path):
    tiny_checkpoint(tmp_path / "ckpt", None)
    overrides = f"task.glue_dir={test_data_dir / 'glue'},task.init_checkpoint={tmp_path / 'ckpt'},task.seq_length=16"
    with pytest.raises(ValueError, match="has no vocabulary files; set task.vocab_file"):
        tasks.get("glue/sst2", overrides=overrides).build_inputs("train")
    task = tasks.get("glue/sst2", overrides=f"{overrides},task.vocab_file={vocab_file}")
    features, _ = next(iter(task.build_inputs("validation")))
    assert_batch(features, expected_batch(BertPreprocessor(WordPieceTokenizer(vocab_file), 16), sst2_texts(test_data_dir)))
    assert task.build_model().tokenizer.get_vocabulary() == VOCAB
    bigger = tmp_path / "bigger.txt"
    bigger.write_text("\n".join(VOCAB + ["extra"]) + "\n")
    with pytest.raises(ValueError, match=r"has 16 tokens but the model of .* embeds 15"):
        tasks.get("glue/sst2", overrides=f"{overrides},task.vocab_file={bigger}").build_inputs("train")


def test_label_names_reach_the_model_model_dir_best_and_predictions(tmp_path, vocab_file):
    rows = [[f"the film was {'good' if i % 2 else 'bad'}", "positive" if i % 2 else "negative"] for i in range(64)]
    train = write_csv(tmp_path / "train.csv", rows, ["review", "sentiment"])
    test = write_csv(tmp_path / "test.csv", [[i, r[0]] for i, r in enumerate(rows[:10])], ["id", "review"])
    overrides = (
        f"task.task_name=custom,task.train_file={train},task.validation_file={train},"
        f"task.text_column=review,task.label_column=sentiment,task.vocab_file={vocab_file},"
        "task.seq_length=16,trainer.train_steps=60,trainer.steps_per_loop=30,trainer.optimizer.learning_rate=3e-3"
    )
    task, _ = run("text/classification", overrides, tmp_path / "run")
    assert task.build_model().label_names == ("negative", "positive")
    best = tmp_path / "run" / "best"
    assert from_pretrained(best).label_names == ("negative", "positive")
    assert json.loads((best / pretrained.FORMAT_FILE).read_text())["config"]["label_names"] == ["negative", "positive"]
    # Predicting needs the test file only: the model brings its tokenizer and label names.
    predict_overrides = "task.task_name=custom,task.text_column=review,task.id_column=id,task.test_file=" + test
    _, results = run("text/classification", predict_overrides, tmp_path / "run", mode="predict")
    lines = open(results["files"][0]).read().splitlines()
    assert lines[0] == "index\tprediction"
    assert [line.split("\t") for line in lines[1:]] == [[str(i), r[1]] for i, r in enumerate(rows[:10])]
