"""GLUE data: the official TSV layouts, bad rows, TFDS mapping, submission files."""

import pytest
import tensorflow as tf

from tfplm.data import text_files
from tfplm.data import glue as glue_data
from tfplm.data.glue import GLUE_TASKS

# (task, split) -> (rows, first text, first text_b, first label, first id) of tests/data/glue.
EXPECTED = {
    ("cola", "train"): (3, "Our friends won't buy this analysis, let alone the next one we propose.", None, 1, None),
    ("cola", "validation"): (2, "The more we study verbs, the crazier they get.", None, 1, None),
    ("cola", "test"): (2, "Bill whistled past the house.", None, None, "0"),
    ("sst2", "train"): (2, "hide new secretions from the parental units ", None, 0, None),
    ("sst2", "validation"): (2, "it 's a charming and often affecting journey . ", None, 1, None),
    ("sst2", "test"): (2, "uneasy mishmash of styles and genres .", None, None, "0"),
    ("mrpc", "train"): (
        2,
        'Amrozi accused his brother , whom he called " the witness " , of deliberately distorting his evidence .',
        'Referring to him as only " the witness " , Amrozi accused his brother of deliberately distorting his evidence .',
        1,
        None,
    ),
    ("mrpc", "validation"): (
        1,
        "He said the foodservice pie business doesn 't fit the company 's long-term growth strategy .",
        '" The foodservice pie business does not fit our long-term growth strategy .',
        1,
        None,
    ),
    ("mrpc", "test"): (
        1,
        "PCCW 's chief operating officer , Mike Butcher , and Alex Arena , the chief financial officer , "
        "will report directly to Mr So .",
        "Current Chief Operating Officer Mike Butcher and Group Chief Financial Officer Alex Arena will report to So .",
        None,
        "0",
    ),
    ("stsb", "train"): (2, "A plane is taking off.", "An air plane is taking off.", 5.0, None),
    ("stsb", "validation"): (3, "A man with a hard hat is dancing.", "A man wearing a hard hat is dancing.", 5.0, None),
    ("stsb", "test"): (1, "A girl is styling her hair.", "A girl is brushing her hair.", None, "0"),
    ("qqp", "train"): (
        2,
        "How is the life of a math student? Could you describe your own experiences?",
        "Which level of prepration is enough for the exam jlpt5?",
        0,
        None,
    ),
    ("qqp", "validation"): (
        1, "Why are African-Americans so beautiful?", "Why are hispanics so beautiful?", 0, None
    ),
    ("qqp", "test"): (
        1,
        "How does the Surface Pro himself 4 compare with iPad Pro?",
        "Why did Microsoft choose core m3 and not core i3 home Surface Pro 4?",
        None,
        "0",
    ),
    ("mnli", "train"): (
        3,
        "Conceptually cream skimming has two basic dimensions - product and geography.",
        "Product and geography are what make cream skimming work. ",
        2,  # neutral
        None,
    ),
    ("mnli", "validation_matched"): (
        1, "The new rights are nice enough", "Everyone really likes the newest benefits ", 2, None
    ),
    ("mnli", "validation_mismatched"): (
        1,
        "Your contribution helped make it possible for us to provide our students with a quality education.",
        "Your contributions were of no help with our students' education.",
        0,  # contradiction
        None,
    ),
    ("mnli", "test_matched"): (
        1,
        "Hierbas, ans seco, ans dulce, and frigola are just a few names worth keeping a look-out for.",
        "Hierbas is a name worth looking out for.",
        None,
        "0",
    ),
    ("mnli", "test_mismatched"): (
        1,
        "Your contribution helped make it possible for us to provide our students with a quality education.",
        "Your contributions were of no help with our students' education.",
        None,
        "0",
    ),
    ("qnli", "train"): (
        2,
        "When did the third Digimon series begin?",
        "Unlike the two seasons before it and most of the seasons that followed, Digimon Tamers takes a darker "
        "and more realistic approach to its story featuring Digimon who do not reincarnate after their deaths "
        "and more complex character development in the original Japanese.",
        1,  # not_entailment
        None,
    ),
    ("qnli", "validation"): (
        1,
        "What came into force after the new constitution was herald?",
        "As of that day, the new constitution heralding the Second Republic came into force.",
        0,
        None,
    ),
    ("qnli", "test"): (
        1,
        "What organization is devoted to Jihad against Israel?",
        "For some decades prior to the First Palestine Intifada in 1987, the Muslim Brotherhood in Palestine "
        'took a "quiescent" stance towards Israel.',
        None,
        "0",
    ),
    ("rte", "train"): (
        2, "No Weapons of Mass Destruction Found in Iraq Yet.", "Weapons of Mass Destruction Found in Iraq.", 1, None
    ),
    ("rte", "validation"): (
        1,
        "Dana Reeve, the widow of the actor Christopher Reeve, has died of lung cancer at age 44.",
        "Christopher Reeve had an accident.",
        1,
        None,
    ),
    ("rte", "test"): (
        1, "Mangla was summoned after Madhumita's sister Nidhi Shukla complained.", "Shukla is related to Mangla.",
        None, "0",
    ),
    ("wnli", "train"): (
        2,
        "I stuck a pin through a carrot. When I pulled the pin out, it had a hole.",
        "The carrot had a hole.",
        1,
        None,
    ),
    ("wnli", "validation"): (
        1, "The drain is clogged with hair. It has to be cleaned.", "The hair has to be cleaned.", 0, None
    ),
    ("wnli", "test"): (
        1,
        "Maude and Dora had seen the trains rushing across the prairie.",
        "Horses ran away when Maude and Dora came into sight.",
        None,
        "0",
    ),
    ("ax", "test"): (2, "The cat sat on the mat.", "The cat did not sit on the mat.", None, "0"),
}
EXPECTED[("mnli_matched", "validation")] = EXPECTED[("mnli", "validation_matched")]
EXPECTED[("mnli_matched", "test")] = EXPECTED[("mnli", "test_matched")]
EXPECTED[("mnli_mismatched", "validation")] = EXPECTED[("mnli", "validation_mismatched")]
EXPECTED[("mnli_mismatched", "test")] = EXPECTED[("mnli", "test_mismatched")]


@pytest.fixture(scope="module")
def glue_dir(test_data_dir):
    return str(test_data_dir / "glue")


def test_expected_covers_every_split_of_every_task():
    assert set(EXPECTED) == {(task, split) for task, info in GLUE_TASKS.items() for split in info.splits}


@pytest.mark.parametrize("task, split", sorted(EXPECTED), ids=lambda x: x)
def test_reads_the_official_layout(glue_dir, task, split):
    rows, text, text_b, label, first_id = EXPECTED[(task, split)]
    examples = glue_data.read_glue_split(glue_dir, task, split)
    assert len(examples) == rows
    assert examples.texts[0] == text
    assert (examples.texts_b[0] if examples.texts_b is not None else None) == text_b
    assert (examples.labels[0] if examples.labels is not None else None) == label
    assert (examples.ids[0] if examples.ids is not None else None) == first_id
    assert examples.bad_rows == {}
    info = GLUE_TASKS[task]
    assert examples.regression == info.is_regression
    assert examples.label_names == (None if info.is_regression else list(info.label_names))


def test_quotes_in_glue_files_are_text(glue_dir):
    # GLUE files are not CSV-quoted: a field starting with a quote ends at the tab.
    examples = glue_data.read_glue_split(glue_dir, "stsb", "validation")
    assert examples.texts[1] == '"Obama signs "historic" bill'
    assert examples.labels == [5.0, 2.5, 0.0]


def test_pair_task_dataset_has_text_b_and_labels(glue_dir):
    dataset = glue_data.read_glue_split(glue_dir, "mnli", "train").to_dataset()
    features, labels = next(iter(dataset.batch(3)))
    assert sorted(features) == ["text", "text_b"]
    assert labels.dtype == tf.int32
    names = GLUE_TASKS["mnli"].label_names
    assert [names[i] for i in labels.numpy()] == ["neutral", "entailment", "contradiction"]


def test_test_split_dataset_has_ids_and_no_labels(glue_dir):
    dataset = glue_data.read_glue_split(glue_dir, "rte", "test").to_dataset()
    assert sorted(dataset.element_spec) == ["id", "text", "text_b"]


@pytest.fixture(params=["shipped", pytest.param("full", marks=pytest.mark.full_data)])
def real_sst2(request, test_data_dir):
    """(GLUE folder with SST-2/dev.tsv, one with SST-2/train.tsv, rows of that train.tsv).

    shipped: tools/demo_data (the real dev.tsv, byte for byte) and tests/data/sst2_train_head
    (the real train.tsv's header and first 300 rows, byte for byte). full: ../shared/data/glue.
    """
    if request.param == "shipped":
        return str(test_data_dir.parents[1] / "tools" / "demo_data"), str(test_data_dir / "sst2_train_head"), 300
    glue = str(request.getfixturevalue("shared_data_dir") / "glue")
    return glue, glue, 67_349


def test_real_sst2_dev_has_872_rows(real_sst2):
    examples = glue_data.read_glue_split(real_sst2[0], "sst2", "validation")
    assert len(examples) == 872
    assert examples.labels.count(0) == 428 and examples.labels.count(1) == 444
    assert examples.texts[0] == "one long string of cliches ."


def test_real_sst2_train_is_read_by_header_names_and_any_line_ending(real_sst2):
    # This copy has its columns as "label<TAB>sentence" and CRLF line endings.
    _, glue, rows = real_sst2
    with open(f"{glue}/SST-2/train.tsv", "rb") as f:
        assert f.readline() == b"label\tsentence\r\n"
    examples = glue_data.read_glue_split(glue, "sst2", "train")
    assert len(examples) == rows
    assert examples.texts[0] == "hide new secretions from the parental units"
    assert not any(t.endswith(("\r", "\n")) for t in examples.texts)
    assert set(examples.labels) == {0, 1}


# (file of the SST-2 layout or an STS-B one, bad line, reason) for each way a row can be bad.
BAD_ROWS = [
    ("SST-2", "a sentence\twith a tab\t1", text_files.WRONG_COLUMN_COUNT),
    ("SST-2", "no label at all", text_files.WRONG_COLUMN_COUNT),
    ("SST-2", "an empty label\t", text_files.MISSING_LABEL),
    ("SST-2", "a label outside the set\t2", text_files.UNKNOWN_LABEL),
    ("SST-2", " \t1", text_files.EMPTY_TEXT),
    ("STS-B", "0\tg\tf\t2012\t1\tnone\tnone\tA man.\tA man.\t5.500", text_files.INVALID_LABEL),
    ("STS-B", "0\tg\tf\t2012\t1\tnone\tnone\tA man.\tA man.\tfive", text_files.INVALID_LABEL),
    ("STS-B", "0\tg\tf\t2012\t1\tnone\tnone\tA man.\t\t3.0", text_files.EMPTY_TEXT),
]
GOOD = {
    "SST-2": ("sentence\tlabel", "a fine film\t1"),
    "STS-B": (
        "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore",
        "0\tg\tf\t2012\t1\tnone\tnone\tA man.\tA dog.\t1.0",
    ),
}
TASK = {"SST-2": "sst2", "STS-B": "stsb"}


def write_dev(root, directory, lines):
    (root / directory).mkdir(exist_ok=True)
    path = root / directory / "dev.tsv"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("directory, bad, reason", BAD_ROWS, ids=[f"{r}-{i}" for i, (_, _, r) in enumerate(BAD_ROWS)])
def test_bad_row_fails_with_file_and_line(tmp_path, directory, bad, reason):
    header, good = GOOD[directory]
    path = write_dev(tmp_path, directory, [header, good, bad, good])
    with pytest.raises(text_files.BadRowError, match=rf"^{path}:3: .*\({reason}\).*skip_bad_rows=True") as error:
        glue_data.read_glue_split(str(tmp_path), TASK[directory], "validation")
    assert (error.value.path, error.value.line, error.value.reason) == (path, 3, reason)


def test_bad_rows_are_skipped_and_counted(tmp_path):
    header, good = GOOD["SST-2"]
    bad = [line for directory, line, _ in BAD_ROWS if directory == "SST-2"]
    write_dev(tmp_path, "SST-2", [header, good, *bad, "", good])
    examples = glue_data.read_glue_split(str(tmp_path), "sst2", "validation", skip_bad_rows=True)
    assert examples.texts == ["a fine film", "a fine film"]  # the blank line is no row
    assert examples.bad_rows == {
        text_files.WRONG_COLUMN_COUNT: 2,
        text_files.MISSING_LABEL: 1,
        text_files.UNKNOWN_LABEL: 1,
        text_files.EMPTY_TEXT: 1,
    }


def test_regression_bad_rows_are_skipped_and_counted(tmp_path):
    header, good = GOOD["STS-B"]
    bad = [line for directory, line, _ in BAD_ROWS if directory == "STS-B"]
    write_dev(tmp_path, "STS-B", [header, *bad, good])
    examples = glue_data.read_glue_split(str(tmp_path), "stsb", "validation", skip_bad_rows=True)
    assert examples.labels == [1.0]
    assert examples.bad_rows == {text_files.INVALID_LABEL: 2, text_files.EMPTY_TEXT: 1}


def test_missing_column_in_header_names_the_column(tmp_path):
    write_dev(tmp_path, "SST-2", ["text\tlabel", "a fine film\t1"])
    with pytest.raises(ValueError, match="column 'sentence' is missing from the header"):
        glue_data.read_glue_split(str(tmp_path), "sst2", "validation")


def test_unknown_task_split_and_directory_say_what_exists(tmp_path):
    with pytest.raises(ValueError, match="unknown GLUE task 'sst-2'; expected one of cola, sst2"):
        glue_data.read_glue_split(str(tmp_path), "sst-2", "train")
    with pytest.raises(ValueError, match="has no split 'dev'; it has train, validation, test"):
        glue_data.read_glue_split(str(tmp_path), "sst2", "dev")
    with pytest.raises(FileNotFoundError, match="the GLUE folder holding SST-2/dev.tsv"):
        glue_data.read_glue_split(str(tmp_path), "sst2", "validation")


def test_task_table_describes_metrics_and_labels():
    assert GLUE_TASKS["sst2"].main_metric == "accuracy" and GLUE_TASKS["sst2"].num_classes == 2
    assert GLUE_TASKS["cola"].metric_names == ("matthews_correlation",)
    assert GLUE_TASKS["mrpc"].metric_names == ("f1", "accuracy")
    assert GLUE_TASKS["qqp"].metric_names == ("f1", "accuracy")
    stsb = GLUE_TASKS["stsb"]
    assert stsb.is_regression and stsb.num_classes == 1
    assert stsb.metric_names == ("spearman_correlation", "pearson_correlation")
    assert GLUE_TASKS["mnli"].label_names == ("contradiction", "entailment", "neutral")
    assert GLUE_TASKS["qnli"].label_names == GLUE_TASKS["rte"].label_names == ("entailment", "not_entailment")
    for task, info in GLUE_TASKS.items():
        built = info.build_metrics()
        assert [m.name for m in built] == list(info.metric_names), task


def test_tfds_label_map_matches_labels_by_name():
    # TFDS orders MNLI's labels entailment, neutral, contradiction.
    assert glue_data.tfds_label_map("mnli", ["entailment", "neutral", "contradiction"]) == [1, 2, 0]
    assert glue_data.tfds_label_map("rte", ["entailment", "not_entailment"]) == [0, 1]
    # 0/1 tasks: TFDS's ids are the files' numbers, whatever it calls them.
    assert glue_data.tfds_label_map("wnli", ["not_entailment", "entailment"]) == [0, 1]
    with pytest.raises(ValueError, match="do not match"):
        glue_data.tfds_label_map("rte", ["yes", "no", "maybe"])


def test_tfds_example_mapper_maps_feature_names():
    example = {"premise": tf.constant("p"), "hypothesis": tf.constant("h"), "label": tf.constant(0, tf.int64),
               "idx": tf.constant(7, tf.int32)}
    features, label = glue_data.tfds_example_mapper("mnli", True, ["entailment", "neutral", "contradiction"])(example)
    assert (features["text"].numpy(), features["text_b"].numpy(), int(label)) == (b"p", b"h", 1)
    features = glue_data.tfds_example_mapper("mnli", False)(example)
    assert features["id"].numpy() == b"7" and sorted(features) == ["id", "text", "text_b"]


def test_load_glue_tfds_gives_the_text_file_structure():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=6, policy=tfds.testing.MockPolicy.USE_CODE):
        raw = list(tfds.builder("glue/mnli").as_dataset(split="validation_matched").as_numpy_iterator())
        tfds_names = tfds.builder("glue/mnli").info.features["label"].names
        mapped = list(glue_data.load_glue_tfds("mnli", "validation_matched").as_numpy_iterator())
        test = glue_data.load_glue_tfds("mnli", "test_matched").element_spec
        stsb = glue_data.load_glue_tfds("stsb", "train").element_spec
    assert len(mapped) == len(raw) == 6
    names = GLUE_TASKS["mnli"].label_names
    for (features, label), example in zip(mapped, raw):
        assert (features["text"], features["text_b"]) == (example["premise"], example["hypothesis"])
        assert names[label] == tfds_names[example["label"]]
    assert sorted(test) == ["id", "text", "text_b"]
    assert stsb[1].dtype == tf.float32 and sorted(stsb[0]) == ["text", "text_b"]


def test_load_glue_tfds_without_data_says_how_to_prepare_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="tfds build glue/rte"):
        glue_data.load_glue_tfds("rte", "validation", data_dir=str(tmp_path))


@pytest.mark.parametrize(
    "task, predictions, ids, expected",
    [
        ("rte", [0, 1, 1], None, "0\tentailment\n1\tnot_entailment\n2\tnot_entailment\n"),
        ("cola", [[0.3, -1.0], [0.1, 2.0]], None, "0\t0\n1\t1\n"),
        ("stsb", [[1.23456], [4.9], [0.0]], None, "0\t1.235\n1\t4.900\n2\t0.000\n"),
        ("mnli_matched", [2, 0], [b"1", b"0"], "1\tneutral\n0\tcontradiction\n"),
        ("mnli_mismatched", [1], None, "0\tentailment\n"),
        ("ax", [[0.1, 0.2, 0.7]], None, "0\tneutral\n"),
        ("qqp", [1, 0], [5, 6], "5\t1\n6\t0\n"),
    ],
)
def test_submission_file_matches_the_official_format(tmp_path, task, predictions, ids, expected):
    path = glue_data.write_glue_predictions(task, predictions, str(tmp_path), ids=ids)
    assert path == str(tmp_path / GLUE_TASKS[task].submission_file)
    with open(path, "rb") as f:
        assert f.read() == ("index\tprediction\n" + expected).encode()


def test_submission_has_the_official_file_names(tmp_path):
    for task, info in GLUE_TASKS.items():
        if info.submission_file:
            glue_data.write_glue_predictions(task, [0.5] if info.is_regression else [0], str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["CoLA.tsv", "SST-2.tsv", "MRPC.tsv", "STS-B.tsv", "QQP.tsv", "MNLI-m.tsv", "MNLI-mm.tsv",
         "QNLI.tsv", "RTE.tsv", "WNLI.tsv", "AX.tsv"]
    )


def test_submission_rejects_mnli_and_bad_predictions(tmp_path):
    with pytest.raises(ValueError, match="'mnli_matched' and 'mnli_mismatched'"):
        glue_data.write_glue_predictions("mnli", [0], str(tmp_path))
    with pytest.raises(ValueError, match=r"class ids must be in \[0, 2\)"):
        glue_data.write_glue_predictions("sst2", [0, 2], str(tmp_path))
    with pytest.raises(ValueError, match="2 ids for 3 predictions"):
        glue_data.write_glue_predictions("sst2", [0, 1, 1], str(tmp_path), ids=[0, 1])
