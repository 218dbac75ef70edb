"""tf.distribute strategies and precision policies by name."""

import contextlib
import json
import os

import keras
import tensorflow as tf
from absl import logging

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker_mirrored", "tpu")


class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """`tf.distribute.MultiWorkerMirroredStrategy` that Keras 3's `fit` can train under.

    Reads the cluster from TF_CONFIG like its base class. Keras 3 (checked:
    3.15 with TF 2.21) calls `Strategy.reduce` in two ways that TensorFlow's
    multi-worker implementation rejects, so `fit` fails before its first step:

    * on a whole nested batch, `reduce("MEAN", (x, y, sample_weight), axis=None)`,
      to build the metrics (keras-team/keras#20329: "Attempt to convert a value
      ({...}) with an unsupported type (<class 'dict'>) to a Tensor");
    * on the scalar step logs with `axis=0` (tensorflow/tensorflow#72388:
      "Invalid reduction dimension 0 for input with 0 dimensions").

    Here a nested value is reduced leaf by leaf, as MirroredStrategy does, and
    a scalar, having no batch axis, across replicas only, as Keras does for
    MirroredStrategy's logs. `make_strategy("multi_worker_mirrored")` returns one.

    Example:
        >>> # every worker, with its own index:
        >>> # TF_CONFIG='{"cluster": {"worker": ["h1:2222", "h2:2222"]}, "task": {"type": "worker", "index": 0}}'
        >>> strategy = MultiWorkerMirroredStrategy()  # doctest: +SKIP
        >>> trainer.run_experiment(task, "train", "gs://bucket/run", strategy)  # doctest: +SKIP
    """

    def reduce(self, reduce_op, value, axis=None):
        if tf.nest.is_nested(value):
            return tf.nest.map_structure(lambda v: self.reduce(reduce_op, v, axis), value)
        if axis is not None and _rank(self.experimental_local_results(value)[0]) == 0:
            axis = None
        return super().reduce(reduce_op, value, axis)


def _rank(value):
    shape = getattr(value, "shape", None)
    return None if shape is None else tf.TensorShape(shape).rank


def make_strategy(name="default", tpu="", devices=None):
    """The named strategy.

    Args:
        name: one of STRATEGIES. "multi_worker_mirrored" reads the cluster from
            the TF_CONFIG environment variable.
        tpu: for "tpu": the TPU's name or grpc:// address, "local" on a TPU VM,
            "" = found automatically (Colab, $TPU_NAME).
        devices: devices for "mirrored" (default: all GPUs, else the CPU).

    Example:
        >>> strategy = make_strategy("mirrored")  # doctest: +SKIP
        >>> with strategy.scope():  # doctest: +SKIP
        ...     model = task.build_model()
    """
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "one_device":
        gpus = tf.config.list_logical_devices("GPU")
        return tf.distribute.OneDeviceStrategy(gpus[0].name if gpus else "/cpu:0")
    if name == "mirrored":
        return tf.distribute.MirroredStrategy(devices)
    if name == "multi_worker_mirrored":
        if "TF_CONFIG" not in os.environ:
            raise ValueError(
                "multi_worker_mirrored needs the cluster in TF_CONFIG, e.g. "
                '{"cluster": {"worker": ["host1:port", "host2:port"]}, '
                '"task": {"type": "worker", "index": 0}}'
            )
        logging.info("cluster: %s", json.loads(os.environ["TF_CONFIG"]).get("cluster"))
        return MultiWorkerMirroredStrategy()
    if name == "tpu":
        # As TensorFlow documents it (tf.distribute.TPUStrategy).
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        except ValueError as error:
            raise ValueError(
                f"distribution_strategy=tpu found no TPU with tpu={tpu!r} ({error}); "
                "pass --tpu=NAME, a grpc:// address, or 'local' on a TPU VM"
            ) from error
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"distribution_strategy={name!r}; expected one of {', '.join(STRATEGIES)}")


PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
_BFLOAT16_CPU_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_bfloat16_flags(cpuinfo="/proc/cpuinfo"):
    """The CPU's bfloat16 matmul features ("amx_bf16", "avx512_bf16") that Linux reports."""
    try:
        with open(cpuinfo, encoding="utf-8") as f:
            flags = next((line.split(":", 1)[1].split() for line in f if line.startswith("flags")), [])
    except OSError:
        return ()
    return tuple(flag for flag in _BFLOAT16_CPU_FLAGS if flag in flags)


def resolve_precision(name, distribution_strategy="default"):
    """(policy name, why) for a `mixed_precision` setting; "auto" picks by hardware.

    "auto" is mixed_bfloat16 on TPUs and on CPUs with bfloat16 matmul units
    (AMX or AVX512-BF16: 1.6-2.5x faster than float32 here, see
    BENCHMARKS.md), else float32. On GPUs it stays float32: choose
    mixed_float16 (or mixed_bfloat16 on Ampere and later) yourself.
    """
    if name not in PRECISIONS:
        raise ValueError(f"mixed_precision={name!r}; expected one of {', '.join(PRECISIONS)}")
    if name != "auto":
        return name, "as configured"
    if distribution_strategy == "tpu":
        return "mixed_bfloat16", "TPUs compute in bfloat16"
    if tf.config.list_physical_devices("GPU"):
        return "float32", "a GPU is present: set mixed_float16 (or mixed_bfloat16 on Ampere+) to use it"
    flags = cpu_bfloat16_flags()
    if flags:
        return "mixed_bfloat16", f"this CPU has {' and '.join(flags)}"
    return "float32", "this CPU has no bfloat16 matmul units"


@contextlib.contextmanager
def precision(name, distribution_strategy="default"):
    """Sets the global Keras dtype policy for the block ("auto": see
    `resolve_precision`), logs the choice and restores the previous policy
    after it; float16 gets loss scaling in `compile`. Yields (policy, why).

    Example:
        >>> with precision("mixed_bfloat16"):  # doctest: +SKIP
        ...     model = task.build_model()  # bfloat16 compute, float32 weights
    """
    policy, why = resolve_precision(name, distribution_strategy)
    logging.info("mixed_precision=%s: %s (%s)", name, policy, why)
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield policy, why
    finally:
        keras.mixed_precision.set_global_policy(previous)
