"""The command line as a user runs it: a real subprocess, a private home, no network."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import PYTHON, REPO

SCRIPTED_REPLY_START = "Hello! I am a **scripted** model"


def run(env: dict[str, str], *args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PYTHON, "-m", "smoltui", *args],
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=None if stdin is not None else subprocess.DEVNULL,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, code: int, *fragments: str) -> None:
    assert result.returncode == code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("smoltui: ")
    for fragment in fragments:
        assert fragment in lines[0]


HEAVY = {"torch", "transformers", "llama_cpp", "textual", "pydantic", "huggingface_hub", "aiosqlite"}


def test_version_and_help_do_not_import_heavy_modules(cli_env: dict[str, str]) -> None:
    for argv in (["-m", "smoltui", "--version"], ["-m", "smoltui", "--help"], ["-m", "smoltui", "run", "--help"],
                 ["-m", "smoltui.cli", "--help"]):
        result = subprocess.run(
            [PYTHON, "-X", "importtime", *argv],
            env=cli_env, capture_output=True, text=True, timeout=60,
        )
        assert result.returncode == 0, result.stderr
        imported = {line.split("|")[-1].strip().split(".")[0] for line in result.stderr.splitlines()}
        assert "smoltui" in imported  # the trace did list the imports
        assert not imported & HEAVY, (argv, imported & HEAVY)
    assert "smoltui 0.1.0" in run(cli_env, "--version").stdout


def test_every_command_has_a_module_with_run() -> None:
    import argparse
    import importlib

    from smoltui.cli import COMMANDS
    from smoltui.cli.parser import build_parser

    [subcommands] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    assert set(COMMANDS) == set(subcommands.choices)  # no command without a module, nor the reverse
    for name, module_name in COMMANDS.items():
        module = importlib.import_module(module_name)
        assert callable(getattr(module, "run", None)), f"{name}: {module_name} has no run(args)"


def test_python_m_smoltui_cli_and_the_declared_script_run_the_cli(cli_env: dict[str, str]) -> None:
    import tomllib

    as_module = subprocess.run([PYTHON, "-m", "smoltui.cli", "--version"], env=cli_env, capture_output=True,
                               text=True, timeout=60)
    assert (as_module.returncode, as_module.stdout) == (0, "smoltui 0.1.0\n"), as_module.stderr
    # The console script pyproject declares, called the way an installer's stub calls it.
    target = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["scripts"]["smoltui"]
    module, function = target.split(":")
    stub = f"import sys\nfrom {module} import {function}\nsys.exit({function}())"
    scripts = [[PYTHON, "-c", stub]]
    installed = Path(PYTHON).parent / "smoltui"
    if installed.is_file():  # the venv's own stub (it imports this checkout: PYTHONPATH)
        scripts.append([str(installed)])
    for script in scripts:
        result = subprocess.run([*script, "runs"], env=cli_env, capture_output=True, text=True, timeout=60,
                                stdin=subprocess.DEVNULL)
        assert (result.returncode, result.stdout) == (0, "no workflow runs\n"), (script, result.stderr)


def test_prompt_flag_streams_reply_and_records_the_chat(cli_env: dict[str, str], home: Path) -> None:
    result = run(cli_env, "chat", "--model", "scripted", "--prompt", "hi there")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(SCRIPTED_REPLY_START)
    import sqlite3

    rows = sqlite3.connect(home / "smoltui.db").execute("select role, content from messages order by id").fetchall()
    assert rows[0] == ("user", "hi there") and rows[1][0] == "assistant"


def test_stdin_prompt_and_json_output(cli_env: dict[str, str]) -> None:
    result = run(cli_env, "chat", "--model", "scripted", "--json", stdin="what are you?\n")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["reply"].startswith(SCRIPTED_REPLY_START)
    assert payload["backend"] == "scripted"
    assert payload["stats"]["completion_tokens"] > 5
    assert {"ttft_s", "prefill_tok_s", "decode_tok_s", "context_used", "context_size"} <= payload["stats"].keys()


def test_no_prompt_at_all(cli_env: dict[str, str]) -> None:
    assert_one_line_error(run(cli_env, "chat", "--model", "scripted", stdin=""), 1, "nothing to send")


def test_missing_model_path(cli_env: dict[str, str], tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "model.gguf"
    result = run(cli_env, "chat", "--model", str(missing), "--prompt", "hi")
    assert_one_line_error(result, 4, "model file not found", str(missing))


def test_file_that_is_not_gguf(cli_env: dict[str, str], tmp_path: Path) -> None:
    fake = tmp_path / "fake.gguf"
    fake.write_text("hello", encoding="utf-8")
    assert_one_line_error(run(cli_env, "chat", "-m", str(fake), "-p", "hi"), 4, "is not a GGUF model file")


def test_truncated_gguf(cli_env: dict[str, str], tmp_path: Path, bundled_model: Path) -> None:
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(bundled_model.read_bytes()[: 5_000_000])
    assert_one_line_error(run(cli_env, "chat", "-m", str(cut), "-p", "hi"), 4, "is truncated", str(cut))


def test_config_with_a_toml_error(cli_env: dict[str, str], home: Path) -> None:
    (home / "config.toml").write_text("[model\n", encoding="utf-8")
    result = run(cli_env, "chat", "--model", "scripted", "--prompt", "hi")
    assert_one_line_error(result, 3, str(home / "config.toml"), "TOML error")


def test_unwritable_data_dir(cli_env: dict[str, str], tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where a folder should be", encoding="utf-8")
    env = dict(cli_env, SMOLTUI_HOME=str(blocker / "home"))
    result = run(env, "chat", "--model", "scripted", "--prompt", "hi")
    assert_one_line_error(result, 5, str(blocker))


def test_pull_offline_fails_with_one_line(cli_env: dict[str, str]) -> None:
    result = run(cli_env, "models", "pull", "smollm3", timeout=180)
    assert result.returncode == 7, result.stderr
    assert "Traceback" not in result.stderr
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("smoltui: ")]
    assert len(error_lines) == 1
    assert "could not download SmolLM3-Q4_K_M.gguf" in error_lines[0]


def test_pull_unknown_name(cli_env: dict[str, str]) -> None:
    assert_one_line_error(run(cli_env, "models", "pull", "gpt-9"), 4, "unknown model 'gpt-9'")


def test_pulled_name_not_downloaded_yet(cli_env: dict[str, str]) -> None:
    result = run(cli_env, "chat", "--model", "smollm3", "--prompt", "hi")
    assert_one_line_error(result, 4, "smoltui models pull smollm3")


def test_models_list_shows_bundled_local_and_hf_cache(cli_env: dict[str, str], home: Path, tmp_path: Path,
                                                     bundled_model: Path) -> None:
    local = home / "models"
    local.mkdir()
    (local / "mine.gguf").write_bytes(b"GGUF")
    snapshot = tmp_path / "hf" / "hub" / "models--someone--Tiny-GGUF" / "snapshots" / "abc123"
    snapshot.mkdir(parents=True)
    (snapshot / "tiny-q4.gguf").write_bytes(b"GGUF" + b"\0" * 100)
    refs = snapshot.parents[1] / "refs"
    refs.mkdir()
    (refs / "main").write_text("abc123", encoding="utf-8")
    result = run(cli_env, "models", "list", "--json")
    assert result.returncode == 0, result.stderr
    listed = {m["source"]: m for m in json.loads(result.stdout)}
    assert listed["bundled"]["location"] == str(bundled_model)
    assert listed["local"]["name"] == "mine.gguf"
    assert listed["hf-cache"]["name"] == "someone/Tiny-GGUF/tiny-q4.gguf"
    text = run(cli_env, "models", "list").stdout
    assert "smollm2 (bundled)" in text and "mine.gguf" in text


@pytest.mark.llama
def test_real_reply_from_the_bundled_model(cli_env: dict[str, str]) -> None:
    pytest.importorskip("llama_cpp")
    result = run(cli_env, "chat", "--json", "--max-tokens", "12", "--prompt", "Name a color.")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["model"] == "SmolLM2-135M-Instruct (bundled)"
    assert payload["backend"] == "llama.cpp"
    assert 0 < payload["stats"]["completion_tokens"] <= 12
    assert payload["reply"].strip()


# -- a reader that goes away, an error nobody foresaw --------------------------------------------------


def run_with_stdout_closed(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """``smoltui ARGS | head -0``: stdout is a pipe whose reader has already gone."""
    import os

    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run([PYTHON, "-m", "smoltui", *args], env=env, stdout=write_end, stderr=subprocess.PIPE,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    finally:
        os.close(write_end)


@pytest.mark.parametrize("command", [["runs"], ["audit"], ["tools", "list"], ["chat", "-m", "scripted", "-p", "hi"]],
                         ids=" ".join)
def test_a_closed_pipe_ends_the_command_quietly(cli_env: dict[str, str], command: list[str]) -> None:
    from smoltui.cli import CLOSED_PIPE_EXIT

    result = run_with_stdout_closed(cli_env, *command)
    assert result.stderr == ""  # no traceback, no "unexpected error", no "Exception ignored"
    assert result.returncode == CLOSED_PIPE_EXIT  # as a shell reports `yes | head -1`


def test_an_unforeseen_error_is_one_line_and_its_traceback_goes_to_the_log(cli_env: dict[str, str],
                                                                          home: Path) -> None:
    """Even from a command that never opens the core (so never set up the log file itself)."""
    boom = ("import sys, smoltui.cli.workflows as w\n"
            "def fail(args): raise RuntimeError('boom')\n"
            "w.runs_command = fail\n"
            "from smoltui.cli import main\n"
            "sys.exit(main(['runs']))\n")
    result = subprocess.run([PYTHON, "-c", boom], env=cli_env, capture_output=True, text=True, timeout=60)
    log_file = home / "smoltui.log"
    assert_one_line_error(result, 1, "unexpected error: RuntimeError: boom", str(log_file))
    assert "Traceback" in log_file.read_text(encoding="utf-8")


def test_a_chat_whose_reader_went_away_stops_its_reply(cli_env: dict[str, str], home: Path) -> None:
    import sqlite3

    result = run_with_stdout_closed(cli_env, "chat", "-m", "scripted", "-p", "hi")
    assert result.stderr == ""
    with sqlite3.connect(home / "smoltui.db") as db:
        (content, stop) = db.execute("select content, json_extract(stats, '$.stop_reason') from messages "
                                     "where role = 'assistant'").fetchone()
    from smoltui.backends.scripted import DEFAULT_REPLIES

    assert stop == "cancelled"  # not generated to the end for nobody
    assert DEFAULT_REPLIES[0].startswith(content) and content != DEFAULT_REPLIES[0]
