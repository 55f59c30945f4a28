"""What a bulk job says about a failure: the kind of problem, never the data behind it.

    describe(exc)          # "file:///b/x.png: cannot read (not found)", "internal error (KeyError)"
    image_problem(reason)  # "corrupt_image: cannot be decoded (corrupt or truncated)"
    frames(exc)            # where it happened (files, lines, functions), for the worker's log

A job may name any file its caller can name, and its errors travel back to that caller (the
job's error sample, errors.csv) and into the logs. An exception's own text can quote what it
read (Python's float() quotes its input, Pillow and botocore their findings) or the resolved
path behind a symlink, so none of it is passed on: the messages this project builds itself
(StorageError names the URI as given and the kind; InputError the field, the line and the kind)
are, and anything else becomes its type's name. Torch-free.
"""

from __future__ import annotations

import csv
import json
import traceback

from ..model.labels import InputError
from ..storage import StorageError

IMAGE_PROBLEMS = {
    "corrupt_image": "cannot be decoded (corrupt or truncated)",
    "unsupported_image": "not an image, or a format not allowed (LABELCLEAN_ALLOWED_FORMATS)",
    "image_too_large": "more pixels than allowed (LABELCLEAN_MAX_PIXELS) or a decompression bomb",
}


def describe(exc: BaseException) -> str:
    """``exc`` as a job may report it: what and where by the caller's names, never content."""
    if isinstance(exc, StorageError | InputError):
        return str(exc)  # built from the URI as given, the field, the line and the kind
    if isinstance(exc, json.JSONDecodeError):
        return "a file the job wrote is not valid JSON"
    if isinstance(exc, UnicodeDecodeError):
        return "not UTF-8 text"
    if isinstance(exc, csv.Error):
        return "malformed CSV"
    if isinstance(exc, MemoryError):
        return "out of memory"
    return f"internal error ({type(exc).__name__})"


def image_problem(reason: str) -> str:
    """An image's failure from model.cleaning (``kind: message``, the message Pillow's) as its
    kind and what the kind means."""
    kind = reason.partition(":")[0].strip()
    return f"{kind}: {IMAGE_PROBLEMS.get(kind, 'cannot be used')}"


def frames(exc: BaseException) -> str:
    """Where ``exc`` was raised, its traceback's frames without its message, on one line."""
    found = traceback.extract_tb(exc.__traceback__)
    where = " <- ".join(f"{f.filename}:{f.lineno} {f.name}" for f in reversed(found[-6:]))
    return f"{type(exc).__name__} at {where}" if where else type(exc).__name__
