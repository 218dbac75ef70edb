"""The model zoo: BERT, GPT and the encoder-decoder Transformer."""

from tfplm.models.bert import (
    BertClassifier,
    BertEncoder,
    BertPretrainer,
    BertSimilarity,
    BertSpanLabeler,
    BertTaskModel,
    BertTokenClassifier,
)
from tfplm.models.gpt import GPT
from tfplm.models.pretrained import convert_checkpoint, from_pretrained
from tfplm.models.presets import PRESETS, Preset, flops_per_token, get_preset, list_presets, parameter_count
from tfplm.models.seq2seq import Seq2SeqTransformer

__all__ = [
    "GPT",
    "PRESETS",
    "BertClassifier",
    "BertEncoder",
    "BertPretrainer",
    "BertSimilarity",
    "BertSpanLabeler",
    "BertTaskModel",
    "BertTokenClassifier",
    "Preset",
    "Seq2SeqTransformer",
    "convert_checkpoint",
    "from_pretrained",
    "flops_per_token",
    "get_preset",
    "list_presets",
    "parameter_count",
]
