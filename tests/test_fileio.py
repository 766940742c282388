"""Atomic writes: whole files or none, with the permissions a plain open() would give."""

import errno
import fcntl
import json
import os
import signal
import stat
import subprocess
import sys

import pytest

from tripletnet.errors import UserError
from tripletnet.fileio import (
    LOCK_NAME,
    FolderLock,
    WriteError,
    append_line,
    atomic_path,
    atomic_write_bytes,
    atomic_write_text,
    ensure_folder,
)

from _filesystems import small_filesystem


def test_written_files_get_the_umask_permissions_not_mkstemps_0600(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "hello\n")
        plain = tmp_path / "plain.txt"
        plain.write_text("hello\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == stat.S_IMODE(plain.stat().st_mode) == 0o644


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    atomic_write_text(target, "old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash while writing")
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


# --- write errors: one line naming the path and the cause, nothing half-written -------------------




def test_a_path_under_a_file_is_a_write_error_naming_it_with_exit_code_2(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(WriteError) as info:
        atomic_write_text(tmp_path / "file" / "sub" / "metrics.json", "{}")
    assert "file" in str(info.value) and "\n" not in str(info.value)
    assert info.value.exit_code == 2
    assert isinstance(info.value, UserError)


def test_writing_onto_a_folder_is_refused_and_the_folder_kept(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(WriteError, match="is a folder"):
        atomic_write_text(tmp_path / "out", "{}")
    assert (tmp_path / "out").is_dir()


def test_an_empty_folder_path_is_refused_instead_of_meaning_the_current_directory():
    with pytest.raises(WriteError, match="empty path"):
        ensure_folder("")


def test_a_file_where_a_folder_should_be_is_refused(tmp_path):
    (tmp_path / "run").write_text("x")
    with pytest.raises(WriteError, match="not a folder"):
        ensure_folder(tmp_path / "run")


def test_injected_no_space_mid_write_keeps_the_old_file_and_is_a_system_error(tmp_path, monkeypatch):
    target = tmp_path / "last.pt"
    atomic_write_bytes(target, b"good checkpoint")
    real_replace = os.replace

    def full_disk(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(WriteError) as info:
        atomic_write_bytes(target, b"new checkpoint")
    monkeypatch.setattr(os, "replace", real_replace)
    assert info.value.exit_code == 1 and "No space left" in str(info.value)
    assert target.read_bytes() == b"good checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_a_full_filesystem_mid_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    with small_filesystem(tmp_path / "fs", 64 * 1024) as fs:
        target = fs / "last.pt"
        atomic_write_bytes(target, b"a" * 20_000)
        with pytest.raises(WriteError) as info:
            atomic_write_bytes(target, b"b" * 200_000)  # more than the filesystem holds
        assert info.value.exit_code == 1 and info.value.errno == errno.ENOSPC
        assert target.read_bytes() == b"a" * 20_000
        assert [p.name for p in fs.iterdir()] == ["last.pt"]


def test_a_read_only_filesystem_is_a_path_error(tmp_path):
    with small_filesystem(tmp_path / "fs", 64 * 1024, read_only=True) as fs:
        with pytest.raises(WriteError) as info:
            atomic_write_text(fs / "metrics.json", "{}")
        assert info.value.exit_code == 2 and "Read-only" in str(info.value)
        with pytest.raises(WriteError):
            append_line(fs / "metrics.jsonl", "{}")


def test_append_line_appends_whole_lines(tmp_path):
    path = tmp_path / "metrics.jsonl"
    append_line(path, '{"epoch": 1}')
    append_line(path, '{"epoch": 2}')
    assert path.read_text().splitlines() == ['{"epoch": 1}', '{"epoch": 2}']


# --- folder locks ------------------------------------------------------------------------------------

_HOLD_LOCK = """
import sys, time
from tripletnet.fileio import FolderLock
lock = FolderLock(sys.argv[1], log=lambda m: None).acquire()
print("locked", flush=True)
time.sleep(60)
"""


def _holder_process(folder):
    proc = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(folder)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_process_is_refused_with_the_holders_pid(tmp_path):
    proc = _holder_process(tmp_path)
    try:
        with pytest.raises(UserError) as info:
            FolderLock(tmp_path, log=lambda m: None).acquire()
        assert f"pid {proc.pid}" in str(info.value) and "in use" in str(info.value)
    finally:
        proc.kill()
        proc.wait()


def test_a_lock_whose_process_was_killed_is_taken_over_and_said_once(tmp_path):
    proc = _holder_process(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    said = []
    with FolderLock(tmp_path, log=said.append):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert len(said) == 1 and f"pid {proc.pid}" in said[0] and "gone" in said[0]
    said.clear()
    with FolderLock(tmp_path, log=said.append):  # released cleanly: nothing to say next time
        pass
    assert said == []
    assert not (tmp_path / LOCK_NAME).exists(), "a released lock leaves no file"


def test_a_lock_file_removed_while_a_second_process_waited_on_it_is_not_held_twice(tmp_path):
    first = FolderLock(tmp_path, log=lambda m: None).acquire()
    stale_fd = os.open(tmp_path / LOCK_NAME, os.O_RDWR)  # a second process opened the file just before the release
    first.release()
    assert not (tmp_path / LOCK_NAME).exists()
    second = FolderLock(tmp_path, log=lambda m: None).acquire()  # locks the file now at the path, not the removed one
    fcntl.flock(stale_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # the removed file's lock is free: holding it holds nothing
    with pytest.raises(UserError, match="in use by another run"):
        FolderLock(tmp_path, log=lambda m: None).acquire()
    os.close(stale_fd)
    second.release()


def test_errors_of_the_callers_own_block_pass_through_unchanged(tmp_path):
    class DownloadFailed(OSError):
        pass

    with pytest.raises(DownloadFailed):
        with atomic_path(tmp_path / "data.gz"):
            raise DownloadFailed("network is unreachable")  # a URLError is an OSError too
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EDQUOT, errno.EROFS])
def test_a_full_disk_inside_the_callers_block_is_a_one_line_write_error(tmp_path, code):
    """A plot or an .npz written into the temporary file runs out of space: WriteError, old file kept."""
    target = tmp_path / "losses.png"
    target.write_bytes(b"old")
    with pytest.raises(WriteError, match="cannot write .*losses.png") as caught:
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise OSError(code, os.strerror(code))
    assert os.strerror(code) in str(caught.value)
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["losses.png"]


def test_staged_files_move_in_together_or_leave_the_old_set_whole(tmp_path):
    from tripletnet.fileio import staged_files

    report = tmp_path / "report"
    with staged_files(report) as stage:
        (stage / "metrics.json").write_text("new")
        (stage / "roc.png").write_bytes(b"new")
    assert sorted(p.name for p in report.iterdir()) == ["metrics.json", "roc.png"]
    with pytest.raises(WriteError, match=r"cannot write .*report/roc.png: No space left on device") as caught:
        with staged_files(report) as stage:
            (stage / "metrics.json").write_text("newer")
            atomic_write_text(stage / "roc.png", "x")  # fine
            raise WriteError(stage / "roc.png", OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    assert ".staged" not in str(caught.value), "named as the file it was meant to be"
    assert (report / "metrics.json").read_text() == "new", "the old set stays whole"
    assert sorted(p.name for p in report.iterdir()) == ["metrics.json", "roc.png"], "no staging folder left"
