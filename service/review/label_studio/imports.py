"""``labelclean import-reviews``: reviews from Label Studio into one Open Images human-labels CSV.

    labelclean import-reviews --label-studio EXPORT.json --model BUNDLE --out REVIEWS.csv
    labelclean import-reviews --reviews file:///data/reviews/ --out REVIEWS.csv

From a JSON export (Label Studio's Export, "JSON"): each task's standing annotation (the
latest edited; skipped ones verify nothing), every choice of the labeling config (``--config``,
by default the one ``labelclean review`` writes for the bundle: every class) a verified label,
ticked 1 and unticked 0. From the webhook's store (LABELCLEAN_LABEL_STUDIO_REVIEWS): its
labels/*.csv joined. Torch-free.
"""

from __future__ import annotations

import json
from pathlib import Path

from ....model.bundle import load_bundle
from ....storage import Storage, StorageError
from .config import ProjectConfig
from .export import config_xml
from .reviews import ReviewStore, csv_text, export_reviews, rows


def from_export(export: Path, model: Path, config: Path | None) -> tuple[str, int]:
    """(the CSV text, the number of reviewed images) of a JSON export."""
    bundle = load_bundle(model)
    xml = config.read_text(encoding="utf-8") if config else config_xml(bundle.classes)
    try:
        tasks = json.loads(export.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"--label-studio: {export}: not JSON ({exc})") from None
    if not isinstance(tasks, list):
        raise ValueError(f"--label-studio: {export}: expected a JSON list of tasks (JSON export)")
    try:
        project = ProjectConfig.parse(xml, bundle.classes)
    except Exception as exc:  # LabelConfigError, UnknownChoices: say which file
        raise ValueError(f"--config: {getattr(exc, 'message', exc)}") from None
    found = export_reviews(tasks, project)
    return csv_text(line for r in found for line in rows(r, bundle.classes)), len(found)


def from_store(uri: str) -> tuple[str, int]:
    """(the CSV text, the number of reviewed tasks) of the webhook's store."""
    storage = Storage.local()
    try:
        found = storage.exists(uri) or bool(list(storage.list(uri)))
    except StorageError:
        found = False
    if not found:
        raise ValueError(f"--reviews: {uri}: folder not found")
    store = ReviewStore(storage, uri, [])
    return store.joined(), len(store.label_files())
