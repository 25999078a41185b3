"""Numeric options have sane minimums; ids and names from files and models print escaped."""

from __future__ import annotations

from pathlib import Path

import pytest

from smoltui.backends.base import CancelToken, ChatMessage, Finished, GenerationParams
from smoltui.cli import main
from smoltui.cli.common import table
from smoltui.orchestrator.run_log import LogRecord, format_line


@pytest.mark.parametrize(
    ("argv", "named"),
    [
        (["--n-ctx", "10", "chat", "-p", "hi"], "--n-ctx: 10 is too small: the least is 256"),
        (["--threads", "0", "chat", "-p", "hi"], "--threads: 0 is too small: the least is 1"),
        (["chat", "--max-tokens", "0", "-p", "hi"], "--max-tokens: 0 is too small"),
        (["runs", "--limit", "-3"], "--limit: -3 is too small"),
        (["runs", "--limit", "many"], "--limit: 'many' is not a whole number"),
        (["logs", "r1", "--follow", "--interval", "0"], "--interval: 0 is too small: the least is 0.05"),
    ],
)
def test_numeric_options_below_their_minimum_are_one_line(argv: list[str], named: str, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--home", str(tmp_path), *argv])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert named in err
    assert "Traceback" not in err


@pytest.mark.llama
async def test_a_tiny_context_is_raised_to_the_least_that_works(bundled_model: Path, tmp_path: Path) -> None:
    # Settings from a config or a library caller do not pass through the parser: --n-ctx 10 reached
    # llama.cpp and ended in a numpy broadcast error.
    pytest.importorskip("llama_cpp")
    from smoltui.backends.llama_cpp import MIN_CONTEXT, LlamaCppBackend, LlamaSettings

    backend = LlamaCppBackend(bundled_model, LlamaSettings(n_ctx=10, n_threads=2, prompt_cache_dir=None))
    await backend.load()
    try:
        assert backend.context_size == MIN_CONTEXT
        # A chat template's errors and limits name the model file it came from.
        assert backend.template.origin == bundled_model.name
        finished = [event async for event in backend.stream(
            [ChatMessage("user", "Hi")], GenerationParams(max_tokens=4, temperature=0.0), CancelToken())
            if isinstance(event, Finished)]
        assert finished and finished[0].stats.completion_tokens >= 1
    finally:
        await backend.close()


def test_table_cells_from_files_and_models_print_escaped() -> None:
    out = table(("RUN", "WORKFLOW"), [("r1", "report\x1b]0;pwned\x07"), ("r2", "txt.\u202eexe")])
    assert "\x1b" not in out and "\u202e" not in out
    assert "report\\x1b]0;pwned\\x07" in out and "txt.\\u202eexe" in out


def test_log_lines_print_ids_escaped_and_keep_the_message_lines() -> None:
    record = LogRecord(id=1, run_id="r\x1b[2J", task_id="t\r", kind="log", message="line 1\nline 2\x1b[31m",
                       created_at=0.0)
    line = format_line(record, timestamps=False, show_run=True)
    assert line == "[r\\x1b[2J] t\\r: log: line 1\nline 2\\x1b[31m"
