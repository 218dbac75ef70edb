"""GPT-2's byte-level BPE and SentencePiece, as keras-nlp tokenizers with tfplm's API.

`tokenize`/`detokenize` always run keras-nlp's TensorFlow implementation
(never its pure-Python one) and return `tf.RaggedTensor` / `tf.Tensor`, so
eager calls, tf.data pipelines and exported graphs tokenize alike.
"""

import base64
import hashlib
import json
import os

import keras
import keras_nlp
import tensorflow as tf

END_OF_TEXT = "<|endoftext|>"


def _as_tensor(inputs):
    """Python/NumPy inputs as one tf.Tensor or tf.RaggedTensor (a tf.function
    would otherwise trace once per distinct Python value)."""
    if isinstance(inputs, (tf.Tensor, tf.RaggedTensor)):
        return inputs
    try:
        return tf.convert_to_tensor(inputs)
    except ValueError:  # ragged nested lists
        return tf.ragged.constant(inputs)


def _relaxed_spec(x):
    """x's spec with every dimension unknown but its rank kept: one trace per
    kind of input (rank, dtype, ragged or dense), not per batch size or length."""
    shape = [None] * x.shape.rank
    if isinstance(x, tf.RaggedTensor):
        return tf.RaggedTensorSpec(shape, x.dtype, x.ragged_rank, x.row_splits.dtype)
    return tf.TensorSpec(shape, x.dtype)


class _GraphFunctions:
    """A tokenizer's keras-nlp `tokenize`/`detokenize`, traced as tf.functions.

    keras-nlp hands eager callers Python lists (ragged ids, strings) but leaves
    tensors as they are inside a trace, where it also always takes its
    TensorFlow path. A plain object, not a trackable: a tf.function attribute
    of the layer itself would be written into every SavedModel holding it.
    """

    def __init__(self, tokenizer):
        self._parent = super(_TensorOutputs, tokenizer)
        self._functions = {}

    def __call__(self, method, inputs):
        spec = _relaxed_spec(inputs)
        key = (method, spec)
        if key not in self._functions:
            self._functions[key] = tf.function(
                getattr(self._parent, method), input_signature=[spec]
            )
        return self._functions[key](inputs)


class _TensorOutputs:
    """Mixin: `tokenize`/`detokenize` return TensorFlow tensors, also eagerly."""

    def _graph_functions(self):
        # Set through __dict__: Keras need not track it (nothing to save).
        functions = self.__dict__.get("_tfplm_graph_functions")
        if functions is None:
            functions = _GraphFunctions(self)
            self.__dict__["_tfplm_graph_functions"] = functions
        return functions

    def _forget_graph_functions(self):
        """Their traces captured the old vocabulary's lookup tables."""
        self.__dict__.pop("_tfplm_graph_functions", None)

    def tokenize(self, inputs):
        if tf.executing_eagerly():
            return self._graph_functions()("tokenize", _as_tensor(inputs))
        return super().tokenize(inputs)

    def detokenize(self, inputs):
        if tf.executing_eagerly():
            return self._graph_functions()("detokenize", _as_tensor(inputs))
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
        super().__init__(vocabulary=vocabulary, merges=merges, **kwargs)

    def set_vocabulary_and_merges(self, vocabulary, merges):
        self._forget_graph_functions()
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

    def get_config(self):
        # The vocabulary and merges are in the config, not only in a `.keras`
        # file's assets: a model's config alone rebuilds its tokenizer.
        config = super().get_config()
        config.update(vocabulary=self.vocabulary, merges=self.merges)
        return config


def _survives_kernel_cache_clears(sentence_piece, proto):
    """Gives a tensorflow_text `SentencepieceTokenizer` a model resource with a shared name.

    tensorflow_text creates the model as a resource owned by the kernel of the
    op that made it (its TODO b/318839908). Eagerly, that kernel lives in the
    context's kernel cache, which `tf.random.set_seed` (and so
    `keras.utils.set_random_seed`, which the trainer calls) clears: every
    tokenizer made before then failed with "Resource .../SentencepieceOp ...
    does not exist". A shared name (the proto's hash: equal models may share
    one resource) makes the resource manager own it instead.
    """
    from tensorflow_text.python.ops.sentencepiece_tokenizer import gen_sentencepiece_tokenizer

    shared_name = "tfplm_sentencepiece_" + hashlib.sha256(proto).hexdigest()[:32]
    model = sentence_piece._model_resource  # noqa: SLF001 - the resource this fixes

    def create():
        with tf.name_scope("SentenceTokenizerInitializer"):
            return gen_sentencepiece_tokenizer.sentencepiece_op(model=proto, shared_name=shared_name)

    model._create_resource = create  # noqa: SLF001 - also what SavedModels trace
    model._resource_handle = None  # noqa: SLF001
    model.resource_handle  # creates it


@keras.saving.register_keras_serializable(package="tfplm")
class SentencePieceTokenizer(_TensorOutputs, keras_nlp.tokenizers.SentencePieceTokenizer):
    """A SentencePiece model (tensorflow_text ops, via keras-nlp).

    Args:
        proto: path of a `.model` file or its serialized bytes.
    """

    def set_proto(self, proto):
        self._forget_graph_functions()
        super().set_proto(proto)

    def _set_proto_tf(self, proto):
        super()._set_proto_tf(proto)
        _survives_kernel_cache_clears(self._sentence_piece, proto)

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

    def get_config(self):
        # The model proto is in the config (base64), not only in a `.keras`
        # file's asset: a model's config alone rebuilds its tokenizer.
        config = super().get_config()
        config["proto"] = None if self.proto is None else base64.b64encode(self.proto).decode("ascii")
        return config

    @classmethod
    def from_config(cls, config):
        proto = config.get("proto")
        return super().from_config({**config, "proto": None if proto is None else base64.b64decode(proto)})
