"""Every problem in a workflow file at once, each as ``FILE:LINE:COL: message``.

Structure first (YAML syntax, unknown keys, missing fields, wrong types: from the pydantic models in
:mod:`workflow_spec`), then the meaning, checked on every task that is itself well formed, so one bad
task does not hide the problems of the others: duplicate ids, unknown ``depends_on`` / ``then`` /
``else`` ids, dependency cycles, unknown tools, inputs that do not fit the tool's schema, templates that
name something that is neither a variable nor an output of an upstream task, invalid JSON schemas.

Conditions (``when``, ``condition``) are expressions with or without the ``${...}`` around them.
"""

from __future__ import annotations

import difflib
import graphlib
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from smoltui.orchestrator.workflow_spec import (
    Positions,
    Problem,
    Task,
    WorkflowError,
    YamlPath,
    model_problems,
    parse_yaml,
    read_workflow_text,
    yaml_error_problem,
)
from smoltui.tools.base import Tool

__all__ = ["Problem", "validate_text", "validate_workflow"]

MAX_CYCLES = 20
MAX_HINT_COMPARISONS = 5_000
"""Names compared in all for did-you-mean hints in one file (difflib's cost grows with each pair)."""
MAX_HINT_NAME = 100
"""Longer names get no did-you-mean hint (comparing two strings costs their lengths multiplied)."""
MAX_NAMES_PER_FIELD = 10
"""Unknown names reported one by one in one field; the rest are counted in one more problem."""


def validate_workflow(path: Path | str, *, tools: Mapping[str, Tool]) -> list[Problem]:
    """All problems of the workflow file at ``path``, sorted by position; [] when it is valid.

    A file that cannot be read at all raises :class:`WorkflowError`.
    """
    return validate_text(read_workflow_text(path), str(path), tools=tools)


def validate_text(text: str, file: str, *, tools: Mapping[str, Tool]) -> list[Problem]:
    import yaml

    try:
        data, positions = parse_yaml(text)
    except yaml.YAMLError as error:
        return [yaml_error_problem(file, error)]
    problems = model_problems(file, data, positions)
    if isinstance(data, dict) and isinstance(data.get("workflow"), dict):
        problems += _Checker(file, text, data["workflow"], positions, tools).run()
    return sorted(set(problems))


def _did_you_mean(name: str, options: list[str]) -> str:
    close = difflib.get_close_matches(name, options, n=1)
    return f" (did you mean `{close[0]}`?)" if close else ""


class _Hints:
    """Did-you-mean hints on a budget: a file with thousands of misspelt ids costs no more than
    :data:`MAX_HINT_COMPARISONS` comparisons, after which problems come without a hint."""

    def __init__(self) -> None:
        self.left = MAX_HINT_COMPARISONS

    def __call__(self, name: str, options: Iterable[str]) -> str:
        if len(name) > MAX_HINT_NAME or self.left <= 0:
            return ""
        candidates = [o for o in options if len(o) <= MAX_HINT_NAME]  # (ties: difflib picks by name)
        self.left -= len(candidates)
        return _did_you_mean(name, candidates) if self.left >= 0 else ""


class _Checker:
    def __init__(self, file: str, text: str, workflow: dict[str, Any], positions: Positions,
                 tools: Mapping[str, Tool]) -> None:
        self.file = file
        self.lines = text.splitlines()
        self.positions = positions
        self.tools = tools
        self.problems: list[Problem] = []
        self.did_you_mean = _Hints()
        variables = workflow.get("variables")
        self.variables = set(variables) if isinstance(variables, dict) else set()
        raw_tasks = workflow.get("tasks")
        raw_tasks = raw_tasks if isinstance(raw_tasks, list) else []
        # Every id written in the file counts as known (so a broken task causes no "unknown id" echo);
        # only the well-formed tasks are checked further.
        self.first_index: dict[str, int] = {}
        self.tasks: dict[int, Task] = {}
        self.no_templates: set[int] = set()
        for index, raw in enumerate(raw_tasks):
            task_id = raw.get("id") if isinstance(raw, dict) else None
            if isinstance(task_id, str):
                if task_id in self.first_index:
                    first_line = self.positions.of(("workflow", "tasks", self.first_index[task_id], "id"))[0]
                    self.report(("workflow", "tasks", index, "id"),
                                f"duplicate task id `{task_id}` (first used on line {first_line})")
                else:
                    self.first_index[task_id] = index
            task, dropped = _salvage(raw)
            if task is not None:
                self.tasks[index] = task
                # A dropped unknown key may be a misspelt depends_on: its templates would only echo that.
                if not dropped <= set(Task.model_fields) - {"depends_on"} | {"schema", "else"}:
                    self.no_templates.add(index)

    def report(self, path: YamlPath, message: str, *, at: tuple[int, int] | None = None) -> None:
        line, col = at or self.positions.of(path)
        self.problems.append(Problem(self.file, line, col, message))

    def run(self) -> list[Problem]:
        known = list(self.first_index)
        for index, task in self.tasks.items():
            base = ("workflow", "tasks", index)
            for j, dep in enumerate(task.depends_on):
                if dep not in self.first_index:
                    self.report((*base, "depends_on", j),
                                f"task `{task.id}` depends on unknown task `{dep}`{self.did_you_mean(dep, known)}")
            self.check_tool(base, task)
            self.check_schema(base, task)
        self.check_cycles()
        upstream = self.upstream()
        self.check_outputs()
        for index, task in self.tasks.items():
            self.check_branches(("workflow", "tasks", index), task, upstream)
            if index not in self.no_templates:
                self.check_templates(("workflow", "tasks", index), task, upstream)
        return self.problems

    # --- graph --------------------------------------------------------------------------------

    def graph(self) -> dict[str, list[str]]:
        """Task id → ids it depends on (first definition of each id, known ids only)."""
        return {task.id: [d for d in task.depends_on if d in self.first_index]
                for index, task in self.tasks.items() if self.first_index.get(task.id) == index}

    def check_cycles(self) -> None:
        graph = self.graph()
        order = {task_id: i for i, task_id in enumerate(self.first_index)}
        for _ in range(MAX_CYCLES):
            try:
                graphlib.TopologicalSorter(graph).prepare()
                return
            except graphlib.CycleError as error:
                # graphlib lists each node before the one that depends on it; we print "depends on" order.
                cycle = list(reversed(error.args[1]))[:-1]
                start = min(range(len(cycle)), key=lambda i: order.get(cycle[i], 0))
                cycle = cycle[start:] + cycle[:start]
                first, second = cycle[0], cycle[1 % len(cycle)]
                index = self.first_index[first]
                deps = self.tasks[index].depends_on
                where = ("workflow", "tasks", index, "depends_on", deps.index(second))
                shown = " -> ".join([*cycle, first])
                self.report(where, f"dependency cycle: {shown} (each task depends on the next)")
                graph[first] = [d for d in graph[first] if d != second]  # break it, look for more

    def upstream(self) -> dict[str, set[str]]:
        """Task id → every task it depends on, directly or not (cycles tolerated).

        Worked out once per group of tasks that depend on each other, dependencies first, so a
        chain or a cycle of thousands of tasks costs set unions rather than a walk per task.
        """
        graph = self.graph()
        reach: dict[str, frozenset[str]] = {}  # everything a task reaches; itself too, in a cycle
        for group in _components(graph):
            members = set(group)
            cyclic = len(group) > 1 or group[0] in graph.get(group[0], ())
            deps = {dep for task_id in group for dep in graph.get(task_id, ()) if dep not in members}
            reached = frozenset().union(deps, *(reach[dep] for dep in deps), members if cyclic else ())
            reach.update(dict.fromkeys(group, reached))
        return {task_id: set(reach[task_id]) - {task_id} for task_id in graph}

    # --- per task -----------------------------------------------------------------------------

    def check_tool(self, base: YamlPath, task: Task) -> None:
        if task.type != "tool_call" or task.tool is None:
            return
        item = self.tools.get(task.tool)
        if item is None:
            names = sorted(self.tools)
            hint = self.did_you_mean(task.tool, names) or f" (tools: {', '.join(names) or 'none'})"
            self.report((*base, "tool"), f"unknown tool `{task.tool}`{hint}")
            return
        # Values holding a template are only known at run time: they count as "any" here.
        concrete = {k: v for k, v in task.inputs.items() if not _holds_template(v)}
        try:
            item.arguments.model_validate(concrete)
        except ValidationError as error:
            params = list(item.parameters.get("properties", {}))
            for problem in error.errors():
                loc = problem["loc"]
                name = str(loc[0]) if loc else ""
                if problem["type"] == "missing":
                    if name in task.inputs:
                        continue  # given as a template
                    self.report((*base, "inputs"), f"tool `{task.tool}` needs input `{name}`")
                elif problem["type"] == "extra_forbidden":
                    self.report((*base, "inputs", name),
                                f"tool `{task.tool}` has no input `{name}`{self.did_you_mean(name, params)}"
                                f" (inputs: {', '.join(params) or 'none'})")
                else:
                    where = ".".join(str(p) for p in loc)
                    self.report((*base, "inputs", *loc),
                                f"input `{where}` of tool `{task.tool}`: {problem['msg'][:1].lower()}{problem['msg'][1:]}")

    def check_schema(self, base: YamlPath, task: Task) -> None:
        if task.schema_ is None:
            return
        from jsonschema.exceptions import SchemaError
        from jsonschema.validators import validator_for

        try:
            validator_for(task.schema_).check_schema(task.schema_)
        except SchemaError as error:
            path = (*base, "schema", *error.path)
            where = "/".join(str(p) for p in error.path)
            self.report(path, "invalid JSON schema" + (f" at `{where}`" if where else "") + f": {error.message}")

    def check_outputs(self) -> None:
        producer: dict[str, str] = {}
        for index, task in self.tasks.items():
            for j, name in enumerate(task.outputs):
                where = ("workflow", "tasks", index, "outputs", j)
                if name in self.variables:
                    self.report(where, f"output `{name}` of task `{task.id}` hides the variable of that name")
                elif name in producer and producer[name] != task.id:
                    self.report(where, f"output `{name}` of task `{task.id}` is also an output of `{producer[name]}`")
                producer.setdefault(name, task.id)
        self.producer = producer
        self.outputs_of = {task_id: self.tasks[index].outputs if index in self.tasks else ()
                           for task_id, index in self.first_index.items()}

    def check_branches(self, base: YamlPath, task: Task, upstream: dict[str, set[str]]) -> None:
        for key, ids in (("then", task.then), ("else", task.else_)):
            for j, target in enumerate(ids):
                where = (*base, key, j)
                if target not in self.first_index:
                    self.report(where, f"`{key}` of `{task.id}` names unknown task `{target}`"
                                       f"{self.did_you_mean(target, self.first_index)}")
                elif task.id not in upstream.get(target, set()):
                    self.report(where, f"task `{target}` in `{key}` of `{task.id}` must depend on `{task.id}`")

    def check_templates(self, base: YamlPath, task: Task, upstream: dict[str, set[str]]) -> None:
        visible = set(self.variables).union(*map(self.outputs_of.__getitem__, upstream.get(task.id, ())))
        for path, text, expression in _template_fields(base, task):
            try:
                names = _names_in(text if not expression or _has_template(text) else "${" + text + "}")
            except Exception as error:  # TemplateError (or SyntaxError in the fallback)
                self.report(path, f"template error in `{path[-1]}` of `{task.id}`: {error}")
                continue
            unknown = sorted(names - visible)
            if len(unknown) > MAX_NAMES_PER_FIELD:
                rest = unknown[MAX_NAMES_PER_FIELD:]
                self.report(path, f"template in `{_field(path, base)}` of `{task.id}` names {len(rest)} more "
                                  f"unknown names ({', '.join(f'`{n}`' for n in rest[:3])}, ...)")
            for name in unknown[:MAX_NAMES_PER_FIELD]:
                at = self.find(path, name)
                producer = self.producer.get(name)
                if producer == task.id:
                    why = f"`{name}`, an output of `{task.id}` itself"
                elif producer is not None:
                    why = f"`{name}`, an output of `{producer}`, which `{task.id}` does not depend on"
                else:
                    why = (f"unknown `{name}`: not a variable or an output of a task it depends on"
                           + self.did_you_mean(name, visible))
                self.report(path, f"template in `{_field(path, base)}` of `{task.id}` names {why}", at=at)

    def find(self, path: YamlPath, name: str) -> tuple[int, int] | None:
        """1-based position of ``name`` inside the value's text (block scalars span lines)."""
        import re

        start = self.positions.values.get(path)
        end = self.positions.ends.get(path)
        if start is None or end is None:
            return None
        pattern = re.compile(r"\b" + re.escape(name) + r"\b")
        for line in range(start[0], min(end[0], len(self.lines) - 1) + 1):
            text = self.lines[line]
            begin = start[1] if line == start[0] else 0
            for match in pattern.finditer(text, begin):
                if "${" in text[begin:match.start()] or "${" not in text:
                    return line + 1, match.start() + 1
        return None


def _components(graph: Mapping[str, list[str]]) -> list[list[str]]:
    """The strongly connected components of ``graph`` (Tarjan's algorithm, without recursion), each
    listed after every component it reaches."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def enter(node: str) -> tuple[str, Iterator[str]]:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        return node, iter(graph.get(node, ()))

    for root in graph:
        if root in index:
            continue
        work = [enter(root)]
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    work.append(enter(child))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    group = []
                    while not group or group[-1] != node:
                        group.append(stack.pop())
                        on_stack.discard(group[-1])
                    found.append(group)
    return found


def _salvage(raw: Any) -> tuple[Task | None, set[str]]:
    """The task, or the task without the fields that are wrong (so its other fields still get checked)."""
    dropped: set[str] = set()
    if not isinstance(raw, dict):
        return None, dropped
    for _ in range(5):
        try:
            return Task.model_validate(raw), dropped
        except ValidationError as error:
            bad = {str(e["loc"][0]) for e in error.errors() if e["loc"] and e["loc"][0] in raw}
            if not bad:
                return None, dropped
            dropped |= bad
            raw = {k: v for k, v in raw.items() if k not in bad}
    return None, dropped


def _field(path: YamlPath, base: YamlPath) -> str:
    rest = path[len(base):]
    out = ""
    for part in rest:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _template_fields(base: YamlPath, task: Task) -> Iterator[tuple[YamlPath, str, bool]]:
    """(path, text, is a condition expression) for every string that may hold a template."""
    for key in ("prompt", "system"):
        value = getattr(task, key)
        if isinstance(value, str):
            yield (*base, key), value, False
    for key in ("when", "condition"):
        value = getattr(task, key)
        if isinstance(value, str):
            yield (*base, key), value, True
    yield from _strings(task.inputs, (*base, "inputs"))


def _strings(value: Any, path: YamlPath) -> Iterator[tuple[YamlPath, str, bool]]:
    if isinstance(value, str):
        yield path, value, False
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, (*path, index))


def _holds_template(value: Any) -> bool:
    return any(_has_template(text) for _, text, _ in _strings(value, ()))


try:
    from smoltui.orchestrator.templating import has_template as _has_template
    from smoltui.orchestrator.templating import names_in as _names_in
except ImportError:  # FALLBACK until smoltui.orchestrator.templating exists: a rough name extractor.
    import ast
    import re

    _TEMPLATE = re.compile(r"\$\{(.*?)\}")

    def _has_template(text: str) -> bool:
        return "${" in text

    def _names_in(text: str) -> set[str]:
        names: set[str] = set()
        for expression in _TEMPLATE.findall(text):
            tree = ast.parse(expression.strip(), mode="eval")
            names |= {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        return names


def check_or_raise(path: Path | str, *, tools: Mapping[str, Tool]) -> None:
    """Raise :class:`WorkflowError` (exit 2) carrying every problem, when there are any."""
    problems = validate_workflow(path, tools=tools)
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise WorkflowError(f"{problems[0]}{more}", problems)
