"""Local files opened beneath a root without following symlinks.

    with open_file(root, ("in", "x.png")) as fh: ...       # read
    with writer(root, ("out", "cleaned.csv")) as fh: ...   # temporary file, then a rename
    names(root, ("in",)), exists(...), delete(...)

Every path is a root (a real folder) and the components below it, as
labelclean.storage.confinement checked them. Each folder is opened relative to the one before
it with ``O_NOFOLLOW | O_DIRECTORY`` (``openat``), starting from the root's own descriptor, and
the file last with ``O_NOFOLLOW``: a symlink anywhere below the root, one swapped in between the
check and the open included, fails the operation (ELOOP) instead of leading somewhere else. The
result always lies beneath the root. (Linux's openat2 with RESOLVE_BENEATH does this in one call,
but Python does not expose it.)

Writes go to a temporary file in the target's folder, opened through that folder's descriptor,
and are renamed over the target in the same folder (``renameat``): a reader sees the old file
or the new one, whole, and the rename replaces a symlink rather than writing through it.
Reads open regular files only (a FIFO would block the reader forever). Errors are plain
OSErrors; labelclean.storage.store words them with the URI as given.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
from collections.abc import Iterator, Sequence
from typing import IO

from .errors import NotRegularFile

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
TEMP_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_MODE = 0o644  # a written file's mode, whatever the umask (as an atomic rename leaves it)


def _symlink_error(name: str) -> OSError:
    return OSError(errno.ELOOP, "a symlink, not followed", name)


def _step(folder: int, name: str, create: bool) -> int:
    """The descriptor of ``name`` in ``folder`` (a folder, not a symlink to one); ``create``
    makes it when it is missing."""
    try:
        return os.open(name, DIR_FLAGS, dir_fd=folder)
    except FileNotFoundError:
        if not create:
            raise
    except NotADirectoryError:  # O_DIRECTORY | O_NOFOLLOW on a symlink: ENOTDIR
        if stat.S_ISLNK(os.stat(name, dir_fd=folder, follow_symlinks=False).st_mode):
            raise _symlink_error(name) from None
        raise
    with contextlib.suppress(FileExistsError):  # another writer made it meanwhile
        os.mkdir(name, 0o777, dir_fd=folder)  # the umask applies, as os.makedirs
    return os.open(name, DIR_FLAGS, dir_fd=folder)


@contextlib.contextmanager
def folder(root: str, parts: Sequence[str], *, create: bool = False) -> Iterator[int]:
    """A descriptor of the folder ``root/parts...``, walked from the root one component at a
    time without following symlinks; ``create`` makes the missing folders on the way."""
    fd = os.open(root, DIR_FLAGS)
    try:
        for name in parts:
            child = _step(fd, name, create)
            os.close(fd)
            fd = child
        yield fd
    finally:
        os.close(fd)


def _leaf(parts: Sequence[str]) -> str:
    if not parts:  # the root itself
        raise IsADirectoryError(errno.EISDIR, "a folder, not a file")
    return parts[-1]


def open_file(root: str, parts: Sequence[str]) -> IO[bytes]:
    """The regular file ``root/parts...``, open for reading (binary)."""
    name = _leaf(parts)
    with folder(root, parts[:-1]) as parent:
        fd = os.open(name, READ_FLAGS, dir_fd=parent)
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise IsADirectoryError(errno.EISDIR, "a folder, not a file", name)
        if not stat.S_ISREG(mode):
            raise NotRegularFile(errno.EINVAL, "not a regular file", name)
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read(root: str, parts: Sequence[str], limit: int | None) -> bytes | None:
    """The whole file, or at most ``limit + 1`` bytes of it; None when its size (of the open
    file, before reading) is over ``limit``."""
    with open_file(root, parts) as fh:
        if limit is None:
            return fh.read()
        return None if os.fstat(fh.fileno()).st_size > limit else fh.read(limit + 1)


def exists(root: str, parts: Sequence[str]) -> bool:
    """Whether ``root/parts...`` exists (a symlink counts as itself, never followed)."""
    if not parts:
        return True
    try:
        with folder(root, parts[:-1]) as parent:
            os.stat(parts[-1], dir_fd=parent, follow_symlinks=False)
    except (FileNotFoundError, NotADirectoryError):
        return False
    return True


def names(root: str, parts: Sequence[str]) -> Iterator[str]:
    """The names of the files directly in the folder ``root/parts...`` (a symlink is listed when
    it points to a file; reading it is checked like any other path)."""
    with folder(root, parts) as fd, os.scandir(fd) as entries:
        for entry in entries:
            if entry.is_file():
                yield entry.name


@contextlib.contextmanager
def writer(root: str, parts: Sequence[str]) -> Iterator[IO[bytes]]:
    """A file to write ``root/parts...`` through: a temporary file beside it, renamed over it
    when the block ends without an exception, removed otherwise. Missing folders are made."""
    name = _leaf(parts)
    with folder(root, parts[:-1], create=True) as parent:
        temp = f".tmp-{secrets.token_hex(8)}.part"
        fd = os.open(temp, TEMP_FLAGS, 0o600, dir_fd=parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                yield fh
                os.fchmod(fh.fileno(), FILE_MODE)
            os.replace(temp, name, src_dir_fd=parent, dst_dir_fd=parent)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp, dir_fd=parent)
            raise


def delete(root: str, parts: Sequence[str]) -> None:
    """Remove the file ``root/parts...`` (a symlink itself, not what it points to); a missing
    one is not an error."""
    name = _leaf(parts)
    with contextlib.suppress(FileNotFoundError), folder(root, parts[:-1]) as parent:
        os.unlink(name, dir_fd=parent)
