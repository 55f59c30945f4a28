"""What a bulk job leaves under its output besides its results, and removing it. Torch-free.

    tidy(storage, output, keep_work=False)       # after success, while the job holds the output
    clean(storage, output, before=time.time())   # after a failure or a cancel

- ``_work/``: the plan, the chunk manifests and the chunks' results (service.jobs.files). A failed
  job needs them to resume (submitting it again skips the stored chunks), so they are removed
  only after success, and then not with ``options.keep_work``.
- Temporary files of interrupted local writes: the storage layer writes a local file through
  ``.tmp-*.part`` beside it and renames it; a worker killed meanwhile leaves that file.
- Unfinished S3 multipart uploads: s3fs uploads a big file (a big job's cleaned.csv) in parts;
  a writer killed half way leaves the parts stored, and billed, until the upload is aborted.
  (Google Cloud Storage and Azure drop unfinished uploads themselves after a week.)

Only the job's own files are touched: its three result files and whatever lies under
``_work/``, never other keys under the output prefix (an output may be a bucket's root).
``before`` (seconds since the epoch) spares what was started later: once a failed job has
released its output, a new job may be writing there.

Each output is resolved by the storage layer first (``Storage.resolve``: the allowed protocols
and roots, the canonical location), and what is touched is what was checked: a local output is
walked from its root's folder by file descriptors, never following a symlink
(labelclean.storage.local); an object store's output is its canonical ``bucket/prefix``, on the
storage's own fsspec filesystem. S3's DeleteObjects removes 1,000 keys a call.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from dataclasses import dataclass
from typing import Any

from ...storage import Storage
from ...storage.confinement import Local
from ...storage.local import folder

RESULTS = frozenset({"cleaned.csv", "errors.csv", "summary.json"})
WORK = "_work"
TEMP_PREFIX, TEMP_SUFFIX = ".tmp-", ".part"
PAGE = 1000  # keys per S3 listing and per DeleteObjects call (S3's maximum for both)


@dataclass
class Removed:
    """What a tidy-up removed."""

    work: int = 0  # files under _work/
    temporary: int = 0  # .tmp-*.part files
    uploads: int = 0  # unfinished multipart uploads aborted

    def __str__(self) -> str:
        return (
            f"{self.work} file(s) of _work/, {self.temporary} temporary file(s), "
            f"{self.uploads} unfinished upload(s)"
        )


def tidy(storage: Storage, output: str, *, keep_work: bool) -> Removed:
    """After success: the leftovers of interrupted writes, and ``_work/`` unless ``keep_work``.
    Run it while the job holds its output, so that nothing there is another job's."""
    removed = clean(storage, output, before=None)
    if not keep_work:
        removed.work = remove_work(storage, output)
    return removed


def clean(storage: Storage, output: str, *, before: float | None) -> Removed:
    """Remove the job's temporary files and abort its unfinished uploads under ``output``
    (those started before ``before``; all with None). ``_work/`` stays."""
    target = storage.resolve(output)
    if isinstance(target, Local):
        return Removed(temporary=_local_temporary(target, before))
    where = target.where
    if where.protocol == "s3":
        return Removed(uploads=_abort_uploads(storage.filesystem("s3"), where.path, before))
    return Removed()


def remove_work(storage: Storage, output: str) -> int:
    """Remove ``output``'s ``_work/`` and everything under it; how many files it held."""
    target = storage.resolve(output)
    if isinstance(target, Local):
        return _remove_local_work(target)
    where = target.where
    fs = storage.filesystem(where.protocol)
    path = f"{where.path.rstrip('/')}/{WORK}"
    if where.protocol == "s3":
        return _remove_s3_prefix(fs, path + "/")
    if not fs.exists(path):
        return 0
    count = len(fs.find(path))
    fs.rm(path, recursive=True)
    return count


def is_ours(name: str) -> bool:
    """Whether ``name`` (a path under the output) is a job's own file: a result or under _work."""
    return name in RESULTS or name.startswith(WORK + "/")


# Local files: walked by descriptors from the output's folder, symlinks never followed.


def _is_temporary(name: str) -> bool:
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)


def _remove_local_work(output: Local) -> int:
    """Remove ``_work`` in the output's folder (a symlink there is left alone)."""
    try:
        with folder(output.root, output.parts) as out:
            if not _is_folder(WORK, out):
                return 0
            with folder(output.root, (*output.parts, WORK)) as work:
                count = sum(len(files) for _, _, files, _ in os.fwalk(".", dir_fd=work))
            shutil.rmtree(WORK, dir_fd=out)  # by descriptors: no symlink is followed
    except FileNotFoundError:  # no output folder: nothing was written
        return 0
    return count


def _local_temporary(output: Local, before: float | None) -> int:
    """Remove ``.tmp-*.part`` files in the output's folder and anywhere under its ``_work``,
    last changed before ``before``."""
    removed = 0
    try:
        with folder(output.root, output.parts) as out:
            removed += _remove_temporary(out, before)
            if _is_folder(WORK, out):
                with folder(output.root, (*output.parts, WORK)) as work:
                    for _, _, files, fd in os.fwalk(".", dir_fd=work):
                        removed += _remove_temporary(fd, before, files)
    except FileNotFoundError:
        return removed
    return removed


def _is_folder(name: str, parent: int) -> bool:
    try:
        return stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode)
    except FileNotFoundError:
        return False


def _remove_temporary(parent: int, before: float | None, names: list[str] | None = None) -> int:
    """Remove the temporary files among ``names`` (all the folder's when None) in ``parent``."""
    removed = 0
    for name in os.listdir(parent) if names is None else names:
        if not _is_temporary(name):
            continue
        with contextlib.suppress(FileNotFoundError):  # its writer finished or gave up
            found = os.stat(name, dir_fd=parent, follow_symlinks=False)
            if not stat.S_ISREG(found.st_mode):
                continue
            if before is None or found.st_mtime < before:
                os.unlink(name, dir_fd=parent)
                removed += 1
    return removed


# S3.


def _abort_uploads(fs: Any, path: str, before: float | None) -> int:
    """Abort the unfinished multipart uploads of the job's files under ``bucket/prefix``."""
    bucket, _, prefix = path.partition("/")
    prefix = f"{prefix}/" if prefix else ""
    request = {"Bucket": bucket, "Prefix": prefix}
    aborted = 0
    while True:
        page = fs.call_s3("list_multipart_uploads", **request)
        for upload in page.get("Uploads", []):
            key = upload["Key"]
            if not is_ours(key[len(prefix) :]):
                continue
            if before is not None and upload["Initiated"].timestamp() >= before:
                continue
            fs.call_s3(
                "abort_multipart_upload", Bucket=bucket, Key=key, UploadId=upload["UploadId"]
            )
            aborted += 1
        if not page.get("IsTruncated"):
            return aborted
        request.update(KeyMarker=page["NextKeyMarker"], UploadIdMarker=page["NextUploadIdMarker"])


def _remove_s3_prefix(fs: Any, path: str) -> int:
    """Remove every key under ``bucket/prefix/``, a page of 1,000 keys at a time."""
    bucket, _, prefix = path.partition("/")
    request: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": PAGE}
    removed = 0
    while True:
        page = fs.call_s3("list_objects_v2", **request)
        keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
        if keys:
            answer = fs.call_s3(
                "delete_objects", Bucket=bucket, Delete={"Objects": keys, "Quiet": True}
            )
            if answer.get("Errors"):
                raise OSError(f"{len(answer['Errors'])} of {len(keys)} objects not deleted")
            removed += len(keys)
        if not page.get("IsTruncated"):
            return removed
        request["ContinuationToken"] = page["NextContinuationToken"]
