"""Runs an experiment with Keras `fit`/`evaluate` under a tf.distribute strategy.

Checkpoints go through `tf.train.CheckpointManager` (keeping the last N) every
`steps_per_loop` steps; running the same command again restores the latest
one and continues where it stopped. A run killed at any moment and resumed
ends with the weights an uninterrupted run would have, bit for bit:

* a checkpoint holds the weights, the optimizer (slots and step, hence the
  learning-rate position) and the dropout layers' random state, and it is
  the last thing a loop writes (after train_log.jsonl and `best/`);
* the training data is a function of the step: each `fit` reads the task's
  input pipeline from its start (shuffled with `runtime.seed`) and skips the
  batches the steps before it consumed;
* a run without `runtime.seed` draws one and records it in config.yaml.

A `model_dir` has one training run at a time (`tfplm.locking.writer_lock`, a
lock that dies with its process). Starting, a run removes what a killed one left
half-done and falls back to the previous checkpoint if the latest cannot be read.

Progress: Keras's progress bar by default (a notebook's view), or with
`progress="lines"` (the binaries') a line every `trainer.log_every_steps`
steps and one per loop.
"""

import contextlib
import dataclasses
import glob
import json
import os
import random
import re
import sys
import time

import keras
import tensorflow as tf
import yaml
from absl import logging

from tfplm import config as config_lib
from tfplm import console, locking, publish
from tfplm.training.distribute import MultiWorkerMirroredStrategy, make_strategy, precision

MODES = ("train", "eval", "train_and_eval", "predict")
CONFIG_FILE = "config.yaml"  # the run's `ExperimentConfig`; names its experiment
PROGRESS = ("bar", "lines", None)
BEST_DIR = "best"  # where tasks keep their best model (`tfplm.tasks.base.SaveBest`)
TRAIN_LOG = "train_log.jsonl"


def _is_chief(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.task_type:
        return True
    return resolver.task_type == "chief" or (
        resolver.task_type == "worker" and resolver.task_id == 0
    )


class TrainingLogger(keras.callbacks.Callback):
    """Per loop: a progress line, TensorBoard scalars (losses, metrics, learning
    rate, examples/s) and a line of `train_log.jsonl`."""

    def __init__(self, model_dir, global_batch_size):
        super().__init__()
        self.writer = tf.summary.create_file_writer(os.path.join(model_dir, "logs", "train"))
        self.log_path = os.path.join(model_dir, TRAIN_LOG)
        self.global_batch_size = global_batch_size

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()
        self._start_step = int(self.model.optimizer.iterations.numpy())

    def on_epoch_end(self, epoch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        elapsed = time.perf_counter() - self._start
        scalars = {k: float(v) for k, v in (logs or {}).items()}
        scalars["learning_rate"] = float(
            keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        )
        scalars["examples_per_second"] = (step - self._start_step) * self.global_batch_size / elapsed
        with self.writer.as_default(step=step):
            for name, value in scalars.items():
                tf.summary.scalar(name, value)
        self.writer.flush()
        with open(self.log_path, "a") as f:
            f.write(json.dumps({"step": step, **scalars}) + "\n")
        logging.info(
            "step %d: %s", step, ", ".join(f"{k}={v:.4g}" for k, v in sorted(scalars.items()))
        )


class SaveCheckpoint(keras.callbacks.Callback):
    """Saves a checkpoint at the end of each loop. It is the last callback:
    a run killed before it redoes the loop, which writes the same logs and
    best model again; one killed after it has finished the loop."""

    def __init__(self, manager):
        super().__init__()
        self.manager = manager

    def on_epoch_end(self, epoch, logs=None):
        self.manager.save(checkpoint_number=int(self.model.optimizer.iterations.numpy()))


class PredictionMetrics(keras.callbacks.Callback):
    """Adds the task's prediction metrics (`Task.evaluate_predictions`) to each
    loop's validation logs as `val_<name>`, for the callbacks after it."""

    def __init__(self, task):
        super().__init__()
        self.task = task

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and any(name.startswith("val_") for name in logs):
            metrics = self.task.evaluate_predictions(self.model) or {}
            logs.update({f"val_{name}": value for name, value in metrics.items()})


def _say(text):
    print(text, file=sys.stdout, flush=True)


class ProgressLines(keras.callbacks.Callback):
    """Progress as plain lines (what the binaries print): every `every` steps
    and at the end of each loop, the step, the loss and metrics averaged over
    the loop so far and the examples/s since the previous line; after each
    loop's validation, its metrics.

    Values are only read from the device when a line is printed, so the steps
    between lines run without waiting for them.
    """

    def __init__(self, every, train_steps, global_batch_size):
        super().__init__()
        self.every = every
        self.train_steps = train_steps
        self.global_batch_size = global_batch_size

    def _mark(self, step):
        self._last_step, self._last_time = step, time.perf_counter()

    def _line(self, step, logs, now=None):
        scalars = {name: float(keras.ops.convert_to_numpy(value)) for name, value in logs.items()}
        elapsed = (now or time.perf_counter()) - self._last_time
        rate = (step - self._last_step) * self.global_batch_size / max(elapsed, 1e-9)
        _say(f"step {step}/{self.train_steps}  {console.format_scalars(scalars)}  {rate:.1f} examples/s")
        self._mark(step)

    def on_epoch_begin(self, epoch, logs=None):
        self._training_ended = None
        self._loop_start = int(self.model.optimizer.iterations.numpy())
        self._step = self._loop_start
        self._mark(self._loop_start)

    def on_train_batch_end(self, batch, logs=None):
        step = self._loop_start + batch + 1
        self._step = step
        if self.every and logs and step // self.every != self._last_step // self.every:
            self._line(step, logs)

    def on_test_begin(self, logs=None):
        # The loop's validation starts: its time is not training throughput.
        self._training_ended = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        step = self._step
        if step != self._last_step:
            self._line(step, {k: v for k, v in logs.items() if not k.startswith("val_")}, self._training_ended)
        validation = {k[len("val_") :]: v for k, v in logs.items() if k.startswith("val_")}
        if validation:
            _say(f"step {step}/{self.train_steps}  validation: {console.format_scalars(validation)}")


def random_states(model):
    """The state of `model`'s random number generators (the `SeedGenerator` of
    each dropout layer): variables that are not weights, which a checkpoint of
    the model alone leaves out. A resumed run restores them, so its dropout
    masks are the ones an uninterrupted run draws."""
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights]


def _checkpoint_paths(directory):
    """The checkpoints the CheckpointManager's state file lists, newest first."""
    state = tf.train.get_checkpoint_state(directory)
    if state is None:
        return []
    paths = list(state.all_model_checkpoint_paths) or [state.model_checkpoint_path]
    return [p if os.path.isabs(p) else os.path.join(directory, p) for p in reversed(paths)]


def _restore(model, directory, strategy, describe_mismatch):
    """Restores the latest readable checkpoint in `directory`, if any; returns its step (0 if none).

    A checkpoint that cannot be read (a truncated file) is skipped for the
    one before it, with a warning; a checkpoint of another model raises a
    `ConfigError` that `describe_mismatch(error)` completes.
    """
    # Under a multi-worker strategy creating variables (optimizer slots, the
    # checkpoint's save counter) is collective: every worker must create the
    # same ones, so all build the optimizer and all restore the same checkpoint.
    model.optimizer.build(model.trainable_variables)
    paths = _checkpoint_paths(directory)
    restored = None
    for i, path in enumerate(paths):
        try:
            _restore_checkpoint(model, path)
        except tf.errors.OpError as error:
            reason = error.message.strip().splitlines()[0]
            if i + 1 == len(paths):
                raise ValueError(
                    f"no checkpoint in {directory} can be read (the oldest, {path}: {reason}); "
                    "move that folder aside to train from the start"
                ) from None
            logging.warning("checkpoint %s cannot be read (%s); resuming from %s instead", path, reason, paths[i + 1])
            continue
        except (ValueError, AssertionError) as error:
            raise config_lib.ConfigError(
                f"{path} holds another model than this config builds ({describe_mismatch(error)}); resume with "
                "the config it was trained with (MODEL_DIR/config.yaml) or train in another model_dir"
            ) from None
        restored = path
        logging.info("restored %s", path)
        break
    step = int(model.optimizer.iterations.numpy()) if restored else 0
    _check_workers_agree(strategy, step)
    return step


def _restore_checkpoint(model, path):
    """Restores every weight, optimizer slot and random state of `model` from
    `path`; raises if the checkpoint does not hold exactly these."""
    names = [name for name, _ in tf.train.list_variables(path)]  # reads the index: OpError if it is broken
    objects = {"model": model, "optimizer": model.optimizer}
    if any(name.startswith("random_states/") for name in names):
        objects["random_states"] = random_states(model)
    else:  # written before checkpoints kept them: dropout starts from fresh random states
        logging.warning("%s has no dropout random states; the resumed run draws other dropout masks", path)
    status = tf.train.Checkpoint(**objects).restore(path)
    status.assert_consumed()  # every value of the checkpoint found its variable, and every variable its value


def _check_workers_agree(strategy, checkpoint_step):
    """Fails on every worker if they found different latest checkpoints.

    Workers that start from different steps would wait on each other's
    collectives forever.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    gathered = strategy.run(
        lambda: tf.distribute.get_replica_context().all_gather(tf.constant([checkpoint_step], tf.int64), axis=0)
    )
    steps = sorted(set(strategy.experimental_local_results(gathered)[0].numpy().tolist()))
    if len(steps) > 1:
        raise ValueError(
            f"workers found different latest checkpoints (steps {steps}); every worker resumes "
            "from the chief's model_dir/checkpoints, so model_dir must be on storage that all "
            "workers share"
        )


def run_experiment(task, mode, model_dir, strategy=None, progress="bar"):
    """Trains and/or evaluates `task`, writing everything under `model_dir`.

    Args:
        task: a `tfplm.tasks.Task` whose `config` is an `ExperimentConfig`.
        mode: "train", "eval", "train_and_eval" (validating every loop) or
            "predict" (the task writes predictions for its test data with the
            model `load_trained` finds).
        model_dir: checkpoints, TensorBoard logs, train_log.jsonl, config.yaml
            (written when training), eval_results.json, predictions.
        strategy: a tf.distribute strategy; default: the one the config names.
        progress: "bar" (Keras's progress bars, as `fit(verbose=1)`), "lines"
            (a line every `trainer.log_every_steps` steps, one per loop and
            the evaluation's results) or None (silent).

    Returns:
        {"step", "metrics", "data"} for the eval modes, {"files"} for predict,
        {"step"} for train.

    Example:
    >>> task = tfplm.tasks.get("glue/sst2", overrides="task.glue_dir=glue,task.vocab_file=vocab.txt")  # doctest: +SKIP
    >>> run_experiment(task, "train_and_eval", "runs/sst2")["metrics"]["accuracy"]  # doctest: +SKIP
    0.81
    """
    if mode not in MODES:
        raise ValueError(f"mode={mode!r}; expected one of {', '.join(MODES)}")
    config_lib.validate(task.config)  # a config built in code gets the checks a YAML file gets
    if mode in ("train", "train_and_eval"):
        task.train_steps(), task.steps_per_loop()  # step counts the task cannot run fail before anything is written
    if progress not in PROGRESS:
        raise ValueError(f"progress={progress!r}; expected one of {PROGRESS}")
    if mode == "predict":
        files = task.predict(load_trained(task, model_dir), model_dir)
        if progress == "lines":
            _say("predictions: " + ", ".join(files))
        return {"files": files}
    runtime = task.config.runtime
    # The policy holds while the model is built and trained, then the caller's is back.
    with precision(runtime.mixed_precision, runtime.distribution_strategy) as (policy, why):
        if progress == "lines" and runtime.mixed_precision == "auto":
            _say(f"precision: {policy} ({why}; runtime.mixed_precision chooses another)")
        return _train_and_evaluate(task, mode, model_dir, strategy, progress)


def _read_saved_config(model_dir):
    """`model_dir/config.yaml` as a dict, or None."""
    path = os.path.join(model_dir, CONFIG_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            values = yaml.safe_load(f)
    except (OSError, yaml.YAMLError):
        return None
    return values if isinstance(values, dict) else None


def _flatten(values, prefix=""):
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _config_differences(saved, config):
    """'key: saved → now' for the keys of `task` (else any) where config.yaml and `config` differ."""
    if saved is None:
        return []
    before, after = _flatten(saved), _flatten(config_lib.to_dict(config))
    differing = [k for k in sorted(set(before) | set(after)) if before.get(k) != after.get(k)]
    task_keys = [k for k in differing if k.startswith("task.")]
    return [f"{k}: {before.get(k)!r} in config.yaml, {after.get(k)!r} now" for k in (task_keys or differing)]


def _with_seed(task, saved):
    """Gives a task without `runtime.seed` the seed config.yaml recorded, or a
    new random one: the run's data order and dropout then follow one seed,
    which config.yaml records, so resuming continues the same stream."""
    config = task.config
    if config.runtime.seed is None:
        seed = ((saved or {}).get("runtime") or {}).get("seed")
        if not isinstance(seed, int):
            seed = random.SystemRandom().randrange(2**31)
        task.config = dataclasses.replace(config, runtime=dataclasses.replace(config.runtime, seed=seed))
    return task.config


def _remove_leftovers(model_dir):
    """Removes what a killed run left half-written in `model_dir`: tfplm.publish's
    hidden temporaries (of best/, pretrained/, config.yaml, ...), TensorFlow's
    checkpoint shards before their merge (`ckpt-N_temp`), and the files of a
    checkpoint newer than the newest one the checkpoint state file lists (a
    save killed before it was listed)."""
    leftovers = publish.remove_temporaries(model_dir)
    directory = os.path.join(model_dir, "checkpoints")
    listed = _checkpoint_paths(directory)
    newest = (_checkpoint_number(listed[0]) or 0) if listed else 0
    for path in glob.glob(os.path.join(directory, "ckpt-*")):
        if "_temp" in os.path.basename(path) or (_checkpoint_number(path) or 0) > newest:
            publish.remove(path)
            leftovers.append(os.path.relpath(path, model_dir))
    if leftovers:
        logging.warning("removed what an interrupted run left half-written: %s", ", ".join(sorted(leftovers)))


def _checkpoint_number(path):
    """N of a checkpoint ".../ckpt-N" or one of its files (ckpt-N.index, ...), else None."""
    match = re.match(r"ckpt-(\d+)(\.|_temp|$)", os.path.basename(path))
    return int(match.group(1)) if match else None


def _trim_log(model_dir, step):
    """Drops the lines of train_log.jsonl past `step` (a killed run's loop
    after its last checkpoint, which the resumed run logs again) and a line
    the kill cut short."""
    path = os.path.join(model_dir, TRAIN_LOG)
    if not os.path.isfile(path):
        return
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    kept = []
    for line in lines:
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if line.endswith("\n") and isinstance(entry, dict) and entry.get("step", 0) <= step:
            kept.append(line)
    if len(kept) != len(lines):
        publish.write_text(path, "".join(kept))
        logging.info("train_log.jsonl: dropped %d lines past step %d", len(lines) - len(kept), step)


def _training_data(task, strategy, step):
    """The training batches from `step` on: the task's input pipeline read
    from its start, less the batches the first `step` steps took (a step
    takes one per replica). The same seed gives the same stream, so any fit
    call, in a resumed run or not, sees what one uninterrupted run would."""

    def dataset_fn(context):
        batches_per_step = context.num_replicas_in_sync // context.num_input_pipelines
        return task.build_inputs("train", context).repeat().skip(step * batches_per_step)

    return strategy.distribute_datasets_from_function(dataset_fn)


def _train_and_evaluate(task, mode, model_dir, strategy, progress):
    """`run_experiment` for the train and eval modes, under the run's precision."""
    strategy = strategy or make_strategy(task.config.runtime.distribution_strategy, task.config.runtime.tpu)
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and not isinstance(
        strategy, MultiWorkerMirroredStrategy
    ):
        raise ValueError(
            "Keras 3's fit cannot train under tf.distribute.MultiWorkerMirroredStrategy itself "
            "(keras-team/keras#20329); pass tfplm.training.distribute.MultiWorkerMirroredStrategy() "
            "or make_strategy('multi_worker_mirrored')"
        )
    chief = _is_chief(strategy)
    # Every worker must save (saving is collective); only the chief's copy
    # counts, and every worker resumes from it.
    write_dir = model_dir if chief else os.path.join(model_dir, f"worker_{strategy.cluster_resolver.task_id}")
    os.makedirs(write_dir, exist_ok=True)
    training = mode in ("train", "train_and_eval")
    # Evaluation only reads checkpoints and publishes its results whole: it
    # may run beside a training run.
    with model_dir_lock(write_dir) if training else contextlib.nullcontext():
        return _run_locked(task, mode, model_dir, write_dir, chief, strategy, progress)


def model_dir_lock(model_dir):
    """The one-writer lock of a training run's `model_dir` (`tfplm.locking`)."""
    return locking.writer_lock(
        model_dir,
        activity="a training run",
        fix="wait for it to end or stop it, or train in another model_dir",
    )


def _run_locked(task, mode, model_dir, write_dir, chief, strategy, progress):
    training = mode in ("train", "train_and_eval")
    saved = _read_saved_config(model_dir)
    if training:
        _remove_leftovers(write_dir)
        _with_seed(task, saved)
    config = task.config
    if config.runtime.seed is not None:
        keras.utils.set_random_seed(config.runtime.seed)

    with strategy.scope():
        model = task.build_model()
        task.compile(model)
        checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer, random_states=random_states(model))
        manager = tf.train.CheckpointManager(
            checkpoint,
            os.path.join(write_dir, "checkpoints"),
            max_to_keep=config.trainer.max_checkpoints_to_keep if chief else 1,
        )

        def describe_mismatch(error):
            return "; ".join(_config_differences(saved, config)[:5]) or str(error).strip().splitlines()[0]

        step = _restore(model, os.path.join(model_dir, "checkpoints"), strategy, describe_mismatch)
    if chief and (training or saved is None):
        # Written once the checkpoint is known to fit it; an evaluation keeps
        # the training run's. Atomically: other workers and later commands read it back.
        publish.write_text(os.path.join(model_dir, CONFIG_FILE), yaml.safe_dump(config_lib.to_dict(config), sort_keys=False))
    if training:
        _trim_log(write_dir, step)

    results = {}
    if training:
        train_steps = task.train_steps()
        steps_per_loop = min(task.steps_per_loop(), train_steps)
        batch_size = task.global_batch_size("train")
        task_callbacks = task.build_callbacks(write_dir)
        if step >= train_steps:
            logging.info("already trained %d of %d steps", step, train_steps)
            if progress == "lines":
                _say(f"already trained {step} of {train_steps} steps in {model_dir}")
            # A run killed after its last checkpoint left the end of training
            # undone (e.g. model_dir/pretrained): the callbacks finish it.
            for callback in task_callbacks:
                callback.set_model(model)
                callback.on_train_end()
        else:
            validation = None
            if mode == "train_and_eval":
                validation = strategy.distribute_datasets_from_function(
                    lambda context: task.build_inputs("validation", context)
                )
            callbacks = [TrainingLogger(write_dir, batch_size)]
            if validation is not None:
                callbacks.insert(0, PredictionMetrics(task))
            if progress == "lines":
                every = config.trainer.log_every_steps
                callbacks.append(ProgressLines(every, train_steps, batch_size))
                start = f"from step {step} " if step else ""
                _say(
                    f"training {start}to step {train_steps} (batch {batch_size}, {steps_per_loop} steps per loop) "
                    f"in {model_dir}"
                )
            callbacks += task_callbacks + [SaveCheckpoint(manager)]
            for epochs, initial_epoch, steps_per_epoch in _fit_calls(step, train_steps, steps_per_loop):
                model.fit(
                    _training_data(task, strategy, int(model.optimizer.iterations.numpy())),
                    epochs=epochs,
                    initial_epoch=initial_epoch,
                    steps_per_epoch=steps_per_epoch,
                    validation_data=validation,
                    validation_steps=config.trainer.eval_steps or None,
                    shuffle=False,  # the task's input pipeline shuffles; a tf.data.Dataset ignores it
                    callbacks=callbacks,
                    verbose=1 if progress == "bar" else 0,
                )
                if model.stop_training:  # early stopping
                    break
        results = {"step": int(model.optimizer.iterations.numpy())}
    if mode in ("eval", "train_and_eval"):
        results = evaluate(task, model, strategy, write_dir, progress)
    return results


def _fit_calls(step, train_steps, steps_per_loop):
    """The `fit` calls that train from `step` to `train_steps`, as
    (epochs, initial_epoch, steps_per_epoch): loops (Keras epochs) of
    `steps_per_loop` steps that end on its multiples, and a shorter last one
    when it does not divide `train_steps`. A fit's epochs all have the same
    length, and none may run past the learning-rate schedule's end.

    Example:
    >>> _fit_calls(0, 5, 2)  # loops end at steps 2, 4 and 5
    [(2, 0, 2), (1, 0, 1)]
    >>> _fit_calls(3, 8, 2)  # resumed at step 3: loops end at 4, 6 and 8
    [(1, 0, 1), (4, 2, 2)]
    """
    calls = []
    if step % steps_per_loop and step < train_steps:
        first = min(steps_per_loop - step % steps_per_loop, train_steps - step)
        calls.append((1, 0, first))
        step += first
    whole_loops = train_steps // steps_per_loop
    if step < whole_loops * steps_per_loop:
        calls.append((whole_loops, step // steps_per_loop, steps_per_loop))
        step = whole_loops * steps_per_loop
    if step < train_steps:
        calls.append((1, 0, train_steps - step))
    return calls


def evaluate(task, model, strategy, model_dir, progress=None):
    """Evaluates on the "validation" split; writes eval_results.json.

    `progress`: "bar" shows Keras's progress bar, "lines" prints the results.
    """
    dataset = strategy.distribute_datasets_from_function(
        lambda context: task.build_inputs("validation", context)
    )
    steps = task.config.trainer.eval_steps or None
    metrics = model.evaluate(dataset, steps=steps, return_dict=True, verbose=1 if progress == "bar" else 0)
    metrics.update(task.evaluate_predictions(model) or {})
    results = {
        "step": int(model.optimizer.iterations.numpy()),
        "metrics": {k: float(v) for k, v in metrics.items()},
        "data": task.describe_inputs("validation"),
    }
    publish.write_text(os.path.join(model_dir, "eval_results.json"), json.dumps(results, indent=2))
    logging.info("eval at step %d: %s", results["step"], results["metrics"])
    if progress == "lines":
        _say(f"evaluation at step {results['step']}: {console.format_scalars(results['metrics'])}")
    return results


def load_trained(task, model_dir):
    """The model a run left in `model_dir`, with its preprocessing.

    The model kept as best by the task's main metric (`model_dir/best`, in
    tfplm's pretrained format) if there is one, else the task's model with the
    latest checkpoint's weights.
    """
    from tfplm.models import from_pretrained  # the core does not import the zoo at module level

    best = os.path.join(model_dir, BEST_DIR)
    if os.path.isdir(best):
        logging.info("loading the best model %s", best)
        return from_pretrained(best)
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    if latest is None:
        raise ValueError(f"{model_dir!r} has no best/ and no checkpoints/; train there first (tools/train.py)")
    model = task.build_model()
    tf.train.Checkpoint(model=model).restore(latest).expect_partial()
    logging.info("restored %s", latest)
    return model
