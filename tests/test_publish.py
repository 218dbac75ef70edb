"""tfplm.publish (whole or nothing under a name) and tfplm.locking (one writer per folder)."""

import os
import subprocess
import sys

import pytest

from tfplm import locking, publish


def names(folder):
    return sorted(os.listdir(folder))


def test_a_folder_appears_only_when_its_block_succeeds(tmp_path):
    target = tmp_path / "best"
    with pytest.raises(RuntimeError):
        with publish.directory(target) as tmp:
            (open(os.path.join(tmp, "half"), "w")).close()
            assert names(tmp_path) == [os.path.basename(tmp)] and os.path.basename(tmp).startswith(".best.tmp-")
            raise RuntimeError("killed")
    assert names(tmp_path) == []  # neither the folder nor its temporary
    with publish.directory(target) as tmp:
        open(os.path.join(tmp, "weights"), "w").close()
    assert names(target) == ["weights"]


def test_replacing_a_folder_swaps_it_whole(tmp_path):
    target = tmp_path / "best"
    with publish.directory(target) as tmp:
        open(os.path.join(tmp, "old"), "w").close()
    with publish.directory(target, replace=True) as tmp:
        open(os.path.join(tmp, "new"), "w").close()
    assert names(tmp_path) == ["best"] and names(target) == ["new"]  # the old one is gone, no temporary left


def test_without_replace_a_name_taken_meanwhile_is_not_overwritten(tmp_path):
    for make_directory in (True, False):
        target = tmp_path / f"v{make_directory}"
        context = publish.directory(target) if make_directory else publish.file(target, replace=False)
        with pytest.raises(OSError):
            with context as tmp:
                if make_directory:
                    open(os.path.join(tmp, "mine"), "w").close()
                    os.makedirs(target / "theirs")  # another writer published it meanwhile
                else:
                    target.write_text("theirs")
        assert (names(target) == ["theirs"]) if make_directory else (target.read_text() == "theirs")
    assert names(tmp_path) == ["vFalse", "vTrue"]  # and no temporary left


def test_remove_temporaries_removes_only_publish_temporaries(tmp_path):
    (tmp_path / ".best.tmp-abc").mkdir()
    (tmp_path / ".config.yaml.tmp-xyz").write_text("half")
    (tmp_path / "best").mkdir()
    (tmp_path / ".lock").write_text("")
    assert publish.remove_temporaries(tmp_path) == [".best.tmp-abc", ".config.yaml.tmp-xyz"]
    assert names(tmp_path) == [".lock", "best"]


HOLDER = """
import sys, time
from tfplm import locking
with locking.writer_lock(sys.argv[1], activity="a test holder"):
    print("held", flush=True)
    time.sleep(600)
"""


def test_a_writer_lock_names_its_holder_and_dies_with_it(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(locking.FolderInUse) as error:
            with locking.writer_lock(tmp_path, activity="a second writer", fix="try later"):
                pass
        assert str(error.value).startswith(f"{tmp_path} is in use by a test holder (pid {holder.pid} on ")
        assert str(error.value).endswith("; try later")
    finally:
        holder.kill()  # SIGKILL: no cleanup runs, the kernel releases the lock
        holder.wait()
    with locking.writer_lock(tmp_path, activity="a second writer") as path:
        assert '"activity": "a second writer"' in open(path).read()
