"""Fetch and decode training images from a folder or an S3 bucket prefix.

    source = open_source("DATA/images")            # or "s3://bucket/prefix"
    pixels, failures = load_images(source, image_ids, spec)

Images are found by ImageID whatever their extension (``<ImageID>.jpg``, ``.png``, ...). An image
that is missing or fails to decode is skipped and reported, never a crash.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse

import numpy as np
from tqdm import tqdm

from ..model.config import InputSpec
from ..model.preprocess import ImageError, load_pixels
from .openimages import DataError


class ImageSource(Protocol):
    def keys(self) -> dict[str, str]:
        """ImageID -> key to read."""

    def read(self, key: str) -> bytes: ...


class FolderSource:
    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise DataError(f"{root}: image folder not found")
        self.root = root

    def keys(self) -> dict[str, str]:
        return {
            entry.name.rsplit(".", 1)[0]: entry.path
            for entry in os.scandir(self.root)
            if entry.is_file()
        }

    def read(self, key: str) -> bytes:
        return Path(key).read_bytes()


class S3Source:
    """Images under an S3 prefix; endpoint and credentials come from the usual AWS settings
    (``AWS_ENDPOINT_URL`` and friends)."""

    def __init__(self, uri: str) -> None:
        try:
            import boto3
        except ImportError as exc:
            raise DataError("reading images from S3 needs boto3 (pip install boto3)") from exc
        parsed = urlparse(uri)
        self.bucket, self.prefix = parsed.netloc, parsed.path.lstrip("/")
        if self.prefix and not self.prefix.endswith("/"):
            self.prefix += "/"
        self.client = boto3.client("s3")

    def keys(self) -> dict[str, str]:
        found: dict[str, str] = {}
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
                for obj in page.get("Contents", []):
                    name = obj["Key"][len(self.prefix) :]
                    if "/" not in name:
                        found[name.rsplit(".", 1)[0]] = obj["Key"]
        except Exception as exc:  # noqa: BLE001 - botocore raises many kinds; all mean "cannot list"
            raise DataError(
                f"s3://{self.bucket}/{self.prefix}: cannot list images ({exc})"
            ) from exc
        return found

    def read(self, key: str) -> bytes:
        return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()


def open_source(uri: str) -> ImageSource:
    if uri.startswith("s3://"):
        return S3Source(uri)
    if "://" in uri:
        raise DataError(f"{uri}: unsupported image location (use a folder or s3://bucket/prefix)")
    return FolderSource(Path(uri))


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
