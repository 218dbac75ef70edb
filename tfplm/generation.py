"""Autoregressive decoding with a key/value cache, compiled into one graph.

A model exposes `next_logits(token_ids, cache, index) -> (logits, cache)`, the
logits of the last of `token_ids` (which start at absolute position `index`)
and the updated cache. `decode` runs prefill + the whole token loop inside a
`tf.while_loop`, so `tf.function(decode)` traces once and never returns to
Python per token.

Prompts are right-padded to the full output length; a row keeps its prompt
tokens until its prompt ends, so rows with prompts of different lengths share
one cache and one set of positions.

Models mix in `CompiledDecoding`, which compiles `decode` once per sampler kind
and stop token and runs it on token-id prompts (GPT, the seq2seq Transformer).
"""

import abc
import random

import numpy as np
import tensorflow as tf
from keras import ops

_NEG_INF = -1e9


class Sampler(abc.ABC):
    """Chooses the next token from logits [batch, vocab].

    Args:
        temperature: logits are divided by it before sampling.
        seed: base seed of the stateless random draws; None draws a fresh one
            per `generate` call.
    """

    def __init__(self, temperature=1.0, seed=None):
        self.temperature = temperature
        self.seed = seed

    @abc.abstractmethod
    def sample(self, logits, seed):
        """Token ids [batch] from float32 logits [batch, vocab]."""

    def __call__(self, logits, seed):
        """Next token ids [batch]; `seed` is a stateless-random seed, int32 [2]."""
        logits = ops.cast(logits, "float32") / self.temperature
        return ops.cast(self.sample(logits, seed), "int32")

    def get_config(self):
        return {"temperature": self.temperature, "seed": self.seed}

    def cache_key(self):
        """What a compiled decoding graph depends on (the seed is a graph input)."""
        config = {k: v for k, v in self.get_config().items() if k != "seed"}
        return (type(self).__name__, tuple(sorted(config.items())))


class GreedySampler(Sampler):
    """The most likely token."""

    def sample(self, logits, seed):
        return ops.argmax(logits, axis=-1)


def _categorical(logits, seed):
    return tf.random.stateless_categorical(logits, 1, seed=seed)[:, 0]


class TopKSampler(Sampler):
    """Samples among the `k` most likely tokens."""

    def __init__(self, k=10, temperature=1.0, seed=None):
        super().__init__(temperature, seed)
        self.k = k

    def sample(self, logits, seed):
        top_logits, top_ids = tf.math.top_k(logits, k=self.k)
        choice = _categorical(top_logits, seed)
        return tf.gather(top_ids, choice, batch_dims=1)

    def get_config(self):
        return {**super().get_config(), "k": self.k}


class TopPSampler(Sampler):
    """Nucleus sampling: the smallest set of tokens whose probability reaches `p`."""

    def __init__(self, p=0.9, temperature=1.0, seed=None):
        super().__init__(temperature, seed)
        self.p = p

    def sample(self, logits, seed):
        sorted_logits, sorted_ids = tf.math.top_k(logits, k=tf.shape(logits)[-1])
        probabilities = tf.nn.softmax(sorted_logits)
        # Keep a token if the mass before it is below p (the first always stays).
        mass_before = tf.cumsum(probabilities, axis=-1, exclusive=True)
        sorted_logits = tf.where(mass_before < self.p, sorted_logits, _NEG_INF)
        choice = _categorical(sorted_logits, seed)
        return tf.gather(sorted_ids, choice, batch_dims=1)

    def get_config(self):
        return {**super().get_config(), "p": self.p}


class BeamSampler(Sampler):
    """Beam search over `num_beams` hypotheses; returns the best one per row.

    Hypotheses are ranked by their summed log-probability divided by GNMT's
    length penalty (Wu et al., 2016, eq. 14) `((5 + length) / 6) ** length_penalty`,
    `length` counting the tokens generated (the stop token included). The
    default 0 ranks by the sum alone, which favours short outputs; translation
    uses 0.6 (GNMT's and tensor2tensor's value).

    Args:
        num_beams: hypotheses kept per row.
        temperature: logits are divided by it.
        seed: unused (beam search draws nothing); kept for a common signature.
        length_penalty: GNMT's alpha.
    """

    def __init__(self, num_beams=4, temperature=1.0, seed=None, length_penalty=0.0):
        super().__init__(temperature, seed)
        self.num_beams = num_beams
        self.length_penalty = length_penalty

    def sample(self, logits, seed):
        raise TypeError("beam search scores whole hypotheses; decode() runs it")

    def get_config(self):
        return {**super().get_config(), "num_beams": self.num_beams, "length_penalty": self.length_penalty}


def length_penalty(lengths, alpha):
    """GNMT's length penalty `((5 + lengths) / 6) ** alpha` (float32).

    Example:
    >>> float(length_penalty(7.0, 0.5))
    1.4142135381698608
    """
    lengths = tf.cast(lengths, tf.float32)
    return tf.pow((5.0 + lengths) / 6.0, tf.cast(alpha, tf.float32))


SAMPLERS = {"greedy": GreedySampler, "top_k": TopKSampler, "top_p": TopPSampler, "beam": BeamSampler}


def get_sampler(sampler, **kwargs):
    """A `Sampler` from a name ("greedy", "top_k", "top_p", "beam") or an instance."""
    if isinstance(sampler, Sampler):
        return sampler
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; expected one of {sorted(SAMPLERS)}")
    return SAMPLERS[sampler](**kwargs)


def _loop(cond, body, loop_vars, jit_compile):
    """`tf.while_loop`, optionally compiled by XLA as one cluster.

    Only the token loop is compiled, not the prefill before it: the prefill's
    length (the shortest prompt) is a value, not a shape, which XLA cannot
    compile, while every shape in the loop is fixed by the inputs'. XLA keeps
    the cache in place (a non-XLA step copies each cache tensor it writes)
    but its CPU matrix products are slower than oneDNN's; see
    `CompiledDecoding.decode_jit_compile`.
    """

    def run(*loop_vars):
        return tf.while_loop(cond, body, loop_vars)

    if jit_compile:
        run = tf.function(run, jit_compile=True, autograph=False)
    return run(*loop_vars)


def _column(token_ids, index):
    """`token_ids[:, index : index + 1]`, with a static length of 1.

    Under XLA a slice between two computed bounds has a padded, dynamic
    length, and `x[:, -1]` of what the model computes from it then reads the
    padding; one indexed column has a length XLA knows.
    """
    return token_ids[:, index][:, None]


def decode(
    next_logits,
    token_ids,
    prompt_mask,
    cache,
    sampler,
    stop_token_id=None,
    pad_token_id=0,
    seed=0,
    jit_compile=False,
):
    """Fills the non-prompt positions of `token_ids` one token at a time.

    Args:
        next_logits: `(token_ids, cache, index) -> (logits [batch, vocab], cache)`.
        token_ids: int32 [batch, total_length], prompts right-padded.
        prompt_mask: bool [batch, total_length], True on prompt tokens; every
            row needs at least one prompt token.
        cache: the model's empty cache with batch `batch` (beam search tiles it).
        sampler: a `Sampler`.
        stop_token_id: optional; a row stops after generating it and the rest
            of the row becomes `pad_token_id`.
        seed: int32 scalar; with the step number it seeds stateless sampling.
        jit_compile: compile the token loop with XLA.

    Returns:
        int32 [batch, total_length].
    """
    if isinstance(sampler, BeamSampler):
        return _beam_search(
            next_logits,
            token_ids,
            prompt_mask,
            cache,
            sampler,
            stop_token_id,
            pad_token_id,
            jit_compile,
        )
    total_length = tf.shape(token_ids)[1]
    # Positions a stopped row never reaches must hold padding, not leftovers.
    token_ids = tf.where(prompt_mask, token_ids, pad_token_id)
    start = tf.reduce_min(tf.reduce_sum(tf.cast(prompt_mask, tf.int32), axis=1))
    logits, cache = next_logits(token_ids[:, :start], cache, 0)
    done = tf.zeros(tf.shape(token_ids)[:1], tf.bool)

    def write(token_ids, done, logits, index):
        """Puts the sampled token at `index` unless the prompt already has one."""
        in_prompt = prompt_mask[:, index]
        sampled = tf.where(done, pad_token_id, sampler(logits, tf.stack([seed, index])))
        column = tf.where(in_prompt, token_ids[:, index], sampled)
        if stop_token_id is not None:
            done = done | (~in_prompt & tf.equal(column, stop_token_id))
        token_ids = tf.tensor_scatter_nd_update(
            tf.transpose(token_ids), [[index]], column[None, :]
        )
        return tf.transpose(token_ids), done

    token_ids, done = write(token_ids, done, logits, start)

    def cond(index, token_ids, cache, done):
        return (index < total_length - 1) & ~tf.reduce_all(done)

    def body(index, token_ids, cache, done):
        logits, cache = next_logits(_column(token_ids, index), cache, index)
        token_ids, done = write(token_ids, done, logits, index + 1)
        return index + 1, token_ids, cache, done

    _, token_ids, _, _ = _loop(cond, body, (start, token_ids, cache, done), jit_compile)
    return token_ids


def _beam_search(
    next_logits, token_ids, prompt_mask, cache, sampler, stop_token_id, pad_token_id, jit_compile
):
    """Beam search with forced prompt tokens; beams live in a [batch * beams] batch."""
    beams = sampler.num_beams
    batch = tf.shape(token_ids)[0]
    total_length = tf.shape(token_ids)[1]

    def tile(x):  # [batch, ...] -> [batch * beams, ...], beams of a row adjacent
        return tf.repeat(x, beams, axis=0)

    token_ids = tf.where(prompt_mask, token_ids, pad_token_id)
    token_ids, prompt_mask = tile(token_ids), tile(prompt_mask)
    cache = tf.nest.map_structure(tile, cache)
    # Only the first beam of each row is alive at first: the others start at -inf
    # so the first expansion picks `beams` different tokens from beam 0.
    scores = tf.tile(tf.concat([[0.0], tf.fill([beams - 1], _NEG_INF)], 0), [batch])
    finished = tf.zeros([batch * beams], tf.bool)
    lengths = tf.zeros([batch * beams], tf.float32)  # tokens generated, for the length penalty
    alpha = sampler.length_penalty
    start = tf.reduce_min(tf.reduce_sum(tf.cast(prompt_mask, tf.int32), axis=1))
    logits, cache = next_logits(token_ids[:, :start], cache, 0)

    def step(index, token_ids, cache, scores, lengths, finished, logits):
        log_probs = tf.nn.log_softmax(ops.cast(logits, "float32") / sampler.temperature)
        vocab = tf.shape(log_probs)[-1]
        in_prompt = prompt_mask[:, index]
        forced = tf.where(in_prompt, token_ids[:, index], pad_token_id)
        # A prompt position or a finished beam may only continue with one token, at no cost.
        one_token = tf.where(tf.one_hot(forced, vocab) > 0, 0.0, _NEG_INF)
        frozen = in_prompt | finished
        log_probs = tf.where(frozen[:, None], one_token, log_probs)
        lengths = lengths + tf.cast(~frozen, tf.float32)
        candidates = tf.reshape(scores[:, None] + log_probs, [batch, beams * vocab])
        # Alive candidates of a row share one length, so the penalty only
        # changes how they rank against finished hypotheses (alpha 0: not at all).
        penalty = tf.reshape(tf.repeat(length_penalty(lengths, alpha), vocab), [batch, beams * vocab])
        _, top_index = tf.math.top_k(candidates / penalty, k=beams)
        top_scores = tf.gather(candidates, top_index, batch_dims=1)
        source_beam = top_index // vocab + tf.range(batch)[:, None] * beams
        source_beam = tf.reshape(source_beam, [-1])
        new_tokens = tf.reshape(top_index % vocab, [-1])
        token_ids = tf.gather(token_ids, source_beam)
        token_ids = tf.transpose(
            tf.tensor_scatter_nd_update(tf.transpose(token_ids), [[index]], new_tokens[None, :])
        )
        finished = tf.gather(finished, source_beam)
        lengths = tf.gather(lengths, source_beam)
        if stop_token_id is not None:
            finished = finished | (~in_prompt & tf.equal(new_tokens, stop_token_id))
        cache = tf.nest.map_structure(lambda c: tf.gather(c, source_beam), cache)
        return token_ids, cache, tf.reshape(top_scores, [-1]), lengths, finished

    token_ids, cache, scores, lengths, finished = step(
        start, token_ids, cache, scores, lengths, finished, logits
    )

    def cond(index, token_ids, cache, scores, lengths, finished):
        return (index < total_length - 1) & ~tf.reduce_all(finished)

    def body(index, token_ids, cache, scores, lengths, finished):
        logits, cache = next_logits(_column(token_ids, index), cache, index)
        token_ids, cache, scores, lengths, finished = step(
            index + 1, token_ids, cache, scores, lengths, finished, logits
        )
        return index + 1, token_ids, cache, scores, lengths, finished

    _, token_ids, _, scores, lengths, _ = _loop(
        cond, body, (start, token_ids, cache, scores, lengths, finished), jit_compile
    )
    ranked = tf.reshape(scores / length_penalty(lengths, alpha), [batch, beams])
    best = tf.argmax(ranked, axis=1, output_type=tf.int32)
    return tf.gather(tf.reshape(token_ids, [batch, beams, -1]), best, batch_dims=1)


def pad_right(rows, length=None):
    """Right-pads token-id lists into one batch.

    Args:
        rows: token-id lists (or arrays) of any lengths.
        length: the padded length; default the longest row's.

    Returns:
        (token_ids int32 [batch, length] with zeros after each row,
        mask bool [batch, length], True on each row's tokens).

    Example:
    >>> ids, mask = pad_right([[5, 6, 7], [8]])
    >>> ids.tolist(), mask.sum(axis=1).tolist()
    ([[5, 6, 7], [8, 0, 0]], [3, 1])
    """
    rows = [list(map(int, row)) for row in rows]
    length = max(map(len, rows), default=0) if length is None else length
    token_ids = np.zeros((len(rows), length), np.int32)
    mask = np.zeros((len(rows), length), bool)
    for index, row in enumerate(rows):
        token_ids[index, : len(row)] = row
        mask[index, : len(row)] = True
    return token_ids, mask


class CompiledDecoding:
    """Mixin: decoding compiled once per sampler kind and stop token, then cached.

    The model defines `next_logits(token_ids, cache, index) -> (logits, cache)`
    (see `decode`) and `initial_cache(token_ids, context)`: the empty cache for
    right-padded `token_ids` [batch, total_length]. `context` is a tuple of
    further inputs that decoding needs, whose specs are the class attribute
    `decode_context` (a seq2seq model's source ids and mask; none for GPT).
    Batch size and lengths are graph inputs, so repeated calls never retrace.

    `decode_jit_compile` (default False) compiles the token loop with XLA
    (see `_loop`); set it on an instance. Off by default because it has not
    been seen to win: on a loaded 2-core AVX-512 CPU (TF 2.21, gpt2_small,
    greedy, 32 + 128 tokens, `tools/benchmark_generation.py
    --jit_compile=false,true`) it was within noise at batch 1 (19.1 against
    17.7 tokens/s) and slower at batch 8 (88 against 124 tokens/s), and XLA
    compiles the loop again for every new batch size and output length.
    No GPU has been measured.
    """

    decode_context = ()
    decode_jit_compile = False

    def _decode_function(self, sampler, stop_token_id):
        """The compiled `(token_ids, prompt_mask, seed, context) -> token_ids` graph."""
        if not hasattr(self, "_decode_functions"):
            self._decode_functions = {}
        jit_compile = bool(self.decode_jit_compile)
        key = (sampler.cache_key(), stop_token_id, jit_compile)
        if key not in self._decode_functions:
            pad_token_id = 0 if stop_token_id is None else stop_token_id

            @tf.function(
                input_signature=[
                    tf.TensorSpec([None, None], tf.int32),
                    tf.TensorSpec([None, None], tf.bool),
                    tf.TensorSpec([], tf.int32),
                    tuple(self.decode_context),
                ]
            )
            def run(token_ids, prompt_mask, seed, context):
                return decode(
                    self.next_logits,
                    token_ids,
                    prompt_mask,
                    self.initial_cache(token_ids, context),
                    sampler,
                    stop_token_id=stop_token_id,
                    pad_token_id=pad_token_id,
                    seed=seed,
                    jit_compile=jit_compile,
                )

            self._decode_functions[key] = run
        return self._decode_functions[key]

    def _decode_prompts(self, prompts, total_length, sampler, stop_token_id=None, context=()):
        """Continues token-id `prompts` to `total_length` tokens.

        Args:
            prompts: token-id lists of at least one token each.
            total_length: the length of every output row.
            sampler: a `Sampler`; its seed, or a fresh one, seeds the draws.
            stop_token_id: a row ends at this token (the rest is filled with it).
            context: arrays matching `decode_context`.

        Returns:
            int32 numpy array [batch, total_length]; each row continues right
            after its own prompt.
        """
        token_ids, prompt_mask = pad_right(prompts, total_length)
        if not len(token_ids) or prompt_mask.sum(axis=1).min() == 0:
            raise ValueError("every prompt needs at least one token (e.g. the end token)")
        seed = sampler.seed if sampler.seed is not None else random.randrange(2**31 - 1)
        run = self._decode_function(sampler, stop_token_id)
        return run(token_ids, prompt_mask, seed, tuple(context)).numpy()
