"""The GLUE benchmark's data: its TSV files, its TFDS datasets, its submission files.

Two sources give the same examples, `({"text": s, "text_b": s}, label)` with
`text_b` only for sentence pairs, class ids in the order of
`GLUE_TASKS[task].label_names` (int32) and STS-B scores as float32:

    # The official TSV files, as `download_glue_data.py` lays them out:
    examples = read_glue_split("/data/glue", "sst2", "validation")
    dataset = examples.to_dataset()
    # The same through TensorFlow Datasets (prepared beforehand, or download=True):
    dataset = load_glue_tfds("sst2", "validation", data_dir="/data/tfds")

Test splits have no labels: they give the features alone, with the example's
index as feature "id", which `write_glue_predictions` writes into the
submission file.

Tasks are named as in TFDS (`glue/<name>`): cola, sst2, mrpc, stsb, qqp, mnli,
mnli_matched, mnli_mismatched, qnli, rte, wnli, ax; splits too: train,
validation, test, and for mnli validation_matched, validation_mismatched,
test_matched, test_mismatched.
"""

import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfplm import metrics
from tfplm.data.text_files import FileLayout, read_labeled_examples


@dataclasses.dataclass(frozen=True)
class GlueTaskInfo:
    """What a GLUE task is: its files, labels and metrics.

    Attributes:
        name: the TFDS config name, e.g. "sst2".
        directory: the task's folder in the GLUE data, e.g. "SST-2".
        files: split -> (file name, `FileLayout`) of the official TSV files.
        main_metric: the metric the GLUE papers report first (BERT's choice:
            F1 for MRPC/QQP, Spearman for STS-B, MCC for CoLA, else accuracy).
        other_metrics: further metrics of the GLUE leaderboard.
        label_names: class id -> label as written in the files and
            submissions; None for regression (STS-B).
        label_range: regression targets' (low, high).
        tfds_text_features: the TFDS feature names of text (and text_b).
        submission_file: the file name in a GLUE submission; None for "mnli",
            whose test sets are submitted as mnli_matched / mnli_mismatched.

    Example:
        >>> info = GLUE_TASKS["mrpc"]
        >>> info.metric_names, info.num_classes, info.files["validation"][0]
        (('f1', 'accuracy'), 2, 'dev.tsv')
    """

    name: str
    directory: str
    files: dict
    main_metric: str
    label_names: tuple | None
    tfds_text_features: tuple
    submission_file: str | None
    other_metrics: tuple = ()
    label_range: tuple | None = None

    @property
    def is_regression(self):
        return self.label_names is None

    @property
    def num_classes(self):
        """Classes, or 1 (one output) for regression."""
        return 1 if self.is_regression else len(self.label_names)

    @property
    def metric_names(self):
        return (self.main_metric,) + self.other_metrics

    @property
    def splits(self):
        return tuple(self.files)

    @property
    def is_pair(self):
        return len(self.tfds_text_features) == 2

    def build_metrics(self):
        """Fresh Keras metrics named as `metric_names`, for a model's [B, C] logits
        (or [B] / [B, 1] scores for regression); create them under the strategy's scope."""
        builders = {
            "accuracy": lambda: keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
            "f1": lambda: metrics.F1Score(name="f1"),
            "matthews_correlation": lambda: metrics.MatthewsCorrelation(
                num_classes=self.num_classes, name="matthews_correlation"
            ),
            "pearson_correlation": lambda: metrics.PearsonCorrelation(name="pearson_correlation"),
            "spearman_correlation": lambda: metrics.SpearmanCorrelation(name="spearman_correlation"),
        }
        return [builders[name]() for name in self.metric_names]


def _splits(layout, test_layout):
    return {"train": ("train.tsv", layout), "validation": ("dev.tsv", layout), "test": ("test.tsv", test_layout)}


def _pair(text, text_b, label):
    return FileLayout(text=text, text_b=text_b, label=label)


def _test(text, text_b=None, index="index"):
    return FileLayout(id=index, text=text, text_b=text_b)


_BINARY = ("0", "1")
_NLI = ("contradiction", "entailment", "neutral")
_ENTAILMENT = ("entailment", "not_entailment")
_MNLI = _pair("sentence1", "sentence2", "gold_label")
_MNLI_TEST = _test("sentence1", "sentence2")

# The layouts as released (https://gluebenchmark.com/tasks, download_glue_data.py).
# Headers are matched by name; only CoLA's train/dev files have none:
# source, label, original annotation, sentence.
GLUE_TASKS = {
    info.name: info
    for info in (
        GlueTaskInfo(
            "cola", "CoLA",
            _splits(FileLayout(text=3, label=1, header=False, num_columns=4), _test("sentence")),
            main_metric="matthews_correlation", label_names=_BINARY,
            tfds_text_features=("sentence",), submission_file="CoLA.tsv",
        ),
        GlueTaskInfo(
            "sst2", "SST-2",
            _splits(FileLayout(text="sentence", label="label"), _test("sentence")),
            main_metric="accuracy", label_names=_BINARY,
            tfds_text_features=("sentence",), submission_file="SST-2.tsv",
        ),
        GlueTaskInfo(
            "mrpc", "MRPC",
            _splits(_pair("#1 String", "#2 String", "Quality"), _test("#1 String", "#2 String")),
            main_metric="f1", other_metrics=("accuracy",), label_names=_BINARY,
            tfds_text_features=("sentence1", "sentence2"), submission_file="MRPC.tsv",
        ),
        GlueTaskInfo(
            "stsb", "STS-B",
            _splits(_pair("sentence1", "sentence2", "score"), _test("sentence1", "sentence2")),
            main_metric="spearman_correlation", other_metrics=("pearson_correlation",),
            label_names=None, label_range=(0.0, 5.0),
            tfds_text_features=("sentence1", "sentence2"), submission_file="STS-B.tsv",
        ),
        GlueTaskInfo(
            "qqp", "QQP",
            _splits(_pair("question1", "question2", "is_duplicate"), _test("question1", "question2", index="id")),
            main_metric="f1", other_metrics=("accuracy",), label_names=_BINARY,
            tfds_text_features=("question1", "question2"), submission_file="QQP.tsv",
        ),
        GlueTaskInfo(
            "mnli", "MNLI",
            {
                "train": ("train.tsv", _MNLI),
                "validation_matched": ("dev_matched.tsv", _MNLI),
                "validation_mismatched": ("dev_mismatched.tsv", _MNLI),
                "test_matched": ("test_matched.tsv", _MNLI_TEST),
                "test_mismatched": ("test_mismatched.tsv", _MNLI_TEST),
            },
            main_metric="accuracy", label_names=_NLI,
            tfds_text_features=("premise", "hypothesis"), submission_file=None,
        ),
        GlueTaskInfo(
            "mnli_matched", "MNLI",
            {"validation": ("dev_matched.tsv", _MNLI), "test": ("test_matched.tsv", _MNLI_TEST)},
            main_metric="accuracy", label_names=_NLI,
            tfds_text_features=("premise", "hypothesis"), submission_file="MNLI-m.tsv",
        ),
        GlueTaskInfo(
            "mnli_mismatched", "MNLI",
            {"validation": ("dev_mismatched.tsv", _MNLI), "test": ("test_mismatched.tsv", _MNLI_TEST)},
            main_metric="accuracy", label_names=_NLI,
            tfds_text_features=("premise", "hypothesis"), submission_file="MNLI-mm.tsv",
        ),
        GlueTaskInfo(
            "qnli", "QNLI",
            _splits(_pair("question", "sentence", "label"), _test("question", "sentence")),
            main_metric="accuracy", label_names=_ENTAILMENT,
            tfds_text_features=("question", "sentence"), submission_file="QNLI.tsv",
        ),
        GlueTaskInfo(
            "rte", "RTE",
            _splits(_pair("sentence1", "sentence2", "label"), _test("sentence1", "sentence2")),
            main_metric="accuracy", label_names=_ENTAILMENT,
            tfds_text_features=("sentence1", "sentence2"), submission_file="RTE.tsv",
        ),
        GlueTaskInfo(
            "wnli", "WNLI",
            _splits(_pair("sentence1", "sentence2", "label"), _test("sentence1", "sentence2")),
            main_metric="accuracy", label_names=_BINARY,
            tfds_text_features=("sentence1", "sentence2"), submission_file="WNLI.tsv",
        ),
        # The diagnostic set: MNLI-style pairs, test only, scored by the
        # leaderboard with (3-class) Matthews correlation; predict it with an
        # MNLI model.
        GlueTaskInfo(
            "ax", "diagnostic",
            {"test": ("diagnostic.tsv", _test("sentence1", "sentence2"))},
            main_metric="matthews_correlation", label_names=_NLI,
            tfds_text_features=("premise", "hypothesis"), submission_file="AX.tsv",
        ),
    )
}


def get_task_info(task):
    """`GLUE_TASKS[task]`, with an error listing the tasks for an unknown name."""
    if task not in GLUE_TASKS:
        raise ValueError(f"unknown GLUE task {task!r}; expected one of {', '.join(GLUE_TASKS)}")
    return GLUE_TASKS[task]


def _split_file(info, split):
    if split not in info.files:
        raise ValueError(f"GLUE task {info.name!r} has no split {split!r}; it has {', '.join(info.splits)}")
    return info.files[split]


def is_labeled_split(split):
    """GLUE's test splits come without labels."""
    return not split.startswith("test")


def read_glue_split(data_dir, task, split, *, skip_bad_rows=False):
    """Reads one split of a GLUE task from the official TSV files.

    Args:
        data_dir: the GLUE folder, holding CoLA/, SST-2/, ..., diagnostic/.
        task: a key of `GLUE_TASKS`, e.g. "sst2".
        split: one of `GLUE_TASKS[task].splits`, e.g. "validation".
        skip_bad_rows: skip and count malformed rows instead of raising
            (see `tfplm.data.text_files`).

    Returns:
        A `tfplm.data.text_files.LabeledExamples` whose `label_names` are the
        task's; test splits have no labels and keep the index column as `ids`.

    Example:
        >>> examples = read_glue_split("/data/glue", "mrpc", "validation")  # doctest: +SKIP
        >>> examples.texts[0], examples.texts_b[0], examples.labels[0]  # doctest: +SKIP
    """
    info = get_task_info(task)
    file_name, layout = _split_file(info, split)
    path = os.path.join(data_dir, info.directory, file_name)
    if not tf.io.gfile.exists(path):
        raise FileNotFoundError(
            f"{path} not found; data_dir should be the GLUE folder holding {info.directory}/{file_name}"
        )
    return read_labeled_examples(
        path,
        layout,
        label_names=None if info.is_regression else list(info.label_names),
        regression=info.is_regression,
        label_range=info.label_range,
        skip_bad_rows=skip_bad_rows,
    )


def tfds_label_map(task, tfds_label_names):
    """Class id in TFDS -> class id in `GLUE_TASKS[task].label_names`.

    TFDS names GLUE's 0/1 labels (e.g. "negative"/"positive") with ids equal to
    the files' numbers, and orders MNLI's as entailment, neutral, contradiction;
    named labels are matched by name.
    """
    info = get_task_info(task)
    names = list(tfds_label_names)
    if set(names) == set(info.label_names):
        return [info.label_names.index(name) for name in names]
    if info.label_names == tuple(str(i) for i in range(len(names))):
        return list(range(len(names)))
    raise ValueError(f"TFDS labels {names} of glue/{task} do not match {list(info.label_names)}")


def tfds_example_mapper(task, labeled, tfds_label_names=None):
    """The function mapping a TFDS glue example to ({"text", "text_b"}, label).

    Args:
        task: a key of `GLUE_TASKS`.
        labeled: False for test splits: features only, with "idx" as "id".
        tfds_label_names: the TFDS ClassLabel names (classification).
    """
    info = get_task_info(task)
    text_features = info.tfds_text_features
    table = None
    if labeled and not info.is_regression:
        table = tf.constant(tfds_label_map(task, tfds_label_names), tf.int32)

    def to_example(example):
        features = {"text": example[text_features[0]]}
        if len(text_features) == 2:
            features["text_b"] = example[text_features[1]]
        if not labeled:
            features["id"] = tf.strings.as_string(example["idx"])
            return features
        if table is None:
            return features, tf.cast(example["label"], tf.float32)
        return features, tf.gather(table, tf.cast(example["label"], tf.int32))

    return to_example


def load_glue_tfds(task, split, *, data_dir=None, download=False, shuffle_files=False):
    """One split of `glue/<task>` from TensorFlow Datasets, as GLUE examples.

    Args:
        task: a key of `GLUE_TASKS`.
        split: a TFDS split of glue/<task> (train, validation, test; mnli:
            validation_matched, ...); TFDS slicing like "train[:10%]" works.
        data_dir: the TFDS data folder (None: TFDS's default, ~/tensorflow_datasets).
        download: download and prepare the dataset if it is not there yet.
            Off by default, so nothing touches the network unless asked.
        shuffle_files: shuffle TFDS's file shards (for training).

    Returns:
        An unbatched `tf.data.Dataset` of `({"text", ["text_b"]}, label)`;
        test splits give features only, with TFDS's "idx" as string "id"
        (TFDS does not keep the file order, so keep the ids for submissions).
    """
    import tensorflow_datasets as tfds  # Only this loader needs it; it is slow to import.

    info = get_task_info(task)
    builder = tfds.builder(f"glue/{task}", data_dir=data_dir)
    if download:
        builder.download_and_prepare()
    try:
        dataset = builder.as_dataset(split=split, shuffle_files=shuffle_files)
    except AssertionError as e:  # TFDS's "could not find data" signal
        raise FileNotFoundError(
            f"glue/{task} is not prepared in {builder.data_dir}; "
            f"build it with `tfds build glue/{task} --data_dir=...`, or pass download=True ({e})"
        ) from e
    labeled = is_labeled_split(split.split("[")[0]) and task != "ax"
    label_names = None if info.is_regression else builder.info.features["label"].names
    return dataset.map(
        tfds_example_mapper(task, labeled, label_names), num_parallel_calls=tf.data.AUTOTUNE
    )


def write_glue_predictions(task, predictions, output_dir, ids=None):
    """Writes one task's test predictions as a GLUE submission file.

    The file is `GLUE_TASKS[task].submission_file` (CoLA.tsv, ..., MNLI-m.tsv,
    MNLI-mm.tsv, AX.tsv) with a header `index<TAB>prediction` and one line per
    example: the label name for MNLI / QNLI / RTE / AX, 0 or 1 for the other
    classification tasks, the score with 3 decimals for STS-B (not clipped).

    Args:
        task: a key of `GLUE_TASKS` (mnli_matched / mnli_mismatched for MNLI).
        predictions: class ids [N], class scores or logits [N, C] (argmax is
            taken), or STS-B scores [N] / [N, 1].
        output_dir: the folder to write into (created if missing).
        ids: the examples' indices, e.g. the "id" features of the test split;
            None: 0 .. N-1 (the file order of the TSV test files).

    Returns:
        The path of the written file.

    Example:
        >>> write_glue_predictions("rte", [0, 1], "/tmp/glue_submission")  # doctest: +SKIP
        '/tmp/glue_submission/RTE.tsv'   # index<TAB>prediction, 0<TAB>entailment, ...
    """
    info = get_task_info(task)
    if info.submission_file is None:
        raise ValueError("MNLI has two test sets: write them as 'mnli_matched' and 'mnli_mismatched'")
    predictions = np.asarray(predictions)
    if info.is_regression:
        if predictions.ndim == 2 and predictions.shape[1] == 1:
            predictions = predictions[:, 0]
        if predictions.ndim != 1:
            raise ValueError(f"{task}: expected one score per example, got shape {predictions.shape}")
        lines = [f"{float(p):.3f}" for p in predictions]
    else:
        if predictions.ndim == 2:
            predictions = predictions.argmax(axis=1)
        if predictions.ndim != 1 or not np.issubdtype(predictions.dtype, np.integer):
            raise ValueError(
                f"{task}: expected class ids [N] or scores [N, {info.num_classes}], "
                f"got {predictions.dtype} of shape {predictions.shape}"
            )
        if predictions.size and not 0 <= predictions.min() <= predictions.max() < info.num_classes:
            raise ValueError(
                f"{task}: class ids must be in [0, {info.num_classes}), "
                f"got {predictions.min()}..{predictions.max()}"
            )
        lines = [info.label_names[p] for p in predictions]
    if ids is None:
        ids = range(len(lines))
    ids = [i.decode() if isinstance(i, bytes) else str(i) for i in np.asarray(ids).tolist()]
    if len(ids) != len(lines):
        raise ValueError(f"{task}: {len(ids)} ids for {len(lines)} predictions")
    tf.io.gfile.makedirs(output_dir)
    path = os.path.join(output_dir, info.submission_file)
    with tf.io.gfile.GFile(path, "w") as f:
        f.write("index\tprediction\n" + "".join(f"{i}\t{p}\n" for i, p in zip(ids, lines)))
    logging.info("wrote %d %s predictions to %s", len(lines), task, path)
    return path
