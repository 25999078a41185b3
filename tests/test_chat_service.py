import asyncio

import pytest
from tui.harness import store_fixture  # noqa: F401  (the `store` fixture)

from smoltui.backends.base import Backend, GenerationParams
from smoltui.backends.scripted import ScriptedBackend, ScriptedReply
from smoltui.errors import BackendError, ModelError
from smoltui.orchestrator.chat import ChatService, ChatSettings, split_think_flag
from smoltui.orchestrator.events import EventBus
from smoltui.orchestrator.model import Model
from smoltui.orchestrator.store import Store


def chat(backend: Backend, store: Store, settings: ChatSettings | None = None) -> ChatService:
    """A chat over ``backend`` as the core would build it: one bus, one model."""
    bus = EventBus()
    return ChatService(Model(backend, bus, label="scripted"), store, settings, bus=bus)


def record(service: ChatService) -> list:
    events: list = []
    service.bus.subscribe(events.append)
    return events


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hello /think", ("hello", True)),
        ("/no_think hello there", ("hello there", False)),
        ("/think", ("", True)),
        ("what does /think do in the middle?", ("what does /think do in the middle?", None)),
        ("path/no_think", ("path/no_think", None)),
    ],
)
def test_split_think_flag(text: str, expected: tuple) -> None:
    assert split_think_flag(text) == expected


async def test_reply_is_streamed_and_both_turns_persist(store: Store) -> None:
    backend = ScriptedBackend(["Paris is the capital."], delay_s=0)
    service = chat(backend, store)
    events = record(service)
    assert await service.load_model()
    session = await store.create_session("geo")
    finished = await service.send(session.id, "Capital of France?")
    assert finished is not None and finished.content == "Paris is the capital."
    kinds = [e.kind for e in events]
    assert kinds[0] == "model_loading" and "model_ready" in kinds
    assert kinds.index("reply_started") < kinds.index("token") < kinds.index("reply_finished")
    assert "".join(e.text for e in events if e.kind == "token") == "Paris is the capital."
    rows = await store.messages(session.id)
    assert [(m.role, m.content) for m in rows] == [
        ("user", "Capital of France?"),
        ("assistant", "Paris is the capital."),
    ]
    assert rows[1].stats["completion_tokens"] == 4
    assert rows[1].stats["stop_reason"] == "stop"


async def test_think_flag_in_message_turns_thinking_on_and_is_stored(store: Store) -> None:
    backend = ScriptedBackend([ScriptedReply("42.", thinking="Six times seven.")], delay_s=0)
    service = chat(backend, store)
    await service.load_model()
    session = await store.create_session()
    finished = await service.send(session.id, "6*7? /think")
    assert finished is not None and finished.thinking == "Six times seven."
    user, reply = await store.messages(session.id)
    assert user.content == "6*7?"
    assert reply.thinking == "Six times seven." and reply.content == "42."


async def test_cancel_keeps_the_partial_reply(store: Store) -> None:
    text = " ".join(f"word{i}" for i in range(200))
    service = chat(ScriptedBackend([text], delay_s=0.005), store)
    await service.load_model()
    session = await store.create_session()
    five_tokens = asyncio.Event()
    tokens = 0

    def count(event: object) -> None:
        nonlocal tokens
        tokens += getattr(event, "kind", None) == "token"
        if tokens >= 5:
            five_tokens.set()

    service.bus.subscribe(count)
    task = asyncio.create_task(service.send(session.id, "go"))
    await asyncio.wait_for(five_tokens.wait(), 5)
    assert service.cancel()
    finished = await task
    assert finished is not None and finished.stats.stop_reason == "cancelled"
    stored = (await store.messages(session.id))[-1]
    assert 0 < len(stored.content) < len(text) and text.startswith(stored.content)
    assert stored.stats["stop_reason"] == "cancelled"
    assert not service.cancel()  # nothing running any more


async def test_long_history_is_trimmed_with_a_notice_and_kept_in_the_store(store: Store) -> None:
    backend = ScriptedBackend(["ok"], delay_s=0, context_size=120)
    settings = ChatSettings(system_prompt="Be brief.", params=GenerationParams(max_tokens=20))
    service = chat(backend, store, settings)
    await service.load_model()
    session = await store.create_session()
    for i in range(12):
        await store.add_message(session.id, "user", f"question number {i} " + "pad " * 5)
        await store.add_message(session.id, "assistant", f"answer {i}")
    events = record(service)
    finished = await service.send(session.id, "latest question")
    assert finished is not None
    trimmed = [e for e in events if e.kind == "context_trimmed"]
    assert len(trimmed) == 1 and trimmed[0].dropped_messages > 0
    prompt = backend.prompts[-1]
    assert prompt[0].role == "system" and prompt[1].role == "user"
    assert prompt[-1].content == "latest question"
    assert "question number 0" not in " ".join(m.content for m in prompt)
    assert await backend.count_tokens(prompt, settings.params) <= 120 - 20
    assert len(await store.messages(session.id)) == 26  # nothing was deleted


async def test_message_larger_than_the_context_fails_clearly_and_is_kept(store: Store) -> None:
    backend = ScriptedBackend(["ok"], delay_s=0, context_size=64)
    service = chat(backend, store, ChatSettings(params=GenerationParams(max_tokens=16)))
    await service.load_model()
    session = await store.create_session()
    events = record(service)
    assert await service.send(session.id, "word " * 200) is None
    failed = [e for e in events if e.kind == "reply_failed"]
    assert failed and "context holds 64" in failed[0].message
    assert [m.role for m in await store.messages(session.id)] == ["user"]


class BrokenBackend(ScriptedBackend):
    async def load(self, progress=None) -> None:  # noqa: ANN001
        raise ModelError("/models/x.gguf is not a GGUF model file")


async def test_load_failure_is_published_and_sending_explains_it(store: Store) -> None:
    service = chat(BrokenBackend(), store)
    events = record(service)
    assert not await service.load_model()
    assert events[-1].kind == "model_failed" and "not a GGUF" in events[-1].message
    with pytest.raises(BackendError, match="the model is not loaded: .*not a GGUF"):
        await service.send((await store.create_session()).id, "hello")


class SlowBrokenBackend(ScriptedBackend):
    """Fails to load, but only once ``release`` is set."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()

    async def load(self, progress=None) -> None:  # noqa: ANN001
        await self.release.wait()
        raise ModelError("the model file vanished")


async def test_a_message_waiting_for_a_model_that_then_fails_gets_an_error(store: Store) -> None:
    backend = SlowBrokenBackend()
    service = chat(backend, store)
    session = await store.create_session()
    loading = asyncio.create_task(service.load_model())
    sending = asyncio.create_task(service.send(session.id, "hello"))
    while not service.busy and not sending.done():  # the message is in, waiting for the model
        await asyncio.sleep(0)
    backend.release.set()
    with pytest.raises(BackendError, match="the model file vanished"):
        await asyncio.wait_for(sending, 5)
    assert await loading is False
    assert await store.messages(session.id) == []  # nothing was sent, so nothing was stored


async def test_a_reply_that_cannot_be_saved_is_reported_not_raised(store: Store, monkeypatch) -> None:  # noqa: ANN001
    from smoltui.errors import StoreError

    service = chat(ScriptedBackend(["fine"], delay_s=0), store)
    await service.load_model()
    session = await store.create_session()
    events = record(service)
    real_add = store.add_message

    async def add_message(session_id, role, *args, **kwargs):  # noqa: ANN001, ANN202
        if role == "assistant":
            raise StoreError(f"cannot write to {store.path}: database or disk is full")
        return await real_add(session_id, role, *args, **kwargs)

    monkeypatch.setattr(store, "add_message", add_message)
    assert await service.send(session.id, "hello") is None
    failed = [e for e in events if e.kind == "reply_failed"]
    assert failed and "the reply was not saved" in failed[0].message and "disk is full" in failed[0].message
    assert "".join(e.text for e in events if e.kind == "token") == "fine"
