"""Objects through fsspec: S3 (s3fs, with an endpoint for MinIO, Ceph or moto) and any other
installed protocol. Paths are canonical (``bucket/key``, labelclean.storage.uris): what was
checked against the roots is what is read or written. Errors are the backends' own;
labelclean.storage.store words them with the URI as given.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator, Mapping
from typing import IO, Any

WRITE_BLOCK = 5 << 20
"""Bytes a remote file buffers before it uploads them as one part (S3's smallest part size):
writing a big file (a job's cleaned.csv) holds this much, not s3fs's default of 50 MiB."""


class Unavailable(Exception):
    """A protocol whose fsspec implementation cannot be had (not installed, unknown)."""


def filesystem(protocol: str, options: Mapping[str, Any], s3_endpoint_url: str | None) -> Any:
    """A new fsspec filesystem for the canonical ``protocol``. S3: no listings cache (other
    workers write too) and ``s3_endpoint_url`` when given."""
    try:
        import fsspec
    except ImportError as exc:
        raise Unavailable("needs fsspec (pip install 'labelclean[service]')") from exc
    options = dict(options)
    if protocol == "s3":
        options.setdefault("use_listings_cache", False)
        if s3_endpoint_url:
            options.setdefault("endpoint_url", s3_endpoint_url)
    try:
        return fsspec.filesystem(protocol, **options)
    except ImportError as exc:
        raise Unavailable("its fsspec package is not installed") from exc
    except ValueError as exc:
        raise Unavailable("unknown protocol") from exc


def read(fs: Any, protocol: str, path: str, limit: int | None) -> bytes | None:
    """At most ``limit + 1`` bytes of the object (all without a limit); None when its size,
    known before reading, is over ``limit``. S3: one GET (s3fs's default sends a HEAD first, to
    split big objects), ranged when there is a limit."""
    if protocol != "s3":
        return None if limit is not None and fs.size(path) > limit else fs.cat_file(path)
    if limit is None:
        return fs.cat_file(path, max_concurrency=1)
    try:
        return fs.cat_file(path, start=0, end=limit + 1)  # one ranged GET
    except OSError as exc:  # S3 answers InvalidRange for any range of an empty object
        if exc.errno == errno.EINVAL and fs.size(path) == 0:
            return b""
        raise


def open_upload(fs: Any, path: str) -> IO[bytes]:
    """A file whose upload is completed by ``complete`` (the object appears whole) or aborted
    by ``discard`` (it never appears)."""
    return fs.open(path, "wb", autocommit=False, block_size=WRITE_BLOCK)


def complete(fh: Any) -> None:
    fh.close()
    fh.commit()


def discard(fh: Any) -> None:
    with contextlib.suppress(Exception):
        fh.discard()


def delete(fs: Any, path: str) -> None:
    if fs.exists(path):
        fs.rm_file(path)


def names(fs: Any, protocol: str, path: str, page: int) -> Iterator[str]:
    """The names of the objects directly under the prefix ``path`` (S3: ``page`` keys per
    listing request, so that a million keys never pile up)."""
    if protocol == "s3":
        yield from _s3_names(fs, path, page)
        return
    for info in fs.ls(path.rstrip("/"), detail=True):
        if info.get("type") == "file":
            yield info["name"].rstrip("/").rsplit("/", 1)[-1]


def _s3_names(fs: Any, path: str, page: int) -> Iterator[str]:
    bucket, _, key = path.partition("/")
    key = key.strip("/")
    key = key + "/" if key else ""
    request = {"Bucket": bucket, "Prefix": key, "Delimiter": "/", "MaxKeys": page}
    while True:
        listing = fs.call_s3("list_objects_v2", **request)
        for item in listing.get("Contents", []):
            name = item["Key"][len(key) :]
            if name:
                yield name
        if not listing.get("IsTruncated"):
            return
        request["ContinuationToken"] = listing["NextContinuationToken"]
