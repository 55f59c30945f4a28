"""A cleaned image as Label Studio's prediction, the same one ``labelclean review`` exports:

    {"model_version": "labelclean-<bundle sha256[:12]>", "score": 0.61, "mislabeling": 0.93,
     "result": [{"id": ..., "from_name": "labels", "to_name": "image", "type": "choices",
                 "value": {"choices": [the final label set's choice values]}}]}

``score`` is the review priority Label Studio sorts by ("Prediction score", lowest first): the
model's confidence in the final label set, the lowest probability over the classes that the decision
is right (service.review.label_studio.export explains it). ``mislabeling`` is the image's highest
issue score (the export's ``max_issue``). The inference process computes both per image
(``model.review_score.summary``), the HTTP process writes them in the project's choices
(``prediction``).
"""

from __future__ import annotations

from typing import Any


def model_version(sha256: str) -> str:
    """The bundle's id as Label Studio sees it (the export's model_version)."""
    return f"labelclean-{sha256[:12]}"


def prediction(
    found: dict[str, Any], *, choices: dict[str, str], from_name: str, to_name: str,
    version: str, key: str,
) -> dict[str, Any]:  # fmt: skip
    """One task's prediction from its ``summary`` (``choices``: label id -> the project's
    choice value; classes the project has no choice for are left out; ``key``: the result id)."""
    picked = [choices[k] for k in found["final"] if k in choices]
    result = {
        "id": key, "from_name": from_name, "to_name": to_name, "type": "choices",
        "value": {"choices": picked},
    }  # fmt: skip
    return {
        "model_version": version,
        "score": found["score"],
        "mislabeling": found["mislabeling"],
        "result": [result] if picked else [],
    }
