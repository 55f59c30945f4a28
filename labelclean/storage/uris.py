"""Canonical locations of storage URIs: what a URI names once its spelling is undone.

    canonical("S3A://uploads/a//./b/../c.png")    # Location("s3", "uploads/a/c.png")
    canonical("FILE:///buckets/x/%2e%2e/y")        # Location("file", "/buckets/y")
    canonical("local:///buckets/y").uri            # "file:///buckets/y"
    inside(location, canonical_root("s3://uploads/"))

The canonical form, so that two spellings of one place compare equal:

- the protocol in lower case with fsspec's aliases folded (``local`` is ``file``, ``s3a`` is
  ``s3``, ``gs`` is ``gcs``, ``abfs`` and ``abfss`` are ``az``);
- a file URI's path percent-decoded, as RFC 8089 reads it (``file:///a%20b`` is ``/a b``; a
  plain path is taken as it is), with no host but ``localhost``;
- an object store's path ``bucket/key``: the bucket is the URI's authority (a bucket name, never
  touched by ``..``); the key's characters literal, as S3 reads them (``%2e`` is a key
  character there, not a dot);
- in every path, empty and ``.`` segments dropped and ``..`` taking away the segment before it,
  as RFC 3986 removes dot segments (``..`` at the top stays at the top); no trailing slash.

Symlinks are the business of labelclean.storage.confinement, which resolves them for local
files. Chained URLs (``simplecache::s3://...``) have no canonical form: refused. Torch-free, no
I/O.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from urllib.parse import unquote

from .errors import PROTOCOL_NOT_ALLOWED, BadUri, refused

ALIASES = {"s3a": "s3", "gs": "gcs", "abfs": "az", "abfss": "az", "local": "file"}
OBJECT_STORES = frozenset({"s3", "gcs", "az"})
SAFE_PROTOCOLS = frozenset({"file", *OBJECT_STORES})
"""Protocols whose URIs name a place by a path alone, so that an allowlist of prefixes can
confine them: local files (opened beneath a root, symlinks not followed) and the object stores
whose paths are ``bucket/key`` (s3fs, gcsfs, adlfs). Not safe: http(s) and ftp, sftp, smb,
webdav... (any host the URI names: server-side request forgery), ``memory`` (one store shared
by every caller of the process), chained and caching URLs (``a::b``), archives and references
(``zip``, ``tar``, ``reference``: they open further URLs named inside a file)."""
UNSAFE_WHY = {
    "http": "it fetches any address a caller names",
    "https": "it fetches any address a caller names",
    "memory": "one store is shared by every caller of the process",
}
SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*")
BUCKET = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,253}[A-Za-z0-9])?")
"""S3's bucket names (DNS-style, and the legacy upper case and underscores), GCS's and Azure's
container names: never ``@`` (an account or credentials), ``:`` or ``%``."""


@dataclass(frozen=True)
class Location:
    """A canonical location: ``file`` and ``/abs/path``, or ``s3`` and ``bucket/key``."""

    protocol: str
    path: str

    @property
    def uri(self) -> str:
        return f"{self.protocol}://{self.path}"


def protocol_name(name: str) -> str:
    """A protocol as given -> its canonical name (lower case, aliases folded)."""
    lowered = name.lower()
    return ALIASES.get(lowered, lowered)


def _scheme(uri: str) -> tuple[str, str] | None:
    """(canonical protocol, the rest after ``://``); None for a plain path (no scheme, or a
    path that merely holds ``://``)."""
    head, sep, rest = uri.partition("://")
    if not sep:
        return None
    if "::" in head:
        raise BadUri("chained URLs (a::b) are not allowed", PROTOCOL_NOT_ALLOWED)
    if not SCHEME.fullmatch(head):
        return None
    return protocol_name(head), rest


def split_uri(uri: str) -> tuple[str, str]:
    """``uri`` -> (protocol, path) as written, without canonicalising the path:
    ``("s3", "bucket/key")``, ``("file", "/abs/path")`` (a file URI's path percent-decoded),
    ``("file", "rel/path")`` for a plain path. Raises StorageError for what is not a URI."""
    try:
        return _split(uri)
    except BadUri as exc:
        raise refused(str(uri), exc) from None


def _split(uri: str) -> tuple[str, str]:
    if not isinstance(uri, str) or not uri:
        raise BadUri("not a URI")
    if "\0" in uri:
        raise BadUri("NUL character in URI")
    found = _scheme(uri)
    if found is None:
        return "file", uri
    protocol, rest = found
    if protocol != "file":
        return protocol, rest
    host, slash, path = rest.partition("/")
    if host.lower() not in ("", "localhost"):
        raise BadUri("a file URI needs an absolute path (file:///abs/path), not a host")
    try:
        path = unquote(slash + path, errors="strict")
    except UnicodeDecodeError:
        raise BadUri("percent-encoding that is not UTF-8") from None
    if "\0" in path:
        raise BadUri("NUL character in URI")
    return "file", path


def segments(path: str) -> list[str]:
    """``path``'s segments with empty and ``.`` ones dropped and each ``..`` taking away the
    one before it (none left: nothing to take)."""
    found: list[str] = []
    for segment in path.split("/"):
        if segment == "..":
            if found:
                found.pop()
        elif segment not in ("", "."):
            found.append(segment)
    return found


def canonical(uri: str, *, relative_ok: bool = False) -> Location:
    """``uri``'s canonical location (see the module's docstring). A relative plain path is
    refused unless ``relative_ok`` (then it is taken from the working directory); a protocol
    other than file and the object stores keeps its path as given."""
    protocol, path = _split(uri)
    if protocol == "file":
        if not path.startswith("/"):
            if not relative_ok:
                raise BadUri("a local path must be absolute (or a file:///abs/path URI)")
            path = os.path.abspath(path)
        return Location("file", "/" + "/".join(segments(path)))
    if protocol not in OBJECT_STORES:
        return Location(protocol, path)
    bucket, _, key = path.partition("/")
    if not bucket:
        raise BadUri("no bucket (s3://bucket/key)")
    if not BUCKET.fullmatch(bucket):
        raise BadUri("not a valid bucket name")
    return Location(protocol, "/".join([bucket, *segments(key)]))


def canonical_root(text: str) -> Location:
    """A root of the allowlist (a URI prefix, or an absolute folder) as a canonical location:
    a protocol known to be safe, an absolute path, a bucket. Raises BadUri saying why not."""
    if "::" in text:
        raise BadUri("chained URLs (a::b) are not allowed", PROTOCOL_NOT_ALLOWED)
    found = _scheme(text)
    if found is not None:
        safe_protocol(found[0])
    return canonical(text)


def safe_protocol(name: str) -> str:
    """``name``'s canonical protocol if it is one known to be safe (SAFE_PROTOCOLS), else
    BadUri saying why not."""
    if "::" in name:
        raise BadUri("chains protocols (a::b)", PROTOCOL_NOT_ALLOWED)
    protocol = protocol_name(name.strip())
    if protocol not in SAFE_PROTOCOLS:
        why = UNSAFE_WHY.get(protocol, "its URIs cannot be confined to a list of prefixes")
        safe = ", ".join(sorted(SAFE_PROTOCOLS))
        raise BadUri(f"not a protocol known to be safe ({why}; safe: {safe})", PROTOCOL_NOT_ALLOWED)
    return protocol


def inside(location: Location, root: Location) -> bool:
    """Whether ``location`` is ``root`` or lies under it, whole segments compared (``s3://b/in``
    holds ``s3://b/in/x``, not ``s3://b/input``)."""
    if location.protocol != root.protocol:
        return False
    return location.path == root.path or location.path.startswith(root.path.rstrip("/") + "/")


def shown(text: str, limit: int = 120) -> str:
    """A configured URI as a message may show it: any user-info (``user:secret@``) masked,
    cut to ``limit`` characters."""
    masked = re.sub(r"^([^:/]*://)[^/]*@", r"\1***@", text)
    return masked if len(masked) <= limit else masked[: limit - 3] + "..."
