"""Pretraining tasks: `bert/pretraining` (masked LM + NSP) and `gpt/pretraining` (causal LM)."""

import dataclasses
import os

import keras

from tfplm import metrics
from tfplm.data import causal_lm, masking, pretraining
from tfplm.models import GPT, BertEncoder, BertPretrainer, get_preset
from tfplm.tasks import base
from tfplm.tokenizers import SentencePieceTokenizer, WordPieceTokenizer


@dataclasses.dataclass
class DataConfig:
    """Attributes:
    input_path: glob(s) of the data, comma-separated.
    input_format: "tfrecord" (BERT's pretraining TFRecords), or raw text:
        "bert" (a sentence per line, blank lines between documents) or
        "prose" (e.g. books); raw text is masked on the fly (BERT) or packed
        into blocks (GPT).
    seq_length: tokens per example.
    max_predictions_per_seq: masked positions per example (BERT).
    global_batch_size: examples per step, over all replicas.
    shuffle_buffer_size: examples shuffled together when training (1 = keep
        the file order).
    """

    input_path: str = ""
    input_format: str = "tfrecord"
    seq_length: int = 128
    max_predictions_per_seq: int = 20
    global_batch_size: int = 32
    shuffle_buffer_size: int = 10_000


@dataclasses.dataclass
class ModelConfig:
    """Attributes:
    preset: the architecture (see `tfplm.models.list_presets()`).
    vocab_size: 0 = the tokenizer's vocabulary size.
    dropout: dropout everywhere (embeddings, attention, sublayers).
    max_length: 0 = the preset's.
    """

    preset: str = "bert_tiny"
    vocab_size: int = 0
    dropout: float = 0.1
    max_length: int = 0

    def overrides(self, vocab_size):
        values = {"vocab_size": self.vocab_size or vocab_size, "dropout": self.dropout}
        if self.max_length:
            values["max_length"] = self.max_length
        return values


@dataclasses.dataclass
class PretrainingConfig:
    """Attributes:
    model: the architecture.
    vocab_file: vocab.txt (BERT) or a SentencePiece .model (GPT).
    lowercase: the WordPiece vocabulary is uncased.
    train_data, validation_data: the inputs.
    init_checkpoint: pretrained weights to continue from: any directory
        `from_pretrained` reads (tfplm, Hugging Face, Google BERT, keras-nlp).
        Its tokenizer then replaces `vocab_file`'s.
    """

    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    vocab_file: str = ""
    lowercase: bool = True
    train_data: DataConfig = dataclasses.field(default_factory=DataConfig)
    validation_data: DataConfig = dataclasses.field(default_factory=DataConfig)
    init_checkpoint: str = ""


PRETRAINED_DIR = "pretrained"


class SavePretrained(keras.callbacks.Callback):
    """Writes the trained model in tfplm's format to `directory` when training ends,
    ready for `from_pretrained` (e.g. `--init_checkpoint` of a fine-tuning run)."""

    def __init__(self, directory, seq_length):
        super().__init__()
        self.directory = directory
        self.seq_length = seq_length

    def on_train_end(self, logs=None):
        self.model.save_pretrained(self.directory, seq_length=self.seq_length)


class _PretrainingTask(base.Task):
    """What both pretraining tasks share: the tokenizer, data configs, batch sizes,
    starting from pretrained weights and saving them."""

    model_class = None  # BertPretrainer or GPT

    def build_callbacks(self, model_dir):
        """Saves `model_dir/pretrained` at the end of training."""
        seq_length = self.task_config.train_data.seq_length if self.model_class is BertPretrainer else None
        return [SavePretrained(os.path.join(model_dir, PRETRAINED_DIR), seq_length)]

    def _from_init_checkpoint(self):
        """The model of `task.init_checkpoint` (with its tokenizer), or None."""
        if not self.task_config.init_checkpoint:
            return None
        model = self.model_class.from_pretrained(self.task_config.init_checkpoint)
        if model.tokenizer is None:
            model.tokenizer = self.tokenizer
        self._tokenizer = model.tokenizer
        return model

    def _data(self, split):
        data = self.task_config.train_data if split == "train" else self.task_config.validation_data
        if not data.input_path:
            raise ValueError(
                f"task.{'train' if split == 'train' else 'validation'}_data.input_path is empty; "
                "point it at the data files"
            )
        return data

    def global_batch_size(self, split):
        return self._data(split).global_batch_size

    def _per_replica_batch_size(self, split, input_context):
        global_batch = self.global_batch_size(split)
        return input_context.get_per_replica_batch_size(global_batch) if input_context else global_batch

    def describe_inputs(self, split):
        return dataclasses.asdict(self._data(split))

    def _check_vocab_file(self):
        path = self.task_config.vocab_file
        if not path:
            raise ValueError("task.vocab_file is empty; pass the vocabulary the data was made with")
        if not os.path.exists(path):
            raise ValueError(f"task.vocab_file {path!r} does not exist")
        return path


class BertPretrainingTask(_PretrainingTask):
    """Masked LM + next sentence prediction, as in BERT.

    Losses: MLM cross-entropy weighted by `masked_lm_weights` and averaged over
    the real predictions, plus NSP cross-entropy. Metrics: MLM accuracy and
    perplexity, NSP accuracy.
    """

    def __init__(self, config):
        super().__init__(config)
        self._tokenizer = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = WordPieceTokenizer(self._check_vocab_file(), self.task_config.lowercase)
        return self._tokenizer

    model_class = BertPretrainer

    def build_model(self):
        model = self._from_init_checkpoint()
        if model is not None:
            return model
        model_config = self.task_config.model
        get_preset(model_config.preset, "bert")
        vocab_size = model_config.vocab_size or self.tokenizer.vocabulary_size()
        encoder = BertEncoder.from_preset(model_config.preset, **model_config.overrides(vocab_size))
        model = BertPretrainer(encoder)
        model.tokenizer = self.tokenizer
        return model

    def build_inputs(self, split, input_context=None):
        data = self._data(split)
        batch_size = self._per_replica_batch_size(split, input_context)
        is_training = split == "train"
        if data.input_format == "tfrecord":
            dataset = pretraining.bert_pretraining_dataset(
                data.input_path,
                data.seq_length,
                data.max_predictions_per_seq,
                batch_size,
                is_training,
                input_context=input_context,
                shuffle_buffer_size=data.shuffle_buffer_size,
            )
        else:
            dataset = masking.dynamic_masking_dataset(
                data.input_path,
                self.tokenizer,
                data.seq_length,
                data.max_predictions_per_seq,
                batch_size,
                is_training,
                input_format=data.input_format,
                input_context=input_context,
            )
        return dataset.map(self.to_keras)

    @staticmethod
    def to_keras(features, labels):
        """(features, labels) → Keras's (x, y, sample_weight) keyed by output name."""
        y = {"mlm_logits": labels["masked_lm_ids"], "nsp_logits": labels["next_sentence_labels"]}
        sample_weight = {
            "mlm_logits": labels["masked_lm_weights"],
            "nsp_logits": keras.ops.ones_like(labels["next_sentence_labels"], dtype="float32"),
        }
        return features, y, sample_weight

    def build_losses(self):
        return {
            "mlm_logits": keras.losses.SparseCategoricalCrossentropy(
                from_logits=True, reduction="mean_with_sample_weight", name="mlm_loss"
            ),
            "nsp_logits": keras.losses.SparseCategoricalCrossentropy(from_logits=True, name="nsp_loss"),
        }

    def build_metrics(self):
        return {
            "mlm_logits": [
                keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
                metrics.Perplexity(name="perplexity"),
            ],
            "nsp_logits": [keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        }


class GPTPretrainingTask(_PretrainingTask):
    """Next-token prediction on packed blocks of text; metric: perplexity."""

    def __init__(self, config):
        super().__init__(config)
        self._tokenizer = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            self._tokenizer = SentencePieceTokenizer(proto=self._check_vocab_file())
        return self._tokenizer

    model_class = GPT

    def build_model(self):
        model = self._from_init_checkpoint()
        if model is not None:
            return model
        model_config = self.task_config.model
        vocab_size = model_config.vocab_size or self.tokenizer.vocabulary_size()
        model = GPT.from_preset(model_config.preset, **model_config.overrides(vocab_size))
        model.tokenizer = self.tokenizer
        return model

    def build_inputs(self, split, input_context=None):
        data = self._data(split)
        if data.input_format == "tfrecord":
            raise ValueError("gpt/pretraining reads raw text: set input_format to 'prose' or 'bert'")
        return causal_lm.causal_lm_dataset(
            data.input_path,
            self.tokenizer,
            data.seq_length,
            self._per_replica_batch_size(split, input_context),
            split == "train",
            input_format=data.input_format,
            input_context=input_context,
            shuffle_buffer_size=data.shuffle_buffer_size,
        )

    def build_losses(self):
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True, name="lm_loss")

    def build_metrics(self):
        return [metrics.Perplexity(name="perplexity")]


def bert_pretraining_experiment():
    return base.ExperimentConfig(task=PretrainingConfig())


def gpt_pretraining_experiment():
    config = PretrainingConfig(
        model=ModelConfig(preset="gpt_nano"),
        train_data=DataConfig(input_format="prose", seq_length=128),
        validation_data=DataConfig(input_format="prose", seq_length=128),
    )
    return base.ExperimentConfig(task=config)
