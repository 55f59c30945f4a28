"""What a run does after its last phase: fit the issue score and the decision thresholds on
out-of-sample reads of V, evaluate on the test split (read once, for the report), save, export.

    report = finish(net, data, cfg, RUN, device, phases, start, export=True)

Out-of-sample reads of V (training.crossfit): with ``cfg.folds`` > 1, one network per fold
trained without it (from the weights saved before the first V-using phase, RUN/crossfit/start.pt);
with ``folds`` 1, the held-out part of V; a run whose phases never see V (``noisy``) reads all of
V with its own network. On them: the issue head (training.issue_fit), the decision thresholds
(training.decision_fit) and the older per-class thresholds on c, the classifier's scores and the
machine's confidences; and the validation figures (training.validation) that choose defaults.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..model.decision import LEVELS, Decision
from ..model.export import export_bundle
from ..model.network import LabelCleaningNet
from .batches import Part, TrainingData, eval_batches, to_input
from .checkpoint import load_checkpoint, rebuild, save_checkpoint, weights_digest
from .crossfit import OutOfFold, cross_fit, out_of_sample
from .decision_fit import choose_cuts, consistent
from .evaluate import score
from .issue_detection import issue_summary
from .issue_fit import DEFAULT_FEATURES, fit_issue
from .loop import NEEDS_VERIFIED, TrainConfig
from .metrics import calibrate_thresholds
from .validation import decision_metrics, validate

START = Path("crossfit") / "start.pt"


def first_verified_phase(phases: list) -> int | None:
    """Index of the first phase that reads V (where the fold networks start), or None."""
    return next((i for i, (p, _) in enumerate(phases) if p in NEEDS_VERIFIED), None)


def save_start(out: Path, net: LabelCleaningNet, data: TrainingData, cfg: TrainConfig) -> None:
    """Keep the weights the V-using phases start from (RUN/crossfit/start.pt)."""
    if cfg.folds > 1:
        save_checkpoint(out / START, net, data.classes, train_config=cfg.to_dict())


def out_of_fold(
    net: LabelCleaningNet,
    data: TrainingData,
    cfg: TrainConfig,
    phases: list,
    device: torch.device,
    out: Path,
    progress: bool,
) -> OutOfFold:
    """Out-of-sample reads of V (see the module docstring)."""
    first = first_verified_phase(phases)
    if first is None:
        return out_of_sample(net, data.all_verified(), device)
    if cfg.folds <= 1:
        return out_of_sample(net, data.calibration, device)
    start, _ = rebuild(load_checkpoint(out / START))
    digest = weights_digest(start.state_dict())
    return cross_fit(
        start, digest, data, cfg, phases[first:], device,
        folder=out / "crossfit", first_phase_index=first, progress=progress,
    )  # fmt: skip


@torch.no_grad()
def predict_part(
    net: LabelCleaningNet, part: Part, device: torch.device, batch_size: int = 256
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scores, cleaned, issue), each (N, d) float32, for every image of ``part``, in float32
    as the exported graph computes them."""
    net.eval()
    outputs: list[list[np.ndarray]] = [[], [], []]
    for x, noisy in eval_batches(part, net.config.input, device, batch_size):
        for kept, tensor in zip(outputs, net(x, noisy), strict=True):
            kept.append(tensor.float().cpu().numpy())
    empty = np.zeros((0, net.config.num_classes), np.float32)
    s, c, issue = (np.concatenate(o) if o else empty for o in outputs)
    return s, c, issue


def fit_decision(
    oof: OutOfFold, oof_issue: np.ndarray, cleaned: list[float], cfg: TrainConfig
) -> Decision:
    """The run's decision rule and thresholds, chosen on V's out-of-sample issue scores."""
    args = (oof_issue, oof.noisy, oof.human, oof.known)
    cuts = choose_cuts(*args, min_precision=cfg.min_precision)
    levels = {}
    for p in LEVELS:
        level = choose_cuts(*args, min_precision=p)
        levels[p] = (level.remove, level.add)
    objective = "f1" if cfg.min_precision is None else f"min_precision={cfg.min_precision:g}"
    return Decision(
        rule=cfg.rule,
        objective=objective,
        remove=cuts.remove,
        add=cuts.add,
        cleaned=np.asarray(cleaned, np.float32),
        per_class=cuts.per_class,
        levels=levels,
    )


def finish(
    net: LabelCleaningNet,
    data: TrainingData,
    cfg: TrainConfig,
    out: Path,
    device: torch.device,
    phases: list,
    start: dict[str, Any] | None = None,
    *,
    export: bool,
    progress: bool = True,
) -> dict[str, Any]:
    """Fit the issue score and the thresholds on V's out-of-sample reads, evaluate on test,
    save and export (see the module docstring)."""
    oof = out_of_fold(net, data, cfg, phases, device, out, progress)
    (out / "crossfit").mkdir(exist_ok=True)
    oof.save(out / "crossfit" / "oof.npz")
    fit = fit_issue(oof, features=DEFAULT_FEATURES, seed=cfg.seed)
    fit.apply(net.issue_head)
    thresholds = {
        "cleaned": calibrate_thresholds(oof.cleaned, oof.human, oof.known),
        "scores": calibrate_thresholds(oof.scores, oof.human, oof.known),
        "noisy": calibrate_thresholds(oof.noisy, oof.human, oof.known),
    }
    decision = fit_decision(oof, fit.oof_issue, thresholds["cleaned"], cfg)
    ancestors = data.hierarchy.ancestor_columns(_index(data)) if data.hierarchy else None
    validation = validate(oof, fit.oof_issue, ancestors, cfg.min_precision)
    arrays = _predict_test(net, data, device, decision, ancestors, out)
    metrics = score(
        arrays["scores"], arrays["cleaned"], arrays["noisy"], arrays["human"], arrays["known"],
        thresholds["cleaned"], thresholds["noisy"],
    )  # fmt: skip
    metrics.update(issue_summary(arrays, thresholds["noisy"]))
    metrics.update(decision_metrics(arrays, thresholds, ancestors))
    net.cpu()
    save_checkpoint(
        out / "checkpoint.pt", net, data.classes,
        train_config=cfg.to_dict(), phases=phases, phase_index=len(phases), epoch=-1,
        optimizer=None, thresholds=thresholds, decision=decision.to_dict(), metrics=metrics,
        done=True, start=start,
        hierarchy=data.hierarchy.to_list() if data.hierarchy else None,
    )  # fmt: skip
    report: dict[str, Any] = {
        "mode": cfg.mode,
        "seed": cfg.seed,
        "start": start,
        "metrics": metrics,
        "validation": validation,
        "thresholds": thresholds,
        "decision": decision.summary(),
        "issue_fit": fit.info,
        "sizes": {**{k: len(p) for k, p in data.parts().items()}, "V out-of-sample": len(oof)},
        "skipped_images": [{"image_id": f.image_id, "reason": f.reason} for f in data.failures],
        "ignored_labels": data.unknown_labels,
        "hierarchy_edges": len(data.hierarchy.edges) if data.hierarchy else 0,
    }
    if export:
        report["bundle"] = _export(net, data, out, thresholds, decision, cfg.mode, metrics)
    (out / "decision.json").write_text(json.dumps(decision.to_dict()) + "\n")
    return report


def _predict_test(
    net: LabelCleaningNet, data: TrainingData, device: torch.device, decision: Decision,
    ancestors: list[np.ndarray] | None, out: Path,
) -> dict[str, np.ndarray]:  # fmt: skip
    """The test split read once: scores, cleaned, issue, the labels, and the final sets (the
    decision rule, then the hierarchy); saved as test_predictions.npz."""
    test = data.test
    test_s, test_c, test_issue = predict_part(net, test, device)
    arrays = {
        "scores": test_s,
        "cleaned": test_c,
        "issue": test_issue,
        "noisy": test.noisy.cpu().numpy(),
        "human": test.human.cpu().numpy(),
        "known": test.known.cpu().numpy() > 0,
    }
    passes = decision.passes(arrays["noisy"], test_c, test_issue, *decision.cuts())
    arrays["final"] = consistent(passes, ancestors)
    np.savez_compressed(out / "test_predictions.npz", **arrays)
    return arrays


def _export(
    net: LabelCleaningNet, data: TrainingData, out: Path, thresholds: dict[str, list[float]],
    decision: Decision, mode: str, metrics: dict[str, Any],
) -> str:  # fmt: skip
    """Write RUN/bundle, its parity checked on up to 32 test images; returns its path."""
    rows = torch.arange(min(32, len(data.test)))
    sample = data.test.take(rows, torch.device("cpu"))
    images = to_input(sample.pixels, net.config.input).numpy()
    bundle = export_bundle(
        net, out / "bundle", data.classes,
        sample=(images, sample.noisy.numpy()),
        thresholds_cleaned=thresholds["cleaned"], thresholds_scores=thresholds["scores"],
        decision=decision, mode=mode, metrics=metrics, hierarchy=data.hierarchy,
    )  # fmt: skip
    return str(bundle.path)


def _index(data: TrainingData) -> dict[str, int]:
    return {c.id: i for i, c in enumerate(data.classes)}
