"""The encoder-decoder Transformer of Vaswani et al. (2017), for translation-style tasks."""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tfplm import generation
from tfplm.layers import (
    TextEmbedding,
    TransformerDecoderBlock,
    TransformerEncoderBlock,
    padding_attention_mask,
)
from tfplm.models.presets import get_preset


def _int_input(name):
    return keras.Input(shape=(None,), dtype="int32", name=name)


_IDS = tf.TensorSpec([None, None], tf.int32)


@keras.saving.register_keras_serializable(package="tfplm")
class Seq2SeqTransformer(generation.CompiledDecoding, keras.Model):
    """Post-LN encoder-decoder Transformer with a shared, tied vocabulary.

    Source and target share one token embedding (scaled by sqrt(hidden), with
    sinusoidal positions), which is also the output projection, as in the paper.

    Args:
        vocab_size: shared source/target vocabulary size.
        hidden_size, num_heads, intermediate_size: block sizes.
        num_encoder_layers, num_decoder_layers: stack depths.
        activation: feed-forward activation ("relu" in the paper).
        dropout: dropout on embeddings, attention and sublayer outputs.
        layer_norm_epsilon: LayerNorm epsilon.

    Inputs: int32 [batch, length] `encoder_token_ids`, `encoder_padding_mask`,
    `decoder_token_ids`, `decoder_padding_mask`.
    Output: float32 logits [batch, decoder_length, vocab_size].
    """

    decode_context = (_IDS, _IDS)  # source token ids and padding mask

    def __init__(
        self,
        vocab_size,
        hidden_size,
        num_encoder_layers,
        num_decoder_layers,
        num_heads,
        intermediate_size,
        activation="relu",
        dropout=0.1,
        layer_norm_epsilon=1e-6,
        **kwargs,
    ):
        dtype = kwargs.pop("dtype", None)
        self.embedding = TextEmbedding(
            vocab_size,
            hidden_size,
            position_embedding="sinusoidal",
            scale=True,
            normalize=False,
            dropout=dropout,
            dtype=dtype,
            name="embedding",
        )
        block_args = dict(
            num_heads=num_heads,
            intermediate_size=intermediate_size,
            activation=activation,
            dropout=dropout,
            attention_dropout=dropout,
            layer_norm_epsilon=layer_norm_epsilon,
            dtype=dtype,
        )
        self.encoder_blocks = [
            TransformerEncoderBlock(**block_args, name=f"encoder_block_{i}")
            for i in range(num_encoder_layers)
        ]
        self.decoder_blocks = [
            TransformerDecoderBlock(**block_args, cross_attention=True, name=f"decoder_block_{i}")
            for i in range(num_decoder_layers)
        ]

        inputs = {
            name: _int_input(name)
            for name in (  # sorted, see BertEncoder
                "decoder_padding_mask",
                "decoder_token_ids",
                "encoder_padding_mask",
                "encoder_token_ids",
            )
        }
        encoder_output = self.encode(inputs["encoder_token_ids"], inputs["encoder_padding_mask"])
        x = self.embedding(inputs["decoder_token_ids"])
        for block in self.decoder_blocks:
            x = block(
                x,
                padding_mask=inputs["decoder_padding_mask"],
                encoder_output=encoder_output,
                encoder_padding_mask=inputs["encoder_padding_mask"],
            )
        logits = keras.layers.Activation("linear", dtype="float32", name="logits")(
            self.embedding(x, reverse=True)
        )
        super().__init__(inputs=inputs, outputs=logits, dtype=dtype, **kwargs)

        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_encoder_layers = num_encoder_layers
        self.num_decoder_layers = num_decoder_layers
        self.num_heads = num_heads
        self.intermediate_size = intermediate_size
        self.activation = activation
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon

    @classmethod
    def from_preset(cls, name, **overrides):
        """A randomly initialised model of the named architecture ("transformer_base")."""
        return cls(**{**get_preset(name, "seq2seq").config, **overrides})

    def encode(self, token_ids, padding_mask, training=None):
        """The encoder stack's output [batch, length, hidden]."""
        x = self.embedding(token_ids, training=training)
        mask = padding_attention_mask(padding_mask)
        for block in self.encoder_blocks:
            x = block(x, attention_mask=mask, training=training)
        return x

    # --- incremental decoding ---------------------------------------------

    def generate_ids(
        self,
        encoder_token_ids,
        max_new_tokens,
        start_token_id,
        stop_token_id=None,
        sampler="greedy",
        **sampler_kwargs,
    ):
        """Decodes target token ids for each source sequence.

        Args:
            encoder_token_ids: list of source token-id lists (lengths may differ).
            max_new_tokens: target tokens to generate after the start token.
            start_token_id: the decoder's first token.
            stop_token_id: a row ends at this token (rest filled with it).
            sampler, **sampler_kwargs: as in `GPT.generate_ids`.

        Returns:
            int32 numpy array [batch, 1 + max_new_tokens], starting with the start token.
        """
        sampler = generation.get_sampler(sampler, **sampler_kwargs)
        source, source_mask = generation.pad_right(encoder_token_ids)
        starts = [[start_token_id]] * len(source)
        context = (source, source_mask.astype(np.int32))
        return self._decode_prompts(starts, 1 + max_new_tokens, sampler, stop_token_id, context)

    def initial_cache(self, token_ids, context):
        """The decoding cache for target `token_ids` [batch, total_length] given
        `context` = (source ids, source mask): empty self-attention keys/values,
        and the encoder's keys/values, computed once rather than per target token.

        Per layer a (keys, values) pair of [batch, heads, length, head_size]
        tensors, as `GPT.empty_cache` (which says why)."""
        source, source_mask = context
        encoder_output = self.encode(source, source_mask)
        head_size = self.hidden_size // self.num_heads
        shape = tf.shape(token_ids)
        cross = tuple(
            block.cross_attention_layer.compute_cross_attention_cache(encoder_output, heads_first=True)
            for block in self.decoder_blocks
        )
        self_shape = (shape[0], self.num_heads, shape[1], head_size)
        empty = tuple(
            (ops.zeros(self_shape, self.compute_dtype), ops.zeros(self_shape, self.compute_dtype))
            for _ in self.decoder_blocks
        )
        return {"cross": cross, "self": empty, "source_mask": source_mask}

    def next_logits(self, token_ids, cache, index):
        """Logits after the last target token of `token_ids` (see `GPT.next_logits`)."""
        x = self.embedding(token_ids, start_index=index)
        self_caches = []
        for block, self_cache, cross_cache in zip(self.decoder_blocks, cache["self"], cache["cross"]):
            x, self_cache = block(
                x,
                encoder_padding_mask=cache["source_mask"],
                self_attention_cache=tuple(self_cache),
                cache_update_index=index,
                cross_attention_cache=tuple(cross_cache),
            )
            self_caches.append(tuple(self_cache))
        logits = ops.cast(self.embedding.logits(x[:, -1, :]), "float32")
        return logits, {**cache, "self": tuple(self_caches)}

    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "num_encoder_layers": self.num_encoder_layers,
            "num_decoder_layers": self.num_decoder_layers,
            "num_heads": self.num_heads,
            "intermediate_size": self.intermediate_size,
            "activation": self.activation,
            "dropout": self.dropout,
            "layer_norm_epsilon": self.layer_norm_epsilon,
        }

    @classmethod
    def from_config(cls, config):
        return cls(**config)
