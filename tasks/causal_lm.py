"""Causal LMs: pretraining (`gpt/pretraining`), fine-tuning a pretrained GPT on
your own text (`gpt/finetune`), and serving a `GPT` as a text generator."""

import dataclasses
import functools
from typing import Annotated

import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text
import keras
from absl import logging

from tfplm import generation, metrics
from tfplm.config import Range
from tfplm.data import causal_lm
from tfplm.data.pipeline import per_replica_batch_size
from tfplm.models import GPT
from tfplm.models import pretrained
from tfplm.models.base import check_seq_length
from tfplm.tasks import base, serving
from tfplm.tasks.pretraining import DataConfig, ModelConfig, PretrainingConfig, PretrainingTask
from tfplm.tokenizers import SentencePieceTokenizer
from tfplm.training.optimization import OptimizerConfig


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


@dataclasses.dataclass
class FinetuneConfig:
    """Attributes:
    init_checkpoint: the pretrained GPT to start from: a tfplm folder, a
        Hugging Face GPT-2 folder or a keras-nlp GPT-2 preset; its own
        tokenizer reads the text.
    train_file: the text to fine-tune on (globs, comma-separated).
    validation_file: held-out text, for perplexity every loop.
    input_format: "prose" (paragraphs separated by blank lines, e.g. books,
        plays) or "bert" (a sentence per line, blank lines between documents).
    seq_length: tokens per training block (at most the model's max_length).
    global_batch_size: blocks per step, over all replicas.
    shuffle_buffer_size: blocks shuffled together.
    dropout: the model's dropout while fine-tuning.
    sample_prompts: prompts continued after every loop to show progress,
        separated by "|" ("" starts from the end-of-text token).
    sample_tokens: tokens generated per sample.
    sample_top_k: samples draw among this many most likely tokens (seeded: the
        same checkpoint prints the same samples).
    """

    init_checkpoint: str = ""
    train_file: str = ""
    validation_file: str = ""
    input_format: str = "prose"
    seq_length: Annotated[int, Range(min=2)] = 128
    global_batch_size: Annotated[int, Range(min=1)] = 16
    shuffle_buffer_size: Annotated[int, Range(min=1)] = 10_000
    dropout: Annotated[float, Range(min=0, max=1)] = 0.1
    sample_prompts: str = ""
    sample_tokens: Annotated[int, Range(min=1)] = 48
    sample_top_k: Annotated[int, Range(min=1)] = 40


class GenerateSamples(keras.callbacks.Callback):
    """Logs (and prints) the model's continuations of `prompts` after every loop."""

    def __init__(self, prompts, max_new_tokens, top_k, seed=0):
        super().__init__()
        self.prompts, self.max_new_tokens, self.top_k, self.seed = prompts, max_new_tokens, top_k, seed

    def samples(self):
        return self.model.generate(self.prompts, self.max_new_tokens, sampler="top_k", k=self.top_k, seed=self.seed)

    def on_epoch_end(self, epoch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        for prompt, text in zip(self.prompts, self.samples()):
            logging.info("step %d sample: %r", step, text)
            print(f"step {step}  sample {prompt!r}: {text!r}", flush=True)


class GPTFinetuneTask(base.Task):
    """Next-token prediction on your own text, from a pretrained GPT and its
    tokenizer; metric: perplexity; the model of the best validation perplexity
    is kept in `model_dir/best`, with samples printed every loop."""

    @functools.cached_property
    def checkpoint(self):
        """`task.init_checkpoint`, read once."""
        path = self.task_config.init_checkpoint
        if not path:
            raise ValueError(
                "task.init_checkpoint is empty; gpt/finetune starts from a pretrained GPT folder (tfplm, Hugging "
                "Face GPT-2 or keras-nlp): set --init_checkpoint=PATH"
            )
        checkpoint = pretrained.read_checkpoint(path, family="gpt")
        if checkpoint.tokenizer is None:
            raise ValueError(f"task.init_checkpoint {path!r} has no tokenizer files; gpt/finetune reads text with its own")
        return checkpoint

    @property
    def tokenizer(self):
        return self.checkpoint.tokenizer

    def _file(self, split):
        c = self.task_config
        path = c.train_file if split == "train" else c.validation_file
        if not path:
            raise ValueError(f"task.{'train' if split == 'train' else 'validation'}_file is empty; point it at a text file")
        return path

    def global_batch_size(self, split):
        return self.task_config.global_batch_size

    def build_model(self):
        c = self.task_config
        model = GPT.from_pretrained(self.checkpoint, dropout=c.dropout)
        check_seq_length(c.seq_length, model.max_length)
        return model

    def build_inputs(self, split, input_context=None):
        c = self.task_config
        return causal_lm.causal_lm_dataset(
            self._file(split),
            self.tokenizer,
            c.seq_length,
            per_replica_batch_size(c.global_batch_size, input_context),
            split == "train",
            input_format=c.input_format,
            input_context=input_context,
            shuffle_buffer_size=c.shuffle_buffer_size,
            seed=self.config.runtime.seed,
        )

    def describe_inputs(self, split):
        return {"split": split, "file": self._file(split), "seq_length": self.task_config.seq_length}

    def build_losses(self):
        return keras.losses.SparseCategoricalCrossentropy(from_logits=True, name="lm_loss")

    def build_metrics(self):
        return [metrics.Perplexity(name="perplexity")]

    def build_callbacks(self, model_dir):
        c = self.task_config
        prompts = c.sample_prompts.split("|")
        return [
            base.SaveBest(model_dir, "val_perplexity", mode="min"),
            GenerateSamples(prompts, c.sample_tokens, c.sample_top_k),
        ]

    def held_out_examples(self, limit):
        prompts = [p for p in self.task_config.sample_prompts.split("|") if p]
        return {"prompt": (prompts or [""])[:limit]}


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


def gpt_finetune_experiment():
    """Fine-tuning's recipe: AdamW 1e-4 (nanoGPT's Shakespeare fine-tuning
    uses 3e-5 for GPT-2 sizes; small models take more), 10% warmup, linear
    decay, blocks of 128 tokens, batch 16."""
    return base.ExperimentConfig(
        task=FinetuneConfig(),
        trainer=base.TrainerConfig(
            train_steps=1000,
            steps_per_loop=200,
            log_every_steps=50,
            optimizer=OptimizerConfig(learning_rate=1e-4, warmup_fraction=0.1),
        ),
    )


TASK_TYPE = base.TaskType(
    name="causal_lm",
    task=GPTPretrainingTask,
    serving=GeneratorHead,
    models=(GPT,),
    experiments={"gpt/pretraining": gpt_pretraining_experiment},
)

# Fine-tuning trains the same model class with another Task; it is served alike.
FINETUNE_TASK_TYPE = base.TaskType(
    name="causal_lm_finetuning",
    task=GPTFinetuneTask,
    serving=GeneratorHead,
    models=(GPT,),
    experiments={"gpt/finetune": gpt_finetune_experiment},
)
