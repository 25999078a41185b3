"""Tool-calling eval in the style of the Berkeley Function-Calling Leaderboard (BFCL), on any backend.

    .venv/bin/python benchmarks/tool_eval.py [--model M] [--backend llama_cpp|transformers|openai]
        [--cases FILE] [--limit N] [--category C] [--constraints on|off|both] [--json [FILE]]
        [--max-tokens N] [--think] [--tool-choice auto|required] [--show-prompt] [--home DIR]
        [--threads N] [--n-ctx N] [--category C] [--case ID] [--quiet]

The backend and model are built exactly as the CLI builds them (``resolve_and_build`` with the config
under ``--home`` / ``SMOLTUI_HOME``), so ``--model scripted``, a GGUF, a hub id with
``--backend transformers`` or a server with ``--backend openai`` all work. Every case is one reply at
temperature 0, thinking off (``--think`` to turn it on), with the case's tools offered; the harness
collects the ``ToolCallDelta``\\ s the backend emits and scores them (see :func:`score_case`):

* **valid**: share of emitted calls that name an offered tool and whose arguments parse as a JSON
  object matching that tool's JSON schema (``jsonschema``);
* **name**: share of cases where the multiset of called function names equals the expected one
  (a no-call case is right when nothing is called);
* **args**: share of cases where the names are right *and* the calls pair up one to one with the
  expected calls, every argument matching one of its possible answers;
* **latency**: time to first token and time to the end of the reply, from the backend's
  ``Finished`` stats (medians in the table, every value in the JSON).

The cases live in ``tool_eval_cases.json`` (format described in its ``about`` field). With
``--constraints both`` (the default) every case runs with ``constrain_tools`` on, then off, and the
summary shows both and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CASES_FILE = Path(__file__).resolve().with_name("tool_eval_cases.json")
CATEGORIES = ("simple", "multiple", "parallel", "parallel_multiple", "irrelevance", "typed", "nested")
OMITTED = ""
"""In a list of possible answers: the argument may be left out (BFCL's convention)."""


# -- cases ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    id: str
    category: str
    tools: list[dict]
    messages: list[dict]
    expected: list[dict]

    def tool(self, name: str) -> dict | None:
        for tool in self.tools:
            if tool["function"]["name"] == name:
                return tool
        return None


class CaseError(ValueError):
    """The cases file is malformed."""


def load_cases(path: Path = CASES_FILE) -> list[Case]:
    """Read and check the cases: known categories, unique ids, expected calls to offered tools whose
    first possible answers validate against the tool's schema (so every case is answerable)."""
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    library: dict[str, dict] = data.get("tools", {})
    cases: list[Case] = []
    seen: set[str] = set()
    for raw in data["cases"]:
        cid = raw["id"]
        if cid in seen:
            raise CaseError(f"duplicate case id {cid!r}")
        seen.add(cid)
        if raw["category"] not in CATEGORIES:
            raise CaseError(f"{cid}: unknown category {raw['category']!r}")
        tools = []
        for item in raw["tools"]:
            tool = library.get(item) if isinstance(item, str) else item
            if tool is None:
                raise CaseError(f"{cid}: unknown tool {item!r}")
            tools.append(tool)
        case = Case(cid, raw["category"], tools, raw["messages"], raw["expected"])
        if not case.messages or case.messages[-1]["role"] != "user":
            raise CaseError(f"{cid}: the last message must be the user's")
        for call in case.expected:
            tool = case.tool(call["name"])
            if tool is None:
                raise CaseError(f"{cid}: expects {call['name']!r}, which is not offered")
            problem = schema_problem(tool, canonical_arguments(call["arguments"]))
            if problem:
                raise CaseError(f"{cid}: the expected answer for {call['name']} is invalid: {problem}")
        cases.append(case)
    return cases


def canonical_arguments(spec: dict) -> dict:
    """The first possible answer of every argument (leaving out those that may be omitted)."""
    out = {}
    for name, possible in spec.items():
        chosen = [p for p in possible if p != OMITTED]
        if chosen:
            out[name] = _canonical_value(chosen[0])
    return out


def _canonical_value(possibility: Any) -> Any:
    if isinstance(possibility, dict):
        return canonical_arguments(possibility)
    if isinstance(possibility, list):
        return [_canonical_value(p) for p in possibility]
    return possibility


# -- scoring ----------------------------------------------------------------------------------------


@dataclass
class EmittedCall:
    name: str
    arguments: str
    error: str | None = None
    raw: str = ""

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


def parse_arguments(text: str) -> tuple[dict | None, str | None]:
    try:
        value = json.loads(text) if text.strip() else {}
    except (json.JSONDecodeError, AttributeError) as error:
        return None, f"arguments are not JSON: {error}"
    if not isinstance(value, dict):
        return None, "arguments are not a JSON object"
    return value, None


def schema_problem(tool: dict, arguments: dict) -> str | None:
    """Why ``arguments`` do not fit ``tool``'s parameter schema, or None."""
    import jsonschema

    schema = tool["function"].get("parameters") or {"type": "object"}
    error = jsonschema.exceptions.best_match(jsonschema.Draft202012Validator(schema).iter_errors(arguments))
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{where + ': ' if where else ''}{error.message}"


def _norm(text: str) -> str:
    return " ".join(text.split()).casefold()


def value_matches(value: Any, possibility: Any) -> bool:
    """One argument value against one possible answer (recursively for arrays and objects)."""
    if isinstance(possibility, dict):
        return isinstance(value, dict) and arguments_match(value, possibility)[0]
    if isinstance(possibility, list):
        return (isinstance(value, list) and len(value) == len(possibility)
                and all(value_matches(v, p) for v, p in zip(value, possibility, strict=True)))
    if isinstance(possibility, bool):
        return isinstance(value, bool) and value == possibility
    if isinstance(possibility, (int, float)):
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isclose(value, possibility, rel_tol=1e-9, abs_tol=1e-9))
    if isinstance(possibility, str):
        return isinstance(value, str) and _norm(value) == _norm(possibility)
    return value == possibility


def arguments_match(arguments: dict, spec: dict) -> tuple[bool, str]:
    """Every argument given is expected and matches a possible answer; every missing one may be omitted."""
    for name in arguments:
        if name not in spec:
            return False, f"unexpected argument {name!r}"
    for name, possible in spec.items():
        if name not in arguments:
            if OMITTED not in possible:
                return False, f"missing argument {name!r}"
            continue
        if not any(value_matches(arguments[name], p) for p in possible):
            return False, f"{name}={json.dumps(arguments[name], ensure_ascii=False)} is not one of the answers"
    return True, ""


@dataclass
class CaseScore:
    calls: int
    valid_calls: int
    name_ok: bool
    args_ok: bool
    problems: list[str] = field(default_factory=list)


def score_case(case: Case, calls: Sequence[EmittedCall]) -> CaseScore:
    """Score the calls a model made for ``case`` (see the module docstring)."""
    problems: list[str] = []
    parsed: list[tuple[str, dict | None]] = []
    valid = 0
    for call in calls:
        args, problem = (None, call.error) if call.error or not call.name else parse_arguments(call.arguments)
        if not call.name and not problem:
            problem = "the call has no name"
        tool = case.tool(call.name) if call.name else None
        if problem is None and tool is None:
            problem = f"{call.name!r} is not an offered tool"
        if problem is None and args is not None and tool is not None:
            problem = schema_problem(tool, args)
        if problem is None:
            valid += 1
        else:
            problems.append(f"{call.name or '?'}: {problem}")
        parsed.append((call.name, args))

    expected_names = Counter(c["name"] for c in case.expected)
    name_ok = Counter(name for name, _ in parsed) == expected_names
    if not name_ok:
        problems.append(f"called {sorted(n or '?' for n, _ in parsed)}, expected {sorted(expected_names.elements())}")
    args_ok = name_ok and _pair_up(parsed, case.expected, problems)
    return CaseScore(len(calls), valid, name_ok, args_ok, problems)


def _pair_up(parsed: list[tuple[str, dict | None]], expected: list[dict], problems: list[str]) -> bool:
    """Whether the calls pair one to one with the expected calls, arguments matching (any order)."""
    if not expected:
        return not parsed
    fits = [[j for j, want in enumerate(expected)
             if want["name"] == name and args is not None and arguments_match(args, want["arguments"])[0]]
            for name, args in parsed]
    used: set[int] = set()

    def assign(i: int) -> bool:
        if i == len(parsed):
            return True
        for j in fits[i]:
            if j not in used:
                used.add(j)
                if assign(i + 1):
                    return True
                used.discard(j)
        return False

    if assign(0):
        return True
    for (name, args), options in zip(parsed, fits, strict=True):
        if options or args is None:
            continue
        reasons = [arguments_match(args, want["arguments"])[1] for want in expected if want["name"] == name]
        problems.append(f"{name}: {reasons[0] if len(reasons) == 1 else '; '.join(reasons)}")
    return False


# -- running ----------------------------------------------------------------------------------------


@dataclass
class CaseResult:
    case_id: str
    category: str
    constraints: bool
    calls: list[EmittedCall]
    text: str
    score: CaseScore
    ttft_s: float | None
    total_s: float | None
    wall_s: float
    completion_tokens: int | None = None
    stop_reason: str | None = None
    error: str | None = None

    def as_dict(self) -> dict:
        return {
            "id": self.case_id,
            "category": self.category,
            "constraints": self.constraints,
            "calls": [c.as_dict() for c in self.calls],
            "text": self.text,
            "valid_calls": self.score.valid_calls,
            "name_ok": self.score.name_ok,
            "args_ok": self.score.args_ok,
            "problems": self.score.problems,
            "ttft_s": _round(self.ttft_s),
            "total_s": _round(self.total_s),
            "wall_s": _round(self.wall_s),
            "completion_tokens": self.completion_tokens,
            "stop_reason": self.stop_reason,
            "error": self.error,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def supports_constraints() -> bool:
    from smoltui.backends.base import GenerationParams

    return "constrain_tools" in {f.name for f in dataclasses.fields(GenerationParams)}


def generation_params(case: Case, *, constraints: bool, max_tokens: int, think: bool,
                      tool_choice: str = "auto") -> Any:
    from smoltui.backends.base import GenerationParams

    extra: dict[str, Any] = {"constrain_tools": constraints} if supports_constraints() else {}
    if tool_choice != "auto":
        extra["tool_choice"] = tool_choice
    return GenerationParams(tools=list(case.tools), max_tokens=max_tokens, temperature=0.0, think=think,
                            seed=0, **extra)


def chat_messages(case: Case) -> list[Any]:
    from smoltui.backends.base import ChatMessage

    return [ChatMessage(m["role"], m["content"]) for m in case.messages]


async def run_case(backend: Any, case: Case, *, constraints: bool, max_tokens: int = 384,
                   think: bool = False, tool_choice: str = "auto") -> CaseResult:
    from smoltui.backends.base import CancelToken

    params = generation_params(case, constraints=constraints, max_tokens=max_tokens, think=think,
                               tool_choice=tool_choice)
    text: list[str] = []
    calls: list[EmittedCall] = []
    stats = None
    error = None
    started = time.perf_counter()
    try:
        async for event in backend.stream(chat_messages(case), params, CancelToken()):
            kind = getattr(event, "kind", None)
            if kind == "text":
                text.append(event.text)
            elif kind == "tool_call":
                calls.append(EmittedCall(event.name, event.arguments, getattr(event, "error", None) or None,
                                         getattr(event, "raw", "") or ""))
            elif kind == "done":
                stats = event.stats
    except Exception as exc:  # a failed reply is a wrong answer, not the end of the eval
        error = f"{type(exc).__name__}: {exc}"
    wall = time.perf_counter() - started
    score = score_case(case, calls)
    if error:
        score.name_ok = score.args_ok = False
        score.problems.insert(0, error)
    return CaseResult(
        case.id, case.category, constraints, calls, "".join(text), score,
        ttft_s=stats.ttft_s if stats else None,
        total_s=stats.total_s if stats else None,
        wall_s=wall,
        completion_tokens=stats.completion_tokens if stats else None,
        stop_reason=stats.stop_reason if stats else None,
        error=error,
    )


def render_prompt(backend: Any, case: Case, *, constraints: bool = True, max_tokens: int = 384,
                  think: bool = False, tool_choice: str = "auto") -> str:
    """The prompt the model sees for ``case``, as well as this backend lets us see it."""
    params = generation_params(case, constraints=constraints, max_tokens=max_tokens, think=think,
                               tool_choice=tool_choice)
    messages = chat_messages(case)
    for method in ("render_prompt", "render"):  # a backend that renders text itself
        render = getattr(backend, method, None)
        if callable(render):
            try:
                rendered = render(messages, params)
            except TypeError:
                continue
            if isinstance(rendered, str):
                return rendered
    prepare, llama = getattr(backend, "prepare", None), getattr(backend, "llama", None)
    if callable(prepare) and llama is not None:  # llama.cpp: the very tokens it will evaluate
        tokens = getattr(prepare(messages, params), "tokens", None)
        if tokens is not None:
            return llama.detokenize(list(tokens), special=True).decode("utf-8", "replace")
    body = getattr(backend, "request_body", None)
    if callable(body):  # an OpenAI-compatible server renders the tools itself
        return json.dumps(body(messages, params), ensure_ascii=False, indent=2)
    return json.dumps({"messages": case.messages, "tools": case.tools}, ensure_ascii=False, indent=2)


async def evaluate(backend: Any, cases: Sequence[Case], modes: Sequence[bool], *, max_tokens: int = 384,
                   think: bool = False, tool_choice: str = "auto", progress: Any = None) -> list[CaseResult]:
    results = []
    for constraints in modes:
        for case in cases:
            result = await run_case(backend, case, constraints=constraints, max_tokens=max_tokens, think=think,
                                    tool_choice=tool_choice)
            results.append(result)
            if progress:
                progress(result)
    return results


# -- reporting --------------------------------------------------------------------------------------


def summarize(results: Sequence[CaseResult]) -> dict[str, Any]:
    """Per-category and overall figures of one constraints mode."""
    def figures(rows: Sequence[CaseResult]) -> dict[str, Any]:
        calls = sum(r.score.calls for r in rows)
        valid = sum(r.score.valid_calls for r in rows)
        ttft = [r.ttft_s for r in rows if r.ttft_s is not None]
        total = [r.total_s for r in rows if r.total_s is not None]
        return {
            "cases": len(rows),
            "calls": calls,
            "validity": valid / calls if calls else None,
            "name_accuracy": sum(r.score.name_ok for r in rows) / len(rows) if rows else None,
            "argument_accuracy": sum(r.score.args_ok for r in rows) / len(rows) if rows else None,
            "ttft_p50_s": statistics.median(ttft) if ttft else None,
            "total_p50_s": statistics.median(total) if total else None,
            "total_mean_s": statistics.fmean(total) if total else None,
            "errors": sum(r.error is not None for r in rows),
        }

    out = {cat: figures([r for r in results if r.category == cat])
           for cat in CATEGORIES if any(r.category == cat for r in results)}
    out["overall"] = figures(results)
    return out


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:5.1f}%"


def _secs(value: float | None) -> str:
    return "-" if value is None else f"{value:6.2f}"


def table(summary: dict[str, Any]) -> str:
    header = ("category", "cases", "calls", "valid", "name", "args", "ttft p50 s", "total p50 s", "mean s")
    rows = [header]
    for cat, f in summary.items():
        rows.append((cat, str(f["cases"]), str(f["calls"]), _pct(f["validity"]), _pct(f["name_accuracy"]),
                     _pct(f["argument_accuracy"]), _secs(f["ttft_p50_s"]), _secs(f["total_p50_s"]),
                     _secs(f["total_mean_s"])))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


COMPARED = (("validity", "valid calls"), ("name_accuracy", "name accuracy"),
            ("argument_accuracy", "argument accuracy"), ("ttft_p50_s", "TTFT p50 (s)"),
            ("total_p50_s", "reply p50 (s)"), ("total_mean_s", "reply mean (s)"))


def comparison(on: dict[str, Any], off: dict[str, Any]) -> str:
    """Overall figures with constraints on and off, and their ratio."""
    lines = [f"{'overall':<18}  {'on':>8}  {'off':>8}  {'on/off':>7}"]
    for key, label in COMPARED:
        a, b = on["overall"][key], off["overall"][key]
        fmt = _secs if key.endswith("_s") else _pct
        ratio = "-" if a is None or not b else f"{a / b:6.2f}x"
        lines.append(f"{label:<18}  {fmt(a):>8}  {fmt(b):>8}  {ratio:>7}")
    return "\n".join(lines)


def machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }


# -- command line -----------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", "-m", help="as for smoltui: a .gguf, a pulled name, 'scripted', a hub id ...")
    p.add_argument("--backend", choices=("llama_cpp", "transformers", "openai"), help="model runtime")
    p.add_argument("--home", help="smoltui home (config, models); default SMOLTUI_HOME or the user dirs")
    p.add_argument("--threads", type=int, help="CPU threads for llama.cpp")
    p.add_argument("--n-ctx", type=int, default=None, help="context size in tokens")
    p.add_argument("--cases", type=Path, default=CASES_FILE, help="cases file (default: tool_eval_cases.json)")
    p.add_argument("--category", action="append", choices=CATEGORIES, help="only these categories (repeatable)")
    p.add_argument("--case", action="append", metavar="ID", help="only these case ids (repeatable)")
    p.add_argument("--limit", type=int, help="only the first N cases (after the filters)")
    p.add_argument("--constraints", choices=("on", "off", "both"), default="both",
                   help="constrained tool-call decoding (constrain_tools) on, off, or both (default)")
    p.add_argument("--max-tokens", type=int, default=384, help="reply length cap (384)")
    p.add_argument("--think", action="store_true", help="let the model think first (default: off)")
    p.add_argument("--tool-choice", choices=("auto", "required"), default="auto",
                   help="auto (default): the model decides whether to call; required: the reply starts "
                        "with a call (no-call cases then cannot be right)")
    p.add_argument("--json", nargs="?", const="-", metavar="FILE",
                   help="write the results as JSON to FILE (or stdout, with the tables on stderr)")
    p.add_argument("--show-prompt", action="store_true", help="print the first case's rendered prompt")
    p.add_argument("--quiet", "-q", action="store_true", help="no per-case progress lines")
    return p


def select_cases(args: argparse.Namespace) -> list[Case]:
    cases = load_cases(args.cases)
    if args.category:
        cases = [c for c in cases if c.category in args.category]
    if args.case:
        unknown = set(args.case) - {c.id for c in cases}
        if unknown:
            raise CaseError(f"no such case: {', '.join(sorted(unknown))}")
        cases = [c for c in cases if c.id in args.case]
    if args.limit is not None:
        cases = cases[: args.limit]
    return cases


def build_backend(args: argparse.Namespace) -> tuple[str, Any]:
    """The backend and model, chosen like the CLI does (flags over the config over the defaults)."""
    from smoltui.config import load_config
    from smoltui.core import resolve_and_build
    from smoltui.paths import Paths

    paths = Paths.resolve(args.home)
    config = load_config(paths.config_file)
    if args.backend:
        config.model.backend = args.backend
    if args.threads:
        config.model.threads = args.threads
    if args.n_ctx:
        config.model.n_ctx = args.n_ctx
    config.model.prompt_cache = False  # 50 tool sets would leave 50 prompt states in the user's cache
    ref, backend = resolve_and_build(config, paths, args.model)
    return ref.name, backend


async def _main(args: argparse.Namespace, backend: Any = None, model_name: str | None = None) -> int:
    cases = select_cases(args)
    if not cases:
        print("tool_eval: no cases selected", file=sys.stderr)
        return 2
    modes = {"on": [True], "off": [False], "both": [True, False]}[args.constraints]
    out = sys.stderr if args.json == "-" else sys.stdout
    if not supports_constraints():
        print("tool_eval: warning: GenerationParams has no constrain_tools; 'on' and 'off' run the same",
              file=sys.stderr)
    if backend is None:
        model_name, backend = build_backend(args)
    loaded_at = time.perf_counter()
    await backend.load()
    load_s = time.perf_counter() - loaded_at
    try:
        if args.show_prompt:
            print(f"--- prompt of {cases[0].id} (constraints {'on' if modes[0] else 'off'}) ---", file=sys.stderr)
            print(render_prompt(backend, cases[0], constraints=modes[0], max_tokens=args.max_tokens,
                                think=args.think, tool_choice=args.tool_choice), file=sys.stderr)
            print("--- end of prompt ---", file=sys.stderr)

        def progress(r: CaseResult) -> None:
            if args.quiet:
                return
            mark = "ok " if r.score.args_ok else ("~  " if r.score.name_ok else "x  ")
            names = ",".join(c.name or "?" for c in r.calls) or "-"
            why = f"  {r.score.problems[0]}" if r.score.problems and not r.score.args_ok else ""
            print(f"[{'on' if r.constraints else 'off':>3}] {mark}{r.case_id:<36} {_secs(r.total_s)} s  "
                  f"calls: {names}{why}"[:200], file=sys.stderr, flush=True)

        started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
        results = await evaluate(backend, cases, modes, max_tokens=args.max_tokens, think=args.think,
                                 tool_choice=args.tool_choice, progress=progress)
    finally:
        await backend.close()

    summaries = {("on" if m else "off"): summarize([r for r in results if r.constraints == m]) for m in modes}
    name = model_name or getattr(backend, "model_name", "?")
    print(f"\nmodel {name} on {getattr(backend, 'name', '?')}; {len(cases)} cases; loaded in {load_s:.1f} s; "
          f"{started}; {machine()['platform']}, {machine()['cpus']} CPUs", file=out)
    for mode, summary in summaries.items():
        print(f"\nconstraints {mode}\n{table(summary)}", file=out)
    if len(summaries) == 2:
        print(f"\n{comparison(summaries['on'], summaries['off'])}", file=out)
    if args.json:
        payload = {
            "model": name,
            "backend": getattr(backend, "name", None),
            "date": started,
            "machine": machine(),
            "constraints_supported": supports_constraints(),
            "settings": {"max_tokens": args.max_tokens, "think": args.think, "temperature": 0.0,
                         "tool_choice": args.tool_choice},
            "load_s": round(load_s, 3),
            "summary": summaries,
            "results": [r.as_dict() for r in results],
        }
        text = json.dumps(payload, ensure_ascii=False, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 0


def main(argv: Sequence[str] | None = None, *, backend: Any = None) -> int:
    """Run the eval; ``backend`` (tests) replaces the one ``--model``/``--backend`` would build."""
    args = build_parser().parse_args(argv)
    from smoltui.errors import SmoltuiError

    try:
        return asyncio.run(_main(args, backend))
    except (CaseError, SmoltuiError, OSError, json.JSONDecodeError) as error:
        print(f"tool_eval: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
