"""The class hierarchy: its two file formats, its checks, the bundle that carries it, and the
consistency pass of the cleaning verdicts (model/cleaning.py ``verdicts``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from labelclean.model.bundle import BundleError, LabelClass, load_bundle, write_bundle
from labelclean.model.cleaning import verdicts
from labelclean.model.config import InputSpec
from labelclean.model.decision import Decision
from labelclean.model.hierarchy import (
    Hierarchy,
    HierarchyError,
    find_hierarchy,
    read_hierarchy,
)

IDS = ["tops", "long", "shirt", "coat", "tshirt", "clothing", "shoe", "boot"]
CLASSES = [LabelClass(f"/t/{n}", n.title()) for n in IDS]
INDEX = {c.id: i for i, c in enumerate(CLASSES)}
EDGES = [
    ("/t/clothing", "/t/tops"),
    ("/t/tops", "/t/long"),
    ("/t/long", "/t/shirt"),
    ("/t/long", "/t/coat"),
    ("/t/tops", "/t/tshirt"),
    ("/t/shoe", "/t/boot"),
    ("/t/clothing", "/t/boot"),  # a second parent: a DAG
]


def node(label: str, *children: dict, part: list | None = None) -> dict:
    out: dict = {"LabelName": label}
    if children:
        out["Subcategory"] = list(children)
    if part is not None:
        out["Part"] = part
    return out


OPEN_IMAGES_TREE = node(
    "/m/0bl9f",  # Open Images' root "Entity": not a class
    node(
        "/t/clothing",
        node(
            "/t/tops",
            node("/t/long", node("/t/shirt"), node("/t/coat")),
            node("/t/tshirt"),
            part=[{"LabelName": "/m/not-a-class"}],  # part-of, ignored
        ),
        node("/t/boot"),
    ),
    node("/t/shoe", node("/t/boot")),
)


def hierarchy() -> Hierarchy:
    return Hierarchy.build(EDGES, CLASSES)


# --- files ---------------------------------------------------------------------------------


def test_open_images_json_with_nesting_a_dag_and_parts(tmp_path: Path) -> None:
    path = tmp_path / "hierarchy.json"
    path.write_text(json.dumps(OPEN_IMAGES_TREE))
    h = read_hierarchy(path, CLASSES)
    assert set(h.edges) == set(EDGES)
    assert set(h.parents("/t/boot")) == {"/t/shoe", "/t/clothing"}
    assert h.ancestors("/t/shirt") == ("/t/long", "/t/tops", "/t/clothing")
    assert h.ancestors("/t/clothing") == ()
    assert find_hierarchy(tmp_path) == path


def test_csv_with_and_without_header(tmp_path: Path) -> None:
    rows = "\n".join(f"{p},{c}" for p, c in EDGES)
    for text in ("parent,child\n" + rows + "\n\n", rows):
        path = tmp_path / "hierarchy.csv"
        path.write_text(text)
        assert read_hierarchy(path, CLASSES).edges == tuple(EDGES)
    assert find_hierarchy(tmp_path) == path
    path.write_text("parent,child\n/t/tops,/t/shirt,extra\n")
    with pytest.raises(HierarchyError, match=r"hierarchy.csv:2: expected parent,child"):
        read_hierarchy(path, CLASSES)


def test_unknown_ids_are_named_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text("/t/tops,/t/shirt\n/t/tops,/x/vest\n/x/garment,/t/tops\n")
    with pytest.raises(HierarchyError) as info:
        read_hierarchy(path, CLASSES)
    message = str(info.value)
    assert str(path) in message and "/x/garment, /x/vest" in message
    assert "not in the class list" in message
    tree = node("/t/clothing", node("/x/vest"))  # a known root keeps its edges: checked
    (tmp_path / "h.json").write_text(json.dumps(tree))
    with pytest.raises(HierarchyError, match="/x/vest"):
        read_hierarchy(tmp_path / "h.json", CLASSES)


def test_cycles_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.csv"
    path.write_text("/t/tops,/t/long\n/t/long,/t/shirt\n/t/shirt,/t/tops\n/t/shoe,/t/boot\n")
    with pytest.raises(HierarchyError, match="cycle: /t/[a-z]+ -> .* -> /t/") as info:
        read_hierarchy(path, CLASSES)
    assert str(path) in str(info.value)
    with pytest.raises(HierarchyError, match="cycle: /t/boot -> /t/boot"):
        Hierarchy.build([("/t/boot", "/t/boot")], CLASSES)


def test_other_suffixes_and_bad_json_are_refused(tmp_path: Path) -> None:
    (tmp_path / "h.txt").write_text("")
    with pytest.raises(HierarchyError, match=r"\.json .* or \.csv"):
        read_hierarchy(tmp_path / "h.txt", CLASSES)
    (tmp_path / "h.json").write_text('{"Subcategory": []}')
    with pytest.raises(HierarchyError, match="LabelName"):
        read_hierarchy(tmp_path / "h.json", CLASSES)
    assert find_hierarchy(tmp_path / "nowhere") is None


# --- bundle --------------------------------------------------------------------------------


def fake_bundle(out: Path, h: Hierarchy | None):
    out.mkdir()
    (out / "model.onnx").write_bytes(b"not really onnx")  # load_bundle checks only its sha256
    return write_bundle(
        out, out / "model.onnx", CLASSES, InputSpec(),
        thresholds_cleaned=[0.5] * len(CLASSES), thresholds_scores=[0.5] * len(CLASSES),
        mode="joint", metrics={}, model_config={}, hierarchy=h,
        decision=Decision.paper([0.5] * len(CLASSES)),
    )  # fmt: skip


def test_bundle_round_trip_with_and_without_a_hierarchy(tmp_path: Path) -> None:
    plain = fake_bundle(tmp_path / "plain", None)
    assert "hierarchy" not in json.loads((plain.path / "bundle.json").read_text())
    assert load_bundle(plain.path).hierarchy is None
    assert load_bundle(plain.path).ancestor_columns is None
    carried = fake_bundle(tmp_path / "carried", hierarchy())
    loaded = load_bundle(carried.path)
    assert loaded.hierarchy == hierarchy()
    columns = loaded.ancestor_columns
    assert columns is not None
    assert columns[INDEX["/t/shirt"]].tolist() == [
        INDEX[i] for i in hierarchy().ancestors("/t/shirt")
    ]
    assert columns[INDEX["/t/clothing"]].tolist() == []


def test_a_bundle_with_a_bad_hierarchy_is_refused(tmp_path: Path) -> None:
    bundle = fake_bundle(tmp_path / "b", hierarchy())
    meta_file = bundle.path / "bundle.json"
    meta = json.loads(meta_file.read_text())
    meta["hierarchy"].append(["/t/shirt", "/t/clothing"])  # a cycle
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="malformed hierarchy.*cycle"):
        load_bundle(bundle.path)
    meta["hierarchy"] = [["/t/tops"]]
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="malformed hierarchy"):
        load_bundle(bundle.path)


# --- verdicts ------------------------------------------------------------------------------


@pytest.fixture(params=["issue", "cleaned"])
def rule(request: pytest.FixtureRequest) -> str:
    """Every verdict test runs under both decision rules: ``cleaned`` decides on c at 0.5;
    ``issue`` on the issue score 1 - c (listed) or c (unlisted) at 0.5, the same sets here."""
    RULE[0] = request.param
    return request.param


RULE = ["issue"]


def clean(listed: dict[str, float], cleaned: dict[str, float], *, with_hierarchy: bool = True):
    """Verdicts at threshold 0.5, with the test hierarchy: the result, {id: (verdict, reason)}."""
    noisy = np.zeros(len(CLASSES), np.float32)
    c = np.zeros(len(CLASSES), np.float32)
    for label, value in listed.items():
        noisy[INDEX[label]] = value
    for label, value in cleaned.items():
        c[INDEX[label]] = value
    ancestors = hierarchy().ancestor_columns(INDEX) if with_hierarchy else None
    half = np.full(len(CLASSES), 0.5, np.float32)
    decision = Decision.paper(half)
    if RULE[0] == "issue":
        decision = Decision("issue", "f1", half, half, half, np.zeros(len(CLASSES), bool))
    issue = np.where(noisy > 0, 1.0 - c, c).astype(np.float32)
    result = verdicts(CLASSES, noisy, c, issue, decision, half, half, ancestors)
    return result, {v.id: (v.verdict, v.reason) for v in result.labels}


def test_a_kept_child_keeps_its_listed_parent_and_adds_the_rest(rule: str) -> None:
    # the issue's case: Shirt and Tops listed, Shirt passes, Tops does not
    listed = {"/t/shirt": 1.0, "/t/tops": 1.0}
    cleaned = {"/t/shirt": 0.9, "/t/tops": 0.2, "/t/long": 0.1, "/t/clothing": 0.3}
    _, before = clean(listed, cleaned, with_hierarchy=False)
    assert before == {"/t/shirt": ("kept", None), "/t/tops": ("removed", None)}
    result, after = clean(listed, cleaned)
    assert after == {
        "/t/shirt": ("kept", None),
        "/t/tops": ("kept", "ancestor of /t/shirt"),
        "/t/long": ("added", "ancestor of /t/shirt"),
        "/t/clothing": ("added", "ancestor of /t/shirt"),
    }
    assert [v.id for v in result.labels] == ["/t/shirt", "/t/clothing", "/t/tops", "/t/long"]
    tops = next(v for v in result.labels if v.id == "/t/tops")
    assert tops.cleaned == pytest.approx(0.2)  # the score is unchanged, only the verdict
    assert result.cleaned_labels == ["/t/shirt", "/t/clothing", "/t/tops", "/t/long"]


def test_an_added_child_adds_ancestors_on_every_path_of_the_dag(rule: str) -> None:
    _, out = clean({}, {"/t/boot": 0.7, "/t/tops": 0.1})
    assert out == {
        "/t/boot": ("added", None),
        "/t/shoe": ("added", "ancestor of /t/boot"),
        "/t/clothing": ("added", "ancestor of /t/boot"),
    }


def test_a_removed_parent_removes_its_listed_children_below_threshold(rule: str) -> None:
    listed = {"/t/tops": 1.0, "/t/long": 1.0, "/t/shirt": 0.8, "/t/tshirt": 0.6}
    cleaned = {"/t/tops": 0.1, "/t/long": 0.3, "/t/shirt": 0.4, "/t/tshirt": 0.2}
    result, out = clean(listed, cleaned)
    assert {k: v for k, (v, _) in out.items()} == dict.fromkeys(listed, "removed")
    assert result.cleaned_labels == []


def test_a_child_above_its_threshold_stays_and_keeps_the_removed_parent(rule: str) -> None:
    # Tops would be removed and with it its listed children, but Coat passes its threshold:
    # Coat stays (rule 1) and keeps Long-sleeve and Tops (rule 2); T-shirt goes.
    listed = {"/t/tops": 1.0, "/t/long": 1.0, "/t/coat": 1.0, "/t/tshirt": 1.0}
    cleaned = {"/t/tops": 0.1, "/t/long": 0.2, "/t/coat": 0.6, "/t/tshirt": 0.3}
    _, out = clean(listed, cleaned)
    assert out == {
        "/t/coat": ("kept", None),
        "/t/tops": ("kept", "ancestor of /t/coat"),
        "/t/long": ("kept", "ancestor of /t/coat"),
        "/t/clothing": ("added", "ancestor of /t/coat"),
        "/t/tshirt": ("removed", None),
    }


def test_reasons_name_every_passing_descendant_best_first(rule: str) -> None:
    _, out = clean({"/t/tops": 1.0}, {"/t/shirt": 0.6, "/t/coat": 0.8, "/t/tops": 0.4})
    assert out["/t/tops"] == ("kept", "ancestor of /t/coat, /t/shirt")
    assert out["/t/long"] == ("added", "ancestor of /t/coat, /t/shirt")


def test_verdicts_are_a_fixed_point_on_random_images(rule: str) -> None:
    """Over many random images: both rules hold on the result, and feeding the result back in
    as the image's labels changes none of them."""
    rng = np.random.default_rng(0)
    h = hierarchy()
    for _ in range(300):
        listed = {c.id: 1.0 for c in CLASSES if rng.random() < 0.4}
        cleaned = {c.id: float(rng.random()) for c in CLASSES}
        result, out = clean(listed, cleaned)
        final = set(result.cleaned_labels)
        for label in final:  # rule 2: ancestors of a label after cleaning are labels too
            assert set(h.ancestors(label)) <= final
        for label, (verdict, _) in out.items():  # rule 1: a removed parent's listed children
            if verdict == "removed":  # are removed, unless they pass (then it is kept: never)
                for child in (c for p, c in h.edges if p == label):
                    assert child not in final
        assert {k for k, (v, _) in out.items() if v == "removed"} == set(listed) - final
        again, _ = clean(dict.fromkeys(final, 1.0), cleaned)
        assert set(again.cleaned_labels) == final


# --- demo data and training ----------------------------------------------------------------


def test_demo_data_hierarchy_is_its_super_classes(tiny_data: Path) -> None:
    from labelclean.model.openimages import read_classes
    from labelclean.training.demo_data import LABEL_NAMES

    h = read_hierarchy(
        tiny_data / "hierarchy.json", read_classes(tiny_data / "class-descriptions.csv")
    )
    assert h.ancestors("/lc/shirt") == ("/lc/long_sleeve", "/lc/tops", "/lc/clothing")
    assert h.ancestors("/lc/tshirt") == ("/lc/tops", "/lc/clothing")
    assert h.ancestors("/lc/ankle_boot") == ("/lc/footwear", "/lc/accessory")
    assert h.ancestors("/lc/bag") == ("/lc/accessory",)
    assert h.ancestors("/lc/trouser") == h.ancestors("/lc/dress") == ("/lc/clothing",)
    assert {c for _, c in h.edges} == set(LABEL_NAMES) - {"/lc/clothing", "/lc/accessory"}


def test_training_carries_the_data_hierarchy_into_the_bundle(tiny_data: Path, tmp_path, capsys):
    from labelclean.cli import main

    from ..conftest import FAST_TRAIN

    run = tmp_path / "run"
    assert (
        main(["train", "--data", str(tiny_data), "--out", str(run), "--mode", "noisy", *FAST_TRAIN])
        == 0
    )
    bundle = load_bundle(run / "bundle")
    assert bundle.hierarchy is not None
    assert bundle.hierarchy.ancestors("/lc/shirt") == (
        "/lc/long_sleeve",
        "/lc/tops",
        "/lc/clothing",
    )
    assert json.loads((run / "report.json").read_text())["hierarchy_edges"] == 13
    exported = tmp_path / "exported"  # labelclean export: from the checkpoint, hierarchy and all
    assert main(["export", "--checkpoint", str(run / "checkpoint.pt"), "--out", str(exported)]) == 0
    assert load_bundle(exported).hierarchy == bundle.hierarchy

    # --hierarchy names another file (here a CSV outside --data); a bad one stops the run
    other = tmp_path / "h.csv"
    other.write_text("parent,child\n/lc/footwear,/lc/sandal\n/lc/footwear,/lc/unicorn\n")
    args = ["train", "--data", str(tiny_data), "--mode", "noisy", "--hierarchy", str(other)]
    assert main([*args, "--out", str(tmp_path / "bad"), *FAST_TRAIN]) == 2
    err = capsys.readouterr().err
    assert str(other) in err and "/lc/unicorn" in err and "not in the class list" in err
    other.write_text("parent,child\n/lc/footwear,/lc/sandal\n")
    assert main([*args, "--out", str(tmp_path / "csv"), *FAST_TRAIN]) == 0
    h = load_bundle(tmp_path / "csv" / "bundle").hierarchy
    assert h is not None and h.edges == (("/lc/footwear", "/lc/sandal"),)
