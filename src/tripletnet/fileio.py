"""Writing files so that nothing is lost: atomic replaces, clean write errors, and run-folder locks.

* :func:`atomic_path` and friends: a reader never sees a half-written file, and a failed write (a
  full disk, an exception) leaves the old file in place and no temporary behind. A kill -9 can leave
  a hidden temporary (:data:`TEMPORARY_NAME`); the run folder's next lock holder removes those.
* :class:`WriteError`: any ``OSError`` while writing becomes one line naming the path and the cause.
* :class:`FolderLock`: one process at a time writes into a run folder; a lock whose process died
  (even by ``kill -9``) is taken over, because the kernel drops ``flock`` locks with their process.
  The lock file is removed on release, so a finished run folder holds only the run's files.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import secrets
import socket
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from .console import Logger, log_stderr
from .errors import UserError

# Causes that the user can fix by choosing another path; the rest (disk full, I/O errors) are the system's.
_PATH_ERRNOS = frozenset(
    {errno.EEXIST, errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM, errno.EROFS, errno.ENAMETOOLONG, errno.ENOENT}
)


# ".<name>.<16 hex digits>.tmp": the temporaries of atomic_path, recognisable when a kill leaves one behind.
TEMPORARY_NAME = re.compile(r"\..+\.[0-9a-f]{16}\.tmp")


class WriteError(UserError):
    """Writing ``path`` failed: one line with the path and the cause.

    ``exit_code`` is 2 when the path itself is the problem (not a folder, read-only, no permission:
    the user can give another one) and 1 when the system is (no space left, I/O error).
    """

    def __init__(self, path: str | os.PathLike, error: OSError) -> None:
        cause = error.strerror or str(error)
        super().__init__(f"cannot write {path}: {cause}")
        self.path = Path(path)
        self.errno = error.errno
        self.exit_code = 2 if error.errno in _PATH_ERRNOS else 1


def ensure_folder(path: str | os.PathLike) -> Path:
    """Create the folder ``path`` (and its parents) or raise :class:`WriteError` saying why not.

    An empty path is refused: it would silently mean the current directory.
    """
    if str(path) == "":
        raise WriteError(path, OSError(errno.ENOENT, "an empty path names no folder"))
    folder = Path(path)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise WriteError(folder, OSError(errno.ENOTDIR, "it exists and is not a folder")) from None
    except OSError as exc:
        raise WriteError(folder, exc) from None
    return folder


# Errors that only a write can cause: the disk or quota is full, the file is too large, the file system is read-only.
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})


_SPECIAL_FILES = ((stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a pipe"),
                  (stat.S_ISSOCK, "a socket"))


def special_file_kind(path: str | os.PathLike) -> str | None:
    """``"a pipe"``, ``"a character device"``, ... when ``path`` is a device, pipe or socket; None for a file,
    a folder, or a path that is absent, unreachable or not a path (what opens it next says which)."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, TypeError, ValueError):
        return None
    return next((kind for is_kind, kind in _SPECIAL_FILES if is_kind(mode)), None)


def refuse_special_file(path: str | os.PathLike) -> None:
    """Raise :class:`WriteError` (exit 2) when ``path`` is a device, pipe or socket (``/dev/null``, say).

    An atomic write renames its file over the target, which would replace the device itself (for
    everyone on the machine) with a regular file rather than write into it.
    """
    kind = special_file_kind(path)
    if kind is not None:
        raise WriteError(path, OSError(errno.EEXIST, f"it is {kind}, not a file; give the path of a file to write"))


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success move it over ``path`` in one step.

    The temporary file lives in the same directory so that ``os.replace`` is a rename, not a copy.
    On any exception the temporary file is removed and ``path`` is left untouched. An ``OSError`` of
    the operations here (creating, syncing, renaming: no space, read-only, not a folder, ...) is raised
    as :class:`WriteError`, as is one the caller's block raises because the disk is full or the file
    system refuses writes (it can only have come from writing); anything else the block raises (a
    failed download, a bug) passes through unchanged.
    """
    target = Path(path)
    if target.is_dir():
        raise WriteError(target, OSError(errno.EISDIR, "it is a folder"))
    refuse_special_file(target)
    ensure_folder(target.parent)
    # Not mkstemp, which creates 0600: mode 0666 lets the kernel apply the umask, as open() does.
    # O_EXCL with a random name gives mkstemp's guarantee of a file nobody else holds.
    tmp = target.with_name(f".{target.name}.{secrets.token_hex(8)}.tmp")  # TEMPORARY_NAME
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    except OSError as exc:
        raise WriteError(target, exc) from None
    try:
        yield tmp
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno in _WRITE_ERRNOS:  # a plot or an archive writer ran out of space: one line, not a traceback
            raise WriteError(target, exc) from None
        raise
    except BaseException:  # the caller's own errors (a failed download, a bug) pass through unchanged
        tmp.unlink(missing_ok=True)
        raise
    try:
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise WriteError(target, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def output_folder(path: str | os.PathLike) -> Iterator[Path]:
    """Create the folder ``path`` (see :func:`ensure_folder`) for the block's outputs; if the block fails
    (an error, Ctrl-C) and the folder was new and is still empty, remove it again: no empty folder is
    left behind by a command that wrote nothing."""
    folder = Path(path)
    existed = folder.exists()
    ensure_folder(folder)
    try:
        yield folder
    except BaseException:
        if not existed:
            with contextlib.suppress(OSError):  # not empty, or gone: nothing to tidy
                folder.rmdir()
        raise


@contextlib.contextmanager
def staged_files(folder: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden temporary folder inside ``folder``; on success move each file written there into ``folder``.

    For a set of files that belong together (a report's metrics and plots): the slow, space-taking
    writes happen in the staging folder, and only renames, which need no space, touch ``folder``.
    On any error the staging folder is removed and ``folder``'s files stay as they were, never
    half old and half new. An ``OSError`` is raised as :class:`WriteError`.
    """
    target = ensure_folder(folder)
    staging = target / f".staged.{secrets.token_hex(8)}.tmp"  # hidden, like atomic_path's temporaries
    try:
        staging.mkdir()
    except OSError as exc:
        raise WriteError(target, exc) from None
    try:
        yield staging
        for item in sorted(staging.iterdir()):
            os.replace(item, target / item.name)
    except WriteError as exc:  # named by the file it was meant to be, not by its staging path
        raise WriteError(target / exc.path.name, OSError(exc.errno, str(exc).split(": ", 1)[-1])) from None
    except OSError as exc:
        raise WriteError(target, exc) from None
    finally:
        for item in staging.glob("*"):
            with contextlib.suppress(OSError):
                item.unlink()
        with contextlib.suppress(OSError):
            staging.rmdir()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (see :func:`atomic_path`); a failed write is a :class:`WriteError`."""
    with atomic_path(path) as tmp:
        try:
            tmp.write_bytes(data)
        except OSError as exc:  # no space left, quota: the target keeps its old content
            raise WriteError(path, exc) from None


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Replace ``path`` with ``text`` (UTF-8) atomically (see :func:`atomic_path`)."""
    atomic_write_bytes(path, text.encode("utf-8"))


def append_line(path: str | os.PathLike, line: str) -> None:
    """Append ``line`` and a newline to ``path`` durably (fsync), or raise :class:`WriteError`.

    A crash can at worst leave a torn last line, which readers of line files skip.
    """
    try:
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(line + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        raise WriteError(path, exc) from None


LOCK_NAME = ".tripletnet.lock"


class FolderLock:
    """An exclusive lock on a folder, held by one process at a time (``flock`` on a lock file).

    The lock file records the holder's PID, host and start time, so a refused second process can
    say who holds the folder. The kernel releases the lock when its process ends, however it ends;
    a lock file still naming a holder whose process is gone is therefore simply taken over, and
    that is said once. On release the file is deleted while still locked; a process that opened it
    just before then finds, once it holds the lock, that the path names another file (or none) and
    starts over, so two processes never hold locks on two files of the same name.

    Use as a context manager, or :meth:`acquire` / :meth:`release`.
    """

    def __init__(self, folder: str | os.PathLike, log: Logger = log_stderr) -> None:
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.log = log
        self._fd: int | None = None

    def acquire(self) -> FolderLock:
        """Take the lock or raise :class:`UserError` naming the process that holds it."""
        ensure_folder(self.folder)
        while True:
            fd = self._open_and_lock()
            if self._still_the_lock_file(fd):
                break
            os.close(fd)  # the holder removed it as we waited on it: lock the file now at the path
        previous = _read_holder(fd)
        if previous:
            self.log(f"note: {self.folder} was locked by a run that is gone ({_describe_holder(previous)}); taking it over")
        record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(record) + "\n").encode(), 0)
        self._fd = fd
        return self

    def _open_and_lock(self) -> int:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as exc:
            raise WriteError(self.path, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _describe_holder(_read_holder(fd))
            os.close(fd)
            raise UserError(
                f"{self.folder} is in use by another run ({holder}): wait for it to finish, or choose another --checkpoint_path"
            ) from None
        except OSError as exc:  # a filesystem without flock: refuse rather than risk two writers
            os.close(fd)
            raise WriteError(self.path, exc) from None
        return fd

    def _still_the_lock_file(self, fd: int) -> bool:
        try:
            at_path = os.stat(self.path)
        except FileNotFoundError:
            return False
        held = os.fstat(fd)
        return (at_path.st_dev, at_path.st_ino) == (held.st_dev, held.st_ino)

    def release(self) -> None:
        """Remove the lock file and release the lock (idempotent)."""
        if self._fd is None:
            return
        if self._still_the_lock_file(self._fd):  # removed while held: nobody can lock it in between
            with contextlib.suppress(OSError):
                self.path.unlink()
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def __enter__(self) -> FolderLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


def _read_holder(fd: int) -> dict[str, object]:
    try:
        text = os.pread(fd, 4096, 0).decode("utf-8", "replace").strip()
        holder = json.loads(text) if text else {}
    except (OSError, ValueError):
        return {"pid": "?"}  # unreadable content still means somebody wrote it
    return holder if isinstance(holder, dict) else {"pid": "?"}


def _describe_holder(holder: dict[str, object]) -> str:
    return f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}, since {holder.get('since', '?')}"


def replace_folder(new: Path, target: Path) -> None:
    """Move folder ``new`` to ``target``; an old ``target`` is moved aside first and removed only after.

    An interruption leaves the old folder or the new one, whole: only two renames lie between them,
    and a failed second one puts the old folder back (deleting a large old folder in place first
    could be cut short and leave half of it).
    """
    import shutil

    if not target.exists():
        os.replace(new, target)
        return
    old = target.with_name(f".{target.name}.{secrets.token_hex(8)}.old")
    os.replace(target, old)
    try:
        os.replace(new, target)
    except BaseException:
        os.replace(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)
