"""GPT (Radford et al., 2018/2019): a decoder-only causal language model."""

import keras
import tensorflow as tf
from keras import ops

from tfplm import generation
from tfplm.layers import TextEmbedding, TransformerDecoderBlock
from tfplm.models.base import PretrainedMixin, deserialize, serialize
from tfplm.models.presets import get_preset


@keras.saving.register_keras_serializable(package="tfplm")
class GPT(PretrainedMixin, generation.CompiledDecoding, keras.Model):
    """GPT-2 style decoder: pre-LN blocks, a final LayerNorm, tied output embedding.

    Args:
        vocab_size: vocabulary size (50257 for GPT-2's byte-level BPE).
        hidden_size, num_layers, num_heads, intermediate_size: the block sizes.
        max_length: longest sequence (learned position embeddings).
        activation: feed-forward activation ("gelu_approximate" as GPT-2).
        dropout: dropout on embeddings, attention and sublayer outputs.
        layer_norm_epsilon: LayerNorm epsilon.
        tokenizer: the tokenizer of its vocabulary (`generate` and exports use
            it); saved with the model. None for token ids only.

    Inputs: `token_ids` and `padding_mask`, int32 [batch, length].
    Output: next-token logits, float32 [batch, length, vocab_size].

    Example:
    >>> gpt = GPT.from_preset("gpt_nano", vocab_size=100)
    >>> out = gpt.generate_ids([[5, 6, 7]], max_new_tokens=4)
    >>> out.shape
    (1, 7)
    """

    def __init__(
        self,
        vocab_size,
        hidden_size,
        num_layers,
        num_heads,
        intermediate_size,
        max_length=1024,
        activation="gelu_approximate",
        dropout=0.1,
        layer_norm_epsilon=1e-5,
        tokenizer=None,
        **kwargs,
    ):
        dtype = kwargs.pop("dtype", None)
        self.embedding = TextEmbedding(
            vocab_size,
            hidden_size,
            max_length=max_length,
            normalize=False,
            dropout=dropout,
            dtype=dtype,
            name="embedding",
        )
        self.blocks = [
            TransformerDecoderBlock(
                num_heads,
                intermediate_size,
                activation=activation,
                dropout=dropout,
                attention_dropout=dropout,
                layer_norm_epsilon=layer_norm_epsilon,
                norm_first=True,
                dtype=dtype,
                name=f"block_{i}",
            )
            for i in range(num_layers)
        ]
        self.final_norm = keras.layers.LayerNormalization(
            epsilon=layer_norm_epsilon, dtype=dtype, name="final_norm"
        )

        token_ids = keras.Input(shape=(None,), dtype="int32", name="token_ids")
        padding_mask = keras.Input(shape=(None,), dtype="int32", name="padding_mask")
        x = self.embedding(token_ids)
        for block in self.blocks:
            x = block(x, padding_mask=padding_mask)
        logits = self.embedding(self.final_norm(x), reverse=True)
        logits = keras.layers.Activation("linear", dtype="float32", name="logits")(logits)
        super().__init__(
            inputs={"padding_mask": padding_mask, "token_ids": token_ids},  # sorted, see BertEncoder
            outputs=logits,
            dtype=dtype,
            **kwargs,
        )

        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.num_heads = num_heads
        self.intermediate_size = intermediate_size
        self.max_length = max_length
        self.activation = activation
        self.dropout = dropout
        self.layer_norm_epsilon = layer_norm_epsilon
        self.tokenizer = tokenizer

    @classmethod
    def from_preset(cls, name, **overrides):
        """A randomly initialised GPT of the named architecture ("gpt_*" presets)."""
        return cls(**{**get_preset(name, "gpt").config, **overrides})

    def with_dtype(self, dtype):
        """A copy of this GPT whose weights and compute are in `dtype`.

        E.g. `gpt.with_dtype("bfloat16")` for decoding: a step reads every
        weight once per token, so bfloat16 variables halve the bytes read (a
        "mixed_bfloat16" policy keeps float32 variables and casts them every
        step, which reads more, not less). LayerNorm and softmax still compute
        in float32 and logits come out float32. The copy shares no variables
        with this GPT; `decode_jit_compile` and the tokenizer carry over.
        """
        copy = type(self).from_config({**self.get_config(), "dtype": dtype})
        copy.set_weights(self.get_weights())
        copy.decode_jit_compile = self.decode_jit_compile
        return copy

    # --- incremental decoding ---------------------------------------------

    def empty_cache(self, batch_size, length):
        """One (keys, values) pair per layer, zeros [batch, heads, length, head_size].

        Separate tensors per layer, not one stacked [batch, layers, 2, ...]
        tensor: a decoding step then writes one position of each, where a
        stacked cache is sliced apart and restacked (copied whole) every step.
        """
        head_size = self.hidden_size // self.num_heads
        shape = (batch_size, self.num_heads, length, head_size)
        # The layers' dtype: a functional Model's own policy stays float32
        # whatever `dtype` it was built with, and a float32 cache in a
        # bfloat16 model reads twice the bytes (and changes dtype on write).
        dtype = self.embedding.compute_dtype
        return tuple(
            (ops.zeros(shape, dtype), ops.zeros(shape, dtype))
            for _ in range(self.num_layers)
        )

    def next_logits(self, token_ids, cache, index):
        """Logits after the last of `token_ids`, which start at position `index`.

        Writes the new tokens' keys and values into `cache` (from
        `empty_cache`) and attends over positions <= each token's own;
        returns (logits [batch, vocab], cache).
        """
        x = self.embedding(token_ids, start_index=index)
        new_cache = []
        for block, layer_cache in zip(self.blocks, cache):
            x, layer_cache = block(x, self_attention_cache=tuple(layer_cache), cache_update_index=index)
            new_cache.append(tuple(layer_cache))
        logits = self.embedding.logits(self.final_norm(x[:, -1, :]))
        return ops.cast(logits, "float32"), tuple(new_cache)

    def initial_cache(self, token_ids, context):
        """The empty cache for decoding `token_ids` [batch, total_length] (no context)."""
        return self.empty_cache(tf.shape(token_ids)[0], tf.shape(token_ids)[1])

    def generate_ids(
        self, prompts, max_new_tokens, sampler="greedy", stop_token_id=None, **sampler_kwargs
    ):
        """Continues token-id prompts by `max_new_tokens` tokens.

        Args:
            prompts: a list of token-id lists (lengths may differ), or an int
                array [batch, length] of equal-length prompts.
            max_new_tokens: tokens to add to the longest prompt.
            sampler: "greedy", "top_k", "top_p", "beam" or a `Sampler`.
            stop_token_id: a row ends at this token; its remaining positions
                hold `stop_token_id` too.
            **sampler_kwargs: e.g. `k=`, `p=`, `num_beams=`, `temperature=`, `seed=`.

        Returns:
            int32 numpy array [batch, longest_prompt + max_new_tokens]; rows of
            shorter prompts continue right after their prompt.
        """
        sampler = generation.get_sampler(sampler, **sampler_kwargs)
        total = max(map(len, prompts), default=0) + max_new_tokens
        if total > self.max_length:
            raise ValueError(
                f"prompt + max_new_tokens = {total} exceeds max_length={self.max_length}; "
                "shorten the prompt or ask for fewer tokens"
            )
        return self._decode_prompts(prompts, total, sampler, stop_token_id)

    def generate(self, prompts, max_new_tokens, sampler="greedy", **sampler_kwargs):
        """Continues text prompts with the model's tokenizer; returns strings.

        Args:
            prompts: a string or a list of strings.
            max_new_tokens, sampler, **sampler_kwargs: as in `generate_ids`;
                generation stops at the tokenizer's end token.

        Returns:
            the prompt + continuation text, a string or a list like `prompts`.
        """
        if self.tokenizer is None:
            raise ValueError(
                "this GPT has no tokenizer: load it with GPT.from_pretrained(...) or build it "
                "with GPT(..., tokenizer=...), or call generate_ids() with token ids"
            )
        single = isinstance(prompts, str)
        texts = [prompts] if single else list(prompts)
        ids = self.tokenizer.tokenize(tf.constant(texts))
        end = self.tokenizer.end_token_id
        prompts_ids = [row or [end] for row in ids.to_list()]
        out = self.generate_ids(
            prompts_ids, max_new_tokens, sampler, stop_token_id=end, **sampler_kwargs
        )
        rows = [[t for t in row if t != end] for row in out.tolist()]
        texts = self.tokenizer.detokenize(tf.ragged.constant(rows, dtype=tf.int32)).numpy()
        # Byte-level BPE can stop in the middle of a character.
        decoded = [t.decode("utf-8", errors="replace") for t in texts]
        return decoded[0] if single else decoded

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
            "activation": self.activation,
            "dropout": self.dropout,
            "layer_norm_epsilon": self.layer_norm_epsilon,
            "tokenizer": serialize(self.tokenizer),
        }

    @classmethod
    def from_config(cls, config):
        return cls(**{**config, "tokenizer": deserialize(config.get("tokenizer"))})
