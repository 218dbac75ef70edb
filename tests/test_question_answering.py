"""Extractive question answering (issue 13): SQuAD's reader, windows, spans, metric, task and export.

Numbers are checked against references: SQuAD's official evaluate-v1.1.py (run
on a predictions file, full data) and hand-computed cases (fresh clone); the
windows, max-context flags and span choice against a line-for-line Python
transcription of google-research/bert's run_squad.py written here.
"""

import collections
import json
import os
import random
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tfplm import export, tasks
from tfplm.config import ConfigError
from tfplm.data import squad
from tfplm.models import BertEncoder, BertSpanLabeler
from tfplm.tasks import question_answering
from tfplm.tasks.serving import UnsupportedExport
from tfplm.tokenizers import BertPreprocessor, WordPieceTokenizer
from tfplm.training import trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLE = os.path.join(REPO, "tests", "data", "squad_sample.json")
VOCAB = os.path.join(REPO, "tests", "fixtures", "hf_bert", "vocab.txt")
TINY = (
    f"task.eval_file={SAMPLE},task.train_articles=0-1,task.eval_articles=2-,task.vocab_file={VOCAB},"
    "task.max_seq_length=64,task.max_query_length=16,task.doc_stride=32,task.global_batch_size=16,"
    "trainer.train_steps=2,trainer.steps_per_loop=2,trainer.eval_steps=1,runtime.seed=1"
)
WORDS = "the quick brown fox jumps over a lazy dog and then runs away from hunter".split()


@pytest.fixture(scope="module")
def tokenizer():
    return WordPieceTokenizer(VOCAB)


def tiny_model(tokenizer, seq_length=64, **settings):
    settings = {"max_query_length": 16, "doc_stride": 32, **settings}
    preprocessor = BertPreprocessor(tokenizer, seq_length, pair=True)
    encoder = BertEncoder.from_preset("bert_tiny", vocab_size=tokenizer.vocabulary_size(), max_length=64)
    return BertSpanLabeler(encoder, preprocessor=preprocessor, **settings)


# --- the reader ------------------------------------------------------------------------


def test_reader_splits_the_sample_by_article():
    train, evaluation = squad.read_squad(SAMPLE, "0-1"), squad.read_squad(SAMPLE, "2-")
    assert (len(train), len(evaluation), train.articles, evaluation.articles) == (65, 20, [0, 1], [2, 3])
    example = train.examples[0]
    assert example.context[slice(*example.answer_span)] == example.answers[0] == "Denver Broncos"


@pytest.mark.full_data
def test_reader_splits_the_dev_file_as_the_issue_counts(shared_data_dir):
    path = shared_data_dir / "squad" / "dev-v1.1.json"
    assert len(squad.read_squad(path, "0-31")) == 7235
    assert len(squad.read_squad(path, "32-")) == 3335
    assert len(squad.read_squad(path)) == 10570


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"data": [', "line 1: not JSON (Expecting value)"),
        ('{"version": "1.1"}', 'expected a JSON object with a "data" list of articles'),
        (
            '{"data": [{"paragraphs": [{"context": "ab", "qas": [{"id": "q", "question": "?", "answers": []}]}]}]}',
            "article 0 paragraph 0 question 'q': no answers and not \"is_impossible\"",
        ),
        (
            '{"data": [{"paragraphs": [{"context": "ab", "qas": [{"id": "q", "question": "?", '
            '"answers": [{"text": "a", "answer_start": 7}]}]}]}]}',
            "needs a \"text\" and an \"answer_start\" in 0..2",
        ),
    ],
)
def test_a_bad_file_fails_in_one_line_naming_file_and_place(tmp_path, content, message):
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError) as error:
        squad.read_squad(path)
    text = str(error.value)
    assert text.startswith(f"SQuAD file {str(path)!r}") and message in text and "\n" not in text


def test_bad_article_ranges_name_the_key():
    task = tasks.get("squad/v1.1", overrides=TINY + ",task.train_articles=3-9")
    with pytest.raises(ConfigError, match=r"^task.train_articles='3-9' is not within the file's articles 0-3 \(of "):
        task.data("train")
    with pytest.raises(ConfigError, match="max_seq_length=16 leaves no room for context"):
        tasks.get("squad/v1.1", overrides=TINY + ",task.max_seq_length=16")
    with pytest.raises(ConfigError, match="task.eval_file is empty; set it to a SQuAD JSON file"):
        tasks.get("squad/v1.1").data("train")


# --- the metric ------------------------------------------------------------------------


def test_metric_matches_hand_computed_cases():
    examples = [
        squad.SquadExample("a", "q", "c", ("The Denver Broncos", "Broncos")),
        squad.SquadExample("b", "q", "c", ("Santa Clara, California",)),
        squad.SquadExample("c", "q", "c", ("1990s",)),
        squad.SquadExample("d", "q", "c", ("x",)),
    ]
    predictions = {"a": "denver  broncos!", "b": "Clara California stadium", "c": "the 1990s"}
    # a: exact after normalisation; b: P 2/3 R 2/3 -> F1 2/3 ("santa clara california");
    # c: exact ("the" is an article); d: unanswered -> 0.
    metrics = squad.squad_metrics(examples, predictions)
    assert metrics == {"exact_match": 50.0, "f1": pytest.approx(100 * (1 + 2 / 3 + 1) / 4), "total": 4}
    assert squad.normalize_answer("The  Eagles, an  ANSWER.") == "eagles answer"


def test_metric_of_squad_2_scores_unanswerable_questions_apart():
    examples = [
        squad.SquadExample("a", "q", "c", ("Broncos",), (0,)),
        squad.SquadExample("b", "q", "c", (), (), is_impossible=True),
        squad.SquadExample("c", "q", "c", (), (), is_impossible=True),
    ]
    metrics = squad.squad_metrics(examples, {"a": "", "b": "", "c": "Broncos"})
    assert metrics == {
        "exact_match": pytest.approx(100 / 3),
        "f1": pytest.approx(100 / 3),
        "total": 3,
        "HasAns_exact": 0.0,
        "HasAns_f1": 0.0,
        "HasAns_total": 1,
        "NoAns_exact": 50.0,
        "NoAns_f1": 50.0,
        "NoAns_total": 2,
    }


@pytest.mark.full_data
def test_metric_equals_the_official_script_on_a_predictions_file(shared_data_dir, tmp_path):
    path = shared_data_dir / "squad" / "dev-v1.1.json"
    data = squad.read_squad(path)
    rng = random.Random(0)
    predictions = {}
    for example in data.examples:  # exact answers, partial ones, wrong ones, none
        choice = rng.random()
        words = example.context.split()
        if choice < 0.3:
            predictions[example.qas_id] = rng.choice(example.answers)
        elif choice < 0.6:
            answer = rng.choice(example.answers).split()
            predictions[example.qas_id] = " ".join(answer[: max(1, len(answer) - 1)] + words[:2])
        elif choice < 0.95:
            start = rng.randrange(len(words))
            predictions[example.qas_id] = " ".join(words[start : start + rng.randint(1, 6)])
    predictions_file = tmp_path / "predictions.json"
    predictions_file.write_text(json.dumps(predictions))
    script = shared_data_dir / "squad" / "evaluate-v1.1.py"
    result = subprocess.run(
        [sys.executable, str(script), str(path), str(predictions_file)], capture_output=True, text=True, check=True
    )
    official = json.loads(result.stdout)
    ours = squad.squad_metrics(data.examples, predictions)
    assert (ours["exact_match"], ours["f1"]) == (official["exact_match"], official["f1"])  # identical floats


# --- windows and spans against run_squad.py ----------------------------------------------------


def run_squad_windows(question_tokens, context_tokens, seq_length, doc_stride, max_query_length):
    """run_squad.py's doc spans and _check_is_max_context (one window for an empty context)."""
    room = seq_length - min(question_tokens, max_query_length) - 3
    spans, start = [], 0
    while start < context_tokens:
        length = min(context_tokens - start, room)
        spans.append((start, length))
        if start + length == context_tokens:
            break
        start += min(length, doc_stride)
    spans = spans or [(0, 0)]
    flags = []
    for number, (start, length) in enumerate(spans):
        window = []
        for token in range(start, start + length):
            best_score, best = None, None
            for index, (other, size) in enumerate(spans):
                end = other + size - 1
                if other <= token <= end:
                    score = min(token - other, end - token) + 0.01 * size
                    if best_score is None or score > best_score:
                        best_score, best = score, index
            window.append(best == number)
        flags.append(window)
    return spans, flags


@pytest.mark.parametrize("seq_length, doc_stride, max_query_length", [(32, 8, 8), (24, 5, 6), (40, 128, 10), (20, 3, 16)])
def test_windows_and_max_context_are_run_squads(tokenizer, seq_length, doc_stride, max_query_length):
    rng = random.Random(seq_length)
    questions = [" ".join(rng.choices(WORDS, k=rng.randint(0, 12))) for _ in range(6)]
    contexts = [" ".join(rng.choices(WORDS, k=rng.randint(0, 90))) for _ in range(6)]
    windows = squad.make_windows(
        tokenizer, tf.constant(questions), tf.constant(contexts),
        seq_length=seq_length, doc_stride=doc_stride, max_query_length=max_query_length,
    )
    rows = windows["example_index"].numpy()
    ids, index, flags = (windows[k].numpy() for k in ("input_word_ids", "token_index", "max_context"))
    for b, (question, context) in enumerate(zip(questions, contexts)):
        question_ids = tokenizer.tokenize(question).numpy()[:max_query_length]
        context_ids = tokenizer.tokenize(context).numpy()
        spans, expected_flags = run_squad_windows(len(question_ids), len(context_ids), seq_length, doc_stride, max_query_length)
        mine = np.flatnonzero(rows == b)
        assert len(mine) == len(spans)
        for row, (start, length), expected in zip(mine, spans, expected_flags):
            offset = len(question_ids) + 2
            assert ids[row, : offset + length + 1].tolist() == [
                tokenizer.cls_token_id, *question_ids, tokenizer.sep_token_id, *context_ids[start : start + length], tokenizer.sep_token_id
            ]
            assert index[row, offset : offset + length].tolist() == list(range(start, start + length))
            assert flags[row].tolist() == [False] * offset + expected + [False] * (len(flags[row]) - offset - length)


def run_squad_answer(windows, starts, ends, context, example, n_best, max_length):
    """run_squad.py's write_predictions for one question (first of equal scores)."""
    best = None
    for row in np.flatnonzero(windows["example_index"] == example):
        start_order = sorted(range(len(starts[row])), key=lambda i: -starts[row][i])[:n_best]
        end_order = sorted(range(len(ends[row])), key=lambda i: -ends[row][i])[:n_best]
        for i in start_order:
            for j in end_order:
                if windows["token_index"][row, i] < 0 or windows["token_index"][row, j] < 0:
                    continue
                if not windows["max_context"][row, i] or j < i or j - i + 1 > max_length:
                    continue
                score = float(np.float32(starts[row][i]) + np.float32(ends[row][j]))
                if best is None or score > best[0]:
                    best = (score, windows["token_starts"][row, i], windows["token_ends"][row, j])
    return "" if best is None else context[best[1] : best[2]]


@pytest.mark.parametrize("n_best, max_length", [(20, 30), (3, 4)])
def test_best_spans_choose_as_run_squad(tokenizer, n_best, max_length):
    rng = random.Random(n_best)
    contexts = [" ".join(rng.choices(WORDS, k=rng.randint(1, 70))) for _ in range(8)] + [""]
    questions = ["who ran away"] * len(contexts)
    windows = squad.make_windows(
        tokenizer, tf.constant(questions), tf.constant(contexts), seq_length=32, doc_stride=8, max_query_length=8
    )
    shape = windows["input_word_ids"].shape
    starts = np.random.default_rng(n_best).normal(size=shape).astype(np.float32)
    ends = np.random.default_rng(n_best + 1).normal(size=shape).astype(np.float32)
    spans = squad.best_spans(
        windows, starts, ends, tf.constant(contexts), num_examples=len(contexts), n_best_size=n_best, max_answer_length=max_length
    )
    numpy_windows = {k: v.numpy() for k, v in windows.items()}
    answers = [a.decode() for a in spans["answer"].numpy()]
    for b, context in enumerate(contexts):
        assert answers[b] == run_squad_answer(numpy_windows, starts, ends, context, b, n_best, max_length)
        assert context[spans["start"][b] : spans["end"][b]] == answers[b]
    assert answers[-1] == "" and any(answers)


def test_squad_2_answers_empty_when_the_null_score_wins(tokenizer):
    windows = squad.make_windows(tokenizer, tf.constant(["who"]), tf.constant(["the fox"]), seq_length=16, doc_stride=8, max_query_length=4)
    length = windows["input_word_ids"].shape[1]
    start = np.full([1, length], -5.0, np.float32)
    end = start.copy()
    fox = int(np.flatnonzero(windows["token_index"].numpy()[0] == 1)[0])
    start[0, fox] = end[0, fox] = 1.0  # span "fox": score 2
    for null, expected in [(0.9, "fox"), (1.1, "")]:  # null score 2 * null
        start[0, 0] = end[0, 0] = null
        spans = squad.best_spans(windows, start, end, tf.constant(["the fox"]), num_examples=1, version_2_with_negative=True)
        assert spans["answer"].numpy()[0].decode() == expected
        assert spans["score"].numpy()[0] == pytest.approx(2.0 if expected else 2 * null)


def test_answers_are_the_contexts_own_characters_with_cjk_and_emoji(tokenizer):
    context = "Der Fuchs 🦊 läuft — 東京 in 1990s."
    windows = squad.make_windows(tokenizer, tf.constant(["wo"]), tf.constant([context]), seq_length=40, doc_stride=8, max_query_length=4)
    starts, ends, index = (windows[k].numpy()[0] for k in ("token_starts", "token_ends", "token_index"))
    words = {context[s:e] for s, e, i in zip(starts, ends, index) if i >= 0}
    assert {"Der", "Fuchs", "🦊", "läuft", "—", "東", "京", "in", "1990s", "."} == words


def test_training_labels_point_at_the_answer_or_cls(tokenizer):
    data = squad.read_squad(SAMPLE)
    examples = data.examples
    contexts = tf.constant([e.context for e in examples])
    spans = [e.answer_span for e in examples]
    windows = squad.make_windows(
        tokenizer, tf.constant([e.question for e in examples]), contexts, seq_length=48, doc_stride=16, max_query_length=12
    )
    first, last = squad.answer_token_span(tokenizer, contexts, tf.constant([s for s, _ in spans], tf.int64), tf.constant([e for _, e in spans], tf.int64))
    start, end = (p.numpy() for p in squad.answer_positions(windows, first, last))
    rows, token_starts, token_ends = (windows[k].numpy() for k in ("example_index", "token_starts", "token_ends"))
    labeled = collections.Counter()
    for row, b in enumerate(rows):
        if start[row] == 0:
            assert end[row] == 0
            continue
        labeled[b] += 1
        text = examples[b].context[token_starts[row, start[row]] : token_ends[row, end[row]]]
        assert examples[b].answers[0] in text and len(text) <= len(examples[b].answers[0]) + 2, (text, examples[b].answers[0])
    assert len(labeled) == len(examples)  # every answer is inside some window
    assert (start == 0).sum() > 0  # and windows without it point at [CLS]


# --- the model, task and serving ------------------------------------------------------------


def test_span_labeler_round_trips_with_its_settings(tokenizer, tmp_path):
    model = tiny_model(tokenizer, doc_stride=7, max_answer_length=5, version_2_with_negative=True)
    model.save_pretrained(str(tmp_path / "qa"))
    loaded = BertSpanLabeler.from_pretrained(str(tmp_path / "qa"))
    assert (loaded.doc_stride, loaded.max_answer_length, loaded.version_2_with_negative) == (7, 5, True)
    for a, b in zip(model.weights, loaded.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    encoder = BertEncoder.from_pretrained(str(tmp_path / "qa"))  # the span head is reported unused
    assert encoder.hidden_size == model.encoder.hidden_size


def test_train_eval_predict_and_a_saved_model_answering_in_a_fresh_process_as_the_keras_path(tmp_path):
    task = tasks.get("squad/v1.1", overrides=TINY)
    results = trainer.run_experiment(task, "train_and_eval", str(tmp_path), progress=None)
    saved = json.loads((tmp_path / "eval_results.json").read_text())
    assert {"exact_match", "f1"} <= set(saved["metrics"]) and saved["metrics"]["f1"] == results["metrics"]["f1"]
    assert saved["data"]["questions"] == 20 and saved["data"]["articles"] == "2-"

    # --mode=predict: SQuAD's submission format, every question, answers from the contexts.
    files = trainer.run_experiment(task, "predict", str(tmp_path), progress=None)["files"]
    predictions = json.loads(open(files[0]).read())
    examples = task.data("validation").examples
    assert list(predictions) == [e.qas_id for e in examples]
    assert all(a in e.context for e, a in zip(examples, predictions.values()))
    assert squad.squad_metrics(examples, predictions)["f1"] == pytest.approx(saved["metrics"]["f1"])

    # The SavedModel of the trained model answers like the Keras path, also in a fresh process.
    model = trainer.load_trained(task, str(tmp_path))
    held_out = task.held_out_examples(6)
    report = export.export_model(model, str(tmp_path / "export"), held_out, formats=("saved_model",), model_name="squad")
    row = report["artifacts"][1]
    assert row["failures"] == [] and row["agreement"] == 1.0 and row["answer_f1"] == 100.0
    script = (
        "import json, sys, tensorflow as tf, tensorflow_text\n"
        "served = tf.saved_model.load(sys.argv[1]).signatures['serving_default']\n"
        "q, c = json.load(open(sys.argv[2]))\n"
        "out = served(question=tf.constant(q), context=tf.constant(c))\n"
        "print(json.dumps([a.decode() for a in out['answer'].numpy()]))\n"
    )
    inputs = tmp_path / "inputs.json"
    inputs.write_text(json.dumps([held_out["question"], held_out["context"]]))
    result = subprocess.run(
        [sys.executable, "-c", script, row["path"], str(inputs)], capture_output=True, text=True, check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert json.loads(result.stdout.strip().splitlines()[-1]) == list(predictions.values())[:6]


def test_hostile_inputs_get_well_formed_answers(tokenizer):
    head = question_answering.QuestionAnsweringHead(tiny_model(tokenizer))
    long_context = ("Der Fuchs läuft 🦊 東京. " * 4000)[:100_000]
    questions = ["", "who runs?", "who runs?", "¿quién? 🦊", "the the the", "\x00\ud800".encode("utf-8", "surrogatepass").decode("utf-8", "replace")]
    contexts = ["the fox runs", "", long_context, "東京の狐 🦊 runs", "no answer here at all", "\x00bad\tbytes"]
    outputs = head.predict(tf.constant(questions), tf.constant(contexts))
    answers = [a.decode("utf-8") for a in outputs["answer"].numpy()]
    assert len(answers) == len(questions) and answers[1] == ""
    for context, answer, start, end in zip(contexts, answers, outputs["start"].numpy(), outputs["end"].numpy()):
        assert context[start:end] == answer
    assert np.isfinite(outputs["score"].numpy()).all()
    empty = head.predict(tf.constant([], tf.string), tf.constant([], tf.string))
    assert empty["answer"].shape == (0,)


def test_tflite_ids_file_gives_the_first_windows_logits(tmp_path, tokenizer):
    model = tiny_model(tokenizer, seq_length=32)
    head = question_answering.QuestionAnsweringHead(model)
    with pytest.raises(UnsupportedExport, match="flavour 'ids' only"):
        head.tflite_function("text")
    path = export.tflite(model, str(tmp_path / "qa.tflite"))
    runner = export.TFLiteModel(path)
    examples = {"question": ["who runs?"], "context": ["the fox runs far away"]}
    outputs = runner(examples["question"], examples["context"])
    comparison = head.compare(head.reference(examples), outputs)
    assert comparison["max_abs_diff"] < 1e-4
    metadata = json.loads(open(path[: -len(".tflite")] + ".json").read())
    assert metadata["doc_stride"] == 32 and "n_best_size" in metadata["postprocessing"]


def test_windows_and_offsets_equal_the_transformers_references_on_real_squad_text(tokenizer):
    """tools/reference_squad.py builds windows with Hugging Face's tokenizer: same ids, same answer characters."""
    transformers = pytest.importorskip("transformers")
    sys.path.insert(0, os.path.join(REPO, "tools"))
    import reference_squad

    hf_tokenizer = transformers.PreTrainedTokenizerFast(tokenizer_file=os.path.join(REPO, "tests", "fixtures", "hf_bert", "tokenizer.json"))
    hf_tokenizer.cls_token, hf_tokenizer.sep_token = "[CLS]", "[SEP]"
    examples = squad.read_squad(SAMPLE).examples
    reference = reference_squad.make_windows(hf_tokenizer, examples, 64, 24, 16, train=True)
    ours = squad.make_windows(
        tokenizer, tf.constant([e.question for e in examples]), tf.constant([e.context for e in examples]),
        seq_length=64, doc_stride=24, max_query_length=16,
    )
    spans = [e.answer_span for e in examples]
    first, last = squad.answer_token_span(
        tokenizer, tf.constant([e.context for e in examples]), tf.constant([s for s, _ in spans], tf.int64), tf.constant([e for _, e in spans], tf.int64)
    )
    start, end = (p.numpy() for p in squad.answer_positions(ours, first, last))
    ids, starts, ends, flags = (ours[k].numpy() for k in ("input_word_ids", "token_starts", "token_ends", "max_context"))
    assert len(reference) == len(ids)
    for row, window in enumerate(reference):
        n = len(window["input_ids"])
        assert ids[row, :n].tolist() == window["input_ids"]
        positions = sorted(window["token"])
        assert [starts[row, p] for p in positions] == [window["char_start"][p] for p in positions]
        assert [ends[row, p] for p in positions] == [window["char_end"][p] for p in positions]
        assert [bool(flags[row, p]) for p in positions] == [window["max_context"][p] for p in positions]
        assert (start[row], end[row]) == (window["start_position"], window["end_position"])


def test_squad_2_trains_unanswerable_questions_on_cls_and_scores_them_apart(tmp_path):
    data = {
        "version": "v2.0",
        "data": [
            {"paragraphs": [{"context": "The fox runs far away from the hunter.", "qas": [
                {"id": "a", "question": "Who runs?", "answers": [{"text": "The fox", "answer_start": 0}], "is_impossible": False},
                {"id": "b", "question": "Who flies?", "answers": [], "is_impossible": True},
            ]}]},
            {"paragraphs": [{"context": "A dog sleeps.", "qas": [
                {"id": "c", "question": "Who sleeps?", "answers": [{"text": "A dog", "answer_start": 0}], "is_impossible": False},
                {"id": "d", "question": "Who swims?", "answers": [], "is_impossible": True},
            ]}]},
        ],
    }
    path = tmp_path / "v2.json"
    path.write_text(json.dumps(data))
    task = tasks.get(
        "squad/v2.0",
        overrides=f"task.eval_file={path},task.train_articles=0,task.eval_articles=1,task.vocab_file={VOCAB},"
        "task.max_seq_length=32,task.max_query_length=8,task.doc_stride=8",
    )
    windows = task.windows("train")
    assert windows["start_positions"][1] == windows["end_positions"][1] == 0  # "b": [CLS]
    assert windows["start_positions"][0] > 0  # "a": the answer
    model = task.build_model()
    assert model.version_2_with_negative
    metrics = task.evaluate_predictions(model)
    assert {"exact_match", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1"} <= set(metrics)
