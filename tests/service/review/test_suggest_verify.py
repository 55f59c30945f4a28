"""Which images to verify next (issue 18, part 4): ``service.review.suggest`` chooses by
expected label changes with classes taking turns, rarest first; ``labelclean suggest-verify``
writes that choice for a real bundle and real images, leaving V out; ``labelclean review --order
suggest`` lists the images in the same order; ``demo_data.training_truth`` gives the demo's true
labels of T, the reviewers' answers in benchmarks/verify_rounds.py."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from labelclean.service.review import queue as rq
from labelclean.service.review.suggest import BY_CHANGES, order_all, suggest, uncertainty

from labelclean.cli import main
from labelclean.storage import Storage

from ..bulk_fixtures import bundle, bundle_dir, onnx, read_csv  # noqa: F401 - fixtures
from ..conftest import CLASSES
from .test_review import review_data  # noqa: F401 - a fixture

HEADER = ["Rank", "ImageID", "ExpectedChanges", "PickedFor", "Classes"]


def ids(n: int) -> list[str]:
    return [f"img-{i:03d}" for i in range(n)]


def test_images_with_more_expected_changes_come_first():
    """u = issue where the decision keeps the machine's label, 1 - issue where it changes it:
    a removed label of issue 0.9 is a sure change (u 0.1), a kept one of issue 0.4 an unsure
    one (u 0.4)."""
    issue = np.array([
        [0.9, 0.9],  # both removed: u 0.1 + 0.1 = 0.2
        [0.4, 0.4],  # both kept: 0.8
        [0.4, 0.0],  # 0.4
        [0.6, 0.3],  # first removed (u 0.4), second kept (0.3): 0.7
        [0.0, 0.05],  # 0.05
    ], np.float32)  # fmt: skip
    changed = issue >= 0.5
    listed = np.ones_like(changed)
    np.testing.assert_allclose(uncertainty(issue, changed)[3], [0.4, 0.3], rtol=1e-6)
    chosen = suggest(issue, changed, budget=3, listed=listed, image_ids=ids(5), quota=0.0)
    assert chosen.rows.tolist() == [1, 3, 2]
    np.testing.assert_allclose(chosen.expected, [0.8, 0.7, 0.4], rtol=1e-6)
    assert (chosen.picked_for == BY_CHANGES).all()
    assert chosen.mean_expected == pytest.approx((0.2 + 0.8 + 0.4 + 0.7 + 0.05) / 5)


def test_a_rare_class_is_covered():
    """Ten images are unsure of the common class A (u 0.5), one of the rare class R (u 0.3:
    fewer expected changes than any A image). By expected changes alone R gets nothing; with
    the quota, R takes the first turn (rarest) and its image, then A takes its best."""
    n = 12
    issue = np.zeros((n, 2), np.float32)
    listed = np.zeros((n, 2), bool)
    issue[:10, 0], listed[:10, 0] = 0.5 - np.arange(10) / 100, True  # A listed, unsure
    issue[10, 1] = 0.3  # R unlisted, maybe missing
    changed = np.zeros((n, 2), bool)
    by_changes = suggest(issue, changed, budget=4, listed=listed, image_ids=ids(n), quota=0.0)
    assert 10 not in by_changes.rows.tolist()
    chosen = suggest(issue, changed, budget=4, listed=listed, image_ids=ids(n))
    assert chosen.rarity_order.tolist() == [1, 0]
    assert chosen.rows.tolist()[0] == 10 and chosen.picked_for.tolist()[0] == 1
    assert chosen.rows.tolist() == [10, 0, 1, 2]  # then A's turn, a change pick, A's turn
    assert chosen.picked_for.tolist() == [1, BY_CHANGES, 0, BY_CHANGES]


def test_choice_is_deterministic_within_budget_and_eligible():
    rng = np.random.default_rng(3)
    n, d = 200, 6
    issue = np.round(rng.random((n, d)) ** 3, 1).astype(np.float32)  # many ties
    listed = rng.random((n, d)) < 0.3
    changed = issue >= 0.5
    eligible = rng.random(n) < 0.8
    names = [f"id-{v:04d}" for v in rng.permutation(10_000)[:n]]
    first = suggest(issue, changed, budget=30, listed=listed, image_ids=names, eligible=eligible)
    assert len(first.rows) == 30 and len(set(first.rows.tolist())) == 30
    assert eligible[first.rows].all()
    # The same scores in another row order choose the same images in the same order.
    perm = rng.permutation(n)
    again = suggest(issue[perm], changed[perm], budget=30, listed=listed[perm],
                    image_ids=[names[i] for i in perm], eligible=eligible[perm])  # fmt: skip
    assert [names[perm[r]] for r in again.rows] == [names[r] for r in first.rows]
    # A bigger budget only adds images; the full order starts with them.
    bigger = suggest(issue, changed, budget=50, listed=listed, image_ids=names, eligible=eligible)
    assert bigger.rows[:30].tolist() == first.rows.tolist()
    everyone = order_all(issue, changed, listed=listed, image_ids=names, eligible=eligible)
    assert everyone[:50].tolist() == bigger.rows.tolist()
    assert sorted(everyone.tolist()) == np.flatnonzero(eligible).tolist()
    # Every class takes turns: 30 picks, half of them by class, 6 classes -> 2 or 3 each.
    counts = np.bincount(first.picked_for[first.picked_for >= 0], minlength=d)
    assert counts.sum() == 15 and counts.min() >= 2
    # A budget over the eligible images takes them all.
    assert len(suggest(issue, changed, budget=n, listed=listed, image_ids=names,
                       eligible=eligible).rows) == eligible.sum()  # fmt: skip


def write_human(path: Path, images: list[str]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["ImageID", "Source", "LabelName", "Confidence"])
        writer.writerows([image, "verification", CLASSES[0][0], "1"] for image in images)


def test_command_chooses_unverified_images_as_the_selection_does(
    review_data, bundle_dir, bundle, onnx, tmp_path, capsys  # noqa: F811
):  # fmt: skip
    data, _, _ = review_data
    out = tmp_path / "verify.csv"
    argv = ["suggest-verify", "--model", str(bundle_dir), "--data", str(data), "--budget", "6",
            "--device", "cpu", "--quiet"]  # fmt: skip
    # With no V yet, then with the first three choices verified (the data's human labels file
    # and a reviews CSV): they are left out.
    assert main([*argv, "--out", str(out)]) == 0
    assert "0 already verified" in capsys.readouterr().out
    first = [r[1] for r in read_csv(out)[1:4]]
    write_human(data / "train-annotations-human-imagelabels.csv", first[:2])
    write_human(tmp_path / "reviews.csv", first[2:])
    argv += ["--human-extra", str(tmp_path / "reviews.csv")]
    assert main([*argv, "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "6 image(s) to verify of" in said and "3 already verified (left out)" in said
    rows = read_csv(out)
    assert rows[0] == HEADER and [int(r[0]) for r in rows[1:]] == [1, 2, 3, 4, 5, 6]
    chosen = [r[1] for r in rows[1:]]
    assert not set(first) & set(chosen)
    # What the selection gives on the queue /clean's code makes of the same images.
    inputs = rq.read_inputs(bundle, data)
    queue = rq.clean_split(bundle, inputs, predict=onnx.run, read=Storage.local().read_bytes,
                           progress=False)  # fmt: skip
    verified = np.isin(queue.image_ids, first)
    want = suggest(queue.issue, np.isin(queue.verdicts, (rq.REMOVED, rq.ADDED)), budget=6,
                   listed=queue.noisy > 0, image_ids=queue.image_ids,
                   eligible=queue.done & ~verified)  # fmt: skip
    assert chosen == [queue.image_ids[r] for r in want.rows]
    assert [float(r[2]) for r in rows[1:]] == pytest.approx(want.expected.tolist(), abs=1e-4)
    names = {CLASSES[k][1] for k in range(len(CLASSES))}
    for r, k in zip(rows[1:], want.picked_for.tolist(), strict=True):
        assert r[3] == ("expected changes" if k == BY_CHANGES else f"class {CLASSES[k][1]}")
        assert all(part.rsplit(" ", 1)[0] in names for part in r[4].split("; ") if part)
    # Without --out the CSV goes to standard output, byte for byte the same.
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.out == out.read_text() and "6 image(s) to verify" in captured.err
    assert list(csv.reader(io.StringIO(captured.out)))[1:] == rows[1:]


def test_bad_inputs_exit_2_naming_the_flag(review_data, bundle_dir, tmp_path, capsys):  # noqa: F811
    data, _, _ = review_data
    a_file = tmp_path / "a-file"
    a_file.write_text("x")
    no_header = tmp_path / "no-header.csv"
    no_header.write_text("ImageID,LabelName\nimg-000,/fm/bag\n")
    cases = [
        (["--budget", "0"], "--budget", "at least 1"),
        (["--quota", "1.5"], "--quota", "between 0 and 1"),
        (["--batch-size", "0"], "--batch-size", "at least 1"),
        (["--model", str(tmp_path / "nope")], "--model", "not a model bundle"),
        (["--data", str(tmp_path / "missing")], "--data", "folder not found"),
        (["--human-extra", str(tmp_path / "nope.csv")], "--human-extra", "file not found"),
        (["--human-extra", str(no_header)], "--human-extra", "header lacks column(s)"),
        (["--train-human", "nope.csv"], "--train-human", "nope.csv: file not found"),
        (["--train-machine", "nope.csv"], "--train-machine", "nope.csv: file not found"),
        (["--images", "nope"], "--images", "folder not found"),
        (["--out", f"{a_file}/out.csv"], "--out", "not writable"),
    ]  # fmt: skip
    for extra, flag, message in cases:
        argv = ["suggest-verify", "--model", str(bundle_dir), "--data", str(data),
                "--budget", "3", "--quiet", *extra]  # fmt: skip
        assert main(argv) == 2, extra
        err = capsys.readouterr().err
        assert err.startswith(f"labelclean suggest-verify: error: {flag}"), err
        assert message in err and err.count("\n") == 1, err


def test_review_order_suggest_lists_images_in_the_suggestions_order(
    review_data, bundle_dir, bundle, onnx, tmp_path  # noqa: F811
):  # fmt: skip
    data, _, _ = review_data
    out = tmp_path / "out"
    argv = ["review", "--model", str(bundle_dir), "--data", str(data), "--out", str(out),
            "--device", "cpu", "--quiet", "--min-issue", "0", "--format",
            "label-studio"]  # fmt: skip
    assert main([*argv, "--order", "suggest"]) == 0
    rows = read_csv(out / "review.csv")[1:]
    images = list(dict.fromkeys(r[1] for r in rows))
    inputs = rq.read_inputs(bundle, data)
    queue = rq.clean_split(bundle, inputs, predict=onnx.run, read=Storage.local().read_bytes,
                           progress=False)  # fmt: skip
    changed = np.isin(queue.verdicts, (rq.REMOVED, rq.ADDED))
    order = order_all(queue.issue, changed, listed=queue.noisy > 0, image_ids=queue.image_ids,
                      eligible=queue.done)  # fmt: skip
    assert images == [queue.image_ids[r] for r in order]
    assert [int(r[0]) for r in rows] == list(range(1, len(rows) + 1))
    for image in images:  # an image's pairs together, by issue score
        scores = [float(r[6]) for r in rows if r[1] == image]
        assert scores == sorted(scores, reverse=True)
    tasks = json.loads((out / "label-studio-tasks.json").read_text())
    assert [t["data"]["image_id"] for t in tasks] == images
    assert [t["data"]["verify_rank"] for t in tasks] == list(range(1, len(tasks) + 1))
    view = json.loads((out / "label-studio-view.json").read_text())["data"]
    assert view["ordering"] == ["tasks:data.verify_rank"]
    # The default order is unchanged: by issue score, no verify_rank.
    assert main(argv) == 0
    scores = [float(r[6]) for r in read_csv(out / "review.csv")[1:]]
    assert scores == sorted(scores, reverse=True) and scores != [float(r[6]) for r in rows]
    tasks = json.loads((out / "label-studio-tasks.json").read_text())
    assert "verify_rank" not in tasks[0]["data"]


def test_help_explains(capsys):
    with pytest.raises(SystemExit) as info:
        main(["suggest-verify", "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for words in ("--budget", "--quota", "default 0.5", "P(the decision is wrong)",
                  "rarest", "Rank,ImageID,ExpectedChanges,PickedFor, Classes", "--human-extra",
                  "standard output", "--init"):  # fmt: skip
        assert words.replace(" ", "") in text.replace(" ", ""), words


def test_suggest_verify_loads_no_torch(review_data, bundle_dir, tmp_path):  # noqa: F811
    data, _, _ = review_data
    code = (
        "import sys; from labelclean.cli import main; code = main(sys.argv[1:]); "
        "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(code)"
    )
    argv = ["suggest-verify", "--model", str(bundle_dir), "--data", str(data), "--budget", "3",
            "--out", str(tmp_path / "v.csv"), "--device", "cpu"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABELCLEAN_")}
    done = subprocess.run([sys.executable, "-c", code, *argv], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert len(read_csv(tmp_path / "v.csv")) == 4


def test_training_truth_rebuilds_the_demos_labels(tiny_data):
    from labelclean.training.demo_data import DemoDataError, training_truth

    from ...conftest import TINY

    items = {k: TINY[k] for k in ("annotator_items", "calibration_items")}
    image_ids, labels = training_truth(tiny_data, seed=0, **items)
    assert len(image_ids) == TINY["n_train"] + TINY["n_verified"] == len(labels)
    with (tiny_data / "train-annotations-machine-imagelabels.csv").open() as fh:
        machine = {row["ImageID"] for row in csv.DictReader(fh)}
    assert machine <= set(image_ids)
    stats = json.loads((tiny_data / "demo-stats.json").read_text())
    positives = [c["train_n_positive"] for c in stats["per_class"].values()]
    assert labels.sum(axis=0).tolist() == positives
    with pytest.raises(DemoDataError, match="not built from"):
        training_truth(tiny_data, seed=1, **items)
