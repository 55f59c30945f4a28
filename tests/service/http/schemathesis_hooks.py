"""How schemathesis drives this API, for the contract tests and by hand (the config file loads
this module as its ``hooks``; run from the repository root):

    schemathesis --config-file tests/service/http/schemathesis.toml run --checks all \\
        http://HOST:PORT/openapi.json -H "Authorization: Bearer KEY"

With a key, /openapi.json is the document that server keeps (service.http.openapi.narrowed).
What is changed here, where schemathesis cannot follow the contract or the contract cannot say
what the server checks:

- a part that is JSON text (``type: string``, ``contentMediaType: application/json``, its
  ``contentSchema``: each /clean ``labels`` part) is drawn from its contentSchema, not as any
  JSON at all (schemathesis ignores contentSchema when it generates), and sent as JSON text;
- the other text parts are JSON values (their ``encoding``): encoded as JSON. schemathesis 4
  sends a string as its bare text, so some invalid values would reach the server as valid ones
  (the string "5" as top_k 5);
- each image part it drew holds a real picture: it draws arbitrary bytes for ``format: binary``,
  which the server rightly refuses, and no JSON Schema keyword says "decodes as an image";
- a valid /clean body gets as many image parts as labels parts (service.http.openapi says why the
  served document leaves that out);
- a body it means to be invalid is: when a multipart body holds a file, schemathesis does not
  check that a mutation made the body invalid, and some do not (``contains`` negated as "no
  item matches" where ``minContains`` is 0, as each label's at most once is): ``filter_case``
  drops such a body (checked with its files as empty strings, as schemathesis checks others);
- a valid POST /jobs may be refused with a 422, but only as ``uri_unusable`` (the URI lies under
  the server's roots, as the document says, and names what is missing or unusable there: state,
  which no schema can know) or ``idempotency_key_reused`` (the key's history): the check
  ``job_refused_only_for_state`` fails any other 422 (the config file lets 422 through
  positive_data_acceptance for POST /jobs alone).
"""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import schemathesis
from jsonschema import Draft202012Validator
from PIL import Image
from schemathesis.core.parameters import ParameterLocation
from schemathesis.transport.requests import REQUESTS_TRANSPORT, multipart_serializer
from schemathesis.transport.serialization import Binary

STATE_CODES = frozenset({"uri_unusable", "idempotency_key_reused"})


def _picture(fmt: str) -> Binary:
    pixels = np.add.outer(np.arange(28), np.arange(28)).astype(np.uint8) * 4  # a 28x28 ramp
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format=fmt)
    return Binary(buffer.getvalue())


PICTURES = {"image/png": _picture("PNG"), "image/jpeg": _picture("JPEG")}


def _decoded(schema: Any) -> Any:
    """A JSON-text part's schema -> the schema of the value it holds (else as it is)."""
    if isinstance(schema, dict) and schema.get("contentMediaType") == "application/json":
        return schema.get("contentSchema", {})
    return schema


@schemathesis.hook
def before_load_schema(context: Any, raw_schema: dict[str, Any]) -> None:
    """Multipart parts that are JSON text are drawn as the values they hold (sent as JSON by
    ``as_the_server_reads_it``)."""
    for operations in raw_schema.get("paths", {}).values():
        for operation in operations.values():
            content = (operation.get("requestBody") or {}).get("content", {})
            body = content.get("multipart/form-data", {}).get("schema", {})
            for name, part in body.get("properties", {}).items():
                if part.get("type") == "array":
                    part = {**part, "items": _decoded(part.get("items"))}
                body["properties"][name] = _decoded(part)


def _stripped(value: Any) -> Any:
    if isinstance(value, Binary | bytes):
        return ""
    if isinstance(value, dict):
        return {k: _stripped(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_stripped(v) for v in value]
    return value


@schemathesis.hook
def filter_case(context: Any, case: Any) -> bool:
    """Drop a multipart case whose body was meant to be invalid (nothing else was) but is not."""
    meta = case.meta
    if meta is None or not isinstance(case.body, dict) or "multipart" not in str(case.media_type):
        return True
    body = meta.components.get(ParameterLocation.BODY)
    others = [c for where, c in meta.components.items() if where != ParameterLocation.BODY]
    if body is None or body.mode.is_positive or any(not c.mode.is_positive for c in others):
        return True
    raw = case.operation.schema.raw_schema
    operation = raw["paths"][case.path][case.method.lower()]
    schema = operation["requestBody"]["content"]["multipart/form-data"]["schema"]
    validator = Draft202012Validator({**schema, "components": raw.get("components", {})})
    return not validator.is_valid(_stripped(case.body))


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


@schemathesis.check
def job_refused_only_for_state(ctx: Any, response: Any, case: Any) -> bool | None:
    """A valid POST /jobs refused with a 422 is refused for the state of its storage or of its
    Idempotency-Key, naming a URI field for the former; any other 422 is a bug."""
    meta = case.meta
    if case.method.upper() != "POST" or case.path != "/jobs" or response.status_code != 422:
        return None
    if meta is None or not meta.generation.mode.is_positive:
        return None
    error = response.json().get("error", {})
    code, field = error.get("code"), error.get("field")
    state = code == "uri_unusable" and field in ("images", "labels", "output")
    if not (state or code == "idempotency_key_reused"):
        raise AssertionError(
            f"a valid job was refused for what the document could have said: {error}"
        )
    return None
