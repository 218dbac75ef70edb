"""What the benchmarks under tools/ share: the machine's measured matmul peak and
alternating rounds."""

import time

import tensorflow as tf


def matmul_peak_gflops(dtype="float32", size=2048, repeats=20, rounds=3):
    """This machine's measured matmul rate for `dtype` in GFLOP/s (the MFU denominator).

    A square matmul of `size` in a compiled loop, best of `rounds`: what
    TensorFlow itself reaches here (oneDNN, AMX for bfloat16 where the CPU has
    it), measured rather than typed in from a datasheet.
    """
    # Scaled so that a chain of products stays finite (its spectral radius is about 1).
    a = tf.cast(tf.random.normal([size, size], stddev=0.5 / size**0.5), dtype)

    @tf.function
    def run(a):
        x = a
        for _ in range(repeats):  # a chain: each product needs the previous one
            x = tf.matmul(x, a)
        return tf.reduce_sum(x[:1, :1])

    run(a).numpy()  # trace and warm up
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        run(a).numpy()
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 * repeats / best / 1e9


def best_of_rounds(cases, measure, rounds):
    """{name: the smallest `measure(*case)`} over `rounds` rounds that take the
    cases in turn, so that noise on a shared machine hits every case alike."""
    best = {name: float("inf") for name in cases}
    for _ in range(rounds):
        for name, case in cases.items():
            best[name] = min(best[name], measure(*case))
    return best


def keras_nlp_sizes(config):
    """keras-nlp backbone arguments (BertBackbone, GPT2Backbone) for the sizes of
    a tfplm preset's `config`."""
    return dict(
        vocabulary_size=config["vocab_size"],
        num_layers=config["num_layers"],
        num_heads=config["num_heads"],
        hidden_dim=config["hidden_size"],
        intermediate_dim=config["intermediate_size"],
        max_sequence_length=config["max_length"],
    )
