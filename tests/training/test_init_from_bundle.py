"""``train --init`` takes a run's bundle folder for the run's checkpoint (a bundle holds the ONNX
model only); a bundle that is not beside its run's checkpoint is a clear error, exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from labelclean.training.checkpoint import CheckpointError, init_checkpoint

from labelclean.cli import main


def make_run(root: Path, *, report_names_bundle: bool = True) -> Path:
    bundle = root / "bundle"
    bundle.mkdir(parents=True)
    (bundle / "bundle.json").write_text("{}")
    (root / "checkpoint.pt").write_bytes(b"weights")
    named = bundle if report_names_bundle else root / "another-bundle"
    (root / "report.json").write_text(json.dumps({"bundle": str(named)}))
    return bundle


def test_a_runs_bundle_stands_for_its_checkpoint(tmp_path: Path) -> None:
    bundle = make_run(tmp_path / "run")
    assert init_checkpoint(bundle) == (tmp_path / "run" / "checkpoint.pt").resolve()
    checkpoint = tmp_path / "run" / "checkpoint.pt"
    assert init_checkpoint(checkpoint) == checkpoint  # a checkpoint stays as given


@pytest.mark.parametrize("case", ["copied", "other run's report", "no checkpoint"])
def test_a_bundle_without_its_runs_checkpoint_is_refused(tmp_path: Path, case: str) -> None:
    bundle = make_run(tmp_path / "run", report_names_bundle=case != "other run's report")
    if case == "copied":  # a deployed copy: no run around it
        copy = tmp_path / "deployed" / "model"
        copy.mkdir(parents=True)
        (copy / "bundle.json").write_text("{}")
        bundle = copy
    if case == "no checkpoint":
        (tmp_path / "run" / "checkpoint.pt").unlink()
    with pytest.raises(CheckpointError, match="pass --init RUN/checkpoint.pt"):
        init_checkpoint(bundle)


def test_the_cli_names_the_bundle_and_exits_2(tmp_path: Path, capsys) -> None:
    deployed = tmp_path / "model"
    deployed.mkdir()
    (deployed / "bundle.json").write_text("{}")
    code = main(["train", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"),
                 "--init", str(deployed)])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and str(deployed) in err and "ONNX model only" in err
    assert "Traceback" not in err and not (tmp_path / "out").exists()
