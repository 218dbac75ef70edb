"""Optimizers as in BERT: AdamW (or LAMB), linear warmup then decay, clipping."""

import dataclasses

import keras
from keras import ops

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
    decay: "linear", "polynomial" (with `power`) or "constant" after warmup.
    power: exponent of the polynomial decay.
    end_learning_rate: learning rate at the last step.
    clipnorm: global gradient-norm clipping; 0 disables it.
    """

    name: str = "adamw"
    learning_rate: float = 1e-4
    weight_decay: float = 0.01
    warmup_fraction: float = 0.1
    warmup_steps: int | None = None
    decay: str = "linear"
    power: float = 1.0
    end_learning_rate: float = 0.0
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-6
    clipnorm: float = 1.0


@keras.saving.register_keras_serializable(package="tfplm")
class WarmupSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warmup from 0 to `peak` over `warmup_steps`, then `decay(step - warmup)`."""

    def __init__(self, peak, warmup_steps, decay):
        self.peak = peak
        self.warmup_steps = warmup_steps
        self.decay = decay

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
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["decay"] = keras.optimizers.schedules.deserialize(config["decay"])
        return cls(**config)


def learning_rate_schedule(config, total_steps):
    """The warmup + decay schedule of `config` over `total_steps` steps."""
    warmup = config.warmup_steps
    if warmup is None:
        warmup = int(config.warmup_fraction * total_steps)
    if config.decay == "constant":
        decay = keras.optimizers.schedules.PolynomialDecay(
            config.learning_rate, 1, config.learning_rate
        )
    elif config.decay in ("linear", "polynomial"):
        decay = keras.optimizers.schedules.PolynomialDecay(
            config.learning_rate,
            max(total_steps - warmup, 1),
            config.end_learning_rate,
            power=1.0 if config.decay == "linear" else config.power,
        )
    else:
        raise ValueError(
            f"optimizer.decay={config.decay!r}; expected 'linear', 'polynomial' or 'constant'"
        )
    return WarmupSchedule(config.learning_rate, warmup, decay)


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
        optimizer = keras.optimizers.AdamW(**kwargs)
    elif config.name == "lamb":
        optimizer = keras.optimizers.Lamb(**kwargs)
    else:
        raise ValueError(f"optimizer.name={config.name!r}; expected 'adamw' or 'lamb'")
    optimizer.exclude_from_weight_decay(var_names=NO_DECAY_NAMES)
    return optimizer
