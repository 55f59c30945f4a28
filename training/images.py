"""Fetch and decode training images from a folder or a bucket prefix (labelclean.storage).

    source = open_source("DATA/images")            # or "s3://bucket/prefix"
    pixels, failures = load_images(source, image_ids, spec)

Images are found by ImageID whatever their extension (``<ImageID>.jpg``, ``.png``, ...). An image
that is missing or fails to decode is skipped and reported, never a crash.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from tqdm import tqdm

from ..model.config import InputSpec
from ..model.openimages import DataError
from ..model.preprocess import ImageError, load_pixels
from ..storage import Storage, StorageError, split_uri


class ImageSource(Protocol):
    def keys(self) -> dict[str, str]:
        """ImageID -> key to read."""

    def read(self, key: str) -> bytes: ...


class StorageSource:
    """The files directly under a folder or URI prefix, read through labelclean.storage (the
    same layer as bulk jobs): a local folder, ``s3://bucket/prefix`` (s3fs; endpoint from
    ``AWS_ENDPOINT_URL`` or ``LABELCLEAN_S3_ENDPOINT_URL``), or another installed fsspec
    protocol."""

    def __init__(self, uri: str, storage: Storage | None = None) -> None:
        self.storage = storage or Storage.local()
        protocol, _ = split_uri(uri)
        self.uri = uri if protocol == "file" or uri.endswith("/") else uri + "/"

    def keys(self) -> dict[str, str]:
        try:
            return {name.rsplit(".", 1)[0]: key for name, key in self.storage.list(self.uri)}
        except StorageError as exc:
            if exc.missing and split_uri(self.uri)[0] == "file":
                raise DataError(f"{self.uri}: image folder not found") from exc
            reason = "not found" if exc.missing else str(exc)
            raise DataError(f"{self.uri}: cannot list images ({reason})") from exc

    def read(self, key: str) -> bytes:
        return self.storage.read_bytes(key)


def open_source(uri: str) -> ImageSource:
    """Images under a folder or URI prefix (``s3://bucket/prefix``); DataError if unusable."""
    try:
        return StorageSource(uri)
    except StorageError as exc:
        raise DataError(f"{uri}: unsupported image location ({exc})") from exc


@dataclass
class LoadFailure:
    image_id: str
    reason: str


def load_images(
    source: ImageSource,
    image_ids: list[str],
    spec: InputSpec,
    *,
    workers: int = 8,
    desc: str = "images",
    progress: bool = True,
) -> tuple[np.ndarray, np.ndarray, list[LoadFailure]]:
    """Decode every image once: -> (pixels (N, H, W, C) uint8, ok (N,) bool, failures)."""
    keys = source.keys()
    pixels = np.zeros((len(image_ids), spec.height, spec.width, spec.channels), np.uint8)
    ok = np.zeros(len(image_ids), bool)
    failures: list[LoadFailure] = []

    def load(i: int) -> None:
        image_id = image_ids[i]
        if image_id not in keys:
            failures.append(LoadFailure(image_id, "no image file"))
            return
        try:
            data = source.read(keys[image_id])
        except Exception as exc:  # noqa: BLE001 - any storage error: this image is unreadable
            failures.append(LoadFailure(image_id, f"cannot read: {exc}"))
            return
        try:
            pixels[i] = load_pixels(data, spec)
            ok[i] = True
        except ImageError as exc:
            failures.append(LoadFailure(image_id, str(exc)))

    with ThreadPoolExecutor(workers) as pool:
        list(
            tqdm(
                pool.map(load, range(len(image_ids))),
                total=len(image_ids),
                desc=desc,
                unit="img",
                disable=not progress,
                leave=False,
            )
        )
    return pixels, ok, failures
