"""The serving image, checked statically (no docker engine here): non-root, health-checked on
/healthz, the service extra without torch, and a build context without environments or data."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "docker" / "Dockerfile").read_text()
INSTRUCTIONS = [
    line.strip()
    for line in re.sub(r"\\\n", " ", DOCKERFILE).splitlines()
    if line.strip() and not line.lstrip().startswith("#")
]


def last(keyword: str) -> str:
    return [i for i in INSTRUCTIONS if i.startswith(keyword + " ")][-1]


def test_runs_as_non_root_with_healthcheck_and_serve() -> None:
    assert last("USER").split()[1].split(":")[0] not in ("root", "0")
    assert "/healthz" in last("HEALTHCHECK")
    assert last("ENTRYPOINT") == 'ENTRYPOINT ["labelclean", "serve"]'
    assert "LABELCLEAN_HOST=0.0.0.0" in DOCKERFILE


def test_installs_the_service_extra_only() -> None:
    installs = [i for i in INSTRUCTIONS if "pip install" in i]
    assert any('".[service]"' in i for i in installs)
    assert not re.search(r"train|torch==|\[dev", " ".join(installs).replace('import torch"', ""))


def test_copies_only_what_exists_and_context_excludes_heavy_paths() -> None:
    for instruction in INSTRUCTIONS:
        if instruction.startswith("COPY ") and "--from" not in instruction:
            for source in instruction.split()[1:-1]:
                assert (ROOT / source).exists(), source
    ignored = (ROOT / ".dockerignore").read_text().split()
    for path in (".venv", ".git", "demo", "benchmarks/out", "*.onnx"):
        assert path in ignored
