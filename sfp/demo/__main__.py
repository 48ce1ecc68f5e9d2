"""Command line of the embedded demo.

    python -m sfp.demo prepare   [--cache-dir DIR] [--force]   # write the benchmark, check the weights
    python -m sfp.demo reference [--cache-dir DIR]             # all-background and patch-grid oracle mIoU
    python -m sfp.demo figure --out docs/demo_masks.png [--images 0 1 2] [--methods clip sfp]
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
from typing import List, Optional


def _cache_dir_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", default=None,
                   help="cache folder (default: paths.cache_dir of the run config: $SFP_CACHE_DIR, else "
                   "<root>/.cache/sfp with the root of README, 'Paths')")


def _compose(cache_dir: Optional[str], overrides: List[str]):
    from sfp.assembly import compose

    return compose(([f"paths.cache_dir={cache_dir}"] if cache_dir else []) + ["tracker=none", *overrides])


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sfp.demo",
        description="Embedded demo: a synthetic benchmark in the PASCAL VOC layout and a small CLIP that the "
        "project trained on the same synthetic world (NOT OpenAI's CLIP).",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="write the benchmark where missing and check the shipped weights")
    _cache_dir_arg(p)
    p.add_argument("--force", action="store_true", help="rewrite the benchmark even when up to date")
    r = sub.add_parser("reference", help="all-background and patch-grid oracle mIoU of the demo benchmark")
    _cache_dir_arg(r)
    f = sub.add_parser("figure", help="a PNG of predicted masks of a few benchmark images")
    _cache_dir_arg(f)
    f.add_argument("--out", required=True, help="PNG file to write")
    f.add_argument("--images", type=int, nargs="+", default=[0, 1, 2, 3], help="benchmark image indices")
    f.add_argument("--methods", nargs="+", default=["clip", "sfp"], help="method presets shown")
    args = parser.parse_args(argv)
    if args.cache_dir is None:
        args.cache_dir = _compose(None, []).paths.cache_dir
    log = functools.partial(print, flush=True)

    from sfp.demo.assets import prepare

    if args.command == "prepare":
        paths = prepare(args.cache_dir, force=args.force, log=log)
        log(f"voc_root:   {paths.voc_root}")
        log(f"checkpoint: {paths.checkpoint}")
        return 0
    prepare(args.cache_dir, log=lambda _m: None)
    if args.command == "reference":
        from sfp.demo.reference import reference_scores

        scores = reference_scores(_compose(args.cache_dir, []))
        log(f"all background:    {scores['all_background']:.2f} mIoU")
        log(f"patch-grid oracle: {scores['patch_grid_oracle']:.2f} mIoU (16 px cells, majority label)")
        log(json.dumps(scores))
        return 0
    from sfp.demo.figure import mask_figure, predictions

    methods = [{"title": m, "cfg": _compose(args.cache_dir, [f"method={m}"])} for m in args.methods]
    preds, images, labels, names = predictions(methods[0]["cfg"], methods, args.images)
    log(f"wrote {mask_figure(images, labels, preds, names, args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
