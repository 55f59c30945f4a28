"""The Storage class: reads, writes and lists URIs within the allowed protocols and roots.

Each operation checks its URI first (labelclean.storage.confinement: the canonical location,
under a root) and then works on what was checked: a local file beneath its root without
following symlinks (labelclean.storage.local), an object by its canonical ``bucket/key``
(labelclean.storage.remote). Every failure is a StorageError naming the URI as given.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from . import local, remote
from .confinement import Confinement, Local, Target
from .errors import BadUri, StorageError, TooLarge, io_error, refused

if TYPE_CHECKING:
    from ..settings import Settings

COPY_BLOCK = 1 << 20


class Storage:
    """Reads, writes and lists URIs within the allowed protocols and roots."""

    S3_PAGE = 1000  # keys per S3 listing request (S3's own maximum)

    def __init__(
        self,
        *,
        roots: Sequence[str | Path] | None = (),
        file_roots: Sequence[str | Path] = (),
        protocols: Sequence[str] | None = ("file", "s3"),
        s3_endpoint_url: str | None = None,
        options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """``roots``: URI prefixes (``file:///buckets/``, ``s3://uploads/``, or absolute
        folders) every URI must lie under; ``None``: anywhere. ``file_roots``: folders added to
        them (LABELCLEAN_FILE_ROOTS). ``protocols=None``: any fsspec protocol; ``options``:
        extra fsspec arguments per protocol (e.g. ``{"gcs": {"token": ...}}``). A root that
        cannot be used raises ValueError."""
        allowed = None if roots is None else [*roots, *file_roots]
        try:
            self.confinement = Confinement(allowed, protocols)
        except BadUri as exc:
            raise ValueError(f"a storage root: {exc.reason}") from None
        self.s3_endpoint_url = s3_endpoint_url
        self.options = {k: dict(v) for k, v in (options or {}).items()}
        self._filesystems: dict[str, Any] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Storage:
        """The service's storage: ``LABELCLEAN_STORAGE_ROOTS`` with ``_FILE_ROOTS`` (their
        union), ``_STORAGE_PROTOCOLS``, ``_S3_ENDPOINT_URL``."""
        return cls(
            roots=settings.storage_roots,
            file_roots=settings.file_roots,
            protocols=settings.storage_protocols,
            s3_endpoint_url=settings.s3_endpoint_url,
        )

    @classmethod
    def local(cls, *, s3_endpoint_url: str | None = None) -> Storage:
        """Local files anywhere and every installed fsspec protocol (the offline CLI, training:
        the user's own machine and credentials). S3's endpoint: ``s3_endpoint_url``, else
        ``LABELCLEAN_S3_ENDPOINT_URL``, else botocore's own settings (``AWS_ENDPOINT_URL``)."""
        import os

        endpoint = s3_endpoint_url or os.environ.get("LABELCLEAN_S3_ENDPOINT_URL") or None
        return cls(roots=None, protocols=None, s3_endpoint_url=endpoint)

    # Checking URIs.

    def resolve(self, uri: str) -> Target:
        """Where ``uri`` leads once checked: ``Local(root, parts)`` (open it beneath ``root``
        with labelclean.storage.local) or ``Remote(Location)`` (its canonical ``bucket/key``);
        StorageError (with its ``code``) if it may not be used here. For code that works on a
        place itself (removing a job's leftovers): what it touches is what was checked."""
        try:
            return self.confinement.check(uri)
        except BadUri as exc:
            raise refused(uri, exc) from None

    def check(self, uri: str) -> None:
        """Raise StorageError (with its ``code``) if ``uri`` may not be used here."""
        self.resolve(uri)

    def location(self, uri: str) -> str:
        """``uri``'s canonical location (``file:///real/path``, ``s3://bucket/key``): one
        string for every spelling of one place (the key of an output's lock). A local one has
        its symlinks resolved: for keys and comparisons, never for messages."""
        return self.resolve(uri).location

    def filesystem(self, protocol: str) -> Any:
        """The fsspec filesystem of the canonical ``protocol`` (``Remote.where.protocol``), made
        once with this storage's options and S3 endpoint."""
        fs = self._filesystems.get(protocol)
        if fs is None:
            try:
                fs = remote.filesystem(
                    protocol, self.options.get(protocol, {}), self.s3_endpoint_url
                )  # fmt: skip
            except remote.Unavailable as exc:
                raise StorageError(f"{protocol}:// cannot be used: {exc}") from exc
            self._filesystems[protocol] = fs
        return fs

    # Operations.

    def join(self, prefix: str, *names: str) -> str:
        """``prefix`` + ``/name``...; names are single path components (no ``/``, ``..``). A
        ``%`` in a name under a file URI is written ``%25`` (file URIs are percent-decoded)."""
        for name in names:
            if not name or name in (".", "..") or "/" in name or "\0" in name:
                raise StorageError(f"{name!r}: not a file name (under {prefix})", uri=prefix)
        if names and prefix.partition("://")[0].lower() in ("file", "local"):
            names = tuple(name.replace("%", "%25") for name in names)
        return "/".join([prefix.rstrip("/"), *names]) if names else prefix

    def exists(self, uri: str) -> bool:
        target = self.resolve(uri)
        try:
            if isinstance(target, Local):
                return local.exists(target.root, target.parts)
            return bool(self.filesystem(target.where.protocol).exists(target.where.path))
        except Exception as exc:  # noqa: BLE001 - any backend error: say which URI
            raise io_error(uri, "check", exc) from exc

    def read_bytes(self, uri: str, *, max_bytes: int | None = None) -> bytes:
        """The whole object. With ``max_bytes``, a bigger one raises TooLarge, and memory never
        holds more than ``max_bytes + 1`` of its bytes: a local file's size is checked before
        reading (fstat of the opened file), an S3 object is fetched with one GET of at most
        that many bytes (a HEAD first would cost a round trip per image), any other object's
        size is asked for first."""
        target = self.resolve(uri)
        try:
            if isinstance(target, Local):
                data = local.read(target.root, target.parts, max_bytes)
            else:
                where = target.where
                fs = self.filesystem(where.protocol)
                data = remote.read(fs, where.protocol, where.path, max_bytes)
        except Exception as exc:  # noqa: BLE001
            raise io_error(uri, "read", exc) from exc
        if data is None or (max_bytes is not None and len(data) > max_bytes):
            raise TooLarge(f"{uri}: larger than {max_bytes} bytes (not read)", uri=uri)
        return data

    def write_bytes(self, uri: str, data: bytes) -> None:
        """Write the whole object at once: atomic (temporary file + rename; a whole upload)."""
        with self.open(uri, "wb") as fh:
            fh.write(data)

    def delete(self, uri: str) -> None:
        """Remove a file; a missing one is not an error."""
        target = self.resolve(uri)
        try:
            if isinstance(target, Local):
                local.delete(target.root, target.parts)
            else:
                remote.delete(self.filesystem(target.where.protocol), target.where.path)
        except Exception as exc:  # noqa: BLE001
            raise io_error(uri, "delete", exc) from exc

    @contextlib.contextmanager
    def open(self, uri: str, mode: str = "rb") -> Iterator[IO[bytes]]:
        """A binary file. Writing (``wb``): the file appears only if the block ends without an
        exception (local: temporary file + rename; S3: the upload completes or is aborted)."""
        if mode not in ("rb", "wb"):
            raise ValueError(f"mode must be 'rb' or 'wb', not {mode!r}")
        target = self.resolve(uri)
        if mode == "rb":
            try:
                fh = self._open_read(target)
            except Exception as exc:  # noqa: BLE001
                raise io_error(uri, "read", exc) from exc
            with fh:
                yield fh
            return
        with self._writer(uri, target) as fh:
            yield fh

    def _open_read(self, target: Target) -> IO[bytes]:
        if isinstance(target, Local):
            return local.open_file(target.root, target.parts)
        return self.filesystem(target.where.protocol).open(target.where.path)

    @contextlib.contextmanager
    def _writer(self, uri: str, target: Target) -> Iterator[IO[bytes]]:
        """The backend's atomic writer. Local: an OSError inside (opening, writing, renaming)
        becomes a StorageError naming ``uri``. Remote: a failure to open or to complete the
        upload does; what the caller's block raises aborts the upload and passes as it is."""
        if isinstance(target, Local):
            try:
                with local.writer(target.root, target.parts) as fh:
                    yield fh
            except OSError as exc:
                raise io_error(uri, "write", exc) from exc
            return
        try:
            fh = remote.open_upload(self.filesystem(target.where.protocol), target.where.path)
        except Exception as exc:  # noqa: BLE001
            raise io_error(uri, "write", exc) from exc
        try:
            yield fh
        except BaseException:
            remote.discard(fh)
            raise
        try:
            remote.complete(fh)
        except Exception as exc:  # noqa: BLE001
            remote.discard(fh)
            raise io_error(uri, "write", exc) from exc

    @contextlib.contextmanager
    def open_text(self, uri: str, mode: str = "r") -> Iterator[IO[str]]:
        """A UTF-8 text file (``r``: a byte order mark is skipped; newlines left for csv)."""
        if mode not in ("r", "w"):
            raise ValueError(f"mode must be 'r' or 'w', not {mode!r}")
        with self.open(uri, mode + "b") as raw:
            encoding = "utf-8-sig" if mode == "r" else "utf-8"
            text = io.TextIOWrapper(raw, encoding=encoding, newline="")  # type: ignore[arg-type]
            try:
                yield text
                text.flush()
            finally:
                text.detach()

    def list(self, prefix: str) -> Iterator[tuple[str, str]]:
        """(name, uri) of each file directly under ``prefix`` (a folder; nothing nested), in no
        particular order, read page by page. A missing local folder raises StorageError. Names
        that are no single path component (an S3 key ``p/..``) cannot be named: skipped."""
        target = self.resolve(prefix)
        try:
            if isinstance(target, Local):
                found = local.names(target.root, target.parts)
            else:
                where = target.where
                found = remote.names(self.filesystem(where.protocol), where.protocol, where.path,
                                     self.S3_PAGE)  # fmt: skip
            base = prefix.rstrip("/") + "/"  # as join() writes it, once, not per name
            percent = prefix.partition("://")[0].lower() in ("file", "local")
            for name in found:
                if name and name not in (".", "..") and "/" not in name and "\0" not in name:
                    yield name, base + (name.replace("%", "%25") if percent else name)
        except StorageError:
            raise
        except FileNotFoundError as exc:
            if isinstance(target, Local):
                raise StorageError(f"{prefix}: folder not found", uri=prefix, missing=True) from exc
            raise io_error(prefix, "list", exc) from exc
        except Exception as exc:  # noqa: BLE001
            raise io_error(prefix, "list", exc) from exc

    def copy_to(self, uri: str, out: IO[bytes]) -> None:
        """Stream ``uri``'s bytes into the open file ``out`` (a block at a time)."""
        with self.open(uri, "rb") as fh:
            while block := fh.read(COPY_BLOCK):
                out.write(block)
