"""The one model of a core: loaded once, on first need, and shared by chats, workflow runs and the
planner, one generation at a time.

Loading publishes :class:`ModelLoading` then :class:`ModelReady` or :class:`ModelFailed` on the
core's bus. :meth:`Model.turn` is the queue in front of the model: whoever holds it generates,
everyone else waits in arrival order (``asyncio.Lock`` wakes waiters first come, first served).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from smoltui.backends.base import Backend, LoadProgress
from smoltui.errors import BackendError, ModelError, SmoltuiError
from smoltui.orchestrator.events import ModelFailed, ModelLoading, ModelReady, Publisher


class Model:
    def __init__(self, backend: Backend | None, bus: Publisher, *, label: str, error: SmoltuiError | None = None) -> None:
        """
        Args:
            backend: the runtime, not loaded yet; None when no model could be resolved.
            label: what to call the model before it is loaded (the status bar shows it).
            error: why there is no backend (a missing model file, a runtime not installed).
        """
        self.backend = backend
        self.bus = bus
        self.label = label
        self.ready = asyncio.Event()
        self._settled = asyncio.Event()
        self._loading: asyncio.Task[bool] | None = None
        self.load_exception: SmoltuiError | None = error
        self._lock = asyncio.Lock()
        self.holder: str | None = None
        if backend is None:
            self._settled.set()

    @property
    def available(self) -> bool:
        """A backend exists (it may still fail to load)."""
        return self.backend is not None

    @property
    def load_error(self) -> str | None:
        return str(self.load_exception) if self.load_exception is not None else None

    @property
    def settled(self) -> bool:
        return self._settled.is_set()

    async def load(self) -> bool:
        """Load the backend once (every caller awaits the same load); False when it failed."""
        if self.backend is None:
            return False
        if self._loading is None:
            self._loading = asyncio.ensure_future(self._load(self.backend))
        return await asyncio.shield(self._loading)

    async def _load(self, backend: Backend) -> bool:
        loop = asyncio.get_running_loop()

        def progress(update: LoadProgress) -> None:
            # Called from the loading thread: hop back onto the loop before publishing.
            loop.call_soon_threadsafe(self.bus.publish, ModelLoading(update.fraction, update.message))

        started = time.perf_counter()
        self.bus.publish(ModelLoading(0.0, f"loading {backend.model_name}"))
        try:
            await backend.load(progress)
        except SmoltuiError as error:
            self.load_exception = error  # its class keeps the exit code (a network error is not a model's)
        except Exception as error:  # a runtime's own exception: one line, never a traceback
            self.load_exception = ModelError(f"the model failed to load: {type(error).__name__}: {error}")
        if self.load_exception is not None:
            self._settled.set()
            self.bus.publish(ModelFailed(str(self.load_exception)))
            return False
        self.ready.set()
        self._settled.set()
        self.bus.publish(ModelReady(backend.model_name, backend.name, backend.context_size,
                                    time.perf_counter() - started))
        return True

    async def loaded(self) -> Backend:
        """The backend, loading it if nobody has yet; BackendError (or the load's own error) if it
        cannot be had."""
        if self.backend is None:
            raise self.load_exception or ModelError("no model is available")
        if not await self.load():
            raise self.load_exception or BackendError("the model is not loaded")
        return self.backend

    @contextlib.asynccontextmanager
    async def turn(self, holder: str) -> AsyncIterator[Backend]:
        """Hold the model for one generation; ``holder`` names who (a chat, a task, the planner)."""
        backend = await self.loaded()
        async with self._lock:
            self.holder = holder
            try:
                yield backend
            finally:
                self.holder = None

    async def close(self) -> None:
        if self.backend is None:
            return
        if self._loading is not None and not self._loading.done():
            with contextlib.suppress(BaseException):
                await self._loading
        await self.backend.close()
