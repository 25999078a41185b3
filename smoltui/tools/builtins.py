"""The built-in tools, assembled from the config: one list for the chat, the workflows and the CLI."""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path

from smoltui.tools.base import Tool
from smoltui.tools.filesystem import FILESYSTEM_TOOLS
from smoltui.tools.python_exec import PYTHON_TOOLS
from smoltui.tools.sql import SQL_TOOLS
from smoltui.tools.web_fetch import make_web_fetch


def builtin_tools(*, web_allow: Sequence[str] = (), web_deny: Sequence[str] = (), web_allow_networks: Sequence[str] = (),
                  web_allow_private_hosts: Sequence[str] = ()) -> list[Tool]:
    """The built-in tools; ``web_fetch`` under the config's host and address lists."""
    web = make_web_fetch(allow=web_allow, deny=web_deny, allow_networks=web_allow_networks,
                         allow_private_hosts=web_allow_private_hosts)
    tools = [*FILESYSTEM_TOOLS, *PYTHON_TOOLS, *SQL_TOOLS, web]
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
