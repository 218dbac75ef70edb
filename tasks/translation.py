"""Translation with the encoder-decoder Transformer: `seq2seq/translation`.

Sentence pairs come from a Multi30k-style folder (`task.data_dir` with
`<split>.<language>[.gz]` files, `task.source_language`/`task.target_language`)
or from your own files (`task.train_files` etc.: two aligned files or one
two-column TSV, gzip or not; `tfplm.data.parallel`). One SentencePiece
vocabulary is learned from the training text of both languages (or read from
`task.vocab_file`) and travels with the model. Training batches hold about
`task.batch_tokens` tokens of pairs of similar length; the loss is
label-smoothed cross-entropy; the learning rate warms up, then falls as the
inverse square root of the step. Every loop the validation set is translated
and scored with sacreBLEU (`val_bleu`); the best model is kept in
`model_dir/best`. `--mode=predict` translates the test split and scores it.

    task = tfplm.tasks.get("seq2seq/translation", overrides="task.data_dir=multi30k")
    model = task.build_model()
    task.compile(model)
    model.fit(task.build_inputs("train"), steps_per_epoch=500, epochs=1)
    model.translate(["Ein Mann fährt Fahrrad."])
"""

import dataclasses
import functools
import json
import os
import tempfile
from typing import Annotated

import keras
import numpy as np
import tensorflow as tf
from absl import logging
from keras import ops

from tfplm import metrics, publish
from tfplm.config import Range
from tfplm.data import parallel
from tfplm.data.pipeline import per_replica_batch_size
from tfplm.models import Seq2SeqTransformer
from tfplm.tasks import base, serving
from tfplm.tokenizers import SentencePieceTokenizer, train_sentencepiece
from tfplm.training.optimization import OptimizerConfig

SPLITS = ("train", "validation", "test")


@dataclasses.dataclass
class TranslationConfig:
    """Attributes:
    data_dir: a folder of `<split>.<language>[.gz]` files (Multi30k's layout).
    source_language, target_language: the file suffixes of the two sides.
    train_split, validation_split, test_split: the split names in `data_dir`.
    train_files, eval_files, test_files: your own pairs instead:
        "source_file;target_file" (aligned lines; a comma works too outside
        --params_override) or one two-column TSV file.
    init_checkpoint: a tfplm Seq2SeqTransformer folder to start from (its
        vocabulary is used); empty: a random `preset` model.
    preset: the architecture of a random model.
    dropout: dropout everywhere in a random model.
    vocab_file: a SentencePiece `.model`; empty: one is learned from the
        training pairs (both sides), `vocab_size` pieces.
    vocab_size: pieces of a learned vocabulary (at most; fewer for tiny data).
    max_length: training pairs with more tokens on either side are skipped.
    batch_tokens: tokens per training batch (source or target side, padding
        included), over all replicas.
    eval_batch_size: pairs per evaluation and translation batch.
    label_smoothing: of the training loss.
    bleu_examples: validation pairs translated for BLEU each loop (0: all).
    eval_num_beams: beam size of the BLEU evaluation during training (1: greedy).
    num_beams: beam size of `--mode=predict` (1: greedy).
    length_penalty: GNMT's alpha for beam search.
    """

    data_dir: str = ""
    source_language: str = "de"
    target_language: str = "en"
    train_split: str = "train"
    validation_split: str = "val"
    test_split: str = "test_2016_flickr"
    train_files: str = ""
    eval_files: str = ""
    test_files: str = ""
    init_checkpoint: str = ""
    preset: str = "transformer_tiny"
    dropout: Annotated[float, Range(min=0, max=1)] = 0.1
    vocab_file: str = ""
    vocab_size: Annotated[int, Range(min=8)] = 8000
    max_length: Annotated[int, Range(min=2)] = 128
    batch_tokens: Annotated[int, Range(min=1)] = 2048
    eval_batch_size: Annotated[int, Range(min=1)] = 64
    label_smoothing: Annotated[float, Range(min=0, max=1)] = 0.1
    bleu_examples: Annotated[int, Range(min=0)] = 0
    eval_num_beams: Annotated[int, Range(min=1)] = 1
    num_beams: Annotated[int, Range(min=1)] = 4
    length_penalty: Annotated[float, Range(min=0)] = 0.6


def corpus_bleu(hypotheses, references):
    """sacreBLEU's corpus BLEU of detokenized text against one reference each.

    Returns:
        (score 0-100, sacreBLEU's signature string, which says how it was computed).

    Example:
    >>> round(corpus_bleu(["A man rides a bike."], ["A man rides a bike."])[0], 1)
    100.0
    """
    from sacrebleu.metrics import BLEU

    bleu = BLEU()
    score = bleu.corpus_score(list(hypotheses), [list(references)])
    return score.score, str(bleu.get_signature())


def translate_all(model, texts, batch_size=64, **options):
    """`model.translate` over many texts, `batch_size` at a time, sorted by length
    so that a batch pads little (results come back in the order of `texts`)."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    translations = [None] * len(texts)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        for index, translation in zip(chunk, model.translate([texts[i] for i in chunk], **options)):
            translations[index] = translation
    return translations


@keras.saving.register_keras_serializable(package="tfplm")
class SmoothedCrossEntropy(keras.losses.Loss):
    """Cross-entropy against labels smoothed over the vocabulary (Szegedy et al., 2016),
    averaged over the weighted (non-padding) tokens.

    Args:
        label_smoothing: the probability mass spread evenly over the vocabulary.
    """

    def __init__(self, label_smoothing=0.1, name="smoothed_cross_entropy", **kwargs):
        kwargs.setdefault("reduction", "mean_with_sample_weight")
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        log_probs = ops.log_softmax(ops.cast(y_pred, "float32"), axis=-1)
        labels = ops.cast(y_true, "int32")[..., None]
        nll = -ops.take_along_axis(log_probs, labels, axis=-1)[..., 0]
        uniform = -ops.mean(log_probs, axis=-1)
        return (1.0 - self.label_smoothing) * nll + self.label_smoothing * uniform

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def _without_paths(proto):
    """A SentencePiece model without the temporary paths its trainer records:
    the same text then gives the same bytes, and no path of this machine ships."""
    from sentencepiece import sentencepiece_model_pb2

    model = sentencepiece_model_pb2.ModelProto()
    model.ParseFromString(proto)
    del model.trainer_spec.input[:]
    model.trainer_spec.ClearField("model_prefix")
    return model.SerializeToString()


class TranslationTask(base.Task):
    """Sentence-pair translation with a `Seq2SeqTransformer`; metrics: token
    accuracy and perplexity per loop, sacreBLEU on the validation set."""

    # --- data ---------------------------------------------------------------

    def _files(self, split):
        c = self.task_config
        own = {"train": c.train_files, "validation": c.eval_files, "test": c.test_files}[split]
        if own:
            return tuple(path.strip() for path in own.split(";" if ";" in own else ","))
        if not c.data_dir:
            raise ValueError(
                f"set task.data_dir (a folder of <split>.<language>[.gz] files) or "
                f"task.{'eval' if split == 'validation' else split}_files (source_file;target_file or one TSV file)"
            )
        name = {"train": c.train_split, "validation": c.validation_split, "test": c.test_split}[split]
        return parallel.split_files(c.data_dir, name, c.source_language, c.target_language)

    @functools.lru_cache(maxsize=None)
    def pairs(self, split):
        """(sources, targets) of "train", "validation" or "test", read once."""
        if split not in SPLITS:
            raise ValueError(f"split={split!r}; expected one of {SPLITS}")
        return parallel.read_pairs(self._files(split))

    @functools.cached_property
    def _checkpoint_model(self):
        return Seq2SeqTransformer.from_pretrained(self.task_config.init_checkpoint) if self.task_config.init_checkpoint else None

    @functools.cached_property
    def tokenizer(self):
        """The shared vocabulary: the init checkpoint's, `task.vocab_file`'s, or
        learned from the training pairs (deterministically: a resumed run learns
        the same one)."""
        c = self.task_config
        if self._checkpoint_model is not None:
            return self._checkpoint_model.tokenizer
        if c.vocab_file:
            if not os.path.isfile(c.vocab_file):
                raise ValueError(f"task.vocab_file {c.vocab_file!r} does not exist; pass a SentencePiece .model file")
            return SentencePieceTokenizer(proto=c.vocab_file)
        sources, targets = self.pairs("train")
        with tempfile.TemporaryDirectory() as tmp:
            path = train_sentencepiece(
                sources + targets,
                c.vocab_size,
                os.path.join(tmp, "spm"),
                hard_vocab_limit=False,  # tiny corpora get fewer pieces instead of an error
                num_threads=1,  # one thread: the same pieces every time
            )
            with open(path, "rb") as f:
                proto = _without_paths(f.read())
        tokenizer = SentencePieceTokenizer(proto=proto)
        logging.info("learned a SentencePiece vocabulary of %d pieces", tokenizer.vocabulary_size())
        return tokenizer

    def global_batch_size(self, split):
        """Training: the token budget of a batch; evaluation: pairs per batch."""
        return self.task_config.batch_tokens if split == "train" else self.task_config.eval_batch_size

    def build_inputs(self, split, input_context=None):
        c = self.task_config
        sources, targets = self.pairs(split)
        return parallel.token_batches(
            sources,
            targets,
            self.tokenizer,
            batch_tokens=per_replica_batch_size(c.batch_tokens, input_context),
            training=split == "train",
            max_length=c.max_length,
            batch_size=per_replica_batch_size(c.eval_batch_size, input_context),
            input_context=input_context,
            seed=self.config.runtime.seed,
        )

    def describe_inputs(self, split):
        return {"split": split, "files": list(self._files(split)), "pairs": len(self.pairs(split)[0])}

    # --- model, losses, metrics -----------------------------------------------

    def build_model(self):
        c = self.task_config
        if self._checkpoint_model is not None:
            return Seq2SeqTransformer.from_pretrained(c.init_checkpoint, dropout=c.dropout)
        return Seq2SeqTransformer.from_preset(
            c.preset, vocab_size=self.tokenizer.vocabulary_size(), dropout=c.dropout, tokenizer=self.tokenizer
        )

    def build_losses(self):
        return SmoothedCrossEntropy(self.task_config.label_smoothing)

    def build_metrics(self):
        return [
            keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
            metrics.Perplexity(name="perplexity"),
        ]

    def compile(self, model, steps=None):
        """As `Task.compile`, with the metrics weighted: padding positions do not count."""
        model.compile(
            optimizer=self.build_optimizer(steps),
            loss=self.build_losses(),
            weighted_metrics=self.build_metrics(),
            steps_per_execution=self.config.trainer.steps_per_execution,
            jit_compile=self.config.runtime.jit_compile,
        )
        return model

    def evaluate_predictions(self, model):
        """sacreBLEU of the validation translations (`task.bleu_examples` pairs,
        `task.eval_num_beams`): `val_bleu` every loop, `bleu` in eval_results.json."""
        c = self.task_config
        sources, references = self.pairs("validation")
        if c.bleu_examples:
            sources, references = sources[: c.bleu_examples], references[: c.bleu_examples]
        translations = translate_all(
            model, sources, c.eval_batch_size, num_beams=c.eval_num_beams, length_penalty=c.length_penalty
        )
        score, signature = corpus_bleu(translations, references)
        logging.info("validation BLEU %.2f (%s) on %d pairs; e.g. %r -> %r",
                     score, signature, len(sources), sources[0], translations[0])
        return {"bleu": score}

    def build_callbacks(self, model_dir):
        """Keeps the model of the best validation BLEU in `model_dir/best`."""
        return [base.SaveBest(model_dir, "val_bleu")]

    # --- predictions ----------------------------------------------------------

    def predict(self, model, output_dir):
        """Translates the test split (`task.num_beams`, `task.length_penalty`);
        writes `translations.<split>.beam<N>.txt` and, against its references,
        `bleu.<split>.beam<N>.json` (sacreBLEU score and signature)."""
        c = self.task_config
        sources, references = self.pairs("test")
        translations = translate_all(
            model, sources, c.eval_batch_size, num_beams=c.num_beams, length_penalty=c.length_penalty
        )
        name = c.test_split if not c.test_files else "test"
        os.makedirs(output_dir, exist_ok=True)
        text_path = os.path.join(output_dir, f"translations.{name}.beam{c.num_beams}.txt")
        publish.write_text(text_path, "".join(t.replace("\n", " ") + "\n" for t in translations))
        score, signature = corpus_bleu(translations, references)
        result = {
            "bleu": score,
            "signature": signature,
            "num_beams": c.num_beams,
            "length_penalty": c.length_penalty if c.num_beams > 1 else None,
            "pairs": len(sources),
            "files": list(self._files("test")),
        }
        bleu_path = os.path.join(output_dir, f"bleu.{name}.beam{c.num_beams}.json")
        publish.write_text(bleu_path, json.dumps(result, indent=2))
        logging.info("test BLEU %.2f (%s), beam %d", score, signature, c.num_beams)
        return [text_path, bleu_path]

    def held_out_examples(self, limit):
        return {"text": self.pairs("validation")[0][:limit]}


# The `translate` signature's inputs besides `text`, with the values `serving_default` uses.
TRANSLATE_DEFAULTS = {"num_beams": 4, "length_penalty": 0.6, "max_new_tokens": 0}


class TranslationHead(serving.ServingHead):
    """Serves a `Seq2SeqTransformer` with its tokenizer: text in, translation out,
    tokenization, beam search and detokenization in the graph.

    * `serving_default`: `text` strings [batch] alone (TF Serving's REST row
      format: `{"instances": ["Ein Mann fährt Fahrrad."]}`), decoded with
      `TRANSLATE_DEFAULTS` (beam 4, length penalty 0.6, up to twice the
      longest source's tokens plus 10);
    * `translate`: `text` plus `num_beams` (1: greedy), `length_penalty` and
      `max_new_tokens` (0: the default length).

    Both return `translation` (strings) and `token_ids` (the target tokens,
    starting with and padded by "</s>"), as `Seq2SeqTransformer.translate`.
    """

    inputs = ("text",)
    main_output = "translation"

    def __init__(self, model):
        super().__init__(model)
        self.tokenizer = model.tokenizer  # tracked: the SavedModel carries its SentencePiece model

    def translate(self, text, num_beams, length_penalty, max_new_tokens):
        return self.model.translate_graph(text, num_beams, length_penalty, max_new_tokens)

    def predict(self, text):
        return self.translate(text, **{k: tf.constant(v) for k, v in TRANSLATE_DEFAULTS.items()})

    @staticmethod
    def _decoding_specs():
        return {k: tf.TensorSpec([], tf.constant(v).dtype, name=k) for k, v in TRANSLATE_DEFAULTS.items()}

    def signatures(self):
        concrete = tf.function(self.translate).get_concrete_function(serving.string_spec("text"), **self._decoding_specs())
        return {**super().signatures(), "translate": concrete}

    def warmup_inputs(self, examples):
        inputs = super().warmup_inputs(examples)
        # Exactly the signature's dtypes (numpy would make int64): TF Serving rejects others.
        decoding = {
            k: np.asarray(TRANSLATE_DEFAULTS[k], spec.dtype.as_numpy_dtype) for k, spec in self._decoding_specs().items()
        }
        inputs["translate"] = {"text": inputs["serving_default"]["text"], **decoding}
        return inputs

    def describe(self):
        return {"defaults": dict(TRANSLATE_DEFAULTS)}

    def reference(self, examples):
        """`Seq2SeqTransformer.translate` with the defaults: the Keras path."""
        texts = [t.decode("utf-8") if isinstance(t, bytes) else t for t in examples["text"]]
        translations = self.model.translate(texts, **TRANSLATE_DEFAULTS)
        return {"translation": np.array([t.encode("utf-8") for t in translations], dtype=object)}

    def compare(self, reference, outputs):
        """Agreement: the share of translations equal to the Keras path's, character for character."""
        expected, actual = list(reference["translation"]), list(outputs["translation"])
        same = [a == b for a, b in zip(expected, actual)] if len(expected) == len(actual) else [False]
        return {"max_abs_diff": None, "agreement": float(np.mean(same)) if same else 1.0}

    def tflite_function(self, flavour, seq_length=None):
        raise serving.UnsupportedExport(
            "TFLite export does not cover a Seq2SeqTransformer: its SentencePiece ops (tensorflow_text's "
            "SentencepieceOp) are not TFLite ops and its decoding loop writes a growing cache; export a SavedModel"
        )


def translation_experiment():
    """Multi30k de→en on `transformer_tiny`, sized for ~20 minutes of a 2-core
    CPU: 1,000 steps of 2,048-token batches (about 5 epochs), Adam (beta_2
    0.98, no weight decay), peak 1e-3 after 200 warmup steps, then the
    inverse square root; label smoothing 0.1; BLEU every 250 steps."""
    return base.ExperimentConfig(
        task=TranslationConfig(),
        trainer=base.TrainerConfig(
            train_steps=1000,
            steps_per_loop=250,
            log_every_steps=50,
            optimizer=OptimizerConfig(
                learning_rate=1e-3,
                weight_decay=0.0,
                warmup_steps=200,
                decay="inverse_sqrt",
                beta_2=0.98,
                epsilon=1e-9,
            ),
        ),
    )


TASK_TYPE = base.TaskType(
    name="translation",
    task=TranslationTask,
    serving=TranslationHead,
    models=(Seq2SeqTransformer,),
    experiments={"seq2seq/translation": translation_experiment},
)
