"""CoNLL-style tagged files: reading, word pieces with first-piece labels,
entity-level scores (conlleval's definition) and `predictions.conll`.

A CoNLL file has one word per line, its columns split by a separator, the tag
in one of them; a blank line ends a sentence and a `-DOCSTART-` line a
document (CoNLL-2003: `word POS chunk NER`; WNUT-17: `word<TAB>tag`).

    train = read_conll("train.txt", tag_column=-1, scheme="IOB2")
    labels = label_names(train)              # "O", then B-/I- of each type
    entities(["B-PER", "I-PER", "O", "I-LOC"])   # [("PER", 0, 2), ("LOC", 3, 4)]

Entities follow conlleval (CoNLL's official scorer, which `seqeval` also
follows in its default mode): a chunk starts at a B-/S- tag, at an I-/E- tag
after O, after an E-/S- tag or after a tag of another type, and ends before
the tag that starts the next chunk (or an O). Scores count an entity as
correct only with its exact boundaries and type.
"""

import dataclasses
import numpy as np
import tensorflow as tf
from absl import logging

from tfplm import publish

SCHEMES = {"IOB1": "BI", "IOB2": "BI", "BIOES": "BIES"}
DOCSTART = "-DOCSTART-"
OUTSIDE = "O"
IGNORED = -1  # the label of pieces that are not the first of a word, and of [CLS]/[SEP]/padding


def _split_tag(tag):
    """("B", "PER") for "B-PER", ("O", "") for "O"."""
    if tag == OUTSIDE:
        return OUTSIDE, ""
    prefix, _, kind = tag.partition("-")
    return prefix, kind


def check_scheme(scheme):
    if scheme not in SCHEMES:
        raise ValueError(f"tag scheme {scheme!r}; expected one of {', '.join(SCHEMES)} (BIO is IOB2)")
    return scheme


@dataclasses.dataclass
class TaggedFile:
    """The sentences of a CoNLL file.

    Attributes:
        path: the file.
        scheme: its tagging scheme ("IOB1", "IOB2" or "BIOES").
        words: per sentence, its words.
        tags: per sentence, its tags as written (None: a file without tags).
        line_numbers: per sentence, the 1-based line of each word.
        lines: every line of the file (without line ends), for `write_predictions`.
        documents: the number of `-DOCSTART-` lines.
    """

    path: str
    scheme: str
    words: list
    tags: list | None
    line_numbers: list
    lines: list
    documents: int = 0

    def __len__(self):
        return len(self.words)

    def types(self):
        """The entity types of its tags, sorted."""
        return sorted({_split_tag(tag)[1] for sentence in self.tags or [] for tag in sentence} - {""})

    def iob2_tags(self):
        """Its tags in IOB2 (IOB1's chunk-initial I- become B-); others unchanged."""
        if self.scheme != "IOB1":
            return self.tags
        return [to_iob2(sentence) for sentence in self.tags]


def read_conll(path, tag_column=-1, separator="", scheme="IOB2", has_tags=True):
    """Reads a CoNLL-style file.

    Args:
        path: the file (UTF-8).
        tag_column: the column holding the tag, 0-based; negative counts from
            the end (-1: the last). The word is column 0.
        separator: the column separator; "" = any run of whitespace.
        scheme: "IOB1", "IOB2" (BIO) or "BIOES": the tags must be O or
            `<prefix>-<type>` with the scheme's prefixes.
        has_tags: False for a file of words only (one column is enough);
            None: it has tags unless its first word's line has one column.

    Returns:
        a `TaggedFile`.

    Raises:
        ValueError: one line naming the file, line and value that is wrong, and the fix.
    """
    check_scheme(scheme)
    if not tf.io.gfile.exists(path) or tf.io.gfile.isdir(path):
        raise ValueError(f"{path} is not a file; expected a CoNLL-style file (one word per line)")
    with tf.io.gfile.GFile(path, "rb") as f:
        data = f.read()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data[: error.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 ({error.reason}); re-encode the file as UTF-8") from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    lines = [line[:-1] if line.endswith("\r") else line for line in lines]
    prefixes = SCHEMES[scheme]
    where = f"task.separator={separator!r}" if separator else "columns split at whitespace"
    words, tags, numbers = [], [], []
    sentence_words, sentence_tags, sentence_numbers = [], [], []
    documents = 0

    def end_sentence():
        if sentence_words:
            words.append(list(sentence_words))
            tags.append(list(sentence_tags))
            numbers.append(list(sentence_numbers))
        sentence_words.clear(), sentence_tags.clear(), sentence_numbers.clear()

    for number, line in enumerate(lines, start=1):
        if not line.strip():
            end_sentence()
            continue
        columns = line.split(separator) if separator else line.split()
        if columns[0] == DOCSTART:
            end_sentence()
            documents += 1
            continue
        if has_tags is None:
            has_tags = len(columns) > 1
        if has_tags:
            if not -len(columns) <= tag_column < len(columns) or tag_column % len(columns) == 0:
                raise ValueError(
                    f"{path}:{number}: {len(columns)} column(s) in {line!r} ({where}); task.tag_column={tag_column} "
                    "needs the word in column 0 and the tag in another: check task.separator and task.tag_column"
                )
            tag = columns[tag_column].strip()
            prefix, kind = _split_tag(tag)
            if tag != OUTSIDE and (prefix not in prefixes or not kind):
                raise ValueError(
                    f"{path}:{number}: tag {tag!r} is not {scheme} (O, or {'/'.join(prefixes)}- and a type); "
                    "check task.tag_column and task.tag_scheme"
                )
            sentence_tags.append(tag)
        word = columns[0]
        if not word.strip():
            raise ValueError(f"{path}:{number}: the word (column 0) of {line!r} is blank; check task.separator")
        sentence_words.append(word)
        sentence_numbers.append(number)
    end_sentence()
    if not words:
        raise ValueError(f"{path} has no words; expected one word per line, blank lines between sentences")
    return TaggedFile(path, scheme, words, tags if has_tags is not False else None, numbers, lines, documents)


def to_iob2(tags):
    """IOB1 (or any B/I tags) → IOB2: every chunk starts with B-.

    >>> to_iob2(["I-PER", "I-PER", "B-PER", "O", "I-LOC"])
    ['B-PER', 'I-PER', 'B-PER', 'O', 'B-LOC']
    """
    result, previous = [], OUTSIDE
    for tag in tags:
        prefix, kind = _split_tag(tag)
        if prefix == "I" and _starts_chunk(previous, tag):
            tag = f"B-{kind}"
        result.append(tag)
        previous = tag
    return result


def to_iob1(tags):
    """IOB2 → IOB1: B- only where a chunk follows one of the same type.

    >>> to_iob1(["B-PER", "I-PER", "B-PER", "O", "B-LOC"])
    ['I-PER', 'I-PER', 'B-PER', 'O', 'I-LOC']
    """
    result, previous = [], OUTSIDE
    for tag in to_iob2(tags):
        prefix, kind = _split_tag(tag)
        if prefix == "B" and _split_tag(previous)[1] != kind:
            result.append(f"I-{kind}")
        else:
            result.append(tag)
        previous = tag
    return result


def label_names(tagged, scheme=None):
    """The labels a model predicts for `tagged` (a training file): "O", then
    each type's prefixes (IOB1/IOB2: B, I; BIOES: B, I, E, S), types sorted.

    IOB1 files are learnt as IOB2 (the same entities, each starting with B-).
    """
    scheme = scheme or tagged.scheme
    prefixes = "BIES" if scheme == "BIOES" else "BI"
    return [OUTSIDE] + [f"{prefix}-{kind}" for kind in tagged.types() for prefix in prefixes]


def label_ids(tagged, names):
    """Per sentence, the label id of each word (IOB1 tags as IOB2)."""
    index = {name: i for i, name in enumerate(names)}
    result = []
    for sentence, tags, numbers in zip(tagged.words, tagged.iob2_tags(), tagged.line_numbers):
        ids = []
        for tag, number in zip(tags, numbers):
            if tag not in index:
                raise ValueError(
                    f"{tagged.path}:{number}: tag {tag!r} is not in the training file's labels "
                    f"({', '.join(names)}); add its type to the training file or fix the tag"
                )
            ids.append(index[tag])
        result.append(ids)
    return result


# --- word pieces ------------------------------------------------------------------


@dataclasses.dataclass
class EncodedFile:
    """Sentences as windows of word pieces, the label on each word's first piece.

    Attributes:
        piece_ids: per window, its piece ids (no [CLS]/[SEP]).
        labels: per window, the label id of each piece (`IGNORED` but on first pieces).
        words: per window, (sentence, word) of each word it holds.
        first_pieces: per window, the position of each of those words' first piece.
        windows_split: sentences longer than the budget that were split into windows.
        words_cut: words whose first piece fell beyond the budget (truncation,
            or a single word longer than a window): never labelled nor predicted.
        pieces_cut: pieces left out in all.
        empty_words: words with no piece (e.g. only control characters), given [UNK].
    """

    piece_ids: list
    labels: list
    words: list
    first_pieces: list
    windows_split: int = 0
    words_cut: int = 0
    pieces_cut: int = 0
    empty_words: int = 0

    def to_tensors(self):
        """(piece ids, labels): int32 RaggedTensors [windows, None]."""

        def ragged(rows):
            lengths = [len(row) for row in rows]
            values = np.fromiter((v for row in rows for v in row), np.int32, sum(lengths))
            return tf.RaggedTensor.from_row_lengths(values, np.asarray(lengths, np.int64))

        return ragged(self.piece_ids), ragged(self.labels)


def encode(tagged, tokenizer, max_pieces, names=None, split_long_sentences=True):
    """Tokenizes each word into pieces, labels each word's first piece.

    Args:
        tagged: a `TaggedFile`.
        tokenizer: a `WordPieceTokenizer` (each word is tokenized on its own,
            as BERT's basic tokenizer would split it: "1996-08-22" is five pieces
            or more, labelled on the first).
        max_pieces: pieces per window (the model's seq_length minus [CLS] and [SEP]).
        names: the label names (None: a file without tags; every label `IGNORED`).
        split_long_sentences: split longer sentences into windows at word
            boundaries (every word labelled); False: truncate them (words cut).

    Returns:
        an `EncodedFile`.
    """
    flat = [word for sentence in tagged.words for word in sentence]
    pieces = tokenizer.tokenize(tf.constant(flat)).to_list() if flat else []
    ids = label_ids(tagged, names) if names is not None and tagged.tags is not None else None
    unk = tokenizer.unk_token_id
    result = EncodedFile([], [], [], [])
    position = 0
    for s, sentence in enumerate(tagged.words):
        windows = [[]]  # lists of (word index, pieces)
        used = 0
        for w in range(len(sentence)):
            word_pieces = pieces[position + w]
            if not word_pieces:
                word_pieces = [unk]
                result.empty_words += 1
            if used + len(word_pieces) > max_pieces and windows[-1] and split_long_sentences:
                windows.append([])
                used = 0
            windows[-1].append((w, word_pieces))
            used += len(word_pieces)
        position += len(sentence)
        if len(windows) > 1:
            result.windows_split += 1
        for window in windows:
            piece_ids, labels, words, first = [], [], [], []
            for w, word_pieces in window:
                room = max_pieces - len(piece_ids)
                if room <= 0:
                    result.words_cut += 1
                    result.pieces_cut += len(word_pieces)
                    continue
                kept = word_pieces[:room]
                first.append(len(piece_ids))
                result.pieces_cut += len(word_pieces) - len(kept)
                piece_ids += kept
                labels += [ids[s][w] if ids is not None else IGNORED] + [IGNORED] * (len(kept) - 1)
                words.append((s, w))
            result.piece_ids.append(piece_ids)
            result.labels.append(labels)
            result.words.append(words)
            result.first_pieces.append(first)
    if result.windows_split:
        logging.info("%s: %d sentences longer than %d pieces split into windows", tagged.path, result.windows_split, max_pieces)
    if result.words_cut or result.pieces_cut:
        logging.warning(
            "%s: %d words (%d pieces) beyond %d pieces cut: they are neither learnt nor predicted (predicted O)",
            tagged.path, result.words_cut, result.pieces_cut, max_pieces,
        )
    return result


def word_predictions(encoded, tagged, piece_predictions, default=0):
    """Per sentence, the prediction of each word: that of its first piece.

    Args:
        encoded: the `EncodedFile` of `tagged`.
        tagged: the `TaggedFile`.
        piece_predictions: per window, a sequence over its pieces (without [CLS]).
        default: the prediction of words that were cut.
    """
    result = [[default] * len(sentence) for sentence in tagged.words]
    for words, first, predictions in zip(encoded.words, encoded.first_pieces, piece_predictions):
        for (s, w), index in zip(words, first):
            result[s][w] = predictions[index]
    return result


# --- entities and their scores (conlleval) ----------------------------------------


def _starts_chunk(previous, tag):
    """conlleval's startOfChunk: does `tag` start a chunk after `previous`?"""
    (p, p_kind), (t, kind) = _split_tag(previous), _split_tag(tag)
    if t == OUTSIDE:
        return False
    return t in "BS" or p in "ES" or p == OUTSIDE or p_kind != kind


def _ends_chunk(previous, tag):
    """conlleval's endOfChunk: does the chunk holding `previous` end before `tag`?"""
    (p, p_kind), (t, kind) = _split_tag(previous), _split_tag(tag)
    if p == OUTSIDE:
        return False
    return p in "ES" or t in "BSO" or p_kind != kind


def chunk_tables(names):
    """conlleval's chunk boundaries as tables over label ids, for in-graph decoding.

    Returns:
        (starts, kinds): `starts[previous, label]` (bool [L + 1, L]): a chunk
        starts at `label` after `previous` (row L: the sentence's start);
        `kinds[label]`: its type's index in the sorted types, -1 for O.
    """
    previous_tags = list(names) + [OUTSIDE]
    starts = np.array([[_starts_chunk(p, t) for t in names] for p in previous_tags], bool)
    types = sorted({_split_tag(name)[1] for name in names} - {""})
    kinds = np.array([types.index(_split_tag(name)[1]) if name != OUTSIDE else -1 for name in names], np.int32)
    return starts, kinds, types


def entities(tags):
    """The chunks of a tag sequence: [(type, start, end)], `end` exclusive (conlleval).

    >>> entities(["B-PER", "I-PER", "O", "I-LOC", "B-LOC", "E-MISC"])
    [('PER', 0, 2), ('LOC', 3, 4), ('LOC', 4, 5), ('MISC', 5, 6)]
    """
    result, start = [], None
    previous = OUTSIDE
    for i, tag in enumerate(list(tags) + [OUTSIDE]):
        if start is not None and (_ends_chunk(previous, tag) or _starts_chunk(previous, tag)):
            result.append((_split_tag(previous)[1], start, i))
            start = None
        if _starts_chunk(previous, tag):
            start = i
        previous = tag
    return result


@dataclasses.dataclass
class EntityScores:
    """Entity-level precision, recall and F1, overall and per type (as fractions).

    Attributes:
        precision, recall, f1: overall.
        per_type: {type: {"precision", "recall", "f1", "support"}} (support: gold entities).
        predicted, gold, correct: entity counts.
    """

    precision: float
    recall: float
    f1: float
    per_type: dict
    predicted: int
    gold: int
    correct: int

    def as_dict(self):
        return dataclasses.asdict(self)


def _prf(correct, predicted, gold):
    precision = correct / predicted if predicted else 0.0
    recall = correct / gold if gold else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return precision, recall, f1


def entity_scores(gold_tags, predicted_tags):
    """conlleval's scores of predicted tag sequences against the gold ones.

    Sentences are scored one by one (a chunk never crosses a sentence's end,
    as a blank line ends it in conlleval). An entity is correct when a gold
    entity has the same start, end and type.

    Args:
        gold_tags, predicted_tags: per sentence, its tags (str), same lengths.

    Returns:
        an `EntityScores`.

    >>> entity_scores([["B-PER", "I-PER", "O"]], [["B-PER", "O", "O"]]).f1
    0.0
    """
    counts = {}  # type -> [correct, predicted, gold]
    for number, (gold, predicted) in enumerate(zip(gold_tags, predicted_tags)):
        if len(gold) != len(predicted):
            raise ValueError(f"sentence {number}: {len(gold)} gold tags but {len(predicted)} predicted")
        gold_entities, predicted_entities = set(entities(gold)), set(entities(predicted))
        for kind, *_ in gold_entities:
            counts.setdefault(kind, [0, 0, 0])[2] += 1
        for entity in predicted_entities:
            row = counts.setdefault(entity[0], [0, 0, 0])
            row[1] += 1
            row[0] += entity in gold_entities
    correct, predicted, gold = (sum(row[i] for row in counts.values()) for i in range(3))
    per_type = {}
    for kind in sorted(counts):
        p, r, f = _prf(*counts[kind])
        per_type[kind] = {"precision": p, "recall": r, "f1": f, "support": counts[kind][2]}
    return EntityScores(*_prf(correct, predicted, gold), per_type, predicted, gold, correct)


# --- predictions.conll -----------------------------------------------------------


def write_predictions(path, tagged, predicted_tags, separator=""):
    """Writes `tagged`'s lines with each word's predicted tag appended as the
    last column (the gold tag, when the file has one, stays where it was);
    other lines (blank, -DOCSTART-) as they were. Published atomically.

    Args:
        path: the file to write.
        tagged: the `TaggedFile` predicted.
        predicted_tags: per sentence, the tag of each word (in `tagged.scheme`).
        separator: the file's separator ("" = a space).
    """
    appended = {}
    for numbers, tags in zip(tagged.line_numbers, predicted_tags):
        appended.update(zip(numbers, tags))
    joiner = separator or " "
    lines = [
        f"{line}{joiner}{appended[number]}" if number in appended else line
        for number, line in enumerate(tagged.lines, start=1)
    ]
    return publish.write_text(path, "\n".join(lines) + "\n")
