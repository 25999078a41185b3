"""The planner: goal → schema-constrained JSON → validated YAML → a saved workflow file.

Scripted replies make the drafting deterministic; one real-model test checks that the grammar makes
even the bundled 135M model write a draft that fits the schema, names only existing tools, and
saves as a loadable workflow. The CLI is run as a user runs it (a subprocess, a private home).
"""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from smoltui.backends.base import GenerationParams
from smoltui.backends.scripted import ScriptedBackend
from smoltui.config import Config
from smoltui.core import build_tool_registry
from smoltui.orchestrator.planner import (
    DraftProgress,
    Planner,
    next_free_path,
    parse_reply,
    plan_schema,
    render_yaml,
    save_folders,
    save_workflow,
    to_document,
    workflow_stem,
)
from smoltui.orchestrator.workflow_spec import load_workflow
from smoltui.orchestrator.workflow_validate import validate_workflow
from tests.conftest import PYTHON

TOOLS = dict(build_tool_registry(Config()))  # what a core offers workflows (built-ins, seed tools, plugins)

VALID = {
    "id": "notes-digest",
    "name": "Notes digest",
    "description": "Summarise the notes and save the summary",
    "variables": [{"name": "notes_file", "value": "notes.md"}, {"name": "out_file", "value": "digest.md"}],
    "tasks": [
        {"id": "read_notes", "type": "tool_call", "tool": "read_file", "depends_on": [],
         "inputs": {"path": "${notes_file}"}, "outputs": ["notes"]},
        {"id": "summarise", "type": "llm_task", "depends_on": ["read_notes"],
         "prompt": "Summarise these notes:\n${notes}", "outputs": ["summary"]},
        {"id": "save", "type": "tool_call", "tool": "write_file", "depends_on": ["summarise"],
         "inputs": {"path": "${out_file}", "content": "${summary}", "overwrite": True}, "outputs": []},
    ],
}


def reply(data: dict) -> str:
    return json.dumps(data, ensure_ascii=False)


def with_task(index: int, **changes: object) -> dict:
    data = json.loads(json.dumps(VALID))
    data["tasks"][index].update(changes)
    return data


def planner(*replies: str) -> tuple[Planner, ScriptedBackend]:
    backend = ScriptedBackend(list(replies), delay_s=0)
    return Planner(backend, TOOLS), backend


# --- the schema ---------------------------------------------------------------------------------


def _consts(schema: object, key: str) -> set[str]:
    found: set[str] = set()
    if isinstance(schema, dict):
        for name, value in schema.items():
            if name == "properties" and isinstance(value, dict) and isinstance(value.get(key), dict) \
                    and "const" in value[key]:
                found.add(value[key]["const"])
            found |= _consts(value, key)
    elif isinstance(schema, list):
        for item in schema:
            found |= _consts(item, key)
    return found


def test_schema_offers_exactly_the_existing_tools_and_rejects_others() -> None:
    schema = plan_schema(TOOLS)
    assert _consts(schema, "tool") == set(TOOLS)
    jsonschema.validate(VALID, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(with_task(0, tool="delete_everything"), schema)
    with pytest.raises(jsonschema.ValidationError):  # read_file has no `url` input
        jsonschema.validate(with_task(0, inputs={"url": "http://example.com"}), schema)
    # A template may stand in for a value of any type (overwrite is a boolean).
    jsonschema.validate(with_task(2, inputs={"path": "x", "content": "y", "overwrite": "${flag}"}), schema)


def test_schema_converts_to_a_grammar_with_every_builtin_tool_keeping_key_order() -> None:
    pytest.importorskip("llama_cpp")
    from llama_cpp import LlamaGrammar
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    # The llama.cpp backend serialises schemas with sort_keys=True: the key order must survive it.
    text = json.dumps(plan_schema(TOOLS), sort_keys=True)
    LlamaGrammar.from_json_schema(text, verbose=False)
    rules = dict(line.split(" ::= ", 1) for line in json_schema_to_gbnf(text).splitlines() if " ::= " in line)
    root = rules["root"]
    assert [root.index(f"{k}-kv") for k in ("id", "name", "description", "variables", "tasks")] == sorted(
        root.index(f"{k}-kv") for k in ("id", "name", "description", "variables", "tasks"))
    read_file = next(body for body in rules.values() if '"\\"read_file\\""' in body)
    task_rule = next(name for name, body in rules.items() if body == read_file)[: -len("-tool")]
    body = rules[task_rule]
    assert body.index("-id-kv") < body.index("-type-kv") < body.index("-tool-kv") < body.index("-inputs-kv")


# --- drafting -----------------------------------------------------------------------------------


async def test_a_valid_draft_is_yaml_in_the_seed_shape() -> None:
    plan, backend = planner(reply(VALID))
    streamed: list[str] = []
    draft = await plan.draft("summarise my notes", on_text=streamed.append)
    assert draft.valid and draft.attempts == 1, draft.problems
    assert "".join(streamed) == reply(VALID)
    system = backend.prompts[0][0].content
    assert all(f"- {name} [" in system for name in TOOLS)
    assert backend.prompts[0][1].content == "Goal: summarise my notes"
    data = yaml.safe_load(draft.yaml)
    assert list(data) == ["workflow"]
    assert list(data["workflow"]) == ["id", "name", "description", "variables", "tasks"]
    assert data["workflow"]["variables"] == {"notes_file": "notes.md", "out_file": "digest.md"}
    assert [list(t) for t in data["workflow"]["tasks"]] == [
        ["id", "type", "tool", "inputs", "outputs"],
        ["id", "type", "depends_on", "prompt", "outputs"],
        ["id", "type", "tool", "depends_on", "inputs"],
    ]
    assert draft.yaml.startswith("# Drafted by smoltui plan for the goal: summarise my notes\n")
    assert "      prompt: |-\n        Summarise these notes:\n        ${notes}\n" in draft.yaml
    assert "      depends_on: [read_notes]\n" in draft.yaml
    assert draft.stem == "notes-digest"


async def test_drafting_reports_its_progress_through_every_try() -> None:
    broken = with_task(1, prompt="Summarise ${notez}")
    plan, _ = planner(reply(broken), reply(VALID))
    seen: list[DraftProgress] = []
    draft = await plan.draft("summarise my notes", on_progress=seen.append)
    assert draft.valid and draft.attempts == 2
    for attempt in (1, 2):
        mine = [p for p in seen if p.attempt == attempt]
        phases = [p.phase for p in mine]
        # reading the prompt first, then one report per token, then the check
        assert phases[0] == "reading" and phases[-1] == "checking" and set(phases[1:-1]) == {"writing"}
        tokens = [p.tokens for p in mine[1:-1]]
        assert tokens == list(range(1, len(tokens) + 1))
        assert all(b.elapsed_s >= a.elapsed_s for a, b in zip(mine, mine[1:], strict=False))
    assert "try 2 (repair)" in seen[-1].describe()
    line = DraftProgress(1, "writing", 120, 15.2, 12.0).describe()
    assert line == "120 tokens · 10.0 tok/s · 15 s"
    assert DraftProgress(1, "reading", 0, 41.0).describe() == "reading the prompt · 41 s"


def test_drafts_save_in_the_projects_workflows_when_it_has_one(tmp_path: Path) -> None:
    user = tmp_path / "data" / "workflows"
    project = tmp_path / "project"
    project.mkdir()
    assert save_folders(project, user) == [user]  # no workflows/ in the project: the user's folder
    (project / "workflows").mkdir()
    assert save_folders(project, user) == [(project / "workflows").resolve(), user]
    user.mkdir(parents=True)
    assert save_folders(user.parent, user) == [user.resolve()]  # the same folder is offered once


async def test_an_invalid_draft_is_repaired_with_its_problems_fed_back() -> None:
    broken = with_task(1, prompt="Summarise ${notez}")  # names nothing that exists
    plan, backend = planner(reply(broken), reply(VALID))
    seen: list[list] = []
    draft = await plan.draft("summarise my notes", on_repair=seen.append)
    assert draft.valid and draft.attempts == 2
    assert len(seen) == 1 and "notez" in seen[0][0].message
    retry = backend.prompts[1]
    assert [m.role for m in retry] == ["system", "user", "assistant", "user"]
    assert retry[2].content == reply(broken)
    assert "notez" in retry[3].content and "did you mean `notes`" in retry[3].content


async def test_an_unknown_tool_is_a_problem_even_after_the_repair() -> None:
    bad = reply(with_task(0, tool="delete_everything"))
    plan, backend = planner(bad, bad)
    draft = await plan.draft("clean up")
    assert not draft.valid and draft.attempts == 2 and len(backend.prompts) == 2
    assert any("unknown tool `delete_everything`" in p.message for p in draft.problems)
    assert "tool: delete_everything" in draft.yaml  # shown for the user to fix


async def test_a_reply_that_is_not_json_says_so() -> None:
    plan, _ = planner("Sure! Here is a plan: read the notes, then summarise.")
    draft = await plan.draft("summarise")
    assert not draft.valid and draft.yaml == "" and draft.attempts == 2
    assert draft.problems[0].message.startswith("the reply is not a JSON workflow")
    assert draft.reply.startswith("Sure!")


async def test_without_repair_there_is_one_attempt() -> None:
    plan, backend = planner(reply(with_task(0, tool="nope")))
    plan.repair = False
    draft = await plan.draft("x")
    assert draft.attempts == 1 and len(backend.prompts) == 1 and draft.problems


async def test_cancel_stops_the_draft() -> None:
    backend = ScriptedBackend([reply(VALID)], delay_s=0.01)
    plan = Planner(backend, TOOLS)
    streaming = asyncio.Event()
    task = asyncio.create_task(plan.draft("x", on_text=lambda _: streaming.set()))
    await asyncio.wait_for(streaming.wait(), 5)
    plan.cancel()
    draft = await asyncio.wait_for(task, 5)
    assert draft.cancelled and not draft.valid and len(backend.prompts) == 1


async def test_an_empty_goal_is_refused() -> None:
    plan, _ = planner(reply(VALID))
    with pytest.raises(ValueError):
        await plan.draft("   ")


def test_json_is_mended_only_where_the_grammar_cannot_help() -> None:
    data = json.loads(json.dumps(VALID))
    data["tasks"][1]["depends_on"] = ["read_notes", "read_notes", "ghost", "summarise"]
    data["tasks"].insert(1, {"id": "check", "type": "conditional", "depends_on": ["read_notes"],
                             "condition": "${notes | length > 10}", "then": ["summarise"], "else": [],
                             "outputs": []})
    document = to_document(data)
    tasks = document["workflow"]["tasks"]
    assert tasks[2]["depends_on"] == ["read_notes", "check"]
    assert "else" not in tasks[1] and "outputs" not in tasks[1]
    text = render_yaml(document)
    assert validate_workflow_text(text) == []
    assert to_document({"workflow": VALID}) == to_document(VALID)
    with pytest.raises(ValueError):
        to_document(["not", "a", "workflow"])


def validate_workflow_text(text: str) -> list:
    from smoltui.orchestrator.workflow_validate import validate_text

    return validate_text(text, "draft.yaml", tools=TOOLS)


def test_parse_reply_finds_the_json_in_chatter() -> None:
    assert parse_reply('Here you go:\n```json\n{"id": "x"}\n```') == {"id": "x"}
    with pytest.raises(ValueError, match="empty"):
        parse_reply("  ")


# --- saving -------------------------------------------------------------------------------------


def test_save_never_overwrites_and_leaves_no_temporary_files(tmp_path: Path) -> None:
    text = render_yaml(to_document(VALID))
    folder = tmp_path / "mine"
    first = save_workflow(text, folder)
    assert first == folder / "notes-digest.yaml"
    first.write_text("# mine, hands off\n", encoding="utf-8")
    (folder / "notes-digest-2.yml").write_text("# also mine\n", encoding="utf-8")
    assert next_free_path(folder, "notes-digest") == folder / "notes-digest-3.yaml"
    second = save_workflow(text, folder)
    assert second == folder / "notes-digest-3.yaml"
    assert first.read_text(encoding="utf-8") == "# mine, hands off\n"
    assert (folder / "notes-digest-2.yml").read_text(encoding="utf-8") == "# also mine\n"
    assert sorted(p.name for p in folder.iterdir()) == ["notes-digest-2.yml", "notes-digest-3.yaml",
                                                        "notes-digest.yaml"]
    assert save_workflow(text, folder, "Odd Name / 2!").name == "odd-name-2.yaml"


def test_a_saved_draft_loads_back_as_the_same_workflow(tmp_path: Path) -> None:
    text = render_yaml(to_document(VALID), goal="summarise\nmy notes")
    path = save_workflow(text, tmp_path)
    spec = load_workflow(path).spec
    assert spec.id == "notes-digest" and spec.variables == {"notes_file": "notes.md", "out_file": "digest.md"}
    assert [(t.id, t.type, t.tool, t.depends_on) for t in spec.tasks] == [
        ("read_notes", "tool_call", "read_file", []),
        ("summarise", "llm_task", None, ["read_notes"]),
        ("save", "tool_call", "write_file", ["summarise"]),
    ]
    assert spec.tasks[1].prompt == "Summarise these notes:\n${notes}"
    assert validate_workflow(path, tools=TOOLS) == []
    assert workflow_stem("not: [yaml") == "workflow"


# --- the real model -----------------------------------------------------------------------------


@pytest.mark.llama
async def test_the_bundled_model_drafts_a_loadable_workflow_of_existing_tools(llama_backend, tmp_path: Path) -> None:
    params = GenerationParams(max_tokens=700, temperature=0.2, seed=7)
    plan = Planner(llama_backend, TOOLS, params=params, repair=False)
    draft = await plan.draft("Read notes.md and write a short summary of it to summary.md")
    data = json.loads(draft.reply)  # the grammar made it complete, valid JSON ...
    jsonschema.validate(data, plan_schema(TOOLS))  # ... that fits the schema
    assert draft.yaml
    used = {t["tool"] for t in data["tasks"] if t["type"] == "tool_call"}
    assert used <= set(TOOLS)
    assert not [p for p in draft.problems if "unknown tool" in p.message or "unknown key" in p.message]
    path = save_workflow(draft.yaml, tmp_path)
    spec = load_workflow(path).spec  # structurally a workflow (its meaning may be silly)
    assert len(spec.tasks) == len(data["tasks"]) >= 1


# --- the command line ---------------------------------------------------------------------------


def run(env: dict[str, str], *args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, "-m", "smoltui", *args], env=env, input=stdin, capture_output=True, text=True,
                          timeout=timeout, stdin=None if stdin is not None else subprocess.DEVNULL)


def test_cli_plan_with_a_model_that_writes_no_json_exits_2_and_saves_nothing(
        cli_env: dict[str, str], home: Path) -> None:
    result = run(cli_env, "plan", "--model", "scripted", "--yes", "summarise my notes")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert "draft.yaml:1:1: the reply is not a JSON workflow" in result.stderr
    assert "asking the model to fix" in result.stderr
    assert result.stdout.startswith("Hello! I am a **scripted** model")
    assert not (home / "workflows").exists()


def test_cli_plan_json_reports_problems_and_no_path(cli_env: dict[str, str], home: Path) -> None:
    result = run(cli_env, "plan", "--model", "scripted", "--json", "--save", stdin="summarise my notes\n")
    assert result.returncode == 2, result.stderr
    payload = json.loads(result.stdout)
    assert set(payload) == {"yaml", "problems", "path", "reply"}
    assert payload["path"] is None and payload["yaml"] == ""
    assert payload["problems"][0]["message"].startswith("the reply is not a JSON workflow")


def test_cli_plan_without_a_goal_is_a_one_line_error(cli_env: dict[str, str]) -> None:
    result = run(cli_env, "plan", "--model", "scripted", stdin="   \n")
    assert result.returncode == 1
    assert result.stderr.strip() == "smoltui: nothing to plan: the goal is empty"


@pytest.mark.llama
@pytest.mark.slow  # a second model load and up to two drafts in a subprocess
def test_cli_plan_with_the_bundled_model(cli_env: dict[str, str], tmp_path: Path) -> None:
    out = tmp_path / "saved"
    result = run(cli_env, "plan", "--json", "--yes", "--out", str(out), "--max-tokens", "700", "--threads", "2",
                 "--n-ctx", "2048", "Read notes.md and write a short summary of it to summary.md", timeout=600)
    assert "Traceback" not in result.stderr
    payload = json.loads(result.stdout)
    assert result.returncode == (2 if payload["problems"] else 0), result.stderr
    assert "workflow" in yaml.safe_load(payload["yaml"])
    if payload["problems"]:
        assert payload["path"] is None and not out.exists()
    else:
        assert Path(payload["path"]).parent == out
        assert load_workflow(payload["path"]).spec.tasks


def test_cli_review_edits_in_the_editor_checks_again_then_saves(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    import io
    import sys

    from smoltui.cli import plan as plan_cli

    # An "editor" that breaks the file on its first run and mends it on the second.
    editor = tmp_path / "editor.py"
    editor.write_text(
        "import pathlib, sys\n"
        "p = pathlib.Path(sys.argv[1]); t = p.read_text()\n"
        "p.write_text(t.replace('tool: read_file', 'tool: reed_file') if 'read_file' in t\n"
        "             else t.replace('tool: reed_file', 'tool: read_file'))\n", encoding="utf-8")
    monkeypatch.setenv("VISUAL", f"{PYTHON} {editor}")
    monkeypatch.setattr(sys, "stdin", io.StringIO("e\ne\ny\n"))
    text = render_yaml(to_document(VALID))
    folder = tmp_path / "mine"
    final, problems, path = plan_cli._review(text, [], folder, plan_cli._Checker(TOOLS))
    err = capsys.readouterr().err
    assert "unknown tool `reed_file` (did you mean `read_file`?)" in err
    assert f"save to {folder / 'notes-digest.yaml'}? [y/N/e(dit)]" in err
    assert "the draft has problems: edit it? [e(dit)/N]" in err
    assert problems == [] and path == folder / "notes-digest.yaml"
    assert path.read_text(encoding="utf-8") == final == text
    monkeypatch.setattr(sys, "stdin", io.StringIO("\n"))  # the default answer is no
    assert plan_cli._review(text, [], folder, plan_cli._Checker(TOOLS))[2] is None
    assert sorted(p.name for p in folder.iterdir()) == ["notes-digest.yaml"]
