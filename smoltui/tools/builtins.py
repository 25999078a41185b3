"""The built-in tools, assembled from the config: one list for the chat, the workflows and the CLI."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from smoltui.tools.base import Tool
from smoltui.tools.filesystem import FILESYSTEM_TOOLS
from smoltui.tools.python_exec import PYTHON_TOOLS
from smoltui.tools.sql import SQL_TOOLS
from smoltui.tools.web_fetch import make_web_fetch


def builtin_tools(*, web_allow: list[str] | None = None, web_deny: list[str] | None = None) -> list[Tool]:
    tools = [*FILESYSTEM_TOOLS, *PYTHON_TOOLS, *SQL_TOOLS, make_web_fetch(allow=web_allow or (), deny=web_deny or ())]
    # pandas and matplotlib are the optional `data` extra: their tools appear only when installed.
    if importlib.util.find_spec("pandas") and importlib.util.find_spec("pyarrow"):
        from smoltui.tools.data import DATA_TOOLS

        tools += DATA_TOOLS
        if importlib.util.find_spec("matplotlib"):
            from smoltui.tools.chart import CHART_TOOLS

            tools += CHART_TOOLS
    return tools


def default_workspace(configured: str | None) -> Path:
    return Path(configured).expanduser().resolve() if configured else Path.cwd().resolve()
