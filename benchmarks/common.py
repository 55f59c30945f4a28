"""What the benchmark scripts share: ports, processes and their CPU and memory, the machine's
description, the demo images they feed, argument helpers, and random-weight bundles.

The scripts import it as ``common`` (run as ``python benchmarks/X.py``, their folder is first on
``sys.path``). Standard library only at import time: torch, numpy and onnxruntime are imported
inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import platform
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
MACHINE_LABELS = "train-annotations-machine-imagelabels.csv"
TICK = os.sysconf("SC_CLK_TCK")


# Processes.


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_s(pid: int) -> float:
    """utime + stime of a live process, all its threads (seconds)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def status_kib(pid: int, key: str) -> int:
    """A ``kB`` line of /proc/PID/status (VmRSS, VmHWM), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def machine_busy_s() -> float:
    """CPU seconds all cores spent on anything but idle/iowait since boot (/proc/stat)."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / TICK


def self_cpu_s() -> float:
    t = os.times()
    return t.user + t.system


def wait_exit(
    process: subprocess.Popen[bytes], timeout: float, poll: Callable[[], None] | None = None
) -> tuple[int, Any]:
    """Reap ``process`` with wait4: (exit status, its rusage), calling ``poll`` every 20 ms
    meanwhile. Kills it after ``timeout``. (The rusage's ru_maxrss is no use here: a child
    started by vfork inherits its parent's peak RSS, this script's.)"""
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return process.returncode, usage
        if poll is not None:
            with contextlib.suppress(OSError, KeyError):  # it exited meanwhile
                poll()
        if time.monotonic() > deadline:
            process.kill()
            pid, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            raise RuntimeError(f"pid {process.pid} did not exit within {timeout:.0f} s; killed")
        time.sleep(0.02)


def wait_until(check: Callable[[], Any], what: str, timeout: float, process=None) -> Any:
    """``check()``'s first true value, polled every 50 ms; RuntimeError after ``timeout`` or
    when ``process`` exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{what}: the process exited ({process.returncode})")
        try:
            value = check()
            if value:
                return value
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{what}: not after {timeout:.0f} s")


def wait_up(port: int, path: str, process: subprocess.Popen, timeout: float = 120) -> None:
    """Until GET ``path`` on 127.0.0.1:``port`` answers 200; SystemExit if the server exits
    first or is not up after ``timeout``."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server exited with {process.returncode}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}{path}", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise SystemExit("server did not come up")


def stop_process(process: subprocess.Popen) -> None:
    """SIGTERM, 15 s to exit, then SIGKILL."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


# The machine.


def _output(*cmd: str, cwd: Path = ROOT) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd).stdout.strip()
    except OSError:
        return ""


def cpu_model() -> str:
    cpuinfo: dict[str, str] = {}
    for entry in Path("/proc/cpuinfo").read_text().splitlines():
        key, _, value = entry.partition(":")
        cpuinfo.setdefault(key.strip(), value.strip())
    return (f"{cpuinfo.get('model name', platform.processor())} (family "
            f"{cpuinfo.get('cpu family')}, model {cpuinfo.get('model')}, "
            f"{cpuinfo.get('cpu MHz')} MHz)")  # fmt: skip


def machine() -> dict[str, Any]:
    """The code measured (its commit) and the machine: cores, memory, CPU, versions."""
    import onnxruntime

    # The code the children run: this checkout, or another tree put first on PYTHONPATH
    # (a checkout of another commit; a tree without .git may name its commit in a COMMIT file).
    found = _output(
        sys.executable, "-c", "import labelclean; print(labelclean.__file__)", cwd=Path("/")
    )
    code = Path(found or ROOT / "labelclean" / "__init__.py").parent.parent
    commit = _output("git", "rev-parse", "HEAD", cwd=code)
    if not commit and (code / "COMMIT").exists():
        commit = (code / "COMMIT").read_text().strip()
    dirty = _output("git", "status", "--porcelain", "--untracked-files=no", cwd=code)
    return {
        "commit": commit or "unknown",
        "code": str(code),
        "tracked_files_modified": [line.split(maxsplit=1)[-1] for line in dirty.splitlines()],
        "nproc": _output("nproc"),
        "free_h": _output("free", "-h"),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "redis_server": _output("redis-server", "--version"),
    }


# The demo data's images.


def machine_rows(data: Path) -> dict[str, list[list[str]]]:
    """ImageID -> its rows of the train split's machine labels CSV."""
    rows: dict[str, list[list[str]]] = {}
    with (data / MACHINE_LABELS).open(newline="") as fh:
        reader = csv.reader(fh)
        next(reader)
        for row in reader:
            rows.setdefault(row[0], []).append(row)
    return rows


def pick_images(data: Path, n: int) -> tuple[list[tuple[str, str]], bytes, int]:
    """The first ``n`` labelled images (ImageIDs sorted): [(new ImageID, source id)], the labels
    CSV of exactly those images, and how many were replicated under new ImageIDs."""
    rows = machine_rows(data)
    ids = sorted(i for i in rows if (data / "images" / f"{i}.png").exists())
    chosen = [(i, i) for i in ids[:n]]
    k = 1
    while len(chosen) < n:  # more than the demo data holds: copies under new ImageIDs
        chosen += [(f"{i}r{k}", i) for i in ids[: n - len(chosen)]]
        k += 1
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["ImageID", "Source", "LabelName", "Confidence"])
    for new, source in chosen:
        writer.writerows([new, *row[1:]] for row in rows[source])
    return chosen, out.getvalue().encode(), max(0, n - len(ids))


# Arguments.


def parse_env(values: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` arguments as a dict; SystemExit on one without ``=``."""
    found = {}
    for value in values:
        key, sep, v = value.partition("=")
        if not sep:
            raise SystemExit(f"expected KEY=VALUE, got {value!r}")
        found[key] = v
    return found


def int_list(text: str) -> list[int]:
    """``"1,2,,8"`` -> [1, 2, 8]."""
    return [int(x) for x in text.split(",") if x.strip()]


# Random-weight bundles.


def export_random_bundle(
    out: Path, spec: Any, class_ids: Sequence[str], *, backbone: str | None = None,
    label_density: float, random_thresholds: tuple[float, float] | None = None,
) -> None:  # fmt: skip
    """Export a joint network with random weights (seed 0) through the project's export path:
    ``class_ids[i]`` named ``class {i}``, thresholds 0.5 or drawn uniformly from
    ``random_thresholds``, the paper's decision rule on them (no fitted issue thresholds).
    Imports torch: run it in its own process."""
    import numpy as np
    import torch
    from labelclean.model.classes import LabelClass
    from labelclean.model.config import ModelConfig
    from labelclean.model.decision import Decision
    from labelclean.model.export import export_bundle
    from labelclean.model.network import LabelCleaningNet

    d = len(class_ids)
    torch.manual_seed(0)
    config = ModelConfig(num_classes=d, input=spec)
    if backbone:
        config.backbone = backbone
    net = LabelCleaningNet(config).eval()
    rng = np.random.default_rng(0)
    sample = (
        rng.standard_normal((2, spec.channels, spec.height, spec.width)).astype(np.float32),
        (rng.random((2, d)) > label_density).astype(np.float32),
    )
    classes = [LabelClass(c, f"class {i}") for i, c in enumerate(class_ids)]
    thresholds = rng.uniform(*random_thresholds, d).tolist() if random_thresholds else [0.5] * d
    export_bundle(
        net, out, classes, sample=sample, thresholds_cleaned=thresholds,
        thresholds_scores=thresholds, mode="joint", metrics={},
        decision=Decision.paper(thresholds),
    )  # fmt: skip


def built_once(out: Path, what: str, command: list[str]) -> Path:
    """``out``, running ``command`` first (a subprocess: torch) unless it holds a bundle."""
    if not (out / "bundle.json").is_file():
        print(f"building {what} (once) ...", flush=True)
        subprocess.run(command, check=True)
    return out
