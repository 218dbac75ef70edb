"""BERT (Devlin et al., 2019): the encoder, its pretraining heads, a classifier and a span labeler.

Inputs and outputs use the TF Hub BERT names, so code written for TF Hub BERT
encoders works with these models unchanged.
"""

import keras

from tfplm.layers import (
    ClassificationHead,
    MaskedLMHead,
    Pooler,
    SpanHead,
    TextEmbedding,
    TransformerEncoderBlock,
    padding_attention_mask,
)
from tfplm.models.base import TextModel, deserialize, serialize
from tfplm.models.presets import get_preset


def _int_input(name):
    return keras.Input(shape=(None,), dtype="int32", name=name)


POOLINGS = ("pooler", "cls", "mean")


@keras.saving.register_keras_serializable(package="tfplm")
class SentencePooling(keras.layers.Layer):
    """One vector per text from a BERT encoder's outputs (`BertEncoder.embed`).

    Computes in float32 whatever the policy, so embeddings and their cosines
    are float32 under mixed precision too.

    Args:
        mode: "pooler" (the pooled [CLS] output), "cls" (the [CLS] token's
            hidden state) or "mean" (the mean of the unpadded tokens'
            hidden states, sentence-transformers' mean pooling).
        normalize: divide each vector by its L2 norm (at least 1e-12).

    Example:
    >>> pool = SentencePooling("mean")
    >>> sequence = keras.ops.convert_to_tensor([[[1.0, 2.0], [3.0, 4.0], [9.0, 9.0]]])
    >>> pool(sequence, sequence[:, 0], keras.ops.convert_to_tensor([[1, 1, 0]])).numpy().tolist()
    [[2.0, 3.0]]
    """

    def __init__(self, mode="pooler", normalize=False, **kwargs):
        if mode not in POOLINGS:
            raise ValueError(f"pooling={mode!r}; expected one of {', '.join(POOLINGS)}")
        super().__init__(**{"dtype": "float32", **kwargs})
        self.mode = mode
        self.normalize = bool(normalize)
        self.built = True  # no weights

    def call(self, sequence_output, pooled_output, input_mask):
        if self.mode == "pooler":
            vectors = pooled_output
        elif self.mode == "cls":
            vectors = sequence_output[:, 0]
        else:
            mask = keras.ops.expand_dims(keras.ops.cast(input_mask, self.compute_dtype), -1)
            total = keras.ops.sum(sequence_output * mask, axis=1)
            vectors = total / keras.ops.maximum(keras.ops.sum(mask, axis=1), 1e-9)
        if self.normalize:
            norm = keras.ops.sqrt(keras.ops.sum(keras.ops.square(vectors), axis=-1, keepdims=True))
            vectors = vectors / keras.ops.maximum(norm, 1e-12)
        return vectors

    def get_config(self):
        return {**super().get_config(), "mode": self.mode, "normalize": self.normalize}


@keras.saving.register_keras_serializable(package="tfplm")
class BertEncoder(TextModel, keras.Model):
    """The BERT Transformer encoder with its pooler.

    Args:
        vocab_size: WordPiece vocabulary size.
        hidden_size: width of every layer.
        num_layers: number of Transformer blocks.
        num_heads: attention heads per block.
        intermediate_size: feed-forward width (4 × hidden in BERT).
        max_length: longest sequence (learned position embeddings).
        type_vocab_size: number of segment types.
        activation: feed-forward activation.
        dropout: dropout on embeddings and sublayer outputs.
        attention_dropout: dropout on attention probabilities.
        layer_norm_epsilon: LayerNorm epsilon.
        preprocessor: the `BertPreprocessor` (tokenizer + packing) that turns
            raw text into the inputs; saved with the model (`.keras`,
            `save_pretrained`, exports). None for a bare backbone.
        pooling: how `embed` makes one vector per text, as the checkpoint was
            trained: "pooler" (BERT's pooled [CLS] output), "cls" (the [CLS]
            token's final hidden state) or "mean" (the mean of the text's
            tokens, as sentence-transformers checkpoints do; read from their
            `modules.json` and `1_Pooling/config.json`).
        normalize: `embed` returns unit-length (L2-normalized) vectors (a
            sentence-transformers `Normalize` module).

    Inputs (int32 [batch, length]): `input_word_ids`, `input_mask`, `input_type_ids`.

    Outputs: `sequence_output` [batch, length, hidden], `pooled_output`
    [batch, hidden] and `encoder_outputs`, the list of every block's output.

    Example:
    >>> encoder = BertEncoder.from_preset("bert_tiny", vocab_size=100)
    >>> ids = keras.ops.ones((1, 8), "int32")
    >>> outputs = encoder({"input_word_ids": ids, "input_mask": ids,
    ...                    "input_type_ids": 0 * ids})
    >>> outputs["sequence_output"].shape, len(outputs["encoder_outputs"])
    ((1, 8, 128), 2)
    """

    def __init__(
        self,
        vocab_size,
        hidden_size,
        num_layers,
        num_heads,
        intermediate_size,
        max_length=512,
        type_vocab_size=2,
        activation="gelu",
        dropout=0.1,
        attention_dropout=0.1,
        layer_norm_epsilon=1e-12,
        preprocessor=None,
        pooling="pooler",
        normalize=False,
        **kwargs,
    ):
        dtype = kwargs.pop("dtype", None)
        self.sentence_pooling = SentencePooling(pooling, normalize, name="sentence_pooling")
        self.embedding = TextEmbedding(
            vocab_size,
            hidden_size,
            max_length=max_length,
            type_vocab_size=type_vocab_size,
            layer_norm_epsilon=layer_norm_epsilon,
            dropout=dropout,
            dtype=dtype,
            name="embedding",
        )
        self.blocks = [
            TransformerEncoderBlock(
                num_heads,
                intermediate_size,
                activation=activation,
                dropout=dropout,
                attention_dropout=attention_dropout,
                layer_norm_epsilon=layer_norm_epsilon,
                dtype=dtype,
                name=f"block_{i}",
            )
            for i in range(num_layers)
        ]
        self.pooler = Pooler(dtype=dtype, name="pooler")

        # Sorted by name: Keras flattens dict inputs in key order, and a model
        # nested in another (e.g. after a preprocessor) must agree with it.
        inputs = {name: _int_input(name) for name in ("input_mask", "input_type_ids", "input_word_ids")}
        x = self.embedding(inputs["input_word_ids"], inputs["input_type_ids"])
        attention_mask = padding_attention_mask(inputs["input_mask"])
        encoder_outputs = []
        for block in self.blocks:
            x = block(x, attention_mask=attention_mask)
            encoder_outputs.append(x)
        outputs = {
            "sequence_output": x,
            "pooled_output": self.pooler(x),
            "encoder_outputs": encoder_outputs,
        }
        super().__init__(inputs=inputs, outputs=outputs, dtype=dtype, **kwargs)

        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_size = intermediate_size
        self.max_length = max_length
        self.type_vocab_size = type_vocab_size
        self.activation = activation
        self.dropout = dropout
        self.attention_dropout = attention_dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.preprocessor = preprocessor
        self.pooling = pooling
        self.normalize = bool(normalize)

    def embed(self, inputs, training=False):
        """Sentence embeddings, float32 [batch, hidden]: the encoder's outputs
        pooled as `pooling` says (and L2-normalized if `normalize`).

        Args:
            inputs: the encoder's inputs (a dict of int32 [batch, length]).
            training: run dropout.
        """
        outputs = self(inputs, training=training)
        return self.sentence_pooling(outputs["sequence_output"], outputs["pooled_output"], inputs["input_mask"])

    @classmethod
    def from_preset(cls, name, **overrides):
        """A randomly initialised encoder of the named architecture.

        Args:
            name: a "bert_*" preset (see `tfplm.models.list_presets("bert")`).
            **overrides: constructor arguments to change, e.g. `vocab_size`.
        """
        return cls(**{**get_preset(name, "bert").config, **overrides})

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
            "num_heads": self.num_heads,
            "intermediate_size": self.intermediate_size,
            "max_length": self.max_length,
            "type_vocab_size": self.type_vocab_size,
            "activation": self.activation,
            "dropout": self.dropout,
            "attention_dropout": self.attention_dropout,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "preprocessor": serialize(self.preprocessor),
            "pooling": self.pooling,
            "normalize": self.normalize,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**{**config, "preprocessor": deserialize(config.get("preprocessor"))})


class BertTaskModel(TextModel, keras.Model):
    """Base of the models made of a `BertEncoder` plus heads (a task type's model).

    It has one preprocessor, its encoder's: a `preprocessor` passed to the
    constructor replaces the encoder's (one object, so a saved model holds its
    vocabulary once). A subclass sets `self.encoder` and its heads, calls
    `super().__init__(inputs=..., outputs=...)`, then
    `self._set_preprocessor(preprocessor)`, and returns its own constructor
    arguments from `_task_config` (see `BertClassifier`).
    """

    @property
    def max_length(self):
        """The encoder's longest input."""
        return self.encoder.max_length

    def _task_config(self):
        return {}

    def _set_preprocessor(self, preprocessor):
        if preprocessor is not None:
            self.encoder.preprocessor = preprocessor
        self.preprocessor = self.encoder.preprocessor

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "encoder": keras.saving.serialize_keras_object(self.encoder),
            **self._task_config(),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**{**config, "encoder": keras.saving.deserialize_keras_object(config["encoder"])})


@keras.saving.register_keras_serializable(package="tfplm")
class BertPretrainer(BertTaskModel):
    """BERT with its pretraining heads: masked LM (tied to the word embeddings) and NSP.

    Args:
        encoder: a `BertEncoder`.
        preprocessor: a `BertPreprocessor` to use (and give the encoder);
            default the encoder's.

    Inputs: the encoder's three inputs plus `masked_lm_positions`, int32
    [batch, max_predictions_per_seq].

    Outputs: `mlm_logits` [batch, max_predictions_per_seq, vocab] at the masked
    positions and `nsp_logits` [batch, 2] (0 = B follows A, 1 = B is random, as
    in BERT's data).

    Example:
    >>> pretrainer = BertPretrainer(BertEncoder.from_preset("bert_tiny", vocab_size=100))
    >>> ids = keras.ops.ones((1, 8), "int32")
    >>> outputs = pretrainer({"input_word_ids": ids, "input_mask": ids,
    ...     "input_type_ids": 0 * ids, "masked_lm_positions": ids[:, :2]})
    >>> outputs["mlm_logits"].shape
    (1, 2, 100)
    """

    def __init__(self, encoder, preprocessor=None, **kwargs):
        self.encoder = encoder
        self.masked_lm_head = MaskedLMHead(
            encoder.embedding,
            activation=encoder.activation,
            layer_norm_epsilon=encoder.layer_norm_epsilon,
            dtype=encoder.dtype_policy,
            name="masked_lm_head",
        )
        self.next_sentence_head = ClassificationHead(
            2, dtype=encoder.dtype_policy, name="next_sentence_head"
        )
        inputs = {**encoder.input, "masked_lm_positions": _int_input("masked_lm_positions")}
        encoded = encoder({k: inputs[k] for k in encoder.input})
        mlm_logits = self.masked_lm_head(encoded["sequence_output"], inputs["masked_lm_positions"])
        outputs = {
            "mlm_logits": keras.layers.Activation("linear", dtype="float32", name="mlm_logits")(
                mlm_logits
            ),
            "nsp_logits": self.next_sentence_head(encoded["pooled_output"]),
        }
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self._set_preprocessor(preprocessor)

    @classmethod
    def from_preset(cls, name, **encoder_overrides):
        """A randomly initialised pretrainer of the named BERT architecture."""
        return cls(BertEncoder.from_preset(name, **encoder_overrides))


@keras.saving.register_keras_serializable(package="tfplm")
class BertClassifier(BertTaskModel):
    """A sentence (pair) classifier on the pooled output; `num_classes=1` regresses.

    Args:
        encoder: a `BertEncoder`.
        num_classes: number of classes, or 1 for a regression score (STS-B).
        dropout: dropout before the output layer (0.1 in BERT).
        preprocessor: a `BertPreprocessor` to use (and give the encoder);
            default the encoder's.
        label_names: the class names, in logit order (served as `label`);
            default "0", "1", ...

    Inputs: the encoder's three inputs. Output: float32 logits
    [batch, num_classes] (for regression, the score [batch, 1]).
    """

    def __init__(self, encoder, num_classes, dropout=0.1, preprocessor=None, label_names=None, **kwargs):
        if label_names is not None and len(label_names) != num_classes:
            raise ValueError(f"{len(label_names)} label_names for a {num_classes}-class classifier")
        self.encoder = encoder
        self.num_classes = num_classes
        self.dropout = dropout
        self.label_names = None if label_names is None else tuple(str(name) for name in label_names)
        self.head = ClassificationHead(
            num_classes, dropout=dropout, dtype=encoder.dtype_policy, name="classifier"
        )
        inputs = dict(encoder.input)
        outputs = self.head(encoder(inputs)["pooled_output"])
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self._set_preprocessor(preprocessor)

    def _task_config(self):
        return {"num_classes": self.num_classes, "dropout": self.dropout, "label_names": self.label_names}

    @classmethod
    def from_preset(cls, name, num_classes, dropout=0.1, label_names=None, **encoder_overrides):
        """A randomly initialised classifier of the named BERT architecture.

        `encoder_overrides` are `BertEncoder` arguments, e.g. `vocab_size` or
        its `preprocessor` (which the classifier then shares).
        """
        return cls(BertEncoder.from_preset(name, **encoder_overrides), num_classes, dropout, label_names=label_names)


@keras.saving.register_keras_serializable(package="tfplm")
class BertSpanLabeler(BertTaskModel):
    """Extractive question answering (SQuAD): start/end logits of the answer span.

    BERT's SQuAD head (`tfplm.layers.SpanHead`, one dense layer with two
    outputs) on every token of `[CLS] question [SEP] context [SEP]`. What
    inference needs besides the weights is part of the config: how long
    contexts are cut into windows and how spans are chosen (see
    `tfplm.data.squad`), so exports answer raw questions the way the
    training task evaluated them.

    Args:
        encoder: a `BertEncoder`.
        preprocessor: a `BertPreprocessor` to use (and give the encoder);
            default the encoder's. Its `seq_length` is the window length.
        doc_stride: tokens between the starts of a context's windows.
        max_query_length: question tokens kept.
        max_answer_length: longest answer, in tokens.
        n_best_size: start and end candidates kept per window.
        version_2_with_negative: questions may have no answer (SQuAD 2.0):
            the empty answer wins when the null score beats the best span by
            more than `null_score_diff_threshold`.
        null_score_diff_threshold: see `version_2_with_negative`.

    Inputs: the encoder's three inputs. Outputs: `start_logits` and
    `end_logits`, float32 [batch, length]; -1e9 on padding.

    Example:
    >>> labeler = BertSpanLabeler(BertEncoder.from_preset("bert_tiny", vocab_size=100))
    >>> ids = keras.ops.ones((1, 8), "int32")
    >>> outputs = labeler({"input_word_ids": ids, "input_mask": ids, "input_type_ids": 0 * ids})
    >>> tuple(outputs["start_logits"].shape)
    (1, 8)
    """

    def __init__(
        self,
        encoder,
        preprocessor=None,
        doc_stride=128,
        max_query_length=64,
        max_answer_length=30,
        n_best_size=20,
        version_2_with_negative=False,
        null_score_diff_threshold=0.0,
        **kwargs,
    ):
        self.encoder = encoder
        self.doc_stride = doc_stride
        self.max_query_length = max_query_length
        self.max_answer_length = max_answer_length
        self.n_best_size = n_best_size
        self.version_2_with_negative = bool(version_2_with_negative)
        self.null_score_diff_threshold = float(null_score_diff_threshold)
        self.span_labeler = SpanHead(dtype=encoder.dtype_policy, name="span_labeler")
        inputs = dict(encoder.input)
        start, end = self.span_labeler(encoder(inputs)["sequence_output"], padding_mask=inputs["input_mask"])
        outputs = {
            "start_logits": keras.layers.Activation("linear", dtype="float32", name="start_logits")(start),
            "end_logits": keras.layers.Activation("linear", dtype="float32", name="end_logits")(end),
        }
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self._set_preprocessor(preprocessor)

    # The constructor arguments besides encoder and preprocessor: how answers are found.
    SETTINGS = (
        "doc_stride",
        "max_query_length",
        "max_answer_length",
        "n_best_size",
        "version_2_with_negative",
        "null_score_diff_threshold",
    )

    def _task_config(self):
        return {key: getattr(self, key) for key in self.SETTINGS}

    @classmethod
    def from_preset(cls, name, **encoder_overrides):
        """A randomly initialised span labeler of the named BERT architecture."""
        return cls(BertEncoder.from_preset(name, **encoder_overrides))


@keras.saving.register_keras_serializable(package="tfplm")
class TokenClassificationHead(ClassificationHead):
    """`ClassificationHead` on every token: [batch, length, hidden] → float32 logits [batch, length, classes]."""

    def compute_output_shape(self, sequence_shape):
        return (*sequence_shape[:-1], self.num_classes)


@keras.saving.register_keras_serializable(package="tfplm")
class BertTokenClassifier(BertTaskModel):
    """A tag for every token (named entities, parts of speech): dropout and a
    dense layer on the encoder's `sequence_output` (BERT's CoNLL-2003 head).

    Args:
        encoder: a `BertEncoder`.
        num_classes: number of tags.
        dropout: dropout before the output layer (0.1 in BERT).
        preprocessor: a `BertPreprocessor` to use (and give the encoder);
            default the encoder's.
        label_names: the tag names, in logit order (e.g. "O", "B-PER", ...);
            default "0", "1", ...

    Inputs: the encoder's three inputs. Output: float32 logits
    [batch, length, num_classes].

    Example:
    >>> tagger = BertTokenClassifier(BertEncoder.from_preset("bert_tiny", vocab_size=100), 3)
    >>> ids = keras.ops.ones((2, 8), "int32")
    >>> tuple(tagger({"input_word_ids": ids, "input_mask": ids, "input_type_ids": 0 * ids}).shape)
    (2, 8, 3)
    """

    def __init__(self, encoder, num_classes, dropout=0.1, preprocessor=None, label_names=None, **kwargs):
        if label_names is not None and len(label_names) != num_classes:
            raise ValueError(f"{len(label_names)} label_names for {num_classes} tags")
        self.encoder = encoder
        self.num_classes = num_classes
        self.dropout = dropout
        self.label_names = None if label_names is None else tuple(str(name) for name in label_names)
        # Named like BertClassifier's head (classifier/logits/...): Hugging Face's
        # BertForTokenClassification names its head as BertForSequenceClassification does.
        self.head = TokenClassificationHead(num_classes, dropout=dropout, dtype=encoder.dtype_policy, name="classifier")
        inputs = dict(encoder.input)
        outputs = self.head(encoder(inputs)["sequence_output"])
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self._set_preprocessor(preprocessor)

    def _task_config(self):
        return {"num_classes": self.num_classes, "dropout": self.dropout, "label_names": self.label_names}

    @classmethod
    def from_preset(cls, name, num_classes, dropout=0.1, label_names=None, **encoder_overrides):
        """A randomly initialised token classifier of the named BERT architecture."""
        return cls(BertEncoder.from_preset(name, **encoder_overrides), num_classes, dropout, label_names=label_names)


@keras.saving.register_keras_serializable(package="tfplm")
class BertSimilarity(BertTaskModel):
    """Two texts in, the cosine similarity of their sentence embeddings out: one
    `BertEncoder` applied to each text (Sentence-BERT, Reimers & Gurevych 2019),
    pooled as the encoder's `pooling` says. It adds no weights: training it
    (e.g. on STS Benchmark with a cosine loss) trains the encoder's embeddings.

    Args:
        encoder: a `BertEncoder`.
        preprocessor: a single-text `BertPreprocessor` to use (and give the
            encoder); default the encoder's. Each text is packed on its own.

    Inputs: the encoder's three inputs for the first texts, and the same
    three with the suffix `_b` for the second. Output: float32 cosine
    similarities [batch].

    Example:
    >>> model = BertSimilarity(BertEncoder.from_preset("bert_tiny", vocab_size=100, pooling="mean"))
    >>> ids = keras.ops.ones((2, 8), "int32")
    >>> packed = {"input_word_ids": ids, "input_mask": ids, "input_type_ids": 0 * ids}
    >>> tuple(model({**packed, **{f"{k}_b": v for k, v in packed.items()}}).shape)
    (2,)
    """

    def __init__(self, encoder, preprocessor=None, **kwargs):
        self.encoder = encoder
        inputs_a = dict(encoder.input)
        inputs = {**inputs_a, **{f"{name}_b": _int_input(f"{name}_b") for name in inputs_a}}
        embeddings = [encoder.embed({name: inputs[name + suffix] for name in inputs_a}) for suffix in ("", "_b")]
        cosine = keras.layers.Dot(axes=-1, normalize=True, dtype="float32", name="cosine")(embeddings)
        outputs = keras.layers.Reshape((), dtype="float32", name="similarity")(cosine)
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self._set_preprocessor(preprocessor)

    @classmethod
    def from_preset(cls, name, **encoder_overrides):
        """A randomly initialised similarity model of the named BERT architecture."""
        return cls(BertEncoder.from_preset(name, **encoder_overrides))
