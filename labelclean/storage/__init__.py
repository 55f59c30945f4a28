"""One storage layer for bulk jobs and training images: local files and fsspec URIs.

    storage = Storage.from_settings(settings)        # the service and workers: confined
    storage = Storage.local()                        # the offline CLI, training: anywhere
    for name, uri in storage.list("s3://bucket/images/"):
        data = storage.read_bytes(uri)
    storage.write_bytes(storage.join("file:///data/out", "summary.json"), b"{}")

URIs are strings: ``s3://bucket/key`` (s3fs, with ``s3_endpoint_url`` for MinIO, Ceph or moto),
``file:///abs/path``, a plain path (a local file), or ``gcs://`` / ``az://`` with gcsfs / adlfs
installed. The offline storage takes any installed fsspec protocol.

Safety (the service's storage): one allowlist of URI prefixes, the roots
(``LABELCLEAN_STORAGE_ROOTS``, e.g. ``file:///buckets/,s3://uploads/``), and the allowed
protocols. Every URI, and every one a job derives from them, is checked on its canonical
location (``uris``: protocol aliases and case, ``//``, ``.``, ``..``, percent-encoding of file
URIs) and must lie under a root (``confinement``: local paths with their symlinks resolved). A
local file is then opened beneath its root's folder one component at a time without following
symlinks (``local``), so a symlink swapped in after the check leads nowhere; local writes go
through a temporary file renamed in the same folder. Objects are read and written by their
canonical ``bucket/key`` (``remote``). Every failure is a ``StorageError`` naming the URI as the
caller gave it and the kind of problem, never a resolved path or a backend's own text
(``errors``). Torch-free.

Modules: ``uris`` (canonical locations), ``confinement`` (protocols and roots), ``local``
(files beneath a root), ``remote`` (fsspec objects), ``store`` (the Storage class), ``errors``.
"""

from __future__ import annotations

from .errors import StorageError, TooLarge, problem
from .store import Storage
from .uris import split_uri

__all__ = ["Storage", "StorageError", "TooLarge", "problem", "split_uri"]
