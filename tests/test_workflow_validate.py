"""`smoltui validate`: every problem of a workflow at once, each at its line and column."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smoltui.orchestrator.workflow_validate import validate_text, validate_workflow
from smoltui.tools.builtins import builtin_tools
from smoltui.tools.seed_compat import SEED_TOOLS, TOOL_ALIASES
from tests.test_cli import run

REPO = Path(__file__).resolve().parents[1]
SEED = REPO / "workflows" / "data_analysis_workflow.yaml"
BROKEN_TEXT = """\
workflow:
  id: broken
  variables:
    input_file: data.csv
  tasks:
    - id: load
      type: tool_call
      tool: load_dat
      inputs:
        path: "${input_file}"
      outputs: [table]
    - id: load
      type: tool_call
      tool: read_file
      inputs:
        path: notes.txt
        max_bytes: lots
        encoding: utf-8
      outputs: [notes]
    - id: summarise
      type: llm_task
      depend_on: [load]
      prompt: "Summarise ${table}"
    - id: a
      type: llm_task
      depends_on: [c, lod]
      prompt: hi
    - id: b
      type: llm_task
      depends_on: [a]
      prompt: hi
    - id: c
      type: llm_task
      depends_on: [b]
      prompt: hi
      schema: {type: objekt}
      retries: {count: 2, delay: soon}
    - id: report
      type: llm_task
      depends_on: [load]
      prompt: |
        Write a report on
        the ${tabel}, please.
      outputs: [report]
    - id: pick
      type: conditional
      condition: "${notes} == ''"
      then: [summarize]
    - id: nothing
      type: tool_call
"""
TOOLS = {t.name: t for t in builtin_tools() + SEED_TOOLS}



@pytest.fixture
def broken(tmp_path: Path) -> Path:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN_TEXT)
    return path


BROKEN_PROBLEMS = [
    "8:13: unknown tool `load_dat` (did you mean `load_data`?)",
    "12:11: duplicate task id `load` (first used on line 6)",
    "17:20: input `max_bytes` of tool `read_file`: input should be a valid integer, unable to parse string as an integer",
    "18:19: tool `read_file` has no input `encoding` (inputs: path, max_bytes)",
    "22:7: unknown key `depend_on` (did you mean `depends_on`?)",
    "26:20: dependency cycle: a -> c -> b -> a (each task depends on the next)",
    "26:23: task `a` depends on unknown task `lod` (did you mean `load`?)",
    "36:22: invalid JSON schema at `type`: 'objekt' is not valid under any of the given schemas",
    "37:34: workflow.tasks[5].retries.delay: input should be a valid number",
    "43:15: template in `prompt` of `report` names unknown `tabel`: not a variable or an output of a task it "
    "depends on (did you mean `table`?)",
    "47:21: template in `condition` of `pick` names `notes`, an output of `load`, which `pick` does not depend on",
    "48:14: `then` of `pick` names unknown task `summarize` (did you mean `summarise`?)",
    "49:7: tool_call task `nothing` needs `tool`",
]


def test_every_problem_at_once_in_file_order(broken: Path) -> None:
    problems = validate_workflow(broken, tools=TOOLS)
    assert [str(p) for p in problems] == [f"{broken}:{line}" for line in BROKEN_PROBLEMS]


def test_the_seed_workflow_is_valid_with_the_seed_tool_names() -> None:
    if not SEED_TOOLS:
        pytest.skip("pandas, pyarrow or matplotlib missing: the seed's tools are not offered")
    assert set(TOOL_ALIASES) == {t.name for t in SEED_TOOLS}
    assert validate_workflow(SEED, tools=TOOLS) == []


def test_without_the_aliases_the_seed_tools_are_unknown() -> None:
    tools = {t.name: t for t in builtin_tools()}
    messages = [p.message for p in validate_workflow(SEED, tools=tools)]
    assert any(m.startswith("unknown tool `pandas_loader`") for m in messages)
    assert any(m.startswith("unknown tool `matplotlib_chart`") for m in messages)


def test_yaml_syntax_error_has_its_position() -> None:
    text = "workflow:\n  id: w\n  tasks: [\n    - id: a\n"
    problems = validate_text(text, "w.yaml", tools=TOOLS)
    assert len(problems) == 1
    assert str(problems[0]).startswith("w.yaml:4:5: YAML syntax error: ")


def test_not_a_workflow_at_all() -> None:
    assert [str(p) for p in validate_text("- 1\n- 2\n", "w.yaml", tools=TOOLS)] == [
        "w.yaml:1:1: input should be a valid dictionary or instance of WorkflowDocument"]
    assert [str(p) for p in validate_text("tasks: []\n", "w.yaml", tools=TOOLS)] == [
        "w.yaml:1:1: missing required field `workflow`", "w.yaml:1:1: unknown key `tasks`"]


def test_templates_see_variables_and_transitive_outputs_only() -> None:
    text = """workflow:
  id: w
  variables: {topic: cats}
  tasks:
    - {id: a, type: llm_task, prompt: "about ${topic}", outputs: [draft]}
    - {id: b, type: llm_task, depends_on: [a], prompt: "edit ${draft}", outputs: [edited]}
    - {id: c, type: llm_task, depends_on: [b], prompt: "${draft} ${edited.upper()}", when: "edited != ''"}
    - {id: d, type: tool_call, tool: write_file, depends_on: [c], inputs: {path: "${topic}.md", content: "${edited}"}}
"""
    assert validate_text(text, "w.yaml", tools=TOOLS) == []


def test_template_input_stands_in_for_a_required_argument() -> None:
    text = """workflow:
  id: w
  variables: {n: 3}
  tasks:
    - {id: a, type: tool_call, tool: read_file, inputs: {max_bytes: "${n}"}}
"""
    assert [str(p) for p in validate_text(text, "w.yaml", tools=TOOLS)] == [
        "w.yaml:5:57: tool `read_file` needs input `path`"]


def test_cli_exit_codes(cli_env: dict[str, str], tmp_path: Path, broken: Path) -> None:
    good = run(cli_env, "validate", str(SEED))
    if SEED_TOOLS:
        assert good.returncode == 0, good.stdout + good.stderr
        assert good.stdout == f"{SEED}: valid (4 tasks)\n"
    bad = run(cli_env, "validate", str(broken))
    assert bad.returncode == 2
    assert bad.stdout.splitlines() == [f"{broken}:{line}" for line in BROKEN_PROBLEMS] + [f"{broken}: 13 problems"]
    as_json = run(cli_env, "validate", "--json", str(broken))
    assert as_json.returncode == 2
    rows = json.loads(as_json.stdout)
    assert rows[0] == {"file": str(broken), "line": 8, "col": 13,
                       "message": "unknown tool `load_dat` (did you mean `load_data`?)"}
    missing = run(cli_env, "validate", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2
    assert missing.stdout == ""
    assert missing.stderr.strip().splitlines() == [f"smoltui: {tmp_path / 'nope.yaml'}: no such file"]


def test_template_syntax_error_is_reported() -> None:
    text = 'workflow:\n  id: w\n  tasks:\n    - {id: a, type: llm_task, prompt: "x ${a +}"}\n'
    [problem] = validate_text(text, "w.yaml", tools=TOOLS)
    assert (problem.line, problem.col) == (4, 39)
    assert problem.message.startswith("template error in `prompt` of `a`: template syntax error in ${a +}")


def test_seed_adapters_load_and_chart(tmp_path: Path) -> None:
    if not SEED_TOOLS:
        pytest.skip("pandas, pyarrow or matplotlib missing")
    import asyncio

    from smoltui.tools.base import ToolContext
    from smoltui.tools.registry import ToolRegistry

    registry = ToolRegistry(SEED_TOOLS)
    ctx = ToolContext(workspace=SEED.parent, artifacts_dir=tmp_path)
    loaded = asyncio.run(registry.call("pandas_loader", {"file_path": "data/sales_data.csv"}, ctx))
    assert loaded.ok, loaded.error
    assert loaded.content["rows"] == 12
    drawn = asyncio.run(registry.call("matplotlib_chart", {"data": loaded.content, "insights": "Sales"}, ctx))
    assert drawn.ok, drawn.error
    assert "bar chart of units, revenue by date" in drawn.content["summary"]
    assert (tmp_path / drawn.content["image"]).read_bytes().startswith(b"\x89PNG")
