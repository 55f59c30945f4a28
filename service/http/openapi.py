"""The API contract: ``openapi.yaml`` at the repository root is the app's OpenAPI document.

    python -m labelclean.service.http.contract > openapi.yaml          # after an API change
    python -m labelclean.service.http.contract --model BUNDLE          # as one server keeps it

This module builds the documents from an app's own (``app_document``, ``narrowed``); the
contract module builds the app and prints them (it imports the app, which imports this).

tests/service/http/test_contract.py fails when the app and the file disagree, and drives a live
server with schemathesis from the document it serves (every check, valid and invalid requests).

openapi.yaml holds for every server. Some of what a server accepts depends on its model and
settings, so the file cannot say it: the label ids (its classes), top_k (at most its class count),
the image count (its max_images) and formats (its allowed_formats), the highest min_precision (its
decision's levels), and for jobs the URIs (under its storage roots), the thresholds (its label ids,
in [0, 1]) and the chunk size (its job_max_chunk_size). ``narrowed`` (``contract.served_document``)
narrows the file to one server with these (service.http.docs serves it at /openapi.json to a caller
with a key), and adds what JSON Schema can say only once the label ids are known: each label at most
once per image. Every request it describes passes the server's own checks of the request; what it
cannot describe:

- that an image part decodes (in an allowed format, within max_pixels), and that /clean has as
  many labels parts as image parts (JSON Schema can only spell that as one alternative per
  count, which schemathesis 4 fails to generate invalid bodies from);
- the storage a job names. A URI under the roots, in its canonical spelling, is as far as a
  document can go: whether the folder exists, holds images, whether the labels file is a CSV or
  the output writable (or a local symlink leads out of the roots) is the state of the storage,
  not the form of the request. Such a job is refused with a 422 whose code, ``uri_unusable``
  (service.http.jobs), tells it from one the document forbids; the contract tests let a valid
  job have that 422 and no other (tests/service/http/schemathesis_hooks.py).

/clean's ``labels`` parts are strings holding JSON (``contentMediaType: application/json``,
``contentSchema: NoisyLabels``), one per image, rather than arrays under a multipart
``encoding``: generators such as openapi-python-client ignore ``encoding`` and send a nested
array as one part per label id, which loses which image a label belongs to; a string is sent
as one part by every client.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Sequence
from typing import Any

import yaml
from fastapi import FastAPI

from ...settings import Settings
from ...storage import Storage
from .classify import IMAGE_FORMATS, REQUEST_SCHEMAS

MULTIPART = "multipart/form-data"


def app_document(app: FastAPI) -> dict[str, Any]:
    """The app's OpenAPI document (it does not depend on the settings), with the request schemas
    that the multipart bodies of /classify and /clean refer to: openapi.yaml."""
    document = copy.deepcopy(app.openapi())
    schemas = {**document["components"]["schemas"], **REQUEST_SCHEMAS}
    document["components"]["schemas"] = dict(sorted(schemas.items()))
    return document


def narrowed(
    app_doc: dict[str, Any], settings: Settings, label_ids: Sequence[str],
    min_precision_levels: Sequence[float] = (),
) -> dict[str, Any]:  # fmt: skip
    """``app_doc`` (``app_document``) narrowed to what a server with ``settings`` accepts when its
    model's classes are ``label_ids`` and its decision carries thresholds for
    ``min_precision_levels`` (a request's min_precision may be at most the highest): every
    request it describes passes the server's own checks."""
    document = copy.deepcopy(app_doc)
    schemas = document["components"]["schemas"]
    ids = list(label_ids)
    schemas["LabelId"] = {**schemas["LabelId"], "enum": ids}
    labels = schemas["NoisyLabels"]
    labels["maxItems"] = len(ids)
    labels["allOf"] = [_at_most_once(i) for i in ids]  # an id, or an object naming it
    _narrow_jobs(schemas, settings, ids, min_precision_levels)
    media_types = ", ".join(IMAGE_FORMATS[f] for f in settings.allowed_formats)
    for path in ("/classify", "/clean"):
        content = document["paths"][path]["post"]["requestBody"]["content"][MULTIPART]
        content["encoding"]["image"]["contentType"] = media_types
        body = content["schema"]
        body["properties"]["image"]["maxItems"] = settings.max_images
        if "top_k" in body["properties"]:
            body["properties"]["top_k"]["maximum"] = len(ids)
        if "labels" in body["properties"]:  # one per image
            body["properties"]["labels"]["maxItems"] = settings.max_images
        if "min_precision" in body["properties"] and min_precision_levels:
            body["properties"]["min_precision"]["maximum"] = max(min_precision_levels)
    return document


def job_uri_pattern(settings: Settings) -> str | None:
    """The job URIs a server with ``settings`` lets through its confinement, as a JSON Schema
    ``pattern``: a root of an allowed protocol (local roots as their real folders, the form
    ``file:///real/folder``) followed by plain path segments (letters, digits, ``_ - .``, none
    starting with a dot: no ``.`` or ``..``, no percent-encoding, so a URI matching it is its own
    canonical form). None when no root is usable: every job URI is refused."""
    confinement = Storage.from_settings(settings).confinement
    protocols = confinement.protocols or frozenset()
    roots = [f"file://{r}" for r in confinement.local_roots or () if "file" in protocols]
    roots += [r.uri for r in confinement.remote_roots or () if r.protocol in protocols]
    if not roots:
        return None
    prefixes = "|".join(_literal(r.rstrip("/")) for r in sorted(roots))
    return f"^(?:{prefixes})(?:/{SEGMENT})*/?$(?!\\n)"  # (?!\n): Python's $ passes a last \n


SEGMENT = "[A-Za-z0-9_-][A-Za-z0-9._-]*"


def _literal(text: str) -> str:
    """``text`` matched literally by an ECMA-262 regular expression (JSON Schema's dialect;
    Python's re.escape also escapes ``-``, which a Unicode-mode ECMA pattern refuses)."""
    return re.sub(r"([\\^$.*+?()\[\]{}|])", r"\\\1", text)


def _narrow_jobs(
    schemas: dict[str, Any], settings: Settings, ids: list[str], levels: Sequence[float]
) -> None:
    """POST /jobs narrowed to what this server's checks let through
    (service.jobs.steps.validate_spec): URIs under its roots (``job_uri_pattern``; none: no URI at
    all), options.thresholds in [0, 1] and keyed by its label ids, options.chunk_size at most its
    job_max_chunk_size, options.min_precision at most its highest level."""
    pattern = job_uri_pattern(settings)
    spec = schemas["JobSpec"]["properties"]
    for name in ("images", "labels", "output"):
        spec[name] = {**spec[name], "pattern": pattern} if pattern else {**spec[name], "not": {}}
    options = schemas["JobOptions"]["properties"]
    unit: dict[str, Any] = {"type": "number", "minimum": 0, "maximum": 1}
    number, table, null = options["thresholds"]["anyOf"]
    options["thresholds"]["anyOf"] = [
        {**number, **unit},
        {**table, "propertyNames": {"$ref": "#/components/schemas/LabelId"},
         "additionalProperties": unit},
        null,
    ]  # fmt: skip
    options["chunk_size"]["anyOf"][0]["maximum"] = settings.job_max_chunk_size
    if levels:
        options["min_precision"]["anyOf"][0]["maximum"] = max(levels)


def _at_most_once(label: str) -> dict[str, Any]:
    named = {"type": "object", "properties": {"label": {"const": label}}, "required": ["label"]}
    return {"contains": {"anyOf": [{"const": label}, named]}, "minContains": 0, "maxContains": 1}


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # a schema used twice is written out twice, not as a YAML anchor


def to_yaml(document: dict[str, Any]) -> str:
    return yaml.dump(
        document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100
    )  # fmt: skip
