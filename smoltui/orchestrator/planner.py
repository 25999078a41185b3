"""The planner: a goal in words in, a workflow file out, drafted by the model.

The model is asked for JSON constrained to :func:`plan_schema`, a JSON schema built from the tools
that exist: a ``tool_call`` task names one of them (``tool`` is a constant per alternative) and its
``inputs`` follow that tool's own parameter schema, where a ``${...}`` template may stand in for any
value. On llama.cpp the schema becomes a grammar, so even a tiny model writes a well-formed draft.

The JSON is turned into a workflow document (:func:`to_document`), rendered as YAML in the seed's
shape (:func:`render_yaml`) and checked by :func:`~smoltui.orchestrator.workflow_validate.validate_text`.
When the draft has problems, they are fed back to the model for one more attempt. The result is a
:class:`Draft`: the YAML for the user to review and edit, and its problems (none when it is valid).
:func:`save_workflow` writes it to a folder under a fresh name, never over an existing file.

No Textual here: the ``plan`` command and the TUI's planner dialog both drive :class:`Planner`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
import json
import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from smoltui.backends.base import (
    Backend,
    CancelToken,
    ChatMessage,
    Finished,
    GenerationParams,
    TextDelta,
)
from smoltui.orchestrator.workflow_spec import Problem, load_yaml
from smoltui.orchestrator.workflow_validate import validate_text
from smoltui.tools.base import Tool

__all__ = [
    "DRAFT_FILE",
    "Draft",
    "DraftProgress",
    "Planner",
    "build_messages",
    "next_free_path",
    "parse_reply",
    "plan_schema",
    "render_yaml",
    "save_folders",
    "save_workflow",
    "slugify",
    "to_document",
    "workflow_stem",
]

DRAFT_FILE = "draft.yaml"
"""The file name problems of an unsaved draft are reported against."""

MAX_TASKS = 8
MAX_VARIABLES = 6
MAX_TOKENS = 1200
TEMPERATURE = 0.3
MIN_REPLY_TOKENS = 256

TASK_KEY_ORDER = ("id", "type", "tool", "depends_on", "inputs", "prompt", "system", "condition", "then", "else",
                  "outputs", "when", "retries", "timeout", "think", "schema")
WORKFLOW_KEY_ORDER = ("id", "name", "description", "variables", "tasks")

# What the grammar lets the model write (ids and names the templating language can refer to).
_TASK_ID = {"type": "string", "pattern": r"^[a-z][a-z0-9_]*$"}
_NAME = {"type": "string", "pattern": r"^[a-z][a-z0-9_]*$"}
_WORKFLOW_ID = {"type": "string", "pattern": r"^[a-z][a-z0-9-]*$"}
_TEMPLATE = {"type": "string", "pattern": r"^[$][{][A-Za-z0-9_. ]+[}]$"}
"""A value given as one ``${name}`` / ``${task_output.field}`` template (only known at run time)."""


# --- the schema the model writes to --------------------------------------------------------------


def plan_schema(tools: Mapping[str, Tool]) -> dict[str, Any]:
    """The JSON schema of a draft: only the given tools, each with its own inputs.

    The draft's shape is the workflow's, except ``variables`` is a list of ``{name, value}`` (so the
    grammar can bound it and keep the names usable in templates).
    """
    def ids(max_items: int, min_items: int = 0) -> dict[str, Any]:
        return {"type": "array", "items": _TASK_ID, "minItems": min_items, "maxItems": max_items}

    names = {"type": "array", "items": _NAME, "maxItems": 3}
    alternatives: list[dict[str, Any]] = []
    for name in sorted(tools):
        alternatives.append(_object({
            "id": _TASK_ID,
            "type": {"const": "tool_call"},
            "tool": {"const": name},
            "depends_on": ids(4),
            "inputs": tool_inputs_schema(tools[name]),
            "outputs": names,
        }))
    alternatives.append(_object({
        "id": _TASK_ID,
        "type": {"const": "llm_task"},
        "depends_on": ids(4),
        "prompt": {"type": "string", "minLength": 1},
        "outputs": names,
    }))
    alternatives.append(_object({
        "id": _TASK_ID,
        "type": {"const": "conditional"},
        "depends_on": ids(4),
        "condition": {"type": "string", "minLength": 1},
        "then": ids(3, 1),
        "else": ids(3),
        "outputs": names,
    }))
    variable = _object({
        "name": _NAME,
        "value": {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]},
    })
    return _object({
        "id": _WORKFLOW_ID,
        "name": {"type": "string"},
        "description": {"type": "string"},
        "variables": {"type": "array", "items": variable, "maxItems": MAX_VARIABLES},
        "tasks": {"type": "array", "items": {"anyOf": alternatives}, "minItems": 1, "maxItems": MAX_TASKS},
    })


def _object(properties: dict[str, Any], required: Sequence[str] | None = None) -> dict[str, Any]:
    """An object whose keys the grammar keeps in this order (and allows no others).

    Written as an ``allOf`` of one-property parts: a JSON object's keys may be sorted on the way to
    the grammar converter (the llama.cpp backend caches grammars under ``json.dumps(sort_keys=True)``),
    a list's items are not. llama.cpp's converter reads ``allOf`` parts in order, an optional part
    being one wrapped in ``anyOf``.
    """
    if not properties:
        return {"type": "object", "properties": {}, "additionalProperties": False}
    needed = set(properties) if required is None else set(required)
    parts: list[dict[str, Any]] = []
    for name, schema in properties.items():
        part: dict[str, Any] = {"properties": {name: schema}}
        parts.append({**part, "required": [name]} if name in needed else {"anyOf": [part]})
    return {"type": "object", "allOf": parts}


def tool_inputs_schema(item: Tool) -> dict[str, Any]:
    """The tool's parameter schema, ``$ref``s inlined, where any top-level value may be a template."""
    params = item.parameters
    resolved = _inline_refs(params, params.get("$defs") or params.get("definitions") or {})
    properties = resolved.get("properties")
    if resolved.get("type") != "object" or not isinstance(properties, dict):
        return {"type": "object"}  # a schema we cannot narrow: any object (validation still checks it)
    required = [name for name in resolved.get("required", []) if name in properties]
    ordered = sorted(properties, key=lambda name: name not in required)  # required inputs first
    return _object({name: _templatable(_strip_notes(properties[name])) for name in ordered}, required)


def _templatable(schema: Any) -> Any:
    """``schema`` or a ``${...}`` template: a plain string already takes one, anything takes ``{}``."""
    if not isinstance(schema, dict) or not schema or schema.get("type") == "string" and "enum" not in schema:
        return schema
    return {"anyOf": [schema, _TEMPLATE]}


def _inline_refs(schema: Any, defs: Mapping[str, Any], depth: int = 0) -> Any:
    if depth > 8:
        return {}
    if isinstance(schema, dict):
        ref = schema.get("$ref")
        if isinstance(ref, str) and ref.rsplit("/", 1)[-1] in defs:
            return _inline_refs(defs[ref.rsplit("/", 1)[-1]], defs, depth + 1)
        return {k: _inline_refs(v, defs, depth) for k, v in schema.items() if k not in ("$defs", "definitions")}
    if isinstance(schema, list):
        return [_inline_refs(v, defs, depth) for v in schema]
    return schema


def _strip_notes(schema: Any) -> Any:
    """Without titles, descriptions and defaults (the grammar ignores them; the prompt has them)."""
    if isinstance(schema, dict):
        return {k: _strip_notes(v) for k, v in schema.items()
                if k not in ("title", "description", "default", "examples")}
    if isinstance(schema, list):
        return [_strip_notes(v) for v in schema]
    return schema


# --- the prompt ----------------------------------------------------------------------------------

SYSTEM_PROMPT = """\
You plan workflows for smoltui. Turn the user's goal into a workflow: a few tasks that run in \
dependency order. Reply with one JSON object and nothing else.

Task types:
- tool_call: runs one tool with `inputs` (the tool's parameters).
- llm_task: asks the language model; `prompt` says what to write.
- conditional: checks `condition` (an expression such as `${{count > 10}}`) and runs the tasks in \
`then` when it holds, else those in `else`; those tasks list it in `depends_on`.

Every task has an `id` (lower_snake_case), `depends_on` (ids of tasks that must finish first) and \
`outputs` (a name for its result). A string can use `${{name}}` for a variable or for an output of a \
task it depends on, e.g. `${{summary}}` or `${{notes.stdout}}`. Put values the user may want to change \
(file names, limits) in `variables`. Keep it short: 2 to 5 tasks. File paths are relative to the \
workspace.

Tools (use only these):
{tools}

Example, for the goal "summarise notes.md into summary.md":
{example}"""

REPAIR_PROMPT = """\
That workflow has problems:
{problems}

Write the whole workflow again as one JSON object, with these problems fixed."""


def describe_tools(tools: Mapping[str, Tool]) -> str:
    """One line per tool: name, risk, the first sentence of its description and its inputs."""
    lines = []
    for name in sorted(tools):
        item = tools[name]
        summary = (item.description.strip().splitlines() or [name])[0]
        summary = re.split(r"(?<=\.)\s", summary, maxsplit=1)[0]
        params = item.parameters
        required = set(params.get("required", []))
        inputs = []
        for param, schema in (params.get("properties") or {}).items():
            kind = schema.get("type") if isinstance(schema, dict) else None
            if kind is None and isinstance(schema, dict) and "anyOf" in schema:
                kind = "/".join(str(s.get("type")) for s in schema["anyOf"] if isinstance(s, dict) and s.get("type")
                                and s.get("type") != "null")
            inputs.append(f"{param}" + (f" ({kind})" if kind else "") + ("*" if param in required else ""))
        lines.append(f"- {name} [{item.risk}]: {summary} Inputs: {', '.join(inputs) or 'none'}")
    lines.append("(* = required)")
    return "\n".join(lines)


def example_plan(tools: Mapping[str, Tool]) -> dict[str, Any]:
    tasks: list[dict[str, Any]] = []
    if "read_file" in tools:
        tasks.append({"id": "read_notes", "type": "tool_call", "tool": "read_file", "depends_on": [],
                      "inputs": {"path": "${notes_file}"}, "outputs": ["notes"]})
    tasks.append({"id": "summarise", "type": "llm_task", "depends_on": [t["id"] for t in tasks],
                  "prompt": "Summarise these notes in five bullet points:\n${notes}" if tasks
                  else "Summarise the notes in ${notes_file} in five bullet points.",
                  "outputs": ["summary"]})
    if "write_file" in tools:
        tasks.append({"id": "save_summary", "type": "tool_call", "tool": "write_file", "depends_on": ["summarise"],
                      "inputs": {"path": "${summary_file}", "content": "${summary}", "overwrite": True},
                      "outputs": ["saved"]})
    return {
        "id": "summarise-notes",
        "name": "Summarise notes",
        "description": "Summarise a notes file and save the summary",
        "variables": [{"name": "notes_file", "value": "notes.md"}, {"name": "summary_file", "value": "summary.md"}],
        "tasks": tasks,
    }


def build_messages(goal: str, tools: Mapping[str, Tool]) -> list[ChatMessage]:
    system = SYSTEM_PROMPT.format(tools=describe_tools(tools),
                                  example=json.dumps(example_plan(tools), ensure_ascii=False))
    return [ChatMessage("system", system), ChatMessage("user", f"Goal: {goal.strip()}")]


# --- from the reply to a workflow file -----------------------------------------------------------


def parse_reply(text: str) -> Any:
    """The JSON in the model's reply (the first ``{...}`` when there is text around it).

    Raises ``ValueError`` saying what is wrong.
    """
    text = text.strip()
    try:
        return json.loads(text)
    except json.JSONDecodeError as error:
        first = error
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        with contextlib.suppress(json.JSONDecodeError):
            return json.loads(text[start:end + 1])
    if not text:
        raise ValueError("the reply is empty")
    raise ValueError(f"the reply is not a JSON workflow ({first.msg} at character {first.pos})")


def to_document(data: Any) -> dict[str, Any]:
    """The draft's JSON as a workflow document (``{"workflow": {...}}``), keys in the seed's order.

    Only what the grammar cannot express is mended: ``depends_on`` ids that name no task (or the task
    itself) are dropped, and a task named in a conditional's ``then``/``else`` gets the conditional in
    its ``depends_on``. Everything else is kept as written, for validation to judge.
    """
    if isinstance(data, dict) and set(data) == {"workflow"}:
        data = data["workflow"]
    if not isinstance(data, dict):
        raise ValueError(f"the reply is a JSON {type(data).__name__}, not a workflow object")
    workflow: dict[str, Any] = {}
    for key in WORKFLOW_KEY_ORDER:
        if key in data:
            workflow[key] = data[key]
    workflow.setdefault("variables", {})
    workflow["variables"] = _variables(workflow["variables"])
    workflow.update({k: v for k, v in data.items() if k not in WORKFLOW_KEY_ORDER})
    tasks = workflow.get("tasks")
    if isinstance(tasks, list):
        workflow["tasks"] = _mend_tasks([_task(t) for t in tasks])
        # ``tasks`` last, as in the seed (anything unexpected stays before it, for validation to report).
        workflow["tasks"] = workflow.pop("tasks")
    return {"workflow": workflow}


def _variables(value: Any) -> Any:
    if isinstance(value, list) and all(isinstance(v, dict) and set(v) == {"name", "value"} for v in value):
        return {str(v["name"]): v["value"] for v in value}
    return value


def _task(raw: Any) -> Any:
    if not isinstance(raw, dict):
        return raw
    task = {k: raw[k] for k in TASK_KEY_ORDER if k in raw}
    task.update({k: v for k, v in raw.items() if k not in task})
    for key in ("depends_on", "outputs", "then", "else"):
        if task.get(key) == []:
            del task[key]
    if task.get("inputs") == {} and task.get("type") != "tool_call":
        del task["inputs"]
    return task


def _mend_tasks(tasks: list[Any]) -> list[Any]:
    known = {t["id"] for t in tasks if isinstance(t, dict) and isinstance(t.get("id"), str)}
    by_id = {t["id"]: t for t in reversed(tasks) if isinstance(t, dict) and isinstance(t.get("id"), str)}
    for task in tasks:
        if not isinstance(task, dict) or not isinstance(task.get("depends_on"), list):
            continue
        deps = [d for d in dict.fromkeys(task["depends_on"]) if d in known and d != task.get("id")]
        task["depends_on"] = deps
    for task in tasks:
        if not isinstance(task, dict) or task.get("type") != "conditional":
            continue
        for key in ("then", "else"):
            for target in task.get(key) or []:
                other = by_id.get(target) if isinstance(target, str) else None
                if other is None or other is task:
                    continue
                deps = other.get("depends_on")
                if isinstance(deps, list) and task.get("id") not in deps:
                    deps.append(task["id"])
                elif deps is None:
                    other["depends_on"] = [task["id"]]
    result = []
    for task in tasks:
        if isinstance(task, dict) and task.get("depends_on") == []:
            del task["depends_on"]
        result.append(_task(task) if isinstance(task, dict) else task)  # depends_on back in its place
    return result


def render_yaml(document: Mapping[str, Any], *, goal: str | None = None) -> str:
    """The document as YAML in the seed's shape: block style, a blank line between tasks,
    multi-line text as ``|`` blocks, short id lists inline (``depends_on: [a, b]``)."""
    import yaml

    text = yaml.dump(dict(document), Dumper=_yaml_dumper(), sort_keys=False, allow_unicode=True, width=100,
                     default_flow_style=False)
    lines = text.splitlines()
    out: list[str] = []
    if goal:
        out.append("# Drafted by smoltui plan for the goal: " + " ".join(goal.split())[:200])
    seen_task = False
    for line in lines:
        if line in ("  variables:", "  tasks:") or line.startswith(("  variables: ", "  tasks: ")):
            out.append("")
        if line.startswith("    - id: "):
            if seen_task:
                out.append("")
            seen_task = True
        out.append(line)
    return "\n".join(out) + "\n"


@functools.cache
def _yaml_dumper() -> type:
    import yaml

    class Dumper(yaml.SafeDumper):
        def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
            return super().increase_indent(flow, False)

    def represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        if "\n" in value.rstrip("\n") or value.endswith("\n") and len(value) > 1:
            return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")
        return dumper.represent_scalar("tag:yaml.org,2002:str", value)

    def represent_list(dumper: yaml.SafeDumper, value: list) -> yaml.Node:
        flow = (bool(value) and all(isinstance(v, str) and "\n" not in v for v in value)
                and sum(len(v) + 2 for v in value) <= 60)
        return dumper.represent_sequence("tag:yaml.org,2002:seq", value, flow_style=flow)

    Dumper.add_representer(str, represent_str)
    Dumper.add_representer(list, represent_list)
    return Dumper




# --- drafting ------------------------------------------------------------------------------------


@dataclass
class Draft:
    """What the planner came up with: the YAML to review, and what is still wrong with it."""

    goal: str
    yaml: str
    problems: list[Problem] = field(default_factory=list)
    attempts: int = 1
    reply: str = ""
    """The model's last reply, as it wrote it."""
    cancelled: bool = False

    @property
    def valid(self) -> bool:
        return not self.problems and not self.cancelled and bool(self.yaml)

    @property
    def stem(self) -> str:
        """The file name (without ``.yaml``) the draft would be saved under."""
        return workflow_stem(self.yaml)


@dataclass(frozen=True)
class DraftProgress:
    """How far a draft has come, for a front end to show while the model works (it can take a minute).

    ``phase`` is ``reading`` (the model reads the prompt; nothing written yet), ``writing`` (tokens
    arrive) or ``checking`` (the reply is parsed and validated). ``elapsed_s`` counts from the start
    of this try; ``writing_s`` from its first token.
    """

    attempt: int
    phase: str
    tokens: int = 0
    elapsed_s: float = 0.0
    writing_s: float = 0.0

    @property
    def tok_s(self) -> float:
        return self.tokens / self.writing_s if self.tokens > 1 and self.writing_s > 0 else 0.0

    def describe(self, elapsed_s: float | None = None) -> str:
        """One line: ``try 2 · 120 tokens · 8.3 tok/s · 15 s`` (``elapsed_s`` overrides the clock)."""
        seconds = self.elapsed_s if elapsed_s is None else elapsed_s
        parts = [] if self.attempt == 1 else [f"try {self.attempt} (repair)"]
        if self.phase == "reading":
            parts.append("reading the prompt")
        elif self.phase == "checking":
            parts.append(f"{self.tokens} tokens, checking the draft")
        else:
            parts.append(f"{self.tokens} token{'s' if self.tokens != 1 else ''}")
            if self.tok_s:
                parts.append(f"{self.tok_s:.1f} tok/s")
        parts.append(f"{seconds:.0f} s")
        return " · ".join(parts)


class Planner:
    """Drafts workflows with ``backend``, offering only ``tools``."""

    def __init__(self, backend: Backend, tools: Mapping[str, Tool], *, params: GenerationParams | None = None,
                 repair: bool = True, file: str = DRAFT_FILE) -> None:
        self.backend = backend
        self.tools = dict(tools)
        self.schema = plan_schema(self.tools)
        base = params or GenerationParams(max_tokens=MAX_TOKENS, temperature=TEMPERATURE)
        self.params = dataclasses.replace(base, think=False, tools=None, json_schema=self.schema)
        self.repair = repair
        self.file = file
        self._cancelled = False
        self._token: CancelToken | None = None

    def cancel(self) -> None:
        """Stop the draft in progress (from the event loop's thread or any other)."""
        self._cancelled = True
        if self._token is not None:
            self._token.cancel()

    def validate(self, text: str) -> list[Problem]:
        """Every problem of a workflow text (the user's edit of a draft, say)."""
        return validate_text(text, self.file, tools=self.tools)

    async def draft(
        self,
        goal: str,
        *,
        on_text: Callable[[str], None] | None = None,
        on_repair: Callable[[list[Problem]], None] | None = None,
        on_progress: Callable[[DraftProgress], None] | None = None,
    ) -> Draft:
        """Ask the model for a workflow for ``goal``; ask once more with the problems if it has any.

        ``on_text`` gets the reply as it streams (JSON), ``on_repair`` the problems of the first
        draft when a second one is asked for, ``on_progress`` a :class:`DraftProgress` when a try
        starts, on every token and when the reply is checked. :meth:`cancel` stops it (the draft
        says ``cancelled``).
        """
        goal = goal.strip()
        if not goal:
            raise ValueError("the goal is empty")
        self._cancelled = False
        messages = build_messages(goal, self.tools)
        draft = await self._attempt(goal, messages, 1, on_text, on_progress)
        if draft.valid or draft.cancelled or not self.repair:
            return draft
        if on_repair is not None:
            on_repair(draft.problems)
        problems = "\n".join(f"- {_plain(p)}" for p in draft.problems[:12])
        retry = [*messages, ChatMessage("assistant", draft.reply), ChatMessage("user", REPAIR_PROMPT.format(
            problems=problems))]
        if await self._room(retry) < MIN_REPLY_TOKENS:  # no room to show it its reply: just the problems
            retry = [*messages, ChatMessage("user", REPAIR_PROMPT.format(problems=problems))]
        second = await self._attempt(goal, retry, 2, on_text, on_progress)
        if not second.yaml and draft.yaml:  # the second reply was not even JSON: keep the first draft
            second.yaml = draft.yaml
        return second

    async def _room(self, messages: Sequence[ChatMessage]) -> int:
        try:
            used = await self.backend.count_tokens(messages, self.params)
        except Exception:  # a backend that cannot count: assume it fits
            return self.params.max_tokens
        return self.backend.context_size - used - 8

    async def _attempt(self, goal: str, messages: list[ChatMessage], attempt: int,
                       on_text: Callable[[str], None] | None,
                       on_progress: Callable[[DraftProgress], None] | None = None) -> Draft:
        # A token per attempt: a backend may set the one it was given when its stream ends.
        self._token = cancel = CancelToken()
        if self._cancelled:
            return Draft(goal, "", [], attempt, "", cancelled=True)
        started = time.monotonic()
        first: float | None = None

        def report(phase: str) -> None:
            if on_progress is not None:
                now = time.monotonic()
                on_progress(DraftProgress(attempt, phase, len(pieces), now - started,
                                          0.0 if first is None else now - first))

        pieces: list[str] = []
        report("reading")
        room = await self._room(messages)
        params = dataclasses.replace(self.params, max_tokens=max(16, min(self.params.max_tokens, room)))
        stop = "stop"
        try:
            async for event in self.backend.stream(messages, params, cancel):
                if isinstance(event, TextDelta):
                    if first is None:
                        first = time.monotonic()
                    pieces.append(event.text)
                    if on_text is not None:
                        on_text(event.text)
                    report("writing")
                elif isinstance(event, Finished):
                    stop = event.stats.stop_reason
        except BaseException:
            cancel.cancel()  # stop the generating thread too
            raise
        reply = "".join(pieces)
        if stop == "cancelled" or self._cancelled:
            return Draft(goal, "", [], attempt, reply, cancelled=True)
        report("checking")
        try:
            document = to_document(parse_reply(reply))
        except ValueError as error:
            why = str(error)
            if stop == "length":
                why = f"the reply stopped at the token limit ({params.max_tokens}) before the JSON was complete"
            return Draft(goal, "", [Problem(self.file, 1, 1, why)], attempt, reply)
        text = render_yaml(document, goal=goal)
        return Draft(goal, text, self.validate(text), attempt, reply)


def _plain(problem: Problem) -> str:
    """A problem without its position (the model wrote JSON, not the YAML the lines refer to)."""
    return problem.message


# --- saving --------------------------------------------------------------------------------------


def slugify(text: str, *, fallback: str = "workflow") -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60].strip("-")
    return slug or fallback


def workflow_stem(text: str) -> str:
    """The file name stem for a workflow text: its id (or name), slugified; ``workflow`` if neither."""
    import yaml

    try:
        data = load_yaml(text)  # a model wrote it: the same limits as any other YAML
    except yaml.YAMLError:
        data = None
    workflow = data.get("workflow") if isinstance(data, dict) else None
    if isinstance(workflow, dict):
        for key in ("id", "name"):
            value = workflow.get(key)
            if isinstance(value, str) and slugify(value, fallback=""):
                return slugify(value)
    return "workflow"


def save_folders(project_dir: Path | None, user_dir: Path) -> list[Path]:
    """Where a draft may be saved, the default first: the project's ``workflows/`` when the project
    has one (a draft's relative paths then reach the project's files, as its other workflows' do),
    then the user's own workflow folder."""
    folders: list[Path] = []
    if project_dir is not None and (Path(project_dir) / "workflows").is_dir():
        folders.append((Path(project_dir) / "workflows").resolve())
    user = Path(user_dir).expanduser()
    if all(user.resolve() != f for f in folders):
        folders.append(user)
    return folders


def _candidates(folder: Path, stem: str) -> Any:
    for n in itertools.count(1):
        name = stem if n == 1 else f"{stem}-{n}"
        if not (folder / f"{name}.yml").exists():
            yield folder / f"{name}.yaml"


def next_free_path(folder: Path, stem: str) -> Path:
    """Where :func:`save_workflow` would save ``stem`` now: ``stem.yaml``, else ``stem-2.yaml``, …"""
    return next(p for p in _candidates(Path(folder), slugify(stem)) if not p.exists())


def save_workflow(text: str, folder: Path | str, stem: str | None = None) -> Path:
    """Write ``text`` to ``folder/<stem>.yaml`` (or ``<stem>-2.yaml``, …): atomically, never over a file.

    The text is written to a hidden temporary file first and then linked to its name, which fails
    rather than replaces when the name is taken (then the next name is tried).
    """
    folder = Path(folder).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    stem = slugify(stem or workflow_stem(text))
    fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=f".{stem}.", suffix=".tmp")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        for target in _candidates(folder, stem):
            try:
                os.link(tmp, target)
            except FileExistsError:
                continue
            except OSError:  # no hard links here: exclusive creation still never overwrites
                try:
                    with open(target, "x", encoding="utf-8") as handle:
                        handle.write(text)
                except FileExistsError:
                    continue
            return target
        raise AssertionError("unreachable")
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
