"""The benchmark's Markdown: the classifier table, the cleaned-label and label-issue tables, the
findings, and the precision-recall plot (``training.benchmark`` and ``benchmark_report`` write
them)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..model.config import ModelConfig
from .batches import TrainingData
from .issue_detection import (
    CLEANLAB_CL,
    CLEANLAB_MIXED_CL,
    CLEANLAB_MIXED_T,
    CLEANLAB_T,
    FLAGS_DECISION,
    KINDS,
    MACHINE,
)
from .loop import TrainConfig
from .metrics import break_ties

PAPER = {  # Open Images, Veit et al. 2017, Table 2 (AP_all / MAP)
    "noisy": (83.82, 61.82),
    "finetune-clean": (85.88, 61.53),
    "joint": (87.67, 62.38),
}


def render_markdown(
    results: dict[str, Any], data: TrainingData, cfg: TrainConfig, model_cfg: ModelConfig
) -> str:
    seeds = results["seeds"]
    lines = [
        "# Benchmark: learning from noisy labels with minimal supervision",
        "",
        f"Data: T {len(data.noisy_train)}, V {len(data.all_verified())} ({_v_use(cfg)}), "
        f"test {len(data.test)} images, {len(data.classes)} classes. "
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
    lines += final_table(results.get("final_on_test", {}), seeds)
    lines += validation_table(results.get("validation", {}))
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
        "Classifier on the test set against human labels (percent; mean ± half the range over "
        "seeds):",
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


def _v_use(cfg: TrainConfig) -> str:
    if cfg.folds > 1:
        return (
            f"{cfg.folds}-fold cross-fitted: the issue score and the decision thresholds are "
            "fitted on every V image as read by a network that did not train on it"
        )
    return "a fifth held out to fit the issue score and the thresholds"


def final_table(final: dict[str, Any], seeds: list[int]) -> list[str]:
    """The final label sets on test per mode (the decision rule, then the hierarchy), against
    the machine's labels and the paper's rule."""
    if not final:
        return []
    lines = [
        "Final label sets of the test images (each mode's decision: the issue rule at the "
        "thresholds chosen on V's cross-fitted reads, then the class hierarchy) against human "
        "labels, pooled over every verified pair (mean ± half the range over seeds):",
        "",
        "| mode | precision | recall | F1 | F1 per seed | the paper's rule on c (F1) "
        "| flags F1 (wrong / missing) |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, r in final.items():
        if "final_f1" not in r:
            continue
        per = " / ".join(f"{r['final_f1']['per_seed'][str(s)]:.4f}" for s in seeds)
        lines.append(
            f"| {mode} | {r['final_precision']['mean']:.4f} | {r['final_recall']['mean']:.4f} "
            f"| {r['final_f1']['mean']:.4f} ± {r['final_f1']['spread'] / 2:.4f} | {per} "
            f"| {r['paper_rule_f1']['mean']:.4f} | {r['decision_wrong_f1']['mean']:.3f} / "
            f"{r['decision_missing_f1']['mean']:.3f} |"
        )
    some = next(iter(final.values()))
    lines += [
        f"| machine labels as listed | | | {some['cleaner_f1_noisy']['mean']:.4f} | | | |",
        "| machine confidences at per-class thresholds | | | "
        f"{some['cleaner_f1_noisy_thresholded']['mean']:.4f} | | | |",
        "",
    ]
    return lines


def validation_table(validation: dict[str, Any]) -> list[str]:
    """What chose the defaults: each mode's figures on V's cross-fitted reads."""
    if not validation:
        return []
    lines = [
        "On V's cross-fitted reads (every threshold chosen without the fold it is applied to; "
        "what the defaults were chosen on; means over seeds):",
        "",
        "| mode | final sets F1 | machine thresholded F1 | paper's rule F1 | issue AP wrong / "
        "missing | flags F1 wrong / missing |",
        "|---|---|---|---|---|---|",
    ]
    for mode, r in validation.items():
        m = {k: v["mean"] for k, v in r.items()}
        lines.append(
            f"| {mode} | {m['final.f1']:.4f} | {m['machine_thresholded.f1']:.4f} | "
            f"{m['paper_rule.f1']:.4f} | {m['issue.wrong.ap']:.2f} / {m['issue.missing.ap']:.2f} "
            f"| {m['issue.wrong.f1']:.3f} / {m['issue.missing.f1']:.3f} |"
        )
    return [*lines, ""]


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


def _scorer_title(name: str, flag_rules: dict[str, str]) -> tuple[str, str]:
    """(scorer, what flags a pair) for the detection table."""
    fixed = {
        MACHINE: ("machine confidences y", "y vs its calibrated per-class thresholds"),
        CLEANLAB_T: ("cleanlab, noisy model", "p vs the noisy classifier's thresholds"),
        CLEANLAB_CL: ("cleanlab, noisy model", "cleanlab's find_label_issues per class"),
        CLEANLAB_MIXED_T: (
            "cleanlab, finetune-mixed model (trained on V too)",
            "p vs its classifier's thresholds",
        ),
        CLEANLAB_MIXED_CL: (
            "cleanlab, finetune-mixed model (trained on V too)",
            "cleanlab's find_label_issues per class",
        ),
    }
    if name in fixed:
        return fixed[name]
    kind, _, mode = name.partition("/")
    if kind == "issue":
        return f"issue score ({mode})", flag_rules.get(mode, FLAGS_DECISION)
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
        title, flags = _scorer_title(name, detection.get("flag_rules", {}))
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
        "trained on: out-of-sample, as cleanlab asks; and, as a fair anchor that has the human "
        "labels ours has, from the `finetune-mixed` model's (trained on T and V; the test "
        "images are out-of-sample for it too, its thresholds chosen on V's cross-fitted "
        "reads). The machine confidences cannot flag a missing label (an unlisted label has "
        "y = 0).",
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
