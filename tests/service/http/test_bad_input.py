"""Every kind of bad input gets its status and a JSON error naming the problem, and the server
answers the next good request. The main server allows 2 MB bodies, 16 images, 1 Mpixel, PNG
and JPEG."""

from __future__ import annotations

import io
import json
import socket
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from ..conftest import Server, png

BOUNDARY = "lcboundary7e3f"
LABELS = '["/fm/bag"]'


def multipart(parts: list[tuple[str, bytes, str | None]]) -> bytes:
    """A multipart/form-data body from (name, content, filename or None) parts."""
    out = b""
    for name, content, filename in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        out += f"--{BOUNDARY}\r\nContent-Disposition: {disposition}\r\n\r\n".encode()
        out += content + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


MULTIPART = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}


def bomb_png(width: int = 40_000, height: int = 40_000) -> bytes:
    """A PNG header declaring 1.6 Gpixels with a tiny body: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1000)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )


def encoded(fmt: str, size: tuple[int, int] = (28, 28), mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, 100).save(buffer, format=fmt)
    return buffer.getvalue()


def big_png() -> bytes:
    """1200 x 1000 = 1.2 Mpixels of noise (over the 1 Mpixel limit, under the body limit)."""
    rng = np.random.default_rng(0)
    pixels = (rng.random((1000, 1200)) * 40).astype(np.uint8)
    return png(pixels, optimize=True)


def clean_request(image: bytes, labels: str = LABELS, **fields: str) -> dict:
    data = {"labels": labels, **fields}
    return {"files": [("image", ("x", image, "application/octet-stream"))], "data": data}


@pytest.fixture(scope="module")
def good(images: list[bytes]) -> dict:
    return clean_request(images[0])


def cases(images: list[bytes]) -> dict[str, tuple[dict, int, str, str | None]]:
    """name -> (request kwargs for POST /clean, status, error code, field)."""
    ok = images[0]
    truncated = ok[: len(ok) // 2]
    jpeg = encoded("JPEG")
    broken_jpeg = jpeg[:200] + bytes(range(256)) * 4 + jpeg[-2:]
    return {
        "body over the limit": (
            {"content": multipart([("image", b"\0" * 2_100_000, "a.png")]), "headers": MULTIPART},
            413,
            "payload_too_large",
            None,
        ),
        "too many images": (
            {
                "files": [("image", ("a.png", ok, "image/png"))] * 17,
                "data": {"labels": [LABELS] * 17},
            },
            413,
            "too_many_images",
            "image",
        ),
        "too many pixels": (clean_request(big_png()), 413, "image_too_large", "image[0]"),
        "decompression bomb": (clean_request(bomb_png()), 413, "image_too_large", "image[0]"),
        "not an image": (clean_request(b"hello, I am text"), 415, "unsupported_image", "image[0]"),
        "format not allowed": (clean_request(encoded("BMP")), 415, "unsupported_image", "image[0]"),
        "not multipart": (
            {"json": {"image": "x", "labels": ["/fm/bag"]}},
            415,
            "unsupported_media_type",
            None,
        ),
        "truncated png": (clean_request(truncated), 422, "corrupt_image", "image[0]"),
        "corrupt jpeg": (clean_request(broken_jpeg), 422, "corrupt_image", "image[0]"),
        "no image part": ({"files": [("labels", (None, LABELS))]}, 422, "invalid_input", "image"),
        "unknown part": (
            {**clean_request(ok), "files": [("images", ("a", ok, "image/png"))]},
            422,
            "invalid_input",
            "images",
        ),
        "labels not json": (clean_request(ok, "[bag"), 422, "invalid_input", "labels[0]"),
        "labels not array": (clean_request(ok, '{"a": 1}'), 422, "invalid_input", "labels[0]"),
        "label not a string": (clean_request(ok, "[3]"), 422, "invalid_input", "labels[0]"),
        "confidence above 1": (
            clean_request(ok, '[{"label": "/fm/bag", "confidence": 1.5}]'),
            422,
            "invalid_input",
            "labels[0]",
        ),
        "label twice": (
            clean_request(ok, '["/fm/bag", "/fm/bag"]'),
            422,
            "invalid_input",
            "labels[0]",
        ),
        "labels missing": (
            {"files": [("image", ("a", ok, "image/png"))]},
            422,
            "invalid_input",
            "labels",
        ),
        "threshold not a number": (
            clean_request(ok, threshold="high"),
            422,
            "invalid_input",
            "threshold",
        ),
        "threshold above 1": (clean_request(ok, threshold="2"), 422, "invalid_input", "threshold"),
        "threshold twice": (
            {**clean_request(ok), "data": {"labels": LABELS, "threshold": ["0.1", "0.2"]}},
            422,
            "invalid_input",
            "threshold",
        ),
        "malformed multipart": (
            {"content": b"--other\r\nnonsense", "headers": MULTIPART},
            400,
            "invalid_multipart",
            None,
        ),
        "multipart without its closing boundary": (
            {
                "content": multipart(
                    [("image", ok, "a.png"), ("labels", LABELS.encode(), None)]
                ).removesuffix(f"--{BOUNDARY}--\r\n".encode()),
                "headers": MULTIPART,
            },
            400,
            "invalid_multipart",
            None,
        ),
        "part without a name": (
            {
                "content": f"--{BOUNDARY}\r\nContent-Disposition: form-data\r\n\r\nx\r\n"
                f"--{BOUNDARY}--\r\n".encode(),
                "headers": MULTIPART,
            },
            400,
            "invalid_multipart",
            None,
        ),
        "labels not utf-8": (
            {
                "content": multipart([("image", ok, "a.png"), ("labels", b'["\xff"]', None)]),
                "headers": MULTIPART,
            },
            422,
            "invalid_input",
            "labels",
        ),  # fmt: skip
        "too many parts": (
            {
                "content": multipart([("image", ok, "a.png")] + [("labels", b"[]", None)] * 40),
                "headers": MULTIPART,
            },
            413,
            "too_many_parts",
            None,
        ),  # fmt: skip
    }


CASE_NAMES = list(cases([b"x"]).keys())


@pytest.mark.parametrize("name", CASE_NAMES)
def test_bad_input_gets_its_status_then_good_request_works(
    server: Server, images: list[bytes], good: dict, name: str
) -> None:
    request, status, code, field = cases(images)[name]
    with server.client() as c:
        r = c.post("/clean", **request)
        assert r.status_code == status, r.text
        assert r.headers["content-type"] == "application/json"
        error = r.json()["error"]
        assert error["code"] == code and error["message"]
        assert error.get("field") == field
        assert "Traceback" not in r.text
    with server.client() as c:  # a new connection: the server may close one after a 413
        assert c.post("/clean", **good).status_code == 200


def test_unknown_labels_are_listed(server: Server, images: list[bytes]) -> None:
    labels = [json.dumps(["/fm/bag", "/x/nope"]), json.dumps([{"label": "/x/other"}, "/x/nope"])]
    files = [("image", ("a.png", images[0], "image/png"))] * 2
    with server.client() as c:
        r = c.post("/clean", files=files, data={"labels": labels})
    assert r.status_code == 422
    error = r.json()["error"]
    assert error["code"] == "unknown_labels" and error["unknown_labels"] == ["/x/nope", "/x/other"]
    assert "/x/nope" in error["message"] and "/x/other" in error["message"]


def test_unknown_label_in_threshold_is_listed(server: Server, images: list[bytes]) -> None:
    with server.client() as c:
        r = c.post(
            "/classify", **{**clean_request(images[0]), "data": {"threshold": '{"/x/q": 0.1}'}}
        )
    assert r.status_code == 422 and r.json()["error"]["unknown_labels"] == ["/x/q"]


def test_bad_top_k(server: Server, images: list[bytes]) -> None:
    with server.client() as c:
        for value in ("two", "0", "11"):
            r = c.post("/classify", files=[("image", ("a", images[0]))], data={"top_k": value})
            assert r.status_code == 422 and r.json()["error"]["field"] == "top_k", value


def test_body_limit_holds_while_streaming(server: Server, good: dict) -> None:
    """Chunked, no Content-Length: 3 MB of a body that never ends get a 413 anyway, so the
    server judged the body while it streamed in rather than after buffering all of it."""
    host, port = server.url.removeprefix("http://").split(":")
    head = (
        f"POST /clean HTTP/1.1\r\nHost: {host}\r\nAuthorization: {server.headers['Authorization']}"
        f"\r\nContent-Type: {MULTIPART['Content-Type']}\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    part = f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="a"\r\n\r\n'
    chunk = b"\0" * 65536
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(head + b"%x\r\n%s\r\n" % (len(part), part.encode()))
        try:
            for _ in range(3_000_000 // len(chunk)):
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        except OSError:  # the server answered and closed while we were still writing
            pass
        response = b""
        while b"\r\n\r\n" not in response or not response.rstrip().endswith(b"}"):
            data = sock.recv(65536)
            if not data:
                break
            response += data
    status_line, _, rest = response.partition(b"\r\n")
    assert status_line.split()[1] == b"413", response[:300]
    assert json.loads(rest.split(b"\r\n\r\n", 1)[1])["error"]["code"] == "payload_too_large"
    with server.client() as c:
        assert c.post("/clean", **good).status_code == 200


def test_unknown_path_and_method_are_json(server: Server) -> None:
    with server.client() as c:
        missing = c.get("/nope")
        wrong = c.get("/classify")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [("OPTIONS", "/jobs/0123456789abcdef0123456789abcdef", "DELETE, GET"),
     ("PUT", "/jobs/0123456789abcdef0123456789abcdef", "DELETE, GET"),
     ("OPTIONS", "/jobs", "GET, POST"), ("PATCH", "/classify", "POST")],
)  # fmt: skip
def test_a_405_allows_every_method_of_its_path(
    server: Server, method: str, path: str, allow: str
) -> None:
    """Each method of a path is its own route: Allow lists them all, not the first one's."""
    with server.client() as c:
        r = c.request(method, path)
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    assert r.headers["allow"] == allow


def test_exif_orientation_and_colour_are_applied(server: Server) -> None:
    """A sideways RGB JPEG with EXIF orientation 6 scores like its upright greyscale twin."""
    rng = np.random.default_rng(1)
    upright = (rng.random((28, 20)) * 255).astype(np.uint8)  # not square: orientation matters
    stored = Image.fromarray(upright).rotate(90, expand=True).convert("RGB")  # what a camera writes
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    sideways = io.BytesIO()
    stored.save(sideways, format="JPEG", quality=100, exif=exif)
    reference = io.BytesIO()
    Image.fromarray(
        np.asarray(Image.open(sideways).transpose(Image.Transpose.ROTATE_270).convert("L"))
    ).save(reference, format="PNG")
    with server.client() as c:
        a, b = (
            c.post("/classify", files=[("image", ("a", data))], data={"threshold": "0"}).json()
            for data in (sideways.getvalue(), reference.getvalue())
        )
    scores = [{x["id"]: x["score"] for x in r["results"][0]["labels"]} for r in (a, b)]
    assert scores[0] == scores[1]
    with server.client() as c:  # and without EXIF applied the scores would differ
        plain = io.BytesIO()
        stored.save(plain, format="JPEG", quality=100)
        c_ = c.post(
            "/classify", files=[("image", ("a", plain.getvalue()))], data={"threshold": "0"}
        )
    assert {x["id"]: x["score"] for x in c_.json()["results"][0]["labels"]} != scores[1]
