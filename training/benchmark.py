"""The paper's comparison on one data set: five modes, several seeds, one table.

    labelclean benchmark --data DATA --out BENCH --seeds 0,1

For each seed the ``noisy`` model is trained once; the other modes start from it, as in the
paper. BENCH/ gets results.md (the table), results.json and cleaned_vs_noisy_pr.png. They include
label-issue detection on the test images (training.issue_detection): the issue score against
the machine confidences, cleanlab and the cleaned labels. ``labelclean benchmark-report``
rebuilds the report from finished folders (training.benchmark_report).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..model.config import ModelConfig
from .batches import TrainingData
from .benchmark_tables import plot_pr, render_markdown
from .issue_detection import CLEANLAB_MIXED_T, CLEANLAB_T, KINDS, MACHINE, OURS, detect_seed
from .loop import MODES, TrainConfig
from .run import train

# Label sets compared in the cleaner report.
SETS = ("noisy", "noisy_thresholded", "cleaned")
# Label scores ranked in the cleaner report (training.metrics.cleaning_report).
RANKINGS = ("noisy", "listed", "cleaned", "cleaned_tiebreak")
# Runs shown below the table, outside the paper's comparison: name -> (folder, mode, changes).
# A short fine-tune on V, stopped long before the step budget the other modes get, is the
# strongest simple use of V for the classifier alone on the demo data (benchmarks/RESULTS.md).
REFERENCE = {
    "finetune-clean, 20 epochs on V": (
        "finetune-clean-short",
        "finetune-clean",
        {"clean_epochs": 20},
    ),
}


def run_benchmark(
    data: TrainingData,
    out: Path,
    cfg: TrainConfig,
    model_cfg: ModelConfig,
    *,
    seeds: list[int],
    modes: list[str],
    progress: bool = True,
) -> dict[str, Any]:
    unknown = [m for m in modes if m not in MODES]
    if unknown or not seeds:
        raise ValueError(
            f"unknown mode(s) {unknown}; choose from {', '.join(MODES)}"
            if unknown
            else "no seeds given"
        )
    out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, dict[int, dict[str, Any]]] = {m: {} for m in MODES if m in modes}
    reference: dict[str, dict[int, dict[str, Any]]] = {}
    for seed in seeds:
        base = out / f"seed-{seed}"
        started = time.perf_counter()
        runs.setdefault("noisy", {})[seed] = train(
            data, base / "noisy", _with(cfg, "noisy", seed), model_cfg, progress=progress
        )
        noisy_seconds = time.perf_counter() - started
        runs["noisy"][seed]["seconds"] = noisy_seconds
        for mode in runs:
            if mode == "noisy":
                continue
            started = time.perf_counter()
            runs[mode][seed] = train(
                data,
                base / mode,
                _with(cfg, mode, seed),
                model_cfg,
                init=base / "noisy" / "checkpoint.pt",
                progress=progress,
            )
            runs[mode][seed]["seconds"] = time.perf_counter() - started
            if progress:
                m = runs[mode][seed]["metrics"]
                print(f"seed {seed} {mode}: AP_all {m['AP_all']:.2f} MAP {m['MAP']:.2f}")
        for name, (folder, mode, changes) in REFERENCE.items():
            if mode not in modes:
                continue
            started = time.perf_counter()
            reference.setdefault(name, {})[seed] = train(
                data,
                base / folder,
                TrainConfig(**{**_with(cfg, mode, seed).to_dict(), **changes}),
                model_cfg,
                init=base / "noisy" / "checkpoint.pt",
                export=False,
                progress=progress,
            )
            reference[name][seed]["seconds"] = time.perf_counter() - started
    detection = {
        seed: detect_seed(out / f"seed-{seed}", tuple(m for m in OURS if m in runs))
        for seed in seeds
    }
    results = summarize(runs, seeds, detection)
    if reference:
        results["reference"] = summarize(reference, seeds)["modes"]
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(render_markdown(results, data, cfg, model_cfg))
    if "joint" in runs:
        plot_pr(
            out / f"seed-{seeds[0]}" / "joint" / "test_predictions.npz",
            out / "cleaned_vs_noisy_pr.png",
        )
    return results


def _with(cfg: TrainConfig, mode: str, seed: int) -> TrainConfig:
    return TrainConfig(**{**cfg.to_dict(), "mode": mode, "seed": seed})


def _stats(values: list[float], seeds: list[int]) -> dict[str, Any]:
    return {
        "mean": float(np.mean(values)),
        "spread": float(np.max(values) - np.min(values)),
        "per_seed": {str(s): float(v) for s, v in zip(seeds, values, strict=True)},
    }


def summarize(
    runs: dict[str, dict[int, dict[str, Any]]],
    seeds: list[int],
    detection: dict[int, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Mean and spread over seeds of every run's metrics, and the findings. ``detection``:
    seed -> ``issue_detection.detect_seed``'s result (left out of the results when None)."""
    modes = {}
    for mode, by_seed in runs.items():
        metrics = [by_seed[s]["metrics"] for s in seeds]
        modes[mode] = {
            "AP_all": _stats([m["AP_all"] for m in metrics], seeds),
            "MAP": _stats([m["MAP"] for m in metrics], seeds),
            "seconds": _stats([by_seed[s]["seconds"] for s in seeds], seeds),
        }
    cleaner = {}
    for key in (
        *(f"{m}_{w}" for m in ("ap_all", "map") for w in RANKINGS),
        *(f"{m}_{w}" for m in ("precision", "recall", "f1") for w in SETS),
        "removed_precision",
        "removed_recall",
        "added_precision",
        "added_recall",
    ):
        for mode in ("joint", "pretrain"):
            if mode in runs:
                cleaner.setdefault(mode, {})[key] = _stats(
                    [runs[mode][s]["metrics"][f"cleaner_{key}"] for s in seeds], seeds
                )
    final = {
        mode: {
            key: _stats([by_seed[s]["metrics"][key] for s in seeds], seeds)
            for key in FINAL_KEYS
            if all(key in by_seed[s]["metrics"] for s in seeds)
        }
        for mode, by_seed in runs.items()
    }
    validation = {
        mode: {
            key: _stats([_validation(by_seed[s], key) for s in seeds], seeds)
            for key in VALIDATION_KEYS
        }
        for mode, by_seed in runs.items()
        if all("validation" in by_seed[s] for s in seeds)
    }
    out: dict[str, Any] = {
        "seeds": seeds,
        "modes": modes,
        "cleaner_on_test": cleaner,
        "final_on_test": final,
        "validation": validation,
    }
    if detection is not None:
        out["detection"] = summarize_detection(detection, seeds)
    out["findings"] = findings(modes, cleaner, seeds, out.get("detection"), final)
    return out


# The final label sets on test (training.validation.decision_metrics) and the sets they are
# compared with (training.metrics.cleaning_report, as ``cleaner_*``).
FINAL_KEYS = (
    "final_precision", "final_recall", "final_f1", "paper_rule_f1",
    "cleaner_f1_noisy_thresholded", "cleaner_f1_noisy", "decision_wrong_f1",
    "decision_missing_f1",
)  # fmt: skip
# Figures on V's cross-fitted reads (report.json "validation"), what chose the defaults.
VALIDATION_KEYS = (
    "final.f1", "machine_thresholded.f1", "paper_rule.f1", "issue.wrong.ap", "issue.missing.ap",
    "issue.wrong.f1", "issue.missing.f1",
)  # fmt: skip


def _validation(run: dict[str, Any], key: str) -> float:
    value: Any = run["validation"]
    for part in key.split("."):
        value = value[part]
    return float(value)


def summarize_detection(per_seed: dict[int, dict[str, Any]], seeds: list[int]) -> dict[str, Any]:
    """``_stats`` of every scorer's detection metrics over seeds (a scorer missing on some seed
    is left out, with a note), the tied pairs, the notes and the cleaner losses."""
    first = per_seed[seeds[0]]
    notes = [n for s in seeds for n in per_seed[s]["notes"]]
    scorers = {}
    for name, kinds in first["scorers"].items():
        if not all(name in per_seed[s]["scorers"] for s in seeds):
            notes.append(f"{name}: not on every seed, left out")
            continue
        scorers[name] = {
            kind: {
                metric: _stats([per_seed[s]["scorers"][name][kind][metric] for s in seeds], seeds)
                for metric in values
            }
            for kind, values in kinds.items()
        }
    ties = {
        mode: {
            key: _stats([per_seed[s]["ties"][mode][key] for s in seeds], seeds)
            for key in counts
            if all(key in per_seed[s]["ties"].get(mode, {}) for s in seeds)
        }
        for mode, counts in first["ties"].items()
    }
    return {
        "scorers": scorers,
        "ties": ties,
        "notes": notes,
        "cleaner_loss": {str(s): per_seed[s]["cleaner_loss"] for s in seeds},
        "flag_rules": first.get("flag_rules", {}),
    }


BASELINES = ("noisy", "finetune-clean", "finetune-mixed")
# Cleaned test labels against the annotator's: claim -> (our score, theirs) in cleaner_on_test.
CLEANER_CLAIMS = {
    "label sets (F1): cleaned labels vs the machine labels as listed": ("f1_cleaned", "f1_noisy"),
    "label sets (F1): cleaned labels vs the machine confidences cut at per-class thresholds": (
        "f1_cleaned", "f1_noisy_thresholded"),
    "ranking (AP_all): cleaned labels vs the machine labels as listed": (
        "ap_all_cleaned", "ap_all_listed"),
    "ranking (AP_all): cleaned labels vs the machine confidences": (
        "ap_all_cleaned", "ap_all_noisy"),
    "ranking (AP_all): cleaned labels, ties ordered by the confidence, vs the machine "
    "confidences": ("ap_all_cleaned_tiebreak", "ap_all_noisy"),
}  # fmt: skip
# Label-issue detection on the test images, for wrong and for missing labels: claim -> (our
# scorer, theirs, metric); "issue" and "cleaned" stand for the mode's own (issue_detection).
DETECTION_CLAIMS = {
    "issue score vs machine confidences": ("issue", MACHINE, "ap"),
    "issue score vs cleanlab (noisy model's out-of-sample probabilities)": (
        "issue", CLEANLAB_T, "ap"),
    "issue score vs cleanlab (finetune-mixed model, trained on T and V too)": (
        "issue", CLEANLAB_MIXED_T, "ap"),
    "issue score vs cleaned labels c": ("issue", "cleaned", "ap"),
    "the decision's flags vs machine confidences at calibrated thresholds": (
        "issue", MACHINE, "f1"),
    "the decision's flags vs cleanlab (finetune-mixed model) at its thresholds": (
        "issue", CLEANLAB_MIXED_T, "f1"),
}  # fmt: skip
# The final label sets on test: claim -> (ours, theirs) in final_on_test.
FINAL_CLAIMS = {
    "final label sets (F1) vs the machine confidences cut at per-class thresholds": (
        "final_f1", "cleaner_f1_noisy_thresholded"),
    "final label sets (F1) vs the paper's rule on c (the verdicts before the issue rule)": (
        "final_f1", "paper_rule_f1"),
    "final label sets (F1) vs the machine labels as listed": ("final_f1", "cleaner_f1_noisy"),
}  # fmt: skip


def compare(ours: dict[str, Any], theirs: dict[str, Any], seeds: list[int]) -> dict[str, Any]:
    """One claim, seed by seed: ``ours`` and ``theirs`` are ``_stats`` of the same metric.

    The verdict is ``better`` (or ``worse``) only when every seed agrees *and* the mean
    difference is larger than the seed spread (half the range over seeds, the larger of the
    two runs'); otherwise ``within seed spread``. With one seed there is no spread to compare
    against, so one seed's sign decides (``seeds`` says how many there were).
    """
    per_seed = [ours["per_seed"][str(s)] - theirs["per_seed"][str(s)] for s in seeds]
    difference = float(np.mean(per_seed))
    noise = max(ours["spread"], theirs["spread"]) / 2
    if all(d > 0 for d in per_seed) and difference > noise:
        verdict = "better"
    elif all(d < 0 for d in per_seed) and -difference > noise:
        verdict = "worse"
    else:
        verdict = "within seed spread"
    return {
        "verdict": verdict,
        "difference": difference,
        "per_seed_difference": {str(s): float(d) for s, d in zip(seeds, per_seed, strict=True)},
        "seed_spread": float(noise),
        "seeds": len(seeds),
    }


def findings(
    modes: dict[str, Any],
    cleaner: dict[str, Any],
    seeds: list[int],
    detection: dict[str, Any] | None = None,
    final: dict[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Each of our modes against *every* baseline on *both* metrics, the cleaned test labels
    against the annotator's, and (given ``summarize_detection``'s result) each mode's issue score
    against the other scorers of label issues, with the seed spread (see ``compare``)."""
    out = {}
    for mode in (m for m in OURS if m in modes):
        for baseline in (b for b in BASELINES if b in modes):
            for metric in ("AP_all", "MAP"):
                out[f"{mode} vs {baseline} on {metric}"] = compare(
                    modes[mode][metric], modes[baseline][metric], seeds
                )
    for mode in (m for m in OURS if m in (final or {})):
        for claim, (ours, theirs) in FINAL_CLAIMS.items():
            if ours in final[mode] and theirs in final[mode]:
                out[f"{mode}, test images, {claim}"] = compare(
                    final[mode][ours], final[mode][theirs], seeds
                )
    for mode in (m for m in OURS if m in cleaner):
        for claim, (ours, theirs) in CLEANER_CLAIMS.items():
            out[f"{mode}, test images, {claim}"] = compare(
                cleaner[mode][ours], cleaner[mode][theirs], seeds
            )
    scorers = (detection or {}).get("scorers", {})
    for mode in (m for m in OURS if f"issue/{m}" in scorers):
        for kind in KINDS:
            for claim, (ours, theirs, metric) in DETECTION_CLAIMS.items():
                a = scorers.get(f"{ours}/{mode}", scorers.get(ours))
                b = scorers.get(f"{theirs}/{mode}", scorers.get(theirs))
                if a is not None and b is not None:
                    out[detection_claim(mode, kind, claim)] = compare(
                        a[kind][metric], b[kind][metric], seeds
                    )
    return out


def detection_claim(mode: str, kind: str, claim: str) -> str:
    """The finding's name for one of DETECTION_CLAIMS on wrong or missing labels."""
    metric = "AP" if DETECTION_CLAIMS[claim][2] == "ap" else "F1"
    return f"{mode}, test images, label issues: {kind} labels ({metric}): {claim}"
