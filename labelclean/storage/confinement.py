"""Which URIs a Storage may use: the allowed protocols and the allowlist of roots.

    confinement = Confinement(["file:///buckets/", "s3://uploads/"], protocols=["file", "s3"])
    confinement.check("S3A://uploads/a/../b.png")   # Remote(Location("s3", "uploads/b.png"))
    confinement.check("file:///buckets/in/x.png")   # Local("/buckets", ("in", "x.png"))
    confinement.check(uri).location                 # the canonical URI: one output lock

A URI is checked on its canonical location (labelclean.storage.uris): the protocol must be
allowed and the location must lie under a root of the same protocol. A local path has its
symlinks resolved too (``os.path.realpath``), and what comes back is the root (its real folder)
and the path's components below it: labelclean.storage.local opens them one at a time from the
root without following any symlink, so a symlink swapped in after this check is an error, never
a way out. Chained URLs (``a::b`` anywhere in the URI) are refused outright.

``roots=None`` confines nothing (the offline CLI and training: the user's own machine); local
paths then come back as components below ``/``, opened the same way.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import OUTSIDE_ROOTS, PROTOCOL_NOT_ALLOWED, BadUri
from .uris import Location, canonical, canonical_root, inside, protocol_name

OUTSIDE = BadUri("outside the allowed roots (LABELCLEAN_STORAGE_ROOTS)", OUTSIDE_ROOTS)
CHAINED = BadUri("chained URLs (a::b) are not allowed", PROTOCOL_NOT_ALLOWED)


@dataclass(frozen=True)
class Local:
    """A local file or folder: ``root`` (a real folder, no symlink in it) and the components
    below it (none: the root itself)."""

    root: str
    parts: tuple[str, ...]

    @property
    def location(self) -> str:
        return "file://" + os.path.join(self.root, *self.parts)


@dataclass(frozen=True)
class Remote:
    """An object in a store, or a URI of another fsspec protocol (unconfined storage only)."""

    where: Location

    @property
    def location(self) -> str:
        return self.where.uri


Target = Local | Remote


class Confinement:
    """The allowed protocols (None: any) and roots (None: anywhere) of one Storage; the roots
    are URI prefixes or absolute folders, made canonical once (local ones: real paths)."""

    def __init__(self, roots: Sequence[str | Path] | None, protocols: Sequence[str] | None) -> None:
        self.protocols = None if protocols is None else frozenset(map(protocol_name, protocols))
        self.local_roots: tuple[str, ...] | None = None
        self.remote_roots: tuple[Location, ...] | None = None
        if roots is not None:
            found = [canonical_root(str(root)) for root in roots]  # BadUri: a bad root
            local = {os.path.realpath(r.path) for r in found if r.protocol == "file"}
            self.local_roots = tuple(sorted(local, key=len, reverse=True))  # deepest first
            self.remote_roots = tuple(r for r in found if r.protocol != "file")

    def check(self, uri: str) -> Target:
        """Where ``uri`` leads, or BadUri saying why it may not be used (the protocol, the
        roots, or a URI with no canonical form)."""
        confined = self.local_roots is not None
        if confined and "::" in uri:
            raise CHAINED
        location = canonical(uri, relative_ok=not confined)
        if self.protocols is not None and location.protocol not in self.protocols:
            allowed = ", ".join(sorted(self.protocols)) or "none"
            raise BadUri(
                f"protocol {location.protocol!r} is not allowed (LABELCLEAN_STORAGE_PROTOCOLS: "
                f"{allowed})",
                PROTOCOL_NOT_ALLOWED,
            )
        if location.protocol == "file":
            return self._local(location.path)
        if self.remote_roots is not None and not any(
            inside(location, root) for root in self.remote_roots
        ):
            raise OUTSIDE
        return Remote(location)

    def _local(self, path: str) -> Local:
        """The root ``path`` lies under once its symlinks are resolved, and the components
        below it (the real path's: what is opened is what was checked)."""
        real = os.path.realpath(path)
        if self.local_roots is None:
            return Local("/", _components(real))
        for root in self.local_roots:
            if real == root or real.startswith(root.rstrip("/") + "/"):
                return Local(root, _components(real[len(root) :]))
        raise OUTSIDE


def _components(path: str) -> tuple[str, ...]:
    return tuple(part for part in path.split("/") if part)
