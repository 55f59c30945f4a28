"""One report from finished benchmark folders, without training.

    labelclean benchmark-report --runs bce=BENCH_BCE --runs l1=BENCH_L1 --out REPORT

Each folder is what ``labelclean benchmark`` wrote (results.json and seed-S/MODE/). Label-issue
detection is computed again from each folder's test predictions (training.issue_detection), so
folders written before it get it too. REPORT/ gets results.md and results.json: the classifier
table (the baselines from the first folder, our modes from every folder, named "joint (bce)"),
each folder's cleaned-label and detection tables, and the findings: our modes across folders
("joint (bce) vs joint (l1)") and, within each folder, ours against its own baselines.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .benchmark import OURS, compare, findings, summarize_detection
from .benchmark_tables import classifier_table, cleaner_tables, detection_table, finding_line
from .issue_detection import detect_seed

# Claims compared across folders for each of our modes: claim -> path in a folder's results, with
# {mode} filled in (a claim whose path is missing in either folder is left out).
ACROSS = {
    "AP_all": ("modes", "{mode}", "AP_all"),
    "MAP": ("modes", "{mode}", "MAP"),
    "cleaned test labels, AP_all": ("cleaner_on_test", "{mode}", "ap_all_cleaned"),
    "cleaned test labels, F1": ("cleaner_on_test", "{mode}", "f1_cleaned"),
    "wrong labels, AP of the issue score": ("scorers", "issue/{mode}", "wrong", "ap"),
    "missing labels, AP of the issue score": ("scorers", "issue/{mode}", "missing", "ap"),
    "wrong labels, F1 of the issue score's flags": ("scorers", "issue/{mode}", "wrong", "f1"),
    "missing labels, F1 of the issue score's flags": ("scorers", "issue/{mode}", "missing", "f1"),
    "wrong labels, AP of c": ("scorers", "cleaned/{mode}", "wrong", "ap"),
    "missing labels, AP of c": ("scorers", "cleaned/{mode}", "missing", "ap"),
}


def parse_runs(specs: list[str]) -> dict[str, Path]:
    """``NAME=DIR`` (or a bare ``DIR``, named after its folder) -> {name: folder}, in order."""
    runs: dict[str, Path] = {}
    for spec in specs:
        name, sep, folder = spec.partition("=")
        name, folder = (name, folder) if sep else (Path(spec).name, spec)
        if not name or not folder:
            raise ValueError(f"--runs {spec!r}: expected NAME=DIR")
        if name in runs:
            raise ValueError(f"--runs: the name {name!r} is given twice")
        runs[name] = Path(folder)
    return runs


def load_run(folder: Path) -> dict[str, Any]:
    """A benchmark folder's results.json, with label-issue detection computed from its test
    predictions and the findings redone to include it."""
    path = folder / "results.json"
    if not path.exists():
        raise ValueError(f"{folder}: no results.json (has `labelclean benchmark` finished there?)")
    results = json.loads(path.read_text())
    seeds = results["seeds"]
    modes = tuple(m for m in OURS if m in results["modes"])
    detection = summarize_detection(
        {s: detect_seed(folder / f"seed-{s}", modes) for s in seeds}, seeds
    )
    return {
        **results,
        "detection": detection,
        "findings": findings(results["modes"], results["cleaner_on_test"], seeds, detection),
    }


def _lookup(run: dict[str, Any], path: tuple[str, ...], mode: str) -> dict[str, Any] | None:
    node: Any = run["detection"] if path[0] == "scorers" else run
    for key in path:
        node = node.get(key.format(mode=mode)) if isinstance(node, dict) else None
    return node


def across(loaded: dict[str, dict[str, Any]], seeds: list[int]) -> dict[str, dict[str, Any]]:
    """Each of our modes in the first folder against the same mode in every other one."""
    (first, a), *others = loaded.items()
    out = {}
    for second, b in others:
        for mode in (m for m in OURS if m in a["modes"] and m in b["modes"]):
            for claim, path in ACROSS.items():
                ours, theirs = _lookup(a, path, mode), _lookup(b, path, mode)
                if ours is not None and theirs is not None:
                    out[f"{mode} ({first}) vs {mode} ({second}) on {claim}"] = compare(
                        ours, theirs, seeds
                    )
    return out


def _tag(claim: str, name: str) -> str:
    """ "joint vs noisy on MAP" -> "joint (bce) vs noisy on MAP"."""
    mode = next(m for m in OURS if claim.startswith(m))
    return f"{mode} ({name}){claim[len(mode) :]}"


def build_report(runs: dict[str, Path]) -> dict[str, Any]:
    """The combined results of ``runs`` ({name: benchmark folder}); they must share seeds."""
    if not runs:
        raise ValueError("no benchmark folder given")
    loaded = {name: load_run(folder) for name, folder in runs.items()}
    (_, first), *others = loaded.items()
    seeds = first["seeds"]
    for name, run in loaded.items():
        if run["seeds"] != seeds:
            raise ValueError(f"{runs[name]}: seeds {run['seeds']}, not {seeds} like the first")
    modes = {m: r for m, r in first["modes"].items() if m not in OURS}
    for name, run in loaded.items():
        modes.update({f"{m} ({name})": run["modes"][m] for m in OURS if m in run["modes"]})
    claims = across(loaded, seeds)
    for name, run in loaded.items():
        claims.update({_tag(c, name): f for c, f in run["findings"].items()})
    return {
        "runs": {name: str(folder) for name, folder in runs.items()},
        "seeds": seeds,
        "modes": modes,
        "per_run": loaded,
        "notes": _notes(loaded),
        "findings": claims,
    }


def _notes(loaded: dict[str, dict[str, Any]]) -> list[str]:
    """Baselines of later folders that differ from the first's (the table shows the first's),
    and a folder named after a cleaner loss whose bundles record another."""
    (_, first), *others = loaded.items()
    notes = []
    for name, run in others:
        for mode in (m for m in first["modes"] if m not in OURS and m in run["modes"]):
            gap = max(
                abs(run["modes"][mode][k]["mean"] - first["modes"][mode][k]["mean"])
                for k in ("AP_all", "MAP")
            )
            if gap > 0:
                notes.append(f"{name}'s own {mode} run differs from the table's by up to {gap:.2f}")
    for name, run in loaded.items():
        recorded = _losses(run)
        if name in ("bce", "l1") and recorded and recorded != {name}:
            notes.append(f"{name}: its bundles record cleaner_loss {', '.join(sorted(recorded))}")
    return notes


def _losses(run: dict[str, Any]) -> set[str]:
    """The cleaner losses recorded in a folder's bundles (of our modes, every seed)."""
    by_seed = run["detection"]["cleaner_loss"].values()
    return {loss for losses in by_seed for loss in losses.values() if loss}


def render_report(report: dict[str, Any]) -> str:
    seeds = report["seeds"]
    runs = ", ".join(
        f"{name} = `{folder}` (cleaner loss in its bundles: "
        f"{', '.join(sorted(_losses(report['per_run'][name]))) or 'none recorded'})"
        for name, folder in report["runs"].items()
    )
    lines = [
        f"# Benchmark report: {' vs '.join(report['runs'])}",
        "",
        f"Rebuilt from finished benchmark folders, without training: {runs}. Seeds "
        f"{', '.join(map(str, seeds))}. Baselines from the first folder.",
        "",
        *classifier_table(report["modes"], seeds),
        "",
    ]
    if report["notes"]:
        lines += [*(f"Note: {n}" for n in report["notes"]), ""]
    for name, run in report["per_run"].items():
        lines += [f"## {name}", ""]
        lines += cleaner_tables({f"{m} ({name})": c for m, c in run["cleaner_on_test"].items()})
        lines += detection_table(run["detection"], seeds)
    lines += [
        "## Findings",
        "",
        "Seed by seed: `better` or `worse` only when every seed agrees and the mean difference "
        "exceeds the seed spread (half the range over seeds). Across folders, the first named "
        "is `ours`; within a folder, its modes against its own baselines.",
        "",
        *(finding_line(claim, f) for claim, f in report["findings"].items()),
    ]
    return "\n".join(lines) + "\n"


def write_report(runs: dict[str, Path], out: Path) -> dict[str, Any]:
    """``build_report`` written to out/results.json and out/results.md."""
    report = build_report(runs)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "results.md").write_text(render_report(report))
    return report
