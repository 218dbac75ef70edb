"""Keras metrics that Keras lacks: perplexity, and GLUE's corpus-level metrics.

GLUE scores are corpus-level: one Matthews correlation, F1 or correlation
over all examples, never an average of per-batch values. These metrics keep
sufficient statistics, so `result()` equals sklearn / scipy on everything seen
since the last `reset_state()`:

- `MatthewsCorrelation` (CoLA) and `F1Score` (MRPC, QQP) keep (weighted)
  confusion counts.
- `PearsonCorrelation` (STS-B) keeps count, means, centred second moments and
  co-moment, merged batch by batch with Chan et al.'s pairwise update (stable in
  float32, unlike raw sums of squares), plus min/max to detect constant input.
- `SpearmanCorrelation` (STS-B) keeps every (label, prediction) pair, since
  ranks need the whole set, and ranks them in `result()`.

Accuracy is `keras.metrics.SparseCategoricalAccuracy`.

Distribution. Keras creates metric variables as sync-on-read with SUM
aggregation: under `tf.distribute` each replica updates its own copy, and a
read outside the replicas (what `model.evaluate` does for the values it
returns) sums the copies. Confusion counts are sums, so they need nothing more.
Moments and stored pairs are not sums, so those metrics keep one row per
replica (`[num_replicas, ...]`): a replica writes only its own row and the
others stay zero in its copy, so the cross-replica SUM assembles all rows
exactly (x + 0 == x) and `result()` merges them. Everything has static shapes,
so it runs in `tf.function`, under XLA and on TPU. Inside a replica (Keras'
per-step progress values) a metric reports on that replica's data only, like
every Keras metric; the value `evaluate` returns covers all replicas. Create
these metrics inside `strategy.scope()`, as Keras requires for all metrics;
the row count is fixed then.

Undefined values follow the references: MCC is 0 when a marginal is constant
(sklearn), F1 is 0 when there are no true or predicted positives (sklearn's
`zero_division=0`), and Pearson / Spearman are NaN for fewer than two examples
or constant labels or predictions (scipy).
"""

import keras
import tensorflow as tf
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


def _class_ids(y_pred, from_logits):
    """Predicted classes: argmax of [B, C] scores, or a threshold on [B] / [B, 1] scores."""
    y_pred = ops.convert_to_tensor(y_pred)
    if len(y_pred.shape) == 2 and y_pred.shape[-1] is not None and y_pred.shape[-1] > 1:
        return ops.cast(ops.argmax(y_pred, axis=-1), "int32")
    threshold = 0.0 if from_logits else 0.5
    return ops.cast(ops.reshape(y_pred, [-1]) > threshold, "int32")


def _weights(sample_weight, like, dtype):
    if sample_weight is None:
        return ops.ones_like(like, dtype=dtype)
    return ops.cast(ops.reshape(sample_weight, [-1]), dtype)


def _scores(y, name, what):
    """y as a float vector; an error for more than one value per example."""
    y = ops.convert_to_tensor(y)
    if len(y.shape) > 2 or (len(y.shape) == 2 and y.shape[-1] not in (1, None)):
        raise ValueError(f"{name} expects one {what} per example, shaped [B] or [B, 1]; got shape {y.shape}")
    return ops.cast(ops.reshape(y, [-1]), "float32")


def _replica_row(num_rows):
    """(row index, one-hot row mask) of the current replica in [num_rows, ...] state."""
    context = tf.distribute.get_replica_context()
    if context is None:
        # Cross-replica context: Keras traces metrics once this way to infer
        # output specs; nothing runs, so any row will do.
        replica = 0
    else:
        if context.num_replicas_in_sync != num_rows:
            raise ValueError(
                f"metric was created for {num_rows} replica(s) but runs under "
                f"{context.num_replicas_in_sync}; create it inside `strategy.scope()`"
            )
        replica = context.replica_id_in_sync_group
    return replica, ops.one_hot(replica, num_rows, dtype="float32")


def _num_replicas():
    return tf.distribute.get_strategy().num_replicas_in_sync


@keras.saving.register_keras_serializable(package="tfplm")
class MatthewsCorrelation(keras.metrics.Metric):
    """Matthews correlation coefficient (GLUE's CoLA metric), as sklearn computes it.

    Accumulates a (weighted) confusion matrix; the multiclass formula of
    `sklearn.metrics.matthews_corrcoef`. 0 when the labels or the predictions
    are all one class.

    Args:
        num_classes: classes of the labels (2 for CoLA).
        from_logits: for single-score outputs ([B] or [B, 1]): whether they are
            logits (threshold 0) or probabilities (threshold 0.5). [B, C]
            outputs are compared by argmax either way.
        name, dtype: as for any Keras metric.

    Example:
        >>> m = MatthewsCorrelation()
        >>> m.update_state([1, 0, 1, 1], [[0.2, 0.8], [0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
        >>> round(float(m.result()), 4)
        0.5774
    """

    def __init__(self, num_classes=2, from_logits=False, name="matthews_correlation", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.num_classes = num_classes
        self.from_logits = from_logits
        self.confusion = self.add_variable(
            shape=(num_classes, num_classes), initializer="zeros", dtype="float32", name="confusion"
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        y_true = ops.cast(ops.reshape(y_true, [-1]), "int32")
        y_pred = _class_ids(y_pred, self.from_logits)
        weights = _weights(sample_weight, y_true, "float32")
        true = ops.one_hot(y_true, self.num_classes, dtype="float32") * weights[:, None]
        pred = ops.one_hot(y_pred, self.num_classes, dtype="float32")
        self.confusion.assign(self.confusion + ops.matmul(ops.transpose(true), pred))

    def result(self):
        c = ops.convert_to_tensor(self.confusion)
        t = ops.sum(c, axis=1)  # true class totals
        p = ops.sum(c, axis=0)  # predicted class totals
        n = ops.sum(t)
        # sklearn's n * trace - sum_k t_k p_k and n^2 - sum_k t_k^2, rewritten
        # without cancellation, which float32 cannot afford with a rare class:
        # per class k, n a - (a + b)(a + c) == a d - b c, for a = hits,
        # b = misses, c = false alarms, d = the rest (exact integer counts).
        hits = ops.diagonal(c)
        misses, false_alarms = t - hits, p - hits
        rest = n - t - p + hits
        cov_tp = ops.sum(hits * rest - misses * false_alarms)
        # Exactly 0 when one class holds everything.
        cov_tt = ops.sum(t * (n - t))
        cov_pp = ops.sum(p * (n - p))
        defined = ops.logical_and(cov_tt > 0, cov_pp > 0)
        mcc = cov_tp / (ops.sqrt(ops.where(defined, cov_tt, 1.0)) * ops.sqrt(ops.where(defined, cov_pp, 1.0)))
        return ops.where(defined, ops.clip(mcc, -1.0, 1.0), 0.0)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes, "from_logits": self.from_logits}


@keras.saving.register_keras_serializable(package="tfplm")
class F1Score(keras.metrics.Metric):
    """F1 of one class (GLUE's MRPC and QQP metric), from sparse labels and scores.

    Equals `sklearn.metrics.f1_score(y_true, y_pred, pos_label=positive_class)`
    on binary data (per-class F1 with more classes); 0 when there are no true
    and no predicted positives. Unlike `keras.metrics.F1Score` it takes class-id
    labels and logits/probabilities as a classifier outputs them.

    Args:
        positive_class: the class whose F1 is reported (1 for MRPC and QQP).
        from_logits: for single-score outputs ([B] or [B, 1]): whether they are
            logits (threshold 0) or probabilities (threshold 0.5). [B, C]
            outputs are compared by argmax either way.
        name, dtype: as for any Keras metric.

    Example:
        >>> m = F1Score()
        >>> m.update_state([1, 0, 1, 1], [[0.2, 0.8], [0.9, 0.1], [0.6, 0.4], [0.3, 0.7]])
        >>> round(float(m.result()), 4)
        0.8
    """

    def __init__(self, positive_class=1, from_logits=False, name="f1", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.positive_class = positive_class
        self.from_logits = from_logits
        self.true_positives = self.add_variable((), "zeros", dtype="float32", name="true_positives")
        self.false_positives = self.add_variable((), "zeros", dtype="float32", name="false_positives")
        self.false_negatives = self.add_variable((), "zeros", dtype="float32", name="false_negatives")

    def update_state(self, y_true, y_pred, sample_weight=None):
        actual = ops.reshape(y_true, [-1]) == self.positive_class
        predicted = _class_ids(y_pred, self.from_logits) == self.positive_class
        weights = _weights(sample_weight, ops.cast(actual, "float32"), "float32")
        actual, predicted = ops.cast(actual, "float32"), ops.cast(predicted, "float32")
        self.true_positives.assign(self.true_positives + ops.sum(weights * actual * predicted))
        self.false_positives.assign(self.false_positives + ops.sum(weights * (1 - actual) * predicted))
        self.false_negatives.assign(self.false_negatives + ops.sum(weights * actual * (1 - predicted)))

    def result(self):
        tp = ops.convert_to_tensor(self.true_positives)
        denominator = 2 * tp + self.false_positives + self.false_negatives
        return ops.where(denominator > 0, 2 * tp / ops.where(denominator > 0, denominator, 1.0), 0.0)

    def get_config(self):
        return {**super().get_config(), "positive_class": self.positive_class, "from_logits": self.from_logits}


# Columns of PearsonCorrelation's per-replica moment rows.
_N, _MEAN_X, _MEAN_Y, _M2_X, _M2_Y, _C_XY, _MIN_X, _MAX_X, _MIN_Y, _MAX_Y = range(10)


def _merge_moments(a, b):
    """Chan et al.'s pairwise merge of two moment rows (the _N.._MAX_Y columns).

    Works on rows or [R, 10] batches of rows; an empty side (count 0) is the
    identity, whatever its other columns hold.
    """
    na, nb = a[..., _N], b[..., _N]
    n = na + nb
    safe_n = ops.where(n > 0, n, 1.0)
    dx = b[..., _MEAN_X] - a[..., _MEAN_X]
    dy = b[..., _MEAN_Y] - a[..., _MEAN_Y]
    weight = na * nb / safe_n
    merged = [
        n,
        a[..., _MEAN_X] + dx * nb / safe_n,
        a[..., _MEAN_Y] + dy * nb / safe_n,
        a[..., _M2_X] + b[..., _M2_X] + dx * dx * weight,
        a[..., _M2_Y] + b[..., _M2_Y] + dy * dy * weight,
        a[..., _C_XY] + b[..., _C_XY] + dx * dy * weight,
        ops.minimum(a[..., _MIN_X], b[..., _MIN_X]),
        ops.maximum(a[..., _MAX_X], b[..., _MAX_X]),
        ops.minimum(a[..., _MIN_Y], b[..., _MIN_Y]),
        ops.maximum(a[..., _MAX_Y], b[..., _MAX_Y]),
    ]
    merged = ops.stack(merged, axis=-1)
    merged = ops.where((na == 0)[..., None], b, merged)
    return ops.where((nb == 0)[..., None], a, merged)


def _batch_moments(x, y, mask):
    """The moment row of the masked entries of x, y (two-pass within the batch)."""
    n = ops.sum(mask)
    safe_n = ops.maximum(n, 1.0)
    mean_x, mean_y = ops.sum(x * mask) / safe_n, ops.sum(y * mask) / safe_n
    dx, dy = (x - mean_x) * mask, (y - mean_y) * mask
    valid = mask > 0
    big = ops.cast(3.0e38, "float32")
    return ops.stack([
        n, mean_x, mean_y, ops.sum(dx * dx), ops.sum(dy * dy), ops.sum(dx * dy),
        ops.min(ops.where(valid, x, big)), ops.max(ops.where(valid, x, -big)),
        ops.min(ops.where(valid, y, big)), ops.max(ops.where(valid, y, -big)),
    ])


def _pearson_from_moments(m):
    defined = ops.logical_and(
        m[_N] >= 2, ops.logical_and(m[_MAX_X] > m[_MIN_X], m[_MAX_Y] > m[_MIN_Y])
    )
    denominator = ops.sqrt(m[_M2_X]) * ops.sqrt(m[_M2_Y])
    r = m[_C_XY] / ops.where(defined, denominator, 1.0)
    nan = ops.cast(float("nan"), "float32")
    return ops.where(defined, ops.clip(r, -1.0, 1.0), nan)


@keras.saving.register_keras_serializable(package="tfplm")
class PearsonCorrelation(keras.metrics.Metric):
    """Pearson correlation of labels and predictions (GLUE's STS-B metric), as scipy.

    Streams count, means, centred second moments and co-moment (one row per
    replica, see the module docstring); NaN, like `scipy.stats.pearsonr`, for
    fewer than two examples or constant labels or predictions. A
    `sample_weight` of 0 leaves an example out (e.g. padding); any other
    weight counts it once, since GLUE's correlation is unweighted.

    Args:
        name, dtype: as for any Keras metric.

    Example:
        >>> m = PearsonCorrelation()
        >>> m.update_state([1.0, 2.0, 3.0, 4.0], [[1.1], [1.9], [3.2], [3.9]])
        >>> round(float(m.result()), 4)
        0.9934
    """

    def __init__(self, name="pearson_correlation", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.num_replicas = _num_replicas()
        self.moments = self.add_variable(
            shape=(self.num_replicas, 10), initializer="zeros", dtype="float32", name="moments"
        )

    def update_state(self, y_true, y_pred, sample_weight=None):
        x, y = _scores(y_true, self.name, "label"), _scores(y_pred, self.name, "prediction")
        mask = ops.cast(_weights(sample_weight, x, "float32") != 0, "float32")
        _, row_mask = _replica_row(self.num_replicas)
        rows = ops.convert_to_tensor(self.moments)
        merged = _merge_moments(rows, _batch_moments(x, y, mask)[None, :])
        self.moments.assign(ops.where(row_mask[:, None] > 0, merged, rows))

    def result(self):
        rows = ops.convert_to_tensor(self.moments)
        total = rows[0]
        for i in range(1, self.num_replicas):
            total = _merge_moments(total, rows[i])
        return _pearson_from_moments(total)


def _average_ranks(values, valid):
    """Ranks of `values` among the `valid` entries, as scipy's `rankdata`.

    1-based, ties share their average rank; static shapes (invalid entries get
    meaningless ranks). Returns (ranks, number of distinct valid values).
    """
    size = tf.shape(values)[0]
    # Valid entries first, each part by value: a stable sort on validity of
    # the value order (the value sort's own tie order does not matter).
    order = tf.argsort(values)
    order = tf.gather(order, tf.argsort(tf.cast(~tf.gather(valid, order), tf.int32), stable=True))
    sorted_values, sorted_valid = tf.gather(values, order), tf.gather(valid, order)
    starts = tf.concat(
        [[True], (sorted_values[1:] != sorted_values[:-1]) | (sorted_valid[1:] != sorted_valid[:-1])], 0
    )
    group = tf.cumsum(tf.cast(starts, tf.int32)) - 1
    position = tf.range(size)
    first = tf.math.unsorted_segment_min(position, group, size)
    last = tf.math.unsorted_segment_max(position, group, size)
    # The average of 1-based ranks first+1 .. last+1; exact below 2**23 examples.
    sorted_ranks = tf.cast(tf.gather(first + last, group), tf.float32) / 2.0 + 1.0
    ranks = tf.scatter_nd(order[:, None], sorted_ranks, [size])
    distinct = tf.reduce_sum(tf.cast(starts & sorted_valid, tf.int32))
    return ranks, distinct


@keras.saving.register_keras_serializable(package="tfplm")
class SpearmanCorrelation(keras.metrics.Metric):
    """Spearman rank correlation (GLUE's STS-B metric), as `scipy.stats.spearmanr`.

    Ranks need the whole evaluation set, so the metric stores every
    (label, prediction) pair in fixed buffers of `max_examples` slots per
    replica and ranks them in `result()` (average ranks for ties, then
    Pearson). Each replica writes only its own buffer row; the cross-replica
    SUM that Keras applies when reading a metric outside the replicas
    concatenates the rows exactly (see the module docstring). That works with
    `model.evaluate` under `MirroredStrategy`, `MultiWorkerMirroredStrategy`
    and `TPUStrategy` without custom reduction and with static shapes.

    Seeing more than `max_examples` examples on one replica is an error
    (raised by `result()`; NaN inside a compiled function): never a silently
    truncated score. NaN, like scipy, for fewer than two examples, constant
    labels or predictions, or a NaN input. A `sample_weight` of 0 leaves an
    example out (e.g. padding); any other weight counts it once.

    Args:
        max_examples: the most examples evaluated between resets (10,000 covers
            every STS-B split). Memory: 8 bytes per slot per replica.
        name, dtype: as for any Keras metric.

    Example:
        >>> m = SpearmanCorrelation()
        >>> m.update_state([1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0])
        >>> round(float(m.result()), 4)
        0.8
    """

    def __init__(self, max_examples=10_000, name="spearman_correlation", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.max_examples = max_examples
        self.num_replicas = _num_replicas()
        # One spare column per row takes the writes that do not fit.
        shape = (self.num_replicas, max_examples + 1)
        self.labels = self.add_variable(shape, "zeros", dtype="float32", name="labels")
        self.predictions = self.add_variable(shape, "zeros", dtype="float32", name="predictions")
        self.counts = self.add_variable((self.num_replicas,), "zeros", dtype="float32", name="counts")
        self.overflow = self.add_variable((), "zeros", dtype="float32", name="overflow")

    def update_state(self, y_true, y_pred, sample_weight=None):
        x, y = _scores(y_true, self.name, "label"), _scores(y_pred, self.name, "prediction")
        keep = _weights(sample_weight, x, "float32") != 0
        replica, row_mask = _replica_row(self.num_replicas)
        count = ops.sum(ops.convert_to_tensor(self.counts) * row_mask)
        slot = ops.cast(count, "int32") + ops.cumsum(ops.cast(keep, "int32")) - 1
        fits = ops.logical_and(keep, slot < self.max_examples)
        slot = ops.where(fits, slot, self.max_examples)
        index = ops.stack([ops.full_like(slot, replica), slot], axis=1)
        self.labels.assign(tf.tensor_scatter_nd_update(self.labels.value, index, x))
        self.predictions.assign(tf.tensor_scatter_nd_update(self.predictions.value, index, y))
        stored = ops.sum(ops.cast(fits, "float32"))
        self.counts.assign(self.counts + row_mask * stored)
        self.overflow.assign(self.overflow + ops.sum(ops.cast(keep, "float32")) - stored)

    def result(self):
        overflow = tf.convert_to_tensor(self.overflow)
        if tf.executing_eagerly() and float(overflow) > 0:
            raise ValueError(
                f"{self.name} could not keep {int(float(overflow))} examples: it holds "
                f"max_examples={self.max_examples} per replica; create it with max_examples "
                "of at least the evaluation set's size"
            )
        size = self.max_examples
        counts = ops.convert_to_tensor(self.counts)
        valid = ops.reshape(ops.arange(size, dtype="float32")[None, :] < counts[:, None], [-1])
        x = ops.reshape(ops.convert_to_tensor(self.labels)[:, :size], [-1])
        y = ops.reshape(ops.convert_to_tensor(self.predictions)[:, :size], [-1])
        rank_x, distinct_x = _average_ranks(x, valid)
        rank_y, distinct_y = _average_ranks(y, valid)
        n = ops.sum(counts)
        mask = ops.cast(valid, "float32")
        # Average ranks always have mean (n + 1) / 2.
        dx, dy = (rank_x - (n + 1) / 2) * mask, (rank_y - (n + 1) / 2) * mask
        r = ops.sum(dx * dy) / (ops.sqrt(ops.sum(dx * dx)) * ops.sqrt(ops.sum(dy * dy)))
        has_nan = ops.any(ops.logical_and(valid, ops.logical_or(ops.isnan(x), ops.isnan(y))))
        defined = ops.logical_and(ops.logical_and(distinct_x > 1, distinct_y > 1), ops.logical_not(has_nan))
        defined = ops.logical_and(defined, overflow == 0)
        return ops.where(defined, ops.clip(r, -1.0, 1.0), ops.cast(float("nan"), "float32"))

    def get_config(self):
        return {**super().get_config(), "max_examples": self.max_examples}
