"""``smoltui serve``: one core behind HTTP, shared by terminals, scripts and browsers.

- :mod:`.app` builds the FastAPI app over a :class:`~smoltui.core.Core` (``create_app``);
  :mod:`.routes` has one module per resource, :mod:`.events` the bus as server-sent events,
  :mod:`.openai_compat` the OpenAI-compatible ``/v1`` endpoints, :mod:`.guards` the bearer token
  and the body cap.
- :mod:`.lifecycle` runs it (the socket, the lock, the token, uvicorn) for ``smoltui serve``.
- :mod:`.client` is the typed client every other front end uses to talk to a running server;
  :mod:`.locations` says where a home's server listens. Neither imports FastAPI.

Nothing here is imported by ``smoltui --help``; FastAPI and uvicorn load only when a server starts.
"""
