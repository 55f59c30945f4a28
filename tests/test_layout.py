"""The house's layout (issue 19), read from the source with ``ast`` alone, nothing imported:

- no import circle among the package's modules;
- the layers, from the bottom: the base layer (``BASE``: settings, storage, API keys), which
  imports only itself; ``labelclean.model``, which imports only itself and the base;
  ``labelclean.training`` and ``labelclean.service``, which import the model and the base but
  not each other, and ``labelclean.service`` no torch either; the CLI (the rest of labelclean/:
  cli, commands, ...) on top, which nothing below imports;
- no source file over 400 lines and no function over 80 outside tests/ (``source_files``).

The modules are those of pyproject.toml's ``[tool.setuptools] package-dir`` (``labelclean.model``
is model/, and so on). Every import statement counts, for the circles as for the layers: at
module level, inside a function, and under ``if TYPE_CHECKING:``. A function-level import that
runs back up is the same dependency, only later, and a circle broken by moving one side into a
function or behind TYPE_CHECKING is still a circle in the design. ``from pkg import name`` is an
import of ``pkg.name`` when that is a module, else of ``pkg``. Left out: the package
``__init__`` that importing ``a.b.c`` also runs (only the module named counts).

``test_the_checks_find_planted_faults`` shows each check failing on a planted tree.
"""

from __future__ import annotations

import ast
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 80
# The base layer: settings, storage and API keys, which every room may use and which use no
# room; with them labelclean/__init__.py (the version, nothing else).
BASE = ("labelclean.settings", "labelclean.limits", "labelclean.storage", "labelclean.api_keys")
ROOMS = ("labelclean.model", "labelclean.training", "labelclean.service")
CLI = "the CLI (labelclean/ outside the base layer)"
TORCH = ("torch", "torchvision")
# What each layer may not import: every layer above it (and the rooms beside it), and torch
# where serving must do without.
FORBIDDEN = {
    "base": {*ROOMS, CLI},
    "labelclean.model": {"labelclean.training", "labelclean.service", CLI},
    "labelclean.training": {"labelclean.service", CLI},
    "labelclean.service": {"labelclean.training", CLI, "torch"},
}
# What the line limits cover besides the packages' folders.
OTHER_SOURCE_FOLDERS = ("benchmarks", "docker", "scripts")


@dataclass(frozen=True)
class Import:
    source: str  # the importing module
    target: str  # the imported module (or a name outside the package: "torch", "numpy.linalg")
    path: Path  # the importing file, relative to the root
    line: int

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def package_dirs(root: Path) -> dict[str, Path]:
    """Package name -> its folder, from pyproject.toml."""
    setuptools = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {name: root / folder for name, folder in setuptools["package-dir"].items()}


def modules(root: Path) -> dict[str, Path]:
    """Every module of the mapped packages (sub-packages included) -> its file."""
    found: dict[str, Path] = {}
    dirs = package_dirs(root)
    for package, folder in dirs.items():
        for path in sorted(folder.rglob("*.py")):
            if "__pycache__" in path.parts:
                continue
            parts = path.relative_to(folder).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            name = ".".join((package, *parts))
            # A folder mapped twice (a package inside another's folder): the longer name wins.
            owner = max((p for p in dirs if name == p or name.startswith(p + ".")), key=len)
            if owner == package:
                found[name] = path
    return found


def _base_package(module: str, path: Path) -> str:
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def imports(root: Path, known: dict[str, Path]) -> Iterator[Import]:
    """Every import statement of every module, relative ones resolved."""
    for module, path in known.items():
        tree = ast.parse(path.read_text(), str(path))
        rel = path.relative_to(root)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield Import(module, alias.name, rel, node.lineno)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    package = _base_package(module, path).split(".")
                    package = package[: len(package) - (node.level - 1)]
                    base = ".".join([*package, *([node.module] if node.module else [])])
                for alias in node.names:
                    sub = f"{base}.{alias.name}"
                    yield Import(module, sub if sub in known else base, rel, node.lineno)


def graph(root: Path = ROOT) -> tuple[dict[str, Path], list[Import]]:
    known = modules(root)
    edges = set(imports(root, known))  # one per (module, target, line): not one per name
    return known, sorted(edges, key=lambda e: (str(e.path), e.line, e.target))


def _inside(name: str, packages: tuple[str, ...] | str) -> bool:
    packages = (packages,) if isinstance(packages, str) else packages
    return any(name == p or name.startswith(p + ".") for p in packages)


def _in_base(name: str) -> bool:
    return name == "labelclean" or _inside(name, BASE)


# The checks: each returns its offenders, one line each.


def circles(known: dict[str, Path], edges: list[Import]) -> list[str]:
    """Each strongly connected group of modules, with one circle through it, edge by edge."""
    out: dict[str, dict[str, Import]] = {m: {} for m in known}
    for e in edges:
        if e.target in known and e.target != e.source:
            out[e.source].setdefault(e.target, e)
    found = []
    for group in _strongly_connected(out):
        members = set(group)
        cycle, node = [group[0]], group[0]
        while True:  # walk inside the group until a module repeats
            node = next(t for t in sorted(out[node]) if t in members)
            if node in cycle:
                cycle = cycle[cycle.index(node) :] + [node]
                break
            cycle.append(node)
        steps = ", ".join(
            f"{out[a][b].where} {a} -> {b}" for a, b in zip(cycle, cycle[1:], strict=False)
        )
        inside = ", ".join(
            f"{e.where} -> {t}" for m in group for t, e in sorted(out[m].items()) if t in members
        )
        found.append(f"circle among {', '.join(group)}: {steps} (all imports among them: {inside})")
    return found


def _strongly_connected(out: dict[str, dict[str, Import]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative; the groups of two or more modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups = []
    for start in sorted(out):
        if start in index:
            continue
        work = [(start, iter(sorted(out[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(out[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return groups


def room(name: str) -> str | None:
    """The layer a module (or an outside name) belongs to; None for what no rule names."""
    if _inside(name, TORCH):
        return "torch"
    if not _inside(name, "labelclean"):
        return None
    if _in_base(name):
        return "base"
    return next((r for r in ROOMS if _inside(name, r)), CLI)


def layer_faults(edges: list[Import]) -> list[str]:
    """Imports that run from a lower layer to a higher one, or into what a layer must not use."""
    found = []
    for e in edges:
        source, target = room(e.source), room(e.target)
        if target in FORBIDDEN.get(source, ()):
            mine = f"the base layer ({', '.join(BASE)})" if source == "base" else source
            found.append(f"{e.where} {e.source} imports {e.target}: {mine} may not import "
                         f"{target}")  # fmt: skip
    return found


# The service's rooms, lowest first: each imports only those before it (failures.py and
# errors.py, shared, come first).
SERVICE_ROOMS = ("failures", "errors", "inference", "jobs", "review", "http")


def service_room_faults(edges: list[Import]) -> list[str]:
    """Imports inside labelclean.service from a room to one after it in SERVICE_ROOMS."""

    def service_room(name: str) -> str | None:
        parts = name.split(".")
        return parts[2] if parts[:2] == ["labelclean", "service"] and len(parts) > 2 else None

    found = []
    for e in edges:
        source, target = service_room(e.source), service_room(e.target)
        if source in SERVICE_ROOMS and target in SERVICE_ROOMS and (
            SERVICE_ROOMS.index(target) > SERVICE_ROOMS.index(source)
        ):  # fmt: skip
            found.append(f"{e.where} {e.source} imports {e.target}: service/{source} may not "
                         f"import service/{target}")  # fmt: skip
    return found


def source_files(root: Path = ROOT) -> list[Path]:
    folders = {*package_dirs(root).values(), *(root / f for f in OTHER_SOURCE_FOLDERS)}
    files = {p for folder in folders for p in folder.rglob("*.py") if "__pycache__" not in p.parts}
    return sorted(files)


def long_files(files: list[Path], root: Path = ROOT) -> list[str]:
    found = []
    for path in files:
        n = len(path.read_text().splitlines())
        if n > MAX_FILE_LINES:
            found.append(f"{path.relative_to(root)}:1 has {n} lines (at most {MAX_FILE_LINES})")
    return found


def long_functions(files: list[Path], root: Path = ROOT) -> list[str]:
    """Functions (and methods, nested ones too) longer than the limit, from the ``def`` line to
    the body's last line; decorators not counted."""
    found = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    found.append(f"{path.relative_to(root)}:{node.lineno} {node.name}() has {n} "
                                 f"lines (at most {MAX_FUNCTION_LINES})")  # fmt: skip
    return found


def _report(what: str, offenders: list[str]) -> str:
    return f"{len(offenders)} {what}:\n" + "\n".join(offenders)


# The tests.


def test_the_modules_are_found():
    known, edges = graph()
    assert {"labelclean.cli", "labelclean.model.bundle", "labelclean.training.run",
            "labelclean.service.http.app", "labelclean.storage"} <= known.keys()  # fmt: skip
    # relative imports resolved: model/bundle.py's "from .classes import LabelClass"
    assert any(e.source == "labelclean.model.bundle" and e.target == "labelclean.model.classes"
               for e in edges)  # fmt: skip


def test_no_import_circles():
    known, edges = graph()
    found = circles(known, edges)
    assert not found, _report("import circles", found)


def test_no_import_runs_up_a_layer():
    _, edges = graph()
    found = layer_faults(edges)
    assert not found, _report("imports against the layers", found)


def test_the_service_rooms_import_only_the_rooms_before_them():
    _, edges = graph()
    found = service_room_faults(edges)
    assert not found, _report("imports against the service's rooms", found)


def test_no_file_over_400_lines():
    found = long_files(source_files())
    assert not found, _report("files too long", found)


def test_no_function_over_80_lines():
    found = long_functions(source_files())
    assert not found, _report("functions too long", found)


def test_the_checks_find_planted_faults(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.setuptools]\npackage-dir = { "labelclean" = "lc", "labelclean.model" = "m", '
        '"labelclean.training" = "t", "labelclean.service" = "s" }\n'
    )
    files = {
        "lc/__init__.py": "",
        "lc/settings.py": "from .cli import main\n",  # base -> CLI
        "lc/cli.py": "def main():\n    from .commands import run\n",
        "lc/commands.py": "from labelclean import cli\n",  # circle with cli (function-level)
        "m/__init__.py": "",
        "m/a.py": "from ..settings import x\nfrom ..training import run\n",  # ok, then up
        "m/b.py": "def f():\n    from labelclean.service.app import app\n",  # up, in a function
        "t/__init__.py": "",
        "t/run.py": "from ..service import app\n",  # training -> service
        "s/__init__.py": "",
        # torch; the CLI, even for type hints only
        "s/app.py": (
            "import torch.nn\nimport numpy\nif TYPE_CHECKING:\n    import labelclean.commands\n"
        ),
        "s/sub/__init__.py": "",
        # two levels up; the model is fine
        "s/sub/x.py": "from .. import app\nfrom ...training.run import f\nfrom ...model import a\n",
        "s/long.py": "def f():\n" + "    pass\n" * 80 + "\n" * (MAX_FILE_LINES - 81),
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    known, edges = graph(tmp_path)
    assert "labelclean.service.sub.x" in known
    found = circles(known, edges)
    assert len(found) == 1 and found[0].startswith(
        "circle among labelclean.cli, labelclean.commands: lc/cli.py:2 labelclean.cli -> "
        "labelclean.commands, lc/commands.py:1 labelclean.commands -> labelclean.cli"
    ), found
    assert layer_faults(edges) == [
        "lc/settings.py:1 labelclean.settings imports labelclean.cli: the base layer "
        "(labelclean.settings, labelclean.limits, labelclean.storage, labelclean.api_keys) may "
        "not import "
        f"{CLI}",
        "m/a.py:2 labelclean.model.a imports labelclean.training.run: labelclean.model may not "
        "import labelclean.training",
        "m/b.py:2 labelclean.model.b imports labelclean.service.app: labelclean.model may not "
        "import labelclean.service",
        "s/app.py:1 labelclean.service.app imports torch.nn: labelclean.service may not import "
        "torch",
        "s/app.py:4 labelclean.service.app imports labelclean.commands: labelclean.service may "
        f"not import {CLI}",
        "s/sub/x.py:2 labelclean.service.sub.x imports labelclean.training.run: "
        "labelclean.service may not import labelclean.training",
        "t/run.py:1 labelclean.training.run imports labelclean.service.app: labelclean.training "
        "may not import labelclean.service",
    ]
    files = source_files(tmp_path)
    assert long_files(files, tmp_path) == []  # exactly 400 lines
    (tmp_path / "s" / "long.py").write_text((tmp_path / "s" / "long.py").read_text() + "\n")
    assert long_files(files, tmp_path) == ["s/long.py:1 has 401 lines (at most 400)"]
    assert long_functions(files, tmp_path) == ["s/long.py:1 f() has 81 lines (at most 80)"]


def test_the_service_room_check_finds_a_planted_fault(tmp_path: Path):
    (tmp_path / "pyproject.toml").write_text(
        '[tool.setuptools]\npackage-dir = { "labelclean.service" = "s" }\n'
    )
    files = {
        "s/__init__.py": "",
        "s/errors.py": "",
        "s/inference/__init__.py": "",
        "s/inference/engine.py": "from ..errors import x\nfrom ..review import summary\n",
        "s/review/__init__.py": "",
        "s/review/summary.py": "from ..jobs import files\n",
        "s/jobs/__init__.py": "",
        "s/jobs/files.py": "def f():\n    from ..http.auth import Caller\n",
        "s/http/__init__.py": "",
        "s/http/auth.py": "from ..jobs.files import f\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    _, edges = graph(tmp_path)
    assert service_room_faults(edges) == [
        "s/inference/engine.py:2 labelclean.service.inference.engine imports "
        "labelclean.service.review.summary: service/inference may not import service/review",
        "s/jobs/files.py:2 labelclean.service.jobs.files imports labelclean.service.http.auth: "
        "service/jobs may not import service/http",
    ]
