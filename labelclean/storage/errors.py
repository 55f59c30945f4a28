"""What the storage layer says when it refuses a URI or an operation fails.

Every failure is a ``StorageError`` whose message names the URI as the caller gave it and the
kind of problem (``not found``, ``outside the allowed roots``, ...), never the backend's own
text, which can quote a resolved path or what the backend found (the original is its
``__cause__``). A refusal carries a ``code`` the service answers with (a 422 naming the field):

    uri_outside_roots      the canonical location lies under no LABELCLEAN_STORAGE_ROOTS entry
    protocol_not_allowed   a protocol not in LABELCLEAN_STORAGE_PROTOCOLS, or a chained URL
    invalid_uri            not a URI this layer can use (a host in a file URI, a bad bucket)
"""

from __future__ import annotations

import errno
import os

OUTSIDE_ROOTS = "uri_outside_roots"
PROTOCOL_NOT_ALLOWED = "protocol_not_allowed"
INVALID_URI = "invalid_uri"


class StorageError(OSError):
    """A URI that cannot be used or read; ``missing`` when it does not exist, ``field`` when a
    caller knows which input it came from (``images``, ``labels``, ``output``), ``code`` when
    the URI was refused before any I/O (one of the codes above)."""

    def __init__(
        self, message: str, *, uri: str = "", missing: bool = False, field: str | None = None,
        code: str | None = None,
    ) -> None:  # fmt: skip
        super().__init__(message)
        self.uri = uri
        self.missing = missing
        self.field = field
        self.code = code

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class TooLarge(StorageError):
    """An object over the size its reader allows (``read_bytes(max_bytes=)``), refused having
    read at most one byte more than that."""


class BadUri(ValueError):
    """Why a URI cannot be used, in a few words without the URI (the caller adds it as given):
    raised by the canonicalisation, turned into a StorageError by the storage layer and into a
    settings error naming the entry by ``labelclean.settings``."""

    def __init__(self, reason: str, code: str = INVALID_URI) -> None:
        super().__init__(reason)
        self.reason = reason
        self.code = code


class NotRegularFile(OSError):
    """A FIFO, socket or device where a file should be: never opened for reading (a FIFO would
    block the reader forever)."""


def refused(uri: str, exc: BadUri) -> StorageError:
    """``exc`` as the StorageError a caller sees: the URI as given, the reason, the code."""
    return StorageError(f"{uri}: {exc.reason}", uri=uri, code=exc.code)


def problem(exc: BaseException) -> str:
    """The kind of an I/O failure, in a few fixed words: never ``exc``'s own text."""
    kinds: tuple[tuple[type[BaseException], str], ...] = (
        (FileNotFoundError, "not found"),
        (PermissionError, "permission denied"),
        (IsADirectoryError, "a folder, not a file"),
        (NotADirectoryError, "a file where a folder should be"),
        (FileExistsError, "already exists"),
        (TimeoutError, "timed out"),
        (ConnectionError, "storage unreachable"),
        (NotRegularFile, "not a regular file"),
    )
    for kind, words in kinds:
        if isinstance(exc, kind):
            return words
    if isinstance(exc, OSError) and exc.errno == errno.ELOOP:  # O_NOFOLLOW met a symlink
        return "a symlink where the checked path had none (not followed)"
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower()  # the system's fixed words for the error number
    return f"storage error ({type(exc).__name__})"


def io_error(uri: str, action: str, exc: BaseException) -> StorageError:
    """A failed ``action`` (read, write, list, ...) on ``uri`` as a StorageError by kind."""
    if isinstance(exc, StorageError):
        return exc
    missing = isinstance(exc, FileNotFoundError)
    return StorageError(f"{uri}: cannot {action} ({problem(exc)})", uri=uri, missing=missing)
