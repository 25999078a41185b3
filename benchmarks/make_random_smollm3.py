"""Write a random-weight GGUF with SmolLM3-3B's exact shape, quantized to Q4_K_M like the real release.

The builder lives in :mod:`smoltui.benchmarking.synthetic_gguf` (``smoltui bench --synthetic`` uses it
too); this script writes the files the benchmarks here use, into ``benchmarks/out/``.

    .venv/bin/python benchmarks/make_random_smollm3.py            # ~1.9 GB, a few minutes
    .venv/bin/python benchmarks/make_random_smollm3.py --tiny     # 4 layers, hidden 256: seconds
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from smoltui.benchmarking.synthetic_gguf import TINY, Shape, make, smoke_test, smollm3_shape  # noqa: E402

__all__ = ["DEFAULT_OUT", "TINY", "TINY_OUT", "Shape", "make", "smoke_test", "smollm3_shape"]

OUT_DIR = HERE / "out"
DEFAULT_OUT = OUT_DIR / "smollm3-3b-random-q4_k_m.gguf"
TINY_OUT = OUT_DIR / "smollm3-tiny-random-q4_k_m.gguf"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, help=f"output file (default {DEFAULT_OUT.relative_to(REPO)})")
    ap.add_argument("--tiny", action="store_true", help="4 layers, hidden 256: tests the pipeline in seconds")
    ap.add_argument("--force", action="store_true", help="rebuild even if the output exists")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="quantizer threads (default: all cores)")
    ap.add_argument("--smoke", action="store_true", help="load the result with llama.cpp and generate")
    args = ap.parse_args(argv)
    out = args.out or (TINY_OUT if args.tiny else DEFAULT_OUT)
    make(out, tiny=args.tiny, force=args.force, seed=args.seed, threads=args.threads)
    if args.smoke:
        smoke_test(out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
