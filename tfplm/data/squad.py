"""SQuAD: its JSON files, the windows BERT reads long contexts in, answer spans, and its metric.

* `read_squad`: SQuAD v1.1 / v2.0 JSON (`{"version", "data": [articles]}`) into
  `SquadExample`s, optionally some of its articles (`articles="0-31"`);
* `make_windows`: questions and contexts (tf.string [batch]) into BERT inputs
  as google-research/bert's run_squad.py builds them: the question cut to
  `max_query_length` tokens, the context in windows of `seq_length` tokens
  that start `doc_stride` tokens apart, each token with the character offsets
  of its word in the context, and whether this window is the token's
  "max context" (the window where it has the most context on both sides);
* `answer_positions`: the training labels of those windows;
* `best_spans`: the answer of each question from the windows' start/end logits
  (n-best start and end candidates, the best valid span over all windows, the
  null answer of SQuAD 2.0) as the context's own characters.

All three are TensorFlow ops: the training pipeline, evaluation and the
exported SavedModel run the same code. `squad_metrics` is SQuAD's exact match
and F1 (v1.1; with unanswerable questions, v2.0's HasAns/NoAns too).

Example:
>>> from tfplm.tokenizers import WordPieceTokenizer
>>> tokenizer = WordPieceTokenizer(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "who", "?", "bob", "ran"])
>>> windows = make_windows(tokenizer, tf.constant(["who ran?"]), tf.constant(["Bob ran"]),
...                        seq_length=16, doc_stride=8, max_query_length=8)
>>> windows["input_word_ids"].numpy().tolist()
[[2, 5, 8, 6, 3, 7, 8, 3]]
>>> windows["token_starts"].numpy().tolist()  # characters of "Bob ran" (-1: not the context)
[[-1, -1, -1, -1, -1, 0, 4, -1]]
"""

import collections
import dataclasses
import json
import os
import re
import string

import tensorflow as tf
import tensorflow_text as tf_text


@dataclasses.dataclass(frozen=True)
class SquadExample:
    """One question about one context.

    Attributes:
        qas_id: the question's id (the key of SQuAD's predictions file).
        question: the question text.
        context: the paragraph.
        answers: the gold answer texts (several annotators in dev files).
        answer_starts: their character offsets in `context`.
        is_impossible: SQuAD 2.0: the context does not answer the question.
    """

    qas_id: str
    question: str
    context: str
    answers: tuple = ()
    answer_starts: tuple = ()
    is_impossible: bool = False

    @property
    def answer_span(self):
        """(start, end) characters of the first answer (the training label); None if it has none."""
        if self.is_impossible or not self.answers:
            return None
        return self.answer_starts[0], self.answer_starts[0] + len(self.answers[0])


@dataclasses.dataclass
class SquadData:
    """The questions of a SQuAD file (or of a slice of its articles).

    Attributes:
        examples: the `SquadExample`s, in file order.
        version: the file's "version" ("1.1", "v2.0", ...).
        path: the file.
        articles: the indices of the articles read.
    """

    examples: list
    version: str
    path: str
    articles: list

    def __len__(self):
        return len(self.examples)

    @property
    def has_impossible(self):
        return any(example.is_impossible for example in self.examples)


def article_range(spec, count, name="articles"):
    """The article indices a range selects: "" (all), "5", "0-31" (both included), "32-" (to the end).

    Example:
    >>> article_range("32-", 48)[:3], len(article_range("0-31", 48))
    ([32, 33, 34], 32)
    """
    spec = str(spec).strip()
    match = re.fullmatch(r"(\d*)(-?)(\d*)", spec)
    if not match or (match.group(3) and not match.group(2)) or (match.group(2) and not match.group(1)):
        raise ValueError(f"{name}={spec!r}; expected article numbers such as '0-31', '32-', '5' or '' (all)")
    if not spec:
        return list(range(count))
    first = int(match.group(1))
    last = int(match.group(3)) if match.group(3) else (count - 1 if match.group(2) else first)
    if not first <= last < count:
        raise ValueError(f"{name}={spec!r} is not within the file's articles 0-{count - 1}")
    return list(range(first, last + 1))


def _fail(path, where, what):
    raise ValueError(f"SQuAD file {path!r}: {where}: {what}")


def read_squad(path, articles=""):
    """Reads a SQuAD v1.1 or v2.0 JSON file.

    Args:
        path: e.g. dev-v1.1.json or train-v2.0.json.
        articles: which of its articles ("0-31"; "" = all), see `article_range`.

    Returns:
        A `SquadData`.

    Raises:
        ValueError: one line naming the file, the place in it and what is wrong.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"SQuAD file {path!r} does not exist; pass a SQuAD JSON file such as dev-v1.1.json")
    try:
        with open(path, encoding="utf-8") as f:
            dataset = json.load(f)
    except json.JSONDecodeError as error:
        raise ValueError(f"SQuAD file {path!r}: line {error.lineno}: not JSON ({error.msg})") from None
    except UnicodeDecodeError as error:
        raise ValueError(f"SQuAD file {path!r}: byte {error.start}: not UTF-8") from None
    if not isinstance(dataset, dict) or not isinstance(dataset.get("data"), list):
        raise ValueError(f"SQuAD file {path!r}: expected a JSON object with a \"data\" list of articles, as SQuAD's files have")
    data = dataset["data"]
    selected = article_range(articles, len(data)) if data else []
    examples = []
    for a in selected:
        article = data[a]
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            _fail(path, f"article {a}", "no \"paragraphs\" list")
        for p, paragraph in enumerate(paragraphs):
            where = f"article {a} paragraph {p}"
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("context"), str):
                _fail(path, where, "no \"context\" string")
            if not isinstance(paragraph.get("qas"), list):
                _fail(path, where, "no \"qas\" list")
            context = paragraph["context"]
            for qa in paragraph["qas"]:
                if not isinstance(qa, dict) or not isinstance(qa.get("id"), str) or not isinstance(qa.get("question"), str):
                    _fail(path, where, "a question without an \"id\" or \"question\" string")
                impossible = qa.get("is_impossible", False)
                answers = qa.get("answers", [])
                if not isinstance(impossible, bool) or not isinstance(answers, list):
                    _fail(path, f"{where} question {qa['id']!r}", "\"is_impossible\" must be true/false and \"answers\" a list")
                for answer in answers:
                    if not (
                        isinstance(answer, dict)
                        and isinstance(answer.get("text"), str)
                        and isinstance(answer.get("answer_start"), int)
                        and 0 <= answer["answer_start"] <= len(context)
                    ):
                        _fail(
                            path,
                            f"{where} question {qa['id']!r}",
                            f"answer {answer!r:.80} needs a \"text\" and an \"answer_start\" in 0..{len(context)}",
                        )
                if not impossible and not answers:
                    _fail(path, f"{where} question {qa['id']!r}", "no answers and not \"is_impossible\"")
                examples.append(
                    SquadExample(
                        qas_id=qa["id"],
                        question=qa["question"],
                        context=context,
                        answers=tuple(answer["text"] for answer in answers),
                        answer_starts=tuple(answer["answer_start"] for answer in answers),
                        is_impossible=impossible,
                    )
                )
    return SquadData(examples=examples, version=str(dataset.get("version", "")), path=path, articles=selected)


# --- the metric ---------------------------------------------------------------------


def normalize_answer(text):
    """SQuAD's answer normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


_PUNCTUATION = frozenset(string.punctuation)


def exact_match_score(prediction, truth):
    """1.0 if the normalised answers are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(truth))


def f1_score(prediction, truth, empty_matches_empty=False):
    """Token F1 of the normalised answers.

    `empty_matches_empty`: SQuAD 2.0's rule, where an empty prediction or
    truth scores 1 if both are empty and 0 otherwise (v1.1 scores 0).
    """
    predicted, true = normalize_answer(prediction).split(), normalize_answer(truth).split()
    if empty_matches_empty and (not predicted or not true):
        return float(predicted == true)
    same = sum((collections.Counter(predicted) & collections.Counter(true)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(predicted), same / len(true)
    return 2 * precision * recall / (precision + recall)


def squad_metrics(examples, predictions, version_2=None):
    """SQuAD's exact match and F1 (percent), each the max over a question's gold answers.

    Args:
        examples: `SquadExample`s (a `SquadData`'s).
        predictions: question id → predicted answer text; a missing question scores 0.
        version_2: score as SQuAD 2.0's script (unanswerable questions' gold
            answer is ""; adds HasAns_* and NoAns_*). Default: when some
            example is unanswerable.

    Returns:
        {"exact_match", "f1", "total"} (+ "HasAns_exact", "HasAns_f1",
        "HasAns_total", "NoAns_exact", "NoAns_f1", "NoAns_total" for 2.0).

    Example:
    >>> example = SquadExample("q1", "Who?", "The Eagles won.", ("the Eagles", "Eagles"), (0, 4))
    >>> squad_metrics([example], {"q1": "Eagles won"})
    {'exact_match': 0.0, 'f1': 66.66666666666666, 'total': 1}
    """
    if version_2 is None:
        version_2 = any(example.is_impossible for example in examples)
    scores = {}
    for example in examples:
        prediction = predictions.get(example.qas_id)
        if prediction is None:
            scores[example.qas_id] = (0.0, 0.0, example.is_impossible)
            continue
        truths = list(example.answers)
        if version_2:
            truths = [t for t in truths if normalize_answer(t)] or [""]
        exact = max(exact_match_score(prediction, t) for t in truths)
        f1 = max(f1_score(prediction, t, empty_matches_empty=version_2) for t in truths)
        scores[example.qas_id] = (exact, f1, example.is_impossible)

    def mean(values):
        values = list(values)
        return 100.0 * sum(values) / len(values) if values else 0.0

    results = {
        "exact_match": mean(s[0] for s in scores.values()),
        "f1": mean(s[1] for s in scores.values()),
        "total": len(scores),
    }
    if version_2:
        for name, impossible in (("HasAns", False), ("NoAns", True)):
            part = [s for s in scores.values() if s[2] == impossible]
            if part:
                results.update({f"{name}_exact": mean(s[0] for s in part), f"{name}_f1": mean(s[1] for s in part), f"{name}_total": len(part)})
    return results


# --- windows, labels, spans (TensorFlow ops) ------------------------------------------


def _ragged_column(values):
    """A RaggedTensor [n, 1] holding `values` [n]."""
    return tf.RaggedTensor.from_tensor(values[:, None])


def make_windows(tokenizer, questions, contexts, *, seq_length, doc_stride, max_query_length):
    """BERT inputs for questions about contexts, long contexts in overlapping windows.

    Each window is `[CLS] question [SEP] context tokens [SEP]`, type ids 0
    then 1, as run_squad.py makes them: the question keeps its first
    `max_query_length` tokens; a context longer than the room left
    (`seq_length - 3 - question tokens`) is read in windows starting every
    `min(doc_stride, room)` tokens, the last one ending at the context's end.
    An empty context gives one window with no context tokens.

    Args:
        tokenizer: a `WordPieceTokenizer`.
        questions, contexts: tf.string [batch].
        seq_length: tokens per window.
        doc_stride: tokens between window starts.
        max_query_length: question tokens kept.

    Returns:
        dict of the windows of all questions, in question order, padded to the
        longest window: int32 [windows, length] `input_word_ids`, `input_mask`,
        `input_type_ids`; int32 [windows] `example_index` (the question's row);
        int32 [windows, length] `token_index` (the context token at each
        position, -1 elsewhere); int64 [windows, length] `token_starts` and
        `token_ends` (the character offsets of that token's word in the
        context, -1 elsewhere); bool [windows, length] `max_context`.
    """
    if seq_length < max_query_length + 4:
        raise ValueError(
            f"seq_length={seq_length} leaves no room for context after a question of up to "
            f"max_query_length={max_query_length} tokens; need seq_length >= max_query_length + 4"
        )
    if doc_stride < 1:
        raise ValueError(f"doc_stride={doc_stride}; expected 1 or more")
    question_ids = tokenizer.tokenize(questions)[:, :max_query_length]
    context_ids, starts, ends = tokenizer.tokenize_with_offsets(contexts, unit="UTF8_CHAR")
    question_length = tf.cast(question_ids.row_lengths(), tf.int32)
    context_length = tf.cast(context_ids.row_lengths(), tf.int32)
    room = seq_length - 3 - question_length
    step = tf.minimum(room, doc_stride)
    count = tf.where(context_length > room, (context_length - room + step - 1) // step + 1, 1)
    example_index = tf.repeat(tf.range(tf.size(count)), count)
    number = tf.ragged.range(count).flat_values
    window_step, window_room = tf.gather(step, example_index), tf.gather(room, example_index)
    window_context_length = tf.gather(context_length, example_index)
    start = number * window_step
    length = tf.maximum(tf.minimum(window_room, window_context_length - start), 0)
    token_index = tf.ragged.range(start, start + length)
    flat = token_index + tf.gather(tf.cast(context_ids.row_starts(), tf.int32), example_index)[:, None]

    windows = tf.shape(example_index)[0]
    one = tf.ones([windows], tf.int32)
    cls, sep = _ragged_column(one * tokenizer.cls_token_id), _ragged_column(one * tokenizer.sep_token_id)
    question = tf.gather(question_ids, example_index)
    ids = tf.concat([cls, question, sep, tf.gather(context_ids.flat_values, flat), sep], axis=1)
    question_part = tf.concat([cls, question, sep], axis=1)
    type_ids = tf.concat([tf.zeros_like(question_part), tf.ones_like(flat), _ragged_column(one)], axis=1)
    none = tf.concat([-tf.ones_like(question_part), _ragged_column(-one)], axis=1)
    positions = tf.concat([none[:, :-1], token_index, none[:, -1:]], axis=1)
    none64 = tf.cast(none, tf.int64)

    def offsets(values):
        return tf.concat([none64[:, :-1], tf.gather(values.flat_values, flat), none64[:, -1:]], axis=1).to_tensor(-1)

    token_index_dense = positions.to_tensor(-1)
    return {
        "input_word_ids": ids.to_tensor(tokenizer.pad_token_id),
        "input_mask": tf.ones_like(ids).to_tensor(0),
        "input_type_ids": type_ids.to_tensor(0),
        "example_index": example_index,
        "token_index": token_index_dense,
        "token_starts": offsets(starts),
        "token_ends": offsets(ends),
        "max_context": _max_context(token_index_dense, start, length, window_step, window_room, window_context_length, number, tf.gather(count, example_index)),
    }


def _max_context(token_index, start, length, step, room, context_length, number, count):
    """Whether each window position is its token's max-context window (run_squad's
    `_check_is_max_context`): the score min(left, right context) + 0.01 * window
    length is highest there, the first such window on ties."""

    def score(first, size, token):
        return tf.cast(tf.minimum(token - first, first + size - 1 - token), tf.float32) + 0.01 * tf.cast(size, tf.float32)

    token = token_index  # [windows, length]
    own = score(start[:, None], length[:, None], token)
    # Windows that share a token are at most ceil(room / step) apart.
    reach = tf.reduce_max(tf.concat([(room + step - 1) // step, [0]], axis=0))
    best = tf.ones_like(own, tf.bool)
    for_offsets = tf.range(-reach, reach + 1)

    def compare(offset, best):
        other = number + offset
        exists = (other >= 0) & (other < count) & tf.not_equal(offset, 0)
        first = start + offset * step
        size = tf.maximum(tf.minimum(room, context_length - first), 0)
        contains = exists[:, None] & (token >= first[:, None]) & (token < (first + size)[:, None])
        theirs = score(first[:, None], size[:, None], token)
        beats = tf.where(offset < 0, theirs >= own, theirs > own)
        return best & ~(contains & beats)

    best = tf.foldl(lambda best, offset: compare(offset, best), for_offsets, initializer=best)
    return best & (token >= 0)


def answer_token_span(tokenizer, contexts, answer_starts, answer_ends):
    """The first and last context token of each answer (characters [start, end)); -1, -1 for none."""
    _, starts, ends = tokenizer.tokenize_with_offsets(contexts, unit="UTF8_CHAR")
    answer_starts = tf.cast(answer_starts, tf.int64)
    answer_ends = tf.cast(answer_ends, tf.int64)
    first = tf.reduce_sum(tf.cast(ends <= answer_starts[:, None], tf.int32), axis=1)
    last = tf.reduce_sum(tf.cast(starts < answer_ends[:, None], tf.int32), axis=1) - 1
    found = (answer_starts >= 0) & (first <= last)
    return tf.where(found, first, -1), tf.where(found, last, -1)


def answer_positions(windows, first_token, last_token):
    """Training labels: each window's start and end positions of its question's
    answer tokens ([CLS], position 0, when the window does not hold the whole answer).

    Args:
        windows: `make_windows`' output.
        first_token, last_token: int32 [batch], `answer_token_span`'s.

    Returns:
        (start_positions, end_positions), int32 [windows].
    """
    first = tf.gather(first_token, windows["example_index"])[:, None]
    last = tf.gather(last_token, windows["example_index"])[:, None]
    token = windows["token_index"]
    start = tf.argmax(tf.cast((token == first) & (first >= 0), tf.int32), axis=1, output_type=tf.int32)
    end = tf.argmax(tf.cast((token == last) & (last >= 0), tf.int32), axis=1, output_type=tf.int32)
    inside = (start > 0) & (end > 0)
    return tf.where(inside, start, 0), tf.where(inside, end, 0)


def best_spans(
    windows,
    start_logits,
    end_logits,
    contexts,
    *,
    num_examples,
    n_best_size=20,
    max_answer_length=30,
    version_2_with_negative=False,
    null_score_diff_threshold=0.0,
):
    """Each question's answer from its windows' logits, as run_squad.py chooses it.

    In every window, the `n_best_size` highest start and end logits make
    candidate spans; a span counts if it lies in the context, starts where the
    window is its start token's max context, ends at or after its start and
    is at most `max_answer_length` tokens long. Its score is start + end
    logit; the best span over all windows of a question is its answer: the
    context's characters from the start token's word to the end token's word.
    With `version_2_with_negative`, the empty answer wins when the null score
    (the smallest [CLS] start + end over the windows) exceeds the best span's
    by more than `null_score_diff_threshold`. A question without any valid
    span (e.g. an empty context) gets the empty answer.

    Args:
        windows: `make_windows`' output.
        start_logits, end_logits: float [windows, length].
        contexts: tf.string [batch], the contexts the windows came from.
        num_examples: the batch size (scalar).
        n_best_size, max_answer_length, version_2_with_negative,
        null_score_diff_threshold: as described.

    Returns:
        dict: `answer` tf.string [batch]; `start`, `end` int64 [batch]
        (characters: `context[start:end] == answer`); `score` float32 [batch].
    """
    start_logits = tf.cast(start_logits, tf.float32)
    end_logits = tf.cast(end_logits, tf.float32)
    k = tf.minimum(n_best_size, tf.shape(start_logits)[1])
    start_values, start_index = tf.math.top_k(start_logits, k)
    end_values, end_index = tf.math.top_k(end_logits, k)
    can_start = tf.gather(windows["max_context"], start_index, batch_dims=1)
    can_end = tf.gather(windows["token_index"] >= 0, end_index, batch_dims=1)
    first = start_index[:, :, None]
    last = end_index[:, None, :]
    valid = can_start[:, :, None] & can_end[:, None, :] & (last >= first) & (last - first + 1 <= max_answer_length)
    scores = tf.where(valid, start_values[:, :, None] + end_values[:, None, :], -float("inf"))
    flat_scores = tf.reshape(scores, [tf.shape(scores)[0], -1])
    best = tf.argmax(flat_scores, axis=1, output_type=tf.int32)
    window_score = tf.gather(flat_scores, best, batch_dims=1)
    window_start = tf.gather(start_index, best // k, batch_dims=1)
    window_end = tf.gather(end_index, best % k, batch_dims=1)

    example_index = windows["example_index"]
    example_score = tf.math.unsorted_segment_max(window_score, example_index, num_examples)
    # The first window with the best score (run_squad's stable sort).
    window = tf.range(tf.shape(example_index)[0])
    is_best = tf.equal(window_score, tf.gather(example_score, example_index))
    chosen = tf.math.unsorted_segment_min(tf.where(is_best, window, tf.int32.max), example_index, num_examples)
    chosen = tf.minimum(chosen, tf.maximum(tf.shape(example_index)[0] - 1, 0))
    # (A segment's max starts from the lowest float, not -inf: test the windows themselves.)
    has_span = tf.math.unsorted_segment_max(tf.cast(tf.math.is_finite(window_score), tf.int32), example_index, num_examples) > 0
    null_score = tf.math.unsorted_segment_min(start_logits[:, 0] + end_logits[:, 0], example_index, num_examples)
    answered = has_span
    if version_2_with_negative:
        answered &= null_score - example_score <= null_score_diff_threshold

    def pick(values, positions):
        rows = tf.gather(values, chosen)
        return tf.gather(rows, tf.gather(positions, chosen), batch_dims=1)

    safe = tf.shape(example_index)[0] > 0

    def spans():
        return pick(windows["token_starts"], window_start), pick(windows["token_ends"], window_end)

    def no_spans():
        zeros = tf.zeros([num_examples], tf.int64)
        return zeros, zeros

    begin, finish = tf.cond(safe, spans, no_spans)
    begin = tf.where(answered, begin, 0)
    finish = tf.where(answered, finish, 0)
    text = tf_text.coerce_to_structurally_valid_utf8(contexts)
    answer = tf.strings.substr(text, begin, finish - begin, unit="UTF8_CHAR")
    score = tf.where(answered, example_score, null_score)
    return {"answer": answer, "start": begin, "end": finish, "score": score}
