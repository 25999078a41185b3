"""``GET /health``: the server answers; its version, pid, home, transport and model."""

from __future__ import annotations

import os
import time
from typing import Any

from fastapi import APIRouter, Request

from smoltui import __version__
from smoltui.server.guards import came_over_socket
from smoltui.server.routes import server_state
from smoltui.server.routes.models import model_info

router = APIRouter(tags=["health"])


@router.get("/health", summary="The server is up")
async def health(request: Request) -> dict[str, Any]:
    state = server_state(request)
    core = state.core
    transport = "unix" if came_over_socket(request.scope, getattr(request.app.state, "socket_path", None)) else "tcp"
    return {
        "status": "ok",
        "version": __version__,
        "pid": os.getpid(),
        "home": str(core.paths.data_dir),
        "uptime_s": round(time.time() - state.started_at, 3),
        "transport": transport,
        "model": model_info(core),
        "runs_active": sorted(run_id for run_id in core.runs.active if core.runs.is_running(run_id)),
        "approvals_waiting": len(core.gate.waiting()),
    }
