"""Fit the label-issue score (model.network.IssueHead) on held-out human-verified images.

    info = fit_issue_head(net, data.calibration, device)

Two logistic regressions, one over the listed labels (y > 0) and one over the unlisted ones,
predict the human label from [logit(y), the cleaner's raw output, the classifier's logit]; their
weights become the head's buffers, so the exported ONNX graph computes the score itself. Only
verified pairs count. A group without both outcomes (say, no missing label among the held-out
images) keeps the head's default for that group, and ``info`` says so.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression

from ..model.network import ISSUE_FEATURES, LabelCleaningNet
from .batches import Part, eval_batches

MIN_PAIRS = 5  # fewer verified pairs of either outcome in a group: keep the default there
GROUPS = ("unlisted", "listed")  # rows of IssueHead.weight


@torch.no_grad()
def issue_features(
    net: LabelCleaningNet, part: Part, device: torch.device, batch_size: int = 256
) -> np.ndarray:
    """(N, d, 3) float64: IssueHead's inputs for every image of ``part``."""
    net.eval()
    out = []
    for x, noisy in eval_batches(part, net.config.input, device, batch_size):
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
            inputs = net.issue_inputs(x, noisy)
        out.append(inputs.float().cpu().numpy().astype(np.float64))
    d = net.config.num_classes
    return np.concatenate(out) if out else np.zeros((0, d, len(ISSUE_FEATURES)))


def fit_issue_head(net: LabelCleaningNet, part: Part, device: torch.device) -> dict[str, Any]:
    """Fit ``net.issue_head`` on ``part`` (held-out V); returns what was fitted, per group."""
    x = issue_features(net, part, device)
    noisy = part.noisy.cpu().numpy()
    human = part.human.cpu().numpy() >= 0.5
    known = part.known.cpu().numpy() > 0
    head = net.issue_head
    info: dict[str, Any] = {"features": list(ISSUE_FEATURES)}
    for row, group in enumerate(GROUPS):
        chosen = known & ((noisy > 0) == (group == "listed"))
        target = human[chosen]
        positives, negatives = int(target.sum()), int((~target).sum())
        entry: dict[str, Any] = {"pairs": int(chosen.sum()), "present": positives}
        if min(positives, negatives) < MIN_PAIRS:
            entry["fitted"] = False
            entry["why"] = f"needs {MIN_PAIRS} verified pairs of each outcome"
        else:
            model = LogisticRegression(C=1.0, max_iter=1000).fit(x[chosen], target)
            head.weight[row] = torch.as_tensor(model.coef_[0], dtype=head.weight.dtype)
            head.bias[row] = float(model.intercept_[0])
            entry["fitted"] = True
        entry["weight"] = [float(w) for w in head.weight[row]]
        entry["bias"] = float(head.bias[row])
        info[group] = entry
    return info
