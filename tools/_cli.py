"""What tfplm's binaries share: quiet by default, one-line errors, one model folder.

Each binary starts with

    import _cli

    _cli.quiet()  # before TensorFlow loads: its C++ logs are decided then

and ends with `_cli.run(main)` instead of `absl.app.run(main)`.

Quiet means no TensorFlow C++ logs (oneDNN, CUDA, cpu_feature_guard, XLA),
no absl INFO lines and no Python warnings from TensorFlow/Keras internals:
the binary prints its steps, metrics and paths, and tfplm's own warnings.
`--verbosity=1` (absl's flag) or `TFPLM_VERBOSE=1` shows everything, and a
user error then comes with its traceback. Only stdlib modules are imported
here, so that `quiet` runs before TensorFlow is loaded.
"""

import contextlib
import logging as std_logging
import os
import re
import signal
import sys
import tempfile
import traceback
import warnings

VERBOSE_ENV = "TFPLM_VERBOSE"
# Packages whose Python warnings and log records are internals a user cannot act on.
_QUIET_PACKAGES = r"(tensorflow|tensorflow_\w+|tf_keras|keras|keras_\w+|absl|google\.protobuf|h5py|tensorboard|ml_dtypes|ai_edge_litert)"
_QUIET_PATH = re.compile(rf"[/\\]{_QUIET_PACKAGES}[/\\]")
# What TensorFlow's native code writes straight to file descriptor 2: absl's
# C++ log lines (fatal ones excepted), its note about them, the rest of the
# CPU-feature message, and the TFLite runtime's INFO lines (XNNPACK).
_NATIVE_LOG = re.compile(
    r"^([IWE]\d{4} [\d:.]+\s+\d+ [^\]\s]+:\d+\] |WARNING: All log messages before absl::InitializeLog|"
    r"To enable the following instructions|INFO: )"
)
_quiet = False
# Library errors that are user mistakes: a bad flag value, config key, preset,
# checkpoint or data row (ConfigError, CheckpointError, BadRowError and
# UnsupportedExport are ValueErrors) or a path that is not there.
USER_ERRORS = (ValueError, OSError)
# A ValueError raised inside TensorFlow or Keras is not the user's: tfplm
# validates what it gives them, so it is a bug of tfplm's, shown with its traceback.
_BUG_SOURCES = re.compile(r"[/\\](tensorflow|keras|tf_keras)[/\\]")


def _verbosity_flag(argv):
    """The value of absl's --verbosity/-v on the command line, or None."""
    value, args = None, iter(argv[1:])
    for arg in args:
        if arg == "--":
            break
        match = re.fullmatch(r"--?(?:verbosity|v)(?:=(.*))?", arg)
        if match:
            raw = match.group(1) if match.group(1) is not None else next(args, "")
            try:
                value = int(raw)
            except ValueError:
                pass
    return value


def is_verbose(argv=None):
    """Whether to show TensorFlow's logs: --verbosity >= 1 or TFPLM_VERBOSE=1."""
    if os.environ.get(VERBOSE_ENV, "").lower() in ("1", "true", "yes"):
        return True
    value = _verbosity_flag(sys.argv if argv is None else argv)
    return value is not None and value >= 1


@contextlib.contextmanager
def native_logs_hidden():
    """Keeps what TensorFlow's native code logs meanwhile off the console (when quiet).

    Such lines are written to file descriptor 2 by C++ code, out of reach of
    TF_CPP_MIN_LOG_LEVEL: absl's messages from before its logging is
    initialized (as TensorFlow's libraries load; abseil/abseil-cpp#1718), and
    the TFLite runtime's. Everything written to stderr meanwhile is kept aside
    and shown after the block without those lines, or all of it if the block
    fails.
    """
    if not _quiet:
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            lines = capture.read().decode(errors="replace").splitlines(keepends=True)
            kept = lines if failed else [line for line in lines if not _NATIVE_LOG.match(line)]
            sys.stderr.write("".join(kept))
            sys.stderr.flush()


def quiet(argv=None):
    """Silences TensorFlow, absl and Keras internals unless verbose; returns
    whether it did. Call it before anything imports TensorFlow."""
    if is_verbose(argv):
        return False
    # 3: no C++ INFO, WARNING or ERROR lines (on a machine without a GPU, CUDA
    # logs errors). Set whatever the shell says (often 2, which lets those
    # errors through): verbose mode is the way to TensorFlow's logs.
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    warnings.filterwarnings("ignore", module=_QUIET_PACKAGES + r"(\.|$)")
    global _quiet
    _quiet = True
    if "tensorflow" not in sys.modules:
        with native_logs_hidden():
            import tensorflow  # noqa: F401  (loaded here, where its load-time logs are hidden)
    return True


class _PlainFormatter(std_logging.Formatter):
    """`warning: message`, as a person reads it (absl's prefix is for log files)."""

    def format(self, record):
        return f"{record.levelname.lower()}: {record.getMessage()}"


def _not_internal(record):
    """Drops warnings that TensorFlow's and Keras's own code logs through absl."""
    return record.levelno >= std_logging.ERROR or not _QUIET_PATH.search(record.pathname or "")


def _configure_logging():
    from absl import flags, logging

    verbose = is_verbose()
    if not verbose and not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    if not verbose:
        handler = logging.get_absl_handler()
        handler.setFormatter(_PlainFormatter())
        handler.addFilter(_not_internal)
        # TensorFlow's Python side (signature renaming, retracing notes, ...).
        std_logging.getLogger("tensorflow").setLevel(std_logging.ERROR)
    return verbose


def is_user_error(error):
    """Whether `error` is a user mistake to print as one line (see `USER_ERRORS`)."""
    if not isinstance(error, USER_ERRORS):
        return False
    if isinstance(error, OSError):
        return True
    frames = traceback.extract_tb(error.__traceback__)
    return not (frames and _BUG_SOURCES.search(frames[-1].filename))


def run(main):
    """`absl.app.run(main)`, quiet unless verbose; a user error (a bad flag, or
    one of `USER_ERRORS` from the library: `is_user_error`) is printed as
    `error: ...` with exit status 1 instead of a traceback."""
    from absl import app, flags

    def parse(argv):
        try:
            return flags.FLAGS(argv)
        except flags.Error as error:  # an unknown flag, a bad or missing value
            sys.exit(f"error: {error} (--helpfull lists the flags)")

    def wrapped(argv):
        verbose = _configure_logging()
        # SIGTERM (a scheduler's stop, `kill`) unwinds like Ctrl-C: what is
        # half-written is removed (tfplm.publish) and worker processes stopped.
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
        try:
            return main(argv)
        except BrokenPipeError:
            # The reader went away (`| head`): nothing left to say to it.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(1)
        except USER_ERRORS as error:
            if verbose or not is_user_error(error):
                raise
            sys.exit(f"error: {_one_line(error)}")

    app.run(wrapped, flags_parser=parse)


def _one_line(error):
    """The error's message on one line (a multi-line message's lines joined)."""
    return " ".join(line.strip() for line in str(error).splitlines() if line.strip()) or type(error).__name__


def read_experiment(model_dir):
    """The experiment named in `model_dir/config.yaml` ("" if none); None without the file."""
    import yaml

    from tfplm.training.trainer import CONFIG_FILE

    path = os.path.join(model_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            values = yaml.safe_load(f) or {}
    except (UnicodeDecodeError, yaml.YAMLError) as error:
        raise ValueError(f"{path}: not valid YAML ({_one_line(error)}); fix it or use another --model_dir") from None
    return (values.get("experiment") or "") if isinstance(values, dict) else ""


def experiment_config(experiment, model_dir, config_files=(), overrides=(), values=None):
    """(experiment name, `ExperimentConfig`) for a binary's flags.

    In order: the experiment's defaults, `model_dir/config.yaml` if it exists
    (it names the experiment, so `experiment` may be None), `config_files`,
    the dotted `overrides`, then `values` (a nested dict, e.g. from dedicated
    flags; merged as is, so a path is never parsed as YAML).
    """
    from tfplm import config as config_lib
    from tfplm import tasks
    from tfplm.training.trainer import CONFIG_FILE

    saved = read_experiment(model_dir) if model_dir else None
    if saved and experiment and saved != experiment:
        raise ValueError(
            f"--experiment={experiment} but {model_dir}/config.yaml was written by {saved}; "
            "drop --experiment or use another --model_dir"
        )
    experiment = experiment or saved
    if not experiment:
        where = f"{model_dir}/config.yaml names none" if saved == "" else "no --model_dir with a config.yaml"
        raise ValueError(f"--experiment is required ({where}); see --list_experiments")
    files = ([os.path.join(model_dir, CONFIG_FILE)] if saved is not None else []) + list(config_files)
    config = tasks.get_config(experiment, config_files=files, overrides=overrides)
    if values:
        config = config_lib.merge(config, values)
    return experiment, config


def build_task(experiment, config):
    """The experiment's `Task` for `config`."""
    from tfplm import tasks

    task_type, _ = tasks.EXPERIMENTS.get(experiment)
    return task_type.task(config)
