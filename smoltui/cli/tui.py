"""``smoltui`` (or ``smoltui tui``): the app, attached to ``smoltui serve`` when one runs for the home,
else over a core built in this process."""

from __future__ import annotations

import argparse
import asyncio
import os

from smoltui.cli.common import apply_overrides, paths_of
from smoltui.config import Config, load_config
from smoltui.core import Settings
from smoltui.errors import ConfigError


def run(args: argparse.Namespace) -> int:
    paths = paths_of(args)
    # The app still opens on a broken config file (with defaults) and says what is wrong in it.
    problems: list[str] = []
    try:
        config = load_config(paths.config_file)
    except ConfigError as error:
        config = Config()
        problems.append(f"{error} (using default settings)")
    apply_overrides(config, args)
    if getattr(args, "local", False):
        os.environ["SMOLTUI_LOCAL"] = "1"  # what run_app reads (textual-serve tabs pass it the same way)
    from smoltui.app import run_app

    settings = Settings(config, paths, model_spec=getattr(args, "model", None))
    return asyncio.run(run_app(settings, startup_errors=problems))
