"""Kills training runs at random moments and checks that each resumes to the run it replaced.

    python tools/crash_test.py --kills=20 -- \\
        --experiment=glue/sst2 --glue_dir=tests/data/glue --init_checkpoint=tests/fixtures/hf_bert \\
        --params_override=task.seq_length=16,trainer.train_steps=40,trainer.steps_per_loop=4,runtime.seed=0

Everything after `--` goes to tools/train.py. First one uninterrupted run (the
reference); then trials: each starts tools/train.py in a fresh model_dir,
kills it with SIGKILL (the whole process group) after a random delay, checks
what the kill left visible, and starts it again, until the run finishes. A
trial passes when its final checkpoint holds the same values, bit for bit, as
the reference's, `best/` (where the task keeps one) has the same weights, and
nothing temporary is left behind. Trials go on until `--kills` kills were made.

What "visible" must hold after every kill: the checkpoint `checkpoint` names
reads back completely, `train_log.jsonl` lines parse with increasing steps,
and `best/`, if present, loads. Prints one line per kill and a summary;
exits 1 if any trial failed.
"""

import os
import random
import signal
import subprocess
import sys
import tempfile
import time

import _cli

_cli.quiet()

import json  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import flags  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("kills", 20, "Kills to make in all (over as many trials as that takes).")
flags.DEFINE_integer("seed", 0, "Seed of the kill delays.")
flags.DEFINE_float("min_delay", 3.0, "Shortest delay before a kill, in seconds (TensorFlow's import takes about 3).")
flags.DEFINE_string("work_dir", None, "Where the model_dirs go (default: a temporary folder, removed).")

TRAIN = os.path.join(os.path.dirname(os.path.abspath(__file__)), "train.py")
TEMPORARY_MARKS = (".tmp-", "_temp")


def start(train_args, model_dir):
    return subprocess.Popen(
        [sys.executable, TRAIN, *train_args, f"--model_dir={model_dir}"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the kill reaches every child
    )


def finish(process):
    output, _ = process.communicate()
    if process.returncode:
        raise SystemExit(f"tools/train.py failed (exit {process.returncode}):\n{output[-3000:]}")


def checkpoint_values(model_dir):
    """{name: array} of the latest checkpoint (the save counter aside)."""
    latest = tf.train.latest_checkpoint(os.path.join(model_dir, "checkpoints"))
    if latest is None:
        return None
    reader = tf.train.load_checkpoint(latest)
    return {
        name: reader.get_tensor(name)
        for name, _ in tf.train.list_variables(latest)
        if not name.startswith("save_counter") and name != "_CHECKPOINTABLE_OBJECT_GRAPH"
    }


def best_weights(model_dir):
    """The weights of `model_dir/best`, or None when the task keeps none."""
    best = os.path.join(model_dir, "best")
    if not os.path.isdir(best):
        return None
    from tfplm.models import from_pretrained

    return [np.asarray(w) for w in from_pretrained(best).weights]


def what_is_wrong_after_a_kill(model_dir):
    """What a reader of `model_dir` would find broken now: a list of problems."""
    problems = []
    try:
        checkpoint_values(model_dir)
    except Exception as error:  # noqa: BLE001 - any failure to read is the finding
        problems.append(f"latest checkpoint unreadable: {type(error).__name__}: {str(error)[:200]}")
    log = os.path.join(model_dir, "train_log.jsonl")
    if os.path.exists(log):
        with open(log) as f:
            lines = f.read().splitlines()
        try:
            steps = [json.loads(line)["step"] for line in lines]
            if steps != sorted(set(steps)):
                problems.append(f"train_log.jsonl steps not increasing: {steps}")
        except (ValueError, KeyError) as error:
            problems.append(f"train_log.jsonl has a broken line: {error}")
    try:
        best_weights(model_dir)
    except Exception as error:  # noqa: BLE001
        problems.append(f"best/ does not load: {type(error).__name__}: {str(error)[:200]}")
    return problems


def leftovers(model_dir):
    return [
        os.path.relpath(os.path.join(root, name), model_dir)
        for root, dirs, files in os.walk(model_dir)
        for name in dirs + files
        if any(mark in name for mark in TEMPORARY_MARKS)
    ]


def differences(reference, candidate):
    if reference is None or candidate is None:
        return ["missing"] if (reference is None) != (candidate is None) else []
    if isinstance(reference, dict):
        if reference.keys() != candidate.keys():
            return [f"variables differ: {sorted(reference.keys() ^ candidate.keys())[:5]}"]
        pairs = [(name, reference[name], candidate[name]) for name in sorted(reference)]
    else:
        pairs = [(str(i), a, b) for i, (a, b) in enumerate(zip(reference, candidate))]
    return [
        f"{name}: max |difference| {np.abs(a.astype(np.float64) - b.astype(np.float64)).max():.3g}"
        for name, a, b in pairs
        if not np.array_equal(a, b)
    ]


def main(argv):
    train_args = argv[1:]
    if not train_args:
        raise ValueError("give tools/train.py's flags after --, e.g. -- --experiment=glue/sst2 ...")
    rng = random.Random(FLAGS.seed)
    work_dir = FLAGS.work_dir or tempfile.mkdtemp(prefix="crash_test-")
    reference_dir = os.path.join(work_dir, "reference")
    begin = time.perf_counter()
    finish(start(train_args, reference_dir))
    duration = time.perf_counter() - begin
    reference = checkpoint_values(reference_dir), best_weights(reference_dir)
    print(f"reference run: {duration:.0f} s; kills drawn between {FLAGS.min_delay:.0f} and {duration:.0f} s", flush=True)

    kills, trials, failed = 0, 0, 0
    while kills < FLAGS.kills:
        trials += 1
        model_dir = os.path.join(work_dir, f"trial_{trials}")
        trial_kills, problems = 0, []
        while True:
            process = start(train_args, model_dir)
            begin = time.perf_counter()
            # Within the shortest whole run seen: most draws then land before its end.
            delay = rng.uniform(FLAGS.min_delay, max(duration, FLAGS.min_delay)) if kills < FLAGS.kills else None
            try:
                process.wait(timeout=delay)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                kills += 1
                trial_kills += 1
                found = what_is_wrong_after_a_kill(model_dir)
                problems += found
                print(f"kill {kills} (trial {trials}) after {delay:.1f} s: {'; '.join(found) or 'nothing broken'}", flush=True)
                continue
            finish(process)
            if trial_kills == 0:
                duration = min(duration, time.perf_counter() - begin)
            break
        problems += differences(reference[0], checkpoint_values(model_dir))
        problems += [f"best/ {p}" for p in differences(reference[1], best_weights(model_dir))]
        problems += [f"left behind: {path}" for path in leftovers(model_dir)]
        failed += bool(problems)
        verdict = "bit-identical to the reference" if not problems else "; ".join(problems[:5])
        print(f"trial {trials}: {trial_kills} kills, {verdict}", flush=True)
    print(f"{trials - failed}/{trials} trials ({kills} kills) ended bit-identical to the uninterrupted run")
    if not FLAGS.work_dir:
        import shutil

        shutil.rmtree(work_dir, ignore_errors=True)
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    _cli.run(main)
