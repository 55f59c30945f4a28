"""The paper's comparison on one data set: five modes, several seeds, one table.

    labelclean benchmark --data DATA --out BENCH --seeds 0,1

For each seed the ``noisy`` model is trained once; the other modes start from it, as in the
paper. BENCH/ gets results.md (the table), results.json and cleaned_vs_noisy_pr.png.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..model.config import ModelConfig
from .batches import TrainingData
from .loop import MODES, TrainConfig
from .run import train

# Label sets compared in the cleaner report.
SETS = ("noisy", "noisy_thresholded", "cleaned")
PAPER = {  # Open Images, Veit et al. 2017, Table 2 (AP_all / MAP)
    "noisy": (83.82, 61.82),
    "finetune-clean": (85.88, 61.53),
    "joint": (87.67, 62.38),
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
    results = summarize(runs, seeds)
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


def summarize(runs: dict[str, dict[int, dict[str, Any]]], seeds: list[int]) -> dict[str, Any]:
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
        *(f"{m}_{w}" for m in ("ap_all", "map") for w in ("noisy", "cleaned")),
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
    return {
        "seeds": seeds,
        "modes": modes,
        "cleaner_on_test": cleaner,
        "findings": findings(modes, cleaner),
    }


def findings(modes: dict[str, Any], cleaner: dict[str, Any]) -> dict[str, bool]:
    """The paper's claims, checked on the means over seeds."""

    def mean(mode: str, metric: str) -> float:
        return modes[mode][metric]["mean"]

    out = {}
    for mode in ("joint", "pretrain"):
        if mode in modes and "finetune-clean" in modes:
            for metric in ("AP_all", "MAP"):
                out[f"{mode} beats finetune-clean on {metric}"] = mean(mode, metric) > mean(
                    "finetune-clean", metric
                )
        if mode in modes and "noisy" in modes:
            out[f"{mode} beats noisy on AP_all"] = mean(mode, "AP_all") > mean("noisy", "AP_all")
        if mode in cleaner:
            c = cleaner[mode]
            out[f"{mode}: cleaned labels beat machine labels (AP_all, test)"] = (
                c["ap_all_cleaned"]["mean"] > c["ap_all_noisy"]["mean"]
            )
            out[f"{mode}: cleaned labels beat machine labels (F1 of the label sets, test)"] = c[
                "f1_cleaned"
            ]["mean"] > max(c["f1_noisy"]["mean"], c["f1_noisy_thresholded"]["mean"])
    return out


def render_markdown(
    results: dict[str, Any], data: TrainingData, cfg: TrainConfig, model_cfg: ModelConfig
) -> str:
    seeds = results["seeds"]
    lines = [
        "# Benchmark: learning from noisy labels with minimal supervision",
        "",
        f"Data: T {len(data.noisy_train)}, V {len(data.verified)} (+{len(data.calibration)} "
        f"held out for thresholds), test {len(data.test)} images, {len(data.classes)} classes. "
        f"Backbone {model_cfg.backbone}; {cfg.epochs} noisy epochs, {cfg.finetune_epochs} "
        f"fine-tune epochs; seeds {', '.join(map(str, seeds))}.",
        "",
        "Classifier on the test set against human labels (percent; mean ± range over seeds):",
        "",
        "| mode | AP_all | MAP | per seed (AP_all / MAP) | time (s) | paper (Open Images) |",
        "|---|---|---|---|---|---|",
    ]
    for mode, r in results["modes"].items():
        per = "; ".join(
            f"{r['AP_all']['per_seed'][str(s)]:.2f} / {r['MAP']['per_seed'][str(s)]:.2f}"
            for s in seeds
        )
        paper = "{:.2f} / {:.2f}".format(*PAPER[mode]) if mode in PAPER else ""
        lines.append(
            f"| {mode} | {r['AP_all']['mean']:.2f} ± {r['AP_all']['spread'] / 2:.2f} "
            f"| {r['MAP']['mean']:.2f} ± {r['MAP']['spread'] / 2:.2f} | {per} "
            f"| {r['seconds']['mean']:.0f} | {paper} |"
        )
    lines += [
        "",
        "`noisy` time includes its training; the other modes' times are their fine-tuning from it.",
        "",
    ]
    for mode, c in results["cleaner_on_test"].items():
        lines += [
            f"Cleaned labels of the test images ({mode} cleaner) against human labels:",
            "",
            "| labels | AP_all | MAP | precision | recall | F1 |",
            "|---|---|---|---|---|---|",
            *(
                f"| {title} | {ap} "
                f"| {c[f'precision_{w}']['mean']:.3f} | {c[f'recall_{w}']['mean']:.3f} "
                f"| {c[f'f1_{w}']['mean']:.3f} |"
                for title, w, ap in (
                    ("machine labels y (all listed)", "noisy", _ap(c, "noisy")),
                    ("machine labels y >= calibrated threshold", "noisy_thresholded", "| "),
                    ("cleaned labels c >= threshold", "cleaned", _ap(c, "cleaned")),
                )
            ),
            "",
            f"Removed labels: precision {c['removed_precision']['mean']:.3f}, recall "
            f"{c['removed_recall']['mean']:.3f}. Added labels: precision "
            f"{c['added_precision']['mean']:.3f}, recall {c['added_recall']['mean']:.3f}.",
            "",
        ]
    lines += ["The paper's findings, on the means:", ""]
    lines += [
        f"- {'holds' if ok else 'DOES NOT HOLD'}: {claim}"
        for claim, ok in results["findings"].items()
    ]
    return "\n".join(lines) + "\n"


def _ap(c: dict[str, Any], which: str) -> str:
    return f"{c[f'ap_all_{which}']['mean']:.2f} | {c[f'map_{which}']['mean']:.2f}"


def plot_pr(predictions: Path, out: Path) -> None:
    """Precision-recall of cleaned versus noisy labels (all test pairs pooled)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    arrays = np.load(predictions)
    known = arrays["known"]
    fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
    for name, label in (
        ("noisy", "machine labels y"),
        ("cleaned", "cleaned labels c"),
        ("scores", "classifier h"),
    ):
        p, r, _ = precision_recall_curve(arrays["human"][known], arrays[name][known])
        ax.plot(r, p, label=label)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("Test labels against human verification")
    ax.legend(loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    plt.close(fig)
