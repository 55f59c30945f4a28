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

from ..model.cleaning import ISSUE_THRESHOLD
from ..model.config import ModelConfig
from .batches import TrainingData
from .issue_detection import CLEANLAB_CL, CLEANLAB_T, KINDS, MACHINE, OURS, detect_seed
from .loop import MODES, TrainConfig
from .metrics import break_ties
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
    out: dict[str, Any] = {"seeds": seeds, "modes": modes, "cleaner_on_test": cleaner}
    if detection is not None:
        out["detection"] = summarize_detection(detection, seeds)
    out["findings"] = findings(modes, cleaner, seeds, out.get("detection"))
    return out


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
    "issue score vs cleaned labels c": ("issue", "cleaned", "ap"),
    "issue score's flags vs machine confidences at calibrated thresholds": (
        "issue", MACHINE, "f1"),
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
        f"fine-tune epochs; batches of {cfg.batch_size}, T:V 9:1; loss reduction "
        f"`{cfg.loss_reduction}`; seeds {', '.join(map(str, seeds))}.",
        "",
        *classifier_table(results["modes"], seeds),
        "",
        "`noisy` time includes its training; the other modes' times are their fine-tuning from it. "
        f"Every fine-tuning mode takes the same number of optimizer steps ({cfg.finetune_epochs} "
        "passes over T in 9:1 batches); `finetune-clean` spends them all on V.",
        "",
    ]
    for name, r in results.get("reference", {}).items():
        lines += [
            f"Reference, outside the paper's comparison: {name} (an early stop, from the same "
            f"noisy model): AP_all {r['AP_all']['mean']:.2f}, MAP {r['MAP']['mean']:.2f}, "
            f"{r['seconds']['mean']:.0f} s.",
            "",
        ]
    lines += cleaner_tables(results["cleaner_on_test"])
    if "detection" in results:
        lines += detection_table(results["detection"], seeds)
    lines += [
        "Findings: ours against every baseline and the annotator, seed by seed. `better` or "
        "`worse` only when every seed agrees and the mean difference exceeds the seed spread "
        "(half the range over seeds):",
        "",
        *(finding_line(claim, f) for claim, f in results["findings"].items()),
    ]
    return "\n".join(lines) + "\n"


def classifier_table(modes: dict[str, Any], seeds: list[int]) -> list[str]:
    """The classifier's AP_all and MAP per mode (a mode named "joint (bce)" gets joint's paper
    figures)."""
    lines = [
        "Classifier on the test set against human labels (percent; mean ± half the range over seeds):",
        "",
        "| mode | AP_all | MAP | per seed (AP_all / MAP) | time (s) | paper (Open Images) |",
        "|---|---|---|---|---|---|",
    ]
    for mode, r in modes.items():
        per = "; ".join(
            f"{r['AP_all']['per_seed'][str(s)]:.2f} / {r['MAP']['per_seed'][str(s)]:.2f}"
            for s in seeds
        )
        paper = PAPER.get(mode.split(" (")[0])
        lines.append(
            f"| {mode} | {r['AP_all']['mean']:.2f} ± {r['AP_all']['spread'] / 2:.2f} "
            f"| {r['MAP']['mean']:.2f} ± {r['MAP']['spread'] / 2:.2f} | {per} "
            f"| {r['seconds']['mean']:.0f} | {'{:.2f} / {:.2f}'.format(*paper) if paper else ''} |"
        )
    return lines


def cleaner_tables(cleaner_on_test: dict[str, Any]) -> list[str]:
    """One table per cleaner: its cleaned test labels against human labels."""
    lines = []
    for mode, c in cleaner_on_test.items():
        lines += [
            f"Cleaned labels of the test images ({mode} cleaner) against human labels:",
            "",
            "| labels | AP_all | MAP | precision | recall | F1 |",
            "|---|---|---|---|---|---|",
            *(
                f"| {title} | {_ap(c, ranked)} | {_prf(c, chosen)} |"
                for title, ranked, chosen in (
                    ("machine confidences y", "noisy", None),
                    ("machine labels as listed (1 each; sets: all listed)", "listed", "noisy"),
                    ("machine confidences >= per-class threshold", None, "noisy_thresholded"),
                    ("cleaned labels c (sets: c >= per-class threshold)", "cleaned", "cleaned"),
                    ("cleaned labels c, ties ordered by y", "cleaned_tiebreak", None),
                )
            ),
            "",
            f"Removed labels: precision {c['removed_precision']['mean']:.3f}, recall "
            f"{c['removed_recall']['mean']:.3f}. Added labels: precision "
            f"{c['added_precision']['mean']:.3f}, recall {c['added_recall']['mean']:.3f}.",
            "",
        ]
    return lines


def _scorer_title(name: str) -> tuple[str, str]:
    """(scorer, what flags a pair) for the detection table."""
    fixed = {
        MACHINE: ("machine confidences y", "y vs its calibrated per-class thresholds"),
        CLEANLAB_T: ("cleanlab, noisy model", "p vs the noisy classifier's thresholds"),
        CLEANLAB_CL: ("cleanlab, noisy model", "cleanlab's find_label_issues per class"),
    }
    if name in fixed:
        return fixed[name]
    kind, _, mode = name.partition("/")
    if kind == "issue":
        return f"issue score ({mode})", f"issue >= {ISSUE_THRESHOLD}"
    return f"cleaned labels c ({mode})", "c vs cleaned thresholds (removed / added)"


def detection_table(detection: dict[str, Any], seeds: list[int]) -> list[str]:
    """``summarize_detection``'s result as a table, with tied pairs and notes."""
    scorers = detection["scorers"]
    if not scorers:
        return ["Label-issue detection: no scorer on every seed.", "", *detection["notes"], ""]
    some = next(iter(scorers.values()))
    wrong, missing = some["wrong"], some["missing"]
    lines = [
        "Label-issue detection on the test images against human labels. Wrong labels: listed "
        f"by the machine, human says no ({wrong['positives']['mean']:.0f} of "
        f"{wrong['pairs']['mean']:.0f} listed known pairs); missing labels: not listed, human "
        f"says yes ({missing['positives']['mean']:.0f} of {missing['pairs']['mean']:.0f} "
        "unlisted known pairs). Each scorer ranks the pairs by its issue score (AP, percent, "
        "mean ± half range over seeds) and flags some (precision, recall, F1 of the flags, "
        "means):",
        "",
        "| scorer | flags | wrong: AP | P | R | F1 | missing: AP | P | R | F1 "
        "| AP per seed (wrong / missing) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in scorers.items():
        title, flags = _scorer_title(name)
        cells = [
            f"{_num(r[k]['ap']['mean'], '.2f')} ± {r[k]['ap']['spread'] / 2:.2f} | "
            + " | ".join(_num(r[k][m]["mean"], ".3f") for m in ("precision", "recall", "f1"))
            for k in KINDS
        ]
        per = "; ".join(
            " / ".join(_num(r[k]["ap"]["per_seed"][str(s)], ".2f") for k in KINDS) for s in seeds
        )
        lines.append(f"| {title} | {flags} | {cells[0]} | {cells[1]} | {per} |")
    ties = "; ".join(
        f"{mode}: c {t['cleaned']['mean']:.0f}"
        + (f", issue score {t['issue']['mean']:.0f}" if "issue" in t else "")
        + f" of {t['pairs']['mean']:.0f}"
        for mode, t in detection["ties"].items()
    )
    lines += [
        "",
        "cleanlab: its multi-label per-class label quality (self-confidence; issue = 1 - "
        "quality) from the `noisy` model's probabilities on the test images, which it never "
        "trained on: out-of-sample, as cleanlab asks. The machine confidences cannot flag a "
        "missing label (an unlisted label has y = 0).",
    ]
    if ties:
        lines.append(f"Tied known pairs (a score shared with another known pair): {ties}.")
    lines += [*(f"Note: {n}" for n in dict.fromkeys(detection["notes"])), ""]
    return lines


def _num(value: float, fmt: str) -> str:
    return "n/a" if np.isnan(value) else format(value, fmt)


def finding_line(claim: str, f: dict[str, Any]) -> str:
    per_seed = ", ".join(f"{d:+.3f}" for d in f["per_seed_difference"].values())
    spread = f"seed spread ±{f['seed_spread']:.3f}" if f["seeds"] > 1 else "one seed: no spread"
    return f"- **{f['verdict']}**: {claim}: {f['difference']:+.3f} (per seed {per_seed}; {spread})"


def _ap(c: dict[str, Any], which: str | None) -> str:
    if which is None:
        return " | "
    return f"{c[f'ap_all_{which}']['mean']:.2f} | {c[f'map_{which}']['mean']:.2f}"


def _prf(c: dict[str, Any], which: str | None) -> str:
    if which is None:
        return " |  | "
    return " | ".join(f"{c[f'{m}_{which}']['mean']:.3f}" for m in ("precision", "recall", "f1"))


def plot_pr(predictions: Path, out: Path) -> None:
    """Precision-recall of cleaned versus noisy labels (all test pairs pooled)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    arrays = dict(np.load(predictions))
    arrays["cleaned_tiebreak"] = break_ties(arrays["cleaned"], arrays["noisy"])
    known = arrays["known"]
    fig, ax = plt.subplots(figsize=(5, 4), dpi=120)
    for name, label in (
        ("noisy", "machine confidences y"),
        ("cleaned", "cleaned labels c"),
        ("cleaned_tiebreak", "c, ties ordered by y"),
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
