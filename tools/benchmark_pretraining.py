"""Training throughput of tfplm's BERT pretrainer next to keras-nlp's BertMaskedLM.

    python tools/benchmark_pretraining.py --preset=bert_small --seq_length=128 --batch_size=32

Both models get the same sizes, the same synthetic batch (random ids; the
numbers do not depend on the data) and the same optimizer settings (AdamW,
learning rate 1e-4, Keras's default weight decay: tfplm's AdamW, which its
trainer uses, against keras.optimizers.AdamW, which keras-nlp uses), and run in
the same process, alternating, so machine noise hits both. For each precision
(Keras global policy) and XLA setting it prints ms/step, tokens/s and model
FLOPs utilization (MFU) against the matmul peak of that precision, which it
measures first on this machine (`_benchmarks.matmul_peak_gflops`), and the
ratios tfplm / keras-nlp and bfloat16 / float32.
"""

import time

import keras
import keras_nlp
import numpy as np
import tensorflow as tf
from absl import app, flags

import _benchmarks
from tfplm import models
from tfplm.models import presets
from tfplm.training import optimization

FLAGS = flags.FLAGS
flags.DEFINE_string("preset", "bert_small", "BERT preset to compare.")
flags.DEFINE_integer("seq_length", 128, "Tokens per example.")
flags.DEFINE_integer("batch_size", 32, "Examples per step.")
flags.DEFINE_integer("max_predictions", 20, "Masked positions per example.")
flags.DEFINE_integer("steps", 10, "Timed steps per round.")
flags.DEFINE_integer("rounds", 2, "Alternating rounds per model (the best is reported).")
flags.DEFINE_list("precisions", ["float32", "mixed_bfloat16"], "Keras dtype policies to compare.")
flags.DEFINE_list("jit_compile", ["false", "true"], "XLA settings to compare.")


def synthetic_batch(vocab_size, rng):
    b, t, p = FLAGS.batch_size, FLAGS.seq_length, FLAGS.max_predictions
    ids = rng.integers(1, vocab_size, (b, t)).astype("int32")
    positions = np.sort(rng.permuted(np.tile(np.arange(1, t), (b, 1)), axis=1)[:, :p], axis=1)
    return {
        "ids": ids,
        "mask": np.ones((b, t), "int32"),
        "types": (np.arange(t)[None, :] >= t // 2).astype("int32").repeat(b, 0),
        "positions": positions.astype("int32"),
        "labels": rng.integers(1, vocab_size, (b, p)).astype("int32"),
        "nsp": rng.integers(0, 2, (b,)).astype("int32"),
    }


def tfplm_case(config, batch, jit):
    model = models.BertPretrainer(models.BertEncoder(**config))
    x = {
        "input_word_ids": batch["ids"],
        "input_mask": batch["mask"],
        "input_type_ids": batch["types"],
        "masked_lm_positions": batch["positions"],
    }
    y = {"mlm_logits": batch["labels"], "nsp_logits": batch["nsp"]}
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    optimizer = optimization.AdamW(1e-4)  # what tfplm's trainer builds (fused update)
    model.compile(optimizer, loss={"mlm_logits": loss, "nsp_logits": loss}, jit_compile=jit)
    return model, x, y


def keras_nlp_case(config, batch, jit):
    backbone = keras_nlp.models.BertBackbone(
        **_benchmarks.keras_nlp_sizes(config),
    )
    model = keras_nlp.models.BertMaskedLM(backbone, preprocessor=None)
    x = {
        "token_ids": batch["ids"],
        "segment_ids": batch["types"],
        "padding_mask": batch["mask"],
        "mask_positions": batch["positions"],
    }
    model.compile(
        keras.optimizers.AdamW(1e-4),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=jit,
    )
    return model, x, batch["labels"]


def time_steps(model, x, y):
    dataset = tf.data.Dataset.from_tensors((x, y)).repeat().prefetch(2)
    model.fit(dataset, steps_per_epoch=2, epochs=1, verbose=0)  # trace + warm up
    start = time.perf_counter()
    model.fit(dataset, steps_per_epoch=FLAGS.steps, epochs=1, verbose=0)
    return (time.perf_counter() - start) / FLAGS.steps


def main(argv):
    del argv
    preset = presets.get_preset(FLAGS.preset, "bert")
    config = preset.config
    batch = synthetic_batch(config["vocab_size"], np.random.default_rng(0))
    tokens = FLAGS.batch_size * FLAGS.seq_length
    # Encoder FLOPs per token, plus the MLM head on the masked positions only.
    d, v = config["hidden_size"], config["vocab_size"]
    head = 6 * (d * d + d * v) * FLAGS.max_predictions / FLAGS.seq_length
    flops_per_token = presets.flops_per_token(preset, training=True, seq_length=FLAGS.seq_length) + head
    peaks = {
        precision: _benchmarks.matmul_peak_gflops("bfloat16" if "bfloat16" in precision else "float32")
        for precision in FLAGS.precisions
    }
    print(
        f"{FLAGS.preset}: seq {FLAGS.seq_length}, batch {FLAGS.batch_size}, "
        f"{flops_per_token / 1e6:.1f} MFLOP/token (training); measured matmul peak "
        + ", ".join(f"{p} {g:.0f} GFLOP/s" for p, g in peaks.items())
    )
    results = {}
    for precision in FLAGS.precisions:
        for jit in [j.lower() == "true" for j in FLAGS.jit_compile]:
            keras.mixed_precision.set_global_policy(precision)
            cases = {"tfplm": tfplm_case(config, batch, jit), "keras-nlp": keras_nlp_case(config, batch, jit)}
            best = _benchmarks.best_of_rounds(cases, time_steps, FLAGS.rounds)
            for name, seconds in best.items():
                results[precision, jit, name] = seconds
                rate = tokens / seconds
                mfu = rate * flops_per_token / (peaks[precision] * 1e9)
                print(
                    f"  {precision:14} jit_compile={jit!s:5} {name:9}: {seconds * 1e3:7.0f} ms/step  "
                    f"{rate:8.0f} tokens/s  MFU {mfu:.0%}"
                )
            print(f"  {'':14} {'':17} tfplm vs keras-nlp: {best['keras-nlp'] / best['tfplm']:.2f}x")
    keras.mixed_precision.set_global_policy("float32")
    for (precision, jit, name), seconds in results.items():
        if precision != "float32" and ("float32", jit, name) in results:
            speedup = results["float32", jit, name] / seconds
            print(f"  {name} {precision} vs float32 (jit_compile={jit}): {speedup:.2f}x")


if __name__ == "__main__":
    app.run(main)
