"""tfplm: BERT, GPT and encoder-decoder Transformers for TensorFlow/Keras 3."""

__version__ = "0.1.0"
