"""The API contract: ``openapi.yaml`` at the repository root is the app's OpenAPI document.

    python -m labelclean.service.openapi > openapi.yaml     # after changing the API on purpose
    python -m labelclean.service.openapi --model BUNDLE     # the contract as one server keeps it

tests/service/test_contract.py fails when the app and the file disagree, and drives a live
server with schemathesis from the served document (every check, valid and invalid requests).

openapi.yaml holds for every server. Some of what a server accepts depends on its model and
settings, so the file cannot say it: the label ids (its classes), top_k (at most its class
count), the image count (its max_images) and formats (its allowed_formats), the highest
min_precision (its decision's levels). ``served_document``
narrows the file to one server with these, and adds what JSON Schema can say only once the
label ids are known: each label at most once per image. Two things the server checks stay out of
both: that an image part decodes (in an allowed format, within max_pixels), and that /clean has
as many labels parts as image parts (JSON Schema can only spell that as one alternative per
count, which schemathesis 4 fails to generate invalid bodies from).
"""

from __future__ import annotations

import argparse
import copy
import sys
from collections.abc import Sequence
from typing import Any

import yaml

from ..settings import Settings
from .app import create_app
from .inference import IMAGE_FORMATS, REQUEST_SCHEMAS

MULTIPART = "multipart/form-data"


def openapi_document() -> dict[str, Any]:
    """The app's OpenAPI document (it does not depend on the settings), with the request schemas
    that the multipart bodies of /classify and /clean refer to."""
    document = create_app(Settings()).openapi()
    schemas = {**document["components"]["schemas"], **REQUEST_SCHEMAS}
    document["components"]["schemas"] = dict(sorted(schemas.items()))
    return document


def served_document(
    settings: Settings, label_ids: Sequence[str], min_precision_levels: Sequence[float] = ()
) -> dict[str, Any]:
    """``openapi_document()`` narrowed to what a server with ``settings`` accepts when its model's
    classes are ``label_ids`` and its decision carries thresholds for ``min_precision_levels``
    (a request's min_precision may be at most the highest): every request it describes passes
    the server's own checks."""
    document = copy.deepcopy(openapi_document())
    schemas = document["components"]["schemas"]
    ids = list(label_ids)
    schemas["LabelId"] = {**schemas["LabelId"], "enum": ids}
    labels = schemas["NoisyLabels"]
    labels["maxItems"] = len(ids)
    labels["allOf"] = [_at_most_once(i) for i in ids]  # an id, or an object naming it
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


def _at_most_once(label: str) -> dict[str, Any]:
    return {
        "contains": {
            "anyOf": [
                {"const": label},
                {
                    "type": "object",
                    "properties": {"label": {"const": label}},
                    "required": ["label"],
                },
            ]
        },
        "minContains": 0,
        "maxContains": 1,
    }


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # a schema used twice is written out twice, not as a YAML anchor


def to_yaml(document: dict[str, Any]) -> str:
    return yaml.dump(
        document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100
    )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m labelclean.service.openapi")
    parser.add_argument(
        "--model", help="bundle: print the contract as a server with this bundle and the "
        "LABELCLEAN_* settings of the environment keeps it (for schemathesis against that server)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.model is None:
        document = openapi_document()
    else:
        from ..model.bundle import load_bundle

        bundle = load_bundle(args.model)
        document = served_document(
            Settings(model=args.model),
            [c.id for c in bundle.classes],
            bundle.require_decision().min_precision_levels,
        )
    sys.stdout.write(to_yaml(document))


if __name__ == "__main__":
    main()
