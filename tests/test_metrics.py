"""GLUE metrics against sklearn / scipy, streamed in uneven batches and under MirroredStrategy."""

import keras
import numpy as np
import pytest
import scipy.stats
import sklearn.metrics
import tensorflow as tf

from tfplm import metrics

# Uneven batch sizes, a 1-example batch included.
BATCHES = (7, 1, 13, 5, 16, 3)


def stream(metric, y_true, y_pred, sample_weight=None):
    """Feeds the data in batches of BATCHES sizes (cycled); returns the result."""
    start, i = 0, 0
    while start < len(y_true):
        end = start + BATCHES[i % len(BATCHES)]
        weight = None if sample_weight is None else sample_weight[start:end]
        metric.update_state(y_true[start:end], y_pred[start:end], sample_weight=weight)
        start, i = end, i + 1
    return float(metric.result())


def logits(rng, n, classes):
    return rng.normal(size=(n, classes)).astype("float32")


@pytest.mark.parametrize("classes", [2, 3])
def test_matthews_matches_sklearn_on_argmax_of_scores(classes):
    rng = np.random.default_rng(classes)
    y, scores = rng.integers(0, classes, 101), logits(rng, 101, classes)
    got = stream(metrics.MatthewsCorrelation(num_classes=classes), y, scores)
    assert got == pytest.approx(sklearn.metrics.matthews_corrcoef(y, scores.argmax(1)), abs=1e-6)


@pytest.mark.parametrize("from_logits, threshold", [(False, 0.5), (True, 0.0)])
def test_matthews_thresholds_single_scores(from_logits, threshold):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 90)
    scores = (rng.random((90, 1)) - (0.5 - threshold)).astype("float32")
    got = stream(metrics.MatthewsCorrelation(from_logits=from_logits), y, scores)
    want = sklearn.metrics.matthews_corrcoef(y, (scores[:, 0] > threshold).astype(int))
    assert got == pytest.approx(want, abs=1e-6)


def test_matthews_with_sample_weights_matches_sklearn():
    rng = np.random.default_rng(2)
    y, scores = rng.integers(0, 2, 80), logits(rng, 80, 2)
    weights = rng.random(80).astype("float32")
    got = stream(metrics.MatthewsCorrelation(), y, scores, weights)
    want = sklearn.metrics.matthews_corrcoef(y, scores.argmax(1), sample_weight=weights)
    assert got == pytest.approx(want, abs=1e-5)


@pytest.mark.parametrize(
    "y, predicted",
    [
        ([0, 1, 1, 0, 1], [1, 1, 1, 1, 1]),  # constant predictions
        ([1, 1, 1, 1, 1], [0, 1, 0, 1, 1]),  # one class present
        ([0, 0, 0, 0], [0, 0, 0, 0]),  # both constant
        ([0, 1, 0, 1], [1, 0, 1, 0]),  # perfectly wrong
    ],
)
@pytest.mark.filterwarnings("ignore:A single label was found")
def test_matthews_degenerate_cases_match_sklearn(y, predicted):
    scores = np.eye(2, dtype="float32")[predicted]
    got = stream(metrics.MatthewsCorrelation(), np.array(y), scores)
    assert got == pytest.approx(sklearn.metrics.matthews_corrcoef(y, predicted), abs=1e-6)


def test_matthews_stays_exact_with_a_rare_class_in_many_examples():
    y = np.zeros(20_000, dtype=int)
    y[:3] = 1
    predicted = np.zeros_like(y)
    predicted[1:5] = 1
    metric = metrics.MatthewsCorrelation()
    metric.update_state(y, np.eye(2, dtype="float32")[predicted])
    assert float(metric.result()) == pytest.approx(sklearn.metrics.matthews_corrcoef(y, predicted), abs=1e-6)


@pytest.mark.parametrize(
    "make_scores, from_logits",
    [
        (lambda s: s, False),  # [B, 2] logits: argmax
        (lambda s: (s[:, 1] - s[:, 0])[:, None], True),  # [B, 1] logit
        (lambda s: 1 / (1 + np.exp(s[:, 0] - s[:, 1])), False),  # [B] probability
    ],
)
def test_f1_matches_sklearn(make_scores, from_logits):
    rng = np.random.default_rng(3)
    y, raw = rng.integers(0, 2, 97), logits(rng, 97, 2)
    got = stream(metrics.F1Score(from_logits=from_logits), y, make_scores(raw).astype("float32"))
    assert got == pytest.approx(sklearn.metrics.f1_score(y, raw.argmax(1)), abs=1e-6)


def test_f1_with_sample_weights_matches_sklearn():
    rng = np.random.default_rng(4)
    y, scores = rng.integers(0, 2, 64), logits(rng, 64, 2)
    weights = rng.random(64).astype("float32")
    got = stream(metrics.F1Score(), y, scores, weights)
    assert got == pytest.approx(sklearn.metrics.f1_score(y, scores.argmax(1), sample_weight=weights), abs=1e-6)


@pytest.mark.parametrize(
    "y, predicted",
    [
        ([0, 1, 1, 0], [0, 0, 0, 0]),  # no positive predictions
        ([0, 0, 0, 0], [0, 0, 0, 0]),  # no positives at all
        ([1, 1, 1], [1, 1, 1]),  # one class, all right
    ],
)
def test_f1_degenerate_cases_match_sklearn_zero_division(y, predicted):
    got = stream(metrics.F1Score(), np.array(y), np.eye(2, dtype="float32")[predicted])
    assert got == sklearn.metrics.f1_score(y, predicted, zero_division=0)


def test_f1_of_another_class_matches_sklearn_per_class_f1():
    rng = np.random.default_rng(5)
    y, scores = rng.integers(0, 3, 70), logits(rng, 70, 3)
    got = stream(metrics.F1Score(positive_class=2), y, scores)
    want = sklearn.metrics.f1_score(y, scores.argmax(1), labels=[2], average=None)[0]
    assert got == pytest.approx(want, abs=1e-6)


def regression_data(seed, n=203, offset=0.0):
    """STS-B-like scores in [0, 5] with many ties (one decimal), as float32."""
    rng = np.random.default_rng(seed)
    y = np.round(rng.random(n) * 5, 1).astype("float32") + offset
    pred = np.round(y - offset + rng.normal(size=n), 1).astype("float32") + offset
    return y, pred


@pytest.mark.parametrize("shape", ["[B]", "[B, 1]"])
def test_pearson_matches_scipy(shape):
    y, pred = regression_data(6)
    got = stream(metrics.PearsonCorrelation(), y, pred if shape == "[B]" else pred[:, None])
    assert got == pytest.approx(scipy.stats.pearsonr(y, pred)[0], abs=1e-6)


def test_pearson_is_stable_for_large_offsets():
    # Raw sums of squares in float32 lose every digit here; centred moments do not.
    y, pred = regression_data(7, offset=4000.0)
    got = stream(metrics.PearsonCorrelation(), y, pred)
    want = scipy.stats.pearsonr(y.astype("float64"), pred.astype("float64"))[0]
    assert got == pytest.approx(want, abs=1e-4)


@pytest.mark.parametrize("shape", ["[B]", "[B, 1]"])
def test_spearman_matches_scipy_with_ties(shape):
    y, pred = regression_data(8)
    assert len(np.unique(y)) < len(y) and len(np.unique(pred)) < len(pred)
    got = stream(metrics.SpearmanCorrelation(max_examples=300), y, pred if shape == "[B]" else pred[:, None])
    assert got == pytest.approx(scipy.stats.spearmanr(y, pred)[0], abs=1e-6)


CORRELATIONS = {
    "pearson": (metrics.PearsonCorrelation, lambda y, p: scipy.stats.pearsonr(y, p)[0]),
    "spearman": (metrics.SpearmanCorrelation, lambda y, p: scipy.stats.spearmanr(y, p)[0]),
}


@pytest.mark.parametrize("name", sorted(CORRELATIONS))
@pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")
def test_correlations_are_nan_like_scipy_for_constant_input(name):
    metric_class, reference = CORRELATIONS[name]
    y = np.array([0.1, 0.7, 2.0, 3.3, 4.9], "float32")
    constant = np.full(5, 0.1, "float32")  # 0.1 is inexact in binary: its mean is not 0.1
    for labels, predictions in ((y, constant), (constant, y)):
        assert np.isnan(reference(labels, predictions))
        assert np.isnan(stream(metric_class(), labels, predictions))


@pytest.mark.parametrize("name", sorted(CORRELATIONS))
def test_correlations_are_nan_for_fewer_than_two_examples(name):
    metric = CORRELATIONS[name][0]()
    assert np.isnan(float(metric.result()))
    metric.update_state([1.0], [2.0])
    assert np.isnan(float(metric.result()))
    metric.update_state([2.0], [3.0])
    assert float(metric.result()) == pytest.approx(1.0)


@pytest.mark.parametrize("name", sorted(CORRELATIONS))
def test_correlations_leave_out_zero_weight_examples(name):
    metric_class, reference = CORRELATIONS[name]
    y, pred = regression_data(9, n=60)
    weights = (np.arange(60) % 3 != 0).astype("float32")
    got = stream(metric_class(), y, pred, weights)
    assert got == pytest.approx(reference(y[weights > 0], pred[weights > 0]), abs=1e-6)


def test_spearman_raises_when_it_sees_more_than_max_examples():
    metric = metrics.SpearmanCorrelation(max_examples=10)
    metric.update_state(np.arange(8.0), np.arange(8.0))
    metric.update_state(np.arange(5.0), np.arange(5.0))
    with pytest.raises(ValueError, match="could not keep 3 examples: it holds max_examples=10 per replica"):
        metric.result()
    metric.reset_state()
    metric.update_state(np.arange(10.0), -np.arange(10.0))
    assert float(metric.result()) == pytest.approx(-1.0)


def test_correlations_reject_more_than_one_prediction_per_example():
    with pytest.raises(ValueError, match=r"one prediction per example, shaped \[B\] or \[B, 1\]"):
        metrics.PearsonCorrelation().update_state(np.zeros(4), np.zeros((4, 2)))


@pytest.mark.parametrize(
    "metric",
    [
        metrics.MatthewsCorrelation(num_classes=3, from_logits=True, name="mcc"),
        metrics.F1Score(positive_class=0, from_logits=True, name="f1_neg"),
        metrics.PearsonCorrelation(name="pearson"),
        metrics.SpearmanCorrelation(max_examples=123, name="spearman"),
    ],
    ids=lambda m: type(m).__name__,
)
def test_metrics_serialize_with_their_arguments(metric):
    config = metric.get_config()
    restored = keras.metrics.deserialize(keras.metrics.serialize(metric))
    assert type(restored) is type(metric)
    assert restored.get_config() == config


@pytest.mark.parametrize("name", sorted(CORRELATIONS))
def test_reset_state_forgets_earlier_examples(name):
    metric_class, reference = CORRELATIONS[name]
    metric = metric_class()
    y, pred = regression_data(10, n=30)
    stream(metric, y, -pred)
    metric.reset_state()
    assert stream(metric, y, pred) == pytest.approx(reference(y, pred), abs=1e-6)


def test_metric_created_outside_the_strategy_says_so(mirrored_strategy):
    metric = metrics.PearsonCorrelation()
    with pytest.raises(ValueError, match=r"created for 1 replica\(s\) but runs under 2"):
        mirrored_strategy.run(lambda: metric.update_state([1.0, 2.0], [1.0, 2.0]))


def test_evaluate_under_mirrored_strategy_matches_sklearn_and_scipy(mirrored_strategy):
    rng = np.random.default_rng(11)
    n = 97  # batches of 16: the last global batch has one example, so one replica gets none
    features = rng.normal(size=(n, 4)).astype("float32")
    classes = rng.integers(0, 2, n)
    scores = np.round(rng.random(n) * 5, 1).astype("float32")
    with mirrored_strategy.scope():
        keras.utils.set_random_seed(0)
        inputs = keras.Input((4,))
        hidden = keras.layers.Dense(8, activation="relu")(inputs)
        model = keras.Model(
            inputs, {"label": keras.layers.Dense(2)(hidden), "score": keras.layers.Dense(1)(hidden)}
        )
        model.compile(
            loss={"label": keras.losses.SparseCategoricalCrossentropy(from_logits=True), "score": "mse"},
            metrics={
                "label": [metrics.MatthewsCorrelation(), metrics.F1Score()],
                "score": [metrics.PearsonCorrelation(), metrics.SpearmanCorrelation(max_examples=200)],
            },
        )
    dataset = tf.data.Dataset.from_tensor_slices((features, {"label": classes, "score": scores})).batch(16)
    got = model.evaluate(dataset, return_dict=True, verbose=0)

    outputs = model.predict(features, verbose=0)
    predicted, predicted_scores = outputs["label"].argmax(1), outputs["score"][:, 0]
    assert len(set(predicted)) == 2, "the test needs both classes predicted"
    assert got["label_matthews_correlation"] == pytest.approx(
        sklearn.metrics.matthews_corrcoef(classes, predicted), abs=1e-5
    )
    assert got["label_f1"] == pytest.approx(sklearn.metrics.f1_score(classes, predicted), abs=1e-5)
    assert got["score_pearson_correlation"] == pytest.approx(
        scipy.stats.pearsonr(scores, predicted_scores)[0], abs=1e-5
    )
    assert got["score_spearman_correlation"] == pytest.approx(
        scipy.stats.spearmanr(scores, predicted_scores)[0], abs=1e-5
    )


def test_correlations_compile_with_xla():
    # Static shapes throughout, so the metrics can live in a jit-compiled eval step.
    y, pred = regression_data(12, n=40)
    pearson, spearman = metrics.PearsonCorrelation(), metrics.SpearmanCorrelation(max_examples=64)

    @tf.function(jit_compile=True)
    def step(y, pred):
        pearson.update_state(y, pred)
        spearman.update_state(y, pred)
        return pearson.result(), spearman.result()

    step(y[:25], pred[:25])
    got = [float(v) for v in step(y[25:], pred[25:])]
    assert got == pytest.approx([scipy.stats.pearsonr(y, pred)[0], scipy.stats.spearmanr(y, pred)[0]], abs=1e-6)
