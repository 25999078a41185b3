"""A ``${...}`` expression in a workflow cannot make gigabytes in one step: refused before it runs,
as a TemplateError naming the expression."""

from __future__ import annotations

import time
import tracemalloc
from typing import Any

import pytest

from smoltui.orchestrator.templating import TemplateError, names_in, render

EXPLOSIVE = {
    "ljust": "${ 'x'.ljust(10000000000) }",
    "zfill": "${ 'x'.zfill(10000000000) }",
    "replace": "${ ('x' * 1000000).replace('x', 'x' * 1000000) }",
    "join": "${ ('x' * 1000000).join(['a'] * 1000000) }",
    "join a generator": "${ ('x' * 1000000).join(range(10000)|map('string')) }",
    "printf width": "${ '%9999999999d' % 1 }",
    "many printf fields": "${ ('%99999s' * 20000) % ((1,) * 20000) }",
    "format width": "${ '{:>9999999999}'.format(1) }",
    "format_map": "${ '{a:>9999999999}'.format_map({'a': 1}) }",
    "repeated lists": "${ [[1] * 1000000] * 1000000 }",
    "repeated lists as text": "rows: ${ [['x' * 1000] * 1000] * 1000 }",
    "expandtabs": "${ ('\\t' * 1000000).expandtabs(100000) }",
    "translate": "${ ('x' * 1000000).translate({120: 'y' * 1000000}) }",
    "center filter": "${ 'x' | center(10000000000) }",
    "indent filter": "${ ('\\n' * 1000000) | indent(1000000) }",
    "format filter": "${ '%9999999999s' | format('x') }",
    "replace filter": "${ ('x' * 1000000) | replace('x', 'y' * 1000000) }",
    "join filter": "${ (['a'] * 1000000) | join('x' * 1000000) }",
    "wordwrap filter": "${ ('x ' * 500000) | wordwrap(1, wrapstring='y' * 1000000) }",
    "lipsum": "${ lipsum(10000000) }",
}


@pytest.mark.parametrize("text", EXPLOSIVE.values(), ids=EXPLOSIVE.keys())
def test_an_explosive_expression_is_refused_before_it_allocates(text: str) -> None:
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(TemplateError, match=r"^refused: .* in \$\{"):
            render(text, {})
        elapsed, peak = time.perf_counter() - started, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert elapsed < 3.0
    assert peak < 200 * 2**20, peak


def test_ordinary_expressions_still_work() -> None:
    context: dict[str, Any] = {"name": "flow", "rows": [{"a": 1}, {"a": 2}], "n": 3}
    assert render("${ name.ljust(6, '.') }|${ '%-5s|' % name }${ '{:>6}'.format(name) }", context) == (
        "flow..|flow |  flow")
    assert render("${ ', '.join(['a', 'b']) } ${ rows | map(attribute='a') | join('+') } ${ 'ab' * n }",
                  context) == "a, b 1+2 ababab"
    assert render("${ name | center(8) }|${ 'a\\nb' | indent(2) }|${ 'x y' | replace(' ', '_') }", context) == (
        "  flow  |a\n  b|x_y")
    assert render("${ [1, 2] * 2 }", context) == [1, 2, 1, 2]
    assert render("${ '%d' % 10 ** 12 }|${ '%*d' % (3, 7) }|${ '{:{w}}'.format(7, w=3) }", context) == (
        "1000000000000|  7|  7")
    assert render("rows: ${ rows }", context) == 'rows: [{"a": 1}, {"a": 2}]'
    assert names_in("${ name.ljust(n) } ${ lipsum(2) }") == {"name", "n"}
