"""``${expr}`` templating: values, text rendering, the sandbox and the errors a workflow author sees."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from smoltui.errors import SmoltuiError
from smoltui.orchestrator.templating import (
    MAX_FRAME_CHARS,
    TemplateError,
    has_template,
    names_in,
    render,
    render_structure,
)


class Thing:
    def __init__(self) -> None:
        self.label = "thing"

    def method(self) -> str:
        return "called"


@pytest.fixture
def ctx() -> dict[str, Any]:
    return {
        "input_file": "data/sales.csv",
        "cfg": {"name": "demo", "tags": ["a", "b"]},
        "items": [10, 20, 30],
        "row": {"x": 1.5},
        "n": 3,
        "s": "hello",
        "thing": Thing(),
    }


# --- values -------------------------------------------------------------------------------------


def test_plain_variable(ctx: dict[str, Any]) -> None:
    assert render("${input_file}", ctx) == "data/sales.csv"
    assert render("read ${input_file} now", ctx) == "read data/sales.csv now"


def test_text_without_template_is_returned_as_is(ctx: dict[str, Any]) -> None:
    assert render("no templates here", ctx) == "no templates here"
    assert not has_template("cost: $5 {x}")
    assert has_template("a ${b}")


def test_attribute_and_index_access(ctx: dict[str, Any]) -> None:
    assert render("${cfg.name}", ctx) == "demo"
    assert render("${items[0]}", ctx) == 10
    assert render("${row['x']}", ctx) == 1.5
    assert render("${cfg.tags[1]}", ctx) == "b"
    assert render("${cfg['tags'] | length}", ctx) == 2


def test_whole_string_returns_the_object(ctx: dict[str, Any]) -> None:
    assert render("${cfg}", ctx) is ctx["cfg"]
    assert render("${items}", ctx) is ctx["items"]
    value = render("${n}", ctx)
    assert value == 3 and isinstance(value, int)
    assert render("${n * 2 + 1}", ctx) == 7
    assert render("${ {'a': n}['a'] }", ctx) == 3  # a dict literal inside ${ }


def test_surrounding_text_makes_it_a_string(ctx: dict[str, Any]) -> None:
    assert render(" ${n}", ctx) == " 3"
    assert render("${n}\n", ctx) == "3\n"  # keep_trailing_newline
    assert render("${n}${n}", ctx) == "33"


def test_mixed_text_renders_dicts_and_lists_as_json(ctx: dict[str, Any]) -> None:
    out = render("config: ${cfg} items: ${items}", ctx)
    assert out == 'config: {"name": "demo", "tags": ["a", "b"]} items: [10, 20, 30]'
    assert json.loads(out.split("config: ")[1].split(" items:")[0]) == ctx["cfg"]
    assert render("${ {'é': 1} } x", {}) == '{"é": 1} x'


def test_safe_methods_on_builtin_values(ctx: dict[str, Any]) -> None:
    assert render("${s.upper()}", ctx) == "HELLO"
    assert render("${'{}-{}'.format(s, n)}", ctx) == "hello-3"
    assert render("${cfg.get('name')}", ctx) == "demo"
    assert render("${cfg.keys() | list}", ctx) == ["name", "tags"]


def test_jinja_looking_text_passes_through(ctx: dict[str, Any]) -> None:
    text = (
        'Answer as JSON like {"a": 1, "b": [1, 2]}.\n'
        "{{ not a var }} {% raw %} {% if x %}y{% endif %} {# not a comment #} {#\n"
        "File: ${input_file}\n"
    )
    assert render(text, ctx) == text.replace("${input_file}", "data/sales.csv")
    assert names_in(text) == {"input_file"}


def test_render_structure_nested(ctx: dict[str, Any]) -> None:
    spec = {
        "path": "${input_file}",
        "${not_a_key_template}": "x",
        "inputs": {"data": "${cfg}", "list": ["${n}", "n=${n}", 5, None]},
        "pair": ("${s}", True),
    }
    out = render_structure(spec, ctx)
    assert out == {
        "path": "data/sales.csv",
        "${not_a_key_template}": "x",
        "inputs": {"data": ctx["cfg"], "list": [3, "n=3", 5, None]},
        "pair": ("hello", True),
    }
    assert out["inputs"]["data"] is ctx["cfg"]


# --- names --------------------------------------------------------------------------------------


def test_names_in() -> None:
    assert names_in("${a} and ${b.c} and ${d[0]}") == {"a", "b", "d"}
    assert names_in("${x | upper} ${range(3) | list}") == {"x"}  # Jinja globals are not names
    assert names_in("plain {{ text }}") == set()


def test_names_in_syntax_error_names_the_line() -> None:
    with pytest.raises(TemplateError, match=r"syntax error in \$\{ a b \} at line 2: unexpected 'b' after"):
        names_in("first line\nsecond ${ a b } line")


# --- errors -------------------------------------------------------------------------------------


def test_undefined_name_is_an_error(ctx: dict[str, Any]) -> None:
    with pytest.raises(TemplateError) as info:
        render("${x.y}", ctx)
    assert str(info.value) == "unknown name 'x' in ${x.y}"
    assert isinstance(info.value, SmoltuiError)
    with pytest.raises(TemplateError, match="unknown name 'missing' in \\$\\{missing\\}"):
        render("text ${missing} more", ctx)


def test_missing_attribute_and_key_are_errors(ctx: dict[str, Any]) -> None:
    with pytest.raises(TemplateError, match=r"nope.*in \$\{cfg\.nope\}"):
        render("${cfg.nope}", ctx)
    with pytest.raises(TemplateError, match=r"in \$\{items\[7\]\}"):
        render("value: ${items[7]}", ctx)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${n / 0}", "ZeroDivisionError"),
        ("${ {'a': 1}['b'] + 1 }", "in \\$\\{ \\{'a': 1\\}\\['b'\\] \\+ 1 \\}"),
        ("${ int('x') }", "unknown name 'int'"),
    ],
)
def test_evaluation_errors_name_the_expression(ctx: dict[str, Any], text: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        render(text, ctx)


@pytest.mark.parametrize("text", ["${ ]}", "${}", "${ a b }", "${ cfg.name"])
def test_syntax_errors(ctx: dict[str, Any], text: str) -> None:
    with pytest.raises(TemplateError, match="syntax error"):
        render(text, ctx)


@pytest.mark.parametrize(
    "text",
    [
        "${''.__class__}",
        "${''.__class__.__mro__[1].__subclasses__()}",
        "${s.__init__}",
        "${thing.__dict__}",
        "${lipsum.__globals__}",
        "${cycler.__init__.__globals__}",
        "${s.upper.__self__}",
        "${ s['__class__'] }",
        "${ s | attr('__class__') }",
        "${ '{0.__class__}'.format(s) }",
        "${ [s.__class__] }",
        "${ items.append(4) }",
        "${ cfg.update({'name': 'x'}) }",
        "${ thing.method() }",
        "${ 'a' * 100000000 }",
    ],
)
def test_sandbox_refuses(ctx: dict[str, Any], text: str) -> None:
    with pytest.raises(TemplateError, match="refused"):
        render(text, ctx)
    with pytest.raises(TemplateError, match="refused"):
        render("in text: " + text, ctx)
    assert ctx["items"] == [10, 20, 30] and ctx["cfg"]["name"] == "demo"


def test_dunder_on_dict_is_not_leaked(ctx: dict[str, Any]) -> None:
    with pytest.raises(TemplateError, match="__dict__"):
        render("${cfg.__dict__}", ctx)


# --- pandas -------------------------------------------------------------------------------------


@pytest.fixture
def frame_ctx() -> dict[str, Any]:
    pd = pytest.importorskip("pandas")
    df = pd.DataFrame({"region": ["n", "s", "n", "e"], "sales": [10.0, 20.0, 30.0, 40.0]})
    return {"dataframe": df, "analysis_results": {"total": 100.0}}


def test_dataframe_passes_as_object(frame_ctx: dict[str, Any]) -> None:
    assert render("${dataframe}", frame_ctx) is frame_ctx["dataframe"]


def test_multiline_prompt_with_describe(frame_ctx: dict[str, Any]) -> None:
    prompt = (
        "You are a data analyst.\n"
        "Summary statistics:\n"
        "${dataframe.describe()}\n"
        "Results so far: ${analysis_results}\n"
        'Reply as JSON: {"findings": []}\n'
    )
    out = render(prompt, frame_ctx)
    assert isinstance(out, str)
    assert out.startswith("You are a data analyst.\nSummary statistics:\n")
    table = frame_ctx["dataframe"].describe().to_string()
    assert table in out
    assert "mean" in out and "25.0" in out
    assert 'Results so far: {"total": 100.0}\n' in out
    assert out.endswith('Reply as JSON: {"findings": []}\n')


def test_pandas_read_only_methods(frame_ctx: dict[str, Any]) -> None:
    assert render("${dataframe.sales.sum()}", frame_ctx) == 100.0
    assert render("${dataframe.to_csv(index=False)}", frame_ctx).startswith("region,sales\n")
    assert render("${dataframe.groupby('region').sales.sum().to_dict()}", frame_ctx) == {
        "e": 40.0,
        "n": 40.0,
        "s": 20.0,
    }
    assert render("${dataframe.columns.tolist()}", frame_ctx) == ["region", "sales"]
    assert render("${dataframe.head(2) | length}", frame_ctx) == 2


def test_long_frame_text_is_cut(frame_ctx: dict[str, Any]) -> None:
    pd = pytest.importorskip("pandas")
    wide = pd.DataFrame({f"column_{i}": ["x" * 40] * 50 for i in range(12)})
    out = render("table:\n${wide}", {"wide": wide})
    assert len(out) < MAX_FRAME_CHARS + 200
    assert "cut:" in out


@pytest.mark.parametrize(
    "expr",
    [
        "dataframe.to_csv('{path}')",
        "dataframe.to_csv(path_or_buf='{path}')",
        "dataframe.to_json('{path}')",
        "dataframe.to_string('{path}')",
        "dataframe.to_pickle('{path}')",
        "dataframe.sales.to_pickle('{path}')",
        "dataframe.sales.values.tofile('{path}')",
        "dataframe.groupby(dataframe.to_csv).size()",
        "dataframe.sort_values('sales', key=dataframe.to_csv)",
    ],
)
def test_pandas_writers_refused_and_no_file(frame_ctx: dict[str, Any], tmp_path: Path, expr: str) -> None:
    path = tmp_path / "out.csv"
    frame_ctx["dataframe"]["region"] = [str(tmp_path / f"r{i}") for i in range(4)]
    with pytest.raises(TemplateError, match="refused"):
        render("${" + expr.format(path=path) + "}", frame_ctx)
    assert not path.exists()
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "expr",
    [
        "dataframe.eval('sales * 2')",
        "dataframe.query('sales > 1')",
        "dataframe.pipe(dataframe.to_csv)",
        "dataframe.apply(dataframe.to_csv)",
        "dataframe.sort_values('sales', inplace=True)",
        "dataframe.__class__",
    ],
)
def test_pandas_unsafe_methods_refused(frame_ctx: dict[str, Any], expr: str) -> None:
    before = frame_ctx["dataframe"].copy()
    with pytest.raises(TemplateError, match="refused"):
        render("${" + expr + "}", frame_ctx)
    assert frame_ctx["dataframe"].equals(before)
