"""Score a model bundle with ONNX Runtime on a data set's test images (no PyTorch involved)."""

from __future__ import annotations

import numpy as np

from ..model.bundle import load_bundle
from ..model.openimages import DataError, DataFiles, load_dataset
from ..model.preprocess import encode_noisy, normalize
from ..model.runtime import Device, OnnxModel
from .decision_fit import consistent
from .evaluate import predict_batches, score
from .images import load_images, open_source
from .issue_detection import issue_summary
from .validation import decision_metrics


def evaluate_bundle(
    path,
    files: DataFiles,
    *,
    device: Device = "auto",
    ignore_unknown: bool = False,
    progress: bool = True,
) -> dict:
    """The paper's metrics (percent) for the bundle at ``path`` on ``files``' test set."""
    bundle = load_bundle(path)
    data = load_dataset(files, ignore_unknown=ignore_unknown)
    if [c.id for c in data.classes] != [c.id for c in bundle.classes]:
        raise DataError(
            f"{files.path(files.classes)}: classes differ from the bundle's "
            f"classes.csv ({len(data.classes)} vs {len(bundle.classes)} classes, "
            "or another order)"
        )
    model = OnnxModel(bundle, device=device)
    test = data.test
    pixels, ok, failures = load_images(
        open_source(files.images_uri),
        test.image_ids,
        bundle.input,
        desc="decode test",
        progress=progress,
    )
    rows = np.flatnonzero(ok)
    test = test.subset(rows)
    test.noisy = encode_noisy(test.noisy, bundle.model_config.get("noisy_labels", "confidence"))
    scores, cleaned, issue = predict_batches(
        model.run, pixels[rows], test.noisy, lambda p: normalize(p, bundle.input)
    )
    metrics = score(scores, cleaned, test.noisy, test.human, test.known, bundle.thresholds_cleaned)
    decision = bundle.require_decision()
    passes = decision.passes(test.noisy, cleaned, issue, *decision.cuts())
    arrays = {
        "noisy": test.noisy, "human": test.human, "known": test.known, "issue": issue,
        "cleaned": cleaned, "final": consistent(passes, bundle.ancestor_columns),
    }  # fmt: skip
    thresholds = {"cleaned": bundle.thresholds_cleaned}
    return {
        **metrics,
        **issue_summary(arrays),
        **decision_metrics(arrays, thresholds, bundle.ancestor_columns),
        "images": len(rows),
        "skipped_images": len(failures),
        "provider": model.provider,
    }
