"""How schemathesis sends this API's multipart bodies, for test_contract and by hand:

    LABELCLEAN_MAX_IMAGES=... python -m labelclean.service.openapi --model BUNDLE > served.yaml
    SCHEMATHESIS_HOOKS=tests.service.schemathesis_hooks schemathesis \\
        --config-file tests/service/schemathesis.toml run served.yaml --url URL \\
        -H "Authorization: Bearer KEY" --checks all

schemathesis' multipart encoding, changed where it cannot follow the contract or the contract
cannot say what the server checks:

- the text parts are JSON (their ``encoding``): a value is encoded as JSON, and each item of the
  labels array on a part of its own. schemathesis 4 sends an array of JSON items as one JSON
  document, a string as its bare text and an array as one part per item, so some invalid values
  would reach the server as valid ones: the string "[]" as the array [], the string "5" or the
  array [5] as top_k 5, an empty array as no part at all.
- each image part it drew holds a real picture: it draws arbitrary bytes for ``format: binary``,
  which the server rightly refuses, and no JSON Schema keyword says "decodes as an image".
- a valid /clean body gets as many image parts as labels parts (service.openapi says why the
  served document leaves that out).
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
from PIL import Image
from schemathesis.transport.requests import REQUESTS_TRANSPORT, multipart_serializer
from schemathesis.transport.serialization import Binary


def _picture(fmt: str) -> Binary:
    pixels = np.add.outer(np.arange(28), np.arange(28)).astype(np.uint8) * 4  # a 28x28 ramp
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return Binary(buffer.getvalue())


PICTURES = {"image/png": _picture("PNG"), "image/jpeg": _picture("JPEG")}


@REQUESTS_TRANSPORT.serializer("multipart/form-data")
def as_the_server_reads_it(ctx: Any, value: Any) -> dict[str, Any]:
    """The multipart body of ``value`` (the case's body), with the changes above."""
    if not isinstance(value, dict):
        return multipart_serializer(ctx, value)
    value = dict(value)
    labels, images = value.get("labels"), value.get("image")
    for name in value.keys() - {"image"}:
        each = name == "labels" and isinstance(value[name], list)
        value[name] = [json.dumps(v) for v in value[name]] if each else json.dumps(value[name])
    if isinstance(images, list):
        chosen = (ctx.case.multipart_content_types or {}).get("image", "image/png")
        picture = PICTURES.get(chosen, PICTURES["image/png"])
        value["image"] = [picture if isinstance(x, Binary | bytes) else x for x in images]
        meta = ctx.case.meta
        if isinstance(labels, list) and meta is not None and meta.generation.mode.is_positive:
            value["image"] = [picture] * len(labels)
    return multipart_serializer(ctx, value)
