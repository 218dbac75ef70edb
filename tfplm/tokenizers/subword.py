"""GPT-2's byte-level BPE and SentencePiece, as keras-nlp tokenizers with tfplm's API.

Both always run keras-nlp's TensorFlow implementation (never its pure-Python
one), so eager calls, tf.data pipelines and exported graphs tokenize alike.
"""

import json
import os

import keras
import keras_nlp
# keras-nlp turns eager outputs into Python lists unless inside this scope; we
# return tf.RaggedTensor / tf.Tensor everywhere, like WordPieceTokenizer.
from keras_hub.src.utils.tensor_utils import no_convert_scope

END_OF_TEXT = "<|endoftext|>"


class _TensorOutputs:
    """Mixin: `tokenize`/`detokenize` return TensorFlow tensors, also eagerly."""

    def tokenize(self, inputs):
        with no_convert_scope():
            return super().tokenize(inputs)

    def detokenize(self, inputs):
        with no_convert_scope():
            return super().detokenize(inputs)


@keras.saving.register_keras_serializable(package="tfplm")
class GPT2Tokenizer(_TensorOutputs, keras_nlp.tokenizers.BytePairTokenizer):
    """GPT-2's byte-level BPE (vocab.json + merges.txt), via keras-nlp.

    `<|endoftext|>` separates documents and ends generation; it doubles as
    the padding id.

    Args:
        vocabulary: a vocab.json path or a dict token → id.
        merges: a merges.txt path or a list of "a b" merge rules.

    Example:
    >>> tokenizer = GPT2Tokenizer("vocab.json", "merges.txt")  # doctest: +SKIP
    >>> tokenizer.detokenize(tokenizer.tokenize(["Hello world"]))  # doctest: +SKIP
    """

    def __init__(self, vocabulary=None, merges=None, **kwargs):
        kwargs.setdefault("unsplittable_tokens", [END_OF_TEXT])
        kwargs["_allow_python_workflow"] = False
        super().__init__(vocabulary=vocabulary, merges=merges, **kwargs)

    def set_vocabulary_and_merges(self, vocabulary, merges):
        super().set_vocabulary_and_merges(vocabulary, merges)
        if vocabulary is not None and END_OF_TEXT not in self.get_vocabulary():
            raise ValueError(f"the GPT-2 vocabulary must contain {END_OF_TEXT!r}")

    @property
    def end_token_id(self):
        return self.token_to_id(END_OF_TEXT)

    pad_token_id = end_token_id

    def save_vocabulary(self, directory):
        """Writes vocab.json and merges.txt into `directory`; returns their paths."""
        vocab_path = os.path.join(directory, "vocab.json")
        merges_path = os.path.join(directory, "merges.txt")
        with open(vocab_path, "w", encoding="utf-8") as f:
            json.dump(self.vocabulary, f, ensure_ascii=False)
        with open(merges_path, "w", encoding="utf-8") as f:
            f.write("\n".join(self.merges) + "\n")
        return [vocab_path, merges_path]


@keras.saving.register_keras_serializable(package="tfplm")
class SentencePieceTokenizer(_TensorOutputs, keras_nlp.tokenizers.SentencePieceTokenizer):
    """A SentencePiece model (tensorflow_text ops, via keras-nlp).

    Args:
        proto: path of a `.model` file or its serialized bytes.
    """

    def __init__(self, proto=None, **kwargs):
        kwargs["_allow_python_workflow"] = False
        super().__init__(proto=proto, **kwargs)

    @property
    def end_token_id(self):
        """The end-of-text id ("</s>", as `train_sentencepiece` sets it)."""
        return self.token_to_id("</s>")

    @property
    def pad_token_id(self):
        return self.token_to_id("<pad>")

    def save_vocabulary(self, directory):
        """Writes spm.model into `directory`; returns [its path]."""
        path = os.path.join(directory, "spm.model")
        with open(path, "wb") as f:
            f.write(self.proto)
        return [path]
