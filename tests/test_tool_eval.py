"""The tool-calling eval (benchmarks/tool_eval.py): its cases load, it scores canned answers right, and it
runs end to end on a fake backend, on ``--model scripted`` and (marked ``llama``) on the bundled model."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import jsonschema
import pytest

from smoltui.backends.base import (
    CancelToken,
    ChatMessage,
    Finished,
    GenerationParams,
    GenerationStats,
    TextDelta,
    ToolCallDelta,
)

REPO = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("tool_eval", REPO / "benchmarks" / "tool_eval.py")
assert _spec and _spec.loader
tool_eval = importlib.util.module_from_spec(_spec)
sys.modules["tool_eval"] = tool_eval  # dataclasses look their module up while the class is built
_spec.loader.exec_module(tool_eval)

EmittedCall = tool_eval.EmittedCall


@pytest.fixture(scope="module")
def cases() -> dict[str, object]:
    return {case.id: case for case in tool_eval.load_cases()}


def call(name: str, **arguments: object) -> EmittedCall:
    return EmittedCall(name, json.dumps(arguments))


def perfect(case) -> list[EmittedCall]:  # noqa: ANN001
    return [EmittedCall(c["name"], json.dumps(tool_eval.canonical_arguments(c["arguments"])))
            for c in case.expected]


# -- the cases --------------------------------------------------------------------------------------


def test_cases_cover_every_category_with_at_least_40_cases(cases) -> None:  # noqa: ANN001
    assert len(cases) >= 40
    per_category = Counter(case.category for case in cases.values())
    assert set(per_category) == set(tool_eval.CATEGORIES)
    assert min(per_category.values()) >= 4
    assert all(not case.expected for case in cases.values() if case.category == "irrelevance")
    assert all(len(case.expected) >= 2 for case in cases.values() if case.category.startswith("parallel"))
    # parallel: one function several times; parallel_multiple: several functions.
    for case in cases.values():
        names = {c["name"] for c in case.expected}
        if case.category == "parallel":
            assert len(names) == 1, case.id
        if case.category == "parallel_multiple":
            assert len(names) >= 2, case.id
        if case.category == "multiple":
            assert len(case.tools) >= 3, case.id


def test_every_tool_schema_is_a_valid_openai_function_schema(cases) -> None:  # noqa: ANN001
    for case in cases.values():
        for tool in case.tools:
            assert tool["type"] == "function"
            assert tool["function"]["name"] and tool["function"]["description"]
            jsonschema.Draft202012Validator.check_schema(tool["function"]["parameters"])


def test_a_broken_cases_file_is_refused(tmp_path: Path) -> None:
    data = json.loads(tool_eval.CASES_FILE.read_text(encoding="utf-8"))
    data["cases"][0]["expected"][0]["arguments"]["unit"] = ["kelvin"]  # outside the enum
    bad = tmp_path / "cases.json"
    bad.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(tool_eval.CaseError, match="invalid"):
        tool_eval.load_cases(bad)
    data["cases"][0]["expected"][0]["name"] = "book_hotel"
    bad.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(tool_eval.CaseError, match="not offered"):
        tool_eval.load_cases(bad)


# -- scoring canned outputs -------------------------------------------------------------------------


def test_the_expected_answers_score_perfectly_in_any_order(cases) -> None:  # noqa: ANN001
    for case in cases.values():
        for calls in (perfect(case), list(reversed(perfect(case)))):
            score = tool_eval.score_case(case, calls)
            assert (score.valid_calls, score.name_ok, score.args_ok) == (len(case.expected), True, True), (
                case.id, score.problems)


def test_strings_numbers_and_optional_arguments(cases) -> None:  # noqa: ANN001
    weather = cases["simple_weather"]
    ok = tool_eval.score_case
    assert ok(weather, [call("get_weather", city="  paris, FRANCE ")]).args_ok  # case, spaces; unit omitted
    assert ok(weather, [call("get_weather", city="Paris", unit="celsius")]).args_ok
    wrong_city = ok(weather, [call("get_weather", city="Lyon")])
    assert (wrong_city.valid_calls, wrong_city.name_ok, wrong_city.args_ok) == (1, True, False)
    assert "city" in wrong_city.problems[0]
    extra = ok(weather, [call("get_weather", city="Paris", country="FR")])
    assert extra.name_ok and not extra.args_ok  # schema allows it, the answer does not
    bad_enum = ok(weather, [call("get_weather", city="Paris", unit="kelvin")])
    assert (bad_enum.valid_calls, bad_enum.args_ok) == (0, False)

    units = cases["simple_convert_units"]
    assert ok(units, [call("convert_units", value=42.0, from_unit="KM", to_unit="miles")]).args_ok
    as_text = ok(units, [call("convert_units", value="42", from_unit="km", to_unit="mi")])
    assert (as_text.valid_calls, as_text.name_ok, as_text.args_ok) == (0, True, False)
    missing = ok(units, [call("convert_units", value=42, from_unit="km")])
    assert (missing.valid_calls, missing.args_ok) == (0, False)


def test_typed_values_are_compared_by_type(cases) -> None:  # noqa: ANN001
    ok = tool_eval.score_case
    forecast = cases["typed_int_forecast"]
    assert ok(forecast, [call("get_forecast", city="Madrid", days=10, include_hourly=True)]).args_ok
    one = ok(forecast, [call("get_forecast", city="Madrid", days=10, include_hourly=1)])
    assert (one.valid_calls, one.args_ok) == (0, False)  # 1 is not true
    fractional = ok(forecast, [call("get_forecast", city="Madrid", days=10.5, include_hourly=True)])
    assert not fractional.args_ok and fractional.valid_calls == 0
    stats = cases["typed_array_numbers"]
    assert ok(stats, [call("compute_statistics", numbers=[3, 7, 8, 12, 20], statistics=["median", "mean"])]).args_ok
    assert not ok(stats, [call("compute_statistics", numbers=[3, 7, 8, 12], statistics=["mean", "median"])]).args_ok
    assert not ok(stats, [call("compute_statistics", numbers=[20, 12, 8, 7, 3], statistics=["mean", "median"])]).args_ok


def test_nested_objects(cases) -> None:  # noqa: ANN001
    ok = tool_eval.score_case
    flight = cases["nested_flight"]
    good = {"origin": "jfk", "destination": "LHR", "date": "2026-12-20",
            "passengers": {"adults": 2, "children": 1}, "cabin": "business"}
    assert ok(flight, [call("book_flight", **good)]).args_ok
    assert not ok(flight, [call("book_flight", **{**good, "passengers": {"adults": 2}})]).args_ok
    assert not ok(flight, [call("book_flight", **{**good, "passengers": {"adults": 3, "children": 1}})]).args_ok
    flat = ok(flight, [call("book_flight", **{**good, "passengers": 3})])
    assert (flat.valid_calls, flat.args_ok) == (0, False)
    order = cases["nested_order"]
    args = tool_eval.canonical_arguments(order.expected[0]["arguments"])
    args["items"] = list(reversed(args["items"]))
    assert ok(order, [call("create_order", **args)]).args_ok
    args["shipping"]["address"]["city"] = "Munich"
    assert not ok(order, [call("create_order", **args)]).args_ok
    settings = cases["nested_settings"]  # email may be left out; push must be
    assert ok(settings, [call("update_settings", theme="dark", notifications={"sms": False})]).args_ok
    assert not ok(settings, [call("update_settings", theme="dark", notifications={"sms": False, "push": True})]).args_ok


def test_names_parallel_calls_and_broken_calls(cases) -> None:  # noqa: ANN001
    ok = tool_eval.score_case
    multiple = cases["multiple_currency_not_units"]
    wrong = ok(multiple, [call("convert_units", value=1000, from_unit="JPY", to_unit="GBP")])
    assert (wrong.valid_calls, wrong.name_ok, wrong.args_ok) == (1, False, False)

    parallel = cases["parallel_weather_three_cities"]
    two = ok(parallel, [call("get_weather", city="Tokyo"), call("get_weather", city="Seoul")])
    assert not two.name_ok and not two.args_ok
    twice = ok(parallel, [call("get_weather", city="Tokyo"), call("get_weather", city="Tokyo"),
                          call("get_weather", city="Beijing")])
    assert twice.name_ok and not twice.args_ok  # one expected call may pair with one emitted call only

    broken = ok(cases["simple_weather"], [EmittedCall("get_weather", '{"city": "Paris"')])
    assert (broken.calls, broken.valid_calls, broken.name_ok, broken.args_ok) == (1, 0, True, False)
    unreadable = ok(cases["simple_weather"], [EmittedCall("", "", error="no name in the call")])
    assert (unreadable.valid_calls, unreadable.name_ok) == (0, False)
    unknown = ok(cases["simple_weather"], [call("get_forecast", city="Paris", days=1)])
    assert (unknown.valid_calls, unknown.name_ok) == (0, False)


def test_no_call_cases(cases) -> None:  # noqa: ANN001
    case = cases["irrelevance_no_tool_fits_hotel"]
    quiet = tool_eval.score_case(case, [])
    assert (quiet.calls, quiet.name_ok, quiet.args_ok) == (0, True, True)
    eager = tool_eval.score_case(case, [call("get_weather", city="Rome")])
    assert (eager.valid_calls, eager.name_ok, eager.args_ok) == (1, False, False)
    # and the converse: silence where a call was due
    assert not tool_eval.score_case(cases["simple_weather"], []).name_ok


# -- end to end -------------------------------------------------------------------------------------


class FakeToolBackend:
    """Answers every case perfectly with constraints on, and with text only when they are off."""

    name = "fake"
    model_name = "fake-tools"

    def __init__(self, cases: Sequence[object]) -> None:
        self.by_prompt = {case.messages[-1]["content"]: case for case in cases}
        self.params: list[GenerationParams] = []
        self.loaded = self.closed = False

    @property
    def context_size(self) -> int:
        return 4096

    async def load(self, progress=None) -> None:  # noqa: ANN001
        self.loaded = True

    async def count_tokens(self, messages, params) -> int:  # noqa: ANN001
        return 10

    async def close(self) -> None:
        self.closed = True

    def render_prompt(self, messages: Sequence[ChatMessage], params: GenerationParams) -> str:
        return "<tools>" + json.dumps(list(params.tools or [])) + "</tools>\n" + messages[-1].content

    async def stream(self, messages: Sequence[ChatMessage], params: GenerationParams,
                     cancel: CancelToken) -> AsyncIterator[object]:
        self.params.append(params)
        case = self.by_prompt[messages[-1].content]
        started = time.perf_counter()
        if params.constrain_tools:
            for i, c in enumerate(perfect(case)):
                yield ToolCallDelta(f"call_{i}", c.name, c.arguments)
        yield TextDelta("I cannot do that." if not case.expected or not params.constrain_tools else "")
        total = time.perf_counter() - started
        yield Finished(GenerationStats(prompt_tokens=10, completion_tokens=5, cached_tokens=0, ttft_s=0.25,
                                       prefill_tok_s=40.0, decode_tok_s=10.0, context_used=15,
                                       context_size=4096, total_s=total + 1.0))


def test_end_to_end_on_a_fake_backend(cases, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    backend = FakeToolBackend(cases.values())
    out = tmp_path / "results.json"
    assert tool_eval.main(["--json", str(out), "--show-prompt", "-q"], backend=backend) == 0
    assert backend.loaded and backend.closed
    n = len(cases)
    assert len(backend.params) == 2 * n
    assert all(p.temperature == 0.0 and not p.think and p.tools for p in backend.params)
    assert [p.constrain_tools for p in backend.params] == [True] * n + [False] * n

    report = json.loads(out.read_text(encoding="utf-8"))
    on, off = report["summary"]["on"]["overall"], report["summary"]["off"]["overall"]
    assert on["cases"] == off["cases"] == n
    assert on["validity"] == on["name_accuracy"] == on["argument_accuracy"] == 1.0
    no_call = sum(1 for c in cases.values() if not c.expected)
    assert off["calls"] == 0 and off["validity"] is None
    assert off["name_accuracy"] == off["argument_accuracy"] == pytest.approx(no_call / n)
    assert report["summary"]["off"]["irrelevance"]["argument_accuracy"] == 1.0
    assert report["summary"]["off"]["simple"]["argument_accuracy"] == 0.0
    assert on["ttft_p50_s"] == pytest.approx(0.25) and on["total_p50_s"] >= 1.0
    assert len(report["results"]) == 2 * n
    first = report["results"][0]
    assert first["id"] == "simple_weather" and first["args_ok"] and first["calls"][0]["name"] == "get_weather"

    printed = capsys.readouterr()
    assert "<tools>" in printed.err and "get_weather" in printed.err  # --show-prompt
    for header in ("constraints on", "constraints off", "on/off", "parallel_multiple", "overall"):
        assert header in printed.out


def test_filters_and_json_to_stdout(cases, capsys: pytest.CaptureFixture[str]) -> None:  # noqa: ANN001
    backend = FakeToolBackend(cases.values())
    argv = ["--category", "nested", "--limit", "2", "--constraints", "off", "--json", "-q"]
    assert tool_eval.main(argv, backend=backend) == 0
    printed = capsys.readouterr()
    report = json.loads(printed.out)
    assert list(report["summary"]) == ["off"]
    assert [r["id"] for r in report["results"]] == ["nested_flight", "nested_reminder"]
    assert "constraints off" in printed.err
    assert tool_eval.main(["--case", "nope"], backend=backend) == 2


def test_end_to_end_on_the_scripted_model(home: Path, tmp_path: Path) -> None:  # noqa: ARG001
    """``--model scripted`` goes through the core's resolve_and_build (as the CLI does): text replies, no calls."""
    out = tmp_path / "scripted.json"
    argv = ["--model", "scripted", "--case", "simple_weather", "--case", "irrelevance_greeting",
            "--max-tokens", "8", "--json", str(out), "-q"]
    assert tool_eval.main(argv) == 0
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["backend"] == "scripted"
    by_id = {(r["id"], r["constraints"]): r for r in report["results"]}
    assert len(by_id) == 4
    for constraints in (True, False):
        assert not by_id[("simple_weather", constraints)]["name_ok"]
        assert by_id[("irrelevance_greeting", constraints)]["args_ok"]
        assert by_id[("simple_weather", constraints)]["total_s"] > 0


@pytest.mark.llama
async def test_smoke_on_the_bundled_model(llama_backend, cases) -> None:  # noqa: ANN001
    picked = [cases[i] for i in ("simple_weather", "parallel_stocks", "irrelevance_greeting")]
    # The model sees the offered tools, whether or not its own template renders them.
    prompt = tool_eval.render_prompt(llama_backend, picked[0])
    assert "get_weather" in prompt and "What's the weather like in Paris" in prompt
    results = await tool_eval.evaluate(llama_backend, picked, [True, False], max_tokens=32)
    assert len(results) == 6
    for result in results:
        assert result.error is None, result.error
        assert result.ttft_s is not None and result.total_s >= result.ttft_s
        if result.constraints:  # a constrained call always parses and fits its tool's schema
            assert result.score.valid_calls == result.score.calls, result.score.problems
    summary = tool_eval.summarize([r for r in results if r.constraints])
    assert summary["overall"]["cases"] == 3
