"""``smoltui bench``: the measuring is in :mod:`smoltui.benchmarking.measure`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from smoltui.cli.common import apply_overrides, paths_of
from smoltui.config import load_config
from smoltui.core import resolve_and_build, setup_logging


def run(args: argparse.Namespace) -> int:
    from smoltui.benchmarking import measure

    paths = paths_of(args)
    config = load_config(paths.config_file)
    apply_overrides(config, args)
    setup_logging(paths)
    measure.check_sizes(args.prompt_tokens, args.new_tokens, args.runs)
    config.model.prompt_cache = False  # every run pays for its whole prompt
    model_spec = getattr(args, "model", None)
    if args.synthetic:
        def say(line: str) -> None:
            print(f"smoltui: {line}", file=sys.stderr, flush=True)

        model_spec = str(measure.synthetic_model(config.model.backend, paths.cache_dir, args.synthetic, say=say))
    ref, backend = resolve_and_build(config, paths, model_spec)
    report = asyncio.run(measure.run_bench(
        backend, ref.name, prompt_tokens=args.prompt_tokens, new_tokens=args.new_tokens, runs=args.runs,
    ))
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.table())
    return 0
