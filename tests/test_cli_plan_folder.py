"""`smoltui plan` saves where the app's planner does: the project's workflows/ when the folder it
runs in has one (so a draft's relative paths reach the project's files), else the user's folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from smoltui.cli import main
from smoltui.cli import plan as plan_cli
from smoltui.orchestrator.planner import Draft

DRAFT = """\
workflow:
  id: count-words
  name: Count words
  tasks:
    - id: count
      type: python
      code: "print(1)"
"""


@pytest.fixture
def drafted(monkeypatch: pytest.MonkeyPatch) -> None:
    async def draft(args, settings, goal, max_tokens):  # noqa: ANN001, ANN202
        return Draft(goal=goal, yaml=DRAFT), {}

    monkeypatch.setattr(plan_cli, "_draft", draft)
    monkeypatch.setattr(plan_cli, "_Checker", lambda tools: (lambda text: []))


@pytest.mark.parametrize("has_project_folder", [True, False], ids=["project", "no-project"])
def test_plan_saves_in_the_projects_workflows_folder_when_there_is_one(
        home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        drafted: None, has_project_folder: bool) -> None:
    project = tmp_path / "project"
    project.mkdir()
    if has_project_folder:
        (project / "workflows").mkdir()
    monkeypatch.chdir(project)
    assert main(["plan", "--json", "--yes", "count the words in my notes"]) == 0
    saved = Path(json.loads(capsys.readouterr().out)["path"])
    expected = (project / "workflows") if has_project_folder else home / "workflows"
    assert saved.parent.resolve() == expected.resolve()
    assert saved.read_text(encoding="utf-8") == DRAFT
