"""Generation speed of tfplm's GPT next to keras-nlp's GPT2CausalLM.

    python tools/benchmark_generation.py --preset=gpt2_small --batch_sizes=1,8 \\
        --prompt_length=32 --new_tokens=128 --dtype=float32

Both models get the same sizes (random weights, no dropout), the same prompts
(random ids, `prompt_length` tokens a row) and the same sampler (greedy, no
stop token), and run in one process, alternating round by round so machine
noise hits both; the best round of each is reported. Tokens/s counts new
tokens over all rows: batch * new_tokens / seconds.

* `--dtype`: "float32", or "bfloat16" (weights and compute in bfloat16 on both
  sides: at batch 1 decoding reads every weight once a token, so it halves the
  bytes read), where tfplm's greedy tokens are also compared with those of
  a float32 tfplm GPT holding the same (bfloat16-rounded) weights: the
  fraction of new tokens that agree is printed, not checked, since random
  weights leave near-ties that bfloat16 rounding flips;
* `--jit_compile`: the XLA settings to time tfplm's decoding with (its
  default is false; see `CompiledDecoding.decode_jit_compile`), and
  `--keras_nlp_jit_compile` keras-nlp's (its own default on a CPU is false);
  the ratio is tfplm's best over keras-nlp's best, and tfplm's default over
  keras-nlp's default;
* `--export`: also exports the GPT as a SavedModel with its `generate`
  signature (`tfplm.export.saved_model`, with a stand-in byte-level
  tokenizer) and times the loaded signature on a text prompt of
  `prompt_length` tokens, so serving is seen to get the same speed.
"""

import json
import os
import string
import tempfile
import time

import _benchmarks
import keras
import keras_nlp
import numpy as np
import tensorflow as tf
from absl import app, flags, logging

import tfplm
from tfplm import models
from tfplm.models import presets

FLAGS = flags.FLAGS
flags.DEFINE_string("preset", "gpt2_small", "GPT preset to compare.")
flags.DEFINE_list("batch_sizes", ["1", "8"], "Batch sizes to time.")
flags.DEFINE_integer("prompt_length", 32, "Prompt tokens per row.")
flags.DEFINE_integer("new_tokens", 128, "Tokens generated per row.")
flags.DEFINE_integer("rounds", 3, "Alternating rounds per case (the best is reported).")
flags.DEFINE_enum("dtype", "float32", ["float32", "bfloat16"], "Weights and compute dtype, both sides.")
flags.DEFINE_list("jit_compile", ["false"], "tfplm XLA settings to time: true, false (its default).")
flags.DEFINE_list("keras_nlp_jit_compile", ["false"], "keras-nlp XLA settings to time: true, false.")
flags.DEFINE_boolean("export", True, "Also time the exported SavedModel's `generate` signature.")
flags.DEFINE_integer("seed", 0, "Seed of the weights and prompts.")


def _setting(value):
    return {"true": True, "false": False}[value.lower()]


def tfplm_case(config, jit):
    model = models.GPT(**config, dropout=0.0, dtype=FLAGS.dtype)
    model.decode_jit_compile = jit

    def run(prompts):
        return model.generate_ids(prompts, FLAGS.new_tokens)

    return model, run


def keras_nlp_case(config, jit):
    backbone = keras_nlp.models.GPT2Backbone(
        **_benchmarks.keras_nlp_sizes(config),
        dropout=0.0,
        dtype=FLAGS.dtype,
    )
    causal_lm = keras_nlp.models.GPT2CausalLM(backbone, preprocessor=None)
    causal_lm.compile(sampler="greedy", jit_compile=jit)

    def run(prompts):
        batch, length = prompts.shape
        total = length + FLAGS.new_tokens
        token_ids = np.zeros((batch, total), "int32")
        token_ids[:, :length] = prompts
        padding_mask = np.zeros((batch, total), bool)
        padding_mask[:, :length] = True
        inputs = {"token_ids": token_ids, "padding_mask": padding_mask}
        return causal_lm.generate(inputs, stop_token_ids=None)["token_ids"]

    return causal_lm, run


def stand_in_tokenizer(vocab_size):
    """A byte-level BPE tokenizer of `vocab_size` ids: GPT-2's 256 byte symbols,
    `<|endoftext|>`, then filler tokens (one unused merge), so each letter is a token
    and any id the random model picks detokenizes."""
    from tfplm.tokenizers import GPT2Tokenizer

    # GPT-2's printable stand-ins for the 256 byte values.
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(161, 173)) + list(range(174, 256))
    symbols, extra = [], 0
    for byte in range(256):
        if byte in printable:
            symbols.append(chr(byte))
        else:
            symbols.append(chr(256 + extra))
            extra += 1
    vocabulary = {symbol: i for i, symbol in enumerate(symbols)}
    vocabulary["<|endoftext|>"] = len(vocabulary)
    # One merge (two spaces), which letter prompts never use: keras-nlp's
    # merge table cannot be built from none.
    space = symbols[ord(" ")]
    vocabulary[space * 2] = len(vocabulary)
    for i in range(len(vocabulary), vocab_size):
        vocabulary[f"filler{i}"] = i
    return GPT2Tokenizer(vocabulary=vocabulary, merges=[f"{space} {space}"])


def export_case(config, directory):
    """The loaded `generate` signature of an exported GPT, on prompts of
    `prompt_length` letters (one token each with the stand-in tokenizer)."""
    tokenizer = stand_in_tokenizer(config["vocab_size"])
    model = models.GPT(**config, dropout=0.0, dtype=FLAGS.dtype, tokenizer=tokenizer)
    path = tfplm.export.saved_model(model, directory)
    loaded = tf.saved_model.load(path)
    generate = loaded.signatures["generate"]
    letters = string.ascii_lowercase

    def run(batch):
        rng = np.random.default_rng(FLAGS.seed)
        prompts = ["".join(rng.choice(list(letters), FLAGS.prompt_length)) for _ in range(batch)]
        out = generate(
            prompt=tf.constant(prompts),
            max_new_tokens=tf.constant(FLAGS.new_tokens),
            sampler=tf.constant("greedy"),
            temperature=tf.constant(1.0),
            top_k=tf.constant(10),
            top_p=tf.constant(0.9),
            num_beams=tf.constant(4),
            seed=tf.constant(0),
        )
        token_ids = out["token_ids"].numpy()
        assert token_ids.shape == (batch, FLAGS.prompt_length + FLAGS.new_tokens), token_ids.shape
        return token_ids

    return run


def best_seconds(run, argument, times):
    start = time.perf_counter()
    run(argument)
    times.append(time.perf_counter() - start)
    return min(times)


def main(_):
    logging.set_verbosity(logging.WARNING)
    tf.get_logger().setLevel("WARNING")
    keras.utils.set_random_seed(FLAGS.seed)
    config = dict(presets.get_preset(FLAGS.preset, "gpt").config)
    config["max_length"] = max(config["max_length"], FLAGS.prompt_length + FLAGS.new_tokens)
    cases = {}
    for jit in FLAGS.jit_compile:
        cases[f"tfplm jit={jit}"] = tfplm_case(config, _setting(jit))
    for jit in FLAGS.keras_nlp_jit_compile:
        cases[f"keras-nlp jit={jit}"] = keras_nlp_case(config, _setting(jit))
    # The tfplm settings share weights, so they must return the same tokens.
    tfplm_models = [model for name, (model, _) in cases.items() if name.startswith("tfplm")]
    for model in tfplm_models[1:]:
        model.set_weights(tfplm_models[0].get_weights())
    reference = None
    if FLAGS.dtype != "float32" and tfplm_models:
        # The same weights in float32: what bfloat16 compute changes.
        reference = tfplm_models[0].with_dtype("float32")
        reference.decode_jit_compile = False
    export_run = None
    if FLAGS.export:
        directory = tempfile.mkdtemp(prefix="tfplm_generate_")
        export_run = export_case(config, directory)

    rng = np.random.default_rng(FLAGS.seed)
    print(
        f"preset={FLAGS.preset} dtype={FLAGS.dtype} prompt_length={FLAGS.prompt_length} "
        f"new_tokens={FLAGS.new_tokens} rounds={FLAGS.rounds}"
    )
    for batch in map(int, FLAGS.batch_sizes):
        prompts = rng.integers(1, config["vocab_size"], (batch, FLAGS.prompt_length)).astype("int32")
        outputs = {name: run(prompts) for name, (_, run) in cases.items()}  # compile, warm up
        tfplm_outputs = {k: v for k, v in outputs.items() if k.startswith("tfplm")}
        first = next(iter(tfplm_outputs.values()))
        for name, out in tfplm_outputs.items():
            # XLA rounds differently, so near-ties of random weights may flip.
            print(f"batch={batch} {name}: {np.mean(out == first):.3f} of tokens as {next(iter(tfplm_outputs))}")
        if reference is not None:
            expected = reference.generate_ids(prompts, FLAGS.new_tokens)[:, FLAGS.prompt_length :]
            agreement = np.mean(first[:, FLAGS.prompt_length :] == expected)
            print(f"batch={batch} {next(iter(tfplm_outputs))} ({FLAGS.dtype}): {agreement:.3f} of new "
                  "tokens as float32 tfplm with the same weights")
        if export_run:
            export_run(batch)
        times = {name: [] for name in cases}
        if export_run:
            times["tfplm exported generate"] = []
        for _ in range(FLAGS.rounds):
            for name, (_, run) in cases.items():
                best_seconds(run, prompts, times[name])
            if export_run:
                best_seconds(export_run, batch, times["tfplm exported generate"])
        speed = {name: batch * FLAGS.new_tokens / min(t) for name, t in times.items()}
        for name, tokens_per_second in speed.items():
            print(f"batch={batch} {name:28s} {tokens_per_second:8.1f} tokens/s  (rounds: "
                  + ", ".join(f"{batch * FLAGS.new_tokens / t:.1f}" for t in times[name]) + ")")
        ours = max(v for k, v in speed.items() if k.startswith("tfplm jit"))
        theirs = max(v for k, v in speed.items() if k.startswith("keras-nlp"))
        print(f"batch={batch} ratio tfplm/keras-nlp (best setting of each): {ours / theirs:.2f}x")
        defaults = speed.get("tfplm jit=false"), speed.get("keras-nlp jit=false")
        if None not in defaults:
            print(f"batch={batch} ratio tfplm/keras-nlp (defaults, no XLA): {defaults[0] / defaults[1]:.2f}x")
    print("load average (1, 5, 15 min):", json.dumps(os.getloadavg()))


if __name__ == "__main__":
    app.run(main)
