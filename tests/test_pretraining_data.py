"""Pretraining data: BERT's instances and TFRecords, the reader, dynamic masking, causal-LM blocks."""

import collections
import logging
import os
import pathlib
import random
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from tfplm.data import causal_lm, masking
from tfplm.data.bert_instances import InstanceMaker, PretrainingDataConfig
from tfplm.data.documents import interleave_documents, read_documents, tokenize_window
from tfplm.data.pretraining_records import bert_pretraining_dataset, create_pretraining_data
from tfplm.data.text import read_text
from tfplm.tokenizers import GPT2Tokenizer, WordPieceTokenizer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEQ, PREDICTIONS = 64, 10


@pytest.fixture(scope="module")
def vocab_file(minilm_dir):
    return str(minilm_dir / "vocab.txt")


@pytest.fixture(scope="module")
def tokenizer(vocab_file):
    return WordPieceTokenizer(vocab_file)


@pytest.fixture(scope="module")
def sample_file(test_data_dir):
    """Twelve documents, one sentence per line (google-research/bert's format)."""
    return str(test_data_dir / "pretraining_sample.txt")


@pytest.fixture(scope="module", params=["shipped", pytest.param("full", marks=pytest.mark.full_data)])
def books(request, tmp_path_factory, test_data_dir):
    """The first 60 KB of two raw books: BOM, Gutenberg header and all.

    shipped: tests/data/books, cut this way from the books in ../shared/data; full: cut here.
    """
    if request.param == "shipped":
        return test_data_dir / "books"
    shared_data_dir = request.getfixturevalue("shared_data_dir")
    directory = tmp_path_factory.mktemp("books")
    for name in ("emma", "frankenstein"):
        raw = (shared_data_dir / "corpus" / "books" / f"{name}.txt").read_text(encoding="utf-8-sig")
        (directory / f"{name}.txt").write_text("\ufeff" + raw[:60_000], encoding="utf-8")
    return directory


# --- reading documents ------------------------------------------------------------


def test_bert_format_documents_are_blank_line_separated_sentences(sample_file):
    documents = list(read_documents([sample_file], "bert"))
    blocks = open(sample_file, encoding="utf-8").read().strip().split("\n\n")
    assert len(documents) == len(blocks) == 12
    assert documents[0] == blocks[0].split("\n")


def test_prose_documents_are_sentence_runs_without_bom_or_gutenberg_text(books):
    documents = list(read_documents([str(books / "emma.txt")], "prose", sentences_per_document=40))
    assert len(documents) > 5
    assert all(len(d) >= 40 for d in documents[:-1])
    text = " ".join(s for d in documents for s in d)
    assert "\ufeff" not in text and "gutenberg" not in text.lower()
    assert "Emma Woodhouse, handsome, clever, and rich" in text


def test_documents_are_interleaved_round_robin_over_files(tmp_path):
    paths = []
    for name, n in (("a", 3), ("b", 1), ("c", 2), ("d", 0)):
        path = tmp_path / f"{name}.txt"
        path.write_text("\n\n".join(f"{name}{i} sentence." for i in range(n)))
        paths.append(str(path))
    order = [d[0][:2] for d in interleave_documents(paths, "bert", cycle_length=2)]
    # a and b in turn; b runs out and c takes its slot; d is empty.
    assert order == ["a0", "b0", "a1", "c0", "a2", "c1"]


# --- instances ----------------------------------------------------------------------


def synthetic_corpus(num_documents, seed=0, sentences=(4, 30), tokens=(3, 14)):
    """Documents whose every token id is unique: id → (document, position in it)."""
    rng = random.Random(seed)
    documents, where, next_id = [], {}, 1000
    for d in range(num_documents):
        document, position = [], 0
        for _ in range(rng.randint(*sentences)):
            sentence = list(range(next_id, next_id + rng.randint(*tokens)))
            for token in sentence:
                where[token] = (d, position)
                position += 1
            next_id += len(sentence)
            document.append(sentence)
        documents.append(document)
    return documents, where


def make_instances(tokenizer, num_documents=60, whole_word=False, seed=0, corpus=None, **config):
    config = PretrainingDataConfig(
        max_seq_length=SEQ, max_predictions_per_seq=PREDICTIONS, do_whole_word_mask=whole_word, dupe_factor=1, **config
    )
    maker = InstanceMaker(config, tokenizer.get_vocabulary())
    documents, where = synthetic_corpus(num_documents, seed, **(corpus or {}))
    return maker.from_documents(documents, random.Random(seed)), maker, where


def unmasked(instance):
    ids = list(instance.input_ids)
    for position, label in zip(instance.masked_lm_positions, instance.masked_lm_ids):
        ids[position] = label
    return ids


def test_instances_are_cls_a_sep_b_sep_with_contiguous_segments(tokenizer):
    instances, maker, where = make_instances(tokenizer)
    assert len(instances) > 200
    for instance in instances:
        ids, segments = unmasked(instance), instance.segment_ids
        assert len(ids) == len(segments) <= SEQ
        first_b = segments.index(1)
        assert segments == [0] * first_b + [1] * (len(ids) - first_b)
        assert ids[0] == maker.cls_id and ids[first_b - 1] == maker.sep_id and ids[-1] == maker.sep_id
        a, b = ids[1 : first_b - 1], ids[first_b:-1]
        assert a and b
        for segment in (a, b):  # a run of one document; the labels are the original ids
            doc, start = where[segment[0]]
            assert [where[t] for t in segment] == [(doc, start + k) for k in range(len(segment))]
        same_document = where[a[0]][0] == where[b[0]][0]
        if instance.is_random_next:
            assert not same_document
        else:
            assert same_document and where[b[0]][1] > where[a[-1]][1]


def test_half_of_the_next_segments_are_random(tokenizer):
    # Many short sentences: chunks of one sentence, which always take a random
    # next, are rare (they happen at document ends).
    instances, _, _ = make_instances(tokenizer, num_documents=200, corpus=dict(sentences=(30, 60), tokens=(2, 6)))
    assert len(instances) > 1000
    share = np.mean([i.is_random_next for i in instances])
    assert 0.48 < share < 0.6, share


def test_masked_positions_are_sorted_unique_not_special_and_15_percent(tokenizer):
    instances, maker, _ = make_instances(tokenizer, short_seq_prob=0.5)
    lengths = {len(i.input_ids) for i in instances}
    assert min(lengths) < SEQ // 2  # short_seq_prob made short instances too
    for instance in instances:
        ids = unmasked(instance)
        positions = instance.masked_lm_positions
        assert positions == sorted(set(positions))
        assert len(positions) == min(PREDICTIONS, max(1, round(len(ids) * 0.15)))
        assert all(ids[p] not in (maker.cls_id, maker.sep_id) for p in positions)
        unmasked_positions = set(range(len(ids))) - set(positions)
        assert all(instance.input_ids[p] == ids[p] for p in unmasked_positions)


def test_masked_tokens_are_80_percent_mask_10_random_10_kept(tokenizer):
    instances, maker, _ = make_instances(tokenizer, num_documents=400)
    outcome = collections.Counter()
    for instance in instances:
        for position, label in zip(instance.masked_lm_positions, instance.masked_lm_ids):
            token = instance.input_ids[position]
            outcome["mask" if token == maker.mask_id else "kept" if token == label else "random"] += 1
    total = sum(outcome.values())
    assert total > 5000
    assert abs(outcome["mask"] / total - 0.8) < 0.025
    assert abs(outcome["kept"] / total - 0.1) < 0.02
    assert abs(outcome["random"] / total - 0.1) < 0.02


def test_whole_word_masking_masks_every_piece_of_a_word(tokenizer, sample_file):
    config = PretrainingDataConfig(
        max_seq_length=SEQ, max_predictions_per_seq=PREDICTIONS, do_whole_word_mask=True, dupe_factor=3
    )
    documents = tokenize_window(tokenizer, list(read_documents([sample_file])))
    maker = InstanceMaker(config, tokenizer.get_vocabulary())
    instances = maker.from_documents(documents, random.Random(0))
    continued = 0
    for instance in instances:
        ids, masked = unmasked(instance), set(instance.masked_lm_positions)
        assert len(masked) <= min(PREDICTIONS, max(1, round(len(ids) * 0.15)))
        for position in masked:
            if position + 1 < len(ids) and maker.is_subword[ids[position + 1]]:
                assert position + 1 in masked
                continued += 1
            if maker.is_subword[ids[position]] and ids[position - 1] not in (maker.cls_id, maker.sep_id):
                assert position - 1 in masked
    assert continued > 20  # the check above ran on real multi-piece words


# --- writing TFRecords ------------------------------------------------------------


def read_all(pattern, seq_length=SEQ, predictions=PREDICTIONS):
    dataset = bert_pretraining_dataset(pattern, seq_length, predictions, 1000, is_training=False)
    batches = list(dataset)
    return {k: np.concatenate([{**f, **l}[k].numpy() for f, l in batches]) for k in {**batches[0][0], **batches[0][1]}}


@pytest.mark.parametrize("whole_word", [False, True])
def test_records_equal_google_research_berts_for_the_same_seed(sample_file, vocab_file, test_data_dir, tmp_path, whole_word):
    """tests/data/google_bert_sample*.tfrecord were written by google-research/bert's
    create_pretraining_data.py (tools/compare_with_google_bert.py, --dupe_factor=1
    --max_seq_length=64 --max_predictions_per_seq=10 --random_seed=12345, this
    vocab, on pretraining_sample.txt). One window holding the corpus, one file
    at a time and one shard give the same records, in the same order."""
    config = PretrainingDataConfig(
        max_seq_length=SEQ, max_predictions_per_seq=PREDICTIONS, dupe_factor=1, random_seed=12345,
        do_whole_word_mask=whole_word, window_size=1000, cycle_length=1,
    )
    (path,) = create_pretraining_data([sample_file], vocab_file, str(tmp_path / "data"), config)
    google = read_all(str(test_data_dir / f"google_bert_sample{'_wwm' if whole_word else ''}.tfrecord"))
    ours = read_all(path)
    assert len(google["input_word_ids"]) > 70
    for name in google:
        np.testing.assert_array_equal(ours[name], google[name], err_msg=name)



def write_books(books, vocab_file, prefix, seed=1, num_workers=1, num_shards=3):
    config = PretrainingDataConfig(
        max_seq_length=SEQ, max_predictions_per_seq=PREDICTIONS, dupe_factor=2, random_seed=seed, window_size=10
    )
    files = sorted(str(p) for p in books.glob("*.txt"))
    return create_pretraining_data(
        files, vocab_file, str(prefix), config, input_format="prose", num_shards=num_shards, num_workers=num_workers
    )


def file_bytes(counts):
    return [open(path, "rb").read() for path in sorted(counts)]


def test_same_seed_same_bytes_for_any_number_of_workers(books, vocab_file, tmp_path):
    one = write_books(books, vocab_file, tmp_path / "a" / "data")
    again = write_books(books, vocab_file, tmp_path / "b" / "data")
    two_workers = write_books(books, vocab_file, tmp_path / "c" / "data", num_workers=2)
    other_seed = write_books(books, vocab_file, tmp_path / "d" / "data", seed=2)
    assert len(one) == 3 and all(n > 50 for n in one.values()), one
    assert [os.path.basename(p) for p in two_workers] == [os.path.basename(p) for p in one]
    assert file_bytes(one) == file_bytes(again) == file_bytes(two_workers)
    assert all(a != b for a, b in zip(file_bytes(one), file_bytes(other_seed)))
    assert not list(tmp_path.rglob(".*"))  # no temporary file left behind


def test_binary_writes_what_the_library_writes(sample_file, vocab_file, tmp_path):
    flags = dict(max_seq_length=SEQ, max_predictions_per_seq=PREDICTIONS, dupe_factor=2, random_seed=7, do_whole_word_mask=True)
    result = subprocess.run(
        [sys.executable, os.path.join(REPO, "tools", "create_pretraining_data.py"), f"--input={sample_file}",
         f"--vocab_file={vocab_file}", f"--output={tmp_path / 'cli' / 'data'}", "--num_shards=2",
         *[f"--{k}={v}" for k, v in flags.items()]],
        capture_output=True, text=True, timeout=300, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "instances in" in result.stdout and "peak RSS" in result.stdout
    library = create_pretraining_data(
        [sample_file], vocab_file, str(tmp_path / "lib" / "data"), PretrainingDataConfig(**flags), num_shards=2
    )
    assert file_bytes({str(p): 0 for p in (tmp_path / "cli").glob("*")}) == file_bytes(library)


def test_bad_settings_are_rejected_with_the_reason(vocab_file, sample_file, tmp_path):
    with pytest.raises(ValueError, match="max_seq_length=4"):
        PretrainingDataConfig(max_seq_length=4)
    with pytest.raises(ValueError, match="input_format='xml'"):
        create_pretraining_data([sample_file], vocab_file, str(tmp_path / "x"), input_format="xml")
    with pytest.raises(ValueError, match="not found"):
        create_pretraining_data([str(tmp_path / "missing.txt")], vocab_file, str(tmp_path / "x"))


def test_a_failed_run_leaves_no_shard_behind(sample_file, vocab_file, tmp_path, monkeypatch):
    def fail(*args):
        raise RuntimeError("disk full")

    monkeypatch.setattr("tfplm.data.pretraining_records.serialize_instance", fail)
    config = PretrainingDataConfig(max_seq_length=SEQ, max_predictions_per_seq=PREDICTIONS, dupe_factor=1, window_size=4)
    with pytest.raises(RuntimeError, match="disk full"):
        create_pretraining_data([sample_file], vocab_file, str(tmp_path / "data"), config, num_shards=2)
    assert not list(tmp_path.iterdir())  # neither a shard nor a temporary file


def test_input_without_text_is_an_error_and_writes_nothing(vocab_file, tmp_path):
    (tmp_path / "in").mkdir()
    empty, blank = tmp_path / "in" / "empty.txt", tmp_path / "in" / "blank.txt"
    empty.write_text("")
    blank.write_text("\n  \n\n")
    for input_format in ("bert", "prose"):
        with pytest.raises(ValueError, match=rf"no instances: the input \({re.escape(str(empty))}, {re.escape(str(blank))}\) holds no text"):
            create_pretraining_data([empty, blank], vocab_file, tmp_path / "out" / "data", input_format=input_format)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in"]  # not even the output folder


@pytest.mark.parametrize("input_format, line", [("bert", 3), ("prose", 3)])
def test_input_that_is_not_utf8_names_the_file_and_line(tmp_path, input_format, line):
    path = tmp_path / "latin1.txt"
    path.write_bytes("The cat sat.\nThe dog ran.\nThe caf\xe9 was shut.\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"^{re.escape(str(path))}:{line}: not UTF-8 .*re-encode the file as UTF-8"):
        list(read_documents([str(path)], input_format))


def test_bad_vocabulary_is_refused_before_anything_is_written(sample_file, tmp_path):
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("[UNK]\n[PAD]\n[CLS]\n[SEP]\n[MASK]\nthe\n")
    with pytest.raises(ValueError, match=r"has '\[PAD\]' at id 1 \(line 2\)"):
        create_pretraining_data([sample_file], str(vocab), tmp_path / "out" / "data", num_shards=2, num_workers=2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vocab.txt"]


def _binary(test_data_dir, vocab_file, prefix, num_workers):
    """tools/create_pretraining_data.py on the shipped books, slow enough (dupe_factor=100) to stop midway."""
    return subprocess.Popen(
        [sys.executable, os.path.join(REPO, "tools", "create_pretraining_data.py"),
         f"--input={test_data_dir / 'books' / '*.txt'}", "--input_format=prose", f"--vocab_file={vocab_file}",
         f"--output={prefix}", f"--max_seq_length={SEQ}", f"--max_predictions_per_seq={PREDICTIONS}",
         "--dupe_factor=100", "--window_size=20", "--num_shards=2", f"--num_workers={num_workers}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _wait_until(condition, process=None, what=""):
    """Polls `condition` (a liveness bound, not a timing claim: 300 s on any machine)."""
    for _ in range(3000):
        if condition():
            return
        if process is not None and process.poll() is not None:
            pytest.fail(f"the binary ended before {what}:\n{process.stdout.read()[-3000:]}")
        time.sleep(0.1)
    pytest.fail(f"timed out waiting until {what}")


def _writing(folder):
    """Whether a hidden temporary shard under `folder` holds records yet."""
    return any(p.stat().st_size > 0 for p in folder.glob(".data-*.tmp-*")) if folder.is_dir() else False


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except FileNotFoundError:
        return False


def _workers(parent):
    """The pids of `parent`'s multiprocessing workers (Linux /proc)."""
    pids = []
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            command = (stat.parent / "cmdline").read_bytes()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == parent and b"spawn_main" in command:
            pids.append(int(stat.parent.name))
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_killed_run_publishes_no_shard_and_its_workers_end(test_data_dir, vocab_file, tmp_path):
    out = tmp_path / "out"
    process = _binary(test_data_dir, vocab_file, out / "data", num_workers=2)
    _wait_until(lambda: _writing(out), process, "a worker wrote records")
    workers = _workers(process.pid)
    assert len(workers) == 2
    process.kill()  # kill -9: nothing of the parent's runs
    process.wait()
    _wait_until(lambda: not any(_alive(pid) for pid in workers), what="the workers ended with their parent")
    assert not list(out.glob("data-*"))  # what a PREFIX-* glob reads: no shard, partial or not
    assert list(out.glob(".data-*.tmp-*"))  # the killed run's hidden temporaries ...
    config = PretrainingDataConfig(max_seq_length=SEQ, max_predictions_per_seq=PREDICTIONS, dupe_factor=1, window_size=20)
    counts = create_pretraining_data(
        sorted((test_data_dir / "books").glob("*.txt")), vocab_file, out / "data", config, input_format="prose", num_shards=2
    )
    assert sorted(os.listdir(out)) == sorted(os.path.basename(p) for p in counts)  # ... removed by the next run


def test_sigterm_removes_the_temporaries_and_the_new_folder(test_data_dir, vocab_file, tmp_path):
    out = tmp_path / "out"
    process = _binary(test_data_dir, vocab_file, out / "data", num_workers=1)
    _wait_until(lambda: _writing(out), process, "records were written")
    process.terminate()
    assert process.wait() == 128 + signal.SIGTERM
    assert not out.exists(), list(out.iterdir())


# --- reading TFRecords --------------------------------------------------------------


def google_records(path, n, seq_length=SEQ, max_predictions=PREDICTIONS, seed=0):
    """Writes records as google-research/bert writes them; returns their values."""
    rng = np.random.default_rng(seed)
    values = []
    with tf.io.TFRecordWriter(str(path)) as writer:
        for _ in range(n):
            length, predictions = int(rng.integers(8, seq_length + 1)), int(rng.integers(1, max_predictions + 1))
            first_b = int(rng.integers(2, length - 1))
            ids = [101, *rng.integers(1000, 30522, length - 2).tolist(), 102]
            ids[first_b - 1] = 102
            positions = sorted(rng.choice(np.arange(1, first_b - 1).tolist() + list(range(first_b, length - 1)), min(predictions, length - 3), replace=False).tolist())
            pad, pad_predictions = seq_length - length, max_predictions - len(positions)
            record = collections.OrderedDict(
                input_ids=ids + [0] * pad,
                input_mask=[1] * length + [0] * pad,
                segment_ids=[0] * first_b + [1] * (length - first_b) + [0] * pad,
                masked_lm_positions=positions + [0] * pad_predictions,
                masked_lm_ids=rng.integers(1000, 30522, len(positions)).tolist() + [0] * pad_predictions,
                masked_lm_weights=[1.0] * len(positions) + [0.0] * pad_predictions,
                next_sentence_labels=[int(rng.integers(0, 2))],
            )
            feature = collections.OrderedDict(
                (name, tf.train.Feature(float_list=tf.train.FloatList(value=v)) if name == "masked_lm_weights"
                 else tf.train.Feature(int64_list=tf.train.Int64List(value=v)))
                for name, v in record.items()
            )
            writer.write(tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString())
            values.append(record)
    return values


def test_records_in_google_research_format_read_as_model_inputs(tmp_path):
    values = google_records(tmp_path / "google.tfrecord", 20)
    dataset = bert_pretraining_dataset(str(tmp_path / "google.tfrecord"), SEQ, PREDICTIONS, 8, is_training=False)
    batches = list(dataset)
    assert [len(f["input_word_ids"]) for f, _ in batches] == [8, 8, 4]
    features, labels = batches[0]
    assert set(features) == {"input_word_ids", "input_mask", "input_type_ids", "masked_lm_positions"}
    assert set(labels) == {"masked_lm_ids", "masked_lm_weights", "next_sentence_labels"}
    assert {k: v.dtype for k, v in labels.items()} == {
        "masked_lm_ids": tf.int32, "masked_lm_weights": tf.float32, "next_sentence_labels": tf.int32
    }
    assert all(v.dtype == tf.int32 for v in features.values())
    names = {"input_word_ids": "input_ids", "input_mask": "input_mask", "input_type_ids": "segment_ids",
             "masked_lm_positions": "masked_lm_positions", "masked_lm_ids": "masked_lm_ids",
             "masked_lm_weights": "masked_lm_weights"}
    for ours, theirs in names.items():
        read = np.concatenate([{**f, **l}[ours].numpy() for f, l in batches])
        np.testing.assert_array_equal(read, [v[theirs] for v in values])
    read = np.concatenate([l["next_sentence_labels"].numpy() for _, l in batches])
    np.testing.assert_array_equal(read, [v["next_sentence_labels"][0] for v in values])


def test_training_batches_have_static_shapes_and_repeat(tmp_path):
    google_records(tmp_path / "google.tfrecord", 10)
    dataset = bert_pretraining_dataset(str(tmp_path / "google.tfrecord"), SEQ, PREDICTIONS, 4, is_training=True)
    assert dataset.element_spec[0]["input_word_ids"].shape == (4, SEQ)
    assert dataset.element_spec[1]["next_sentence_labels"].shape == (4,)
    assert len(list(dataset.take(7))) == 7  # 28 examples from 10: it repeats


def test_written_records_read_back_as_written(books, vocab_file, tmp_path, tokenizer):
    counts = write_books(books, vocab_file, tmp_path / "data", num_shards=1)
    (path,) = counts
    dataset = bert_pretraining_dataset(path, SEQ, PREDICTIONS, 32, is_training=False)
    ids = np.concatenate([f["input_word_ids"].numpy() for f, _ in dataset])
    assert len(ids) == counts[path]
    first = tf.train.Example.FromString(next(tf.data.TFRecordDataset(path).as_numpy_iterator()))
    assert ids[0].tolist() == list(first.features.feature["input_ids"].int64_list.value)
    assert (ids[:, 0] == tokenizer.cls_token_id).all()


def test_records_of_other_lengths_are_rejected_clearly(tmp_path):
    google_records(tmp_path / "google.tfrecord", 2)
    with pytest.raises(ValueError, match="seq_length is 128"):
        bert_pretraining_dataset(str(tmp_path / "google.tfrecord"), 128, PREDICTIONS, 2, is_training=False)


def test_empty_record_files_are_skipped_and_counted(tmp_path, caplog):
    written = google_records(tmp_path / "data-0", 6)
    (tmp_path / "data-1").write_bytes(b"")
    (tmp_path / "data-2").write_bytes(b"")
    with caplog.at_level(logging.WARNING):
        dataset = bert_pretraining_dataset(str(tmp_path / "data-*"), SEQ, PREDICTIONS, 2, is_training=True)
    assert f"skipping 2 empty (0-byte) record files of 3: {tmp_path / 'data-1'}, {tmp_path / 'data-2'}" in caplog.text
    # Training reads the other file (alone, a 0-byte file would leave it waiting for a first batch forever).
    expected = {tuple(v["input_ids"]) for v in written}
    assert {tuple(x) for f, _ in dataset.take(3) for x in f["input_word_ids"].numpy()} <= expected
    one_pass = bert_pretraining_dataset(str(tmp_path / "data-*"), SEQ, PREDICTIONS, 2, is_training=False)
    assert [tuple(x) for f, _ in one_pass for x in f["input_word_ids"].numpy()] == [tuple(v["input_ids"]) for v in written]


def test_only_empty_record_files_are_an_error(tmp_path):
    (tmp_path / "data-0").write_bytes(b"")
    with pytest.raises(ValueError, match=rf"all 1 record files are empty \(0 bytes\), e.g. {re.escape(str(tmp_path / 'data-0'))}"):
        bert_pretraining_dataset(str(tmp_path / "data-*"), SEQ, PREDICTIONS, 2, is_training=True)


def test_truncated_record_file_is_named_before_training_reads_it(tmp_path):
    google_records(tmp_path / "data-0", 4)
    google_records(tmp_path / "data-1", 4, seed=1)
    whole = (tmp_path / "data-1").read_bytes()
    (tmp_path / "data-1").write_bytes(whole[:-10])  # as a killed writer leaves it
    with pytest.raises(ValueError, match=rf"^{re.escape(str(tmp_path / 'data-1'))}: truncated or not a TFRecord file: record 3 at byte \d+ runs past the end"):
        bert_pretraining_dataset(str(tmp_path / "data-*"), SEQ, PREDICTIONS, 2, is_training=True)
    # What TensorFlow alone says, mid-training: an offset, but no file name.
    with pytest.raises(tf.errors.DataLossError, match="truncated record at") as raised:
        list(tf.data.TFRecordDataset(str(tmp_path / "data-1")))
    assert "data-1" not in str(raised.value)


def first_ids_per_pipeline(pattern, is_training, take=None):
    seen = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline, num_replicas_in_sync=2)
        dataset = bert_pretraining_dataset(pattern, SEQ, PREDICTIONS, 3, is_training, input_context=context)
        dataset = dataset.take(take) if take else dataset
        seen.append({tuple(x) for f, _ in dataset for x in f["input_word_ids"].numpy()})
    return seen


@pytest.mark.parametrize("num_files", [1, 4])
def test_input_pipelines_read_disjoint_parts_that_cover_everything(tmp_path, num_files):
    everything = set()
    for k in range(num_files):
        everything |= {tuple(v["input_ids"]) for v in google_records(tmp_path / f"data-{k}", 24 // num_files, seed=k)}
    first, second = first_ids_per_pipeline(str(tmp_path / "data-*"), is_training=False)
    assert not first & second and first | second == everything
    # Training too: shuffled and repeated, each pipeline still sees only its own records.
    first_training, second_training = first_ids_per_pipeline(str(tmp_path / "data-*"), is_training=True, take=8)
    assert first_training <= first and second_training <= second
    assert len(first_training) > 6 and len(second_training) > 6


# --- dynamic masking ---------------------------------------------------------------


def test_dynamic_masking_has_the_structure_of_the_tfrecord_reader(tmp_path, tokenizer, sample_file):
    google_records(tmp_path / "google.tfrecord", 4)
    for is_training in (False, True):
        records = bert_pretraining_dataset(str(tmp_path / "google.tfrecord"), SEQ, PREDICTIONS, 4, is_training)
        dynamic = masking.dynamic_masking_dataset(sample_file, tokenizer, SEQ, PREDICTIONS, 4, is_training)
        assert dynamic.element_spec == records.element_spec


@pytest.mark.parametrize("num_pipelines", [1, 2])
def test_dynamic_masking_without_text_is_an_error_not_a_wait(tmp_path, tokenizer, num_pipelines):
    (tmp_path / "a.txt").write_text("The only sentence.\n" if num_pipelines == 2 else "\n\n")
    context = tf.distribute.InputContext(num_input_pipelines=num_pipelines, input_pipeline_id=num_pipelines - 1)
    expected = "the files hold no text" if num_pipelines == 1 else "input pipeline 1 of 2 gets no text"
    with pytest.raises(ValueError, match=expected):
        masking.dynamic_masking_dataset(str(tmp_path / "*.txt"), tokenizer, SEQ, PREDICTIONS, 2, True, input_context=context)


@pytest.fixture(scope="module")
def dynamic_batches(books, tokenizer):
    """Two evaluation passes over the books, each one batch of every pair, with 20 predictions allowed."""
    dataset = masking.dynamic_masking_dataset(
        str(books / "*.txt"), tokenizer, SEQ, 20, 4096, is_training=False, input_format="prose", seed=3
    )
    return [next(iter(dataset)) for _ in range(2)]


def test_dynamic_masks_select_15_percent_of_ordinary_tokens(dynamic_batches, tokenizer):
    features, labels = dynamic_batches[0]
    weights = labels["masked_lm_weights"].numpy()
    specials = [tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id]
    positions = features["masked_lm_positions"].numpy()
    selectable = (features["input_mask"].numpy().sum(axis=1) - 3).astype(float)
    assert len(selectable) > 400
    np.testing.assert_array_equal(weights.sum(axis=1), np.minimum(20, np.ceil(selectable * 0.15)))
    assert 0.15 <= weights.sum() / selectable.sum() < 0.17  # ceil() rounds each row up
    for row, count in zip(positions, weights.sum(axis=1).astype(int)):
        assert (np.diff(row[:count]) > 0).all() and row[0] > 0
    assert not np.isin(labels["masked_lm_ids"].numpy()[weights > 0], specials).any()


def test_dynamic_masks_are_80_percent_mask_10_random_10_kept(dynamic_batches, tokenizer):
    features, labels = dynamic_batches[0]
    chosen = labels["masked_lm_weights"].numpy() > 0
    at_positions = np.take_along_axis(features["input_word_ids"].numpy(), features["masked_lm_positions"].numpy(), 1)[chosen]
    originals = labels["masked_lm_ids"].numpy()[chosen]
    total = chosen.sum()
    assert total > 3000
    mask = (at_positions == tokenizer.mask_token_id).mean()
    kept = (at_positions == originals).mean()
    assert abs(mask - 0.8) < 0.03 and abs(kept - 0.1) < 0.025 and abs(1 - mask - kept - 0.1) < 0.025


def test_dynamic_labels_are_the_original_ids_and_evaluation_passes_mask_alike(dynamic_batches, books, tokenizer):
    files = sorted(str(p) for p in books.glob("*.txt"))
    config = PretrainingDataConfig(max_seq_length=SEQ, max_predictions_per_seq=20)
    pairs = list(masking.segment_pairs(files, tokenizer, "prose", config, seed=3))
    restored = []
    for features, labels in dynamic_batches:
        ids = features["input_word_ids"].numpy().copy()
        np.put_along_axis(ids, features["masked_lm_positions"].numpy(), labels["masked_lm_ids"].numpy(), 1)
        ids[:, 0] = tokenizer.cls_token_id  # padded predictions scatter 0s to position 0
        restored.append(ids)
        assert len(ids) == len(pairs)
        for row, (pair, types, is_random_next) in zip(ids, pairs[:50]):
            assert row[: len(pair)].tolist() == pair and not row[len(pair) :].any()
        np.testing.assert_array_equal(features["input_type_ids"].numpy()[0, : len(pairs[0][1])], pairs[0][1])
        np.testing.assert_array_equal(labels["next_sentence_labels"].numpy(), [p[2] for p in pairs])
    np.testing.assert_array_equal(restored[0], restored[1])  # same pairs ...
    first, second = (f["masked_lm_positions"].numpy() for f, _ in dynamic_batches)
    np.testing.assert_array_equal(first, second)  # ... and masks in every evaluation pass
    assert 0.45 < np.mean([p[2] for p in pairs]) < 0.6


def test_masks_depend_on_the_seed_alone_not_on_random_ops_run_before(books, tokenizer):
    def training_batches(seed):
        dataset = masking.dynamic_masking_dataset(
            str(books / "*.txt"), tokenizer, SEQ, 20, 64, is_training=True, input_format="prose", seed=seed
        )
        return [tf.nest.map_structure(lambda t: t.numpy(), batch) for batch in dataset.take(3)]

    # As runs in one process: each sets the global seed (runtime.seed), then builds its data.
    tf.random.set_seed(1)
    first = training_batches(3)
    tf.random.uniform([7])
    tf.random.set_seed(1)
    for a, b in zip(tf.nest.flatten(first), tf.nest.flatten(training_batches(3))):
        np.testing.assert_array_equal(a, b)
    # A batch's masks come from its seed: another seed (a later batch's) draws other ones.
    ids = tf.ragged.constant([[tokenizer.cls_token_id, *range(1000, 1000 + n), tokenizer.sep_token_id] for n in range(60, 124)])
    positions = [masking.mask_tokens(ids, tokenizer, 20, tf.constant([3, s], tf.int64))[1].numpy() for s in (0, 0, 1)]
    np.testing.assert_array_equal(positions[0], positions[1])
    assert (positions[0] != positions[2]).any(axis=1).mean() > 0.9


def test_dynamic_training_pairs_change_every_epoch(books, tokenizer):
    files = sorted(str(p) for p in books.glob("*.txt"))
    config = PretrainingDataConfig(max_seq_length=SEQ)
    epochs = [[p[0] for p in masking.segment_pairs(files, tokenizer, "prose", config, seed=0, epoch=e)] for e in (0, 1)]
    assert epochs[0] != epochs[1]


# --- causal LM ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gpt2_tokenizer():
    fixtures = os.path.join(REPO, "tests", "fixtures", "hf_gpt2")
    return GPT2Tokenizer(os.path.join(fixtures, "vocab.json"), os.path.join(fixtures, "merges.txt"))


@pytest.fixture(scope="module")
def short_books(tmp_path_factory, books):
    directory = tmp_path_factory.mktemp("short_books")
    for path in books.glob("*.txt"):
        (directory / path.name).write_text(path.read_text(encoding="utf-8")[:12_000], encoding="utf-8")
    return directory


@pytest.fixture(scope="module")
def small_sample(tmp_path_factory, sample_file):
    """The sample's first four documents (byte-level BPE in TensorFlow is slow)."""
    path = tmp_path_factory.mktemp("small") / "sample.txt"
    path.write_text("\n\n".join(open(sample_file, encoding="utf-8").read().split("\n\n")[:4]), encoding="utf-8")
    return str(path)


def whole_document_stream(tokenizer, documents):
    return np.concatenate([np.append(tokenizer.tokenize(d).numpy(), tokenizer.end_token_id) for d in documents])


@pytest.mark.parametrize("input_format", ["prose", "bert"])
def test_causal_lm_blocks_are_the_token_stream_without_padding(gpt2_tokenizer, short_books, sample_file, input_format):
    from tfplm.data import text

    if input_format == "prose":
        pattern = str(short_books / "*.txt")
        documents = ["\n\n".join(text.paragraphs(read_text(p))) for p in sorted(short_books.glob("*.txt"))]
    else:
        pattern = sample_file
        documents = [" ".join(d) for d in read_documents([sample_file], "bert")]
    blocks = np.stack(list(causal_lm.token_blocks(pattern, gpt2_tokenizer, 32, input_format).as_numpy_iterator()))
    stream = whole_document_stream(gpt2_tokenizer, documents)  # tokenized whole, not piece by piece
    assert blocks.shape == (len(stream) // 33, 33)
    np.testing.assert_array_equal(blocks.ravel(), stream[: blocks.size])
    assert len(stream) - blocks.size < 33  # only the last partial block is dropped


def test_causal_lm_labels_are_the_next_tokens(gpt2_tokenizer, small_sample):
    dataset = causal_lm.causal_lm_dataset(small_sample, gpt2_tokenizer, 32, 4, is_training=True, input_format="bert")
    assert dataset.element_spec[0]["token_ids"].shape == (4, 32)
    blocks = np.stack(list(causal_lm.token_blocks(small_sample, gpt2_tokenizer, 32, "bert").as_numpy_iterator()))
    for x, y in dataset.take(3):
        np.testing.assert_array_equal(x["token_ids"].numpy()[:, 1:], y.numpy()[:, :-1])
        assert x["padding_mask"].numpy().all()
        for row_x, row_y in zip(x["token_ids"].numpy(), y.numpy()):
            assert any((row_x == b[:-1]).all() and (row_y == b[1:]).all() for b in blocks)


def test_causal_lm_input_pipelines_get_disjoint_blocks(gpt2_tokenizer, small_sample):
    blocks = list(causal_lm.token_blocks(small_sample, gpt2_tokenizer, 32, "bert").as_numpy_iterator())
    for pipeline in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline)
        mine = list(causal_lm.token_blocks(small_sample, gpt2_tokenizer, 32, "bert", input_context=context).as_numpy_iterator())
        np.testing.assert_array_equal(np.stack(mine), np.stack(blocks[pipeline::2]))


def test_causal_lm_input_pipelines_read_their_own_files(gpt2_tokenizer, small_sample, tmp_path):
    documents = open(small_sample, encoding="utf-8").read().split("\n\n")
    for k in range(2):
        (tmp_path / f"part-{k}.txt").write_text("\n\n".join(documents[2 * k : 2 * k + 2]), encoding="utf-8")
    for pipeline in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline)
        mine = causal_lm.token_blocks(str(tmp_path / "part-*.txt"), gpt2_tokenizer, 32, "bert", input_context=context)
        alone = causal_lm.token_blocks(str(tmp_path / f"part-{pipeline}.txt"), gpt2_tokenizer, 32, "bert")
        np.testing.assert_array_equal(np.stack(list(mine.as_numpy_iterator())), np.stack(list(alone.as_numpy_iterator())))
