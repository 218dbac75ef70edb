"""BERT's optimizer: warmup then linear decay, decoupled weight decay with exclusions."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tfplm.training import optimization


def test_schedule_warms_up_linearly_then_decays_linearly_to_the_end():
    config = optimization.OptimizerConfig(learning_rate=1e-3, warmup_steps=10)
    schedule = optimization.learning_rate_schedule(config, total_steps=110)
    lr = [float(schedule(step)) for step in range(111)]
    np.testing.assert_allclose(lr[:11], np.linspace(0, 1e-3, 11), rtol=1e-5, atol=1e-9)
    np.testing.assert_allclose(lr[10:], np.linspace(1e-3, 0, 101), rtol=1e-4, atol=1e-9)


def test_warmup_fraction_sets_warmup_steps():
    config = optimization.OptimizerConfig(learning_rate=2.0, warmup_fraction=0.25)
    schedule = optimization.learning_rate_schedule(config, total_steps=40)
    assert float(schedule(5)) == pytest.approx(1.0)
    assert float(schedule(10)) == pytest.approx(2.0)


def test_schedule_survives_serialization():
    config = optimization.OptimizerConfig(learning_rate=1e-3, warmup_steps=3, decay="polynomial", power=2.0)
    schedule = optimization.learning_rate_schedule(config, total_steps=20)
    restored = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule))
    for step in (0, 2, 3, 10, 19):
        assert float(restored(step)) == pytest.approx(float(schedule(step)))


def test_weight_decay_skips_biases_and_layer_norm():
    dense, norm = keras.layers.Dense(3), keras.layers.LayerNormalization()
    model = keras.Sequential([keras.Input((4,)), dense, norm])
    for w in model.weights:
        w.assign(np.ones(w.shape))
    config = optimization.OptimizerConfig(learning_rate=0.1, warmup_steps=0, decay="constant", weight_decay=0.5)
    optimizer = optimization.build_optimizer(config, total_steps=10)
    zeros = [np.zeros(w.shape, "float32") for w in model.trainable_weights]
    optimizer.apply_gradients(zip(zeros, model.trainable_weights))
    np.testing.assert_allclose(dense.kernel.numpy(), 1 - 0.1 * 0.5)  # decayed
    for weight in (dense.bias, norm.gamma, norm.beta):
        np.testing.assert_allclose(weight.numpy(), 1.0)


@pytest.mark.parametrize("name", ["adamw", "lamb"])
def test_optimizers_clip_the_global_norm(name):
    optimizer = optimization.build_optimizer(optimization.OptimizerConfig(name=name, clipnorm=1.0), 10)
    assert optimizer.global_clipnorm == 1.0


def test_bad_optimizer_names_are_clear_errors():
    with pytest.raises(ValueError, match="optimizer.name='sgdd'"):
        optimization.build_optimizer(optimization.OptimizerConfig(name="sgdd"), 10)
    with pytest.raises(ValueError, match="optimizer.decay='cosine'"):
        optimization.learning_rate_schedule(optimization.OptimizerConfig(decay="cosine"), 10)


@pytest.mark.parametrize("name", ["adamw", "lamb"])
def test_clipping_applies_to_the_gradient_summed_over_replicas(name, mirrored_strategy):
    # Replica gradients (3, 0) and (0, 4) sum to (3, 4), norm 5, clipped to (0.6, 0.8);
    # clipping each replica's share first (Keras 3's own order) would give (1, 1).
    # With beta_2 = 0 and epsilon = learning_rate >> |g| the first step is -g.
    config = optimization.OptimizerConfig(
        name=name, learning_rate=1e6, epsilon=1e6, beta_2=0.0, warmup_steps=0, decay="constant",
        weight_decay=0.0, clipnorm=1.0,
    )
    with mirrored_strategy.scope():
        variable = keras.Variable(np.zeros(2, "float32"))
        optimizer = optimization.build_optimizer(config, total_steps=10)
        optimizer.build([variable])
    shares = tf.constant([[3.0, 0.0], [0.0, 4.0]])

    @tf.function
    def step():
        def apply_share():
            share = shares[tf.distribute.get_replica_context().replica_id_in_sync_group]
            optimizer.apply_gradients([(share, variable)])

        mirrored_strategy.run(apply_share)

    step()
    np.testing.assert_allclose(variable.numpy(), [-0.6, -0.8], rtol=1e-5)


def _train_a_few_steps(make_optimizer, strategy=None):
    """Weights after six steps of `make_optimizer()` on a fixed regression, under `strategy`."""
    strategy = strategy or tf.distribute.get_strategy()
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(8, 5)).astype("float32"), rng.normal(size=(8, 3)).astype("float32")
    with strategy.scope():
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((5,)), keras.layers.Dense(4, "tanh"), keras.layers.Dense(3)])
        model.compile(make_optimizer(), "mse")
    model.fit(x, y, batch_size=4, epochs=3, verbose=0, shuffle=False)
    return [w.numpy() for w in model.weights]


@pytest.mark.parametrize("amsgrad", [False, True])
def test_fused_adamw_update_equals_keras_adamw(amsgrad, mirrored_strategy):
    kwargs = dict(learning_rate=0.05, weight_decay=0.1, beta_1=0.8, beta_2=0.9, epsilon=1e-3, amsgrad=amsgrad)
    expected = _train_a_few_steps(lambda: keras.optimizers.AdamW(**kwargs))
    assert not np.allclose(expected[0], _train_a_few_steps(lambda: keras.optimizers.SGD(0.05))[0])
    for strategy in (None, mirrored_strategy):
        actual = _train_a_few_steps(lambda: optimization.AdamW(**kwargs), strategy)
        for a, e in zip(actual, expected):
            np.testing.assert_allclose(a, e, rtol=1e-5, atol=1e-6)
