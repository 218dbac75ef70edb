"""Distillation (`tasks/distillation.py`): the loss against its definition, the
student initialisations, bad configs, and a tiny teacher distilled end to end
(tests/fixtures/sst2_teacher_tiny, made by tools/make_distillation_fixture.py)."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfplm import tasks
from tfplm.config import ConfigError
from tfplm.models import BertClassifier, BertEncoder, from_pretrained
from tfplm.tasks.distillation import (
    Distiller, keep_tokens, nearest_words, project_embeddings, slice_encoder, with_augmented_copies,
)
from tfplm.tokenizers import SPECIAL_TOKENS
from tfplm.training import trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO = os.path.join(REPO, "tools", "demo_data")
TEACHER = os.path.join(REPO, "tests", "fixtures", "sst2_teacher_tiny")
HF_BERT = os.path.join(REPO, "tests", "fixtures", "hf_bert")
TINY = f"task.glue_dir={DEMO},task.teacher={TEACHER},task.seq_length=32,task.global_batch_size=16,runtime.seed=1,runtime.mixed_precision=float32"


def _classifier(num_layers=2, hidden=32, num_classes=2, seed=0):
    keras.utils.set_random_seed(seed)
    encoder = BertEncoder(
        vocab_size=50, hidden_size=hidden, num_layers=num_layers, num_heads=2, intermediate_size=2 * hidden,
        max_length=16, dropout=0.0, attention_dropout=0.0,
    )
    model = BertClassifier(encoder, num_classes, dropout=0.0)
    for weight in model.head.weights:  # logits far from 0, so that the loss terms differ clearly
        weight.assign(30 * weight)
    return model


def _batch(seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 50, size=(4, 8)).astype("int32")
    mask = np.ones_like(ids)
    mask[1, 5:] = 0
    mask[3, 3:] = 0
    return {"input_word_ids": ids * mask, "input_mask": mask, "input_type_ids": np.zeros_like(ids)}, np.array([0, 1, 1, 0])


def _log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


@pytest.mark.parametrize("alpha,temperature", [(0.5, 2.0), (0.0, 1.0), (1.0, 4.0), (0.2, 5.0)])
def test_training_loss_is_alpha_ce_plus_t2_kl(alpha, temperature):
    teacher, student = _classifier(seed=1), _classifier(num_layers=1, hidden=16, seed=2)
    inputs, labels = _batch()
    t, s = (np.asarray(m(inputs, training=False)) for m in (teacher, student))
    ce_rows = -_log_softmax(s)[np.arange(4), labels]
    ce = np.mean(ce_rows)
    log_t, log_s = _log_softmax(t / temperature), _log_softmax(s / temperature)
    kl = np.mean(np.sum(np.exp(log_t) * (log_t - log_s), -1))
    expected = alpha * ce + (1 - alpha) * temperature**2 * kl

    distiller = Distiller(student, teacher, alpha=alpha, temperature=temperature)
    distiller.compile(optimizer=keras.optimizers.SGD(0.0), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    loss = distiller.train_on_batch(inputs, labels, return_dict=True)["loss"]
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    # Evaluation scores the student on the labels alone.
    np.testing.assert_allclose(distiller.evaluate(inputs, labels, verbose=0, return_dict=True)["loss"], ce, rtol=1e-5)
    # Augmented copies (weights 2 for the originals, 0 for the copies): the labels' term is the
    # originals' mean, the teacher's term the mean over all rows.
    weights = np.array([2.0, 2.0, 0.0, 0.0])
    loss = distiller.train_on_batch(inputs, labels, sample_weight=weights, return_dict=True)["loss"]
    np.testing.assert_allclose(loss, alpha * np.mean(ce_rows[:2]) + (1 - alpha) * temperature**2 * kl, rtol=1e-5)


def test_hidden_state_loss_is_the_masked_mse_of_projected_student_blocks():
    teacher, student = _classifier(num_layers=4, hidden=32, seed=1), _classifier(num_layers=2, hidden=16, seed=2)
    inputs, labels = _batch()
    distiller = Distiller(student, teacher, alpha=1.0, temperature=1.0, hidden_weight=3.0)
    assert distiller.layer_map() == [1, 3]
    kernel, bias = (np.asarray(w) for w in distiller.projection.weights)
    student_blocks = [np.asarray(x) for x in student.encoder(inputs)["encoder_outputs"]]
    teacher_blocks = [np.asarray(x) for x in teacher.encoder(inputs)["encoder_outputs"]]
    mask = inputs["input_mask"].astype(bool)
    errors = [np.mean(((student_blocks[i] @ kernel + bias - teacher_blocks[j]) ** 2)[mask]) for i, j in enumerate([1, 3])]
    s = np.asarray(student(inputs))
    ce = -np.mean(_log_softmax(s)[np.arange(4), labels])

    distiller.compile(optimizer=keras.optimizers.SGD(0.0), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    loss = distiller.train_on_batch(inputs, labels, return_dict=True)["loss"]
    np.testing.assert_allclose(loss, ce + 3.0 * np.mean(errors), rtol=1e-5)


def test_a_regression_student_learns_the_teachers_score():
    teacher, student = _classifier(num_classes=1, seed=1), _classifier(num_layers=1, hidden=16, num_classes=1, seed=2)
    inputs, _ = _batch()
    scores = np.array([0.5, 1.0, 2.0, 0.0], np.float32)
    t, s = (np.asarray(m(inputs))[:, 0] for m in (teacher, student))
    distiller = Distiller(student, teacher, alpha=0.25, temperature=3.0)
    distiller.compile(optimizer=keras.optimizers.SGD(0.0), loss=keras.losses.MeanSquaredError())
    loss = distiller.train_on_batch(inputs, scores, return_dict=True)["loss"]
    np.testing.assert_allclose(loss, 0.25 * np.mean((s - scores) ** 2) + 0.75 * np.mean((s - t) ** 2), rtol=1e-5)


def test_the_teacher_does_not_change_and_the_student_does():
    teacher, student = _classifier(seed=1), _classifier(num_layers=1, hidden=16, seed=2)
    before_teacher, before_student = teacher.get_weights(), student.get_weights()
    distiller = Distiller(student, teacher, alpha=0.5, temperature=2.0, hidden_weight=1.0)
    distiller.compile(optimizer=keras.optimizers.Adam(1e-2), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    distiller.train_on_batch(*_batch())
    assert all(np.array_equal(a, b) for a, b in zip(before_teacher, teacher.get_weights()))
    assert not all(np.array_equal(a, b) for a, b in zip(before_student, student.get_weights()))


def test_a_student_sliced_to_every_layer_is_the_teacher():
    teacher = _classifier(num_layers=4, seed=1).encoder
    inputs, _ = _batch()
    full = slice_encoder(teacher, 4)
    np.testing.assert_array_equal(full(inputs)["sequence_output"], teacher(inputs)["sequence_output"])
    half = slice_encoder(teacher, 2)
    assert half.num_layers == 2
    for block, index in zip(half.blocks, (1, 3)):
        assert all(np.array_equal(a, b) for a, b in zip(block.get_weights(), teacher.blocks[index].get_weights()))
    with pytest.raises(ConfigError, match="task.student_layers=5; the teacher has 4 blocks"):
        slice_encoder(teacher, 5)


def test_projected_embeddings_are_the_teachers_principal_components():
    teacher = _classifier(hidden=32, seed=1).encoder
    student = _classifier(hidden=8, seed=2).encoder
    project_embeddings(teacher, student)
    words = next(np.asarray(w) for w in teacher.embedding.weights if w.path.endswith("token_embedding/embeddings"))
    projected = next(np.asarray(w) for w in student.embedding.weights if w.path.endswith("token_embedding/embeddings"))
    centred = words - words.mean(0)
    # Columns: uncorrelated, in decreasing variance, holding the top singular values' variance.
    covariance = projected.T @ projected
    np.testing.assert_allclose(covariance - np.diag(np.diag(covariance)), 0, atol=1e-3)
    singular = np.linalg.svd(centred, compute_uv=False)
    np.testing.assert_allclose(np.sqrt(np.diag(covariance)), singular[:8], rtol=1e-4)
    wide = _classifier(hidden=64, seed=3).encoder
    with pytest.raises(ConfigError, match=r"the student \(64 wide\) is wider than the teacher \(32\)"):
        project_embeddings(teacher, wide)


def test_a_smaller_student_vocabulary_tokenizes_the_training_data_as_the_teacher():
    task = tasks.get("distill/sst2", overrides=f"{TINY},task.student_vocabulary_size=760")
    distiller = task.build_model()
    teacher_vocabulary = task.preprocessor.tokenizer.get_vocabulary()
    student_vocabulary = distiller.student.tokenizer.get_vocabulary()
    assert len(student_vocabulary) == 760 < len(teacher_vocabulary)
    assert student_vocabulary == [teacher_vocabulary[i] for i in task.kept_token_ids]
    singles = [t for t in teacher_vocabulary if t in SPECIAL_TOKENS or len(t.removeprefix("##")) == 1]
    assert set(singles) <= set(student_vocabulary)
    # What the data needs, then the teacher's first other tokens.
    texts = tf.constant(task.examples("train").texts)
    needed = set(task.preprocessor.tokenizer.tokenize(texts).flat_values.numpy().tolist())
    needed |= {teacher_vocabulary.index(t) for t in singles}
    others = [i for i in range(len(teacher_vocabulary)) if i not in needed]
    assert task.kept_token_ids == sorted(needed | set(others[: 760 - len(needed)]))
    texts = tf.constant(task.examples("train").texts)
    teacher_ids = task.preprocessor.tokenizer.tokenize(texts)
    student_ids = distiller.student.tokenizer.tokenize(texts)
    np.testing.assert_array_equal(distiller.token_map[teacher_ids.flat_values.numpy()], student_ids.flat_values.numpy())
    np.testing.assert_array_equal(teacher_ids.row_lengths(), student_ids.row_lengths())
    # Evaluation batches are the student's own tokenization, training batches the teacher's.
    assert task.split_preprocessor("validation") is distiller.student.preprocessor
    assert task.split_preprocessor("train") is task.preprocessor


def test_a_student_vocabulary_smaller_than_the_data_needs_is_refused_with_the_size_it_needs():
    task = tasks.get("distill/sst2", overrides=f"{TINY},task.student_vocabulary_size=100")
    with pytest.raises(ConfigError, match=r"task.student_vocabulary_size=100, but .* need \d+ of the teacher's tokens; set at least"):
        task.build_model()


def test_a_student_keeping_some_tokens_reads_them_as_the_full_one_and_the_distiller_maps_them():
    teacher, student = _classifier(seed=1), _classifier(num_layers=1, hidden=16, seed=2)
    kept = [0, 1, 2, 3, 4] + list(range(10, 50, 2))
    token_map = np.full(50, 1, np.int32)
    token_map[kept] = np.arange(len(kept))
    trimmed = BertClassifier(keep_tokens(student.encoder, kept), 2, dropout=0.0)
    trimmed.head.set_weights(student.head.get_weights())
    inputs, _ = _batch()
    inputs["input_word_ids"] = np.asarray(kept)[inputs["input_word_ids"] % len(kept)] * inputs["input_mask"]
    mapped = {**inputs, "input_word_ids": token_map[inputs["input_word_ids"]]}
    np.testing.assert_allclose(trimmed(mapped), student(inputs), atol=1e-6)
    distiller = Distiller(trimmed, teacher, token_map=token_map)
    np.testing.assert_allclose(distiller(inputs, training=True), student(inputs), atol=1e-6)
    with pytest.raises(ValueError, match="token_map has 49 entries; the teacher's vocabulary has 50"):
        Distiller(trimmed, teacher, token_map=token_map[:49])


def test_nearest_words_are_the_other_words_of_largest_cosine():
    rng = np.random.default_rng(0)
    embeddings = rng.normal(size=(40, 8))
    words = np.arange(5, 40, 2)
    neighbors = nearest_words(embeddings, words, 3)
    unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)
    for word in words:
        others = [w for w in words if w != word]
        expected = sorted(others, key=lambda w: -unit[word] @ unit[w])[:3]
        assert sorted(neighbors[word]) == sorted(expected)
    not_words = np.setdiff1d(np.arange(40), words)
    np.testing.assert_array_equal(neighbors[not_words], np.repeat(not_words[:, None], 3, axis=1))


def _augmented(probability, seed=7):
    # ids: 0 [PAD], 1 [CLS], 2 [SEP], 3-9 words, 10-11 "##" pieces; word w's neighbours are 3 + (w + 1..2) % 7.
    neighbors = np.repeat(np.arange(12)[:, None], 2, axis=1)
    for w in range(3, 10):
        neighbors[w] = [3 + (w - 3 + 1) % 7, 3 + (w - 3 + 2) % 7]
    continuation = np.arange(12) >= 10
    ids = np.array([[1, 3, 4, 10, 5, 2, 0, 0], [1, 6, 7, 8, 9, 11, 2, 0]], np.int32)
    inputs = {"input_word_ids": ids, "input_mask": (ids > 0).astype("int32"), "input_type_ids": np.zeros_like(ids)}
    dataset = tf.data.Dataset.from_tensors((inputs, np.array([0, 1])))
    batches = with_augmented_copies(dataset.repeat(20), neighbors, continuation, probability, seed)
    return ids, neighbors, [tf.nest.map_structure(lambda t: t.numpy(), batch) for batch in batches]


def test_augmented_copies_swap_whole_words_for_their_neighbours_and_learn_from_the_teacher_only():
    ids, neighbors, batches = _augmented(1.0)
    swappable = np.array([[0, 1, 0, 0, 1, 0, 0, 0], [0, 1, 1, 1, 0, 0, 0, 0]], bool)  # 4 and 9 go on with "##"
    for inputs, labels, weights in batches:
        originals, copies = inputs["input_word_ids"][:2], inputs["input_word_ids"][2:]
        np.testing.assert_array_equal(originals, ids)
        np.testing.assert_array_equal(copies[~swappable], ids[~swappable])
        for original, copy in zip(ids[swappable], copies[swappable]):
            assert copy in neighbors[original]
        np.testing.assert_array_equal(inputs["input_mask"], np.concatenate([ids > 0] * 2))
        np.testing.assert_array_equal(labels, [0, 1, 0, 1])
        np.testing.assert_array_equal(weights, [2, 2, 0, 0])
    # Both neighbours get drawn; with probability 0.3 about 30% of the words are swapped.
    assert len({int(inputs["input_word_ids"][2, 1]) for inputs, _, _ in batches}) == 2
    _, _, batches = _augmented(0.3)
    swapped = np.mean([(inputs["input_word_ids"][2:] != ids)[swappable] for inputs, _, _ in batches])
    assert 0.15 < swapped < 0.45, swapped


def test_augmented_copies_are_the_same_for_the_same_seed_and_differ_for_another():
    copies = [[inputs["input_word_ids"][2:] for inputs, _, _ in _augmented(0.5, seed)[2]] for seed in (7, 7, 8)]
    np.testing.assert_array_equal(copies[0], copies[1])
    assert not np.array_equal(copies[0], copies[2])


def test_distillation_with_augmentation_trains_on_doubled_batches():
    task = tasks.get("distill/sst2", overrides=f"{TINY},task.student_layers=1,task.augment=0.4")
    inputs, labels, weights = next(iter(task.build_inputs("train")))
    assert inputs["input_word_ids"].shape[0] == labels.shape[0] == weights.shape[0] == 32
    assert next(iter(task.build_inputs("validation")))[0]["input_word_ids"].shape[0] == 16  # no copies
    vocabulary = task.preprocessor.tokenizer.get_vocabulary()
    words = [i for i, token in enumerate(vocabulary) if token.isalpha()]
    assert set(task.word_neighbors[words].flat) <= set(words)
    distiller = task.build_model()
    task.compile(distiller)
    history = distiller.fit(task.build_inputs("train").take(2), verbose=0)
    assert np.isfinite(history.history["loss"]).all()


def test_a_teacher_of_another_task_is_refused_in_one_line():
    task = tasks.get("distill/mrpc", overrides=f"task.glue_dir={REPO}/tests/data/glue,task.teacher={HF_BERT}")
    with pytest.raises(ConfigError) as error:
        task.build_model()
    assert str(error.value) == (
        f"task.teacher {HF_BERT!r} has no classifier head; this task has 2 (fine-tune a teacher on it first, "
        "e.g. tools/train.py --experiment=glue/<task>)"
    )
    with pytest.raises(ConfigError, match="task.teacher is empty"):
        tasks.get("distill/sst2", overrides=f"task.glue_dir={DEMO}").build_model()


def test_a_student_with_another_vocabulary_is_refused(tmp_path):
    minilm_vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "a", "b"]
    from tfplm.tokenizers import BertPreprocessor, WordPieceTokenizer

    other = BertClassifier(
        BertEncoder.from_preset("bert_tiny", vocab_size=7, preprocessor=BertPreprocessor(WordPieceTokenizer(minilm_vocab), 16)), 2
    )
    other.save_pretrained(tmp_path / "other")
    task = tasks.get("distill/sst2", overrides=f"{TINY},task.init_checkpoint={tmp_path / 'other'}")
    with pytest.raises(ConfigError, match="has another vocabulary than task.teacher"):
        task.build_model()


def test_distilling_the_tiny_teacher_end_to_end(tmp_path):
    """alpha=0 (the teacher's outputs only): the student learns to agree with
    the teacher; best/ holds the student alone; the report tool compares them."""
    task = tasks.get(
        "distill/sst2",
        overrides=f"{TINY},task.student_layers=1,task.student_vocabulary_size=750,task.alpha=0.0,trainer.train_steps=150,"
        "trainer.steps_per_loop=150,trainer.optimizer.learning_rate=3e-3",
    )
    untrained = task.build_model()
    teacher = from_pretrained(TEACHER)
    dev = tf.constant(task.examples("validation").texts[:300])

    def agreement(student):  # each model with its own tokenizer, as served
        probabilities = [model.predict_on_batch(model.preprocessor(dev)) for model in (teacher, student)]
        return np.mean(np.argmax(probabilities[0], -1) == np.argmax(probabilities[1], -1))

    before = agreement(untrained.student)
    trainer.run_experiment(task, "train_and_eval", str(tmp_path / "run"), progress=None)
    student = trainer.load_trained(task, str(tmp_path / "run"))
    assert type(student) is BertClassifier
    assert student.encoder.num_layers == 1
    assert student.tokenizer.get_vocabulary() == untrained.student.tokenizer.get_vocabulary()
    assert student.tokenizer.vocabulary_size() < teacher.tokenizer.vocabulary_size()
    after = agreement(student)
    assert after > max(0.75, before + 0.15), (before, after)  # measured: 0.59 -> 0.79

    command = [
        sys.executable, os.path.join(REPO, "tools", "distillation_report.py"),
        f"--model_dir={tmp_path / 'run'}", f"--output_dir={tmp_path / 'report'}", "--num_examples=20",
    ]
    subprocess.run(command, check=True, capture_output=True, text=True, cwd=REPO)
    report = json.loads((tmp_path / "report" / "distillation_report.json").read_text())
    teacher_row, student_row = report["models"]
    assert teacher_row["parameters"] == teacher.count_params() and student_row["parameters"] == student.count_params()
    for row in (teacher_row, student_row):  # every float artifact matches its Keras model; a tiny
        # model's int8 file is mostly fixed overhead (above the 30%-of-float32 size bar), and a
        # barely trained one has near-ties that int8 may flip (below the 99% agreement bar)
        assert all(failure.startswith("tflite_text_dynamic_int8: ") for failure in row["export_failures"]), row["export_failures"]
    assert abs(student_row["accuracy_tflite_int8"] - student_row["accuracy_keras"]) <= 0.02
    assert 0 < student_row["tflite_int8_bytes"] < student_row["tflite_float32_bytes"]
    evaluated = json.loads((tmp_path / "run" / "eval_results.json").read_text())["metrics"]["accuracy"]
    assert abs(student_row["accuracy_keras"] - evaluated) <= 2 / 872  # the same dev set and model (batches padded differently)


def test_bad_report_arguments_are_one_line(tmp_path):
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "distillation_report.py"), f"--output_dir={tmp_path}"],
        capture_output=True, text=True, cwd=REPO,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].endswith("--model_dir (a distill/* run) and --output_dir are required")
