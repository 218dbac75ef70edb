"""Extractive question answering (SQuAD v1.1 and v2.0): `squad/v1.1` and `squad/v2.0`.

Questions come from SQuAD-format JSON files (`task.train_file`,
`task.eval_file`). Without a training file, the evaluation file is split by
article: the model trains on articles `task.train_articles` (default 0-31) and
is evaluated on `task.eval_articles` (32-47), which is how this repository
measures SQuAD with only the official dev-v1.1.json at hand.

Contexts are read in overlapping windows as google-research/bert's
run_squad.py reads them, every token keeping the characters of its word
(`tfplm.data.squad`), so an answer is the context's own text. The model is a
`BertSpanLabeler` (start/end logits) that carries its tokenizer and windowing
settings; its serving head takes raw `question` and `context` strings and
returns the `answer`, its character offsets and its score, with tokenization,
windowing and span selection in the graph. Evaluation (`exact_match`, `f1`)
and `--mode=predict` (SQuAD's predictions.json) run that same graph.

    task = tfplm.tasks.get("squad/v1.1", overrides="task.eval_file=dev-v1.1.json,task.init_checkpoint=...")
    model = task.build_model()
    task.compile(model)
    model.fit(task.build_inputs("train"), epochs=2)
    task.evaluate_predictions(model)  # {"exact_match": ..., "f1": ...}
"""

import dataclasses
import functools
import json
import math
import os
from typing import Annotated

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from tfplm import publish
from tfplm.config import ConfigError, Range
from tfplm.data import pipeline, squad
from tfplm.models import BertSpanLabeler
from tfplm.tasks import base, serving
from tfplm.tokenizers import BertPreprocessor


@dataclasses.dataclass
class SquadConfig:
    """Attributes:
    train_file: SQuAD-format JSON to train on (e.g. train-v1.1.json). Empty:
        articles `train_articles` of `eval_file`.
    eval_file: SQuAD-format JSON to evaluate on (e.g. dev-v1.1.json); with
        no `train_file`, only its articles `eval_articles`.
    train_articles, eval_articles: the article split of `eval_file` when
        there is no `train_file`: "0-31" (both included), "32-" (to the end),
        5 (one), "" (all).
    predict_file: questions `--mode=predict` answers (default: the
        evaluation questions).
    init_checkpoint: pretrained weights: any directory `from_pretrained`
        reads (tfplm, Hugging Face, Google BERT, keras-nlp).
    preset: the architecture of a random encoder (no init_checkpoint).
    vocab_file: vocab.txt of a random encoder, or of a checkpoint without one.
    lowercase: vocab_file is uncased.
    max_seq_length: tokens per window ([CLS] question [SEP] context [SEP]).
    doc_stride: tokens between the starts of a long context's windows.
    max_query_length: question tokens kept.
    max_answer_length: longest answer, in tokens.
    n_best_size: start and end candidates per window.
    version_2_with_negative: SQuAD 2.0: questions may have no answer.
    null_score_diff_threshold: SQuAD 2.0: answer "" when the null score
        beats the best span by more than this.
    global_batch_size: training windows per step, over all replicas.
    predict_batch_size: questions answered per call in evaluation and predict.
    epochs: training epochs (used when trainer.train_steps is 0).
    """

    train_file: str = ""
    eval_file: str = ""
    train_articles: str | int = "0-31"
    eval_articles: str | int = "32-"
    predict_file: str = ""
    init_checkpoint: str = ""
    preset: str = "bert_tiny"
    vocab_file: str = ""
    lowercase: bool = True
    max_seq_length: Annotated[int, Range(min=8)] = 384
    doc_stride: Annotated[int, Range(min=1)] = 128
    max_query_length: Annotated[int, Range(min=1)] = 64
    max_answer_length: Annotated[int, Range(min=1)] = 30
    n_best_size: Annotated[int, Range(min=1)] = 20
    version_2_with_negative: bool = False
    null_score_diff_threshold: float = 0.0
    global_batch_size: Annotated[int, Range(min=1)] = 32
    predict_batch_size: Annotated[int, Range(min=1)] = 32
    epochs: Annotated[int, Range(min=1)] = 2


class _HalvedCrossentropy(keras.losses.SparseCategoricalCrossentropy):
    """Half the cross-entropy: BERT's SQuAD loss is the mean of the start and end losses."""

    def call(self, y_true, y_pred):
        return 0.5 * super().call(y_true, y_pred)


class QuestionAnsweringTask(base.EncoderTask):
    """Extractive QA on a `BertSpanLabeler`; metrics SQuAD's exact match and F1."""

    def __init__(self, config):
        super().__init__(config)
        c = self.task_config
        if c.max_seq_length < c.max_query_length + 4:
            raise ConfigError(
                f"task.max_seq_length={c.max_seq_length} leaves no room for context after "
                f"task.max_query_length={c.max_query_length} question tokens; need max_seq_length >= max_query_length + 4"
            )
        self._data = {}
        self._windows = {}
        self._scored = None  # (step, metrics) of the last evaluation
        self._answering = None  # (model, its traced serving graph)

    # --- data -----------------------------------------------------------------

    def _source(self, split):
        """(file, article slice) of a split."""
        c = self.task_config
        if split == "test" and c.predict_file:
            return c.predict_file, ""
        if not c.eval_file:
            raise ConfigError(
                "task.eval_file is empty; set it to a SQuAD JSON file (e.g. ../shared/data/squad/dev-v1.1.json: "
                "without task.train_file its articles 0-31 train and 32-47 evaluate)"
            )
        if split == "train":
            return (c.train_file, "") if c.train_file else (c.eval_file, c.train_articles)
        return c.eval_file, "" if c.train_file else c.eval_articles

    def data(self, split):
        """The split's `SquadData` ("train", "validation" or "test"), read once."""
        if split not in self._data:
            path, articles = self._source(split)
            name = "train_articles" if split == "train" else "eval_articles"
            try:
                self._data[split] = squad.read_squad(path, articles)
            except ValueError as error:
                if str(error).startswith("articles="):
                    raise ConfigError(f"task.{name}{str(error)[len('articles'):]} (of {path!r})") from None
                raise
            if not self._data[split].examples:
                raise ValueError(f"SQuAD file {path!r} (articles {_describe(articles)!r}) has no questions")
        return self._data[split]

    @functools.cached_property
    def preprocessor(self):
        """The `BertPreprocessor` (tokenizer, window length) the model carries."""
        return BertPreprocessor(self.tokenizer, self.task_config.max_seq_length, pair=True)

    def windows(self, split):
        """The split's windows with their labels (numpy, one row per window), made once.

        Training skips questions whose first answer is not the context's text
        at its `answer_start` (run_squad.py skips them too) and logs how many.
        """
        if split not in self._windows:
            c = self.task_config
            examples = self.data(split).examples
            if split == "train":
                usable = [e for e in examples if e.is_impossible or _answer_found(e)]
                if len(usable) < len(examples):
                    logging.warning(
                        "%s: skipped %d of %d training questions whose answer text is not at its answer_start",
                        self.data(split).path, len(examples) - len(usable), len(examples),
                    )
                examples = usable
            # Eagerly: tracing and optimizing this graph costs more than running it on SQuAD.
            featurize = functools.partial(_featurize, self.preprocessor.tokenizer, c)
            rows = {name: [] for name in (*serving.BERT_INPUTS, "start_positions", "end_positions")}
            for first in range(0, len(examples), 256):
                batch = examples[first : first + 256]
                spans = [e.answer_span or (-1, -1) for e in batch]
                features = featurize(
                    tf.constant([e.question for e in batch], tf.string),
                    tf.constant([e.context for e in batch], tf.string),
                    tf.constant([s for s, _ in spans], tf.int64),
                    tf.constant([e for _, e in spans], tf.int64),
                )
                lengths = features["input_mask"].numpy().sum(axis=1)
                for name in rows:
                    values = features[name].numpy()
                    rows[name] += [v[:n] for v, n in zip(values, lengths)] if values.ndim == 2 else list(values)
            self._windows[split] = rows
            logging.info("%s: %d questions in %d windows", split, len(examples), len(rows["input_word_ids"]))
        return self._windows[split]

    def num_examples(self, split):
        """Windows (the model's rows) of the split's questions."""
        return len(self.windows(split)["input_word_ids"])

    def describe_inputs(self, split):
        path, articles = self._source(split)
        return {
            "split": split,
            "source": path,
            "articles": _describe(articles),
            "questions": len(self.data(split)),
            "windows": self.num_examples(split),
        }

    def build_inputs(self, split, input_context=None):
        """Batches of (encoder inputs, {"start_logits", "end_logits"}: answer positions), one row per window.

        Training windows are shuffled and batched by length; other splits keep
        the file's order and pad each batch to its longest window.
        """
        rows = self.windows(split)
        features = {name: tf.ragged.constant(rows[name], dtype=tf.int32, ragged_rank=1) for name in serving.BERT_INPUTS}
        starts = tf.constant(rows["start_positions"], tf.int32)
        ends = tf.constant(rows["end_positions"], tf.int32)

        def window(index):
            return {name: values[index] for name, values in features.items()}, {
                "start_logits": starts[index],
                "end_logits": ends[index],
            }

        # Windows are shuffled by index (shuffling needs elements of one shape), then looked up.
        indices = pipeline.shard(tf.data.Dataset.range(len(rows["input_word_ids"])), input_context)
        batch_size = pipeline.per_replica_batch_size(self.global_batch_size(split), input_context)
        if split != "train":
            return indices.map(window).padded_batch(batch_size).prefetch(tf.data.AUTOTUNE)
        count = int(indices.cardinality())
        if count == 0:
            raise ValueError("no training windows: the training questions (or this input pipeline's shard) are empty")
        steps = math.ceil(count / batch_size)
        indices = pipeline.reshuffled(indices, 10_000, self.config.runtime.seed, endless=True)
        boundaries = pipeline.length_buckets(self.task_config.max_seq_length)
        dataset = indices.map(window, num_parallel_calls=tf.data.AUTOTUNE).bucket_by_sequence_length(
            lambda features, labels: tf.shape(features["input_word_ids"])[0],
            bucket_boundaries=boundaries,
            bucket_batch_sizes=[batch_size] * (len(boundaries) + 1),
        )
        return dataset.take(steps).apply(tf.data.experimental.assert_cardinality(steps)).prefetch(tf.data.AUTOTUNE)

    # --- model, losses, metrics -------------------------------------------------

    def build_model(self):
        c = self.task_config
        encoder = self.build_encoder()
        return BertSpanLabeler(
            encoder,
            preprocessor=self.preprocessor,
            doc_stride=c.doc_stride,
            max_query_length=c.max_query_length,
            max_answer_length=c.max_answer_length,
            n_best_size=c.n_best_size,
            version_2_with_negative=c.version_2_with_negative,
            null_score_diff_threshold=c.null_score_diff_threshold,
        )

    def build_losses(self):
        return {name: _HalvedCrossentropy(from_logits=True) for name in ("start_logits", "end_logits")}

    def build_metrics(self):
        return {
            "start_logits": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
            "end_logits": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        }

    def build_callbacks(self, model_dir):
        """Keeps the model with the best `val_f1` (SQuAD's F1 after each loop's
        validation, from `evaluate_predictions`) in `model_dir/best`."""
        return [base.SaveBest(model_dir, "val_f1")]

    # --- predictions ---------------------------------------------------------------

    def answer(self, model, examples, progress=False):
        """{question id: answer text} for `SquadExample`s, through `model`'s serving graph."""
        function = self._answerer(model)
        size = self.task_config.predict_batch_size
        answers = {}
        for first in range(0, len(examples), size):
            batch = examples[first : first + size]
            outputs = function(
                tf.constant([e.question for e in batch], tf.string), tf.constant([e.context for e in batch], tf.string)
            )
            for example, text in zip(batch, outputs["answer"].numpy()):
                answers[example.qas_id] = text.decode("utf-8")
            if progress and (first // size) % 20 == 0:
                logging.info("answered %d of %d questions", len(answers), len(examples))
        return answers

    def _answerer(self, model):
        """`model`'s serving graph (`QuestionAnsweringHead.predict`), traced once per model."""
        if self._answering is None or self._answering[0] is not model:
            head = QuestionAnsweringHead(model)
            specs = [serving.string_spec("question"), serving.string_spec("context")]
            self._answering = (model, tf.function(head.predict, input_signature=specs))
        return self._answering[1]

    def evaluate_predictions(self, model):
        """SQuAD's metrics on the validation questions: {"exact_match", "f1"} (percent;
        SQuAD 2.0 adds HasAns_* and NoAns_*). The trainer adds them to each
        loop's validation logs (`val_f1`) and to eval_results.json."""
        step = int(model.optimizer.iterations.numpy()) if getattr(model, "optimizer", None) is not None else None
        if self._scored is not None and step is not None and self._scored[0] == step:
            return dict(self._scored[1])
        data = self.data("validation")
        metrics = squad.squad_metrics(
            data.examples, self.answer(model, data.examples, progress=True), self.task_config.version_2_with_negative or None
        )
        metrics.pop("total")
        self._scored = (step, metrics)
        return dict(metrics)

    def predict(self, model, output_dir):
        """Answers `task.predict_file` (default the evaluation questions): writes
        predictions.json, SQuAD's submission format {question id: answer}."""
        if not isinstance(model, BertSpanLabeler) or model.preprocessor is None:
            raise ValueError("predict needs a BertSpanLabeler with its preprocessor (as training saves it)")
        answers = self.answer(model, self.data("test").examples, progress=True)
        path = os.path.join(output_dir, "predictions.json")
        os.makedirs(output_dir, exist_ok=True)
        publish.write_text(path, json.dumps(answers, ensure_ascii=False, indent=1) + "\n")
        return [path]

    def held_out_examples(self, limit):
        """{"question", "context"} of the first validation questions."""
        examples = self.data("validation").examples[:limit]
        return {"question": [e.question for e in examples], "context": [e.context for e in examples]}


def _describe(articles):
    return "all" if articles == "" else str(articles)


def _answer_found(example):
    start, end = example.answer_span
    return example.context[start:end] == example.answers[0]


def _featurize(tokenizer, config, questions, contexts, answer_starts, answer_ends):
    """Windows of a batch of questions with their answers' positions (`tfplm.data.squad`)."""
    windows = squad.make_windows(
        tokenizer,
        questions,
        contexts,
        seq_length=config.max_seq_length,
        doc_stride=config.doc_stride,
        max_query_length=config.max_query_length,
    )
    first, last = squad.answer_token_span(tokenizer, contexts, answer_starts, answer_ends)
    start, end = squad.answer_positions(windows, first, last)
    return {**{name: windows[name] for name in serving.BERT_INPUTS}, "start_positions": start, "end_positions": end}


class QuestionAnsweringHead(serving.BertTextHead):
    """Serves a `BertSpanLabeler`: `question` and `context` strings [batch] in;
    `answer` (string), `start`/`end` (character offsets: `context[start:end]
    == answer`) and `score` out. Tokenization, windows over long contexts and
    span selection run in the graph (`tfplm.data.squad`).

    `serve_tokenized` takes the packed ids of windows and returns their
    `start_logits` and `end_logits`, as the TFLite "ids" file does (one window
    of `seq_length` tokens per call); `describe()` says how an app makes the
    windows and picks the span.
    """

    main_output = "score"

    def __init__(self, model):
        super().__init__(model)
        self.inputs = ("question", "context")

    def outputs(self, packed):
        logits = self.model(packed, training=False)
        return {name: tf.cast(logits[name], tf.float32) for name in ("start_logits", "end_logits")}

    def windows(self, question, context):
        m = self.model
        return squad.make_windows(
            m.tokenizer,
            question,
            context,
            seq_length=self.preprocessor.seq_length,
            doc_stride=m.doc_stride,
            max_query_length=m.max_query_length,
        )

    def predict(self, question, context):
        windows = self.windows(question, context)
        logits = self._in_chunks({name: windows[name] for name in serving.BERT_INPUTS})
        m = self.model
        return squad.best_spans(
            windows,
            logits["start_logits"],
            logits["end_logits"],
            context,
            num_examples=tf.size(question),
            n_best_size=m.n_best_size,
            max_answer_length=m.max_answer_length,
            version_2_with_negative=m.version_2_with_negative,
            null_score_diff_threshold=m.null_score_diff_threshold,
        )

    def describe(self):
        m = self.model
        return {
            "pair": True,
            "seq_length": self.preprocessor.seq_length,
            **{key: getattr(m, key) for key in BertSpanLabeler.SETTINGS},
            "postprocessing": (
                "One call scores one window [CLS] question [SEP] context tokens [SEP] (input_type_ids 0 then 1; "
                "question cut to max_query_length tokens). A context longer than room = seq_length - 3 - question "
                "tokens is read in windows starting every min(doc_stride, room) tokens. In each window take the "
                "n_best_size highest start_logits and end_logits; a pair (i, j) counts if both are context tokens, "
                "j >= i, j - i + 1 <= max_answer_length and this window gives token i its most context "
                "(min(left, right) + 0.01 * window length, first window on ties); the answer is the best "
                "start_logits[i] + end_logits[j] over all windows, the context's characters from the start of "
                "token i's word to the end of token j's word. SQuAD 2.0 models answer \"\" when the smallest "
                "start_logits[0] + end_logits[0] over the windows exceeds that score by more than "
                "null_score_diff_threshold."
            ),
        }

    def warmup_inputs(self, examples):
        question = np.asarray(examples["question"], dtype=object)
        context = np.asarray(examples["context"], dtype=object)
        windows = self.windows(tf.constant(question, tf.string), tf.constant(context, tf.string))
        records = [
            tf.train.Example(
                features=tf.train.Features(
                    feature={
                        "question": tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(q).encode()])),
                        "context": tf.train.Feature(bytes_list=tf.train.BytesList(value=[str(c).encode()])),
                    }
                )
            ).SerializeToString()
            for q, c in zip(question, context)
        ]
        return {
            "serving_default": {"question": question, "context": context},
            "serve_tokenized": {name: windows[name].numpy() for name in serving.BERT_INPUTS},
            "serve_examples": {"inputs": np.array(records, dtype=object)},
        }

    def reference(self, examples):
        outputs = serving.to_numpy(
            self.predict(tf.constant(examples["question"], tf.string), tf.constant(examples["context"], tf.string))
        )
        # What the TFLite "ids" file computes: the first window as the preprocessor packs the pair.
        packed = self.preprocessor(
            (tf.constant(examples["question"], tf.string), tf.constant(examples["context"], tf.string)), pad_to_longest=True
        )
        outputs.update(serving.to_numpy(self.outputs(packed)))
        return outputs

    def compare(self, reference, outputs):
        """Answers: `agreement` is the share of answers equal to the Keras model's
        (and their start/end), `answer_f1` SQuAD's F1 of each answer against
        the Keras one (mean, percent), `max_abs_diff` of the scores, relative
        to their size when above 1 (they are sums of two logits). Logits
        (TFLite): `max_abs_diff` over the positions both have."""
        if "answer" not in outputs:
            diff = 0.0
            for name in ("start_logits", "end_logits"):
                expected = np.asarray(reference[name])
                actual = np.asarray(outputs[name])[:, : expected.shape[1]]
                if actual.shape != expected.shape:
                    raise ValueError(f"{name}: shape {actual.shape} differs from the Keras model's {expected.shape}")
                diff = max(diff, float(np.abs(actual - expected).max()) if expected.size else 0.0)
            return {"max_abs_diff": diff, "agreement": None}
        expected = [a.decode("utf-8", "replace") for a in np.asarray(reference["answer"])]
        actual = [a.decode("utf-8", "replace") for a in np.asarray(outputs["answer"])]
        if len(actual) != len(expected):
            raise ValueError(f"answer: {len(actual)} answers for {len(expected)} questions")
        same = [
            a == e and s == rs and t == rt
            for a, e, s, rs, t, rt in zip(actual, expected, outputs["start"], reference["start"], outputs["end"], reference["end"])
        ]
        # Scores are sums of two logits (~10): their difference counts relative to their size.
        expected_scores = np.asarray(reference["score"], np.float64)
        scores = (np.asarray(outputs["score"], np.float64) - expected_scores) / np.maximum(1.0, np.abs(expected_scores))
        f1 = [squad.f1_score(a, e) if (a or e) else 1.0 for a, e in zip(actual, expected)]
        return {
            "max_abs_diff": float(np.abs(scores).max()) if scores.size else 0.0,
            "agreement": float(np.mean(same)) if same else 1.0,
            "answer_f1": 100.0 * float(np.mean(f1)) if f1 else 100.0,
        }

    def tflite_function(self, flavour, seq_length=None):
        """"ids" only: one packed window in, its `start_logits` and `end_logits`
        out; the app makes the windows and picks the span (`describe()`)."""
        if flavour != "ids":
            raise serving.UnsupportedExport(
                "question answering exports TFLite with flavour 'ids' only (windows and span selection happen "
                "in the app, as the file's .json describes); pass --tflite_flavours=ids"
            )
        return super().tflite_function(flavour, seq_length)


def squad_experiment(version_2=False):
    """BERT's SQuAD recipe (AdamW, 10% warmup, linear decay, 2 epochs, batch 32) at 5e-5, which
    suits small encoders such as MiniLM better than BERT-base's 3e-5."""

    def make():
        return base.fine_tuning_experiment(SquadConfig(version_2_with_negative=version_2), learning_rate=5e-5)

    return make


TASK_TYPE = base.TaskType(
    name="question_answering",
    task=QuestionAnsweringTask,
    serving=QuestionAnsweringHead,
    models=(BertSpanLabeler,),
    experiments={"squad/v1.1": squad_experiment(), "squad/v2.0": squad_experiment(version_2=True)},
)
