"""Command line: ``python -m sfp.demo prepare [--cache-dir .cache/sfp] [--force]``."""
from __future__ import annotations

import argparse
import os
import functools
import sys
from typing import List, Optional


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sfp.demo",
        description="Embedded demo: a synthetic benchmark in the PASCAL VOC layout and a tiny "
        "CLIP-architecture model trained on it (NOT a real CLIP).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="generate the benchmark and train the demo model where missing")
    p.add_argument("--cache-dir", default=os.environ.get("SFP_CACHE_DIR", ".cache/sfp"),
                   help="cache folder (default: $SFP_CACHE_DIR or .cache/sfp, as paths.cache_dir)")
    p.add_argument("--force", action="store_true", help="rebuild both even when up to date")
    args = parser.parse_args(argv)

    from sfp.demo.assets import prepare

    log = functools.partial(print, flush=True)
    paths = prepare(args.cache_dir, force=args.force, log=log)
    log(f"data_root:  {paths.data_root}")
    log(f"voc_root:   {paths.voc_root}")
    log(f"checkpoint: {paths.checkpoint}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
