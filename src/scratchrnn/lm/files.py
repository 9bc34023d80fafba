"""Files as the language model reads and writes them: bounded reads of regular files, atomic writes.

Every file of a run directory is written by :func:`atomic_write` (a temp file beside the target,
fsync, rename), so a reader — or a run killed half-way through a write — sees the old file or the
new one, never a mix. The temp file gets the permissions an ordinary ``open(path, "w")`` would
give (0666 less the umask), not ``mkstemp``'s 0600. A full disk is said in those words, and the
old file is kept.

:func:`read_regular` is how the library opens what a user names: one ``os.stat``-style check that
the path is a regular file (a FIFO would block forever, ``/dev/zero`` never ends, a directory is
not a file) with errors that say which case it is (missing, a loop of symbolic links, a
directory, a device), and a size limit.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["DiskFullError", "append_text", "atomic_write", "disk_full_said", "file_mode", "file_version",
           "os_error", "read_regular", "stat_error"]

_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFullError(OSError):
    """No space (or no quota) left to write a file; the file's previous version is kept."""


def file_mode() -> int:
    """The mode ``open(path, "w")`` gives a new file: 0o666 less the process's umask."""
    mask = os.umask(0)  # reading the umask means setting it; set it straight back
    os.umask(mask)
    return 0o666 & ~mask


def os_error(kind: type[OSError], code: int, message: str) -> OSError:
    """``kind(message)`` with ``errno`` set: its text is the message alone, without "[Errno N]"."""
    err = kind(message)
    err.errno = code
    return err


@contextlib.contextmanager
def disk_full_said(path: str | os.PathLike) -> Iterator[None]:
    """Turn a full disk (or quota) while writing ``path`` into a :class:`DiskFullError` saying so."""
    try:
        yield
    except OSError as err:
        if err.errno in _FULL:
            raise os_error(DiskFullError, err.errno, f"no space left on the device to write {path} "
                           f"({err.strerror}); its previous version, if any, is kept") from None
        raise


def atomic_write(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temp file in the same directory and a rename.

    Raises:
        DiskFullError: the disk (or the quota) is full; ``path`` is as it was.
        OSError: any other failure to write; ``path`` is as it was.
    """
    path = Path(path)
    with disk_full_said(path):
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                os.fchmod(f.fileno(), file_mode())
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def file_version(path: str | os.PathLike) -> tuple[int, int, int, int] | None:
    """Which version of ``path`` is there now: (device, inode, size, mtime in ns), None if it cannot
    be stat'ed. :func:`atomic_write` makes a new inode each time, so a rewrite changes it; a rename
    (as of a run moved back from ``.replaced/``) keeps it. Take it *before* reading the file: a
    rewrite in between then shows as a change, never as the same version."""
    try:
        info = os.stat(path)
    except OSError:
        return None
    return info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns


def append_text(path: str | os.PathLike, text: str) -> None:
    """Append ``text`` to ``path`` (created if missing), saying so plainly when the disk is full."""
    with disk_full_said(path), open(path, "a", encoding="utf-8") as f:
        f.write(text)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def stat_error(err: OSError, path: str) -> OSError:
    """The error a user should read for a failed ``os.stat``/``open`` of ``path``."""
    if err.errno == errno.ENOENT:
        return FileNotFoundError(f"no such file: {path}")
    if err.errno == errno.ELOOP:
        return os_error(OSError, errno.ELOOP, f"{path} is a loop of symbolic links (it never reaches a file)")
    if err.errno == errno.EACCES:
        return PermissionError(f"permission denied: {path}")
    return os_error(OSError, err.errno, f"{path}: {err.strerror}")


def read_regular(path: str | os.PathLike, what: str, limit: int) -> bytes:
    """The bytes of the regular file ``path``, at most ``limit`` of them.

    Args:
        path: what the user named.
        what: the kind of file expected, for the errors ("a text file", "a checkpoint file").
        limit: the largest size accepted, in bytes.

    Raises:
        FileNotFoundError, IsADirectoryError, PermissionError, OSError: missing, a directory,
            unreadable, a loop of symbolic links.
        ValueError: not a regular file (FIFO, device, socket), or larger than ``limit``.
    """
    name = os.fspath(path)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below.
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK)
    except IsADirectoryError:
        raise IsADirectoryError(f"{name} is a directory, not {what}") from None
    except OSError as err:
        raise stat_error(err, name) from None
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(f"{name} is a directory, not {what}")
        if not stat.S_ISREG(info.st_mode):
            raise ValueError(f"{name} is {_kind(info.st_mode)}, not {what}: give a regular file")
        if info.st_size > limit:
            raise ValueError(f"{name} is {info.st_size:,} bytes; the limit for {what} is {limit:,} bytes")
    except BaseException:
        os.close(fd)
        raise
    with os.fdopen(fd, "rb") as f:
        data = f.read(info.st_size + 1)  # bounded (by the limit) even if the file grows meanwhile
    if len(data) > limit:
        raise ValueError(f"{name} is over {limit:,} bytes; the limit for {what} is {limit:,} bytes")
    return data
