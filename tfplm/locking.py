"""One writer at a time per folder: a lock that ends with its holder, however it ends.

    with locking.writer_lock("runs/sst2", activity="a training run", fix="train in another model_dir"):
        publish.remove_temporaries("runs/sst2")   # what a killed writer left: safe, we are the writer
        ...                                       # a second writer_lock on runs/sst2 raises FolderInUse

The lock is an exclusive `fcntl.flock` on a file in the folder; the kernel
releases it when its process exits or is killed, so a crash never blocks the
next run. The file keeps the holder's description (pid, host, start, command)
for the error the next writer gets. `flock` may not hold across machines on
some network file systems.
"""

import contextlib
import datetime
import fcntl
import json
import os
import shlex
import socket
import sys


class FolderInUse(ValueError):
    """Another live process holds the folder's lock; the message names it and the fix."""


def _describe(text):
    try:
        holder = json.loads(text)
        return (
            f"{holder['activity']} (pid {holder['pid']} on {holder['host']}, "
            f"started {holder['started']}: {holder['command']})"
        )
    except (ValueError, KeyError, TypeError):
        return "a process that is starting"


@contextlib.contextmanager
def writer_lock(directory, lock_file=".lock", activity="a process", fix="wait for it to end"):
    """Holds the writer lock of `directory` (created if needed) for the block.

    Args:
        directory: the folder one process at a time may write.
        lock_file: the lock's file name in it.
        activity: what this process does, for the error another one gets
            meanwhile ("a training run").
        fix: what the refused process can do instead.

    Raises:
        FolderInUse: another live process holds it; the message names it.
    """
    directory = os.path.abspath(os.fspath(directory))
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, lock_file)
    handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe(os.pread(handle, 4096, 0).decode("utf-8", "replace"))
            raise FolderInUse(f"{directory} is in use by {holder}; {fix}") from None
        holder = {
            "activity": activity,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
            "command": shlex.join(sys.argv),
        }
        os.ftruncate(handle, 0)
        os.pwrite(handle, json.dumps(holder).encode("utf-8"), 0)
        yield path
    finally:
        os.close(handle)  # releases the lock
