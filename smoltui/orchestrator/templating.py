"""``${expr}`` templating for workflow files, evaluated in Jinja2's immutable sandbox.

A workflow string such as ``"${input_file}"`` or a prompt containing ``${dataframe.describe()}`` is
rendered against a context of variables and earlier task outputs:

* a string that is exactly one ``${expr}`` (no text around it, not even whitespace) evaluates to the
  object itself, so ``inputs: {data: "${dataframe}"}`` passes the DataFrame, a dict stays a dict;
* any other string renders to text: DataFrames/Series via ``to_string()`` (cut to
  :data:`MAX_FRAME_CHARS`), dicts/lists/tuples as JSON, everything else with ``str()``.

Syntax. Only ``${`` … ``}`` is special. Jinja's block and comment delimiters are set to strings
containing a NUL byte (``"\\x00%"`` … ``"%\\x00"``, ``"\\x00#"`` … ``"#\\x00"``), which cannot occur in
a YAML/text prompt by accident, so ``{{ x }}``, ``{% raw %}``, ``{#`` and JSON examples pass through
untouched; there are no statements, loops or comments. Inside ``${ }`` the expression language is
Jinja's (filters, ``~``, literals, method calls). Limitations, from Jinja's lexer:

* braces inside an expression are balanced by the lexer, so ``${ {'a': 1}['a'] }`` and
  ``${ "}" }`` work, but an expression cannot contain an unbalanced ``}`` outside a string;
* ``${-`` / ``${+`` and ``-}`` are Jinja whitespace control: ``${-x}`` strips the whitespace before
  it and renders ``x`` (it is *not* negation; write ``${ -x }`` or ``${0 - x}``), and ``${x -}``
  strips the whitespace after it;
* a literal ``${`` is written ``${ '${' }``.

Safety. Attribute access follows Jinja's sandbox (no ``_``-names, no internal attributes, no
mutating methods of list/dict/set). Calls are additionally whitelisted by :class:`_WorkflowSandbox`:
public methods of plain builtin values (str, numbers, list, tuple, dict, set), Jinja's own globals,
and for pandas objects only :data:`PANDAS_METHODS` — read-only methods, ``to_csv``/``to_json``/
``to_string``/``to_markdown`` only without a path or buffer (they return a string), never with
``inplace=``, never with a callable argument. Everything else is refused. pandas is never imported
here: pandas objects are recognised by the module name of their type.

Size. A step that would build far more than its inputs is refused before it runs, with the sizes
:mod:`smoltui.backends.chat_template` works out for chat templates: ``*`` past a million items
(a list of repeated lists counted in full), ``**`` past 4096 bits, and past
:data:`MAX_RESULT_CHARS` characters ``%`` and ``format`` with wide fields, ``ljust``/``center``/
``zfill``/``expandtabs``/``replace``/``translate``/``join``, the filters ``center``, ``indent``,
``format``, ``wordwrap``, ``replace`` and ``join``, a number over 100,000 given to one of Jinja's
globals (``lipsum(10**9)``), and a list or dict written into text. The sandbox does not bound the
time an expression takes (a task's ``timeout`` does).
"""

from __future__ import annotations

import functools
import json
import operator
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateSyntaxError, Undefined, UndefinedError, meta, nodes
from jinja2.parser import Parser
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment, SecurityError

from smoltui.backends.chat_template import (
    BudgetExceeded,
    binop_size,
    filter_size,
    str_method_size,
    value_size,
)
from smoltui.errors import SmoltuiError

__all__ = [
    "MAX_FRAME_CHARS",
    "PANDAS_METHODS",
    "TemplateError",
    "env",
    "has_template",
    "names_in",
    "render",
    "render_structure",
]

MAX_FRAME_CHARS = 4000
"""A DataFrame/Series rendered into text is cut after this many characters."""

# fmt: off
PANDAS_METHODS: frozenset[str] = frozenset(
    {
        # inspection / formatting (the to_* writers only without a path or buffer)
        "describe", "head", "tail", "to_markdown", "to_string", "to_csv", "to_dict", "to_json",
        "to_list", "tolist", "memory_usage", "isna", "notna", "isnull", "notnull",
        "unique", "nunique", "value_counts", "duplicated", "get",
        # reductions
        "sum", "mean", "median", "min", "max", "std", "var", "count", "size", "quantile", "corr",
        "idxmin", "idxmax", "any", "all", "abs", "round", "cumsum",
        # non-mutating reshaping (return a new object; ``inplace=`` is refused)
        "sort_values", "sort_index", "nlargest", "nsmallest", "groupby", "dropna", "fillna",
        "drop_duplicates", "select_dtypes", "astype", "reset_index", "rename", "copy",
    }
)
# fmt: on
"""Methods a template may call on pandas objects (DataFrame, Series, Index, GroupBy, ...)."""

# writer method -> the parameter that, when given, makes it write to a file or buffer
_PANDAS_WRITERS: dict[str, str] = {
    "to_csv": "path_or_buf",
    "to_json": "path_or_buf",
    "to_string": "buf",
    "to_markdown": "buf",
}
_BUILTIN_VALUE_TYPES = (str, int, float, complex, bool, list, tuple, dict, set, frozenset)
_MAX_PRODUCT_LEN = 1_000_000
_MAX_EXPONENT_BITS = 4096
_MAX_GLOBAL_ARGUMENT = 100_000
MAX_RESULT_CHARS = 100_000_000
"""The most characters a ``%``, ``format``, string method or filter may be about to build."""
_SIZED_FILTERS = ("center", "indent", "format", "wordwrap", "replace", "join")


class TemplateError(SmoltuiError):
    """A ``${...}`` expression cannot be parsed, is refused, or fails while it is evaluated.

    The message names the expression; callers add the task and field. Keeps the base exit code;
    a workflow-level error that wraps it picks its own.
    """


def _is_pandas(obj: Any) -> bool:
    module = type(obj).__module__ or ""
    return module == "pandas" or module.startswith("pandas.")


def _describe(obj: Any) -> str:
    return type(obj).__name__


def _too_big(size: int) -> None:
    if size > MAX_RESULT_CHARS:
        raise SecurityError(f"a result of {size:,} characters (more than {MAX_RESULT_CHARS:,})")


def _safe_mul(left: Any, right: Any) -> Any:
    # value_size: [[1] * 10**6] * 10**6 is a million items that print as a million million
    if binop_size("*", left, right, _MAX_PRODUCT_LEN) > _MAX_PRODUCT_LEN:
        raise SecurityError(f"a repeated sequence longer than {_MAX_PRODUCT_LEN} items")
    return operator.mul(left, right)


def _safe_mod(left: Any, right: Any) -> Any:
    _too_big(binop_size("%", left, right, MAX_RESULT_CHARS))
    return operator.mod(left, right)


def _sized_filter(func: Callable[..., Any], name: str) -> Callable[..., Any]:
    """Jinja's ``func`` filter, refused when the result it is about to build is too long."""
    skip = 0 if getattr(func, "jinja_pass_arg", None) is None else 1

    @functools.wraps(func)  # keeps the pass_eval_context/pass_environment mark
    def sized(*args: Any, **kwargs: Any) -> Any:
        if len(args) > skip:
            value = args[skip]
            if name == "join" and not isinstance(value, str | list | tuple):
                value = list(value)  # a generator: counted out first
                args = (*args[:skip], value, *args[skip + 1:])
            _too_big(filter_size(name, value, args[skip + 1:], kwargs, MAX_RESULT_CHARS))
        return func(*args, **kwargs)

    return sized


def _safe_pow(left: Any, right: Any) -> Any:
    if (
        isinstance(left, int)
        and isinstance(right, int)
        and abs(left) > 1
        and right > 0
        and left.bit_length() * right > _MAX_EXPONENT_BITS
    ):
        raise SecurityError(f"a power with more than {_MAX_EXPONENT_BITS} bits")
    return operator.pow(left, right)


class _WorkflowSandbox(ImmutableSandboxedEnvironment):
    """Jinja's immutable sandbox with a whitelist of callable things (see the module docstring)."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.binop_table["*"] = _safe_mul
        self.binop_table["**"] = _safe_pow
        self.binop_table["%"] = _safe_mod
        for name in _SIZED_FILTERS:
            self.filters[name] = _sized_filter(self.filters[name], name)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if not super().is_safe_attribute(obj, attr, value):
            return False
        # pandas: a column or property is fine, a method only if whitelisted
        return not (_is_pandas(obj) and callable(value) and attr not in PANDAS_METHODS)

    def call(  # noqa: N805 - mirrors SandboxedEnvironment.call, whose double-underscore names
        __self,  # avoid clashes with the caller's keyword arguments
        __context: Context,
        __obj: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        if not __self.is_safe_callable(__obj):
            raise SecurityError(f"{__obj!r} is not safely callable")
        owner = getattr(__obj, "__self__", None)
        if (isinstance(owner, str) and getattr(__obj, "__name__", "") == "join" and len(args) == 1
                and not isinstance(args[0], list | tuple)):
            args = (list(args[0]),)  # a generator: counted out first, so that its size can be worked out
        reason = __self._refusal(__obj, args, kwargs)
        if reason is not None:
            raise SecurityError(reason)
        return __context.call(__obj, *args, **kwargs)

    def _refusal(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        """Why calling ``func(*args, **kwargs)`` is refused, or None when it is allowed."""
        if any(func is g for g in self.globals.values()):
            numbers = [a for a in (*args, *kwargs.values()) if isinstance(a, int) and not isinstance(a, bool)]
            if func is not self.globals.get("range") and any(abs(n) > _MAX_GLOBAL_ARGUMENT for n in numbers):
                return f"a number over {_MAX_GLOBAL_ARGUMENT:,} given to {getattr(func, '__name__', 'a global')}()"
            return None
        wrapped = getattr(func, "__wrapped__", None)
        if (
            isinstance(func, types.FunctionType)
            and isinstance(getattr(wrapped, "__self__", None), str)
            and getattr(wrapped, "__name__", "") in ("format", "format_map")
        ):
            # the sandboxed str.format wrapper from wrap_str_format
            return self._size_refusal(wrapped.__self__, wrapped.__name__, args, kwargs)
        if not isinstance(func, types.MethodType | types.BuiltinMethodType):
            return f"calling {func!r} is not allowed"
        owner = getattr(func, "__self__", None)
        name: str = getattr(func, "__name__", "?")
        if name.startswith("_"):
            return f"calling {name!r} is not allowed"
        if isinstance(owner, _BUILTIN_VALUE_TYPES) and type(owner).__module__ == "builtins":
            return self._size_refusal(owner, name, args, kwargs) if isinstance(owner, str) else None
        if _is_pandas(owner):
            label = f"{_describe(owner)}.{name}"
            if name not in PANDAS_METHODS:
                return f"{label}() is not an allowed pandas method"
            if kwargs.get("inplace"):
                return f"{label}(inplace=...) would modify the data"
            target = _PANDAS_WRITERS.get(name)
            if target is not None and ((args and args[0] is not None) or kwargs.get(target) is not None):
                return f"{label}() may only return a string, not write to a path or buffer"
            if any(callable(a) for a in (*args, *kwargs.values())):
                return f"{label}() with a callable argument"
            return None
        return f"calling {_describe(owner)}.{name}() is not allowed"


    @staticmethod
    def _size_refusal(text: str, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        size = str_method_size(text, name, args, kwargs, MAX_RESULT_CHARS)
        if size > MAX_RESULT_CHARS:
            return f"{name}() would build {size:,} characters (more than {MAX_RESULT_CHARS:,})"
        return None


def _stringify(value: Any) -> str:
    """How a value appears inside a rendered string."""
    if isinstance(value, Undefined):
        return str(value)  # StrictUndefined: raises
    if isinstance(value, str):
        return value
    if _is_pandas(value) and hasattr(value, "to_string"):
        try:
            text = value.to_string(max_rows=60)
        except TypeError:
            text = value.to_string()
        if len(text) > MAX_FRAME_CHARS:
            text = text[:MAX_FRAME_CHARS] + f"\n… [cut: {len(text) - MAX_FRAME_CHARS} more characters]"
        return text
    if isinstance(value, dict | list | tuple):
        _too_big(value_size(value, MAX_RESULT_CHARS))
        return json.dumps(value, ensure_ascii=False, default=_stringify)
    return str(value)


env = _WorkflowSandbox(
    variable_start_string="${",
    variable_end_string="}",
    block_start_string="\x00%",
    block_end_string="%\x00",
    comment_start_string="\x00#",
    comment_end_string="#\x00",
    line_statement_prefix=None,
    line_comment_prefix=None,
    undefined=StrictUndefined,
    autoescape=False,
    keep_trailing_newline=True,
)
"""The one environment every workflow template is evaluated in."""


@dataclass(frozen=True)
class _Expr:
    source: str  # as written, e.g. "${ cfg.name }"
    names: frozenset[str]
    evaluate: Callable[..., Any]


def _syntax_error(text: str, error: TemplateSyntaxError, line_offset: int = 0) -> TemplateError:
    lineno = (error.lineno or 1) + line_offset
    lines = text.splitlines() or [""]
    line = lines[min(lineno, len(lines)) - 1].strip()
    if len(line) > 120:
        line = line[:117] + "..."
    return TemplateError(f"template syntax error at line {lineno} ({line!r}): {error.message}")


@functools.lru_cache(maxsize=512)
def _compile(text: str) -> tuple[str | _Expr, ...]:
    """Split ``text`` into literal text and compiled ``${...}`` expressions."""
    parts: list[str | _Expr] = []
    begin: str | None = None  # the ``${`` token of the expression being read
    inner: list[str] = []  # the token values between ``${`` and ``}``
    start_line = 1
    try:
        for lineno, kind, value in env.lex(text):
            if kind == "data":
                parts.append(value)
            elif kind == "variable_begin":
                begin, inner, start_line = value, [], lineno
            elif kind == "variable_end":
                source = f"{begin}{''.join(inner)}{value.rstrip()}"
                parts.append(_compile_expr("".join(inner), source, start_line))
                begin = None
            else:
                inner.append(value)
    except TemplateSyntaxError as e:
        raise _syntax_error(text, e) from None
    if begin is not None:  # an unterminated ``${`` that the lexer let through
        raise TemplateError(f"template syntax error at line {start_line}: '${{' is never closed")
    return tuple(p for p in parts if p != "")


def _compile_expr(inner: str, shown: str, lineno: int) -> _Expr:
    try:
        evaluate = env.compile_expression(inner, undefined_to_none=False)
        names = meta.find_undeclared_variables(env.parse("${" + inner + "}"))
    except TemplateSyntaxError as e:
        message = e.message or "invalid expression"
        if message == "chunk after expression":  # Jinja's words for "a b"
            parser = Parser(env, inner, state="variable")
            parser.parse_expression()
            message = f"unexpected {parser.stream.current.value!r} after the expression"
        raise TemplateError(f"template syntax error in {shown} at line {lineno}: {message}") from None
    return _Expr(shown, frozenset(names) - frozenset(env.globals), evaluate)


def _check_result(value: Any, depth: int = 0) -> None:
    """Raise for an Undefined left inside a literal the expression built (``[x.__class__]``)."""
    if isinstance(value, Undefined):
        str(value)  # StrictUndefined: raises UndefinedError / SecurityError
    if depth > 20 or type(value).__module__ != "builtins":
        return
    if isinstance(value, dict):
        for k, v in value.items():
            _check_result(k, depth + 1)
            _check_result(v, depth + 1)
    elif isinstance(value, list | tuple | set | frozenset):
        for v in value:
            _check_result(v, depth + 1)


def _evaluate(expr: _Expr, context: Mapping[str, Any], as_text: bool) -> Any:
    missing = sorted(n for n in expr.names if n not in context)
    if missing:
        raise TemplateError(f"unknown name {missing[0]!r} in {expr.source}")
    try:
        value = expr.evaluate(dict(context))
        if as_text:
            return _stringify(value)
        _check_result(value)
        return value
    except TemplateError:
        raise
    except SecurityError as e:
        raise TemplateError(f"refused: {str(e).rstrip('.')} in {expr.source}") from None
    except BudgetExceeded as e:  # a value nested past what can be weighed
        raise TemplateError(f"refused: it {e} in {expr.source}") from None
    except UndefinedError as e:
        raise TemplateError(f"{str(e).rstrip('.')} in {expr.source}") from None
    except Exception as e:  # anything the evaluated code raised: KeyError, ZeroDivisionError, ...
        raise TemplateError(f"{type(e).__name__}: {e} in {expr.source}") from None


def has_template(text: str) -> bool:
    """Whether ``text`` contains a ``${`` (and so is rendered at all)."""
    return "${" in text


def names_in(text: str) -> set[str]:
    """The top-level names ``text`` refers to (``${a} ${b.c} ${d[0]}`` → ``{a, b, d}``).

    Jinja's globals (``range``, ``dict``, ...) are not included. Raises :class:`TemplateError` for
    a syntax error, naming the line.
    """
    if not has_template(text):
        return set()
    return set(_names(text))


@functools.lru_cache(maxsize=512)
def _names(text: str) -> frozenset[str]:
    # Parsing the whole text once is several times cheaper than compiling each expression (what
    # render needs): validating a workflow of thousands of templates stays quick. Without statements
    # (their delimiters hold a NUL) nothing binds a name, so every name read is one the context gives.
    if "\x00" not in text:
        try:
            tree = env.parse(text)
        except TemplateSyntaxError:
            pass  # _compile says where, in its own words
        else:
            names = {node.name for node in tree.find_all(nodes.Name) if node.ctx == "load"}
            return frozenset(names) - frozenset(env.globals) - {"self"}  # (Jinja's own, as meta says)
    return frozenset().union(*(part.names for part in _compile(text) if isinstance(part, _Expr)))


def render(text: str, context: Mapping[str, Any]) -> Any:
    """Render ``text`` against ``context``.

    Exactly one ``${expr}`` and nothing else returns the evaluated object; otherwise a string.
    Raises :class:`TemplateError` naming the expression.
    """
    if not has_template(text):
        return text
    parts = _compile(text)
    if len(parts) == 1 and isinstance(parts[0], _Expr) and parts[0].source == text:
        return _evaluate(parts[0], context, as_text=False)
    return "".join(p if isinstance(p, str) else _evaluate(p, context, as_text=True) for p in parts)


def render_structure(value: Any, context: Mapping[str, Any]) -> Any:
    """Render every string inside nested dicts/lists/tuples; keys and other values are unchanged."""
    if isinstance(value, str):
        return render(value, context)
    if isinstance(value, Mapping):
        return {k: render_structure(v, context) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value)(render_structure(v, context) for v in value)
    return value
