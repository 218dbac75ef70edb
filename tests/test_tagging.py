"""Token tagging (issue 14): CoNLL files, entity F1 against seqeval, the model, predict mode and the export.

Data: a synthetic CoNLL-2003-style sample (tests/data/conll_synthetic, invented
text) and the first sentences of WNUT-17 (tests/data/wnut17_sample, CC BY 4.0);
`full_data` twins read CoNLL-2003 and WNUT-17 from ../shared/data.
"""

import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from seqeval.metrics import classification_report, f1_score, precision_score, recall_score

from tfplm import export, tasks
from tfplm.config import ConfigError
from tfplm.data import conll
from tfplm.export import report as report_lib
from tfplm.models import BertEncoder, BertTokenClassifier
from tfplm.tasks import tagging
from tfplm.tokenizers import WordPieceTokenizer
from tfplm.training import trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SYNTHETIC = os.path.join(REPO, "tests", "data", "conll_synthetic")
WNUT = os.path.join(REPO, "tests", "data", "wnut17_sample")
HF_BERT = os.path.join(REPO, "tests", "fixtures", "hf_bert")
TINY = (
    f"task.data_dir={SYNTHETIC},task.init_checkpoint={HF_BERT},task.seq_length=32,task.global_batch_size=16,"
    "runtime.seed=1,runtime.mixed_precision=float32"
)


def write(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return str(path)


# --- reading CoNLL files -----------------------------------------------------------


def test_reader_splits_sentences_at_blank_lines_and_documents_at_docstart():
    tagged = conll.read_conll(os.path.join(SYNTHETIC, "train.txt"))
    with open(os.path.join(SYNTHETIC, "train.txt")) as f:
        lines = f.read().split("\n")
    assert tagged.documents == sum(line.startswith("-DOCSTART-") for line in lines) == 8
    assert len(tagged) == 240
    assert sum(map(len, tagged.words)) == sum(bool(line) and not line.startswith("-DOCSTART-") for line in lines)
    first = lines[2].split()
    assert (tagged.words[0][0], tagged.tags[0][0]) == (first[0], first[3])
    assert tagged.line_numbers[0][0] == 3
    assert tagged.types() == ["LOC", "MISC", "ORG", "PER"]


def test_tag_column_counts_from_either_end(tmp_path):
    path = write(tmp_path / "a.txt", "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nPeter NNP B-NP B-PER\n")
    assert conll.read_conll(path, tag_column=3).tags == conll.read_conll(path, tag_column=-1).tags
    assert conll.read_conll(path, tag_column=-2, scheme="IOB2").tags == [["B-NP", "B-VP"], ["B-NP"]]


def test_tab_separated_wnut_keeps_words_and_treats_tab_only_lines_as_blank():
    tagged = conll.read_conll(os.path.join(WNUT, "train.conll"), separator="\t")
    assert len(tagged) == 150
    assert tagged.types() == ["corporation", "creative-work", "group", "location", "person", "product"]
    assert all(word.strip() == word and word for sentence in tagged.words for word in sentence)


def test_label_set_comes_from_the_training_file():
    tagged = conll.read_conll(os.path.join(SYNTHETIC, "train.txt"))
    assert conll.label_names(tagged) == ["O", "B-LOC", "I-LOC", "B-MISC", "I-MISC", "B-ORG", "I-ORG", "B-PER", "I-PER"]
    assert conll.label_names(tagged, "BIOES")[:5] == ["O", "B-LOC", "I-LOC", "E-LOC", "S-LOC"]


@pytest.mark.parametrize(
    "content, kwargs, error",
    [
        ("EU B-ORG\nrejects\n", {}, "a.txt:2: 1 column(s) in 'rejects' (columns split at whitespace); task.tag_column=-1 needs"),
        ("EU B-ORG\nrejects X-PER\n", {}, "a.txt:2: tag 'X-PER' is not IOB2 (O, or B/I- and a type); check task.tag_column"),
        ("EU S-ORG\n", {"scheme": "IOB2"}, "a.txt:1: tag 'S-ORG' is not IOB2"),
        ("EU\tB-ORG x\n", {"separator": "\t", "tag_column": 2}, "a.txt:1: 2 column(s) in 'EU\\tB-ORG x' (task.separator='\\t')"),
        ("\n\n-DOCSTART- -X- O\n\n", {}, "a.txt has no words; expected one word per line"),
    ],
)
def test_bad_files_get_one_line_naming_file_line_and_value(tmp_path, content, kwargs, error):
    path = write(tmp_path / "a.txt", content)
    with pytest.raises(ValueError) as raised:
        conll.read_conll(path, **kwargs)
    assert error in str(raised.value) and "\n" not in str(raised.value)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(ValueError, match=r"nope.txt is not a file; expected a CoNLL-style file"):
        conll.read_conll(str(tmp_path / "nope.txt"))


def test_invalid_utf8_names_its_line(tmp_path):
    path = tmp_path / "a.txt"
    path.write_bytes(b"EU B-ORG\n\nM\xfcnchen B-LOC\n")
    with pytest.raises(ValueError, match=r"a.txt:3: not UTF-8 .*; re-encode the file as UTF-8"):
        conll.read_conll(str(path))


def test_evaluation_tag_of_an_unknown_type_is_an_error(tmp_path):
    train = conll.read_conll(write(tmp_path / "train.txt", "EU B-ORG\nsays O\n"))
    other = conll.read_conll(write(tmp_path / "dev.txt", "Peter B-PER\n"))
    with pytest.raises(ValueError, match=r"dev.txt:1: tag 'B-PER' is not in the training file's labels \(O, B-ORG, I-ORG\)"):
        conll.label_ids(other, conll.label_names(train))


def test_iob1_and_iob2_convert_both_ways_with_the_same_entities():
    tags = conll.read_conll(os.path.join(SYNTHETIC, "train.txt")).tags
    for sentence in tags:
        iob1 = conll.to_iob1(sentence)
        assert conll.to_iob2(iob1) == sentence
        assert conll.entities(iob1) == conll.entities(sentence)
        # IOB1 writes B- only where a chunk follows one of its own type.
        assert all(i > 0 and iob1[i - 1][2:] == t[2:] for i, t in enumerate(iob1) if t.startswith("B-"))


# --- words to pieces ---------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer():
    return WordPieceTokenizer(os.path.join(HF_BERT, "vocab.txt"))


def test_each_word_is_labelled_on_its_first_piece_only(tokenizer):
    tagged = conll.read_conll(os.path.join(SYNTHETIC, "valid.txt"))
    names = conll.label_names(tagged)
    encoded = conll.encode(tagged, tokenizer, 30, names)
    pieces = iter(tokenizer.tokenize(tf.constant([w for s in tagged.words for w in s])).to_list())
    pieces = [[next(pieces) for _ in sentence] for sentence in tagged.words]
    for ids, labels, words, first in zip(encoded.piece_ids, encoded.labels, encoded.words, encoded.first_pieces):
        assert len(ids) == len(labels) <= 30
        assert [i for i, label in enumerate(labels) if label != conll.IGNORED] == first
        assert first[0] == 0 and len(ids) == first[-1] + len(pieces[words[-1][0]][words[-1][1]])
        for (s, w), position in zip(words, first):
            assert names[labels[position]] == tagged.tags[s][w]
            assert ids[position : position + len(pieces[s][w])] == pieces[s][w]


def test_long_sentences_are_split_into_windows_or_truncated_with_counts(tokenizer, tmp_path):
    words = ["Anna", "Berg", "visited", "Port", "Elling", "on", "Monday", "."] * 3
    tags = ["B-PER", "I-PER", "O", "B-LOC", "I-LOC", "O", "O", "O"] * 3
    tagged = conll.read_conll(write(tmp_path / "long.txt", "".join(f"{w} {t}\n" for w, t in zip(words, tags))))
    pieces = sum(len(tokenizer.tokenize(w).numpy()) for w in words)
    names = conll.label_names(tagged)
    split = conll.encode(tagged, tokenizer, 10, names)
    assert split.windows_split == 1 and len(split.piece_ids) > 1
    assert [word for window in split.words for word in window] == [(0, i) for i in range(len(words))]
    assert split.words_cut == split.pieces_cut == 0
    cut = conll.encode(tagged, tokenizer, 10, names, split_long_sentences=False)
    assert len(cut.piece_ids) == 1 and len(cut.piece_ids[0]) == 10
    assert cut.words_cut == len(words) - len(cut.words[0]) > 0
    assert cut.pieces_cut == pieces - 10
    predicted = conll.word_predictions(cut, tagged, [list(range(10))], default=-1)
    assert predicted[0][len(cut.words[0]) :] == [-1] * cut.words_cut


# --- the metric: conlleval's definition, as seqeval computes it ----------------------------


def assert_same_as_seqeval(gold, predicted):
    ours = conll.entity_scores(gold, predicted)
    assert ours.f1 == pytest.approx(f1_score(gold, predicted), abs=1e-12)
    assert ours.precision == pytest.approx(precision_score(gold, predicted), abs=1e-12)
    assert ours.recall == pytest.approx(recall_score(gold, predicted), abs=1e-12)
    report = classification_report(gold, predicted, output_dict=True, zero_division=0)
    for kind, row in ours.per_type.items():
        if kind in report:
            assert row["f1"] == pytest.approx(report[kind]["f1-score"], abs=1e-12), kind
            assert row["support"] == report[kind]["support"], kind
        else:  # a type only predicted: seqeval leaves it out of its report
            assert row["support"] == 0 and row["f1"] == 0
    return ours


def corrupted(tags, names, seed, rate=0.15):
    """Gold tags with random tags put in: the ill-formed sequences models emit (I- after O, type switches)."""
    rng = random.Random(seed)
    return [[rng.choice(names) if rng.random() < rate else tag for tag in sentence] for sentence in tags]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny tagger trained briefly on the synthetic sample: real, imperfect predictions."""
    model_dir = str(tmp_path_factory.mktemp("tagger"))
    task = tasks.get(
        "tagging/conll2003",
        overrides=f"{TINY},trainer.train_steps=150,trainer.steps_per_loop=150,trainer.optimizer.learning_rate=5e-3",
    )
    results = trainer.run_experiment(task, "train_and_eval", model_dir)
    return task, trainer.load_trained(task, model_dir), model_dir, results


def test_entity_f1_equals_seqeval_on_real_predictions_in_iob2_and_iob1(trained):
    task, model, _, _ = trained
    gold = task.tagged("validation").tags
    predicted = task.predict_tags(model, "validation")
    scores = assert_same_as_seqeval(gold, predicted)
    assert 0.3 < scores.f1 < 1.0  # real mistakes, real hits
    assert_same_as_seqeval([conll.to_iob1(s) for s in gold], [conll.to_iob1(s) for s in predicted])


@pytest.mark.parametrize("scheme", ["IOB2", "IOB1"])
def test_entity_f1_equals_seqeval_on_ill_formed_predictions(scheme):
    gold = conll.read_conll(os.path.join(WNUT, "test.conll"), separator="\t").tags
    if scheme == "IOB1":
        gold = [conll.to_iob1(s) for s in gold]
    names = sorted({t for s in gold for t in s} | {"I-person", "B-location"})
    for seed in range(3):
        assert_same_as_seqeval(gold, corrupted(gold, names, seed))


@pytest.mark.full_data
@pytest.mark.parametrize("name, separator", [("conll2003/test.txt", ""), ("wnut17/emerging.test.annotated", "\t")])
def test_entity_f1_equals_seqeval_on_the_full_test_files(shared_data_dir, name, separator):
    gold = conll.read_conll(str(shared_data_dir / "ner" / name), separator=separator).tags
    names = sorted({t for s in gold for t in s})
    for tags in (gold, [conll.to_iob1(s) for s in gold]):
        scores = assert_same_as_seqeval(tags, corrupted(tags, names, seed=14))
        assert scores.gold == sum(len(conll.entities(s)) for s in tags)


def test_bioes_entities_follow_conlleval():
    assert conll.entities(["S-PER", "B-LOC", "E-LOC", "E-LOC", "I-ORG", "O", "B-PER"]) == [
        ("PER", 0, 1), ("LOC", 1, 3), ("LOC", 3, 4), ("ORG", 4, 5), ("PER", 6, 7)
    ]
    gold = [["S-PER", "B-LOC", "I-LOC", "E-LOC", "O"]]
    predicted = [["S-PER", "B-LOC", "E-LOC", "E-LOC", "O"]]
    assert_same_as_seqeval(gold, predicted)


# --- the task: training, evaluation, predict mode -------------------------------------


def test_the_tagger_learns_the_synthetic_entities(trained):
    task, model, _, results = trained
    untrained = task.evaluate_predictions(task.build_model())
    assert results["metrics"]["f1"] > max(untrained["f1"] + 0.4, 0.7), (untrained, results["metrics"])
    assert set(results["metrics"]) >= {"accuracy", "loss", "precision", "recall", "f1", "f1_PER", "f1_LOC"}


def test_wnut17_experiment_reads_tab_separated_files():
    task = tasks.get(
        "tagging/wnut17",
        overrides=f"task.data_dir={WNUT},task.train_file=train.conll,task.eval_file=test.conll,"
        f"task.vocab_file={HF_BERT}/vocab.txt,task.seq_length=32",
    )
    assert len(task.label_names) == 13 and task.label_names[1] == "B-corporation"
    inputs, labels = next(iter(task.build_inputs("validation")))
    first = task.encoded("validation")
    row = labels.numpy()[0]
    assert [task.label_names[i] for i in row[row >= 0]] == task.tagged("validation").tags[0][: len(first.words[0])]
    assert inputs["input_word_ids"].shape == labels.shape


def test_bioes_files_learn_bioes_labels(tmp_path):
    def bioes(tags):
        out = []
        for kind, start, end in conll.entities(tags):
            out += [(start, f"S-{kind}")] if end - start == 1 else (
                [(start, f"B-{kind}")] + [(i, f"I-{kind}") for i in range(start + 1, end - 1)] + [(end - 1, f"E-{kind}")])
        result = ["O"] * len(tags)
        for i, tag in out:
            result[i] = tag
        return result

    train = conll.read_conll(os.path.join(SYNTHETIC, "train.txt"))
    text = "\n\n".join("\n".join(f"{w} {t}" for w, t in zip(s, bioes(g))) for s, g in zip(train.words, train.tags))
    path = write(tmp_path / "bioes.txt", text + "\n")
    task = tasks.get("tagging/conll", overrides=f"{TINY},task.train_file={path},task.eval_file={path},task.tag_scheme=BIOES")
    assert task.label_names[:5] == ["O", "B-LOC", "I-LOC", "E-LOC", "S-LOC"]
    _, labels = next(iter(task.build_inputs("validation")))
    row = labels.numpy()[0]
    assert [task.label_names[i] for i in row[row >= 0]] == task.tagged("validation").tags[0]
    assert conll.entities(task.tagged("train").tags[0]) == conll.entities(train.tags[0])


def test_bad_tag_scheme_is_a_config_error():
    with pytest.raises(ConfigError, match=r"task.tag_scheme='BILOU'; expected one of IOB1, IOB2, BIOES"):
        tasks.get("tagging/conll", overrides="task.tag_scheme=BILOU")


def test_predict_mode_appends_the_predicted_tag_after_the_gold_one(trained, tmp_path):
    task, model, _, _ = trained
    files = task.predict(model, str(tmp_path))
    assert [os.path.basename(f) for f in files] == ["predictions.conll", "test_results.json"]
    with open(os.path.join(SYNTHETIC, "test.txt")) as f:
        source = f.read().split("\n")[:-1]
    with open(files[0]) as f:
        written = f.read().split("\n")[:-1]
    assert len(written) == len(source)
    predicted = []
    for before, after in zip(source, written):
        if not before or before.startswith("-DOCSTART-"):
            assert after == before
        else:
            assert after.startswith(before + " ") and len(after.split()) == len(before.split()) + 1
            predicted.append(after.split()[-1])
    assert predicted == [tag for sentence in task.predict_tags(model, "test") for tag in sentence]
    results = json.load(open(files[1]))
    gold = task.tagged("test").tags
    assert results["f1"] == pytest.approx(f1_score(gold, task.predict_tags(model, "test")))


def test_predict_mode_on_a_file_without_tags_and_in_iob1(trained, tmp_path):
    task, model, model_dir, _ = trained
    test = conll.read_conll(os.path.join(SYNTHETIC, "test.txt"))
    words_only = write(tmp_path / "words.txt", "\n\n".join("\n".join(s) for s in test.words) + "\n")
    iob1 = write(tmp_path / "iob1.txt", "\n\n".join("\n".join(f"{w}\t{t}" for w, t in zip(s, conll.to_iob1(g)))
                                                  for s, g in zip(test.words, test.tags)) + "\n")
    plain = tasks.get("tagging/conll2003", overrides=f"{TINY},task.test_file={words_only}")
    files = plain.predict(model, str(tmp_path / "plain"))
    assert len(files) == 1
    tags = [line.split(" ")[1] for line in open(files[0]).read().split("\n") if line]
    expected = task.predict_tags(model, "test")
    assert tags == [t for s in expected for t in s]
    as_iob1 = tasks.get("tagging/conll2003", overrides=f"{TINY},task.test_file={iob1},task.separator=tab,task.tag_scheme=IOB1")
    iob1_tags = as_iob1.predict_tags(model, "test")
    assert iob1_tags == [conll.to_iob1(s) for s in expected]
    assert json.load(open(as_iob1.predict(model, str(tmp_path / "iob1"))[1]))["f1"] == pytest.approx(
        conll.entity_scores(test.tags, expected).f1
    )


def test_train_binary_prints_a_bad_file_as_one_line(tmp_path):
    bad = write(tmp_path / "train.txt", "EU B-ORG\nrejects\n")
    run = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "train.py"), "--experiment=tagging/conll",
         f"--model_dir={tmp_path / 'run'}", f"--params_override=task.train_file={bad},task.eval_file={bad},"
         f"task.vocab_file={HF_BERT}/vocab.txt"],
        capture_output=True, text=True, cwd=REPO, timeout=300,
    )
    assert run.returncode != 0
    assert "Traceback" not in run.stderr + run.stdout
    assert f"{bad}:2: 1 column(s) in 'rejects'" in run.stderr + run.stdout
    assert not os.path.exists(tmp_path / "run" / "best")


# --- the model ---------------------------------------------------------------------


def test_token_classifier_round_trips_through_save_pretrained(tmp_path, tokenizer):
    from tfplm.tokenizers import BertPreprocessor

    preprocessor = BertPreprocessor(tokenizer, 16)
    model = BertTokenClassifier(
        BertEncoder.from_preset("bert_tiny", vocab_size=tokenizer.vocabulary_size()), 3,
        preprocessor=preprocessor, label_names=["O", "B-X", "I-X"],
    )
    model.save_pretrained(str(tmp_path / "m"))
    loaded = BertTokenClassifier.from_pretrained(str(tmp_path / "m"))
    inputs = preprocessor(tf.constant(["a b c", "d"]))
    assert loaded.label_names == ("O", "B-X", "I-X")
    np.testing.assert_array_equal(loaded(inputs), model(inputs))
    assert model(inputs).shape == (2, 16, 3) and model(inputs).dtype == tf.float32
    fresh = BertTokenClassifier.from_pretrained(HF_BERT, num_classes=5)
    assert fresh.num_classes == 5


# --- serving: raw text in, entities out ----------------------------------------------


def python_entities(model, text):
    """Entities the slow way: the Keras model on the text's pieces, each word's first piece, conll.entities."""
    tokenizer = model.tokenizer
    ids, starts, ends = (t[0].numpy() for t in tokenizer.tokenize_with_offsets(tf.constant([text]), unit="UTF8_CHAR"))
    keep = model.preprocessor.seq_length - 2
    ids, starts, ends = ids[:keep], starts[:keep], ends[:keep]
    word_ids = np.array([[tokenizer.cls_token_id, *ids, tokenizer.sep_token_id]], np.int32)
    logits = np.asarray(model({"input_word_ids": word_ids, "input_mask": np.ones_like(word_ids),
                               "input_type_ids": np.zeros_like(word_ids)}))[0, 1:-1]
    first = [i for i in range(len(ids)) if i == 0 or starts[i] != starts[i - 1]]
    tags = [model.label_names[int(np.argmax(logits[i]))] for i in first]
    return [(text[int(starts[first[a]]):int(ends[first[b - 1]])], kind, int(starts[first[a]]), int(ends[first[b - 1]]))
            for kind, a, b in conll.entities(tags)]


HOSTILE = [
    "",
    "   \t ",
    "Anna Berg visited Port Elling on Monday.",
    "Kestrel Mining said Jon would lead the Ellish delegation",
    "東京で Tarsk United 😀 beat Orvo Bank , 3-1 ! Ilse Varn",
    "Ilse Varn " * 10000,  # 100 KB
]


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    _, model, _, _ = trained
    folder = str(tmp_path_factory.mktemp("export"))
    examples = {"text": HOSTILE[2:5]}
    path = export.saved_model(model, folder, warmup_examples=examples)
    artifact = report_lib.Artifact("saved_model", path, report_lib.saved_model_predict(path), dict(report_lib.SAVED_MODEL_BAR))
    return model, report_lib.build_report(tasks.serving_head(model), [artifact], examples, latency_runs=1)


def test_export_report_compares_entities_with_the_keras_model(exported):
    _, report = exported
    assert report_lib.failures(report) == []
    rows = {row["name"]: row for row in report["artifacts"]}
    assert rows["saved_model"]["agreement"] == 1.0 and rows["saved_model"]["max_abs_diff"] <= 1e-5


def test_compare_counts_texts_whose_entities_or_tflite_tags_differ(exported):
    model, _ = exported
    head = tasks.serving_head(model)
    reference = head.reference({"text": HOSTILE[2:5]})
    changed = {k: np.array(v) for k, v in reference.items()}
    assert head.compare(reference, changed) == {"max_abs_diff": 0.0, "agreement": 1.0}
    changed["end"][0, 0] += 1  # one entity's offset off by one
    assert head.compare(reference, changed)["agreement"] == pytest.approx(2 / 3)
    # A TFLite file: tag probabilities only, padded to its static seq_length.
    probabilities = reference["tag_probabilities"]
    padded = np.pad(probabilities, [(0, 0), (0, 32 - probabilities.shape[1]), (0, 0)], constant_values=0.5)
    assert head.compare(reference, {"tag_probabilities": padded}) == {"max_abs_diff": 0.0, "agreement": 1.0}
    swapped = padded.copy()
    swapped[1, 1] = swapped[1, 1][::-1]  # the second text's first piece gets another tag
    result = head.compare(reference, {"tag_probabilities": swapped})
    pieces = int((reference["tag_ids"] >= 0).sum())
    assert result["agreement"] == pytest.approx(1 - 1 / pieces) and result["max_abs_diff"] > 0


def test_saved_model_returns_entities_whose_offsets_index_the_text(exported, tmp_path):
    model, report = exported
    path = next(row["path"] for row in report["artifacts"] if row["name"] == "saved_model")
    # A fresh process: only the SavedModel and TensorFlow (+ tensorflow_text ops).
    script = (
        "import json, sys, tensorflow as tf, tensorflow_text\n"
        "texts = json.load(open(sys.argv[2]))\n"
        "out = tf.saved_model.load(sys.argv[1]).signatures['serving_default'](text=tf.constant([t.encode() for t in texts]))\n"
        "json.dump({k: v.numpy().tolist() if v.dtype != tf.string else [[x.decode() for x in row] for row in v.numpy()]"
        " if v.shape.rank == 2 else [x.decode() for x in v.numpy()] for k, v in out.items()"
        " if k not in ('tag_probabilities', 'tags', 'tag_ids')}, open(sys.argv[3], 'w'))\n"
    )
    texts = write(tmp_path / "texts.json", json.dumps(HOSTILE))
    result = tmp_path / "out.json"
    subprocess.run([sys.executable, "-c", script, path, texts, str(result)], check=True, timeout=300,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    outputs = json.load(open(result))
    found = 0
    for row, text in enumerate(HOSTILE):
        entities = tagging.entity_list(outputs, row)
        for entity_text, kind, start, end in entities:
            assert text[start:end] == entity_text and kind in ("PER", "LOC", "ORG", "MISC")
        assert outputs["start"][row][len(entities):] == [-1] * (len(outputs["start"][row]) - len(entities))
        assert entities == python_entities(model, text), text[:80]
        found += len(entities)
    assert found >= 4
    assert outputs["num_entities"][:2] == [0, 0]
    assert outputs["pieces_cut"][-1] > 0 and outputs["pieces_cut"][:5] == [0] * 5


def test_invalid_utf8_gets_offsets_into_the_repaired_text(exported):
    model, _ = exported
    head = tasks.serving_head(model)
    raw = b"Anna Berg \xff visited Port Elling"
    outputs = {k: v.numpy() for k, v in head.predict(text=tf.constant([raw])).items()}
    repaired = raw.decode("utf-8", errors="replace")
    for entity_text, _, start, end in tagging.entity_list(outputs, 0):
        assert repaired[start:end] == entity_text


@pytest.mark.parametrize("scheme", ["IOB2", "BIOES"])
def test_in_graph_entities_equal_conlleval_on_random_tags(tokenizer, scheme):
    from tfplm.tokenizers import BertPreprocessor

    names = ["O"] + [f"{p}-{t}" for t in ("LOC", "PER") for p in ("BIES" if scheme == "BIOES" else "BI")]
    model = BertTokenClassifier(
        BertEncoder.from_preset("bert_tiny", vocab_size=tokenizer.vocabulary_size()), len(names),
        preprocessor=BertPreprocessor(tokenizer, 32), label_names=names,
    )
    head = tasks.serving_head(model)
    rng = random.Random(7)
    texts, starts, ends, rows, expected = [], [], [], [], []
    for _ in range(40):
        tags = [rng.choice(names) for _ in range(rng.randint(0, 9))]
        pieces = [rng.randint(1, 2) for _ in tags]  # words of one or two pieces
        text = " ".join(f"w{i}" for i in range(len(tags)))
        offsets = [(3 * i, 3 * i + 2) for i in range(len(tags))]
        texts.append(text)
        starts.append([offsets[i][0] for i, n in enumerate(pieces) for _ in range(n)])
        ends.append([offsets[i][1] for i, n in enumerate(pieces) for _ in range(n)])
        # [CLS], then each piece: a word's first piece carries its tag, the others something else.
        rows.append([0] + [names.index(t) if j == 0 else rng.randrange(len(names)) for t, n in zip(tags, pieces) for j in range(n)])
        expected.append([(text[offsets[a][0]:offsets[b - 1][1]], kind, offsets[a][0], offsets[b - 1][1])
                         for kind, a, b in conll.entities(tags)])
    width = max(map(len, rows))
    probabilities = np.zeros((len(rows), width + 1, len(names)), np.float32)
    for r, row in enumerate(rows):
        probabilities[r, np.arange(len(row)), row] = 1.0
    outputs = head._entities(tf.constant(texts), tf.ragged.constant(starts, tf.int64), tf.ragged.constant(ends, tf.int64),
                             tf.constant(probabilities))
    outputs = {k: v.numpy() for k, v in outputs.items()}
    assert sum(map(len, expected)) > 20
    for r in range(len(texts)):
        assert tagging.entity_list(outputs, r) == expected[r], r
