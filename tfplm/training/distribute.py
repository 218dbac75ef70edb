"""tf.distribute strategies and precision policies by name."""

import json
import os

import keras
import tensorflow as tf
from absl import logging

STRATEGIES = ("default", "one_device", "mirrored", "multi_worker_mirrored", "tpu")


def make_strategy(name="default", tpu="", devices=None):
    """The named strategy.

    Args:
        name: one of STRATEGIES. "multi_worker_mirrored" reads the cluster from
            the TF_CONFIG environment variable.
        tpu: TPU address or name, for "tpu" ("" = the local TPU).
        devices: devices for "mirrored" (default: all GPUs, else the CPU).
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
        return tf.distribute.MultiWorkerMirroredStrategy()
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        return tf.distribute.TPUStrategy(resolver)
    raise ValueError(f"distribution_strategy={name!r}; expected one of {', '.join(STRATEGIES)}")


PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


def set_precision(name):
    """Sets the global Keras dtype policy; float16 gets loss scaling in `compile`."""
    if name not in PRECISIONS:
        raise ValueError(f"mixed_precision={name!r}; expected one of {', '.join(PRECISIONS)}")
    keras.mixed_precision.set_global_policy(name)
