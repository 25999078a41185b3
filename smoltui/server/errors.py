"""The errors of the server and of its clients: plain :class:`SmoltuiError` subclasses (no FastAPI),
so the client and the command line share them with the app."""

from __future__ import annotations

from smoltui.errors import SmoltuiError


class ServeError(SmoltuiError):
    """The server cannot start or be reached as asked (one running already, an unsafe socket folder)."""

    exit_code = 9


class ApiError(SmoltuiError):
    """A request the API refuses: its status code, a short ``type`` and a message a person can act on.

    The app turns it into ``{"error": {"type": ..., "message": ...}}``; the client raises it back
    from such a body.
    """

    exit_code = 10

    def __init__(self, status: int, message: str, type: str = "bad_request") -> None:  # noqa: A002
        super().__init__(message)
        self.status = status
        self.type = type


def not_found(message: str) -> ApiError:
    return ApiError(404, message, "not_found")


def conflict(message: str) -> ApiError:
    return ApiError(409, message, "conflict")


def bad_request(message: str) -> ApiError:
    return ApiError(400, message, "bad_request")


def unprocessable(message: str) -> ApiError:
    return ApiError(422, message, "invalid")


__all__ = ["ApiError", "ServeError", "bad_request", "conflict", "not_found", "unprocessable"]
