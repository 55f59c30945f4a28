"""The one settings object of the service (and of the workers and the offline CLI).

Every field can be set from a ``LABELCLEAN_<NAME>`` environment variable, e.g.
``LABELCLEAN_MODEL=demo/run/bundle LABELCLEAN_DEVICE=cuda``; an empty variable means the default
(so docker-compose can pass ``${LABELCLEAN_X:-}`` through). Unsafe or nonsensical values are
refused when the settings are built, so a misconfigured server stops at start-up with one line
naming the setting instead of misbehaving later. Each field's description is its documentation:
the README's settings table and docker/.env.example are generated from them
(``python -m labelclean.settings_doc``).

    settings = get_settings()                     # cached, from the environment
    settings = Settings(model="b", max_images=4)  # explicit (tests)
"""

from __future__ import annotations

import re
import shlex
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from .api_keys import ApiKey, parse_api_keys
from .limits import usable_cpus, worker_heartbeat_s
from .storage.errors import BadUri
from .storage.uris import canonical_root, safe_protocol, shown

MAX_BODY_BYTES_LIMIT = 1 << 30  # 1 GiB: more than this in one request is never reasonable
MAX_PIXELS_LIMIT = 178_956_970  # Pillow's own "certainly a decompression bomb" limit
MAX_IMAGE_BYTES = 32 << 20  # a bulk job's image: read whole, a few batches of them at a time
TRAINING_WORKER_OPTIONS = ("--data", "--human-extra", "--init", "--out", "--resume")
KNOWN_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF", "PPM", "ICO", "MPO")


class Settings(BaseSettings):
    """Service settings; each field is also the env variable LABELCLEAN_<FIELD> (upper case)."""

    model_config = SettingsConfigDict(
        env_prefix="LABELCLEAN_", extra="ignore", frozen=True, env_ignore_empty=True,
        hide_input_in_errors=True,  # a refused LABELCLEAN_API_KEYS must not print the keys
    )  # fmt: skip

    model: Path | None = Field(
        None, description="model bundle folder (model.onnx, classes.csv, bundle.json)"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto",
        description="auto = CUDA when ONNX Runtime can use it, else CPU; cuda = demand CUDA: "
        "not ready (and a worker stops) without it",
    )  # fmt: skip
    host: str = Field("127.0.0.1", description="address to listen on (0.0.0.0 in containers)")
    port: int = Field(8000, ge=1, le=65535, description="port to listen on")
    workers: int = Field(
        1, ge=1, le=64,
        description="uvicorn worker processes; they share one inference process (one model, "
        "one batcher) and pool their metrics",
    )  # fmt: skip
    inference_socket: Path | None = Field(
        None,
        description="the unix socket of the shared inference process, set by "
        "`serve --workers N` for its workers (never set it yourself)",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="log level (warning drops uvicorn's access log)"
    )
    docs: bool = Field(
        True,
        description="serve Swagger UI at /docs and the API contract (openapi.yaml) at "
        "/openapi.json, both without a key (with one, /openapi.json is the contract narrowed to "
        "this server: its label ids, limits, storage roots); false = no schema exposed",
    )

    # Dynamic batching.
    max_batch_size: int = Field(32, ge=1, le=1024, description="images per ONNX Runtime run")
    max_queue_delay_ms: float = Field(
        5.0, ge=0, le=1000, description="longest an image waits for others to join its batch"
    )
    max_queue_images: int = Field(
        2048, ge=1, le=1_000_000, description="images waiting or decoding before requests get 503"
    )
    decode_threads: int = Field(
        0, ge=0, le=64,
        description="threads that decode and resize; 0 = one per CPU this process may use, "
        "2 to 16 (Pillow lets go of the GIL while it decodes, so they run in parallel)",
    )  # fmt: skip
    inference_threads: int = Field(
        0, ge=0, le=256,
        description="ONNX Runtime intra-op threads; 0 = its default, one per core (1 can suit "
        "tiny models on small busy hosts, benchmarks/RESULTS.md)",
    )  # fmt: skip
    gil_switch_interval_ms: float = Field(
        0.2, gt=0, le=100,
        description="Python's thread switch interval in both service processes (its default: "
        "5 ms); shorter gives the GIL back to the event loop sooner while threads work",
    )  # fmt: skip

    # Input safety.
    max_body_bytes: int = Field(
        32 << 20, ge=1024, description="bytes per request body (at most 1 GiB)"
    )
    max_images: int = Field(32, ge=1, le=1024, description="image parts per request")
    max_pixels: int = Field(
        40_000_000, ge=1,
        description="pixels per decoded image (above Pillow's decompression-bomb limit is refused)",
    )  # fmt: skip
    allowed_formats: Annotated[tuple[str, ...], NoDecode] = Field(
        ("JPEG", "PNG", "WEBP", "BMP", "GIF"),
        description=f"comma-separated Pillow format names, of {', '.join(KNOWN_FORMATS)}",
    )

    # Access.
    api_keys: Annotated[tuple[SecretStr, ...], NoDecode] = Field(
        (),
        description="comma-separated keys of at least 16 characters, each `name:KEY` or `KEY` "
        "(named `key-` + a short hash of itself); when set, every endpoint but /healthz, /docs "
        "and /openapi.json needs `Authorization: Bearer <KEY>`, and each key sees only the "
        "jobs it created",
    )
    admin_keys: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="comma-separated names of API keys (`name:KEY` entries of API_KEYS) that "
        "may change what every team gets: POST /model/reload and Label Studio's Start Training "
        "(other keys get 403); unset = every key may (one team's deployment)",
    )

    # Bulk jobs (Redis queue, workers) and storage.
    redis_url: str = Field(
        "redis://127.0.0.1:6379/0", description="Redis holding the job queue and job state"
    )
    storage_roots: Annotated[tuple[str, ...], NoDecode] = Field(
        (),
        description="comma-separated URI prefixes that every job URI (images, labels, output) "
        "and every file a job writes must lie under, e.g. "
        "`file:///buckets/,s3://uploads/,s3://cleaned/` (`s3://bucket/` allows the whole "
        "bucket; prefixes match whole path segments); checked on the canonical location "
        "(protocol aliases and case, `//`, `.`, `..`, percent-encoding, local symlinks); "
        "empty, and no FILE_ROOTS = every job URI refused (the offline `labelclean clean` "
        "allows any)",
    )
    file_roots: Annotated[tuple[Path, ...], NoDecode] = Field(
        (),
        description="comma-separated absolute folders: the file:// part of STORAGE_ROOTS under "
        "its older name; both given, the roots are their union",
    )
    storage_protocols: Annotated[tuple[str, ...], NoDecode] = Field(
        ("file", "s3"),
        description="URI schemes jobs may use, of those known to be safe: file, s3 (s3a), "
        "gcs (gs; with gcsfs installed), az (abfs; with adlfs); http(s), memory, chained URLs "
        "(a::b) and any other are refused at start-up",
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3 endpoint for MinIO, Ceph or moto (default: AWS)"
    )
    job_chunk_size: int = Field(
        1000, ge=1, le=100_000, description="images per chunk: the unit a worker takes"
    )
    job_max_chunk_size: int = Field(
        10_000, ge=1, le=100_000,
        description="the largest `options.chunk_size` a job may ask for (422 above it): a chunk "
        "is held by one worker and its results written whole",
    )  # fmt: skip
    max_image_bytes: int = Field(
        MAX_IMAGE_BYTES, ge=1024, le=MAX_BODY_BYTES_LIMIT,
        description="bytes of one image of a bulk job (at most 1 GiB); a bigger one is refused "
        "before it is read, a line of errors.csv",
    )  # fmt: skip
    job_max_tries: int = Field(
        3, ge=1, le=100, description="tries of a chunk before it goes to the dead-letter stream"
    )
    job_claim_idle_s: float = Field(
        60.0, gt=0, le=86_400,
        description="a chunk held this long by a silent worker is reclaimed by another",
    )  # fmt: skip
    job_chunk_wall_s: float = Field(
        3600.0, ge=0, le=7 * 86_400,
        description="a chunk held this long by one worker is given to another even while the "
        "holder heartbeats (a stuck read); the holder's late result is dropped, and each such "
        "handover counts as a try; 0 = no limit",
    )  # fmt: skip
    job_stale_s: int = Field(
        3600, ge=0,
        description="a queued or running job fails after this long with no live worker "
        "(none beat or left) and no progress, and its output is free again; 0 = never (e.g. "
        "workers scaled to zero while jobs wait); at least three worker heartbeats",
    )  # fmt: skip
    job_retention_s: int = Field(
        7 * 86_400, ge=1,
        description="how long finished jobs stay in Redis: then they leave GET /jobs and "
        "every index",
    )  # fmt: skip
    worker_batch_size: int = Field(32, ge=1, le=1024, description="images per ONNX run, worker")

    # Label Studio (its ML backend under /label-studio).
    label_studio_url: str | None = Field(
        None,
        description="Label Studio's address as the service reaches it (e.g. "
        "`http://label-studio:8080`): task images on Label Studio (uploads, local files) are "
        "fetched from there",
    )
    label_studio_token: SecretStr | None = Field(
        None,
        description="a Label Studio access token (legacy API token, or a personal access "
        "token) for reading task images from LABEL_STUDIO_URL",
    )
    label_studio_reviews: str | None = Field(
        None,
        description="folder or bucket URI (`file:///data/reviews/`, `s3://bucket/reviews/`) "
        "where the /label-studio/webhook keeps reviews as human-verified labels (labels/*.csv, "
        "Open Images format); unset = reviews are not kept",
    )

    # Retraining jobs (Label Studio's "Start Training"; `labelclean train-worker` runs them).
    training_data: Path | None = Field(
        None,
        description="the training data folder (Open Images layout, as `labelclean train --data` "
        "reads it) on the machines of `labelclean train-worker`: set, Label Studio's \"Start "
        'Training" queues a retraining job in Redis (reviews joined to V, continued from the '
        "model in service); unset = it starts nothing and answers the commands that retrain",
    )
    training_runs: Path | None = Field(
        None,
        description="folder where `labelclean train-worker` writes each retraining job's run "
        "(RUNS/<job id>/: reviews.csv, train.log, run/ with the new bundle)",
    )
    training_args: str = Field(
        "",
        description="more options for the retraining's `labelclean train` (e.g. `--epochs 3 "
        "--device cuda`), split as a shell would",
    )

    @field_validator("allowed_formats", mode="before")
    @classmethod
    def _split_formats(cls, value: object) -> object:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if isinstance(value, list | tuple):
            formats = tuple(str(v).strip().upper() for v in value)
            unknown = sorted(set(formats) - set(KNOWN_FORMATS))
            if unknown:
                raise ValueError(f"unknown image format(s) {unknown}; known: {KNOWN_FORMATS}")
            if not formats:
                raise ValueError("at least one image format must be allowed")
            return formats
        return value

    @field_validator(
        "storage_roots", "file_roots", "storage_protocols", "admin_keys", mode="before"
    )
    @classmethod
    def _split_list(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(v.strip() for v in value.split(",") if v.strip())
        return value

    @field_validator("storage_roots")
    @classmethod
    def _safe_roots(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        """Each root a URI prefix of a safe protocol with a canonical form; an error names the
        entry with any user-info masked (a URI may carry credentials)."""
        for n, root in enumerate(value, 1):
            try:
                canonical_root(root)
            except BadUri as exc:
                raise ValueError(f"entry {n} ({shown(root)}): {exc.reason}") from None
        return value

    @field_validator("file_roots")
    @classmethod
    def _absolute_roots(cls, value: tuple[Path, ...]) -> tuple[Path, ...]:
        for n, root in enumerate(value, 1):
            if not root.is_absolute():
                raise ValueError(f"entry {n} ({shown(str(root))}): not an absolute folder")
        return value

    @field_validator("storage_protocols")
    @classmethod
    def _safe_protocols(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        """Each protocol one known to be safe (canonical names: s3a is s3); an error names it
        (a protocol name holds no secret: anything else is named by its position)."""
        found = []
        for n, name in enumerate(value, 1):
            try:
                found.append(safe_protocol(name))
            except BadUri as exc:
                plain = re.fullmatch(r"[A-Za-z0-9+.:-]{1,40}", name)
                label = f"entry {n} ({name!r})" if plain else f"entry {n}"
                raise ValueError(f"{label}: {exc.reason}") from None
        return tuple(dict.fromkeys(found))

    @field_validator("api_keys", mode="before")
    @classmethod
    def _split_keys(cls, value: object) -> object:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list | tuple):
            keys = [v.get_secret_value() if isinstance(v, SecretStr) else str(v) for v in value]
            parse_api_keys(keys)  # ValueError naming the key's name, never the key
            return tuple(SecretStr(k) for k in keys)
        return value

    @field_validator("label_studio_url")
    @classmethod
    def _label_studio_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/@\s]+(/\S*)?$", value):
            raise ValueError("an http:// or https:// address without credentials is needed")
        return value.rstrip("/") if value else value

    @field_validator("label_studio_reviews")
    @classmethod
    def _reviews_uri(cls, value: str | None) -> str | None:
        if value:
            try:
                canonical_root(value)
            except BadUri as exc:
                raise ValueError(f"{shown(value)}: {exc.reason}") from None
        return value

    @field_validator("training_args")
    @classmethod
    def _training_args(cls, value: str) -> str:
        try:
            words = shlex.split(value)
        except ValueError as exc:
            raise ValueError(f"not split as a shell would: {exc}") from None
        taken = sorted({w.split("=")[0] for w in words} & set(TRAINING_WORKER_OPTIONS))
        if taken:
            raise ValueError(f"{', '.join(taken)}: set by the training worker for each job")
        return value

    @field_validator("max_body_bytes")
    @classmethod
    def _body_cap(cls, value: int) -> int:
        if value > MAX_BODY_BYTES_LIMIT:
            raise ValueError(f"max_body_bytes above {MAX_BODY_BYTES_LIMIT} (1 GiB) is unsafe")
        return value

    @field_validator("max_pixels")
    @classmethod
    def _pixel_cap(cls, value: int) -> int:
        if value > MAX_PIXELS_LIMIT:
            raise ValueError(f"max_pixels above {MAX_PIXELS_LIMIT} would allow decompression bombs")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        if self.max_queue_images < self.max_images:
            raise ValueError("max_queue_images must be at least max_images")
        if self.job_max_chunk_size < self.job_chunk_size:
            raise ValueError("job_max_chunk_size must be at least job_chunk_size")
        if self.admin_keys and self.api_keys:  # without keys there is no one to tell apart
            names = {k.name for k in self.named_keys}
            unknown = [n for n in self.admin_keys if n not in names]
            if unknown:
                raise ValueError(
                    f"admin_keys names {', '.join(unknown)}: not the name of any API key "
                    f"(API_KEYS names: {', '.join(sorted(names))})"
                )
        beats = 3 * worker_heartbeat_s(self.job_claim_idle_s)
        if 0 < self.job_stale_s < beats:
            raise ValueError(
                f"job_stale_s must be 0 or at least {beats:g} s (three worker heartbeats, "
                "job_claim_idle_s / 3 each, at most 5 s): a live worker would look gone"
            )
        return self

    @cached_property
    def named_keys(self) -> tuple[ApiKey, ...]:
        """The API keys with their names (auth compares them in constant time); computed once."""
        return parse_api_keys([k.get_secret_value() for k in self.api_keys])

    def env(self) -> dict[str, str]:
        """These settings as LABELCLEAN_* variables (how `serve` hands them to worker processes)."""
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if value is None:
                continue
            if name == "api_keys":
                value = ",".join(k.get_secret_value() for k in value)
            elif isinstance(value, SecretStr):
                value = value.get_secret_value()
            elif isinstance(value, tuple):
                value = ",".join(map(str, value))
            out[f"LABELCLEAN_{name.upper()}"] = str(value)
        return out


@lru_cache
def get_settings() -> Settings:
    """The settings from the environment, built once (FastAPI dependency; tests override it)."""
    return Settings()


def decode_threads(settings: Settings) -> int:
    """``settings.decode_threads``, or for 0 one per usable CPU, at least 2 and at most 16."""
    return settings.decode_threads or min(16, max(2, usable_cpus()))
