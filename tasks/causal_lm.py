"""Causal-LM pretraining (`gpt/pretraining`), and serving a `GPT` as a text generator."""

import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text
import keras

from tfplm import generation, metrics
from tfplm.data import causal_lm
from tfplm.data.pipeline import per_replica_batch_size
from tfplm.models import GPT
from tfplm.models.base import check_seq_length
from tfplm.tasks import base, serving
from tfplm.tasks.pretraining import DataConfig, ModelConfig, PretrainingConfig, PretrainingTask
from tfplm.tokenizers import SentencePieceTokenizer


class GPTPretrainingTask(PretrainingTask):
    """Next-token prediction on packed blocks of text; metric: perplexity."""

    family = "gpt"

    def tokenizer_from_vocab_file(self, path):
        return SentencePieceTokenizer(proto=path)

    def build_model(self):
        if self.checkpoint is not None:
            model = GPT.from_pretrained(self.checkpoint)
        else:
            model_config = self.task_config.model
            vocab_size = model_config.vocab_size or self.tokenizer.vocabulary_size()
            model = GPT.from_preset(model_config.preset, **model_config.overrides(vocab_size), tokenizer=self.tokenizer)
        # Blocks longer than the position table fail on CPUs and read zeros on GPUs.
        check_seq_length(self.task_config.train_data.seq_length, model.max_length)
        return model

    def build_inputs(self, split, input_context=None):
        data = self._data(split)
        if data.input_format == "tfrecord":
            raise ValueError("gpt/pretraining reads raw text: set input_format to 'prose' or 'bert'")
        return causal_lm.causal_lm_dataset(
            data.input_path,
            self.tokenizer,
            data.seq_length,
            per_replica_batch_size(self.global_batch_size(split), input_context),
            split == "train",
            input_format=data.input_format,
            input_context=input_context,
            shuffle_buffer_size=data.shuffle_buffer_size,
            seed=self.config.runtime.seed,
        )

    def build_losses(self):
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True, name="lm_loss")

    def build_metrics(self):
        return [metrics.Perplexity(name="perplexity")]


# The `generate` signature's inputs besides `prompt`, with the values
# `serving_default` (prompt only) uses.
GENERATE_DEFAULTS = {
    "max_new_tokens": 32,
    "sampler": "greedy",
    "temperature": 1.0,
    "top_k": 10,
    "top_p": 0.9,
    "num_beams": 4,
    "seed": 0,
}
SAMPLERS = ("greedy", "top_k", "top_p", "beam")


class GeneratorHead(serving.ServingHead):
    """Serves a `GPT` with its tokenizer: the cached decoding loop in-graph.

    * `serving_default`: `prompt` strings [batch] alone (TF Serving's REST
      row format: `{"instances": ["Once upon a time"]}`), decoded greedily
      for `GENERATE_DEFAULTS["max_new_tokens"]` tokens;
    * `generate`: `prompt` plus every decoding input of `GENERATE_DEFAULTS`:
      `sampler` ("greedy", "top_k", "top_p" or "beam"), `max_new_tokens`,
      `temperature`, `top_k`, `top_p`, `num_beams`, `seed`.

    Both return `text` (prompt and continuation) and `token_ids`. Prompts
    longer than `max_length - max_new_tokens` tokens keep their last tokens;
    an empty prompt starts from the end-of-text token (as `GPT.generate`).
    """

    inputs = ("prompt",)
    main_output = "token_ids"

    def __init__(self, model):
        super().__init__(model)
        self.tokenizer = model.tokenizer

    def _prompt_ids(self, prompt, max_new_tokens):
        """Token ids [batch, None] of each prompt, as `generate` decodes them."""
        end = self.tokenizer.end_token_id
        ids = tf.cast(self.tokenizer.tokenize(prompt), tf.int32)
        empty = ids.row_lengths() == 0
        start_token = tf.RaggedTensor.from_row_lengths(
            tf.fill([tf.reduce_sum(tf.cast(empty, tf.int32))], end), tf.cast(empty, tf.int64)
        )
        ids = tf.concat([ids, start_token], axis=1)
        return _last(ids, tf.cast(self.model.max_length - max_new_tokens, tf.int64))

    def generate(self, prompt, max_new_tokens, sampler, temperature, top_k, top_p, num_beams, seed):
        end = self.tokenizer.end_token_id
        max_new_tokens = tf.clip_by_value(max_new_tokens, 1, self.model.max_length - 1)
        ids = self._prompt_ids(prompt, max_new_tokens)
        total = tf.cast(tf.reduce_max(ids.row_lengths()), tf.int32) + max_new_tokens
        batch = ids.nrows(out_type=tf.int32)
        token_ids = ids.to_tensor(default_value=end, shape=[batch, total])
        prompt_mask = tf.ones_like(ids, tf.bool).to_tensor(False, shape=[batch, total])
        temperature = tf.maximum(temperature, 1e-6)
        vocab = self.model.vocab_size
        samplers = [
            generation.GreedySampler(),
            generation.TopKSampler(k=tf.clip_by_value(top_k, 1, vocab), temperature=temperature),
            generation.TopPSampler(p=tf.clip_by_value(top_p, 1e-6, 1.0), temperature=temperature),
            generation.BeamSampler(num_beams=tf.clip_by_value(num_beams, 1, 64), temperature=temperature),
        ]
        known = tf.reduce_any(tf.equal(sampler, SAMPLERS))
        # One string: Assert prints only the first 3 elements of a tensor.
        check = tf.debugging.Assert(known, [f"sampler must be one of {', '.join(SAMPLERS)}; got", sampler])
        index = tf.argmax(tf.cast(tf.equal(sampler, SAMPLERS), tf.int32), output_type=tf.int32)

        def branch(s):
            def decode():
                return generation.decode(
                    self.model.next_logits, token_ids, prompt_mask, self.model.empty_cache(batch, total), s,
                    stop_token_id=end, pad_token_id=end, seed=seed,
                    jit_compile=bool(self.model.decode_jit_compile),
                )

            return decode

        with tf.control_dependencies([check]):
            out = tf.switch_case(index, [branch(s) for s in samplers])
        kept = tf.ragged.boolean_mask(out, tf.not_equal(out, end))
        text = self.tokenizer.detokenize(kept)
        # Byte-level BPE may stop inside a character: repair like errors="replace".
        return {"text": tf_text.coerce_to_structurally_valid_utf8(text), "token_ids": out}

    def predict(self, prompt):
        defaults = {k: tf.constant(v) for k, v in GENERATE_DEFAULTS.items()}
        return self.generate(prompt, **defaults)

    @staticmethod
    def _decoding_specs():
        """The scalar specs of `generate`'s decoding inputs (int32, float32, string)."""
        return {k: tf.TensorSpec([], tf.constant(v).dtype, name=k) for k, v in GENERATE_DEFAULTS.items()}

    def signatures(self):
        specs = self._decoding_specs()
        concrete = tf.function(self.generate).get_concrete_function(serving.string_spec("prompt"), **specs)
        return {**super().signatures(), "generate": concrete}

    def warmup_inputs(self, examples):
        inputs = super().warmup_inputs(examples)
        # Exactly the signature's dtypes (numpy would make int64): TF Serving rejects others.
        decoding = {k: np.asarray(GENERATE_DEFAULTS[k], spec.dtype.as_numpy_dtype) for k, spec in self._decoding_specs().items()}
        inputs["generate"] = {"prompt": inputs["serving_default"]["prompt"], **decoding}
        return inputs

    def reference(self, examples):
        """Greedy continuations from `GPT.generate_ids`, the Keras path."""
        max_new_tokens = GENERATE_DEFAULTS["max_new_tokens"]
        prompts = self._prompt_ids(tf.constant(examples["prompt"], tf.string), max_new_tokens).to_list()
        end = self.tokenizer.end_token_id
        return {"token_ids": self.model.generate_ids(prompts, max_new_tokens, stop_token_id=end)}

    def compare(self, reference, outputs):
        """Agreement: the share of rows whose tokens equal the Keras path's exactly."""
        expected, actual = np.asarray(reference["token_ids"]), np.asarray(outputs["token_ids"])
        same = [np.array_equal(a, b) for a, b in zip(expected, actual)] if expected.shape == actual.shape else [False]
        return {"max_abs_diff": None, "agreement": float(np.mean(same))}


def _last(ids, keep):
    """The last `keep` values of each row of a ragged [batch, None] tensor."""
    lengths = ids.row_lengths()
    start = tf.maximum(lengths - keep, 0)
    positions = tf.ragged.range(start, lengths)
    return tf.gather(ids, positions, batch_dims=1)


def gpt_pretraining_experiment():
    config = PretrainingConfig(
        model=ModelConfig(preset="gpt_nano"),
        train_data=DataConfig(input_format="prose", seq_length=128),
        validation_data=DataConfig(input_format="prose", seq_length=128),
    )
    return base.ExperimentConfig(task=config)


TASK_TYPE = base.TaskType(
    name="causal_lm",
    task=GPTPretrainingTask,
    serving=GeneratorHead,
    models=(GPT,),
    experiments={"gpt/pretraining": gpt_pretraining_experiment},
)
