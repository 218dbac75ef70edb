"""Pretraining data: BERT's instance rules, TFRecord format, determinism, dynamic masking, LM blocks."""

import random

import numpy as np
import pytest
import tensorflow as tf

from tfplm.data import causal_lm, masking, pretraining
from tfplm.data.text import read_text, split_sentences, strip_gutenberg
from tfplm.tokenizers import SentencePieceTokenizer, WordPieceTokenizer, train_sentencepiece

from records import write_google_records

SEQ, PREDICTIONS = 64, 10


@pytest.fixture(scope="module")
def vocab_file(minilm_dir):
    return str(minilm_dir / "vocab.txt")


@pytest.fixture(scope="module")
def tokenizer(vocab_file):
    return WordPieceTokenizer(vocab_file)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, shared_data_dir):
    """Two real book excerpts, raw (BOM + Gutenberg header included)."""
    directory = tmp_path_factory.mktemp("books")
    for name in ("emma", "frankenstein"):
        raw = (shared_data_dir / "corpus" / "books" / f"{name}.txt").read_text(encoding="utf-8-sig")
        (directory / f"{name}.txt").write_text("\ufeff" + raw[:60_000], encoding="utf-8")
    return directory


def test_gutenberg_header_and_bom_are_stripped(shared_data_dir):
    text = read_text(shared_data_dir / "corpus" / "books" / "emma.txt")
    assert not text.startswith("\ufeff")
    assert "PROJECT GUTENBERG" not in text[:2000].upper()
    assert "PROJECT GUTENBERG" not in text[-2000:].upper()
    assert strip_gutenberg("\ufeffplain text") == "plain text"


def test_sentence_splitter_keeps_abbreviations_together():
    assert split_sentences('Mr. Knightley came in. "Is it so?" she asked. Yes! Done.') == [
        "Mr. Knightley came in.",
        '"Is it so?" she asked.',
        "Yes!",
        "Done.",
    ]


def make_instances(tokenizer, whole_word=False, n_docs=30, seed=0):
    config = pretraining.PretrainingDataConfig(
        max_seq_length=SEQ, max_predictions_per_seq=PREDICTIONS, do_whole_word_mask=whole_word
    )
    maker = pretraining.InstanceMaker(config, tokenizer.get_vocabulary())
    rng = random.Random(seed)
    vocab = tokenizer.vocabulary_size()
    documents = [
        [[rng.randint(1000, vocab - 1) for _ in range(rng.randint(5, 25))] for _ in range(rng.randint(3, 12))]
        for _ in range(n_docs)
    ]
    instances = [i for d in range(len(documents)) for i in maker.from_document(documents, d, rng)]
    return instances, maker


def test_instances_follow_bert_layout(tokenizer):
    instances, maker = make_instances(tokenizer)
    assert len(instances) > 50
    for instance in instances:
        ids, segments = instance.input_ids, instance.segment_ids
        assert len(ids) <= SEQ and len(ids) == len(segments)
        assert ids[0] == maker.cls_id and ids[-1] == maker.sep_id
        first_sep = segments.index(1) - 1
        assert ids[first_sep] == maker.sep_id
        assert segments == sorted(segments)  # A then B
        positions = instance.masked_lm_positions
        assert positions == sorted(set(positions))
        assert 1 <= len(positions) <= PREDICTIONS
        assert len(positions) == min(PREDICTIONS, max(1, round(len(ids) * 0.15)))
        assert all(p not in (0, first_sep, len(ids) - 1) for p in positions)


def test_half_of_the_next_segments_are_random(tokenizer):
    instances, _ = make_instances(tokenizer, n_docs=80)
    share = np.mean([i.is_random_next for i in instances])
    assert 0.4 < share < 0.65  # single-segment chunks always take a random next


def test_masking_is_80_percent_mask_10_random_10_kept(tokenizer):
    instances, maker = make_instances(tokenizer, n_docs=150)
    mask = kept = other = 0
    for instance in instances:
        for position, label in zip(instance.masked_lm_positions, instance.masked_lm_ids):
            token = instance.input_ids[position]
            mask += token == maker.mask_id
            kept += token == label
            other += token not in (maker.mask_id, label)
    total = mask + kept + other
    assert total > 3000
    assert abs(mask / total - 0.8) < 0.03
    assert abs(kept / total - 0.1) < 0.02
    assert abs(other / total - 0.1) < 0.02


def test_whole_word_masking_masks_all_pieces_of_a_word(tokenizer):
    instances, maker = make_instances(tokenizer, whole_word=True, n_docs=60)
    subword = maker.is_subword
    for instance in instances:
        original = list(instance.input_ids)
        for position, label in zip(instance.masked_lm_positions, instance.masked_lm_ids):
            original[position] = label
        masked = set(instance.masked_lm_positions)
        for position in masked:
            # The piece after a masked piece is masked too if it continues the word.
            if position + 1 < len(original) and subword[original[position + 1]]:
                assert position + 1 in masked


def write_data(corpus, vocab_file, prefix, seed=1, num_shards=2, num_workers=1):
    config = pretraining.PretrainingDataConfig(
        max_seq_length=SEQ, max_predictions_per_seq=PREDICTIONS, dupe_factor=2, random_seed=seed, window_size=20
    )
    files = sorted(str(p) for p in corpus.glob("*.txt"))
    return pretraining.create_pretraining_data(
        files, vocab_file, str(prefix), config, input_format="prose", num_shards=num_shards, num_workers=num_workers
    )


def file_bytes(counts):
    return [open(path, "rb").read() for path in sorted(counts)]


def test_same_seed_same_bytes_for_any_number_of_workers(corpus, vocab_file, tmp_path):
    one = write_data(corpus, vocab_file, tmp_path / "a" / "data")
    again = write_data(corpus, vocab_file, tmp_path / "b" / "data")
    two_workers = write_data(corpus, vocab_file, tmp_path / "c" / "data", num_workers=2)
    other_seed = write_data(corpus, vocab_file, tmp_path / "d" / "data", seed=2)
    assert all(n > 0 for n in one.values()), one
    assert file_bytes(one) == file_bytes(again) == file_bytes(two_workers)
    assert file_bytes(one) != file_bytes(other_seed)
    assert not list(tmp_path.rglob("*.incomplete"))


def test_written_records_read_back_as_model_inputs(corpus, vocab_file, tmp_path, tokenizer):
    counts = write_data(corpus, vocab_file, tmp_path / "data")
    dataset = pretraining.bert_pretraining_dataset(str(tmp_path / "data-*"), SEQ, PREDICTIONS, 8, is_training=False)
    features, labels = next(iter(dataset))
    assert set(features) == {"input_word_ids", "input_mask", "input_type_ids", "masked_lm_positions"}
    assert features["input_word_ids"].shape == (8, SEQ) and features["input_word_ids"].dtype == tf.int32
    ids = features["input_word_ids"].numpy()
    assert (ids[:, 0] == tokenizer.cls_token_id).all()
    weights = labels["masked_lm_weights"].numpy()
    gathered = np.take_along_axis(ids, features["masked_lm_positions"].numpy(), axis=1)
    assert ((gathered == tokenizer.mask_token_id) | (weights == 0)).mean() > 0.7
    assert sum(1 for _ in dataset.unbatch()) == sum(counts.values())


def test_records_in_google_research_format_are_read(tmp_path):
    write_google_records(tmp_path / "google.tfrecord")
    dataset = pretraining.bert_pretraining_dataset(str(tmp_path / "google.tfrecord"), SEQ, PREDICTIONS, 16, is_training=True)
    features, labels = next(iter(dataset))
    assert labels["masked_lm_weights"].numpy().sum(axis=1).tolist() == [5.0] * 16
    assert labels["next_sentence_labels"].shape == (16,)


def test_records_are_sharded_across_input_pipelines(tmp_path):
    write_google_records(tmp_path / "google.tfrecord", n=20)
    seen = []
    for pipeline in range(2):
        context = tf.distribute.InputContext(num_input_pipelines=2, input_pipeline_id=pipeline, num_replicas_in_sync=2)
        dataset = pretraining.bert_pretraining_dataset(str(tmp_path / "google.tfrecord"), SEQ, PREDICTIONS, 5, False, input_context=context)
        seen.append([tuple(x) for f, _ in dataset for x in f["input_word_ids"].numpy()])
    assert len(seen[0]) == len(seen[1]) == 10
    assert not set(seen[0]) & set(seen[1])


def test_dynamic_masking_draws_fresh_masks_and_never_masks_specials(corpus, tokenizer):
    dataset = masking.dynamic_masking_dataset(
        str(corpus / "*.txt"), tokenizer, SEQ, PREDICTIONS, 64, is_training=False, input_format="prose"
    )
    first = [(f["masked_lm_positions"].numpy(), f["input_word_ids"].numpy(), l) for f, l in dataset.take(4)]
    second = [f["masked_lm_positions"].numpy() for f, _ in dataset.take(4)]
    assert any(not np.array_equal(a[0], b) for a, b in zip(first, second))  # new masks per epoch
    mask = kept = total = selected = real = 0
    for positions, ids, labels in first:
        weights = labels["masked_lm_weights"].numpy() > 0
        chosen = np.take_along_axis(ids, positions, axis=1)[weights]
        originals = labels["masked_lm_ids"].numpy()[weights]
        assert not np.isin(originals, [tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id]).any()
        mask += (chosen == tokenizer.mask_token_id).sum()
        kept += (chosen == originals).sum()
        total += weights.sum()
        real += (ids != 0).sum() - 3 * len(ids)  # non-special tokens
        selected += weights.sum()
    assert abs(mask / total - 0.8) < 0.06 and abs(kept / total - 0.1) < 0.05
    assert 0.11 < selected / real < 0.17  # 15% (capped at max_predictions per row)


def test_causal_lm_blocks_are_the_token_stream_without_padding(corpus, tmp_path):
    lines = read_text(corpus / "emma.txt").split("\n")
    spm = SentencePieceTokenizer(proto=train_sentencepiece(lines, 400, str(tmp_path / "spm")))
    blocks = np.concatenate(list(causal_lm.token_blocks(str(corpus / "emma.txt"), spm, 32).as_numpy_iterator()))
    documents = [" ".join(d) for d in pretraining.read_documents([str(corpus / "emma.txt")], "prose")]
    stream = np.concatenate([np.append(spm.tokenize(d).numpy(), spm.end_token_id) for d in documents])
    assert len(blocks) == (len(stream) // 33) * 33
    np.testing.assert_array_equal(blocks, stream[: len(blocks)])
    x, y = next(iter(causal_lm.causal_lm_dataset(str(corpus / "emma.txt"), spm, 32, 4, is_training=False)))
    np.testing.assert_array_equal(x["token_ids"].numpy()[:, 1:], y.numpy()[:, :-1])
    assert x["padding_mask"].numpy().all()
