"""Optimizers as in BERT: AdamW (or LAMB), linear warmup then decay, clipping."""

import dataclasses
from typing import Annotated

import keras
import tensorflow as tf
from keras import ops

from tfplm.config import Range

# Variable names (regex search) that get no weight decay: biases and LayerNorm.
NO_DECAY_NAMES = ["bias", "gamma", "beta"]


@dataclasses.dataclass
class OptimizerConfig:
    """Attributes:
    name: "adamw" or "lamb" (for large batches).
    learning_rate: peak learning rate, reached at the end of warmup.
    weight_decay: decoupled weight decay (not on biases and LayerNorm).
    warmup_fraction: fraction of the training steps spent warming up linearly.
    warmup_steps: warmup length in steps; when set, overrides warmup_fraction.
    decay: after warmup, "linear", "polynomial" (with `power`), "constant"
        or "inverse_sqrt" (the Transformer's: the peak times
        sqrt(warmup_steps / step)).
    power: exponent of the polynomial decay.
    end_learning_rate: learning rate at the last step.
    beta_1, beta_2, epsilon: Adam's moment decay rates and epsilon.
    clipnorm: global gradient-norm clipping; 0 disables it.
    """

    name: str = "adamw"
    learning_rate: Annotated[float, Range(min=0)] = 1e-4
    weight_decay: Annotated[float, Range(min=0)] = 0.01
    warmup_fraction: Annotated[float, Range(min=0, max=1)] = 0.1
    warmup_steps: Annotated[int, Range(min=0)] | None = None
    decay: str = "linear"
    power: Annotated[float, Range(min=0)] = 1.0
    end_learning_rate: Annotated[float, Range(min=0)] = 0.0
    beta_1: Annotated[float, Range(min=0, max=1)] = 0.9
    beta_2: Annotated[float, Range(min=0, max=1)] = 0.999
    epsilon: Annotated[float, Range(min=0)] = 1e-6
    clipnorm: Annotated[float, Range(min=0)] = 1.0


@keras.saving.register_keras_serializable(package="tfplm")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to `peak` over `warmup_steps`, then `decay(step - warmup)`.

    Args:
        peak: the learning rate at the end of warmup.
        warmup_steps: steps of linear warmup.
        decay: a schedule of the steps after warmup.
        total_steps: the optimizer steps this schedule is made for, or None.
            When set, a zoo model's `fit` checks that it runs that many steps
            (`ScheduleCheck`).
    """

    def __init__(self, peak, warmup_steps, decay, total_steps=None):
        self.peak = peak
        self.warmup_steps = warmup_steps
        self.decay = decay
        self.total_steps = total_steps

    def __call__(self, step):
        step = ops.cast(step, "float32")
        warmup = self.peak * step / max(self.warmup_steps, 1)
        decayed = self.decay(step - self.warmup_steps)
        return ops.where(step < self.warmup_steps, warmup, decayed)

    def get_config(self):
        return {
            "peak": self.peak,
            "warmup_steps": self.warmup_steps,
            "decay": keras.optimizers.schedules.serialize(self.decay),
            "total_steps": self.total_steps,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["decay"] = keras.optimizers.schedules.deserialize(config["decay"])
        return cls(**config)


@keras.saving.register_keras_serializable(package="tfplm")
class InverseSquareRootDecay(keras.optimizers.schedules.LearningRateSchedule):
    """`peak * sqrt(warmup_steps / (warmup_steps + step))`: after a warmup of
    `warmup_steps`, the Transformer's schedule (Vaswani et al., 2017, eq. 3)
    with the peak as a parameter instead of d_model ** -0.5."""

    def __init__(self, peak, warmup_steps):
        self.peak = peak
        self.warmup_steps = warmup_steps

    def __call__(self, step):
        warmup = float(max(self.warmup_steps, 1))
        return self.peak * ops.sqrt(warmup / (warmup + ops.maximum(ops.cast(step, "float32"), 0.0)))

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps}


def learning_rate_schedule(config, total_steps):
    """The warmup + decay schedule of `config` over `total_steps` steps."""
    warmup = config.warmup_steps
    if warmup is None:
        warmup = int(config.warmup_fraction * total_steps)
    if config.decay == "constant":
        decay = keras.optimizers.schedules.PolynomialDecay(
            config.learning_rate, 1, config.learning_rate
        )
    elif config.decay == "inverse_sqrt":
        decay = InverseSquareRootDecay(config.learning_rate, warmup)
    elif config.decay in ("linear", "polynomial"):
        decay = keras.optimizers.schedules.PolynomialDecay(
            config.learning_rate,
            max(total_steps - warmup, 1),
            config.end_learning_rate,
            power=1.0 if config.decay == "linear" else config.power,
        )
    else:
        raise ValueError(
            f"optimizer.decay={config.decay!r}; expected 'linear', 'polynomial', 'constant' or 'inverse_sqrt'"
        )
    return WarmupSchedule(config.learning_rate, warmup, decay, total_steps=total_steps)


def schedule_steps(optimizer):
    """The steps `optimizer`'s learning-rate schedule is made for (see
    `WarmupSchedule.total_steps`), or None when it does not say."""
    # Keras 3 keeps the schedule itself only in this attribute; the public
    # `learning_rate` is its current value.
    schedule = getattr(optimizer, "_learning_rate", None)
    return getattr(schedule, "total_steps", None) if isinstance(schedule, WarmupSchedule) else None


class ScheduleCheck(keras.callbacks.Callback):
    """Stops a `fit` whose steps disagree with the learning-rate schedule.

    A schedule made for S steps (`build_optimizer(config, S)`) warms up and
    decays over exactly S steps. `fit(epochs=E)` with P steps per epoch runs
    E x P (counting epochs before `initial_epoch` as run). A fit of whole
    passes over a dataset must run S: with fewer, training ends with the
    learning rate still high. A fit given `steps_per_epoch` is a budget of
    steps (a trainer's loops, a benchmark) and may stop early, but no fit may
    run past S, where the learning rate has reached its end.

    The check happens when training begins or, when Keras cannot count the
    steps of an epoch in advance (a dataset of unknown length without
    `steps_per_epoch`), at the end of the first epoch, from the optimizer's
    step counter (Keras 3.15 advances it once more than there are batches in
    such an epoch, on the call that finds the data's end). Zoo models add this
    callback to every `fit`; optimizers without a `WarmupSchedule.total_steps`
    are not checked.

    Args:
        budget: `fit` was given `steps_per_epoch`: fewer steps than the
            schedule's are allowed.
    """

    def __init__(self, budget=False):
        super().__init__()
        self.budget = budget
        self.total = None
        self.start = 0

    def on_train_begin(self, logs=None):
        self.total = schedule_steps(self.model.optimizer)
        self.start = int(self.model.optimizer.iterations.numpy())
        if self.total and self.params.get("steps"):
            self._check(self.params["steps"], "")
            self.total = None  # checked

    def on_epoch_end(self, epoch, logs=None):
        if self.total:
            self._check(int(self.model.optimizer.iterations.numpy()) - self.start, ", counted in the first epoch")
            self.total = None

    def _check(self, steps_per_epoch, how):
        epochs = self.params.get("epochs", 1)
        steps = epochs * steps_per_epoch
        if steps > self.total or (steps < self.total and not self.budget):
            raise ValueError(
                f"fit runs {steps} optimizer steps ({epochs} epochs x {steps_per_epoch} steps{how}) but the "
                f"learning-rate schedule was made for {self.total}; compile for the steps fit runs, e.g. "
                f"task.compile(model, steps={steps}) or build_optimizer(config, total_steps={steps}), "
                f"or fit for {self.total} steps"
            )


class _ClipsTheSummedGradient:
    """Clips the gradient of the global batch, not each replica's share of it.

    Keras 3 (TensorFlow backend, checked with 3.15) clips in
    `_backend_apply_gradients` and sums over replicas only afterwards, in
    `_all_reduce_sum_gradients`. Under MirroredStrategy or
    MultiWorkerMirroredStrategy every replica then clips its own part of the
    gradient to `global_clipnorm`, so N replicas do not train like one device
    with the same global batch (tf.keras 2 refused clipping under a strategy
    for this reason). Here, with several replicas, clipping waits until the
    gradients are summed; with one replica nothing changes.
    """

    def _clip_gradients(self, grads):
        if _replicas_in_sync() > 1:
            return grads  # clipped in _all_reduce_sum_gradients, after the sum
        return super()._clip_gradients(grads)

    def _all_reduce_sum_gradients(self, grads_and_vars):
        grads_and_vars = super()._all_reduce_sum_gradients(grads_and_vars)
        if _replicas_in_sync() == 1 or not grads_and_vars:
            return grads_and_vars
        grads, variables = zip(*grads_and_vars)
        return list(zip(super()._clip_gradients(list(grads)), variables))


def _replicas_in_sync():
    context = tf.distribute.get_replica_context()
    return context.num_replicas_in_sync if context is not None else 1


def _handle(variable):
    """The resource handle of a Keras variable (or of a tf.Variable, which
    `tf.distribute` passes to the update of each replica's copy)."""
    return (variable.value if isinstance(variable, keras.Variable) else variable).handle


@keras.saving.register_keras_serializable(package="tfplm")
class AdamW(_ClipsTheSummedGradient, keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` that clips the summed gradient under a strategy,
    and updates each dense weight with TensorFlow's fused Adam kernel.

    Keras's Adam is about ten whole-tensor ops per weight; TensorFlow's
    `ResourceApplyAdam` computes the same formula (Kingma & Ba's, epsilon
    added to sqrt(v) as in Keras) in one pass over the weight and its two
    moments: the update of bert_small's 29M weights took a third of the time
    (BENCHMARKS.md). Sparse gradients and AMSGrad keep Keras's update; weight
    decay stays Keras's (decoupled, before the update).
    """

    def update_step(self, gradient, variable, learning_rate):
        if self.amsgrad or isinstance(gradient, tf.IndexedSlices) or keras.backend.backend() != "tensorflow":
            return super().update_step(gradient, variable, learning_rate)
        dtype = variable.dtype
        step = tf.cast(self.iterations + 1, dtype)
        index = self._get_variable_index(variable)
        beta_1, beta_2 = tf.cast(self.beta_1, dtype), tf.cast(self.beta_2, dtype)
        tf.raw_ops.ResourceApplyAdam(
            var=_handle(variable),
            m=_handle(self._momentums[index]),
            v=_handle(self._velocities[index]),
            beta1_power=tf.pow(beta_1, step),
            beta2_power=tf.pow(beta_2, step),
            lr=tf.cast(learning_rate, dtype),
            beta1=beta_1,
            beta2=beta_2,
            epsilon=tf.cast(self.epsilon, dtype),
            grad=tf.cast(gradient, dtype),
        )


@keras.saving.register_keras_serializable(package="tfplm")
class Lamb(_ClipsTheSummedGradient, keras.optimizers.Lamb):
    """`keras.optimizers.Lamb` that clips the summed gradient under a strategy."""


def build_optimizer(config, total_steps):
    """A Keras optimizer for `config` (an `OptimizerConfig`) and `total_steps` steps."""
    kwargs = dict(
        learning_rate=learning_rate_schedule(config, total_steps),
        weight_decay=config.weight_decay,
        beta_1=config.beta_1,
        beta_2=config.beta_2,
        epsilon=config.epsilon,
        global_clipnorm=config.clipnorm or None,
    )
    if config.name == "adamw":
        optimizer = AdamW(**kwargs)
    elif config.name == "lamb":
        optimizer = Lamb(**kwargs)
    else:
        raise ValueError(f"optimizer.name={config.name!r}; expected 'adamw' or 'lamb'")
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY_NAMES)
    return optimizer
