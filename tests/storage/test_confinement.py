"""Confinement of the storage layer (labelclean.storage): canonical locations, the allowlist of
roots for every protocol, the settings that configure it, and local files opened beneath their
root without following symlinks, so that a symlink swapped in between the check and the open
leads nowhere. S3 against moto's server."""

from __future__ import annotations

import os
import shutil
import threading
from pathlib import Path

import pytest
from pydantic import ValidationError

from labelclean.settings import Settings
from labelclean.storage import Storage, StorageError
from labelclean.storage.confinement import Local, Remote
from labelclean.storage.errors import BadUri
from labelclean.storage.uris import Location, canonical, canonical_root, inside

from ..service.bulk_fixtures import s3  # noqa: F401 - fixture

SECRET = b"SECRET outside the root"


@pytest.mark.parametrize(
    ("uri", "protocol", "path"),
    [
        ("S3A://uploads/a//./b/../c.png", "s3", "uploads/a/c.png"),
        ("s3://uploads/in/../../x", "s3", "uploads/x"),  # the bucket is not a path segment
        ("s3://uploads/in/%2e%2e/x", "s3", "uploads/in/%2e%2e/x"),  # S3 keys are literal
        ("s3://uploads/dir/", "s3", "uploads/dir"),
        ("s3://uploads", "s3", "uploads"),
        ("gs://b/k", "gcs", "b/k"),
        ("abfss://container/k", "az", "container/k"),
        ("FILE:///buckets/x/%2e%2e/y", "file", "/buckets/y"),
        ("file:///buckets/%2E%2E%2fetc", "file", "/etc"),
        ("file://localhost/buckets/a%20b.png", "file", "/buckets/a b.png"),
        ("file://LOCALHOST/buckets/a", "file", "/buckets/a"),
        ("local:///buckets/y/", "file", "/buckets/y"),
        ("file:////etc/passwd", "file", "/etc/passwd"),
        ("file:///../../etc", "file", "/etc"),
        ("/buckets//./in/../x%2e%2e", "file", "/buckets/x%2e%2e"),  # a plain path: not decoded
        ("/", "file", "/"),
    ],
)  # fmt: skip
def test_canonical_locations(uri: str, protocol: str, path: str) -> None:
    assert canonical(uri) == Location(protocol, path)


@pytest.mark.parametrize(
    ("uri", "code", "reason"),
    [
        ("simplecache::s3://b/k", "protocol_not_allowed", "chained URLs"),
        ("file://evil.example/etc/passwd", "invalid_uri", "not a host"),
        ("s3://", "invalid_uri", "no bucket"),
        ("s3://key:secret@bucket/x", "invalid_uri", "not a valid bucket name"),
        ("s3://b%2Fc/x", "invalid_uri", "not a valid bucket name"),
        ("file:///a%00b", "invalid_uri", "NUL character"),
        ("file:///%ff", "invalid_uri", "not UTF-8"),
        ("relative/x", "invalid_uri", "must be absolute"),
        ("", "invalid_uri", "not a URI"),
    ],
)  # fmt: skip
def test_uris_without_a_canonical_form_are_refused(uri: str, code: str, reason: str) -> None:
    with pytest.raises(BadUri, match=reason) as info:
        canonical(uri)
    assert info.value.code == code


def test_relative_paths_are_taken_from_the_working_directory_only_when_allowed() -> None:
    assert canonical("a/../b", relative_ok=True) == Location("file", os.path.abspath("b"))


def test_inside_compares_whole_segments() -> None:
    root = canonical_root("s3://b/in/")
    assert inside(canonical("s3://b/in"), root) and inside(canonical("s3://b/in/x/y"), root)
    assert not inside(canonical("s3://b/input/x"), root)
    assert not inside(canonical("s3://b/x"), root) and not inside(canonical("gcs://b/in/x"), root)
    assert inside(canonical("file:///anything"), canonical_root("/"))
    assert not inside(canonical("file:///bucketsX/a"), canonical_root("file:///buckets/"))


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/ (the allowed folder) with d/a.txt and a.txt; outside/ beside it holding the same
    names with a secret in them."""
    root = tmp_path / "root"
    (root / "d").mkdir(parents=True)
    (root / "d" / "a.txt").write_bytes(b"inside")
    (root / "a.txt").write_bytes(b"inside")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "a.txt").write_bytes(SECRET)
    (outside / "secret.txt").write_bytes(SECRET)
    return root


def test_one_place_has_one_location(tree: Path) -> None:
    """Every spelling of one place, a symlink inside the root included, is one location (the
    key of an output's lock); s3 the same."""
    (tree / "alias").symlink_to(tree / "d", target_is_directory=True)
    storage = Storage(roots=[f"file://{tree}/", "s3://up/in/"])
    want = f"file://{tree}/d/out"
    for uri in (f"file://{tree}/d/out/", f"FILE://{tree}/./d//out", f"local://{tree}/alias/out",
                f"{tree}/x/../d/out", f"file://{tree}/%64/out"):  # fmt: skip
        assert storage.location(uri) == want, uri
    for uri in ("s3://up/in/o/", "S3A://up/in//o", "s3://up/in/x/../o"):
        assert storage.location(uri) == "s3://up/in/o"
    assert storage.resolve(f"local://{tree}/alias/out/") == Local(str(tree), ("d", "out"))
    assert storage.resolve("S3A://up/in//o") == Remote(Location("s3", "up/in/o"))


def test_every_protocol_is_confined_to_its_roots(tree: Path) -> None:
    storage = Storage(roots=[f"file://{tree}/d/", "s3://up/in/"], protocols=("file", "s3"))
    for uri in (f"file://{tree}/a.txt", f"file://{tree}/d/../a.txt", "s3://up/out/x",
                "s3://other/in/x", "s3://up/in/../x", "S3A://up/input/x", "file:///etc/passwd",
                f"local://{tree}/d/%2e%2e/a.txt"):  # fmt: skip
        with pytest.raises(StorageError, match="outside the allowed roots") as info:
            storage.check(uri)
        assert (info.value.code, info.value.uri) == ("uri_outside_roots", uri)
    for uri in ("http://127.0.0.1/x", "memory://x", "gcs://up/in/x"):
        with pytest.raises(StorageError, match=r"protocol '\w+' is not allowed") as info:
            storage.check(uri)
        assert info.value.code == "protocol_not_allowed"
    for uri in ("s3://up/in/x::file:///etc/passwd", f"simplecache::file://{tree}/d/a.txt"):
        with pytest.raises(StorageError, match="chained URLs") as info:
            storage.check(uri)
        assert info.value.code == "protocol_not_allowed"
    storage.check(f"file://{tree}/d/a.txt")
    storage.check("s3://up/in/x")


def test_roots_must_be_safe_and_canonical() -> None:
    for root, says in (("http://host/x/", "not a protocol known to be safe"),
                       ("memory://x/", "not a protocol known to be safe"),
                       ("simplecache::s3://b/", "chained"), ("relative/dir", "must be absolute"),
                       ("s3://a:b@bucket/", "not a valid bucket name")):  # fmt: skip
        with pytest.raises(ValueError, match=says):
            Storage(roots=[root])


def test_settings_refuse_unsafe_protocols_naming_them() -> None:
    for value, named in (("file,http", "entry 2 ('http')"), ("https", "entry 1 ('https')"),
                         ("memory", "entry 1 ('memory')"), ("ftp", "entry 1 ('ftp')"),
                         ("simplecache::s3", "entry 1 ('simplecache::s3'): chains"),
                         ("s3,zip", "entry 2 ('zip')")):  # fmt: skip
        with pytest.raises(ValidationError, match="storage_protocols") as info:
            Settings(storage_protocols=value)
        assert named in str(info.value), str(info.value)
    assert Settings(storage_protocols="S3A,local,file,gs,abfs").storage_protocols == (
        "s3", "file", "gcs", "az",
    )  # fmt: skip


def test_settings_refuse_bad_roots_without_echoing_secrets() -> None:
    secret = "hunter2hunter2"
    for value, says in ((f"file:///b/,s3://AKIA:{secret}@bucket/", "entry 2 (s3://***@bucket/)"),
                        ("http://example.com/x/", "entry 1 (http://example.com/x/)"),
                        ("buckets/", "must be absolute"), ("s3:///x", "no bucket")):  # fmt: skip
        with pytest.raises(ValidationError, match="storage_roots") as info:
            Settings(storage_roots=value)
        assert says in str(info.value) and secret not in str(info.value), str(info.value)
    with pytest.raises(ValidationError, match="not an absolute folder"):
        Settings(file_roots="relative")


def test_file_roots_and_storage_roots_are_one_allowlist(tree: Path, tmp_path: Path) -> None:
    """LABELCLEAN_FILE_ROOTS is the file:// part of LABELCLEAN_STORAGE_ROOTS: both given, the
    roots are their union."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "b.txt").write_bytes(b"other")
    settings = Settings(file_roots=str(tree), storage_roots=f"file://{other}/,s3://up/")
    storage = Storage.from_settings(settings)
    assert storage.read_bytes(f"{tree}/a.txt") == b"inside"
    assert storage.read_bytes(f"file://{other}/b.txt") == b"other"
    storage.check("s3://up/x")
    with pytest.raises(StorageError, match="outside the allowed roots"):
        storage.check("s3://down/x")
    env = settings.env()
    assert env["LABELCLEAN_STORAGE_ROOTS"] == f"file://{other}/,s3://up/"
    assert env["LABELCLEAN_FILE_ROOTS"] == str(tree)


# A symlink swapped in between the check and the open.


@pytest.fixture
def swap(monkeypatch: pytest.MonkeyPatch, tree: Path):
    """``swap(name)``: once the next check has resolved its path (os.path.realpath, as both
    this storage and the one before it check), ``root/name`` is replaced by a symlink to
    ``outside/`` (a folder) or ``outside/secret.txt`` (a file): an attacker winning the race
    between the check and the open, deterministically."""
    realpath = os.path.realpath
    outside = tree.parent / "outside"

    def arm(name: str) -> None:
        swapped = []

        def racing(path, *args, **kwargs):
            found = realpath(path, *args, **kwargs)
            if not swapped:
                swapped.append(name)
                victim = tree / name
                if victim.is_dir():
                    shutil.rmtree(victim)
                    victim.symlink_to(outside, target_is_directory=True)
                else:
                    victim.unlink()
                    victim.symlink_to(outside / "secret.txt")
            return found

        monkeypatch.setattr(os.path, "realpath", racing)

    return arm


def test_a_folder_swapped_for_a_symlink_after_the_check_is_not_followed(tree: Path, swap):
    storage = Storage(file_roots=[tree])
    outside = tree.parent / "outside"
    for action, what in (
        (lambda: storage.read_bytes(f"file://{tree}/d/a.txt"), "read"),
        (lambda: storage.open(f"file://{tree}/d/a.txt").__enter__().read(), "read"),
        (lambda: list(storage.list(f"file://{tree}/d/")), "list"),
        (lambda: storage.write_bytes(f"file://{tree}/d/planted.txt", b"x"), "write"),
        (lambda: storage.write_bytes(f"file://{tree}/d/new/planted.txt", b"x"), "write"),
        (lambda: storage.delete(f"file://{tree}/d/a.txt"), "delete"),
    ):
        if (tree / "d").is_symlink():  # the last round's swap
            (tree / "d").unlink()
            (tree / "d").mkdir()
        (tree / "d" / "a.txt").write_bytes(b"inside")
        swap("d")
        with pytest.raises(StorageError, match=f"cannot {what} .a symlink") as info:
            action()
        assert str(outside) not in str(info.value)
        assert sorted(os.listdir(outside)) == ["a.txt", "secret.txt"]
        assert (outside / "a.txt").read_bytes() == SECRET  # not deleted, not overwritten


def test_a_file_swapped_for_a_symlink_after_the_check_is_not_followed(tree: Path, swap):
    storage = Storage(file_roots=[tree])
    swap("a.txt")
    with pytest.raises(StorageError, match="cannot read .a symlink"):
        storage.read_bytes(f"file://{tree}/a.txt")
    swap("d")  # a folder: the link itself is written over, never through
    storage.write_bytes(f"file://{tree}/d", b"replaced")
    assert (tree / "d").read_bytes() == b"replaced" and not (tree / "d").is_symlink()
    assert (tree.parent / "outside" / "secret.txt").read_bytes() == SECRET


def test_symlinks_that_stay_inside_are_resolved_when_checked(tree: Path) -> None:
    """A symlink inside the root to a folder inside it is resolved by the check, and what is
    opened is the real path: nothing below the root is followed at open time."""
    (tree / "alias").symlink_to(tree / "d", target_is_directory=True)
    storage = Storage(file_roots=[tree])
    assert storage.read_bytes(f"file://{tree}/alias/a.txt") == b"inside"
    storage.write_bytes(f"file://{tree}/alias/b.txt", b"b")
    assert (tree / "d" / "b.txt").read_bytes() == b"b"


def test_a_fifo_is_not_opened(tree: Path) -> None:
    """A FIFO named like an image would block its reader forever: refused at once."""
    os.mkfifo(tree / "x.png")
    storage = Storage(file_roots=[tree])
    errors: list[BaseException] = []

    def read() -> None:
        try:
            storage.read_bytes(f"file://{tree}/x.png")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    reader.join(5)
    if reader.is_alive():  # release the reader blocked in open()
        with open(tree / "x.png", "wb"):
            pass
        reader.join(5)
        pytest.fail("reading a FIFO blocked")
    assert "cannot read (not a regular file)" in str(errors[0])


def test_percent_signs_in_listed_names_round_trip(tree: Path) -> None:
    """File URIs are percent-decoded, so a listed name's ``%`` is written ``%25`` in its URI."""
    (tree / "d" / "a%41.png").write_bytes(b"percent")
    storage = Storage(file_roots=[tree])
    found = dict(storage.list(f"file://{tree}/d/"))
    assert found["a%41.png"] == f"file://{tree}/d/a%2541.png"
    assert storage.read_bytes(found["a%41.png"]) == b"percent"


def test_s3_is_confined_to_its_bucket_and_key_prefix(s3: str) -> None:  # noqa: F811
    import boto3

    client = boto3.client("s3", endpoint_url=s3)
    for bucket in ("uploads", "beside"):
        client.create_bucket(Bucket=bucket)
    client.put_object(Bucket="uploads", Key="out/secret.txt", Body=SECRET)
    client.put_object(Bucket="beside", Key="in/secret.txt", Body=SECRET)
    storage = Storage(roots=["s3://uploads/in/"], s3_endpoint_url=s3)
    storage.write_bytes("S3A://uploads/in//x/./y.txt", b"y")  # written at its canonical key
    assert client.get_object(Bucket="uploads", Key="in/x/y.txt")["Body"].read() == b"y"
    assert storage.read_bytes("s3://uploads/in/z/../x/y.txt") == b"y"
    for uri in ("s3://uploads/out/secret.txt", "s3://uploads/in/../out/secret.txt",
                "s3://beside/in/secret.txt", "s3://uploads/input/x"):  # fmt: skip
        write, listing = (lambda u: storage.write_bytes(u, b"x")), (lambda u: list(storage.list(u)))
        for action in (storage.read_bytes, write, listing, storage.delete, storage.exists):
            with pytest.raises(StorageError, match="outside the allowed roots"):
                action(uri)
    keys = {o["Key"] for o in client.list_objects_v2(Bucket="uploads")["Contents"]}
    assert keys == {"in/x/y.txt", "out/secret.txt"}
    assert [o["Key"] for o in client.list_objects_v2(Bucket="beside")["Contents"]] == [
        "in/secret.txt"
    ]
