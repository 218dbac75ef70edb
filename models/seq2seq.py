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
from tfplm.models.base import PretrainedMixin, deserialize, serialize
from tfplm.models.presets import get_preset


def _int_input(name):
    return keras.Input(shape=(None,), dtype="int32", name=name)


_IDS = tf.TensorSpec([None, None], tf.int32)


@keras.saving.register_keras_serializable(package="tfplm")
class Seq2SeqTransformer(PretrainedMixin, generation.CompiledDecoding, keras.Model):
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
        tokenizer: the tokenizer of the shared vocabulary (a
            `SentencePieceTokenizer` with "<pad>" = 0 and "</s>"), saved with
            the model; `translate` and exports use it. None for ids only.

    A source is its tokens and "</s>"; the decoder starts from "</s>" and
    stops at it (`encode_source`, `translate`).

    Example:
    >>> model = Seq2SeqTransformer.from_preset("transformer_tiny", vocab_size=100)
    >>> model.generate_ids([[5, 6, 2]], max_new_tokens=4, start_token_id=2).shape
    (1, 5)

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
        tokenizer=None,
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
        self.tokenizer = tokenizer

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
        dtype = self.embedding.compute_dtype  # the layers' (see `GPT.empty_cache`)
        empty = tuple((ops.zeros(self_shape, dtype), ops.zeros(self_shape, dtype)) for _ in self.decoder_blocks)
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

    # --- text to text ------------------------------------------------------

    def _check_tokenizer(self):
        if self.tokenizer is None:
            raise ValueError(
                "this Seq2SeqTransformer has no tokenizer: load it with Seq2SeqTransformer.from_pretrained(...) "
                "or build it with tokenizer=..., or call generate_ids() with token ids"
            )
        return self.tokenizer

    def encode_source(self, texts):
        """Source token ids of strings [batch]: each text's tokens, then "</s>" (int32 ragged)."""
        tokenizer = self._check_tokenizer()
        ids = tf.cast(tokenizer.tokenize(texts), tf.int32)
        end = tf.fill([ids.nrows(out_type=tf.int32), 1], tf.constant(tokenizer.end_token_id, tf.int32))
        return tf.concat([ids, end], axis=1)

    def translate_graph(self, texts, num_beams, length_penalty, max_new_tokens):
        """Translations of strings [batch], in TensorFlow ops (`translate` and exports run it).

        Args:
            texts: tf.string [batch].
            num_beams: int32 scalar; 1 decodes greedily, more runs beam search.
            length_penalty: float32 scalar, GNMT's alpha for beam search.
            max_new_tokens: int32 scalar; 0 (or less) allows twice the longest
                source's tokens plus 10.

        Returns:
            {"translation": tf.string [batch], "token_ids": int32 [batch, 1 + max_new_tokens],
            starting with the start token "</s>" and padded with it}.
        """
        end = self.tokenizer.end_token_id
        source = self.encode_source(texts)
        source_ids = source.to_tensor(0)
        source_mask = tf.ones_like(source).to_tensor(0)
        longest = tf.maximum(tf.cast(tf.reduce_max(source.row_lengths()), tf.int32), 0)
        max_new_tokens = tf.where(max_new_tokens > 0, max_new_tokens, 2 * longest + 10)
        batch = source.nrows(out_type=tf.int32)
        total = 1 + max_new_tokens
        token_ids = tf.fill([batch, total], tf.constant(end, tf.int32))
        prompt_mask = tf.range(total)[None, :] < tf.ones([batch, 1], tf.int32)
        cache = self.initial_cache(token_ids, (source_ids, source_mask))

        def decoder(sampler):
            def run():
                return generation.decode(
                    self.next_logits, token_ids, prompt_mask, cache, sampler,
                    stop_token_id=end, pad_token_id=end, jit_compile=bool(self.decode_jit_compile),
                )

            return run

        beam = generation.BeamSampler(num_beams=tf.maximum(num_beams, 1), length_penalty=length_penalty)
        out = tf.cond(num_beams > 1, decoder(beam), decoder(generation.GreedySampler()))
        target = out[:, 1:]
        text = self.tokenizer.detokenize(tf.ragged.boolean_mask(target, tf.not_equal(target, end)))
        return {"translation": text, "token_ids": out}

    def translate(self, texts, num_beams=4, length_penalty=0.6, max_new_tokens=0):
        """Translates text with the model's tokenizer, in one compiled graph.

        Args:
            texts: a string or a list of strings.
            num_beams: beam size; 1 decodes greedily.
            length_penalty: GNMT's alpha (beam search only).
            max_new_tokens: the longest translation in tokens; 0: twice the
                longest source's tokens plus 10.

        Returns:
            the translation(s): a string, or a list like `texts`.

        Example:
        >>> model = Seq2SeqTransformer.from_pretrained("runs/multi30k/best")  # doctest: +SKIP
        >>> model.translate("Ein Mann fährt Fahrrad.")  # doctest: +SKIP
        'A man is riding a bike.'
        """
        single = isinstance(texts, str)
        texts = [texts] if single else list(texts)
        self._check_tokenizer()
        if "_translate_function" not in self.__dict__:
            # Through __dict__: Keras need not track a tf.function.
            self.__dict__["_translate_function"] = tf.function(
                self.translate_graph,
                input_signature=[
                    tf.TensorSpec([None], tf.string),
                    tf.TensorSpec([], tf.int32),
                    tf.TensorSpec([], tf.float32),
                    tf.TensorSpec([], tf.int32),
                ],
            )
        outputs = self.__dict__["_translate_function"](
            tf.constant(texts, tf.string, shape=[len(texts)]), num_beams, length_penalty, max_new_tokens
        )
        decoded = [t.decode("utf-8") for t in outputs["translation"].numpy()]
        return decoded[0] if single else decoded

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
            "tokenizer": serialize(self.tokenizer),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**{**config, "tokenizer": deserialize(config.get("tokenizer"))})
