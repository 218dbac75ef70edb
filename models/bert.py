"""BERT (Devlin et al., 2019): the encoder, its pretraining heads and a classifier.

Inputs and outputs use the TF Hub BERT names, so code written for TF Hub BERT
encoders works with these models unchanged.
"""

import keras

from tfplm.layers import (
    ClassificationHead,
    MaskedLMHead,
    Pooler,
    TextEmbedding,
    TransformerEncoderBlock,
    padding_attention_mask,
)
from tfplm.models.base import TextModel, deserialize, serialize
from tfplm.models.presets import get_preset


def _int_input(name):
    return keras.Input(shape=(None,), dtype="int32", name=name)


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
        **kwargs,
    ):
        dtype = kwargs.pop("dtype", None)
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
