"""docker/docker-compose.yml, docker/.env.example and the Dockerfiles read as docker reads them,
without docker: YAML with its merge keys (PyYAML), ``${VAR:-default}`` interpolation, Dockerfile
stages and instructions."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE_FILE = DOCKER / "docker-compose.yml"
REDIS_PUBLISHED = DOCKER / "redis-published.yml"  # an override: -f docker-compose.yml -f this
ENV_EXAMPLE = DOCKER / ".env.example"
DOCKERFILES = {"cpu": DOCKER / "Dockerfile", "gpu": DOCKER / "Dockerfile.gpu"}


def load_compose(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


class MissingVariable(ValueError):
    """``${VAR:?message}`` with VAR unset or empty (``${VAR?message}``: unset): compose refuses
    to run and prints the message."""


# Compose's interpolation: $$ is a dollar; ${VAR}, ${VAR:-default} (unset or empty -> default),
# ${VAR-default} (unset -> default), ${VAR:?message} (unset or empty -> an error),
# ${VAR?message} (unset -> an error); $VAR.
VARIABLE = re.compile(
    r"\$\$|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<default>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)"
)


def interpolate(value: Any, variables: dict[str, str]) -> Any:
    """``value`` (a string, or lists and mappings of them) with the variables substituted;
    MissingVariable where a required one is missing."""
    if isinstance(value, dict):
        return {k: interpolate(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, variables) for v in value]
    if not isinstance(value, str):
        return value

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match["braced"] or match["bare"]
        given = variables.get(name)
        if match["op"] == ":-":
            return given or match["default"]
        if match["op"] == "-":
            return match["default"] if given is None else given
        if match["op"] == ":?" and not given or match["op"] == "?" and given is None:
            raise MissingVariable(f"{name}: {match['default']}")
        return given or ""

    return VARIABLE.sub(sub, value)


def references(value: Any) -> Iterator[tuple[str, str | None]]:
    """Every (variable, default or None) that ``value`` refers to (a required one: None)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield from references(k)
            yield from references(v)
    elif isinstance(value, list):
        for v in value:
            yield from references(v)
    elif isinstance(value, str):
        for match in VARIABLE.finditer(value):
            if match.group(0) != "$$":
                required = (match["op"] or "").endswith("?")  # its "default" is the message
                yield match["braced"] or match["bare"], None if required else match["default"]


def read_env_file(path: Path = ENV_EXAMPLE) -> dict[str, str]:
    """KEY=VALUE lines of a compose .env file (comments and blank lines skipped)."""
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
        assert key not in found, f"{path.name}: {key} twice"
        found[key] = value
    return found


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a mapping (compose also takes a list of KEY=VALUE)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


@dataclass
class Stage:
    name: str | None
    base: str
    instructions: list[str] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [i for i in self.instructions if i.split(None, 1)[0].upper() == keyword]

    def last(self, keyword: str) -> str:
        found = self.all(keyword)
        assert found, f"stage {self.name}: no {keyword}"
        return found[-1]


@dataclass
class Dockerfile:
    path: Path
    args: dict[str, str]  # ARGs before the first FROM, with their defaults
    stages: list[Stage]

    @property
    def text(self) -> str:
        return self.path.read_text()

    def stage(self, name: str) -> Stage:
        return next(s for s in self.stages if s.name == name)

    @property
    def default(self) -> Stage:
        """The stage `docker build` builds without --target: the last."""
        return self.stages[-1]

    def chain(self, stage: Stage) -> list[Stage]:
        """``stage`` and the stages it is built FROM, nearest first."""
        found = [stage]
        names = {s.name: s for s in self.stages if s.name}
        while found[-1].base in names:
            found.append(names[found[-1].base])
        return found

    def inherited(self, stage: Stage, keyword: str) -> list[str]:
        """The ``keyword`` instructions that make ``stage``: its bases' first, its own last (so
        the last is the one in force: USER, CMD, ENTRYPOINT, HEALTHCHECK)."""
        return [i for s in reversed(self.chain(stage)) for i in s.all(keyword)]

    def copied_from(self, stage: Stage) -> list[Stage]:
        """The stages whose files ``stage`` copies (COPY --from=NAME), with their chains."""
        found = []
        for instruction in stage.all("COPY"):
            match = re.search(r"--from=(\S+)", instruction)
            if match:
                found += self.chain(self.stage(match[1]))
        return found


def parse_dockerfile(path: Path) -> Dockerfile:
    text = re.sub(r"\\\n", " ", path.read_text())
    lines = [
        ln.strip() for ln in text.splitlines() if ln.strip() and not ln.strip().startswith("#")
    ]
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in lines:
        keyword = line.split(None, 1)[0].upper()
        if keyword == "FROM":
            match = re.match(r"FROM\s+(?:--platform=\S+\s+)?(\S+)(?:\s+AS\s+(\S+))?$", line, re.I)
            assert match, line
            stages.append(Stage(match[2], match[1]))
        elif not stages:
            assert keyword == "ARG", f"{path.name}: {line} before FROM"
            name, _, default = line.split(None, 1)[1].partition("=")
            args[name] = default
        else:
            stages[-1].instructions.append(" ".join(line.split()))
    return Dockerfile(path, args, stages)


def mounts(service: dict[str, Any], variables: dict[str, str]) -> dict[str, tuple[str, str]]:
    """A service's volumes, interpolated: container path -> (host path or volume name, mode)."""
    found = {}
    for volume in service.get("volumes", []):
        source, target, *mode = interpolate(volume, variables).split(":")
        found[target] = (source, mode[0] if mode else "rw")
    return found
