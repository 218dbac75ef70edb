"""Translation (issue 15): parallel files, batches, beam search with GNMT's length
penalty, the model's text-to-text path, saving, BLEU and the export."""

import gzip
import itertools
import json
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfplm import export, generation, tasks
from tfplm.data import parallel
from tfplm.models import Seq2SeqTransformer
from tfplm.tasks.translation import TRANSLATE_DEFAULTS, SmoothedCrossEntropy, corpus_bleu, translate_all
from tfplm.training import trainer
from tfplm.training.optimization import OptimizerConfig, learning_rate_schedule

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PARALLEL = os.path.join(REPO, "tests", "data", "parallel")
SMALL = dict(hidden_size=64, num_encoder_layers=1, num_decoder_layers=1, num_heads=2, intermediate_size=128)
OVERRIDES = (
    f"task.data_dir={PARALLEL},task.validation_split=val,task.test_split=test,task.vocab_size=200,"
    "task.batch_tokens=256,runtime.seed=1"
)


@pytest.fixture(scope="module")
def task():
    return tasks.get("seq2seq/translation", overrides=OVERRIDES)


@pytest.fixture(scope="module")
def trained(task):
    """A small model fitted on the synthetic pairs in a notebook's way (a few seconds)."""
    keras.utils.set_random_seed(1)
    model = Seq2SeqTransformer.from_preset(
        "transformer_tiny", vocab_size=task.tokenizer.vocabulary_size(), dropout=0.0, tokenizer=task.tokenizer, **SMALL
    )
    task.config.trainer.optimizer = OptimizerConfig(learning_rate=3e-3, weight_decay=0.0, warmup_steps=20)
    task.compile(model, steps=250)
    model.fit(task.build_inputs("train"), steps_per_epoch=250, epochs=1, verbose=0)
    return model


# --- parallel files --------------------------------------------------------------------


def test_multi30k_layout_gzip_and_tsv_give_the_same_kind_of_pairs(tmp_path):
    sources, targets = parallel.read_pairs(parallel.split_files(PARALLEL, "val", "de", "en"))
    assert len(sources) == len(targets) == 40
    with gzip.open(os.path.join(PARALLEL, "val.en.gz"), "rt", encoding="utf-8") as f:
        assert targets == f.read().splitlines()
    (tmp_path / "a.de").write_text("Ein Hund.\nZwei Männer.\n", encoding="utf-8")
    (tmp_path / "a.en").write_text("A dog.\nTwo men.\n", encoding="utf-8")
    (tmp_path / "a.tsv").write_text("Ein Hund.\tA dog.\nZwei Männer.\tTwo men.\n", encoding="utf-8")
    plain = parallel.read_pairs((str(tmp_path / "a.de"), str(tmp_path / "a.en")))
    assert plain == parallel.read_pairs(str(tmp_path / "a.tsv")) == (["Ein Hund.", "Zwei Männer."], ["A dog.", "Two men."])


def test_misaligned_files_name_both_line_counts(tmp_path):
    (tmp_path / "x.de").write_text("eins\nzwei\ndrei\n", encoding="utf-8")
    (tmp_path / "x.en").write_text("one\ntwo\n", encoding="utf-8")
    with pytest.raises(ValueError) as error:
        parallel.read_pairs((str(tmp_path / "x.de"), str(tmp_path / "x.en")))
    assert str(error.value) == (
        f"{tmp_path / 'x.de'} has 3 lines but {tmp_path / 'x.en'} has 2; parallel files must be aligned "
        "line by line (line i of one translates line i of the other)"
    )


def test_a_tsv_line_without_two_columns_is_named(tmp_path):
    (tmp_path / "p.tsv").write_text("Ein Hund.\tA dog.\nnur eine Spalte\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"p\.tsv:2: 1 tab-separated column\(s\) in 'nur eine Spalte'; a parallel TSV"):
        parallel.read_pairs(str(tmp_path / "p.tsv"))


def test_a_missing_split_says_which_files_the_folder_needs(tmp_path):
    with pytest.raises(ValueError, match=r"train\.fr\[\.gz\] does not exist; the folder needs"):
        parallel.split_files(str(tmp_path), "train", "fr", "en")


@pytest.mark.full_data
def test_multi30k_splits_read_whole(shared_data_dir):
    folder = shared_data_dir / "translation" / "multi30k"
    for split, count in (("train", 29000), ("val", 1014), ("test_2016_flickr", 1000)):
        sources, targets = parallel.read_pairs(parallel.split_files(str(folder), split, "de", "en"))
        assert len(sources) == len(targets) == count


def test_batches_teach_the_decoder_to_read_the_target_shifted_and_stop(task):
    inputs, labels, weights = next(iter(task.build_inputs("validation")))
    end = task.tokenizer.end_token_id
    source, target = task.pairs("validation")[0][0], task.pairs("validation")[1][0]
    source_ids = task.tokenizer.tokenize(source).numpy().tolist() + [end]
    target_ids = task.tokenizer.tokenize(target).numpy().tolist()
    row = lambda x: x[0].numpy().tolist()  # noqa: E731
    n = len(target_ids) + 1
    assert row(inputs["encoder_token_ids"])[: len(source_ids)] == source_ids
    assert sum(row(inputs["encoder_padding_mask"])) == len(source_ids)
    assert row(inputs["decoder_token_ids"])[:n] == [end] + target_ids
    assert row(labels)[:n] == target_ids + [end]
    assert row(weights) == [1.0] * n + [0.0] * (labels.shape[1] - n)
    assert row(inputs["decoder_padding_mask"]) == [1] * n + [0] * (labels.shape[1] - n)


def test_training_batches_keep_to_the_token_budget_and_max_length(task):
    sources, targets = task.pairs("train")
    dataset = parallel.token_batches(sources, targets, task.tokenizer, batch_tokens=200, training=True, max_length=14, seed=3)
    for inputs, labels, _ in dataset.take(30):
        rows, length = labels.shape
        assert rows * max(length, inputs["encoder_token_ids"].shape[1]) <= 200 + 14
        assert max(length, inputs["encoder_token_ids"].shape[1]) <= 14


def test_learned_vocabulary_is_the_same_every_time():
    first = tasks.get("seq2seq/translation", overrides=OVERRIDES).tokenizer
    second = tasks.get("seq2seq/translation", overrides=OVERRIDES).tokenizer
    assert first.proto == second.proto and first.vocabulary_size() > 50


def test_sentencepiece_tokenizer_survives_set_random_seed(task):
    ids = task.tokenizer.tokenize(["Ein Hund."]).to_list()
    keras.utils.set_random_seed(5)  # clears TensorFlow's kernel cache
    assert task.tokenizer.tokenize(["Ein Hund."]).to_list() == ids


# --- losses and schedule ----------------------------------------------------------------


def test_label_smoothing_matches_its_definition():
    logits = np.random.default_rng(0).normal(size=(2, 3, 7)).astype("float32")
    labels = np.array([[1, 2, 0], [6, 5, 0]])
    weights = np.array([[1, 1, 0], [1, 1, 0]], "float32")
    log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    smoothed = np.full((2, 3, 7), 0.1 / 7) + 0.9 * np.eye(7)[labels]
    per_token = -(smoothed * log_probs).sum(-1)
    expected = (per_token * weights).sum() / weights.sum()
    loss = SmoothedCrossEntropy(0.1)(labels, logits, sample_weight=weights)
    np.testing.assert_allclose(float(loss), expected, rtol=1e-5)


def test_inverse_square_root_schedule():
    config = OptimizerConfig(learning_rate=1e-3, warmup_steps=100, decay="inverse_sqrt")
    schedule = learning_rate_schedule(config, 10_000)
    for step, expected in ((50, 5e-4), (100, 1e-3), (400, 5e-4), (2500, 2e-4)):
        np.testing.assert_allclose(float(schedule(step)), expected, rtol=1e-5)


# --- beam search with GNMT's length penalty ---------------------------------------------

# A toy model whose next token depends on the last one: 1 = start, 2 = stop, 3 = "a", 4 = "b".
_TABLE = {1: {2: 0.5, 3: 0.48, 4: 0.02}, 3: {2: 0.9, 3: 0.05, 4: 0.05}, 4: {2: 0.2, 3: 0.4, 4: 0.4}}


def _table_logits(token_ids, cache, index):
    rows = np.full((5, 5), -1e9, "float32")
    for previous, probabilities in _TABLE.items():
        for token, p in probabilities.items():
            rows[previous, token] = math.log(p)
    return tf.gather(tf.constant(rows), token_ids[:, -1]), cache


def _best_by_definition(alpha, max_new_tokens):
    """Every hypothesis (finished at the stop token, or cut at the length), scored
    by its log-probability over ((5 + length) / 6) ** alpha."""
    best = None
    for length in range(1, max_new_tokens + 1):
        for tokens in itertools.product((2, 3, 4), repeat=length):
            if 2 in tokens[:-1] or (length < max_new_tokens and tokens[-1] != 2):
                continue
            previous, log_p = 1, 0.0
            for token in tokens:
                log_p += math.log(_TABLE[previous][token])
                previous = token
            score = log_p / ((5 + length) / 6) ** alpha
            if best is None or score > best[0]:
                best = (score, list(tokens))
    return best[1]


@pytest.mark.parametrize("alpha", [0.0, 2.0])
def test_beam_search_returns_the_best_hypothesis_under_the_length_penalty(alpha):
    max_new_tokens = 3
    token_ids = np.array([[1] + [0] * max_new_tokens], "int32")
    prompt_mask = np.array([[True] + [False] * max_new_tokens])
    sampler = generation.BeamSampler(num_beams=32, length_penalty=alpha)
    out = generation.decode(_table_logits, token_ids, prompt_mask, tf.zeros([1, 1]), sampler, stop_token_id=2, pad_token_id=2)
    generated = out[0, 1:].numpy().tolist()
    expected = _best_by_definition(alpha, max_new_tokens)
    assert generated[: len(expected)] == expected
    # The penalty changes the answer here: the sum alone prefers stopping at once.
    assert expected == ([2] if alpha == 0 else [3, 2])


# --- the model, text to text --------------------------------------------------------------


def test_translate_learns_the_synthetic_pairs_and_beam_is_not_worse_than_greedy(task, trained):
    sources, references = task.pairs("validation")
    greedy, _ = corpus_bleu(translate_all(trained, sources, num_beams=1), references)
    beam, _ = corpus_bleu(translate_all(trained, sources, num_beams=4), references)
    assert greedy > 40, greedy  # an untrained model scores about 0
    assert beam >= greedy - 1.0, (beam, greedy)


def test_greedy_translate_equals_generate_ids(task, trained):
    text = task.pairs("validation")[0][:3]
    end = task.tokenizer.end_token_id
    sources = [row + [end] for row in task.tokenizer.tokenize(text).to_list()]
    max_new = 2 * max(map(len, sources)) + 10
    ids = trained.generate_ids(sources, max_new, start_token_id=end, stop_token_id=end)
    rows = [[t for t in row[1:] if t != end] for row in ids.tolist()]
    expected = [t.decode() for t in task.tokenizer.detokenize(tf.ragged.constant(rows, tf.int32)).numpy()]
    assert trained.translate(text, num_beams=1) == expected


def test_save_pretrained_round_trip_translates_the_same(task, trained, tmp_path):
    trained.save_pretrained(str(tmp_path / "model"))
    loaded = Seq2SeqTransformer.from_pretrained(str(tmp_path / "model"))
    assert loaded.tokenizer.proto == trained.tokenizer.proto
    text = task.pairs("validation")[0][:4]
    assert loaded.translate(text) == trained.translate(text)


def test_translate_without_a_tokenizer_says_how_to_get_one():
    model = Seq2SeqTransformer.from_preset("transformer_tiny", vocab_size=50, **SMALL)
    with pytest.raises(ValueError, match="this Seq2SeqTransformer has no tokenizer: load it with"):
        model.translate("Ein Hund.")


def test_exported_savedmodel_translates_like_keras_in_a_fresh_process(task, trained, tmp_path):
    examples = task.held_out_examples(6)
    report = export.export_model(trained, str(tmp_path / "export"), examples, formats=("saved_model",))
    assert export.report.failures(report) == []
    path = report["artifacts"][1]["path"]
    script = (
        "import json, sys, tensorflow as tf, tensorflow_text\n"
        "m = tf.saved_model.load(sys.argv[1])\n"
        "texts = tf.constant(json.loads(sys.argv[2]))\n"
        "d = m.signatures['serving_default'](text=texts)['translation'].numpy()\n"
        "g = m.signatures['translate'](text=texts, num_beams=tf.constant(1), length_penalty=tf.constant(0.6),"
        " max_new_tokens=tf.constant(0))['translation'].numpy()\n"
        "print(json.dumps([[t.decode() for t in d], [t.decode() for t in g]]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, path, json.dumps(examples["text"])], capture_output=True, text=True, check=True
    )
    served_default, served_greedy = json.loads(done.stdout.strip().splitlines()[-1])
    assert served_default == trained.translate(examples["text"], **TRANSLATE_DEFAULTS)
    assert served_greedy == trained.translate(examples["text"], num_beams=1)


# --- the experiment -------------------------------------------------------------------------


def test_your_own_files_two_aligned_or_one_tsv(tmp_path):
    de, en = (os.path.join(PARALLEL, f"test.{language}.gz") for language in ("de", "en"))
    task = tasks.get(
        "seq2seq/translation",
        overrides=f"task.train_files={de};{en},task.eval_files={PARALLEL}/pairs.tsv,task.test_files={de};{en}",
    )
    assert task.pairs("train") == parallel.read_pairs((de, en))
    assert len(task.pairs("validation")[0]) == 40 and "\t" not in task.pairs("validation")[1][0]


def test_experiment_without_data_says_what_to_set():
    task = tasks.get("seq2seq/translation")
    with pytest.raises(ValueError, match=r"set task.data_dir \(a folder of <split>.<language>\[.gz\] files\) or task.train_files"):
        task.pairs("train")


def test_predict_writes_translations_and_sacrebleu_with_its_signature(task, trained, tmp_path):
    files = task.predict(trained, str(tmp_path))
    translations = open(files[0], encoding="utf-8").read().splitlines()
    result = json.loads(open(files[1]).read())
    references = task.pairs("test")[1]
    assert len(translations) == len(references) == result["pairs"] == 40
    assert result["bleu"] == pytest.approx(corpus_bleu(translations, references)[0])
    assert result["signature"].startswith("nrefs:1|case:mixed|eff:no|tok:13a|smooth:exp|version:")
    assert os.path.basename(files[0]) == "translations.test.beam4.txt"


def test_train_and_eval_keeps_the_best_bleu_model(tmp_path):
    task = tasks.get(
        "seq2seq/translation",
        overrides=[OVERRIDES, "trainer.train_steps=4,trainer.steps_per_loop=2,task.bleu_examples=4"],
    )
    results = trainer.run_experiment(task, "train_and_eval", str(tmp_path))
    assert "bleu" in results["metrics"]
    best = float(open(tmp_path / "best" / "best_metric.txt").read())
    logged = [json.loads(line) for line in open(tmp_path / "train_log.jsonl")]
    assert best == max(entry["val_bleu"] for entry in logged if "val_bleu" in entry)
    assert isinstance(trainer.load_trained(task, str(tmp_path)), Seq2SeqTransformer)
