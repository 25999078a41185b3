import asyncio
from pathlib import Path

import pytest

from smoltui.tools.base import ToolContext, tool
from smoltui.tools.registry import MAX_RESULT_CHARS, ToolRegistry


@tool(risk="read")
def add(a: int, b: int = 2, *, ctx: ToolContext) -> int:
    """Add two integers.

    Args:
        a: The first number.
        b: The second number.
    """
    return a + b


@tool(risk="network", name="fetch_later", timeout_s=0.2)
async def slow(seconds: float) -> str:
    """Sleep, then answer."""
    await asyncio.sleep(seconds)
    return "done"


@tool(risk="execute")
def explode(message: str) -> None:
    """Always fails."""
    raise RuntimeError(message)


@tool(risk="read")
def flood() -> str:
    """Returns far too much."""
    return "x" * (MAX_RESULT_CHARS * 3)


@pytest.fixture
def ctx(tmp_path: Path) -> ToolContext:
    return ToolContext(workspace=tmp_path, artifacts_dir=tmp_path / "artifacts")


@pytest.fixture
def registry() -> ToolRegistry:
    return ToolRegistry([add, slow, explode, flood])


def test_schema_comes_from_signature_and_docstring() -> None:
    assert add.name == "add" and add.risk == "read" and add.description == "Add two integers."
    assert add.parameters == {
        "type": "object",
        "properties": {
            "a": {"type": "integer", "description": "The first number."},
            "b": {"type": "integer", "description": "The second number.", "default": 2},
        },
        "required": ["a"],
        "additionalProperties": False,
    }
    assert add.schema()["function"]["name"] == "add"
    assert slow.name == "fetch_later" and slow.is_async and slow.risk == "network"


def test_risk_must_be_known() -> None:
    with pytest.raises(ValueError, match="risk must be one of"):
        tool(risk="dangerous")  # type: ignore[arg-type]


async def test_valid_call_and_context_injection(registry: ToolRegistry, ctx: ToolContext) -> None:
    result = await registry.call("add", {"a": 40}, ctx)
    assert result.ok and result.content == 42
    assert result.for_model() == {"result": 42}


async def test_unknown_tool(registry: ToolRegistry, ctx: ToolContext) -> None:
    result = await registry.call("rm_rf", {}, ctx)
    assert not result.ok and result.error_kind == "unknown_tool"
    assert "no tool named 'rm_rf'" in result.error and "add" in result.error


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        ({"a": "forty"}, "a: Input should be a valid integer"),
        ({}, "a: Field required"),
        ({"a": 1, "c": 3}, "c: Extra inputs are not permitted"),
        (["a", 1], "must be a JSON object"),
    ],
)
async def test_bad_arguments_are_a_structured_error(registry, ctx, arguments, fragment) -> None:  # noqa: ANN001
    result = await registry.call("add", arguments, ctx)
    assert not result.ok and result.error_kind == "invalid_arguments"
    assert fragment in result.error


async def test_a_tool_that_raises(registry: ToolRegistry, ctx: ToolContext) -> None:
    result = await registry.call("explode", {"message": "boom"}, ctx)
    assert not result.ok and result.error_kind == "failed" and "RuntimeError: boom" in result.error


async def test_a_tool_that_hangs(registry: ToolRegistry, ctx: ToolContext) -> None:
    result = await registry.call("fetch_later", {"seconds": 30}, ctx)
    assert not result.ok and result.error_kind == "timeout" and "0.2 s" in result.error
    assert result.duration_s < 5


async def test_a_tool_that_floods_is_truncated(registry: ToolRegistry, ctx: ToolContext) -> None:
    result = await registry.call("flood", {}, ctx)
    assert result.ok and len(result.content) < MAX_RESULT_CHARS + 100
    assert result.content.endswith("characters in all]")


def test_duplicate_names_are_refused(registry: ToolRegistry) -> None:
    @tool(risk="read", name="add")
    def other(a: int) -> int:
        """Not the same."""
        return a

    with pytest.raises(ValueError, match="already registered"):
        registry.register(other)


def test_third_party_tools_register_through_the_entry_point_group(tmp_path: Path, monkeypatch, ctx) -> None:  # noqa: ANN001
    package = tmp_path / "site"
    (package / "weather_tools").mkdir(parents=True)
    (package / "weather_tools" / "__init__.py").write_text(
        "from smoltui.tools.base import tool\n\n"
        "@tool(risk='network')\n"
        "def forecast(city: str) -> str:\n"
        "    '''Tomorrow's weather.\n\n    Args:\n        city: Where.\n    '''\n"
        "    return f'sunny in {city}'\n\n"
        "def broken():\n    raise ImportError('needs the weather SDK')\n",
        encoding="utf-8",
    )
    dist = package / "weather_tools-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: weather-tools\nVersion: 1.0\n", encoding="utf-8")
    (dist / "entry_points.txt").write_text(
        "[smoltui.tools]\nforecast = weather_tools:forecast\nbroken = weather_tools:broken\n", encoding="utf-8"
    )
    monkeypatch.syspath_prepend(str(package))
    registry = ToolRegistry()
    problems = registry.load_entry_points()
    assert "forecast" in registry and registry.get("forecast").risk == "network"
    assert len(problems) == 1 and "'broken'" in problems[0] and "needs the weather SDK" in problems[0]
    result = asyncio.run(registry.call("forecast", {"city": "Lyon"}, ctx))
    assert result.content == "sunny in Lyon"


@tool(risk="write", call_risk=lambda arguments: "read" if arguments.get("peek") else "write")
def touch(name: str, peek: bool = False) -> str:
    """Create a file, or only look whether it exists."""
    return name


def test_a_call_has_its_own_risk_and_the_static_risk_is_the_highest() -> None:
    assert touch.risk == "write"
    assert touch.risk_for({"name": "a", "peek": True}) == "read"
    assert touch.risk_for({"name": "a"}) == "write"
    assert add.risk_for({"a": 1}) == "read"  # a tool without call_risk: every call has its risk


def test_a_broken_call_risk_falls_back_to_the_highest() -> None:
    from smoltui.tools.base import make_tool

    def bad(arguments):  # noqa: ANN001, ANN202
        raise KeyError("action")

    def vague(arguments):  # noqa: ANN001, ANN202
        return "dangerous"

    assert make_tool(touch.func, risk="write", call_risk=bad).risk_for({}) == "write"
    assert make_tool(touch.func, risk="execute", call_risk=vague).risk_for(None) == "execute"


def test_replacing_one_origin_keeps_every_other_tool(registry: ToolRegistry) -> None:
    import dataclasses

    def from_server(item, name: str):  # noqa: ANN001, ANN202
        return dataclasses.replace(item, name=name, origin="mcp:demo")

    assert registry.replace_origin("mcp:demo", [from_server(add, "demo__a"), from_server(add, "demo__b")]) == []
    assert [t.name for t in registry.tools] == ["add", "fetch_later", "explode", "flood", "demo__a", "demo__b"]

    problems = registry.replace_origin("mcp:demo", [from_server(add, "demo__b"), from_server(add, "add")])
    assert [t.name for t in registry.tools] == ["add", "fetch_later", "explode", "flood", "demo__b"]
    assert registry.get("add") is add  # a built-in is never displaced by a server's tool
    assert problems == ["mcp:demo: tool 'add' left out: the name is taken by builtin"]

    assert registry.replace_origin("mcp:demo", []) == []
    assert "demo__b" not in registry
    with pytest.raises(ValueError, match="comes from 'builtin'"):
        registry.replace_origin("mcp:demo", [add])
    with pytest.raises(ValueError, match="already registered"):
        registry.register(from_server(add, "flood"))  # register still refuses a clash
