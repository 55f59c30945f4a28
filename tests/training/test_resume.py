"""--resume continues the checkpoint's own schedule; flags that contradict it stop the run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from labelclean.training.checkpoint import weights_digest

from labelclean.cli import main

from ..conftest import FAST_TRAIN


def fast(**changes: str) -> list[str]:
    """FAST_TRAIN on the CPU, where a resumed run equals an uninterrupted one bit for bit."""
    args = [*FAST_TRAIN, "--device", "cpu"]
    for flag, value in changes.items():
        args[args.index("--" + flag.replace("_", "-")) + 1] = value
    return args


def load(path: Path) -> dict:
    return torch.load(path, weights_only=False)


@pytest.fixture(scope="module")
def runs(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A noisy model; finetune-clean from it (--init, 2 epochs) run whole, and the same run
    interrupted after its first epoch."""
    import labelclean.training.run as run

    out = tmp_path_factory.mktemp("resume")
    common = ["train", "--data", str(tiny_data), "--no-export"]
    assert main([*common, "--out", str(out / "noisy"), "--mode", "noisy", *fast()]) == 0
    noisy = out / "noisy" / "checkpoint.pt"
    clean = [*common, "--mode", "finetune-clean", "--init", str(noisy), *fast(clean_epochs="2")]
    assert main([*clean, "--out", str(out / "whole")]) == 0

    real_save, calls = run.save_checkpoint, []

    def crash_after_first_epoch(*a, **kw):
        real_save(*a, **kw)
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(run, "save_checkpoint", crash_after_first_epoch)
        assert main([*clean, "--out", str(out / "interrupted")]) == 130
    state = load(out / "interrupted" / "checkpoint.pt")
    assert (state["phases"], state["phase_index"], state["epoch"]) == ([("clean", 2)], 0, 0)
    return {"noisy": noisy, "whole": out / "whole", "interrupted": out / "interrupted"}


def resume_args(data: Path, run_dir: Path, *extra: str, **changes: str) -> list[str]:
    return [
        "train", "--data", str(data), "--out", str(run_dir), "--no-export",
        "--resume", str(run_dir / "checkpoint.pt"), *extra, *fast(**changes),
    ]  # fmt: skip


@pytest.mark.parametrize("with_init", [False, True], ids=["without --init", "same --init"])
def test_run_started_from_init_resumes_its_own_phases(
    runs, tiny_data, tmp_path, monkeypatch, with_init
):
    """Started with --init (no noisy phase), resumed: only the rest of the clean phase runs, and
    the result is the uninterrupted run's, bit for bit."""
    import labelclean.training.run as run

    run_dir = tmp_path / "run"
    shutil.copytree(runs["interrupted"], run_dir)
    real_phase, ran = run.run_phase, []

    def spy(net, data, cfg, phase, epochs, device, **kw):
        ran.append((phase, kw["start_epoch"], epochs))
        return real_phase(net, data, cfg, phase, epochs, device, **kw)

    monkeypatch.setattr(run, "run_phase", spy)
    extra = ["--mode", "finetune-clean", *(["--init", str(runs["noisy"])] if with_init else [])]
    assert main(resume_args(tiny_data, run_dir, *extra, clean_epochs="2")) == 0
    assert ran == [("clean", 1, 2)]  # the second clean epoch; no noisy phase replayed
    resumed, whole = (load(r / "checkpoint.pt") for r in (run_dir, runs["whole"]))
    assert resumed["phases"] == whole["phases"] == [("clean", 2)]
    assert resumed["state_dict"].keys() == whole["state_dict"].keys()
    assert all(torch.equal(resumed["state_dict"][k], v) for k, v in whole["state_dict"].items())
    # the resumed run still says where it started: the noisy model's exact weights
    start = json.loads((run_dir / "report.json").read_text())["start"]
    assert start["weights_sha256"] == weights_digest(load(runs["noisy"])["state_dict"])
    assert start["init"] == str(runs["noisy"])


@pytest.mark.parametrize(
    "case, expected",
    [
        ("more clean epochs", "clean_epochs: 2 in the checkpoint, 3 now"),
        ("another mode", "mode: 'finetune-clean' in the checkpoint, 'joint' now"),
        ("another width", "width: 4 in the checkpoint, 8 now"),
        ("another init", "not the model the run started from"),
        ("reordered classes", "classes: the data set's class file lists other classes"),
    ],
)
def test_resume_with_contradicting_flags_names_the_difference(
    runs, tiny_data, tmp_path, capsys, case, expected
):
    run_dir = tmp_path / "run"
    shutil.copytree(runs["interrupted"], run_dir)
    before = (run_dir / "checkpoint.pt").read_bytes()
    extra, changes = ["--mode", "finetune-clean"], {"clean_epochs": "2"}
    if case == "more clean epochs":
        changes["clean_epochs"] = "3"
    elif case == "another mode":
        extra = ["--mode", "joint"]
    elif case == "another width":
        changes["width"] = "8"
    elif case == "another init":  # the uninterrupted run's model, not the noisy one
        extra += ["--init", str(runs["whole"] / "checkpoint.pt")]
    else:  # same classes, another order: the classifier's outputs would mean other classes
        tiny_data = shutil.copytree(tiny_data, tmp_path / "data")
        classes = tiny_data / "class-descriptions.csv"
        header, *rows = classes.read_text().splitlines()
        classes.write_text("\n".join([header, *reversed(rows)]) + "\n")
    code = main(resume_args(tiny_data, run_dir, *extra, **changes))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "cannot resume with settings that differ from the run's" in err and expected in err
    assert (run_dir / "checkpoint.pt").read_bytes() == before  # nothing trained


def test_run_started_from_scratch_refuses_init_on_resume(runs, tiny_data, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(runs["noisy"].parent, run_dir)
    extra = ["--mode", "noisy", "--init", str(runs["noisy"])]
    code = main(resume_args(tiny_data, run_dir, *extra))
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert "the run did not start from a model (its phases are noisy x1); resume without" in err
