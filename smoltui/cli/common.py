"""What every command module shares: the core it asks for, and how rows are printed."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

from smoltui.config import Config, load_config
from smoltui.core import Settings
from smoltui.paths import Paths
from smoltui.safe_text import printable


def paths_of(args: argparse.Namespace) -> Paths:
    return Paths.resolve(getattr(args, "home", None))


def settings_of(args: argparse.Namespace, *, headless: bool = True, workspace: Path | None = None,
                config: Config | None = None) -> Settings:
    """The core a command asks for: the config file with the command line's overrides; a headless
    command's ``--approve`` (default ``none``) settles what the config would ask about."""
    paths = paths_of(args)
    if config is None:
        config = load_config(paths.config_file)
    apply_overrides(config, args)
    approve = (getattr(args, "approve", None) or "none") if headless else None
    return Settings(config, paths, model_spec=getattr(args, "model", None), approve=approve, workspace=workspace)


def apply_overrides(config: Config, args: argparse.Namespace) -> None:
    # `is not None`: a flag's value is honoured even when it is falsy (the parser sets the minimums)
    if getattr(args, "threads", None) is not None:
        config.model.threads = args.threads
    if getattr(args, "n_ctx", None) is not None:
        config.model.n_ctx = args.n_ctx
    if getattr(args, "backend", None) is not None:
        config.model.backend = args.backend


def table(header: Sequence[str], rows: Sequence[Sequence[str]], *, last_free: bool = False) -> str:
    """Left-aligned columns two spaces apart; ``last_free``: the last column is not padded.

    Cells are escaped (:func:`printable`): ids, names and titles come from files and models.
    """
    lines = [tuple(header), *(tuple(printable(cell) for cell in row) for row in rows)]
    padded = len(header) - 1 if last_free else len(header)
    widths = [max(len(line[i]) for line in lines) for i in range(padded)]
    out = []
    for line in lines:
        cells = [cell.ljust(w) for cell, w in zip(line[:padded], widths, strict=True)] + list(line[padded:])
        out.append("  ".join(cells).rstrip())
    return "\n".join(out)


def when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))
