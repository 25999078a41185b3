"""One module per resource of the API; each has a ``router``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Request

if TYPE_CHECKING:
    from smoltui.core import Core
    from smoltui.server.state import ServerState


def server_state(request: Request) -> ServerState:
    return request.app.state.smoltui


def core_of(request: Request) -> Core:
    return request.app.state.smoltui.core
