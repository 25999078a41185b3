"""`smoltui validate` stays quick on a big (but bounded) file: did-you-mean hints on a budget, names
found once per template, dependencies worked out once per cycle; the answers stay the same."""

from __future__ import annotations

import time

from smoltui.orchestrator.workflow_validate import MAX_NAMES_PER_FIELD, validate_text


def _workflow(tasks: list[str], variables: str = "{}") -> str:
    return f"workflow:\n  id: w\n  variables: {variables}\n  tasks:\n" + "".join(f"    - {t}\n" for t in tasks)


def test_thousands_of_misspelt_ids_are_reported_quickly() -> None:
    """Each unknown id looked like every known one: difflib compared them all (218 s for 1,500 tasks)."""
    tasks = [f"{{id: task_{i:05d}, type: llm_task, prompt: 'p ${{v{i}}}', depends_on: [tsak_{i:05d}]}}"
             for i in range(800)]
    started = time.perf_counter()
    problems = validate_text(_workflow(tasks), "w.yaml", tools={})
    assert time.perf_counter() - started < 5.0
    assert len(problems) == 1600
    hinted = [p for p in problems if "did you mean `task_00000`" in p.message]
    assert hinted and hinted[0].message == ("task `task_00000` depends on unknown task `tsak_00000` "
                                            "(did you mean `task_00000`?)")


def test_a_long_chain_is_quick() -> None:
    """Each task's upstream was a walk of its own: quadratic in Python; now set unions."""
    chain = [f"{{id: t{i}, type: llm_task, prompt: '${{o{i - 1}}}', outputs: [o{i}], depends_on: [t{i - 1}]}}"
             for i in range(1, 1500)]
    chain.insert(0, "{id: t0, type: llm_task, prompt: 'start', outputs: [o0]}")
    chain.append("{id: last, type: llm_task, prompt: '${o0} ${o1498}', depends_on: [t1498]}")
    started = time.perf_counter()
    assert validate_text(_workflow(chain), "w.yaml", tools={}) == []
    assert time.perf_counter() - started < 8.0


def test_a_long_cycle_is_quick_and_reported_once() -> None:
    cycle = [f"{{id: t{i}, type: llm_task, prompt: '${{o{i}}}', outputs: [o{i}], depends_on: [t{(i + 1) % 1500}]}}"
             for i in range(1500)]
    started = time.perf_counter()
    problems = validate_text(_workflow(cycle), "w.yaml", tools={})
    assert time.perf_counter() - started < 8.0
    assert [p.message.split(":")[0] for p in problems].count("dependency cycle") == 1
    # in the cycle, a task's own output is still its own, not something upstream
    assert "template in `prompt` of `t0` names `o0`, an output of `t0` itself" in [p.message for p in problems]


def test_a_field_naming_many_unknown_names_gets_a_count_not_a_problem_each() -> None:
    prompt = " ".join(f"${{x{i}}}" for i in range(500))
    problems = validate_text(_workflow([f"{{id: t, type: llm_task, prompt: '{prompt}'}}"]), "w.yaml", tools={})
    assert len(problems) == MAX_NAMES_PER_FIELD + 1
    assert any(f"names {500 - MAX_NAMES_PER_FIELD} more unknown names" in p.message for p in problems)
