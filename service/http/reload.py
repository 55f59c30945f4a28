"""POST /model/reload: serve the bundle now at LABELCLEAN_MODEL (a new one put there, e.g. a
symlink switched to a retrained bundle) without a restart and without dropping requests.

    curl -X POST -H "Authorization: Bearer $KEY" http://127.0.0.1:8000/model/reload
    {"path": "...", "sha256": "...", "previous_sha256": "...", "changed": true,
     "model_version": "labelclean-<sha256[:12]>"}

The inference process loads and warms up the new bundle beside the one in service, then sends new
requests to it; requests under way finish on the old one (service.inference.engine). Every HTTP
process (all workers of `serve --workers N`) then shows the new bundle in GET /model, and Label
Studio gets a new model_version at its next /label-studio/setup, so it predicts again. A bundle that
does not load is a 409 ``bundle_rejected`` and the old one goes on serving; the same bundle again
changes nothing (``changed`` false), so the call can be repeated. Needs an API key when the server
has keys, one of LABELCLEAN_ADMIN_KEYS when those are named (else 403). SIGHUP to the ``labelclean
serve`` process does the same without a caller (service.inference.process; its log says what
happened).
"""

from __future__ import annotations

import json

from fastapi import APIRouter, Depends

from ..errors import ErrorBody, error_responses
from ..review.label_studio.predictions import model_version
from .auth import require_admin
from .schemas import ReloadResponse
from .state import State

router = APIRouter(tags=["model"], dependencies=[Depends(require_admin)])
REJECTED = {
    "model": ErrorBody,
    "description": "The bundle at LABELCLEAN_MODEL did not load (bundle_rejected): the one in "
    "service goes on serving",
}


@router.post(
    "/model/reload", summary="Serve the bundle now at LABELCLEAN_MODEL (no restart, no request "
    "dropped)", responses={**error_responses(401, 403), 409: REJECTED, **error_responses(503)},
)  # fmt: skip
async def reload_model(state: State) -> ReloadResponse:
    """Load the bundle at LABELCLEAN_MODEL again and serve it: the same bundle again changes
    nothing; one that does not load is refused and the one in service answers on."""
    answer = json.loads(await state.backend.request("reload", [], [], {}))
    await state.use_bundle(answer["path"], answer["sha256"])
    return ReloadResponse(**answer, model_version=model_version(answer["sha256"]))
