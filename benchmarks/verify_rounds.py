"""Which images to verify (issue 18, part 4): grow V in rounds, the images chosen by
``labelclean suggest-verify`` or at random, and retrain from the previous round each time.

    .venv/bin/python benchmarks/verify_rounds.py --data DEMO --start BENCH --out ROUNDS \\
        --seeds 0,1,2 --rounds 5 --per-round 100 -- --folds 1 --finetune-epochs 1

DEMO is a ``labelclean demo-data`` folder; BENCH a ``labelclean benchmark`` folder trained on
it, whose BENCH/seed-S/joint run is round 0 of seed S (both strategies start from it). Each
round of each strategy:

1. choose --per-round images of T not verified yet: ``labelclean suggest-verify`` with the
   previous round's bundle (its verified images passed as --human-extra, so they are left
   out), or uniformly at random (numpy, seeded by the seed and the round);
2. their answers: the demo's true labels of those images (``demo_data.training_truth``: the
   data set stores human labels of V only), every class verified, as ``labelclean
   import-reviews`` would write a review; appended to the strategy's reviews CSV;
3. ``labelclean train --init PREVIOUS/checkpoint.pt --human-extra REVIEWS.csv --seed S`` with
   the arguments after ``--`` (the same for both strategies and every round);
4. read the run's test metrics (report.json): the classifier's AP_all and MAP, and the final
   label sets' F1 (``final_f1``: the bundle's decision against the test human labels).

With ``--control``, a third strategy retrains every round with no new images, which separates
the gain of the images from that of the extra training. ROUNDS/results.json holds every
figure, ROUNDS/results.md the tables; both are rewritten after every round, and a rerun skips
the rounds whose report.json exists (so an interrupted run resumes).
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
LABELCLEAN = [sys.executable, "-m", "labelclean.cli"]
METRICS = {"AP_all": "AP_all", "MAP": "MAP", "final_f1": "F1 final"}
"""report.json metrics kept per round -> their column name."""
HEADER = ["ImageID", "Source", "LabelName", "Confidence"]


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    argv = sys.argv[1:] if argv is None else argv
    train_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    ours = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(
        usage="%(prog)s --data DEMO --start BENCH --out ROUNDS [options] [-- TRAIN ARGS]",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    p.add_argument("--data", type=Path, required=True, help="labelclean demo-data folder")
    p.add_argument(
        "--start", type=Path, required=True,
        help="labelclean benchmark folder on --data: START/seed-S/joint is round 0",
    )  # fmt: skip
    p.add_argument("--out", type=Path, required=True, help="folder for the rounds and results")
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (default 0,1,2)")
    p.add_argument("--rounds", type=int, default=5, help="rounds after round 0 (default 5)")
    p.add_argument(
        "--per-round", type=int, default=100, help="images verified a round (default 100)"
    )
    p.add_argument("--demo-seed", type=int, default=0, help="the seed --data was built with")
    p.add_argument(
        "--source", type=Path, default=Path("/usr/share/datasets/fashion-mnist"),
        help="the Fashion-MNIST folder --data was built from",
    )  # fmt: skip
    p.add_argument("--control", action="store_true", help="also retrain with no new images")
    return p.parse_args(ours), train_args


def run(cmd: list[str], log: Path) -> float:
    """Run a labelclean command, its output to ``log``; the seconds it took. Fails loudly."""
    start = time.perf_counter()
    with log.open("w") as fh:
        done = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT)
    if done.returncode:
        sys.exit(f"failed ({done.returncode}): {' '.join(map(str, cmd))}; see {log}")
    return time.perf_counter() - start


def write_reviews(path: Path, images: list[str], truth: dict[str, np.ndarray],
                  names: list[str]) -> None:  # fmt: skip
    """Every class of every image in ``images`` verified with its true label (1 / 0)."""
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(HEADER)
        for image in images:
            writer.writerows(
                [image, "verification", name, str(int(v))]
                for name, v in zip(names, truth[image], strict=True)
            )


def choose(strategy: str, prev: Path, data: Path, reviews: Path | None, k: int, seed: int,
           round_: int, unverified: list[str], folder: Path) -> list[str]:  # fmt: skip
    """The images ``strategy`` verifies this round."""
    if strategy == "control":
        return []
    if strategy == "random":
        rng = np.random.default_rng([seed, round_])
        return sorted(rng.choice(unverified, size=k, replace=False).tolist())
    cmd = [*LABELCLEAN, "suggest-verify", "--model", str(prev / "bundle"), "--data", str(data),
           "--budget", str(k), "--out", str(folder / "chosen.csv"), "--device", "cpu",
           "--quiet"]  # fmt: skip
    if reviews is not None:
        cmd += ["--human-extra", str(reviews)]
    run(cmd, folder / "suggest.log")
    with (folder / "chosen.csv").open(newline="") as fh:
        return [row["ImageID"] for row in csv.DictReader(fh)]


def metrics(run_dir: Path) -> dict[str, float]:
    found = json.loads((run_dir / "report.json").read_text())["metrics"]
    return {key: float(found[key]) for key in METRICS}


def one_round(args: argparse.Namespace, train_args: list[str], seed: int, strategy: str,
              r: int, prev: Path, verified: list[str], truth: dict[str, np.ndarray],
              names: list[str], t_images: list[str]) -> list[str]:  # fmt: skip
    """Round ``r`` of ``strategy`` (skipped when its report.json exists); the images it
    verified."""
    folder = args.out / f"seed-{seed}" / strategy / f"round-{r}"
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "report.json").exists():
        unverified = sorted(set(t_images) - set(verified))
        earlier = prev / "reviews.csv" if verified else None
        picked = choose(strategy, prev, args.data, earlier, args.per_round, seed, r, unverified,
                        folder)  # fmt: skip
        want = 0 if strategy == "control" else args.per_round
        if set(picked) & set(verified) or len(picked) != want:
            sys.exit(f"{folder}: a chosen image was verified already, or the budget not spent")
        (folder / "picked.json").write_text(json.dumps(picked))
        write_reviews(folder / "reviews.csv", verified + picked, truth, names)
        cmd = [*LABELCLEAN, "train", "--data", str(args.data), "--out", str(folder),
               "--init", str(prev / "checkpoint.pt"), "--seed", str(seed), "--quiet",
               "--device", "cpu", *train_args]  # fmt: skip
        if verified or picked:
            cmd += ["--human-extra", str(folder / "reviews.csv")]
        seconds = run(cmd, folder / "train.log")
        print(f"seed {seed} {strategy} round {r}: trained in {seconds:.0f} s", flush=True)
    return json.loads((folder / "picked.json").read_text())


def read_listed(path: Path) -> set[tuple[str, str]]:
    """The (ImageID, LabelName) pairs a machine labels CSV lists (Confidence > 0)."""
    with path.open(newline="") as fh:
        return {(r["ImageID"], r["LabelName"]) for r in csv.DictReader(fh)
                if float(r["Confidence"]) > 0}  # fmt: skip


def machine_errors(images: list[str], truth: dict[str, np.ndarray], names: list[str],
                   listed: set[tuple[str, str]]) -> int:  # fmt: skip
    """How many (image, class) pairs of ``images`` the machine got wrong (listed but not true,
    or true but not listed): the label changes their verification actually brought."""
    return sum(
        ((image, name) in listed) != bool(v)
        for image in images
        for name, v in zip(names, truth[image], strict=True)
    )


def one_seed(args: argparse.Namespace, train_args: list[str], seed: int, strategies: list[str],
             truth: dict[str, np.ndarray], names: list[str], results: dict,
             listed: set[tuple[str, str]]) -> None:  # fmt: skip
    """Every round of every strategy for ``seed``, round by round (an interrupted run has
    figures of both strategies up to the same round)."""
    start = args.start / f"seed-{seed}" / "joint"
    t_images = results["t_images"]
    v0 = len(truth) - len(t_images)
    per = results["seeds"].setdefault(str(seed), {})
    prev = {s: start for s in strategies}
    verified: dict[str, list[str]] = {s: [] for s in strategies}
    for strategy in strategies:
        per[strategy] = [{"round": 0, "verified": v0, "added": 0, **metrics(start)}]
    for r in range(1, args.rounds + 1):
        for strategy in strategies:
            verified[strategy] += one_round(args, train_args, seed, strategy, r, prev[strategy],
                                            verified[strategy], truth, names, t_images)  # fmt: skip
            prev[strategy] = args.out / f"seed-{seed}" / strategy / f"round-{r}"
            picked = verified[strategy][-args.per_round :] if strategy != "control" else []
            per[strategy].append({"round": r, "verified": v0 + len(verified[strategy]),
                                  "added": len(verified[strategy]),
                                  "machine_errors": machine_errors(picked, truth, names, listed),
                                  **metrics(prev[strategy])})  # fmt: skip
            write_results(args.out, results)


def mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def rounds_to_reach(rows: list[dict], target: float, key: str = "AP_all") -> int | None:
    """The first round whose ``key`` reaches ``target``; None if none does."""
    return next((row["round"] for row in rows if row[key] >= target - 1e-9), None)


def render(results: dict[str, Any]) -> str:
    strategies = list(results["strategies"])
    seeds = sorted(
        (s for s, per in results["seeds"].items() if set(strategies) <= set(per)), key=int
    )  # the seeds with every strategy begun
    lines = [f"Seeds {', '.join(seeds)}; train arguments: {' '.join(results['train_args'])}", ""]
    head = "| round | verified |" + "".join(
        f" {s} {m} |" for s in strategies for m in METRICS.values()
    )  # fmt: skip
    lines += [head, "|" + "---|" * (2 + len(strategies) * len(METRICS))]
    n_rounds = min(len(results["seeds"][s][st]) for s in seeds for st in strategies)
    for r in range(n_rounds):
        first = results["seeds"][seeds[0]][strategies[0]][r]
        cells = [
            mean_sd([results["seeds"][s][st][r][key] * (100 if key == "final_f1" else 1)
                     for s in seeds])  # fmt: skip
            for st in strategies for key in METRICS
        ]  # fmt: skip
        lines.append(f"| {r} | {first['verified']} | " + " | ".join(cells) + " |")
    lines += ["", "F1 final in percent; mean ± sd over the seeds.", ""]
    chose = [st for st in strategies if st != "control"]
    if n_rounds > 1 and all("machine_errors" in results["seeds"][s][st][1] for s in seeds
                            for st in chose):  # fmt: skip
        lines += ["Machine label errors in the images verified that round (the label changes "
                  "verification brought):", "", "| round |" + "".join(f" {st} |" for st in chose),
                  "|---|" + "---|" * len(chose)]  # fmt: skip
        for r in range(1, n_rounds):
            cells = [mean_sd([results["seeds"][s][st][r]["machine_errors"] for s in seeds])
                     for st in chose]  # fmt: skip
            lines.append(f"| {r} | " + " | ".join(cells) + " |")
        lines.append("")
    if "suggest" in strategies and "random" in strategies and n_rounds > 1:
        last = n_rounds - 1
        for key in ("AP_all", "MAP"):
            fewer = 0
            for s in seeds:
                sug, ran = results["seeds"][s]["suggest"], results["seeds"][s]["random"]
                target = ran[last][key]
                reach = rounds_to_reach(sug[1 : last + 1], target, key)
                fewer += reach is not None and reach < last
                lines.append(
                    f"- seed {s}: random reaches {key} {target:.2f} at round {last}; suggest "
                    + (f"reaches it at round {reach}" if reach else "does not reach it")
                    + f" (suggest's round {last}: {sug[last][key]:.2f})"
                )
            lines.append(f"- {key}: suggest needs fewer verified images than random for "
                         f"random's final {key} in {fewer} of {len(seeds)} seeds")  # fmt: skip
    return "\n".join(lines) + "\n"


def write_results(out: Path, results: dict[str, Any]) -> None:
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(render(results))


def main(argv: list[str] | None = None) -> int:
    from labelclean.training.demo_data import LABEL_NAMES, training_truth

    args, train_args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    ids, labels = training_truth(args.data, source=args.source, seed=args.demo_seed)
    truth = dict(zip(ids, labels, strict=True))
    listed = read_listed(args.data / "train-annotations-machine-imagelabels.csv")
    stats = json.loads((args.data / "demo-stats.json").read_text())
    strategies = ["suggest", "random"] + (["control"] if args.control else [])
    results_path = args.out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.exists() else {"seeds": {}}
    results.update(
        strategies=strategies, train_args=train_args, per_round=args.per_round,
        t_images=ids[stats["n_verified"] :],
    )  # fmt: skip
    for seed in [int(s) for s in args.seeds.split(",") if s.strip()]:
        one_seed(args, train_args, seed, strategies, truth, list(LABEL_NAMES), results, listed)
    print(render(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
