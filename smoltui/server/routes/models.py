"""``/api/models``: the model this server answers with (loaded once, shared by every client), and
the model files it can find."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request

from smoltui.server.errors import ApiError
from smoltui.server.routes import core_of

if TYPE_CHECKING:
    from smoltui.core import Core

router = APIRouter(prefix="/api/models", tags=["models"])


def model_info(core: Core) -> dict[str, Any]:
    model = core.model
    backend = model.backend
    ready = model.ready.is_set()
    return {
        "label": model.label,
        "name": backend.model_name if backend is not None else None,
        "backend": backend.name if backend is not None else None,
        "ready": ready,
        "loading": not ready and not model.settled,
        "error": model.load_error,
        "context_size": backend.context_size if backend is not None and ready else None,
        "busy": model.holder,
    }


@router.get("", summary="The loaded model and the models on disk")
async def models(request: Request) -> dict[str, Any]:
    core = core_of(request)
    from smoltui.backends.models import list_models

    search = [core.paths.models_dir, *(Path(p) for p in core.config.model.search_paths)]
    found = await asyncio.to_thread(list_models, search)  # walks folders and the HF cache
    return {"model": model_info(core), "available": [dict(m.__dict__) for m in found]}


@router.post("/load", summary="Load the model now (it loads on first use otherwise)")
async def load(request: Request) -> dict[str, Any]:
    core = core_of(request)
    if not await core.model.load():
        raise ApiError(503, f"the model cannot be loaded: {core.model.load_error}", "model_unavailable")
    return model_info(core)
