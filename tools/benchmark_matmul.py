"""A BERT encoder's matrix products at serving shapes: TensorFlow next to PyTorch.

    pip install -e '.[reference]'   # PyTorch (CPU): the reference side only
    python tools/benchmark_matmul.py

Where tools/benchmark_serving.py compares whole models, this times the kernels
underneath them: every weight product of one forward pass (per layer, the four
attention projections and the two feed-forward ones, each with its bias) on
`--rows` input rows: 17 is a typical single SST-2 sentence, 832 a batch of 32
of them. Each layer has its own weights, as in the model, so that the products
read their weights from memory as serving does.

TensorFlow runs tfplm's own `Dense` layers (tfplm/layers/dense.py: MatMul and
its bias, which TensorFlow fuses into one oneDNN kernel) in one `tf.function`;
PyTorch runs `torch.nn.functional.linear` (what transformers' `nn.Linear`
calls) under `torch.inference_mode()`. Both sides run in this process,
alternating rounds, best round reported. It prints, per product shape and in
total per forward pass, microseconds and GFLOP/s of each side and the ratio:
how much of a serving gap the kernels alone explain.
"""

import time

import numpy as np
import tensorflow as tf
from absl import app, flags

import _benchmarks
from tfplm.layers.dense import Dense

FLAGS = flags.FLAGS
flags.DEFINE_integer("hidden_size", 384, "Width of the encoder (all-MiniLM-L6-v2: 384).")
flags.DEFINE_integer("intermediate_size", 1536, "Width of the feed-forward (all-MiniLM-L6-v2: 1536).")
flags.DEFINE_integer("num_layers", 6, "Layers, each with its own weights.")
flags.DEFINE_list("rows", ["17", "832"], "Input rows (tokens in the batch) to time.")
flags.DEFINE_list("dtypes", ["float32"], "Types to time (bfloat16: weights stored in bfloat16 on both sides).")
flags.DEFINE_integer("calls", 30, "Calls per timed round.")
flags.DEFINE_integer("rounds", 3, "Alternating rounds per side (the best is reported).")
flags.DEFINE_integer("threads", 0, "Threads for both runtimes; 0: each runtime's default.")
flags.register_validator(
    "rows", lambda rows: all(r.isdigit() for r in rows), "--rows takes whole numbers: --rows=17,832"
)
flags.register_validator(
    "dtypes", lambda dtypes: set(dtypes) <= {"float32", "bfloat16"}, "--dtypes takes float32 and/or bfloat16"
)


def layer_shapes():
    """(name, input width, output width) of one layer's weight products."""
    h, i = FLAGS.hidden_size, FLAGS.intermediate_size
    projections = [(name, h, h) for name in ("query", "key", "value", "attention output")]
    return projections + [("feed-forward in", h, i), ("feed-forward out", i, h)]


def tensorflow_side(weights, inputs, dtype):
    """{shape name: one call that computes that product for every layer}."""
    calls = {}
    for name, products in weights.items():
        layers = []
        for kernel, bias in products:
            layer = Dense(kernel.shape[1], dtype=dtype)
            layer.build((None, kernel.shape[0]))
            layer.set_weights([kernel, bias])
            layers.append(layer)
        x = tf.cast(inputs[name], dtype)

        @tf.function
        def call(x=x, layers=layers):
            return [layer(x) for layer in layers]

        calls[name] = call
    return calls


def torch_side(torch, weights, inputs, dtype):
    dtype = getattr(torch, dtype)
    calls = {}
    for name, products in weights.items():
        # nn.Linear keeps its weight as [out, in] and multiplies by its transpose.
        kernels = [(torch.tensor(w.T.copy()).to(dtype), torch.tensor(b).to(dtype)) for w, b in products]
        x = torch.tensor(inputs[name]).to(dtype)

        def call(x=x, kernels=kernels):
            with torch.inference_mode():
                return [torch.nn.functional.linear(x, w, b) for w, b in kernels]

        calls[name] = call
    return calls


def microseconds(call):
    """Per product: one call computes the product of every layer."""
    call()
    start = time.perf_counter()
    for _ in range(FLAGS.calls):
        call()
    return (time.perf_counter() - start) / FLAGS.calls / FLAGS.num_layers * 1e6


def main(argv):
    del argv
    try:
        import torch
    except ImportError:
        raise SystemExit("benchmark_matmul.py needs PyTorch on its other side: pip install -e '.[reference]'")

    if FLAGS.threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
        torch.set_num_threads(FLAGS.threads)
    print(
        f"TensorFlow {tf.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads); "
        f"{FLAGS.num_layers} layers, hidden {FLAGS.hidden_size}, intermediate {FLAGS.intermediate_size}"
    )
    rng = np.random.default_rng(0)
    for rows in map(int, FLAGS.rows):
        weights, inputs = {}, {}
        for name, fan_in, fan_out in layer_shapes():
            weights[name] = [
                (rng.normal(0, 0.02, (fan_in, fan_out)).astype("float32"), np.zeros(fan_out, "float32"))
                for _ in range(FLAGS.num_layers)
            ]
            inputs[name] = rng.normal(0, 1, (rows, fan_in)).astype("float32")
        for dtype in FLAGS.dtypes:
            sides = {
                "TensorFlow": tensorflow_side(weights, inputs, dtype),
                "PyTorch": torch_side(torch, weights, inputs, dtype),
            }
            cases = {(side, name): (call,) for side, calls in sides.items() for name, call in calls.items()}
            best = _benchmarks.best_of_rounds(cases, microseconds, FLAGS.rounds)
            print(f"{rows} rows, {dtype}:")
            totals = {"TensorFlow": 0.0, "PyTorch": 0.0}
            for name, fan_in, fan_out in layer_shapes():
                gflop = 2 * rows * fan_in * fan_out / 1e9
                tf_us, torch_us = best["TensorFlow", name], best["PyTorch", name]
                totals["TensorFlow"] += tf_us * FLAGS.num_layers
                totals["PyTorch"] += torch_us * FLAGS.num_layers
                print(
                    f"  {name:17} {fan_in:5} x {fan_out:<5} "
                    f"TensorFlow {tf_us:8.1f} us ({gflop / tf_us * 1e6:5.0f} GFLOP/s)"
                    f"  PyTorch {torch_us:8.1f} us ({gflop / torch_us * 1e6:5.0f} GFLOP/s)"
                    f"  TensorFlow vs PyTorch {torch_us / tf_us:.2f}x"
                )
            print(
                f"  every product of a forward pass: TensorFlow {totals['TensorFlow'] / 1e3:.2f} ms, "
                f"PyTorch {totals['PyTorch'] / 1e3:.2f} ms: {totals['PyTorch'] / totals['TensorFlow']:.2f}x "
                "(above 1: TensorFlow faster)"
            )


if __name__ == "__main__":
    app.run(main)
