"""Bring-your-own labelled text files: CSV / TSV / JSON Lines, label mapping, bad rows."""

import csv
import json
import logging
import re

import pytest
import tensorflow as tf

from tfplm.data import text_files
from tfplm.data.text_files import FileLayout, read_labeled_examples


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return str(path)


REVIEWS_CSV = (
    "id,review,sentiment\n"
    '1,"Loved it, would watch again",positive\n'
    '2,"A ""masterpiece"" of boredom",negative\n'
    "3,It was fine,neutral\n"
    '4,"Two\nlines",positive\n'
)


def test_csv_with_string_labels_maps_them_to_sorted_ids(tmp_path):
    examples = read_labeled_examples(write(tmp_path / "train.csv", REVIEWS_CSV), FileLayout(text="review", label="sentiment"))
    assert examples.label_names == ["negative", "neutral", "positive"]
    assert examples.labels == [2, 0, 1, 2]
    assert examples.texts == ["Loved it, would watch again", 'A "masterpiece" of boredom', "It was fine", "Two\nlines"]
    assert examples.num_classes == 3


def test_label_mapping_saves_and_loads_as_json(tmp_path):
    train = read_labeled_examples(write(tmp_path / "train.csv", REVIEWS_CSV), FileLayout(text="review", label="sentiment"))
    train.save_label_names(str(tmp_path / "labels.json"))
    assert json.loads((tmp_path / "labels.json").read_text()) == {"label_names": ["negative", "neutral", "positive"]}
    names = text_files.load_label_names(str(tmp_path / "labels.json"))
    dev_csv = write(tmp_path / "dev.csv", "review,sentiment\nmeh,neutral\ngreat,positive\n")
    dev = read_labeled_examples(dev_csv, FileLayout(text="review", label="sentiment"), label_names=names)
    assert dev.labels == [1, 2]


def test_label_outside_the_training_labels_is_a_bad_row(tmp_path):
    dev_csv = write(tmp_path / "dev.csv", "review,sentiment\nmeh,neutral\nwow,ecstatic\n")
    with pytest.raises(text_files.BadRowError, match=rf"{dev_csv}:3: label 'ecstatic' is not one of"):
        read_labeled_examples(dev_csv, FileLayout(text="review", label="sentiment"), label_names=["neutral"])


def test_load_label_names_rejects_other_json(tmp_path):
    with pytest.raises(ValueError, match="expected"):
        text_files.load_label_names(write(tmp_path / "labels.json", '{"neutral": 0}'))


def test_integer_labels_sort_numerically(tmp_path):
    path = write(tmp_path / "data.tsv", "text\tstars\na\t10\nb\t2\nc\t1\n")
    examples = read_labeled_examples(path, FileLayout(text="text", label="stars"))
    assert examples.label_names == ["1", "2", "10"]
    assert examples.labels == [2, 1, 0]


def test_csv_quote_handling_follows_the_layout(tmp_path):
    path = write(tmp_path / "data.tsv", 'text\tlabel\n"quoted"\t1\n')
    as_text = read_labeled_examples(path, FileLayout(text="text", label="label"))
    assert as_text.texts == ['"quoted"']  # TSV default: quotes are text
    as_csv = read_labeled_examples(path, FileLayout(text="text", label="label", quoting=csv.QUOTE_MINIMAL))
    assert as_csv.texts == ["quoted"]


def test_jsonl_pairs_regression_and_bad_rows(tmp_path, caplog):
    lines = [
        {"premise": "a", "hypothesis": "b", "score": 0.5},
        {"premise": "c", "hypothesis": "d", "score": "4"},
        "not json",
        [1, 2],
        {"premise": "e", "hypothesis": "f"},
        {"premise": "", "hypothesis": "h", "score": 1},
    ]
    text = "\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n\n"
    path = write(tmp_path / "data.jsonl", text)
    layout = FileLayout(text="premise", text_b="hypothesis", label="score")
    with caplog.at_level(logging.WARNING):
        examples = read_labeled_examples(path, layout, regression=True, skip_bad_rows=True)
    assert (examples.texts, examples.texts_b, examples.labels) == (["a", "c"], ["b", "d"], [0.5, 4.0])
    assert examples.label_names is None and examples.num_classes == 1
    assert examples.bad_rows == {
        text_files.MALFORMED_JSON: 2,
        text_files.MISSING_LABEL: 1,
        text_files.EMPTY_TEXT: 1,
    }
    assert f"{path}:3" in caplog.text and "skipped 4 of 6 rows" in caplog.text
    features, labels = next(iter(examples.to_dataset().batch(2)))
    assert labels.dtype == tf.float32 and sorted(features) == ["text", "text_b"]


def test_headerless_files_take_column_indices(tmp_path):
    path = write(tmp_path / "data.tsv", "x\t1\thello\ny\t0\tbye\n")
    examples = read_labeled_examples(path, FileLayout(text=2, label=1, header=False, num_columns=3))
    assert (examples.texts, examples.labels) == (["hello", "bye"], [1, 0])
    with pytest.raises(ValueError, match="columns must be 0-based indices; got text='sentence'"):
        read_labeled_examples(path, FileLayout(text="sentence", label=1, header=False))


def test_unlabelled_file_gives_features_only(tmp_path):
    path = write(tmp_path / "test.csv", "\ufeffid,text\n7,hello\n8,bye\n")  # a byte-order mark too
    examples = read_labeled_examples(path, FileLayout(text="text", id="id"))
    assert examples.labels is None and examples.ids == ["7", "8"]
    assert sorted(examples.to_dataset().element_spec) == ["id", "text"]


def test_unknown_format_and_non_utf8_say_how_to_fix(tmp_path):
    with pytest.raises(ValueError, match="set FileLayout\\(format=...\\)"):
        read_labeled_examples(write(tmp_path / "data.txt", "a\tb\n"), FileLayout(text=0))
    path = tmp_path / "latin1.tsv"
    path.write_bytes("text\tlabel\nok\t1\ncaf\xe9\t1\n".encode("latin-1"))
    with pytest.raises(ValueError, match=rf"{path}:3: not UTF-8"):
        read_labeled_examples(str(path), FileLayout(text="text", label="label"))


@pytest.mark.parametrize(
    "name, content, layout, expected",
    [
        ("train.tsv", "sentence\tlabel\n", FileLayout(text="sentence", label="label"), "has no examples (only a header line)"),
        ("dev.csv", "text,label\r\n\r\n", FileLayout(text="text", label="label"), "has no examples (only a header line)"),
        ("raw.tsv", "\n", FileLayout(text=0, label=1, header=False), "has no examples (no rows)"),
        ("data.jsonl", "\n", FileLayout(text="text", label="label"), "has no examples (no rows)"),
    ],
)
def test_file_without_examples_is_an_error_naming_it(tmp_path, name, content, layout, expected):
    path = write(tmp_path / name, content)
    with pytest.raises(ValueError, match=rf"^{re.escape(path)} {re.escape(expected)}; expected one example per line$"):
        read_labeled_examples(path, layout)


def test_file_whose_rows_are_all_skipped_is_an_error(tmp_path):
    path = write(tmp_path / "train.tsv", "sentence\tlabel\nno label\t\n\tpos\n")
    with pytest.raises(ValueError, match=rf"^{re.escape(path)}: every row is bad \(1 empty_text, 1 missing_label\)"):
        read_labeled_examples(path, FileLayout(text="sentence", label="label"), skip_bad_rows=True)


def _rare_label_warnings(caplog):
    return [r.getMessage() for r in caplog.records if "rare label" in r.getMessage()]


def test_a_label_with_very_few_rows_is_named_with_its_count(tmp_path, caplog):
    rows = "good film\tpositive\n" * 20 + "bad film\tnegative\n" * 20 + "fine film\tpostive\n"
    path = write(tmp_path / "train.tsv", "sentence\tlabel\n" + rows)
    with caplog.at_level(logging.WARNING):
        examples = read_labeled_examples(path, FileLayout(text="sentence", label="label"))
    assert examples.label_names == ["negative", "positive", "postive"]  # still a class: only a warning
    (message,) = _rare_label_warnings(caplog)
    assert f"{path}: rare label(s) 'postive' (1 row) among 3 labels (the largest has 20 rows)" in message


def test_balanced_or_known_labels_get_no_rare_label_warning(tmp_path, caplog):
    small = write(tmp_path / "small.tsv", "sentence\tlabel\na\tx\nb\tx\nc\ty\n")  # 1 vs 2 rows: not rare
    rare = write(tmp_path / "rare.tsv", "sentence\tlabel\n" + "a\tx\n" * 20 + "b\ty\n")
    with caplog.at_level(logging.WARNING):
        read_labeled_examples(small, FileLayout(text="sentence", label="label"))
        read_labeled_examples(rare, FileLayout(text="sentence", label="label"), label_names=["x", "y"])
    assert _rare_label_warnings(caplog) == []


# CoLA's raw files (in_domain_train.tsv, ...): no header; source, label, original label, sentence.
COLA_RAW = (
    "gj04\t1\t\tOur friends won't buy this analysis, let alone the next one we propose.\n"
    "gj04\t0\t*\tThey drank the pub.\n"
    "clc95\t1\t\tThe sailors rode the breeze clear of the rocks.\n"
)


def test_cola_raw_layout_reads_with_column_numbers(tmp_path):
    path = write(tmp_path / "in_domain_train.tsv", COLA_RAW)
    examples = read_labeled_examples(path, FileLayout(text=3, label=1, header=False, num_columns=4))
    assert examples.texts[1] == "They drank the pub."
    assert (examples.labels, examples.label_names) == ([1, 0, 1], ["0", "1"])


def test_negative_column_numbers_count_from_the_end(tmp_path):
    path = write(tmp_path / "in_domain_train.tsv", COLA_RAW)
    from_end = read_labeled_examples(path, FileLayout(text=-1, label=-3, header=False))
    assert from_end.texts[2] == "The sailors rode the breeze clear of the rocks." and from_end.labels == [1, 0, 1]
    fixed = read_labeled_examples(path, FileLayout(text=-1, label=1, header=False, num_columns=4))
    assert fixed.texts == from_end.texts
    with_header = write(tmp_path / "data.csv", "id,text,label\n1,hello,a\n2,bye,b\n")
    assert read_labeled_examples(with_header, FileLayout(text=-2, label=-1)).texts == ["hello", "bye"]


def test_column_numbers_outside_the_rows_are_an_error(tmp_path):
    path = write(tmp_path / "data.tsv", "x\t1\thello\n")
    with pytest.raises(ValueError, match="layout reads column -4 but rows have 3 columns"):
        read_labeled_examples(path, FileLayout(text=-4, label=1, header=False, num_columns=3))
    with pytest.raises(text_files.BadRowError, match=r"data.tsv:1: 3 columns, expected at least 5"):
        read_labeled_examples(path, FileLayout(text=-5, label=1, header=False))
    with pytest.raises(ValueError, match="column -4 does not exist; the header has 3 columns"):
        read_labeled_examples(write(tmp_path / "h.tsv", "a\tb\tc\n1\t2\t3\n"), FileLayout(text=-4))


def _custom_task(tmp_path, overrides):
    import tfplm

    return tfplm.tasks.get(
        "text/classification",
        overrides=f"task.train_file={tmp_path / 'train.tsv'},task.vocab_file={tmp_path / 'vocab.txt'},{overrides}",
    )


def test_classification_task_reads_cola_raw_files_by_column_number(tmp_path):
    write(tmp_path / "train.tsv", COLA_RAW)
    write(tmp_path / "vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
    task = _custom_task(tmp_path, "task.text_column=3,task.label_column=1")
    assert task.task_config.text_column == 3  # an int from the override, not "3"
    train = task.examples("train")
    assert len(train) == 3 and train.labels == [1, 0, 1]  # no row lost to a header
    assert task.num_classes == 2 and not task.is_pair


def test_classification_task_has_header_overrides_the_guess(tmp_path):
    write(tmp_path / "train.tsv", "source\tlabel\tstar\tsentence\n" + COLA_RAW)
    write(tmp_path / "vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
    task = _custom_task(tmp_path, "task.text_column=-1,task.label_column=1,task.has_header=true")
    assert task.examples("train").labels == [1, 0, 1]
    # Column 0 as the second text of a pair is a column, not "no text_b".
    pair = _custom_task(tmp_path, "task.text_column=3,task.text_b_column=0,task.label_column=1,task.has_header=true")
    assert pair.is_pair and pair.examples("train").texts_b == ["gj04", "gj04", "clc95"]


def test_classification_task_with_a_header_only_train_file_names_it(tmp_path):
    write(tmp_path / "train.tsv", "text\tlabel\n")
    write(tmp_path / "vocab.txt", "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
    task = _custom_task(tmp_path, "task.text_column=text")
    with pytest.raises(ValueError, match=rf"{re.escape(str(tmp_path / 'train.tsv'))} has no examples \(only a header line\)"):
        task.num_classes
