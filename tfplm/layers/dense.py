"""A Dense layer whose graph TensorFlow's CPU and GPU backends fuse into one op."""

import keras
import tensorflow as tf
from keras import ops


@keras.saving.register_keras_serializable(package="tfplm")
class Dense(keras.layers.Dense):
    """`keras.layers.Dense` written as the graph TensorFlow fuses: one matmul,
    its bias and its activation in one kernel.

    Keras multiplies a [batch, length, width] input by the kernel with
    `tf.tensordot` and adds the bias with a broadcasting add; TensorFlow's
    graph optimizer (grappler's remapper, for oneDNN on CPUs and cuBLASLt on
    GPUs) fuses MatMul + BiasAdd + GELU/tanh/ReLU into one kernel only when it
    sees exactly those three ops on a rank-2 input. So the input is folded
    to [batch * length, width], multiplied, given its bias with
    `tf.nn.bias_add` and its activation, and unfolded. Serving MiniLM, the
    fused GELU made the feed-forward's activation nearly free (BENCHMARKS.md).
    Weights, names, config and results are Keras's; the one `tf.*` call
    in the layers is here because the fusion is TensorFlow's.
    """

    def call(self, inputs, training=None):
        leading = ops.shape(inputs)[:-1]
        x = ops.reshape(inputs, (-1, inputs.shape[-1])) if len(leading) != 1 else inputs
        x = ops.matmul(x, self.kernel)
        if self.bias is not None:
            # Not fused in bfloat16: oneDNN runs a bfloat16 MatMul + BiasAdd as an
            # inner product without AMX, at float32 speed (1,706 vs 944 ms a
            # bert_small training step, BENCHMARKS.md); the plain MatMul uses AMX.
            x = tf.nn.bias_add(x, self.bias) if x.dtype != tf.bfloat16 else x + self.bias
        if self.activation is not None:
            x = self.activation(x)
        return ops.reshape(x, (*leading, self.units)) if len(leading) != 1 else x
