"""labelclean.storage: local files confined to the roots (no '..' escapes, no symlinks out),
protocols restricted, atomic writes, and S3 through s3fs against moto's server (confined to
its roots in tests/storage/test_confinement.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from labelclean.settings import Settings
from labelclean.storage import Storage, StorageError, TooLarge, split_uri

from ..service.bulk_fixtures import s3  # noqa: F401 - fixture


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/ (the allowed folder) with a file and a sub-folder; outside/ beside it."""
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_bytes(b"inside")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "secret.txt").write_bytes(b"secret")
    return root


def test_split_uri():
    assert split_uri("s3://b/k/x.png") == ("s3", "b/k/x.png")
    assert split_uri("file:///abs/x") == ("file", "/abs/x")
    assert split_uri("file://localhost/abs/x") == ("file", "/abs/x")
    assert split_uri("rel/x") == ("file", "rel/x")
    with pytest.raises(StorageError, match="absolute path"):
        split_uri("file://relative/x")


def test_reads_writes_and_lists_inside_the_roots(tree: Path):
    storage = Storage(file_roots=[tree])
    uri = f"file://{tree}/a.txt"
    assert storage.read_bytes(uri) == b"inside" and storage.exists(uri)
    assert storage.read_bytes(str(tree / "a.txt")) == b"inside"  # a plain path is a file too
    storage.write_bytes(f"file://{tree}/new/deep/b.bin", b"\x00\x01")
    assert (tree / "new/deep/b.bin").read_bytes() == b"\x00\x01"
    assert sorted(storage.list(f"file://{tree}/")) == [("a.txt", f"file://{tree}/a.txt")]
    storage.delete(uri)
    storage.delete(uri)  # missing: no error
    assert not storage.exists(uri)
    with pytest.raises(StorageError, match="folder not found") as info:
        list(storage.list(f"file://{tree}/nope"))
    assert info.value.missing
    with pytest.raises(StorageError, match="cannot read .not found.") as info:
        storage.read_bytes(uri)
    assert info.value.missing and info.value.uri == uri


def test_dot_dot_escapes_are_refused(tree: Path):
    storage = Storage(file_roots=[tree])
    for uri in (
        f"file://{tree}/../outside/secret.txt",
        f"{tree}/sub/../../outside/secret.txt",
        f"file://{tree}/sub/../..",
        "file:///etc/passwd",
    ):
        for action in (storage.read_bytes, storage.exists, lambda u: list(storage.list(u))):
            with pytest.raises(StorageError, match="outside the allowed roots"):
                action(uri)
    for uri in (f"file://{tree}/../outside/new.txt", f"{tree}/sub/../../outside/new.txt"):
        with pytest.raises(StorageError, match="outside the allowed roots"):
            storage.write_bytes(uri, b"x")
    assert sorted(os.listdir(tree.parent / "outside")) == ["secret.txt"]
    assert storage.read_bytes(f"file://{tree}/sub/../a.txt") == b"inside"  # stays inside: fine


def test_symlinks_pointing_out_are_refused(tree: Path):
    outside = tree.parent / "outside"
    (tree / "link.txt").symlink_to(outside / "secret.txt")
    (tree / "linkdir").symlink_to(outside, target_is_directory=True)
    (tree / "inner").symlink_to(tree / "sub", target_is_directory=True)
    storage = Storage(file_roots=[tree])
    for uri in (f"file://{tree}/link.txt", f"file://{tree}/linkdir/secret.txt"):
        with pytest.raises(StorageError, match="outside the allowed roots"):
            storage.read_bytes(uri)
    with pytest.raises(StorageError, match="outside the allowed roots"):
        storage.write_bytes(f"file://{tree}/linkdir/planted.txt", b"x")
    with pytest.raises(StorageError, match="outside the allowed roots"):
        list(storage.list(f"file://{tree}/linkdir"))
    assert not (outside / "planted.txt").exists()
    # Listed (it is a file under the prefix), but reading it is refused: an error, not a leak.
    assert ("link.txt", f"file://{tree}/link.txt") in list(storage.list(f"file://{tree}"))
    storage.write_bytes(f"file://{tree}/inner/ok.txt", b"ok")  # a symlink within the roots
    assert (tree / "sub" / "ok.txt").read_bytes() == b"ok"
    # A root that is itself a symlink is resolved too.
    alias = tree.parent / "alias"
    alias.symlink_to(tree, target_is_directory=True)
    assert Storage(file_roots=[alias]).read_bytes(f"{tree}/a.txt") == b"inside"


def test_protocols_and_roots_come_from_settings(tree: Path):
    storage = Storage.from_settings(
        Settings(file_roots=str(tree), storage_protocols="s3", s3_endpoint_url="http://x:9")
    )
    with pytest.raises(StorageError, match="protocol 'file' is not allowed"):
        storage.read_bytes(f"file://{tree}/a.txt")
    for uri in ("http://example.com/x", "memory://x", "gcs://b/x"):
        with pytest.raises(StorageError, match="is not allowed"):
            storage.read_bytes(uri)
    with pytest.raises(StorageError, match="outside the allowed roots") as info:
        Storage.from_settings(Settings()).read_bytes(f"file://{tree}/a.txt")  # no roots at all
    assert info.value.code == "uri_outside_roots"
    assert Storage.from_settings(Settings(file_roots=str(tree))).read_bytes(str(tree / "a.txt"))
    anywhere = Storage.local()
    assert anywhere.read_bytes(str(tree.parent / "outside" / "secret.txt")) == b"secret"


def test_local_writes_are_atomic(tree: Path):
    storage = Storage(file_roots=[tree])
    uri = f"file://{tree}/a.txt"
    with pytest.raises(KeyError), storage.open(uri, "wb") as fh:
        fh.write(b"half")
        raise KeyError("stopped mid-write")
    assert (tree / "a.txt").read_bytes() == b"inside"  # the old file, whole
    assert sorted(os.listdir(tree)) == ["a.txt", "sub"]  # no temporary file left
    with storage.open_text(uri, "w") as fh:
        fh.write("ImageID,Reason\n")
    with storage.open_text(uri) as fh:
        assert fh.read() == "ImageID,Reason\n"
    (tree / "bom.csv").write_bytes("\ufeffImageID\n".encode())
    with storage.open_text(str(tree / "bom.csv")) as fh:
        assert fh.read() == "ImageID\n"


def test_join_takes_names_only():
    storage = Storage.local()
    assert storage.join("s3://b/p/", "x.png") == "s3://b/p/x.png"
    assert storage.join("/data/out", "_work", "plan.json") == "/data/out/_work/plan.json"
    for bad in ("..", "a/b", "", "."):
        with pytest.raises(StorageError, match="not a file name"):
            storage.join("/data", bad)


def test_s3_through_moto(s3: str):  # noqa: F811
    import boto3

    boto3.client("s3", endpoint_url=s3).create_bucket(Bucket="store")
    storage = Storage(roots=None, protocols=("s3",), s3_endpoint_url=s3)  # any bucket
    storage.write_bytes("s3://store/p/x.png", b"png")
    storage.write_bytes("s3://store/p/nested/y.png", b"nested")
    big = os.urandom(6 << 20)  # a multi-part upload
    storage.write_bytes("s3://store/p/big.bin", big)
    assert storage.read_bytes("s3://store/p/big.bin") == big
    assert storage.exists("s3://store/p/x.png") and not storage.exists("s3://store/p/z.png")
    want = [("big.bin", "s3://store/p/big.bin"), ("x.png", "s3://store/p/x.png")]
    assert sorted(storage.list("s3://store/p")) == want
    assert sorted(storage.list("s3://store/p/")) == want
    storage.S3_PAGE = 1  # one key per page: the listing follows continuation tokens
    assert sorted(storage.list("s3://store/p/")) == want
    with pytest.raises(KeyError), storage.open("s3://store/p/partial", "wb") as fh:
        fh.write(b"half")
        raise KeyError("stopped mid-write")
    assert not storage.exists("s3://store/p/partial")  # the upload was aborted
    with storage.open_text("s3://store/t.csv", "w") as fh:
        fh.write("a,b\n1,2\n")
    with storage.open_text("s3://store/t.csv") as fh:
        assert fh.read() == "a,b\n1,2\n"
    storage.delete("s3://store/p/x.png")
    assert not storage.exists("s3://store/p/x.png")
    for action, uri, match in (
        (storage.read_bytes, "s3://store/missing", "s3://store/missing: cannot read .not found"),
        (storage.read_bytes, "s3://no-bucket/x", "s3://no-bucket/x: cannot read .not found"),
        (lambda u: list(storage.list(u)), "s3://no-bucket/p/", "s3://no-bucket/p/: cannot list"),
        (lambda u: storage.write_bytes(u, b"x"), "s3://no-bucket/x", "no-bucket/x: cannot write"),
    ):
        with pytest.raises(StorageError, match=match):
            action(uri)


def test_reads_are_bounded_before_they_are_read(tree: Path, s3: str):  # noqa: F811
    """``max_bytes``: a local file's size is checked before reading (a sparse 8 GiB file is
    refused at once), an S3 object is fetched with one ranged GET; at the limit is fine."""
    import boto3

    sparse = tree / "huge.png"
    with sparse.open("wb") as fh:
        fh.truncate(8 << 30)
    (tree / "ten.bin").write_bytes(b"0123456789")
    local = Storage(file_roots=[tree])
    with pytest.raises(TooLarge, match=r"huge.png: larger than 1024 bytes \(not read\)"):
        local.read_bytes(f"file://{sparse}", max_bytes=1024)
    assert local.read_bytes(f"file://{tree}/ten.bin", max_bytes=10) == b"0123456789"
    with pytest.raises(TooLarge):
        local.read_bytes(f"file://{tree}/ten.bin", max_bytes=9)
    client = boto3.client("s3", endpoint_url=s3)
    client.create_bucket(Bucket="bounded")
    for key, body in (("ten", b"0123456789"), ("empty", b"")):
        client.put_object(Bucket="bounded", Key=key, Body=body)
    remote = Storage(roots=["s3://bounded/"], s3_endpoint_url=s3)
    assert remote.read_bytes("s3://bounded/ten", max_bytes=10) == b"0123456789"
    assert remote.read_bytes("s3://bounded/empty", max_bytes=10) == b""
    with pytest.raises(TooLarge, match="s3://bounded/ten: larger than 9 bytes"):
        remote.read_bytes("s3://bounded/ten", max_bytes=9)
    with pytest.raises(StorageError, match="not found") as info:
        remote.read_bytes("s3://bounded/missing", max_bytes=9)
    assert not isinstance(info.value, TooLarge)
