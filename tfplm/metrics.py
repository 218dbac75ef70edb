"""Keras metrics that Keras lacks: perplexity, and GLUE's corpus-level metrics."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tfplm")
class Perplexity(keras.metrics.Metric):
    """exp of the (sample-weighted) mean token cross-entropy, from logits.

    Accumulates the summed loss and weight over the whole evaluation, so the
    result is the corpus perplexity, not an average of per-batch values.
    """

    def __init__(self, name="perplexity", **kwargs):
        super().__init__(name=name, **kwargs)
        self.total = self.add_variable(shape=(), initializer="zeros", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", name="count")

    def update_state(self, y_true, y_pred, sample_weight=None):
        losses = keras.losses.sparse_categorical_crossentropy(y_true, y_pred, from_logits=True)
        weights = ops.ones_like(losses) if sample_weight is None else ops.cast(sample_weight, losses.dtype)
        self.total.assign_add(ops.sum(losses * weights))
        self.count.assign_add(ops.sum(weights))

    def result(self):
        return ops.exp(ops.divide_no_nan(self.total, self.count))
