"""Tokenizers that run as TensorFlow ops: in tf.data, in SavedModels, in TFLite."""

from tfplm.tokenizers.subword import GPT2Tokenizer, SentencePieceTokenizer
from tfplm.tokenizers.vocab import build_wordpiece_vocab, train_sentencepiece
from tfplm.tokenizers.wordpiece import (
    SPECIAL_TOKENS,
    BertPreprocessor,
    WordPieceTokenizer,
    check_bert_vocabulary,
    pack_segments,
    read_vocabulary,
)

__all__ = [
    "SPECIAL_TOKENS",
    "BertPreprocessor",
    "GPT2Tokenizer",
    "SentencePieceTokenizer",
    "WordPieceTokenizer",
    "build_wordpiece_vocab",
    "check_bert_vocabulary",
    "pack_segments",
    "read_vocabulary",
    "train_sentencepiece",
]
