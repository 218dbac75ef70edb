"""Keras 3 layers that build encoder and decoder Transformers."""

from tfplm.layers.attention import MultiHeadAttention
from tfplm.layers.embeddings import TextEmbedding, sinusoidal_positions
from tfplm.layers.heads import ClassificationHead, MaskedLMHead, Pooler, SpanHead
from tfplm.layers.masks import causal_attention_mask, padding_attention_mask
from tfplm.layers.transformer import FeedForward, TransformerDecoderBlock, TransformerEncoderBlock

__all__ = [
    "ClassificationHead",
    "FeedForward",
    "MaskedLMHead",
    "MultiHeadAttention",
    "Pooler",
    "SpanHead",
    "TextEmbedding",
    "TransformerDecoderBlock",
    "TransformerEncoderBlock",
    "causal_attention_mask",
    "padding_attention_mask",
    "sinusoidal_positions",
]
