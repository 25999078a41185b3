"""The workflow file: pydantic models for the seed's YAML shape, and where each value sits in the file.

    workflow:
      id: data-analysis-pipeline
      variables: {input_file: data/sales_data.csv}
      tasks:
        - id: load_data
          type: tool_call          # tool_call | llm_task | conditional
          tool: pandas_loader
          inputs: {file_path: "${input_file}"}
          outputs: [dataframe]

Relative file paths in a workflow (like ``input_file`` above) are meant relative to the folder the
workflow file is in (:attr:`WorkflowFile.base_dir`), not to the current directory.

A variable is its default value, or a declaration with a type::

      variables:
        count: {type: integer, default: 3, description: how many}
        since: {type: string}          # no default: every run must give it

Values given at launch (``--var``, the launch form) must have the declared type, or else the type
of the default (``threshold: 5`` takes numbers only); see :func:`coerce_variables`.

:func:`load_workflow` is strict: the first structural problem raises :class:`WorkflowError`. To list
*every* problem with its position, use :func:`smoltui.orchestrator.workflow_validate.validate_workflow`.
"""

from __future__ import annotations

import difflib
import functools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from smoltui.errors import SmoltuiError
from smoltui.safe_text import printable

TaskType = Literal["tool_call", "llm_task", "conditional"]
YamlPath = tuple[str | int, ...]

# Fields that only mean something for one task type (anything else is allowed on every type).
TYPE_ONLY_FIELDS: dict[str, TaskType] = {
    "tool": "tool_call",
    "prompt": "llm_task", "think": "llm_task", "schema": "llm_task", "system": "llm_task",
    "condition": "conditional", "then": "conditional", "else": "conditional",
}  # fmt: skip
REQUIRED_BY_TYPE: dict[str, tuple[str, ...]] = {
    "tool_call": ("tool",),
    "llm_task": ("prompt",),
    "conditional": ("condition", "then"),
}


class WorkflowError(SmoltuiError):
    """A workflow file that cannot be read or is invalid (the CLI exits 2)."""

    exit_code = 2

    def __init__(self, message: str, problems: Sequence[Problem] = ()) -> None:
        super().__init__(message)
        self.problems = list(problems)


@dataclass(frozen=True, order=True)
class Problem:
    """One thing wrong with a workflow file; ``line`` and ``col`` are 1-based."""

    file: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        """One printable line: control characters in the file name or the message (which quotes
        ids and names from the file) are written as escapes. ``as_dict`` keeps them as they are."""
        return printable(f"{self.file}:{self.line}:{self.col}: {self.message}")

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "col": self.col, "message": self.message}


# --- the models -------------------------------------------------------------------------------

_STRICT = ConfigDict(extra="forbid", strict=True, populate_by_name=True)


MAX_RETRIES = 100
MAX_RETRY_WAIT = 3600.0
"""Seconds: the longest wait before a retry, however the backoff grows (and the largest ``delay``)."""


class RetryPolicy(BaseModel):
    """``retries: 3`` or ``retries: {count: 3, delay: 1, backoff: 2.0}``: wait delay × backoff^n,
    at most :data:`MAX_RETRY_WAIT`; a task is retried at most :data:`MAX_RETRIES` times."""

    model_config = _STRICT

    count: int = Field(0, ge=0, le=MAX_RETRIES)
    delay: float = Field(1.0, ge=0, le=MAX_RETRY_WAIT)
    backoff: float = Field(2.0, ge=1, le=10)

    def wait_before(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        exponent = min(max(0, attempt - 1), MAX_RETRIES)  # 10.0 ** 100 is still a float; ** 400 is not
        return min(MAX_RETRY_WAIT, self.delay * self.backoff**exponent)


class Task(BaseModel):
    model_config = _STRICT

    id: str = Field(min_length=1)
    type: TaskType
    depends_on: list[str] = Field(default_factory=list)
    inputs: dict[str, Any] = Field(default_factory=dict)
    prompt: str | None = None
    outputs: list[str] = Field(default_factory=list)
    tool: str | None = None
    when: str | None = None
    retries: RetryPolicy = Field(default_factory=RetryPolicy)
    timeout: float | None = Field(None, gt=0)
    think: bool | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    system: str | None = None
    condition: str | None = None
    then: list[str] = Field(default_factory=list)
    else_: list[str] = Field(default_factory=list, alias="else")

    @field_validator("retries", mode="before")
    @classmethod
    def _count_only(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            return {"count": value}
        return value

    @model_validator(mode="after")
    def _fields_fit_the_type(self) -> Task:
        missing = [name for name in REQUIRED_BY_TYPE[self.type] if not getattr(self, _attr(name))]
        if missing:
            needs = ", ".join(f"`{name}`" for name in missing)
            raise ValueError(f"{self.type} task `{self.id}` needs {needs}")
        stray = [name for name, kind in TYPE_ONLY_FIELDS.items()
                 if kind != self.type and name in self.model_fields_set | _aliases_set(self)]
        if stray:
            names = ", ".join(f"`{name}`" for name in stray)
            raise ValueError(f"{names} only apply to {TYPE_ONLY_FIELDS[stray[0]]} tasks, not {self.type}")
        return self


def _attr(name: str) -> str:
    return {"schema": "schema_", "else": "else_"}.get(name, name)


def _aliases_set(task: Task) -> set[str]:
    return {alias for alias, attr in (("schema", "schema_"), ("else", "else_")) if attr in task.model_fields_set}


class Workflow(BaseModel):
    model_config = _STRICT

    id: str = Field(min_length=1)
    name: str = ""
    description: str = ""
    variables: dict[str, Any] = Field(default_factory=dict)
    """Each variable's default (declarations are reduced to their default; None when there is none)."""
    tasks: list[Task] = Field(min_length=1)
    max_concurrent_tasks: int = Field(4, ge=1)
    _types: dict[str, str] = PrivateAttr(default_factory=dict)
    _required: frozenset[str] = PrivateAttr(default_factory=frozenset)

    @field_validator("variables")
    @classmethod
    def _declarations_make_sense(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name, item in value.items():
            declared = _declaration(name, item)
            if declared is not None and "default" in item:
                coerce_value(name, item["default"], declared[0], what="its default")
        return value

    @model_validator(mode="after")
    def _split_declarations(self) -> Workflow:
        types: dict[str, str] = {}
        required: set[str] = set()
        for name, item in list(self.variables.items()):
            declared = _declaration(name, item)
            if declared is None:
                continue
            types[name] = declared[0]
            if "default" in item:
                self.variables[name] = coerce_value(name, item["default"], declared[0], what="its default")
            else:
                self.variables[name] = None
                required.add(name)
        self._types = types
        self._required = frozenset(required)
        return self

    def task(self, task_id: str) -> Task:
        return next(t for t in self.tasks if t.id == task_id)

    def variable_type(self, name: str) -> str | None:
        """The variable's type: declared, else its default's (None: any value, or no such variable)."""
        if name in self._types:
            return self._types[name]
        return type_of(self.variables.get(name))

    @property
    def required_variables(self) -> frozenset[str]:
        """Declared without a default: each run must give a value."""
        return self._required


class WorkflowDocument(BaseModel):
    """The file's top level: a single ``workflow:`` key."""

    model_config = _STRICT

    workflow: Workflow


def allowed_keys(path: YamlPath) -> list[str]:
    """The keys a mapping at ``path`` may have (for did-you-mean suggestions)."""
    model: type[BaseModel] = WorkflowDocument
    if len(path) >= 1:
        model = Workflow
    if len(path) >= 3 and path[1] == "tasks":
        model = Task
    if len(path) >= 4 and path[3] == "retries":
        model = RetryPolicy
    return [f.alias or name for name, f in model.model_fields.items()]


# --- reading the file -------------------------------------------------------------------------


@dataclass
class Positions:
    """Where each value (and each mapping key) of a YAML document starts; 0-based (line, column)."""

    values: dict[YamlPath, tuple[int, int]] = field(default_factory=dict)
    keys: dict[YamlPath, tuple[int, int]] = field(default_factory=dict)
    ends: dict[YamlPath, tuple[int, int]] = field(default_factory=dict)

    def of(self, path: YamlPath, *, key: bool = False) -> tuple[int, int]:
        """1-based (line, col) of ``path``, or of its nearest ancestor that is in the file."""
        path = tuple(path)
        if key and path in self.keys:
            line, col = self.keys[path]
            return line + 1, col + 1
        while path:
            if path in self.values:
                line, col = self.values[path]
                return line + 1, col + 1
            path = path[:-1]
        line, col = self.values.get((), (0, 0))
        return line + 1, col + 1


MAX_WORKFLOW_BYTES = 1 << 20
"""A workflow file larger than this (1 MiB) is refused before it is parsed."""
MAX_YAML_VALUES = 20_000
"""Values (scalars, lists, mappings, keys) a document may hold once every alias is expanded."""
MAX_YAML_DEPTH = 64
"""Lists and mappings a document may nest, aliases expanded."""
_TOO_DEEP = f"the document nests deeper than {MAX_YAML_DEPTH} levels"


def parse_yaml(text: str) -> tuple[Any, Positions]:
    """The document's data (as ``yaml.safe_load`` reads it) and the position of every node.

    Bounded: a text over :data:`MAX_WORKFLOW_BYTES` characters, a document that nests deeper than
    :data:`MAX_YAML_DEPTH` or that holds more than :data:`MAX_YAML_VALUES` values once its aliases
    are expanded (a "billion laughs"), and an alias inside the node it names, are refused while the
    document is composed, before anything is expanded. Raises ``yaml.YAMLError`` (with
    ``problem_mark``) on a syntax error or a limit.
    """
    import yaml

    loader_class = _bounded_loader()
    if len(text) > MAX_WORKFLOW_BYTES:
        raise loader_class.LimitError(_mark_at(text, MAX_WORKFLOW_BYTES),
                                      f"the document is longer than {_size(MAX_WORKFLOW_BYTES)}")
    loader = loader_class(text)
    try:
        try:
            root = loader.get_single_node()
        except yaml.MarkedYAMLError as error:
            if error.problem == "exceeded maximum nesting depth":  # libyaml's own limit (1000)
                raise loader_class.LimitError(error.problem_mark, _TOO_DEEP) from None
            raise
        positions = Positions()
        if root is None:
            return None, positions
        # Positions first: constructing resolves merge keys (<<) by rewriting the nodes in place.
        _walk(root, (), positions)
        return loader.construct_document(root), positions
    finally:
        loader.dispose()


def load_yaml(text: str) -> Any:
    """``yaml.safe_load(text)`` under the limits of :func:`parse_yaml`: use it for any YAML a user,
    a file or a model wrote. Raises ``yaml.YAMLError``."""
    return parse_yaml(text)[0]


def _size(limit: int) -> str:
    return f"{limit >> 20} MiB" if limit >= 1 << 20 else f"{limit >> 10} KiB"


def _mark_at(text: str, index: int) -> Any:
    import yaml

    line = text.count("\n", 0, index)
    return yaml.Mark("<text>", index, line, index - (text.rfind("\n", 0, index) + 1), None, None)


@functools.cache
def _bounded_loader() -> Any:
    """A safe loader that adds up, while it composes, what the document will expand to.

    libyaml's parser when PyYAML has it (scanning a 1 MiB file takes a few milliseconds there,
    seconds in pure Python), under PyYAML's own composer and constructor.
    """
    import yaml
    from yaml.composer import Composer
    from yaml.events import AliasEvent

    class LimitError(yaml.MarkedYAMLError):
        """The document is over one of the limits above (not a syntax error)."""

        def __init__(self, mark: Any, problem: str) -> None:
            super().__init__(problem=problem, problem_mark=mark)

    class Bounds(Composer):
        values = 0  # values composed so far, each alias counted as everything it names
        depth = 0  # of the node being composed
        deepest = 0  # below the anchored node being composed

        def compose_document(self) -> Any:
            self.extents: dict[str, tuple[int, int]] = {}  # anchor -> (values, levels below it)
            self.open: set[str] = set()  # anchors whose node is being composed
            return super().compose_document()

        def compose_node(self, parent: Any, index: Any) -> Any:
            event = self.peek_event()
            if isinstance(event, AliasEvent):
                if event.anchor in self.open:
                    raise LimitError(event.start_mark, f"the alias *{event.anchor} is inside the node "
                                                       f"it names, which would never end")
                if event.anchor in self.extents:  # (an unknown one is the composer's syntax error)
                    values, below = self.extents[event.anchor]
                    self._grow(values, self.depth + 1 + below, event.start_mark, event.anchor)
                return super().compose_node(parent, index)
            self.depth += 1
            self._grow(1, self.depth, event.start_mark, None)
            anchor = event.anchor
            if anchor is None:
                node = super().compose_node(parent, index)
            else:
                values_before, outer_deepest = self.values - 1, self.deepest
                self.deepest = self.depth
                self.open.add(anchor)
                node = super().compose_node(parent, index)
                self.open.discard(anchor)
                self.extents[anchor] = (self.values - values_before, self.deepest - self.depth)
                self.deepest = max(outer_deepest, self.deepest)
            self.depth -= 1
            return node

        def _grow(self, values: int, depth: int, mark: Any, alias: str | None) -> None:
            self.values += values
            self.deepest = max(self.deepest, depth)
            through = f" (through the alias *{alias})" if alias else ""
            if depth > MAX_YAML_DEPTH:
                raise LimitError(mark, f"{_TOO_DEEP}{through}")
            if self.values > MAX_YAML_VALUES:
                raise LimitError(mark, f"the document expands to more than {MAX_YAML_VALUES:,} values"
                                       f"{through}; a workflow file is refused at that size")

    try:
        from yaml._yaml import CParser
    except ImportError:  # PyYAML built without libyaml

        class BoundedLoader(Bounds, yaml.SafeLoader):
            def fetch_flow_collection_start(self, token_class: Any) -> None:
                # This scanner looks up to 1024 characters ahead at every open bracket: "[[[[..." is
                # refused at the bracket, before that costs seconds.
                if self.flow_level >= MAX_YAML_DEPTH:
                    raise LimitError(self.get_mark(), _TOO_DEEP)
                super().fetch_flow_collection_start(token_class)
    else:

        class BoundedLoader(Bounds, CParser, yaml.constructor.SafeConstructor, yaml.resolver.Resolver):
            def __init__(self, stream: str) -> None:
                CParser.__init__(self, stream)
                Composer.__init__(self)
                yaml.constructor.SafeConstructor.__init__(self)
                yaml.resolver.Resolver.__init__(self)

    BoundedLoader.LimitError = LimitError  # type: ignore[attr-defined]
    return BoundedLoader


def _walk(node: Any, path: YamlPath, positions: Positions) -> None:
    import yaml

    positions.values[path] = (node.start_mark.line, node.start_mark.column)
    positions.ends[path] = (node.end_mark.line, node.end_mark.column)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue  # a list or mapping as a key: constructing the data refuses it
            key = key_node.value
            child = (*path, key)
            positions.keys[child] = (key_node.start_mark.line, key_node.start_mark.column)
            _walk(value_node, child, positions)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), positions)


def yaml_error_problem(file: str, error: Exception) -> Problem:
    """A YAML syntax error, or a document over a limit of :func:`parse_yaml`, as a positioned problem."""
    mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
    line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
    what = " ".join(str(getattr(error, "problem", None) or error).split())
    if isinstance(error, _bounded_loader().LimitError):
        return Problem(file, line, col, f"YAML refused: {what}")
    context = getattr(error, "context", None)
    message = f"YAML syntax error: {what}" + (f" ({context})" if context else "")
    return Problem(file, line, col, message)


def model_problems(file: str, data: Any, positions: Positions) -> list[Problem]:
    """Every structural problem pydantic finds in ``data``, each at its place in the file."""
    try:
        WorkflowDocument.model_validate(data)
    except ValidationError as error:
        return [_problem_from(file, item, positions) for item in error.errors()]
    return []


def _problem_from(file: str, item: Mapping[str, Any], positions: Positions) -> Problem:
    loc: YamlPath = tuple(p for p in item["loc"] if isinstance(p, (str, int)))
    kind = item["type"]
    where = _dotted(loc)
    if kind == "extra_forbidden":
        name = str(loc[-1])
        close = difflib.get_close_matches(name, allowed_keys(loc[:-1]), n=1)
        hint = f" (did you mean `{close[0]}`?)" if close else ""
        line, col = positions.of(loc, key=True)
        return Problem(file, line, col, f"unknown key `{name}`{hint}")
    if kind == "missing":
        line, col = positions.of(loc[:-1])
        parent = _dotted(loc[:-1])
        return Problem(file, line, col, f"missing required field `{loc[-1]}`" + (f" in {parent}" if parent else ""))
    line, col = positions.of(loc)
    message = str(item["msg"]).removeprefix("Value error, ")
    if kind == "value_error":  # our own checks (per-type fields) say what is wrong themselves
        return Problem(file, line, col, message)
    message = message[:1].lower() + message[1:]
    return Problem(file, line, col, f"{where}: {message}" if where else message)


def _dotted(loc: Iterable[str | int]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass
class WorkflowFile:
    """A loaded, structurally valid workflow and where its values sit in the file."""

    path: Path
    spec: Workflow
    positions: Positions
    text: str = ""

    @property
    def base_dir(self) -> Path:
        """Relative paths in the workflow are relative to this folder (the file's own)."""
        return self.path.parent

    def position(self, path: YamlPath) -> tuple[int, int]:
        """1-based (line, col) of a value, e.g. ``("workflow", "tasks", 2, "depends_on", 0)``."""
        return self.positions.of(path)


def read_workflow_text(path: Path | str) -> str:
    """The file's text; one over :data:`MAX_WORKFLOW_BYTES` is refused after reading no more than that."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_WORKFLOW_BYTES + 1)
        if len(data) > MAX_WORKFLOW_BYTES:
            line = data.count(b"\n", 0, MAX_WORKFLOW_BYTES) + 1
            raise WorkflowError(f"{path}:{line}:1: the file is larger than the {_size(MAX_WORKFLOW_BYTES)} "
                                f"a workflow file may have")
        text = data.decode("utf-8")
    except FileNotFoundError:
        raise WorkflowError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise WorkflowError(f"{path}: is a folder, not a workflow file") from None
    except (OSError, UnicodeDecodeError) as error:
        raise WorkflowError(f"{path}: cannot be read: {error}") from None
    return text.replace("\r\n", "\n").replace("\r", "\n")  # as text mode reads it


def load_workflow(path: Path | str) -> WorkflowFile:
    """Read and validate the structure of a workflow file; raises :class:`WorkflowError`."""
    import yaml

    path = Path(path)
    text = read_workflow_text(path)
    try:
        data, positions = parse_yaml(text)
    except yaml.YAMLError as error:
        problem = yaml_error_problem(str(path), error)
        raise WorkflowError(str(problem), [problem]) from None
    problems = sorted(model_problems(str(path), data, positions))
    if problems:
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        raise WorkflowError(f"{problems[0]}{more}", problems)
    document = WorkflowDocument.model_validate(data)
    return WorkflowFile(path=path, spec=document.workflow, positions=positions, text=text)


# --- variables --------------------------------------------------------------------------------


def parse_var_value(raw: str) -> Any:
    """``--var`` values are YAML: ``3`` is an int, ``true`` a bool, ``[a, b]`` a list; text stays text."""
    import yaml

    if raw == "":
        return ""
    try:
        value = load_yaml(raw)
    except yaml.YAMLError:
        return raw
    return raw if isinstance(value, dict) or value is None and raw.strip() not in ("null", "~") else value


VARIABLE_TYPES: dict[str, str] = {
    "string": "text", "integer": "a whole number", "number": "a number", "boolean": "true or false",
    "list": "a list like [a, b]", "object": "a mapping like {key: value}",
}  # fmt: skip
"""The types a variable may declare, and how each is described to someone typing a value."""
_TYPE_ALIASES = {"str": "string", "text": "string", "int": "integer", "float": "number", "bool": "boolean",
                 "array": "list", "dict": "object", "mapping": "object"}
_DECLARATION_KEYS = frozenset({"type", "default", "description"})
_TRUE = frozenset({"true", "yes", "y", "on", "1"})
_FALSE = frozenset({"false", "no", "n", "off", "0"})


def _declaration(name: str, item: Any) -> tuple[str] | None:
    """(type,) when ``item`` declares the variable (``{type: ..., default: ...}``), else None."""
    if not (isinstance(item, dict) and "type" in item and set(item) <= _DECLARATION_KEYS):
        return None
    raw = item["type"]
    kind = _TYPE_ALIASES.get(raw, raw) if isinstance(raw, str) else None
    if kind not in VARIABLE_TYPES:
        raise ValueError(f"variable `{name}`: unknown type {raw!r} (one of {', '.join(VARIABLE_TYPES)}); "
                         "a mapping default with a `type` key is written {type: object, default: {...}}")
    return (kind,)


_PYTHON_TYPES: tuple[tuple[str, type], ...] = (
    ("boolean", bool), ("integer", int), ("number", float), ("string", str), ("list", list), ("object", dict))
"""A default's Python type -> the variable's type (bool first: True is an int too)."""


def type_of(value: Any) -> str | None:
    """The variable type a default implies (None: any value goes)."""
    return next((kind for kind, python_type in _PYTHON_TYPES if isinstance(value, python_type)), None)


def coerce_value(name: str, value: Any, kind: str | None, *, what: str | None = None,
                 workflow_id: str | None = None) -> Any:
    """``value`` as a value of type ``kind``; text (from a command line or a form field) is parsed.

    Raises ValueError naming the variable, the value and the type expected.
    """
    if kind is None:
        return parse_var_value(value) if isinstance(value, str) else value
    text = value if isinstance(value, str) else None
    if kind == "string":
        if text is not None:
            return text
        if isinstance(value, bool | int | float):  # 42 for a name: the user meant the text "42"
            return show_value(value)
    elif kind == "boolean":
        if isinstance(value, bool):
            return value
        word = text.strip().lower() if text is not None else None
        if word in _TRUE or word in _FALSE:
            return word in _TRUE
    elif kind in ("integer", "number"):
        parsed = value
        if text is not None:
            try:
                parsed = int(text.strip()) if kind == "integer" else float(text.strip())
            except ValueError:
                parsed = None
        elif isinstance(value, float) and kind == "integer" and value.is_integer():
            parsed = int(value)  # 3.0 from JSON is the whole number 3
        if isinstance(parsed, int) and not isinstance(parsed, bool):
            return parsed if kind == "integer" else float(parsed)
        if isinstance(parsed, float) and kind == "number" and math.isfinite(parsed):
            return parsed
    else:  # list / object: YAML flow syntax, which JSON is part of
        parsed = value
        if text is not None:
            try:
                parsed = load_yaml(text) if text.strip() else None
            except Exception:  # noqa: BLE001 - any parse failure is the same answer: not a list
                parsed = None
        if isinstance(parsed, list if kind == "list" else dict):
            return parsed
    shown = repr(text) if text is not None else show_value(value)
    subject = f"variable `{name}`" + (f" of workflow `{workflow_id}`" if workflow_id else "") + (
        f" ({what})" if what else "")
    raise ValueError(f"{subject} expects {VARIABLE_TYPES[kind]} ({kind}), not {shown}")


def show_value(value: Any) -> str:
    """A value as someone would type it (text as it is, anything else in YAML flow style)."""
    import yaml

    if isinstance(value, str):
        return value
    return yaml.safe_dump(value, default_flow_style=True, allow_unicode=True, width=10_000).strip().removesuffix(
        "\n...").strip()


def check_variables(spec: Workflow, values: Mapping[str, Any]) -> None:
    """Every name in ``values`` must be a variable of ``spec`` (WorkflowError naming the first that is not)."""
    for name in values:
        if name not in spec.variables:
            known = ", ".join(sorted(spec.variables)) or "none"
            close = difflib.get_close_matches(name, list(spec.variables), n=1)
            hint = f"did you mean `{close[0]}`? " if close else ""
            raise WorkflowError(f"workflow `{spec.id}` has no variable `{name}` ({hint}variables: {known})")


def coerce_variables(spec: Workflow, values: Mapping[str, Any], *, launching: bool = False) -> dict[str, Any]:
    """``values`` checked against ``spec`` (names, then types) and typed: text is parsed as the
    variable's type. ``launching``: a new run, so variables declared without a default need a value.

    Raises WorkflowError with one line naming the variable, the value and the type expected.
    """
    check_variables(spec, values)
    typed: dict[str, Any] = {}
    for name, value in values.items():
        try:
            typed[name] = coerce_value(name, value, spec.variable_type(name), workflow_id=spec.id)
        except ValueError as error:
            raise WorkflowError(str(error)) from None
    if launching:
        missing = sorted(spec.required_variables - {n for n, v in typed.items() if v is not None})
        if missing:
            kinds = ", ".join(f"`{n}` ({spec.variable_type(n)})" for n in missing)
            raise WorkflowError(f"workflow `{spec.id}` needs a value for {kinds}: give it with --var NAME=VALUE")
    return typed


def parse_var_assignments(spec: Workflow, assignments: Iterable[str]) -> dict[str, Any]:
    """``["k=v", ...]`` (``--var``) as typed values; unknown names, bad syntax and values of the wrong
    type are WorkflowErrors."""
    values: dict[str, Any] = {}
    for assignment in assignments:
        name, sep, raw = assignment.partition("=")
        name = name.strip()
        if not sep or not name:
            raise WorkflowError(f"--var {assignment!r}: expected NAME=VALUE")
        try:
            values[name] = coerce_variables(spec, {name: raw})[name]
        except WorkflowError as error:
            raise WorkflowError(f"--var {name}={raw}: {error}") from None
    return values


def apply_vars(spec: Workflow, assignments: Iterable[str]) -> Workflow:
    """A copy of ``spec`` with ``["k=v", ...]`` overriding variable defaults; unknown names are errors."""
    return spec.model_copy(update={"variables": {**spec.variables, **parse_var_assignments(spec, assignments)}})
