"""The demo data builder writes a well-formed, deterministic Open-Images-style data set."""

from __future__ import annotations

import csv
import json
import re
import shutil
from collections import defaultdict
from pathlib import Path

import pytest
from labelclean.training.demo_data import (
    FILES,
    LABEL_NAMES,
    DemoDataError,
    DemoStats,
    build_demo_data,
)
from PIL import Image

SOURCE = Path("/usr/share/datasets/fashion-mnist")
pytestmark = pytest.mark.skipif(
    not all((SOURCE / f).is_file() for f in FILES.values()), reason="Fashion-MNIST not installed"
)
SIZES = dict(n_train=60, n_verified=20, n_test=30, annotator_epochs=1)
FAST = dict(annotator_items=2000, calibration_items=500, progress=False)
CSVS = [
    "class-descriptions.csv",
    "train-annotations-machine-imagelabels.csv",
    "train-annotations-human-imagelabels.csv",
    "test-annotations-machine-imagelabels.csv",
    "test-annotations-human-imagelabels.csv",
]
HEADER = ["ImageID", "Source", "LabelName", "Confidence"]
FOOTWEAR_ITEMS = ["/lc/sandal", "/lc/sneaker", "/lc/ankle_boot"]


def read_csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def human_labels(path: Path) -> dict[str, dict[str, int]]:
    """ImageID -> {LabelName: 0/1} from a human-verified file."""
    out: dict[str, dict[str, int]] = defaultdict(dict)
    for row in read_csv(path)[1]:
        out[row["ImageID"]][row["LabelName"]] = int(row["Confidence"])
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, DemoStats]:
    out = tmp_path_factory.mktemp("demo")
    return out, build_demo_data(out, seed=3, **SIZES, **FAST)


def test_files_exist_with_exact_headers(built: tuple[Path, DemoStats]) -> None:
    out, _ = built
    header, rows = read_csv(out / "class-descriptions.csv")
    assert header == ["LabelName", "DisplayName"]
    assert [r["LabelName"] for r in rows] == LABEL_NAMES and len(rows) == 15
    assert {"/lc/tshirt", "/lc/tops", "/lc/long_sleeve", "/lc/accessory"} <= set(LABEL_NAMES)
    for name in CSVS[1:]:
        assert read_csv(out / name)[0] == HEADER, name
    assert (out / "demo-stats.json").is_file()


def test_every_image_id_has_a_28x28_grayscale_png(built: tuple[Path, DemoStats]) -> None:
    out, _ = built
    ids = {r["ImageID"] for name in CSVS[1:] for r in read_csv(out / name)[1]}
    pngs = {p.stem for p in (out / "images").glob("*.png")}
    assert ids <= pngs
    assert len(pngs) == SIZES["n_train"] + SIZES["n_verified"] + SIZES["n_test"]
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in pngs)
    for image_id in sorted(ids)[:25]:
        with Image.open(out / "images" / f"{image_id}.png") as im:
            assert (im.size, im.mode) == ((28, 28), "L")


def test_human_rows_verify_all_classes(built: tuple[Path, DemoStats]) -> None:
    out, _ = built
    for name, n in [("train", SIZES["n_verified"]), ("test", SIZES["n_test"])]:
        _, rows = read_csv(out / f"{name}-annotations-human-imagelabels.csv")
        assert {r["Source"] for r in rows} == {"verification"}
        assert {r["Confidence"] for r in rows} <= {"0", "1"}
        labels = human_labels(out / f"{name}-annotations-human-imagelabels.csv")
        assert len(labels) == n and len(rows) == 15 * n
        assert all(sorted(v) == sorted(LABEL_NAMES) for v in labels.values())


def test_hierarchy_holds_in_human_labels(built: tuple[Path, DemoStats]) -> None:
    out, _ = built
    for name in ("train", "test"):
        for labels in human_labels(out / f"{name}-annotations-human-imagelabels.csv").values():
            assert sum(labels[n] for n in LABEL_NAMES[:10]) >= 1  # at least one item
            if labels["/lc/tops"]:
                assert labels["/lc/clothing"]
            if labels["/lc/long_sleeve"]:
                assert labels["/lc/tops"]
            if any(labels[n] for n in FOOTWEAR_ITEMS):
                assert labels["/lc/footwear"] and labels["/lc/accessory"]
            assert labels["/lc/footwear"] == any(labels[n] for n in FOOTWEAR_ITEMS)
            assert labels["/lc/accessory"] == (labels["/lc/footwear"] or labels["/lc/bag"])


def test_machine_rows(built: tuple[Path, DemoStats]) -> None:
    out, _ = built
    human_train = set(human_labels(out / "train-annotations-human-imagelabels.csv"))
    human_test = set(human_labels(out / "test-annotations-human-imagelabels.csv"))
    pngs = {p.stem for p in (out / "images").glob("*.png")}
    train_ids = pngs - human_test
    _, train_rows = read_csv(out / "train-annotations-machine-imagelabels.csv")
    _, test_rows = read_csv(out / "test-annotations-machine-imagelabels.csv")
    assert {r["ImageID"] for r in train_rows} <= train_ids
    assert {r["ImageID"] for r in test_rows} <= human_test
    assert human_train <= train_ids and not human_train & human_test
    for r in train_rows + test_rows:
        assert r["Source"] == "machine" and r["LabelName"] in LABEL_NAMES
        assert re.fullmatch(r"0\.\d{4}", r["Confidence"]) and float(r["Confidence"]) > 0


def test_stats(built: tuple[Path, DemoStats]) -> None:
    out, stats = built
    assert (stats.n_train, stats.n_verified, stats.n_test) == (60, 20, 30)
    assert json.loads((out / "demo-stats.json").read_text())["per_class"].keys() == set(LABEL_NAMES)
    for s in stats.per_class.values():
        for key in ("train_precision", "train_recall", "test_precision", "test_recall"):
            assert s[key] is None or 0.0 <= s[key] <= 1.0
    assert stats.elapsed_s > 0
    json.dumps(stats.to_dict())


def test_same_seed_same_files_and_overwrite(built: tuple[Path, DemoStats], tmp_path: Path) -> None:
    out, _ = built
    with pytest.raises(DemoDataError, match="overwrite"):
        build_demo_data(out, seed=3, **SIZES, **FAST)
    again = tmp_path / "again"
    shutil.copytree(out, again)
    build_demo_data(again, seed=3, overwrite=True, **SIZES, **FAST)
    for name in CSVS:
        assert (again / name).read_bytes() == (out / name).read_bytes(), name
    first = sorted((out / "images").glob("*.png"))[:5]
    assert all((again / "images" / p.name).read_bytes() == p.read_bytes() for p in first)


@pytest.mark.parametrize("broken", ["train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz"])
def test_missing_or_corrupt_source_file(tmp_path: Path, broken: str) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for name in FILES.values():
        if name != broken:
            (src / name).symlink_to(SOURCE / name)
    with pytest.raises(DemoDataError, match=re.escape(broken)):
        build_demo_data(tmp_path / "out", source=src, **SIZES, **FAST)
    (src / broken).write_bytes(b"not a gzip file")
    with pytest.raises(DemoDataError, match=re.escape(broken)):
        build_demo_data(tmp_path / "out", source=src, **SIZES, **FAST)
