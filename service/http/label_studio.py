"""The ML backend routes Label Studio calls (its label_studio_ml/api.py protocol), under
/label-studio: give Label Studio ``http://HOST:PORT/label-studio`` as the model's URL.

    GET  /health    {"status": "UP", "model_class": "labelclean"}
    POST /setup     {"project": "3.1712345678", "schema": CONFIG, ...} -> {"model_version": ...}
    POST /predict   {"tasks": [...], "label_config": CONFIG, ...} -> {"results": [one per task]}
    POST /webhook   {"action": ..., "project": {...}, "annotation"/"annotations", "task"/"tasks"}

With LABELCLEAN_API_KEYS set, every route needs a key, sent as ``Authorization: Bearer KEY`` or
as Label Studio's basic auth (the ML backend's "Basic Authentication" settings: any user name,
an API key as the password). Label Studio's webhook for the backend is created without either:
give it the header ``Authorization: Bearer KEY`` (Project settings, Webhooks).

/predict answers one prediction per task, in order (``predictions.prediction``): each task's
image (``images``) and its machine labels (data ``noisy_labels``, as ``labelclean review``
exports them; none: every label is the model's to add) are cleaned by the inference process as
/clean cleans them. A task whose image cannot be read gets ``{"error": ...}`` in its place, which
Label Studio skips. The webhook turns annotations into human-verified labels (``reviews``).
START_TRAINING (Label Studio's "Start Training") queues a retraining job for `labelclean
train-worker` where LABELCLEAN_TRAINING_DATA is set, else answers the commands that retrain
(``training``); GET /training/{job} says how a job goes.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
from typing import Any

from fastapi import APIRouter, Request

from ...model.bundle import Bundle
from ...storage import Storage
from ..errors import InvalidInput, Unauthorized
from ..jobs.owners import ANONYMOUS, Caller
from ..review.label_studio.config import ProjectConfig
from ..review.label_studio.images import ImageUnavailable, TaskImages
from ..review.label_studio.predictions import model_version, prediction
from ..review.label_studio.reviews import ReviewStore, read_annotation
from .auth import check_admin, matching_key
from .label_studio_training import start_training, training_job, training_jobs
from .state import ServiceState

log = logging.getLogger("labelclean.service")
router = APIRouter(prefix="/label-studio", tags=["label-studio"])
ANNOTATION_EVENTS = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED", "ANNOTATIONS_CREATED")
DELETE_EVENTS = ("ANNOTATION_DELETED", "ANNOTATIONS_DELETED")
NOISY_KEY = "noisy_labels"  # task data: the machine's labels, as /clean's labels field


def authorize(request: Request) -> Caller:
    """Who calls; 401 unless keys are off, or the request carries one as Bearer or as basic
    auth's password."""
    keys = request.app.state.settings.named_keys
    if not keys:
        return ANONYMOUS
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    given = b""
    if scheme.lower() == "bearer":
        given = value.strip().encode()
    elif scheme.lower() == "basic":
        try:
            given = base64.b64decode(value.strip(), validate=True).partition(b":")[2]
        except (binascii.Error, ValueError):
            given = b""
    key = matching_key(given, keys) if given else None
    if key is None:
        error = Unauthorized("missing or invalid API key (Bearer, or basic auth's password)")
        error.headers = {"WWW-Authenticate": 'Basic realm="labelclean", Bearer'}
        raise error
    return Caller(key.name, key.secret)


class LabelStudio:
    """What the routes share: the task image reader and the review store (and its lock)."""

    def __init__(self, state: ServiceState) -> None:
        settings = state.settings
        self.images = TaskImages(settings)
        self.store: ReviewStore | None = None
        if settings.label_studio_reviews and state.bundle is not None:
            storage = Storage(
                roots=None, protocols=settings.storage_protocols,
                s3_endpoint_url=settings.s3_endpoint_url,
            )  # fmt: skip
            self.store = ReviewStore(storage, settings.label_studio_reviews, state.bundle.classes)
        self.lock = asyncio.Lock()


def _shared(request: Request) -> tuple[ServiceState, LabelStudio]:
    authorize(request)
    return _context(request)


def _context(request: Request) -> tuple[ServiceState, LabelStudio]:
    """What the routes share, for a caller already authorized."""
    state: ServiceState = request.app.state.service
    shared = getattr(request.app.state, "label_studio", None)
    if shared is None:
        shared = request.app.state.label_studio = LabelStudio(state)
    return state, shared


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body())
    except ValueError:
        raise InvalidInput("the body is not JSON", code="invalid_json") from None
    if not isinstance(body, dict):
        raise InvalidInput("the body must be a JSON object")
    return body


def _bundle(state: ServiceState) -> Bundle:
    state.require_ready()
    assert state.bundle is not None
    return state.bundle


@router.get("/health")
@router.get("/")
async def health(request: Request) -> dict[str, str]:
    """Label Studio's connection check: up while the service is (the model may still load)."""
    _shared(request)
    return {"status": "UP", "model_class": "labelclean"}


@router.post("/setup")
async def setup(request: Request) -> dict[str, str]:
    """The project's labeling config (``schema``) checked against the model's classes; the
    answer's ``model_version`` is the bundle's id."""
    state, _ = _shared(request)
    body = await _json(request)
    bundle = _bundle(state)
    try:
        ProjectConfig.parse(str(body.get("schema") or ""), bundle.classes)
    except Exception as exc:
        log.warning("Label Studio project %s: %s", str(body.get("project"))[:40], exc)
        raise
    return {"model_version": model_version(bundle.sha256)}


def _noisy(data: dict[str, Any], index: dict[str, int]) -> list[dict[str, Any]]:
    """The task's machine labels the model knows, as /clean's labels (others are dropped, and
    so is a confidence of 0: not listed)."""
    given = data.get(NOISY_KEY) or []
    if isinstance(given, str):
        try:
            given = json.loads(given)
        except ValueError:
            given = []
    found = []
    for item in given if isinstance(given, list) else []:
        label, confidence = (item.get("label"), item.get("confidence", 1)) if isinstance(
            item, dict) else (item, 1)  # fmt: skip
        number = isinstance(confidence, int | float)
        if isinstance(label, str) and label in index and number and confidence > 0:
            found.append({"label": label, "confidence": min(1.0, float(confidence))})
    return found


async def _read_all(images: TaskImages, tasks: list[dict[str, Any]], key: str) -> list[Any]:
    async def one(task: dict[str, Any]) -> Any:
        try:
            return await images.read((task.get("data") or {}).get(key))
        except ImageUnavailable as exc:
            return exc

    return await asyncio.gather(*(one(t) for t in tasks))


@router.post("/predict")
async def predict(request: Request) -> dict[str, Any]:
    """One prediction per task, in order: the final label set as the project's choices,
    ``score`` the review priority, ``mislabeling`` the highest issue score."""
    state, shared = _shared(request)
    body = await _json(request)
    bundle = _bundle(state)
    tasks = body.get("tasks")
    if not isinstance(tasks, list) or not all(isinstance(t, dict) for t in tasks):
        raise InvalidInput("tasks must be a list of Label Studio tasks", field="tasks")
    config = ProjectConfig.parse(str(body.get("label_config") or ""), bundle.classes)
    choices = {bundle.classes[k].id: v for k, v in zip(config.classes, config.choices,
                                                        strict=True)}  # fmt: skip
    version = model_version(bundle.sha256)
    results: list[dict[str, Any]] = []
    step = state.settings.max_images
    for start in range(0, len(tasks), step):
        chunk = tasks[start : start + step]
        read = await _read_all(shared.images, chunk, config.image_key)
        good = [i for i, r in enumerate(read) if isinstance(r, bytes)]
        found: dict[int, dict[str, Any]] = {}
        if good:
            labels = [_noisy(chunk[i].get("data") or {}, bundle.index) for i in good]
            answer = await state.require_ready().request(
                "review", [read[i] for i in good], [None] * len(good), {"labels": labels}
            )
            answered = json.loads(answer)
            version = model_version(answered["sha256"])  # the bundle that answered
            found = {good[r["index"]]: r for r in answered["results"]}
        for i, task in enumerate(chunk):
            one = found.get(i)
            if one is None or "error" in one:
                why = str(read[i]) if i not in found else one["error"]  # type: ignore[index]
                log.warning("Label Studio task %s: no prediction: %s", task.get("id"), why)
                results.append({"error": why, "model_version": version})
                continue
            results.append(prediction(
                one, choices=choices, from_name=config.from_name, to_name=config.to_name,
                version=version, key=f"lc{task.get('id', start + i)}",
            ))  # fmt: skip
    return {"results": results, "model_version": version}


def _pairs(body: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(annotation, task) of an annotation event, one or many (ANNOTATIONS_CREATED)."""
    annotations, tasks = body.get("annotation"), body.get("task")
    if isinstance(annotations, dict):
        annotations, tasks = [annotations], [tasks]
    if not isinstance(annotations, list) or not isinstance(tasks, list):
        raise InvalidInput("an annotation event needs its annotation and task", field="annotation")
    by_id = {t.get("id"): t for t in tasks if isinstance(t, dict)}
    pairs = []
    for a in annotations:
        task = by_id.get(a.get("task")) or (tasks[0] if len(tasks) == 1 else None)
        if isinstance(a, dict) and isinstance(task, dict):
            pairs.append((a, task))
    return pairs


def _apply(store: ReviewStore, action: str, body: dict[str, Any], project: dict[str, Any],
           bundle: Bundle) -> dict[str, int]:  # fmt: skip
    """The event's effect on the store (in a thread: storage calls block)."""
    pid = int(project.get("id") or 0)
    store.classes = bundle.classes  # the bundle in service (it may have been reloaded)
    if action in DELETE_EVENTS:
        gone = body.get("annotations") or [body.get("annotation") or {}]
        withdrawn = sum(store.withdraw(pid, int(a["id"])) for a in gone if a.get("id"))
        return {"withdrawn": withdrawn}
    config = ProjectConfig.parse(str(project.get("label_config") or ""), bundle.classes)
    saved = withdrawn = 0
    for annotation, task in _pairs(body):
        review = read_annotation(annotation, task, config, pid)
        if review is None:  # skipped: verifies nothing
            withdrawn += store.withdraw(pid, int(annotation["id"]), int(task["id"]))
        else:
            store.save(review)
            saved += 1
    return {"saved": saved, "withdrawn": withdrawn}


@router.post("/webhook")
async def webhook(request: Request) -> dict[str, Any]:
    """Annotations created, edited or deleted become, change or withdraw verified labels;
    START_TRAINING queues a retraining where the deployment allows it (``training``); other
    events ignored."""
    caller = authorize(request)
    state, shared = _context(request)
    body = await _json(request)
    action = str(body.get("action") or "")
    project = body.get("project") if isinstance(body.get("project"), dict) else {}
    if action == "START_TRAINING":
        check_admin(state.settings.admin_keys, caller, "Label Studio's Start Training")
        return await start_training(request, project)
    if action not in ANNOTATION_EVENTS + DELETE_EVENTS:
        return {"status": "ignored", "action": action[:40]}
    if shared.store is None:
        log.warning("Label Studio %s not kept: LABELCLEAN_LABEL_STUDIO_REVIEWS is not set", action)
        return {"status": "ignored", "reason": "LABELCLEAN_LABEL_STUDIO_REVIEWS is not set"}
    bundle = _bundle(state)
    async with shared.lock:
        result = await asyncio.to_thread(_apply, shared.store, action, body, project, bundle)
    return {"status": "ok", "result": result}


@router.get("/training/{job_id}")
async def training(request: Request, job_id: str) -> dict[str, Any]:
    """A retraining job START_TRAINING queued: state (queued, running, succeeded, failed), its
    run and new bundle, the run's figures, or why it failed."""
    _shared(request)
    return await training_job(request, job_id)


@router.get("/training")
async def trainings(request: Request) -> dict[str, Any]:
    """The newest retraining jobs, newest first."""
    _shared(request)
    return await training_jobs(request)
