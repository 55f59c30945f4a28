"""One storage layer for bulk jobs and training images: local files and fsspec URIs.

    storage = Storage.from_settings(settings)        # the service and workers: confined
    storage = Storage.local()                        # the offline CLI, training: anywhere
    for name, uri in storage.list("s3://bucket/images/"):
        data = storage.read_bytes(uri)
    storage.write_bytes(storage.join("file:///data/out", "summary.json"), b"{}")

URIs are strings: ``s3://bucket/key`` (s3fs, with ``s3_endpoint_url`` for MinIO, Ceph or moto),
``file:///abs/path``, a plain path (a local file), or any fsspec protocol that is installed and
allowed (``gcs://`` with gcsfs, ``az://`` with adlfs).

Safety: only ``protocols`` are used. Local paths are confined to ``file_roots``: a path is
resolved first (``..`` and every symlink, ``os.path.realpath``) and the resolved path must lie
inside a resolved root; it is that resolved path which is then opened, so neither ``..`` nor a
symlink leads out. ``file_roots=None`` (``Storage.local()``) means no confinement; an empty tuple
refuses local files altogether. Local writes are atomic (a temporary file in the same folder,
then a rename); an S3 object appears whole when its upload completes.

Every failure is a ``StorageError`` whose message names the URI as the caller gave it and the
kind of problem (``not found``, ``permission denied``, ...), never the backend's own text, which
can quote a resolved path or what the backend found (the original is its ``__cause__``).
Torch-free.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .settings import Settings

ALIASES = {"s3a": "s3", "gs": "gcs", "abfs": "az", "abfss": "az", "local": "file"}
COPY_BLOCK = 1 << 20
WRITE_BLOCK = 5 << 20
"""Bytes a remote file buffers before it uploads them as one part (S3's smallest part size):
writing a big file (a job's cleaned.csv) holds this much, not s3fs's default of 50 MiB."""


class StorageError(OSError):
    """A URI that cannot be used or read; ``missing`` when it does not exist, ``field`` when a
    caller knows which input it came from (``images``, ``labels``, ``output``)."""

    def __init__(
        self, message: str, *, uri: str = "", missing: bool = False, field: str | None = None
    ) -> None:
        super().__init__(message)
        self.uri = uri
        self.missing = missing
        self.field = field

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class TooLarge(StorageError):
    """An object over the size its reader allows (``read_bytes(max_bytes=)``), refused having
    read at most one byte more than that."""


def split_uri(uri: str) -> tuple[str, str]:
    """``uri`` -> (protocol, path): ``("s3", "bucket/key")``, ``("file", "/abs/path")``."""
    if not isinstance(uri, str) or not uri:
        raise StorageError(f"{uri!r}: not a URI", uri=str(uri))
    if "\0" in uri:
        raise StorageError(f"{uri!r}: NUL character in URI", uri=uri)
    scheme, sep, rest = uri.partition("://")
    if not sep:
        return "file", uri
    scheme = scheme.lower()
    if scheme == "file":
        if rest.startswith("localhost/"):
            rest = rest[len("localhost") :]
        if not rest.startswith("/"):
            raise StorageError(
                f"{uri}: a file URI needs an absolute path (file:///abs/path)", uri=uri
            )
        return "file", rest
    return scheme, rest


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
    )
    for kind, words in kinds:
        if isinstance(exc, kind):
            return words
    if isinstance(exc, OSError) and exc.errno:
        return os.strerror(exc.errno).lower()  # the system's fixed words for the error number
    return f"storage error ({type(exc).__name__})"


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


class Storage:
    """Reads, writes and lists URIs within the allowed protocols and file roots."""

    S3_PAGE = 1000  # keys per S3 listing request (S3's own maximum)

    def __init__(
        self,
        *,
        file_roots: Sequence[str | Path] | None = (),
        protocols: Sequence[str] | None = ("file", "s3"),
        s3_endpoint_url: str | None = None,
        options: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        """``file_roots=None``: local files anywhere; ``protocols=None``: any fsspec protocol;
        ``options``: extra fsspec arguments per protocol (e.g. ``{"gcs": {"token": ...}}``)."""
        self.file_roots = (
            None if file_roots is None else tuple(os.path.realpath(r) for r in file_roots)
        )
        self.protocols = None if protocols is None else {ALIASES.get(p, p) for p in protocols}
        self.s3_endpoint_url = s3_endpoint_url
        self.options = {k: dict(v) for k, v in (options or {}).items()}
        self._filesystems: dict[str, Any] = {}

    @classmethod
    def from_settings(cls, settings: Settings) -> Storage:
        """The service's storage: ``LABELCLEAN_FILE_ROOTS``, ``_STORAGE_PROTOCOLS``,
        ``_S3_ENDPOINT_URL``."""
        return cls(
            file_roots=settings.file_roots,
            protocols=settings.storage_protocols,
            s3_endpoint_url=settings.s3_endpoint_url,
        )

    @classmethod
    def local(cls, *, s3_endpoint_url: str | None = None) -> Storage:
        """Local files anywhere and every installed fsspec protocol (the offline CLI, training:
        the user's own machine and credentials). S3's endpoint: ``s3_endpoint_url``, else
        ``LABELCLEAN_S3_ENDPOINT_URL``, else botocore's own settings (``AWS_ENDPOINT_URL``)."""
        endpoint = s3_endpoint_url or os.environ.get("LABELCLEAN_S3_ENDPOINT_URL") or None
        return cls(file_roots=None, protocols=None, s3_endpoint_url=endpoint)

    # Resolving URIs.

    def _check(self, uri: str) -> tuple[str, str]:
        """(protocol, path to use): refuses protocols not allowed and local paths outside the
        roots; a local path comes back resolved (``..`` and symlinks)."""
        protocol, path = split_uri(uri)
        canonical = ALIASES.get(protocol, protocol)
        if self.protocols is not None and canonical not in self.protocols:
            allowed = ", ".join(sorted(self.protocols)) or "none"
            raise StorageError(
                f"{uri}: protocol {protocol!r} is not allowed here (allowed: {allowed}; "
                "LABELCLEAN_STORAGE_PROTOCOLS)",
                uri=uri,
            )
        if canonical != "file":
            return protocol, path
        real = os.path.realpath(path)
        if self.file_roots is not None:
            if not self.file_roots:
                raise StorageError(
                    f"{uri}: local files are not allowed here (LABELCLEAN_FILE_ROOTS is empty)",
                    uri=uri,
                )
            if not any(_inside(real, root) for root in self.file_roots):
                raise StorageError(
                    f"{uri}: outside the allowed folders (LABELCLEAN_FILE_ROOTS); "
                    "'..' and symlinks are resolved before this check",
                    uri=uri,
                )
        return "file", real

    def check(self, uri: str) -> None:
        """Raise StorageError if ``uri`` may not be used here (no I/O for local paths)."""
        self._check(uri)

    def _fs(self, protocol: str) -> Any:
        fs = self._filesystems.get(protocol)
        if fs is None:
            try:
                import fsspec
            except ImportError as exc:
                raise StorageError(
                    f"{protocol}:// needs fsspec (pip install 'labelclean[service]')"
                ) from exc
            options = dict(self.options.get(protocol, {}))
            if ALIASES.get(protocol, protocol) == "s3":
                options.setdefault("use_listings_cache", False)  # other workers write too
                if self.s3_endpoint_url:
                    options.setdefault("endpoint_url", self.s3_endpoint_url)
            try:
                fs = fsspec.filesystem(protocol, **options)
            except ImportError as exc:
                why = "its fsspec package is not installed"
                raise StorageError(f"{protocol}:// cannot be used: {why}") from exc
            except ValueError as exc:
                raise StorageError(f"{protocol}:// cannot be used: unknown protocol") from exc
            self._filesystems[protocol] = fs
        return fs

    @staticmethod
    def _error(uri: str, action: str, exc: BaseException) -> StorageError:
        if isinstance(exc, StorageError):
            return exc
        missing = isinstance(exc, FileNotFoundError)
        return StorageError(f"{uri}: cannot {action} ({problem(exc)})", uri=uri, missing=missing)

    # Operations.

    def join(self, prefix: str, *names: str) -> str:
        """``prefix`` + ``/name``...; names are single path components (no ``/``, ``..``)."""
        for name in names:
            if not name or name in (".", "..") or "/" in name or "\0" in name:
                raise StorageError(f"{name!r}: not a file name (under {prefix})", uri=prefix)
        return "/".join([prefix.rstrip("/"), *names]) if names else prefix

    def exists(self, uri: str) -> bool:
        protocol, path = self._check(uri)
        try:
            if protocol == "file":
                return os.path.exists(path)
            return bool(self._fs(protocol).exists(path))
        except Exception as exc:  # noqa: BLE001 - any backend error: say which URI
            raise self._error(uri, "check", exc) from exc

    def read_bytes(self, uri: str, *, max_bytes: int | None = None) -> bytes:
        """The whole object. With ``max_bytes``, a bigger one raises TooLarge, and memory never
        holds more than ``max_bytes + 1`` of its bytes: a local file's size is checked before
        reading (fstat of the opened file), an S3 object is fetched with one GET of at most
        that many bytes (a HEAD first would cost a round trip per image), any other object's
        size is asked for first."""
        protocol, path = self._check(uri)
        try:
            data = self._read(protocol, path, max_bytes)
        except Exception as exc:  # noqa: BLE001
            raise self._error(uri, "read", exc) from exc
        if data is None or (max_bytes is not None and len(data) > max_bytes):
            raise TooLarge(f"{uri}: larger than {max_bytes} bytes (not read)", uri=uri)
        return data

    def _read(self, protocol: str, path: str, limit: int | None) -> bytes | None:
        """At most ``limit + 1`` bytes of the object (all without a limit); None when its size,
        known before reading, is over ``limit``."""
        if protocol == "file":
            with open(path, "rb") as fh:
                if limit is None:
                    return fh.read()
                return None if os.fstat(fh.fileno()).st_size > limit else fh.read(limit + 1)
        fs = self._fs(protocol)
        if ALIASES.get(protocol, protocol) != "s3":
            return None if limit is not None and fs.size(path) > limit else fs.cat_file(path)
        if limit is None:  # one GET; s3fs's default sends a HEAD first, to split big objects
            return fs.cat_file(path, max_concurrency=1)
        try:
            return fs.cat_file(path, start=0, end=limit + 1)  # one ranged GET
        except OSError as exc:  # S3 answers InvalidRange for any range of an empty object
            if exc.errno == errno.EINVAL and fs.size(path) == 0:
                return b""
            raise

    def write_bytes(self, uri: str, data: bytes) -> None:
        """Write the whole object at once: atomic for local files (temporary file + rename)."""
        with self.open(uri, "wb") as fh:
            fh.write(data)

    def delete(self, uri: str) -> None:
        """Remove a file; a missing one is not an error."""
        protocol, path = self._check(uri)
        try:
            if protocol == "file":
                with contextlib.suppress(FileNotFoundError):
                    os.remove(path)
            else:
                fs = self._fs(protocol)
                if fs.exists(path):
                    fs.rm_file(path)
        except Exception as exc:  # noqa: BLE001
            raise self._error(uri, "delete", exc) from exc

    @contextlib.contextmanager
    def open(self, uri: str, mode: str = "rb") -> Iterator[IO[bytes]]:
        """A binary file. Writing (``wb``): the file appears only if the block ends without an
        exception (local: temporary file + rename; S3: the upload completes or is aborted)."""
        if mode not in ("rb", "wb"):
            raise ValueError(f"mode must be 'rb' or 'wb', not {mode!r}")
        protocol, path = self._check(uri)
        if mode == "rb":
            try:
                fh = open(path, "rb") if protocol == "file" else self._fs(protocol).open(path)  # noqa: SIM115
            except Exception as exc:  # noqa: BLE001
                raise self._error(uri, "read", exc) from exc
            with fh:
                yield fh
        elif protocol == "file":
            with self._local_writer(uri, path) as fh:
                yield fh
        else:
            with self._remote_writer(uri, protocol, path) as fh:
                yield fh

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

    @contextlib.contextmanager
    def _local_writer(self, uri: str, path: str) -> Iterator[IO[bytes]]:
        folder = os.path.dirname(path)
        try:
            os.makedirs(folder, exist_ok=True)
            fd, temp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=".part")
        except Exception as exc:  # noqa: BLE001
            raise self._error(uri, "write", exc) from exc
        try:
            with os.fdopen(fd, "wb") as fh:
                yield fh
            os.chmod(temp, 0o644)
            os.replace(temp, path)
        except BaseException as exc:
            with contextlib.suppress(OSError):
                os.remove(temp)
            if isinstance(exc, OSError):
                raise self._error(uri, "write", exc) from exc
            raise

    @contextlib.contextmanager
    def _remote_writer(self, uri: str, protocol: str, path: str) -> Iterator[IO[bytes]]:
        try:
            fh = self._fs(protocol).open(path, "wb", autocommit=False, block_size=WRITE_BLOCK)
        except Exception as exc:  # noqa: BLE001
            raise self._error(uri, "write", exc) from exc
        try:
            yield fh
        except BaseException:  # the caller's block failed: abort the upload
            with contextlib.suppress(Exception):
                fh.discard()
            raise
        try:
            fh.close()
            fh.commit()
        except Exception as exc:  # noqa: BLE001
            with contextlib.suppress(Exception):
                fh.discard()
            raise self._error(uri, "write", exc) from exc

    def list(self, prefix: str) -> Iterator[tuple[str, str]]:
        """(name, uri) of each file directly under ``prefix`` (a folder; nothing nested), in no
        particular order, read page by page. A missing local folder raises StorageError."""
        protocol, path = self._check(prefix)
        try:
            if protocol == "file":
                yield from self._list_local(prefix, path)
            elif ALIASES.get(protocol, protocol) == "s3":
                yield from self._list_s3(prefix, self._fs(protocol), path)
            else:
                fs = self._fs(protocol)
                for info in fs.ls(path.rstrip("/"), detail=True):
                    if info.get("type") == "file":
                        name = info["name"].rstrip("/").rsplit("/", 1)[-1]
                        yield name, self.join(prefix, name)
        except StorageError:
            raise
        except Exception as exc:  # noqa: BLE001
            raise self._error(prefix, "list", exc) from exc

    def _list_local(self, prefix: str, path: str) -> Iterator[tuple[str, str]]:
        if not os.path.isdir(path):
            raise StorageError(f"{prefix}: folder not found", uri=prefix, missing=True)
        with os.scandir(path) as entries:
            for entry in entries:
                if entry.is_file():  # a symlink out is listed; reading it is refused
                    yield entry.name, self.join(prefix, entry.name)

    def _list_s3(self, prefix: str, fs: Any, path: str) -> Iterator[tuple[str, str]]:
        bucket, _, key = path.partition("/")
        key = key.strip("/")
        key = key + "/" if key else ""
        request = {"Bucket": bucket, "Prefix": key, "Delimiter": "/", "MaxKeys": self.S3_PAGE}
        while True:  # one page (up to 1,000 keys) at a time: a million keys never pile up
            page = fs.call_s3("list_objects_v2", **request)
            for item in page.get("Contents", []):
                name = item["Key"][len(key) :]
                if name:
                    yield name, self.join(prefix, name)
            if not page.get("IsTruncated"):
                return
            request["ContinuationToken"] = page["NextContinuationToken"]

    def copy_to(self, uri: str, out: IO[bytes]) -> None:
        """Stream ``uri``'s bytes into the open file ``out`` (a block at a time)."""
        with self.open(uri, "rb") as fh:
            while block := fh.read(COPY_BLOCK):
                out.write(block)
