"""The API contract as a file: openapi.yaml is ``openapi_document()``, the app's own document.

    python -m labelclean.service.http.contract > openapi.yaml   # after changing the API on purpose
    python -m labelclean.service.http.contract --model BUNDLE   # as one server keeps it

tests/service/http/test_contract.py fails when the app and the file disagree. What the document
says and how a server narrows it: service.http.openapi.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from ...settings import Settings
from .app import create_app
from .openapi import app_document, narrowed, to_yaml


def openapi_document() -> dict[str, Any]:
    """openapi.yaml: the document of an app built with the default settings."""
    return app_document(create_app(Settings()))


def served_document(
    settings: Settings, label_ids: Sequence[str], min_precision_levels: Sequence[float] = ()
) -> dict[str, Any]:
    """openapi.yaml narrowed to a server with ``settings`` and a model of ``label_ids`` whose
    decision has ``min_precision_levels`` (service.http.openapi.narrowed)."""
    return narrowed(openapi_document(), settings, label_ids, min_precision_levels)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m labelclean.service.http.contract")
    parser.add_argument(
        "--model", help="bundle: print the contract as a server with this bundle and the "
        "LABELCLEAN_* settings of the environment keeps it (for schemathesis against that server)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.model is None:
        document = openapi_document()
    else:
        from ...model.bundle import load_bundle

        bundle = load_bundle(args.model)
        document = served_document(
            Settings(model=args.model),
            [c.id for c in bundle.classes],
            bundle.require_decision().min_precision_levels,
        )
    sys.stdout.write(to_yaml(document))


if __name__ == "__main__":
    main()
