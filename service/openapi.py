"""The API contract: ``openapi.yaml`` at the repository root is the app's OpenAPI document.

    python -m labelclean.service.openapi > openapi.yaml     # after changing the API on purpose

tests/service/test_contract.py fails when the app and the file disagree, and schemathesis drives
a live server from the file.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from ..settings import Settings
from .app import create_app
from .inference import REQUEST_SCHEMAS


def openapi_document() -> dict[str, Any]:
    """The app's OpenAPI document (it does not depend on the settings), with the request schemas
    that the multipart bodies of /classify and /clean refer to."""
    document = create_app(Settings()).openapi()
    schemas = {**document["components"]["schemas"], **REQUEST_SCHEMAS}
    document["components"]["schemas"] = dict(sorted(schemas.items()))
    return document


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # a schema used twice is written out twice, not as a YAML anchor


def to_yaml(document: dict[str, Any]) -> str:
    return yaml.dump(
        document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100
    )  # fmt: skip


if __name__ == "__main__":
    sys.stdout.write(to_yaml(openapi_document()))
