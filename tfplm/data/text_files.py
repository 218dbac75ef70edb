"""Labelled text files (TSV, CSV, JSON Lines) for classification and regression.

Bring your own data: name the column(s) holding the text and the one holding
the label, and get back a `LabeledExamples` with the texts, the label ids (or
floats, for regression) and the label names, ready for `tf.data`:

    layout = FileLayout(text="review", label="sentiment")
    train = read_labeled_examples("train.csv", layout)
    dev = read_labeled_examples("dev.csv", layout, label_names=train.label_names)
    train.save_label_names("/tmp/model/label_names.json")  # travels with the model
    dataset = train.to_dataset()  # ({"text": ...}, label_id) pairs

Files without a header row take columns by 0-based number (negative numbers
count from the end of the row), e.g. CoLA's raw files (`in_domain_train.tsv`
etc.: four tab-separated columns and no header: source code, label 0/1, the
original author's judgement (`*` or empty), sentence):

    cola = read_labeled_examples("in_domain_train.tsv", FileLayout(text=3, label=1, header=False))

Every row is checked. A bad row (wrong column count, malformed JSON, missing
label, unknown label, empty text) raises `BadRowError` naming the file and
line, unless `skip_bad_rows=True`, in which case it is skipped, counted by
reason in `LabeledExamples.bad_rows` and logged. Blank lines carry no data and
are ignored. A file without a single example (e.g. only a header line) is an
error naming it. When the labels are read from the file, a label with very few
rows next to the others (at most 2, or 0.1% of the rows, while another label
has 10 times as many) is logged as a warning naming it and its count: a
misspelled label would otherwise silently become a class of its own. Files are read whole (benchmark files fit in memory), through
`tf.io.gfile` so `gs://` paths work too.
"""

import collections
import csv
import dataclasses
import io
import json
import math

import tensorflow as tf
from absl import logging

FORMATS = ("tsv", "csv", "jsonl")

# Why a row can be bad; the keys of `LabeledExamples.bad_rows`.
WRONG_COLUMN_COUNT = "wrong_column_count"
MALFORMED_JSON = "malformed_json"
MISSING_LABEL = "missing_label"
UNKNOWN_LABEL = "unknown_label"
INVALID_LABEL = "invalid_label"
EMPTY_TEXT = "empty_text"
BAD_ROW_REASONS = (
    WRONG_COLUMN_COUNT,  # a delimited row whose field count differs from the header's
    MALFORMED_JSON,  # a JSON Lines row that is not a JSON object
    MISSING_LABEL,  # the label field is absent or empty
    UNKNOWN_LABEL,  # a class label outside `label_names`
    INVALID_LABEL,  # a regression label that is not a finite number in `label_range`
    EMPTY_TEXT,  # a text field that is absent, empty or only whitespace
)
_MAX_LOGGED_BAD_ROWS = 10


class BadRowError(ValueError):
    """A row of a labelled text file that cannot become an example.

    Attributes:
        path: the file.
        line: 1-based line number where the row starts (the header is line 1).
        reason: one of `BAD_ROW_REASONS`.
    """

    def __init__(self, path, line, reason, detail):
        self.path, self.line, self.reason, self.detail = path, line, reason, detail
        super().__init__(
            f"{path}:{line}: {detail} ({reason}). Fix the row, or pass "
            "skip_bad_rows=True to skip and count such rows."
        )


@dataclasses.dataclass(frozen=True)
class FileLayout:
    """Where the fields of a labelled text file are.

    Columns are named by header name (delimited files with a header), JSON key
    (JSON Lines) or 0-based index (delimited files, with or without header;
    negative indices count from the end of the row: -1 is the last column).

    Attributes:
        text: the column of the (first) text.
        text_b: the column of the second text of a pair, or None.
        label: the label column, or None for unlabelled files (test sets).
        id: a column of example ids to keep (e.g. a test set's index), or None.
        header: delimited files only: whether the first line names the columns.
        num_columns: headerless delimited files only: the field count every row
            must have (None: enough fields for the columns used).
        quoting: delimited files only: a `csv.QUOTE_*` constant. None means
            `csv.QUOTE_NONE` for TSV (quotes are text, as in GLUE) and
            `csv.QUOTE_MINIMAL` for CSV.
        format: "tsv", "csv" or "jsonl"; None infers it from the file name
            (.tsv, .csv, .jsonl/.json).

    Example:
        >>> pairs = FileLayout(text="premise", text_b="hypothesis", label="label")
        >>> cola = FileLayout(text=3, label=1, header=False, num_columns=4)  # CoLA's raw files
        >>> last_column = FileLayout(text=-1, label=0, header=False)
    """

    text: str | int
    text_b: str | int | None = None
    label: str | int | None = None
    id: str | int | None = None
    header: bool = True
    num_columns: int | None = None
    quoting: int | None = None
    format: str | None = None

    def columns(self):
        """{field: column} for the fields this layout reads."""
        fields = {"text": self.text, "text_b": self.text_b, "label": self.label, "id": self.id}
        return {k: v for k, v in fields.items() if v is not None}


@dataclasses.dataclass
class LabeledExamples:
    """Texts (or text pairs) with their labels, read from one file.

    Attributes:
        texts: the (first) texts.
        texts_b: the second texts of pairs, or None for single texts.
        labels: class ids (int) or regression targets (float), one per text;
            None for an unlabelled file.
        label_names: class id -> label string, for classification; None for
            regression.
        regression: whether labels are real-valued targets.
        ids: the values of the layout's `id` column (strings), or None.
        bad_rows: skipped rows counted by reason (see `BAD_ROW_REASONS`).
        path: the file the examples came from.
    """

    texts: list
    texts_b: list | None = None
    labels: list | None = None
    label_names: list | None = None
    regression: bool = False
    ids: list | None = None
    bad_rows: dict = dataclasses.field(default_factory=dict)
    path: str = ""

    def __len__(self):
        return len(self.texts)

    @property
    def num_classes(self):
        """Classes for classification, 1 (one output) for regression."""
        return 1 if self.regression else len(self.label_names or ())

    def to_dataset(self):
        """An unbatched `tf.data.Dataset` of the examples, in file order.

        Labelled examples give `({"text": s[, "text_b": s]}, label)` with an
        int32 class id or a float32 target; unlabelled ones give the features
        alone. Ids, when the layout has an `id` column, go in feature "id".
        """
        features = {"text": tf.constant(self.texts, tf.string)}
        if self.texts_b is not None:
            features["text_b"] = tf.constant(self.texts_b, tf.string)
        if self.ids is not None:
            features["id"] = tf.constant(self.ids, tf.string)
        if self.labels is None:
            return tf.data.Dataset.from_tensor_slices(features)
        labels = tf.constant(self.labels, tf.float32 if self.regression else tf.int32)
        return tf.data.Dataset.from_tensor_slices((features, labels))

    def save_label_names(self, path):
        """Writes the class id -> label mapping as JSON (see `load_label_names`)."""
        if self.label_names is None:
            raise ValueError(f"examples from {self.path} have no label names (regression)")
        save_label_names(self.label_names, path)


def save_label_names(label_names, path):
    """Writes `{"label_names": [...]}` (index = class id) to `path`."""
    with tf.io.gfile.GFile(path, "w") as f:
        json.dump({"label_names": list(label_names)}, f, indent=2, ensure_ascii=False)
        f.write("\n")


def load_label_names(path):
    """The label names saved by `save_label_names`, index = class id."""
    with tf.io.gfile.GFile(path, "r") as f:
        data = json.load(f)
    names = data.get("label_names") if isinstance(data, dict) else None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ValueError(f"{path}: expected {{\"label_names\": [\"...\", ...]}}, got {data!r:.200}")
    return names


def read_labeled_examples(
    path, layout, *, label_names=None, regression=False, label_range=None, skip_bad_rows=False
):
    """Reads a labelled (or unlabelled) text file.

    Args:
        path: a .tsv, .csv or .jsonl file (any `tf.io.gfile` path), UTF-8 with
            or without a byte-order mark, any line endings.
        layout: a `FileLayout` saying where the fields are.
        label_names: classification: the known labels in class-id order; a
            label outside them is a bad row. None: the labels found in the
            file, sorted (numerically if they are all integers). Pass the
            training set's `label_names` when reading evaluation sets.
        regression: labels are floats instead of classes.
        label_range: regression: (low, high), inclusive; a label outside it is
            a bad row.
        skip_bad_rows: skip and count bad rows instead of raising `BadRowError`.

    Returns:
        A `LabeledExamples`.

    Raises:
        BadRowError: for the first bad row, unless `skip_bad_rows`.
        ValueError: for a layout that does not fit the file (e.g. a column name
            missing from the header).
    """
    fmt = _file_format(path, layout)
    with tf.io.gfile.GFile(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 ({e.reason}); re-encode the file as UTF-8") from e
    rows = _json_rows(text, path, layout) if fmt == "jsonl" else _delimited_rows(text, fmt, path, layout)

    known = None if regression or label_names is None else {n: i for i, n in enumerate(label_names)}
    with_label, with_b, with_id = layout.label is not None, layout.text_b is not None, layout.id is not None
    texts, texts_b, raw_labels, ids = [], [], [], []
    bad_rows = collections.Counter()
    for line, fields, error in rows:
        try:
            if error:
                raise BadRowError(path, line, *error)
            example = _check_fields(fields, path, line, regression, known, label_range)
        except BadRowError as e:
            if not skip_bad_rows:
                raise
            bad_rows[e.reason] += 1
            if sum(bad_rows.values()) <= _MAX_LOGGED_BAD_ROWS:
                logging.warning("skipping %s:%d: %s (%s)", path, line, e.detail, e.reason)
            continue
        texts.append(example["text"])
        if with_b:
            texts_b.append(example["text_b"])
        if with_label:
            raw_labels.append(example["label"])
        if with_id:
            ids.append(example["id"])

    if not texts:
        _no_examples(path, fmt, layout, bad_rows)
    labels, names = None, None
    if label_names is not None and not regression:
        names = list(label_names)
    elif with_label and not regression:
        names = _sorted_labels(raw_labels)
        _warn_rare_labels(path, raw_labels)
    if with_label:
        if regression:
            labels = raw_labels
        else:
            index = {n: i for i, n in enumerate(names)}
            labels = [index[label] for label in raw_labels]
    total = len(texts) + sum(bad_rows.values())
    if bad_rows:
        logging.warning(
            "%s: skipped %d of %d rows: %s", path, total - len(texts), total,
            ", ".join(f"{n} {r}" for r, n in sorted(bad_rows.items())),
        )
    logging.info(
        "%s: %d examples%s", path, len(texts),
        "" if regression or not with_label else f", {len(names)} labels {names[:20]}",
    )
    return LabeledExamples(
        texts=texts,
        texts_b=texts_b if with_b else None,
        labels=labels,
        label_names=names,
        regression=regression,
        ids=ids if with_id else None,
        bad_rows=dict(bad_rows),
        path=str(path),
    )


def _no_examples(path, fmt, layout, bad_rows):
    """The error for a file without a single example."""
    if bad_rows:
        counts = ", ".join(f"{n} {r}" for r, n in sorted(bad_rows.items()))
        raise ValueError(f"{path}: every row is bad ({counts}); fix the file or the FileLayout")
    what = "only a header line" if fmt != "jsonl" and layout.header else "no rows"
    raise ValueError(f"{path} has no examples ({what}); expected one example per line")


# A label this rare next to the others is more likely a typo than a class.
_RARE_LABEL_ROWS = 2  # at most this many rows (or 0.1% of them, if more) ...
_RARE_LABEL_RATIO = 10  # ... while another label has at least this many times as many


def _warn_rare_labels(path, labels):
    """Warns about labels with very few rows: a misspelled label silently becomes a new class."""
    counts = collections.Counter(labels)
    most = max(counts.values())
    limit = max(_RARE_LABEL_ROWS, len(labels) // 1000)
    rare = sorted((n, label) for label, n in counts.items() if n <= limit and n * _RARE_LABEL_RATIO <= most)
    if rare:
        shown = ", ".join(f"{label!r} ({n} row{'s' if n > 1 else ''})" for n, label in rare[:10])
        logging.warning(
            "%s: rare label(s) %s among %d labels (the largest has %d rows); a misspelled label "
            "silently becomes a class of its own: check these rows",
            path, shown, len(counts), most,
        )


def _file_format(path, layout):
    fmt = layout.format
    if fmt is None:
        name = str(path).lower()
        for suffix, fmt in ((".tsv", "tsv"), (".csv", "csv"), (".jsonl", "jsonl"), (".json", "jsonl")):
            if name.endswith(suffix):
                break
        else:
            raise ValueError(
                f"cannot tell the format of {path} from its name; set FileLayout(format=...) "
                f"to one of {', '.join(FORMATS)}"
            )
    if fmt not in FORMATS:
        raise ValueError(f"FileLayout(format={fmt!r}); expected one of {', '.join(FORMATS)}")
    if fmt == "jsonl":
        for field, column in layout.columns().items():
            if not isinstance(column, str):
                raise ValueError(f"JSON Lines fields are keys; got {field}={column!r} for {path}")
    return fmt


def _delimited_rows(text, fmt, path, layout):
    """Yields (line, {field: value}, error) for each non-blank row of a TSV/CSV file.

    `error` is (reason, detail) for a row with the wrong field count, else None.
    """
    quoting = layout.quoting
    if quoting is None:
        quoting = csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL
    reader = csv.reader(
        io.StringIO(text, newline=""), delimiter="\t" if fmt == "tsv" else ",", quoting=quoting
    )
    columns = layout.columns()
    if layout.header:
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path} is empty; expected a header line")
        indices = {field: _column_index(column, header, path) for field, column in columns.items()}
        expected = len(header)
    else:
        for field, column in columns.items():
            if not isinstance(column, int):
                raise ValueError(
                    f"{path} has no header (FileLayout(header=False)), so columns must be "
                    f"0-based indices; got {field}={column!r}"
                )
        expected = layout.num_columns
        indices = dict(columns)
        if expected is not None:
            for field, column in columns.items():
                if not -expected <= column < expected:
                    raise ValueError(f"{path}: layout reads column {column} but rows have {expected} columns")
                indices[field] = column % expected
    # Fields a row needs: the largest index + 1, or for an index from the end, its distance.
    needed = max(i + 1 if i >= 0 else -i for i in indices.values())
    last_line = reader.line_num
    for row in reader:
        line, last_line = last_line + 1, reader.line_num
        if not row:
            continue  # a blank line
        if expected is not None and len(row) != expected:
            yield line, None, (WRONG_COLUMN_COUNT, f"{len(row)} columns, expected {expected}")
        elif len(row) < needed:
            yield line, None, (WRONG_COLUMN_COUNT, f"{len(row)} columns, expected at least {needed}")
        else:
            yield line, {field: row[i] for field, i in indices.items()}, None


def _column_index(column, header, path):
    if isinstance(column, int):
        if not -len(header) <= column < len(header):
            raise ValueError(f"{path}: column {column} does not exist; the header has {len(header)} columns")
        return column % len(header)
    if header.count(column) != 1:
        found = "is missing from" if column not in header else "appears twice in"
        raise ValueError(f"{path}: column {column!r} {found} the header {header}")
    return header.index(column)


def _json_rows(text, path, layout):
    """Yields (line, {field: value}, error) for each non-blank line of a JSON Lines file."""
    columns = layout.columns()
    for number, raw in enumerate(text.split("\n"), start=1):
        if not raw.strip():
            continue
        try:
            record = json.loads(raw)
        except json.JSONDecodeError as e:
            yield number, None, (MALFORMED_JSON, f"invalid JSON ({e.msg})")
            continue
        if not isinstance(record, dict):
            yield number, None, (MALFORMED_JSON, f"expected a JSON object, got {type(record).__name__}")
            continue
        fields = {}
        for field, key in columns.items():
            value = record.get(key)
            if isinstance(value, bool) or value is None:
                value = None if value is None else str(value).lower()
            elif isinstance(value, (int, float)):
                value = str(value)
            elif not isinstance(value, str):
                value = json.dumps(value)
            fields[field] = value
        yield number, fields, None


def _check_fields(fields, path, line, regression, known, label_range):
    """The row's example with its label parsed; BadRowError if it has none."""
    for field in ("text", "text_b"):
        if field in fields and not (fields[field] or "").strip():
            raise BadRowError(path, line, EMPTY_TEXT, f"{field} is empty")
    if "label" not in fields:
        return fields
    label = (fields["label"] or "").strip()
    if not label:
        raise BadRowError(path, line, MISSING_LABEL, "no label")
    if regression:
        try:
            value = float(label)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise BadRowError(path, line, INVALID_LABEL, f"label {label!r} is not a finite number")
        if label_range is not None and not label_range[0] <= value <= label_range[1]:
            raise BadRowError(
                path, line, INVALID_LABEL, f"label {value} outside [{label_range[0]}, {label_range[1]}]"
            )
        label = value
    elif known is not None and label not in known:
        shown = sorted(known)[:20]
        raise BadRowError(path, line, UNKNOWN_LABEL, f"label {label!r} is not one of {shown}")
    return {**fields, "label": label}


def _sorted_labels(labels):
    """Distinct labels, sorted numerically if all are integers ("2" < "10"), else as text."""
    distinct = set(labels)
    try:
        return sorted(distinct, key=int)
    except ValueError:
        return sorted(distinct)
