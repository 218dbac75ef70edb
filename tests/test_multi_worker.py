"""multi_worker_mirrored: two worker processes on 127.0.0.1 train like one process.

Both workers run the real binary (`tools/train.py --distribution_strategy=
multi_worker_mirrored`) with the cluster in TF_CONFIG; each reads its own half
of every global batch (per-worker sharding through `tf.distribute.InputContext`).
"""

import json
import os
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from test_training import REPO, final_weights, overrides, read_log, records  # noqa: F401 (records: a fixture)
from tfplm import tasks
from tfplm.training import trainer

WORKERS = 2
TIMEOUT_S = 300  # for both workers together; they need well under a minute on 2 idle cores

# Adam divides every update by sqrt(v): where a gradient is a sum of terms that
# nearly cancel, the last float bit of the all-reduce decides the sign of a
# ±lr step, so with the default epsilon weights only agree to within 2·lr per
# step (see test_mirrored_strategy_matches_the_default_strategy), a bound any
# other run with the same schedule also meets. With epsilon ≫ sqrt(v) the
# update is lr·m̂/epsilon, linear in the gradient, and summation order stays at
# rounding level: weights and losses can be compared tightly. Per-replica
# gradient clipping or a wrong data shard fails the comparison (measured: 4-10×
# over tolerance in the weights, 20-150× in the losses).
# float32: bfloat16 (the default on CPUs with AMX) rounds each step's products, so
# the two summation orders would differ by more than rounding level.
LINEAR_ADAM = ",trainer.optimizer.epsilon=1.0,trainer.optimizer.learning_rate=0.1,runtime.mixed_precision=float32"
ATOL = 2e-5  # weights; measured: 2.6e-6 between the cluster and one process


def free_loopback_ports(n):
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def run_workers(args, model_dir, log_dir):
    """Runs `tools/train.py args` as every worker of a loopback cluster; returns their logs."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_loopback_ports(WORKERS)]}
    # gRPC honours proxy variables; the cluster is on loopback only.
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    processes, logs = [], []
    try:
        for index in range(WORKERS):
            env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
            logs.append(log_dir / f"worker_{index}.log")
            with open(logs[-1], "w") as log:
                processes.append(
                    subprocess.Popen(
                        [sys.executable, os.path.join(REPO, "tools", "train.py"), *args, f"--model_dir={model_dir}"],
                        env=dict(env),
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
        deadline = time.monotonic() + TIMEOUT_S
        for process in processes:
            process.wait(timeout=max(deadline - time.monotonic(), 1))
    except subprocess.TimeoutExpired:
        pytest.fail(f"workers still running after {TIMEOUT_S}s; worker 0 log:\n{logs[0].read_text()[-3000:]}")
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for index, process in enumerate(processes):
        assert process.returncode == 0, f"worker {index} failed:\n{logs[index].read_text()[-3000:]}"
    return [log.read_text() for log in logs]


def test_two_workers_train_like_one_process_with_the_same_global_batch(tmp_path, records, minilm_dir):
    params = overrides(records, str(minilm_dir / "vocab.txt"), steps=4, batch=8) + LINEAR_ADAM
    model_dir = tmp_path / "cluster"
    run_workers(
        [
            "--experiment=bert/pretraining",
            "--mode=train_and_eval",
            "--distribution_strategy=multi_worker_mirrored",
            f"--params_override={params}",
        ],
        model_dir,
        tmp_path,
    )
    # The chief (worker 0) writes model_dir; worker 1 its own copy of the checkpoints.
    chief_log, other_log = read_log(model_dir), read_log(model_dir / "worker_1")
    assert [e["step"] for e in chief_log] == [e["step"] for e in other_log] == [2, 4]
    assert [e["loss"] for e in other_log] == [e["loss"] for e in chief_log]
    chief, other = final_weights(model_dir), final_weights(model_dir / "worker_1")
    assert len(chief) == 45  # bert_tiny's trainable variables (the MLM output shares the embeddings)
    for name in chief:
        np.testing.assert_array_equal(other[name], chief[name], err_msg=name)
    chief_eval = json.loads((model_dir / "eval_results.json").read_text())
    assert chief_eval["step"] == 4

    # One process, the default strategy, the same global batch of 8, the same seed.
    single_dir = tmp_path / "single"
    single_eval = trainer.run_experiment(tasks.get("bert/pretraining", overrides=params), "train_and_eval", str(single_dir))
    single_log = read_log(single_dir)
    for key in ("loss", "val_loss"):
        np.testing.assert_allclose([e[key] for e in chief_log], [e[key] for e in single_log], rtol=2e-5, err_msg=key)
    assert chief_eval["metrics"]["loss"] == pytest.approx(single_eval["metrics"]["loss"], rel=2e-5)
    single = final_weights(single_dir)
    for name in single:
        np.testing.assert_allclose(chief[name], single[name], rtol=0, atol=ATOL, err_msg=name)

    # Training moved the weights much further than the tolerance.
    keras.utils.set_random_seed(1)  # runtime.seed: the initial weights of both runs
    initial = tasks.get("bert/pretraining", overrides=params).build_model().trainable_variables
    moved = max(np.abs(value - initial[int(name.split("/")[2])].numpy()).max() for name, value in single.items())
    assert moved > 10 * ATOL, moved
