"""The requirements of docker/Dockerfile's install, read from pyproject.toml: the base
dependencies and those of the extras named, with plain onnxruntime in place of onnxruntime-gpu.

    python docker/cpu_requirements.py service > requirements.txt

pyproject.toml gives linux x86_64 onnxruntime-gpu (for the CUDA images; 340 MB, mostly CUDA
kernels). The CPU image serves with onnxruntime, which provides the same module (`onnxruntime`),
so only one of the two may be installed: the Dockerfile installs these requirements, then the
project with --no-deps. Every other requirement is passed on as written, its markers for pip.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
NAME = re.compile(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def canonical(name: str) -> str:
    """A distribution name as PyPI compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def cpu_requirements(extras: list[str], pyproject: Path = PYPROJECT) -> list[str]:
    """pyproject's requirements for ``pip install ".[EXTRAS]"``, onnxruntime on every platform."""
    project = tomllib.loads(pyproject.read_text())["project"]
    given = list(project["dependencies"])
    for extra in extras:
        given += project["optional-dependencies"][extra]
    found, onnxruntime = [], False
    for requirement in given:
        match = NAME.match(requirement)
        assert match, requirement
        name = canonical(match[1])
        if name == "onnxruntime-gpu":
            continue
        if name == "onnxruntime":  # pyproject's is for the platforms without the GPU wheel
            requirement, onnxruntime = requirement.partition(";")[0].strip(), True
        found.append(requirement)
    assert onnxruntime, f"{pyproject} requires no onnxruntime"
    return found


if __name__ == "__main__":
    print("\n".join(cpu_requirements(sys.argv[1:])))
