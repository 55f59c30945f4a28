"""Fit the label-issue score (model.issue_head.IssueHead) on out-of-sample reads of V.

    fit = fit_issue(oof)              # oof: training.crossfit.OutOfFold
    fit.apply(net.issue_head)         # the exported graph then computes the fitted score
    fit.oof_issue                     # (N, d): V's issue scores from fits that left it out

Per group (unlisted labels, listed labels) one logistic regression predicts the human label from
the head's FEATURES, with per-class terms shrunk towards it:

    z = x . (w + W[k]) + b + B[k],   loss = mean BCE + lam * (|W|^2 + |B|^2) + 1e-4 |w|^2

A class with few verified pairs keeps W[k], B[k] near 0, the pooled fit; lam is chosen per
group from LAMBDAS by the log-loss of fits that left each fold out (the folds of the cross-fit;
5 random folds of the images when there is one held-out part), and ``oof_issue`` keeps those
fits' predictions: each V image scored by a head that did not see it, which is what the decision
thresholds are chosen on (training.decision_fit). Fitted in float32 with L-BFGS on standardised
features; the scaling is folded into the weights. A group without MIN_PAIRS verified pairs of
each outcome keeps the head's default (``info`` says so).

The exported graph computes x . w + b in float32 on the raw features, so the folded weights must
stay tame: a feature that hardly varies in a group (an unlisted label's logit(y) is logit(EPS)
on every pair; a barely trained cleaner adds 0.003 to it) would otherwise be divided by its tiny
spread, and the bias would cancel the product (weights 1e5, bias 1e6 on 40 verified images:
float32 rounding then differs between PyTorch and ONNX Runtime by 1e-2). So the means and
spreads are taken in float64 (a constant feature has spread 0 and weight 0), and a spread counts
as at least SPREAD_FLOOR of the feature's root mean square: |w| |x| stays within |w'| /
SPREAD_FLOOR for a standardised weight w', and the ridges keep w' small.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..model.issue_head import FEATURES, GROUPS, IssueHead
from .crossfit import OutOfFold, sigmoid

DEFAULT_FEATURES = FEATURES  # chosen on V's validation reads (benchmarks/RESULTS.md)
MIN_PAIRS = 5  # fewer verified pairs of either outcome in a group: keep the default there
LAMBDAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, math.inf)  # inf: no per-class terms (pooled alone)
RIDGE = 1e-4  # on the pooled weights: keeps a separable group finite
SPREAD_FLOOR = 1e-2  # a feature's spread counts as at least this share of its magnitude


@dataclass
class IssueFit:
    """Fitted head parameters and V's out-of-sample issue scores."""

    weight: np.ndarray  # (2, d, F) float32, IssueHead.weight
    bias: np.ndarray  # (2, d) float32
    oof_issue: np.ndarray  # (N, d) float32
    info: dict[str, Any] = field(default_factory=dict)

    def apply(self, head: IssueHead) -> None:
        with torch.no_grad():
            head.weight.copy_(torch.from_numpy(self.weight))
            head.bias.copy_(torch.from_numpy(self.bias))


def issue_scores(inputs: np.ndarray, noisy: np.ndarray, weight: np.ndarray, bias: np.ndarray):
    """(N, d) the head's output for (N, d, F) ``inputs``, as IssueHead.forward computes it."""
    z_unlisted = (inputs * weight[0]).sum(-1) + bias[0]
    z_listed = (inputs * weight[1]).sum(-1) + bias[1]
    return sigmoid(np.where(noisy > 0, -z_listed, z_unlisted))


def default_parameters(d: int, cleaner_loss: str) -> tuple[np.ndarray, np.ndarray]:
    head = IssueHead(d, cleaner_loss)
    return head.weight.numpy().copy(), head.bias.numpy().copy()


def _fit_group(
    x: np.ndarray, cls: np.ndarray, target: np.ndarray, d: int, lam: float, use: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One group's regression -> ((d, F) weights, (d,) biases) on the raw features."""
    xs = x[:, use].astype(np.float64)
    mu, sd = _standardisation(xs)
    xt = torch.from_numpy(((xs - mu) / sd).astype(np.float32))
    ct, tt = torch.from_numpy(cls), torch.from_numpy(target.astype(np.float32))
    f = xt.shape[1]
    w, b = torch.zeros(f, requires_grad=True), torch.zeros((), requires_grad=True)
    per_class = math.isfinite(lam)
    big_w = torch.zeros(d, f, requires_grad=per_class)
    big_b = torch.zeros(d, requires_grad=per_class)
    params = [w, b] + ([big_w, big_b] if per_class else [])
    opt = torch.optim.LBFGS(params, max_iter=300, line_search_fn="strong_wolfe")

    def loss_fn() -> torch.Tensor:
        opt.zero_grad()
        z = (xt * (w + big_w[ct])).sum(-1) + b + big_b[ct]
        loss = F.binary_cross_entropy_with_logits(z, tt) + RIDGE * (w**2).sum()
        if per_class:
            loss = loss + lam * ((big_w**2).sum() + (big_b**2).sum())
        loss.backward()
        return loss

    opt.step(loss_fn)
    with torch.no_grad():
        full_w = (w + big_w).numpy().astype(np.float64) / sd  # (d, f) on raw features
        full_b = (b + big_b).numpy().astype(np.float64) - (full_w * mu).sum(-1)
    weight = np.zeros((d, x.shape[1]), np.float32)
    weight[:, use] = full_w
    return weight, full_b.astype(np.float32)


def _standardisation(xs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(F,) means and spreads of (n, F) float64 features: each spread at least SPREAD_FLOOR of
    the feature's root mean square (1 for a feature that is 0 throughout)."""
    mu, sd = xs.mean(0), xs.std(0)
    sd = np.maximum(sd, SPREAD_FLOOR * np.sqrt(mu**2 + sd**2))
    sd[sd == 0] = 1.0
    return mu, sd


def _predict(x: np.ndarray, cls: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    return (x * weight[cls]).sum(-1) + bias[cls]


def _log_loss(z: np.ndarray, target: np.ndarray) -> float:
    z = z.astype(np.float64)
    return float(np.sum(np.logaddexp(0.0, z) - target * z))


def fit_issue(
    oof: OutOfFold,
    *,
    features: Sequence[str] = FEATURES,
    lambdas: Sequence[float] = LAMBDAS,
    seed: int = 0,
) -> IssueFit:
    """Fit both groups on ``oof`` (only verified pairs count); see the module docstring."""
    unknown = [f for f in features if f not in FEATURES]
    if unknown:
        raise ValueError(f"unknown issue features {unknown}; choose from {list(FEATURES)}")
    use = np.array([f in features for f in FEATURES])
    n, d = oof.noisy.shape
    weight, bias = default_parameters(d, oof.cleaner_loss)
    oof_z = np.zeros((n, d), np.float64)
    fitted_z = np.zeros((n, d), bool)
    folds = oof.fit_folds(seed)
    image_fold = np.broadcast_to(folds[:, None], (n, d))
    cls_grid = np.broadcast_to(np.arange(d)[None, :], (n, d))
    info: dict[str, Any] = {"features": list(features), "pairs_images": n}
    for row, group in enumerate(GROUPS):
        chosen = oof.known & ((oof.noisy > 0) == (group == "listed"))
        x, cls = oof.inputs[chosen], cls_grid[chosen]
        target = (oof.human >= 0.5)[chosen]
        positives, negatives = int(target.sum()), int((~target).sum())
        entry: dict[str, Any] = {"pairs": int(chosen.sum()), "present": positives}
        if min(positives, negatives) < MIN_PAIRS:
            entry.update(fitted=False, why=f"needs {MIN_PAIRS} verified pairs of each outcome")
            info[group] = entry
            continue
        fold_of = image_fold[chosen]
        best: tuple[float, float, np.ndarray] | None = None
        scores = {}
        for lam in lambdas:
            z = np.zeros(len(target))
            for j in np.unique(fold_of):
                train, held = fold_of != j, fold_of == j
                if min(target[train].sum(), (~target[train]).sum()) < 1:
                    z[held] = 0.0
                    continue
                w, b = _fit_group(x[train], cls[train], target[train], d, lam, use)
                z[held] = _predict(x[held], cls[held], w, b)
            loss = _log_loss(z, target) / len(target)
            scores[_name(lam)] = loss
            if best is None or loss < best[0] - 1e-9:
                best = (loss, lam, z)
        assert best is not None
        _, lam, z = best
        weight[row], bias[row] = _fit_group(x, cls, target, d, lam, use)
        oof_z[chosen], fitted_z[chosen] = z, True
        entry.update(fitted=True, lam=_name(lam), cv_log_loss=scores)
        info[group] = entry
    oof_issue = issue_scores(oof.inputs, oof.noisy, weight, bias)
    # the verified pairs of fitted groups get the out-of-fold predictions
    z = np.where(oof.noisy > 0, -oof_z, oof_z)
    oof_issue[fitted_z] = sigmoid(z[fitted_z])
    return IssueFit(weight, bias, oof_issue, info)


def _name(lam: float) -> str:
    return "pooled only" if not math.isfinite(lam) else f"{lam:g}"
