"""The workflow models: the seed's file as written, retries, per-type fields, --var overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from smoltui.orchestrator.workflow_spec import (
    RetryPolicy,
    Task,
    WorkflowError,
    apply_vars,
    load_workflow,
)

REPO = Path(__file__).resolve().parents[1]
SEED = REPO / "workflows" / "data_analysis_workflow.yaml"


def test_the_seed_workflow_loads_as_written() -> None:
    loaded = load_workflow(SEED)
    spec = loaded.spec
    assert spec.id == "data-analysis-pipeline"
    assert spec.variables == {"input_file": "data/sales_data.csv", "output_dir": "reports/"}
    assert [t.id for t in spec.tasks] == ["load_data", "analyze_data", "generate_chart", "create_report"]
    assert [t.type for t in spec.tasks] == ["tool_call", "llm_task", "tool_call", "llm_task"]
    assert spec.task("generate_chart").inputs == {"data": "${dataframe}", "chart_type": "bar",
                                                  "insights": "${analysis_results}"}
    assert "${dataframe.describe()}" in spec.task("analyze_data").prompt
    assert spec.task("create_report").depends_on == ["analyze_data", "generate_chart"]
    assert spec.max_concurrent_tasks == 4
    assert (loaded.base_dir / spec.variables["input_file"]).is_file()
    # positions are 1-based and point at the value in the file
    line, col = loaded.position(("workflow", "tasks", 2, "depends_on", 0))
    assert loaded.text.splitlines()[line - 1][col - 1:].startswith('"analyze_data"')


def task(**fields: object) -> Task:
    return Task.model_validate({"id": "t", "type": "llm_task", "prompt": "hi", **fields})


def test_retries_as_count_or_policy() -> None:
    assert task().retries == RetryPolicy(count=0, delay=1.0, backoff=2.0)
    assert task(retries=3).retries == RetryPolicy(count=3, delay=1.0, backoff=2.0)
    policy = task(retries={"count": 2, "delay": 0.5}).retries
    assert (policy.count, policy.delay, policy.backoff) == (2, 0.5, 2.0)
    assert [policy.wait_before(n) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    with pytest.raises(ValueError, match="count"):
        task(retries={"count": -1})
    with pytest.raises(ValueError, match="tries"):
        task(retries={"tries": 2})


def test_llm_fields() -> None:
    t = task(think=False, system="be brief", timeout=30, schema={"type": "object"}, when="${go}")
    assert (t.think, t.system, t.timeout, t.schema_, t.when) == (False, "be brief", 30, {"type": "object"}, "${go}")


@pytest.mark.parametrize(("fields", "needs"), [
    ({"type": "tool_call"}, "tool_call task `x` needs `tool`"),
    ({"type": "llm_task"}, "llm_task task `x` needs `prompt`"),
    ({"type": "conditional", "condition": "${a}"}, "conditional task `x` needs `then`"),
    ({"type": "conditional"}, "conditional task `x` needs `condition`, `then`"),
    ({"type": "llm_task", "prompt": "p", "tool": "python"}, "`tool` only apply to tool_call tasks"),
])
def test_each_type_has_its_required_fields(fields: dict, needs: str) -> None:
    with pytest.raises(ValueError, match=needs):
        Task.model_validate({"id": "x", **fields})


def test_conditional_task() -> None:
    t = Task.model_validate({"id": "x", "type": "conditional", "condition": "${n} > 3", "then": ["a"], "else": ["b"]})
    assert (t.then, t.else_) == (["a"], ["b"])


def test_var_overrides_of_a_text_variable_stay_text() -> None:
    spec = load_workflow(SEED).spec
    out = apply_vars(spec, ["input_file=other.csv", "output_dir=3"])
    assert out.variables == {"input_file": "other.csv", "output_dir": "3"}  # its default is text
    assert spec.variables["output_dir"] == "reports/"  # the original is untouched
    assert apply_vars(spec, ["output_dir=true"]).variables["output_dir"] == "true"
    assert apply_vars(spec, ["output_dir=a: b"]).variables["output_dir"] == "a: b"
    assert apply_vars(spec, ["output_dir="]).variables["output_dir"] == ""


def test_unknown_var_names_it_and_the_known_ones() -> None:
    spec = load_workflow(SEED).spec
    with pytest.raises(WorkflowError) as caught:
        apply_vars(spec, ["input_fil=x.csv"])
    message = str(caught.value)
    assert "`input_fil`" in message and "did you mean `input_file`" in message
    assert "variables: input_file, output_dir" in message
    assert caught.value.exit_code == 2
    with pytest.raises(WorkflowError, match="NAME=VALUE"):
        apply_vars(spec, ["input_file"])


def test_load_workflow_raises_with_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text("workflow:\n  id: w\n  tasks:\n    - id: a\n      type: llm_task\n      promt: hi\n")
    with pytest.raises(WorkflowError) as caught:
        load_workflow(path)
    assert [str(p) for p in caught.value.problems] == [f"{path}:6:7: unknown key `promt` (did you mean `prompt`?)"]
    with pytest.raises(WorkflowError, match="no such file"):
        load_workflow(tmp_path / "missing.yaml")
