"""Atomic publishing: everything tfplm writes appears whole under its name, or not at all.

    with publish.directory("serving/sst2/3") as tmp:   # a new, hidden sibling folder
        tf.saved_model.save(module, tmp)
    # renamed to serving/sst2/3 only now, after the block succeeded

    with publish.file("out/report.json") as tmp:
        write(tmp)

The temporary sibling is named `.NAME.tmp-XXXX` (hidden, and no number, so
neither a glob like `PREFIX-*` nor TF Serving's version scan picks it up); it
is removed if the block fails. Renames within one folder are atomic on POSIX
file systems.
"""

import contextlib
import ctypes
import errno
import os
import shutil
import tempfile


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _temporary_sibling(path, make_directory):
    """A new hidden sibling of `path`, with the permissions a plain mkdir/open would give."""
    parent, name = os.path.split(os.path.abspath(os.fspath(path)))
    os.makedirs(parent, exist_ok=True)
    if make_directory:
        tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
        os.chmod(tmp, 0o777 & ~_umask())
        return tmp
    handle, tmp = tempfile.mkstemp(prefix=f".{name}.tmp-", dir=parent)
    os.close(handle)
    os.chmod(tmp, 0o666 & ~_umask())
    return tmp


def remove(path):
    """Removes a file, link or folder tree, if there."""
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    elif os.path.lexists(path):
        os.remove(path)


def _exchange(a, b):
    """Swaps two existing paths in one step (Linux's renameat2 RENAME_EXCHANGE);
    False where the system or file system cannot."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_cwd, exchange = -100, 2
    if renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), b)


def _replace_directory(tmp, path):
    """`tmp` becomes `path`, an existing folder; a reader always finds one of the two whole."""
    if _exchange(tmp, path):
        shutil.rmtree(tmp, ignore_errors=True)  # the old folder, now under the temporary name
        return
    # Two renames: between them `path` is briefly absent, never half-written.
    old = _temporary_sibling(path, make_directory=True)
    os.rmdir(old)
    os.rename(path, old)
    os.rename(tmp, path)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _publish(path, make_directory, replace):
    path = os.path.abspath(os.fspath(path))
    if os.path.lexists(path) and not replace:
        raise FileExistsError(f"{path} exists; refusing to overwrite it (remove it or choose another name)")
    tmp = _temporary_sibling(path, make_directory)
    try:
        yield tmp
        if replace and make_directory and os.path.isdir(path):
            _replace_directory(tmp, path)
        elif replace:
            os.replace(tmp, path)
        elif make_directory:
            os.rename(tmp, path)  # fails, rather than replace, if another writer published `path` meanwhile
        else:
            os.link(tmp, path)  # the same for a file: a link fails where a rename would replace
            os.remove(tmp)
    except BaseException:
        remove(tmp)
        raise


def remove_temporaries(folder):
    """Removes the hidden temporaries (`.NAME.tmp-XXXX`) that killed writers
    left in `folder`; only its writer may call it (`tfplm.locking`), since a
    live writer's temporary looks the same. Returns the names removed."""
    if not os.path.isdir(folder):
        return []
    removed = sorted(name for name in os.listdir(folder) if name.startswith(".") and ".tmp-" in name)
    for name in removed:
        remove(os.path.join(folder, name))
    return removed


def directory(path, replace=False):
    """Context manager: yields a temporary folder that becomes `path` when the block succeeds.

    Args:
        path: the folder to publish.
        replace: replace an existing `path` (else it is an error).
    """
    return _publish(path, make_directory=True, replace=replace)


def file(path, replace=True):
    """Context manager: yields a temporary file path that becomes `path` when the block succeeds."""
    return _publish(path, make_directory=False, replace=replace)


def write_bytes(path, data):
    """Writes `data` to `path` atomically."""
    with file(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
    return path


def write_text(path, text):
    """Writes UTF-8 `text` to `path` atomically."""
    return write_bytes(path, text.encode("utf-8"))
