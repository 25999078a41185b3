"""Workflow YAML is read under limits: size, aliases (expanded size), nesting; a bomb is refused early,
with its file and line, by load_workflow (run, the TUI's tree) and validate_workflow alike."""

from __future__ import annotations

import sys
import time
import tracemalloc
from pathlib import Path

import pytest

from smoltui.orchestrator import workflow_spec
from smoltui.orchestrator.workflow_spec import (
    MAX_WORKFLOW_BYTES,
    MAX_YAML_VALUES,
    WorkflowError,
    load_workflow,
    parse_var_value,
)
from smoltui.orchestrator.workflow_validate import validate_workflow

# The classic "billion laughs": 566 bytes that expand to 9**9 (387 million) strings.
BOMB = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
workflow: {id: w, tasks: [{id: t, type: llm_task, prompt: "${x}"}], variables: {x: *i}}
"""

VALID = """\
workflow:
  id: anchors
  tasks:
    - &first {id: first, type: llm_task, prompt: "one", retries: 2}
    - {<<: *first, id: second, prompt: "two", depends_on: [first]}
"""


@pytest.fixture(autouse=True, params=["libyaml", "pure-python"])
def parser(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """Every test twice: with libyaml's parser, and with PyYAML's own (a PyYAML built without libyaml)."""
    workflow_spec._bounded_loader.cache_clear()
    if request.param == "pure-python":
        monkeypatch.setitem(sys.modules, "yaml._yaml", None)  # the import fails, as without libyaml
    yield request.param
    workflow_spec._bounded_loader.cache_clear()


def _write(tmp_path: Path, text: str, name: str = "flow.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_the_billion_laughs_is_refused_at_once_with_its_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, BOMB)
    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(WorkflowError) as info:
            load_workflow(path)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    message = str(info.value)
    # line 5: its aliases *d (6,561 values each) are the first to take the document past the limit
    assert message.startswith(f"{path}:5:"), message
    assert f"{MAX_YAML_VALUES:,} values" in message and "*d" in message
    assert elapsed < 2.0, elapsed  # about 5 ms without tracemalloc; it never expands anything
    assert peak < 5 * 2**20, peak


def test_validate_reports_the_bomb_as_one_problem(tmp_path: Path) -> None:
    path = _write(tmp_path, BOMB)
    started = time.perf_counter()
    problems = validate_workflow(path, tools={})
    assert time.perf_counter() - started < 2.0
    assert [(p.line, p.message.split(":")[0]) for p in problems] == [(5, "YAML refused")]


def test_deep_nesting_is_refused_not_a_recursion_error(tmp_path: Path) -> None:
    path = _write(tmp_path, "workflow: " + "[" * 20_000 + "]" * 20_000 + "\n")
    with pytest.raises(WorkflowError, match=r"flow\.yaml:1:\d+: YAML refused: .*deeper than 64 levels"):
        load_workflow(path)
    block = "workflow:\n" + "".join(" " * i + f"k{i}:\n" for i in range(1, 100)) + " " * 100 + "x\n"
    problems = validate_workflow(_write(tmp_path, block, "block.yaml"), tools={})
    assert [p.line for p in problems] == [64] and "deeper than 64" in problems[0].message


def test_nesting_through_aliases_counts_the_levels_the_alias_brings(tmp_path: Path) -> None:
    deep = "[" * 40 + "1" + "]" * 40
    path = _write(tmp_path, f"a: &a {deep}\nb: &b [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[*a]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]\n")
    with pytest.raises(WorkflowError, match=r":2:\d+: YAML refused: .*deeper than 64 levels \(through the alias \*a\)"):
        load_workflow(path)


def test_an_alias_inside_its_own_node_is_refused(tmp_path: Path) -> None:
    path = _write(tmp_path, "workflow: &w\n  id: loop\n  tasks: [*w]\n")
    with pytest.raises(WorkflowError, match=r"flow\.yaml:3:\d+: YAML refused: the alias \*w is inside the node"):
        load_workflow(path)


def test_a_file_over_the_size_limit_is_refused_without_reading_it_all(tmp_path: Path) -> None:
    line = "# " + "x" * 1021 + "\n"  # 1 KiB a line
    path = _write(tmp_path, line * (MAX_WORKFLOW_BYTES // len(line) + 2))
    with pytest.raises(WorkflowError, match=r"flow\.yaml:1025:1: the file is larger than the 1 MiB"):
        load_workflow(path)
    assert validate_workflow(_write(tmp_path, line * 100, "small.yaml"), tools={})  # not refused for size


@pytest.mark.skipif(not Path("/dev/zero").exists(), reason="needs /dev/zero")
def test_an_endless_file_is_refused() -> None:
    started = time.perf_counter()
    with pytest.raises(WorkflowError, match="larger than the 1 MiB"):
        validate_workflow("/dev/zero", tools={})
    assert time.perf_counter() - started < 2.0


def test_anchors_and_merge_keys_within_the_limits_still_work(tmp_path: Path) -> None:
    loaded = load_workflow(_write(tmp_path, VALID))
    assert [(t.id, t.type, t.retries.count) for t in loaded.spec.tasks] == [("first", "llm_task", 2),
                                                                           ("second", "llm_task", 2)]
    assert loaded.position(("workflow", "tasks", 1, "depends_on", 0))[0] == 5
    assert validate_workflow(tmp_path / "flow.yaml", tools={}) == []


def test_a_var_value_bomb_stays_text() -> None:
    started = time.perf_counter()
    assert parse_var_value(BOMB) == BOMB
    assert time.perf_counter() - started < 2.0


def test_retries_are_bounded_in_count_and_wait(tmp_path: Path) -> None:
    """`retries: 1000000000` would call a failing model a billion times; a huge backoff overflowed."""
    from smoltui.orchestrator.workflow_spec import MAX_RETRY_WAIT, RetryPolicy

    text = "workflow:\n  id: w\n  tasks:\n    - {id: t, type: llm_task, prompt: p, retries: 1000000000}\n"
    problems = validate_workflow(_write(tmp_path, text), tools={})
    assert [(p.line, p.message) for p in problems] == [
        (4, "workflow.tasks[0].retries.count: input should be less than or equal to 100")]
    policy = RetryPolicy(count=100, delay=1, backoff=10)
    assert policy.wait_before(1) == 1 and policy.wait_before(100) == policy.wait_before(10_000) == MAX_RETRY_WAIT
