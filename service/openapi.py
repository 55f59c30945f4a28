"""The API contract: ``openapi.yaml`` at the repository root is the app's OpenAPI document.

    python -m labelclean.service.openapi > openapi.yaml     # after changing the API on purpose

tests/test_openapi.py fails when the app and the file disagree, and schemathesis drives a live
server from the file.
"""

from __future__ import annotations

import sys
from typing import Any

import yaml

from ..settings import Settings
from .app import create_app


def openapi_document() -> dict[str, Any]:
    """The app's OpenAPI document (it does not depend on the settings)."""
    return create_app(Settings()).openapi()


def to_yaml(document: dict[str, Any]) -> str:
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, width=100)


if __name__ == "__main__":
    sys.stdout.write(to_yaml(openapi_document()))
