"""What the pretraining task types share: configs, the tokenizer, starting from
pretrained weights and leaving `model_dir/pretrained` behind.

The task types themselves: `masked_lm.py` (`bert/pretraining`, masked LM +
NSP) and `causal_lm.py` (`gpt/pretraining`).
"""

import dataclasses
from typing import Annotated
import functools
import os

from tfplm.config import Range
from tfplm.models import pretrained
from tfplm.tasks import base


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
    seq_length: Annotated[int, Range(min=3)] = 128
    max_predictions_per_seq: Annotated[int, Range(min=1)] = 20
    global_batch_size: Annotated[int, Range(min=1)] = 32
    shuffle_buffer_size: Annotated[int, Range(min=0)] = 10_000


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


class PretrainingTask(base.Task):
    """Base of the pretraining tasks: the tokenizer (the vocab file's, or the
    init checkpoint's), data configs, batch sizes, and `model_dir/pretrained`.

    Subclasses set `family` and implement `tokenizer_from_vocab_file`.
    """

    family = None  # "bert" or "gpt"

    def tokenizer_from_vocab_file(self, path):
        raise NotImplementedError

    @functools.cached_property
    def checkpoint(self):
        """`task.init_checkpoint`, read once (None without one). A checkpoint
        without tokenizer files gets `task.vocab_file`'s."""
        if not self.task_config.init_checkpoint:
            return None
        checkpoint = pretrained.read_checkpoint(self.task_config.init_checkpoint, family=self.family)
        if checkpoint.tokenizer is None:
            tokenizer = self.tokenizer_from_vocab_file(self._check_vocab_file())
            base.check_vocabulary_fits(tokenizer, checkpoint, f"task.vocab_file {self.task_config.vocab_file!r}")
            checkpoint = dataclasses.replace(checkpoint, tokenizer=tokenizer)
        return checkpoint

    @functools.cached_property
    def tokenizer(self):
        """The tokenizer of the inputs and the model: the init checkpoint's, else `task.vocab_file`'s."""
        if self.checkpoint is not None:
            return self.checkpoint.tokenizer
        return self.tokenizer_from_vocab_file(self._check_vocab_file())

    def build_callbacks(self, model_dir):
        """Saves `model_dir/pretrained` at the end of training."""
        return [base.SavePretrained(os.path.join(model_dir, PRETRAINED_DIR))]

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

    def describe_inputs(self, split):
        return dataclasses.asdict(self._data(split))

    def _check_vocab_file(self):
        path = self.task_config.vocab_file
        if not path:
            raise ValueError("task.vocab_file is empty; pass the vocabulary the data was made with")
        if not os.path.exists(path):
            raise ValueError(f"task.vocab_file {path!r} does not exist")
        return path
