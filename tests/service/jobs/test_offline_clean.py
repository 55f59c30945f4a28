"""`labelclean clean`: the bulk job in one process on real images. Its files match the /clean
path image by image; a run stopped by a failing chunk resumes without redoing stored chunks and
ends with the same files as an uninterrupted run; bad inputs exit 2 naming the option; S3 in and
out through moto's server; torch stays out; a progress bar unless --quiet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from labelclean.model.runtime import OnnxModel
from labelclean.service.jobs import offline

from labelclean.cli import main

from ..bulk_fixtures import (  # noqa: F401 - fixtures
    JobFiles,
    bundle,
    bundle_dir,
    check_results,
    job_files,
    onnx,
    read_csv,
    s3,
    upload,
)
from ..conftest import CLASSES

FAST = ["--device", "cpu", "--chunk-size", "8", "--batch-size", "4", "--quiet"]


def clean_args(files: JobFiles, bundle_dir: Path, out: Path | str) -> list[str]:  # noqa: F811
    return ["clean", "--model", str(bundle_dir), "--images", str(files.images),
            "--labels", str(files.labels), "--out", str(out)]  # fmt: skip


def test_clean_writes_what_clean_gives(job_files, bundle_dir, bundle, onnx, capsys):  # noqa: F811
    out = job_files.root / "out"
    assert main([*clean_args(job_files, bundle_dir, out), *FAST]) == 0
    summary = json.loads((out / "summary.json").read_text())
    check_results(job_files, out, bundle, onnx, summary)
    printed = capsys.readouterr().out
    assert f"{summary['cleaned']} of {summary['images']} images cleaned, 4 failed" in printed


def test_resumes_after_a_failed_chunk(job_files, bundle_dir, bundle, onnx, monkeypatch, capsys):  # noqa: F811
    out = job_files.root / "out"
    run = OnnxModel.run
    calls = []

    def failing_run(self, images, noisy):
        calls.append(len(images))
        if len(calls) == 5:  # chunk 2's first batch (two batches of 4 per chunk)
            raise RuntimeError("simulated crash")
        return run(self, images, noisy)

    monkeypatch.setattr(OnnxModel, "run", failing_run)
    assert main([*clean_args(job_files, bundle_dir, out), *FAST]) == 2
    err = capsys.readouterr().err
    assert "chunk 2 of 4 failed" in err and "simulated crash" in err and "rerun" in err
    parts = out / "_work" / "parts"
    assert sorted(p.name for p in parts.glob("*.summary.json")) == [
        "000000.summary.json", "000001.summary.json",
    ]  # fmt: skip
    assert not (out / "cleaned.csv").exists()
    stored = {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in parts.iterdir()}
    processed = []
    process_chunk = offline.process_chunk

    async def spy(chunk, **kwargs):
        processed.append(chunk.index)
        return await process_chunk(chunk, **kwargs)

    monkeypatch.setattr(offline, "process_chunk", spy)
    assert main([*clean_args(job_files, bundle_dir, out), *FAST, "--keep-work"]) == 0
    assert processed == [2, 3]  # the stored chunks are not cleaned again
    assert all((p.read_bytes(), p.stat().st_mtime_ns) == v for p, v in stored.items())
    summary = json.loads((out / "summary.json").read_text())
    check_results(job_files, out, bundle, onnx, summary)
    # The same files as a run that was never interrupted (and a finished job reruns as a no-op).
    monkeypatch.setattr(OnnxModel, "run", run)
    whole = job_files.root / "whole"
    assert main([*clean_args(job_files, bundle_dir, whole), *FAST]) == 0
    for name in ("cleaned.csv", "errors.csv"):
        assert (out / name).read_bytes() == (whole / name).read_bytes()
    assert not (whole / "_work").exists()  # removed after success
    kept = job_files.root / "kept"
    assert main([*clean_args(job_files, bundle_dir, kept), *FAST, "--keep-work"]) == 0
    assert (kept / "_work" / "plan.json").exists()
    processed.clear()
    assert main([*clean_args(job_files, bundle_dir, kept), *FAST, "--keep-work"]) == 0
    assert processed == []  # a finished job whose work was kept reruns as a no-op
    assert (kept / "cleaned.csv").read_bytes() == (whole / "cleaned.csv").read_bytes()


def test_bad_inputs_exit_2_naming_the_option(job_files, bundle_dir, tmp_path, capsys):  # noqa: F811
    args = clean_args(job_files, bundle_dir, tmp_path / "out")
    no_conf = tmp_path / "no-conf.csv"
    no_conf.write_text("ImageID,Source,LabelName\nimg-0000,machine,/fm/bag\n")
    bad_row = tmp_path / "bad-row.csv"
    bad_row.write_text("ImageID,Source,LabelName,Confidence\nimg-0000,machine,/fm/bag,1.5\n")
    a_file = tmp_path / "a-file"
    a_file.write_text("x")

    def with_(flag: str, value: str) -> list[str]:
        changed = list(args)
        if flag in changed:
            changed[changed.index(flag) + 1] = value
        else:
            changed += [flag, value]
        return changed

    cases = [
        (with_("--images", str(tmp_path / "missing")), "--images", "folder not found"),
        (with_("--images", str(tmp_path)), "--images", "no images"),
        (with_("--labels", str(tmp_path / "missing.csv")), "--labels", "not found"),
        (with_("--labels", str(no_conf)), "--labels", "expected the header"),
        (with_("--labels", str(bad_row)), "--labels", "line 2: Confidence is not a number"),
        (with_("--out", f"{a_file}/out"), "--out", "output not writable"),
        (with_("--threshold", "high"), "--threshold", "not a number or JSON object"),
        (with_("--threshold", '{"/fm/nope": 0.5}'), "--threshold", "unknown label id"),
        (with_("--threshold", "1.5"), "--threshold", "between 0 and 1"),
        (with_("--chunk-size", "0"), "--chunk-size", "greater than or equal to 1"),
        (with_("--model", str(tmp_path)), "", "not a model bundle"),
        (with_("--images", "nope://x/"), "--images", "nope:// cannot be used"),
    ]
    for argv, flag, message in cases:
        assert main([*argv, "--quiet"]) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith(f"labelclean clean: error: {flag}"), err
        assert message in err and err.count("\n") == 1, err


def test_help_explains(capsys):
    with pytest.raises(SystemExit) as info:
        main(["clean", "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for words in ("ImageID,Source,LabelName,Confidence", "cleaned.csv", "errors.csv",
                  "summary.json", "Resumable", "--chunk-size", "--threshold", "s3://"):  # fmt: skip
        assert words in text


def test_s3_in_and_out_with_a_progress_bar_and_no_torch(s3, job_files, bundle_dir, bundle, onnx):  # noqa: F811
    """A real process: the endpoint from AWS_ENDPOINT_URL, tqdm's bar on stderr, no torch."""
    upload(s3, "offline", job_files)
    code = (
        "import sys; from labelclean.cli import main; code = main(sys.argv[1:]); "
        "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(code)"
    )
    argv = ["clean", "--model", str(bundle_dir), "--images", "s3://offline/images",
            "--labels", "s3://offline/labels.csv", "--out", "s3://offline/results/",
            "--device", "cpu", "--chunk-size", "16"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABELCLEAN_")}
    env["AWS_ENDPOINT_URL"] = s3
    done = subprocess.run(
        [sys.executable, "-c", code, *argv], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "cleaning: 100%" in done.stderr and "img" in done.stderr
    import boto3

    client = boto3.client("s3", endpoint_url=s3)
    out = job_files.root / "from-s3"
    out.mkdir()
    for name in ("cleaned.csv", "errors.csv", "summary.json"):
        body = client.get_object(Bucket="offline", Key=f"results/{name}")["Body"].read()
        (out / name).write_bytes(body.replace(b"s3://offline/images", b"file://"))
    summary = json.loads((out / "summary.json").read_text())
    check_results(job_files, out, bundle, onnx, summary)


def test_odd_file_names_fail_their_image_not_the_job(job_files, bundle_dir, bundle, onnx):  # noqa: F811
    """A file name that is not UTF-8 (undecodable bytes, as local file systems allow) is one
    line of errors.csv, not a job that fails on encoding it; an ImageID holding a carriage
    return is quoted in every CSV, so it reads back as one field."""
    images = job_files.images
    some = next(iter(job_files.good))
    data = job_files.data[some]
    (images / "a\rb.png").write_bytes(data)
    with open(os.fsencode(images) + b"/\xffodd.png", "wb") as fh:
        fh.write(data)
    label = CLASSES[0][0]
    with job_files.labels.open("a", newline="") as fh:
        fh.write(f'"a\rb",test,{label},1\n')
    out = job_files.root / "out"
    assert main([*clean_args(job_files, bundle_dir, out), *FAST]) == 0
    errors = {row[0]: row[1] for row in read_csv(out / "errors.csv")[1:]}
    assert errors["\\xffodd"] == (
        "file name is not UTF-8 text (shown with \\x escapes): \\xffodd.png"
    )  # fmt: skip
    cleaned = read_csv(out / "cleaned.csv")
    odd = [row for row in cleaned if row[0] == "a\rb"]
    assert odd and all(len(row) == len(cleaned[0]) for row in cleaned)
    assert [r for r in odd if r[2] == label][0][4] in ("kept", "removed")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed"] == len(errors)
    assert summary["cleaned"] == len({row[0] for row in cleaned[1:]})
