"""`python -m analysis <table> --runs DIR`: the paper's tables (and figures) from a folder of runs or a W&B
project.

    python -m analysis main --runs outputs/ --format tex --out main.tex
    python -m analysis components --runs outputs/sweeps/2026-01-01
    python -m analysis detector --runs outputs/ --where backbone=vit_b16
    python -m analysis sweep --param mitigator.top_k --runs outputs/ --format csv
    python -m analysis main --wandb my-team/sfp --group sweep-7f3a      # pulled once, then read from the cache
    python -m analysis plots --runs outputs/ --out-dir figures --param mitigator.top_k
    python -m analysis components --runs outputs/experiments/ablation_components --ci   # Δ [lo, hi] per row
    python -m analysis compare outputs/runs/A outputs/runs/B --json                     # paired bootstrap, B - A
    python -m analysis images --runs outputs/runs/A outputs/runs/B --k 4 --out gallery  # biggest gains, losses
    python -m analysis diff outputs/runs/A outputs/runs/B                               # what differs, protocol
    python -m analysis dashboard my-team/sfp --experiment ablation_components --dry-run dash.json
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

from sfp.errors import SFPError

from .dashboard import add_dashboard_parser, run_dashboard
from .gallery import add_images_parser, run_images
from .intervals import DEFAULT_LEVEL, DEFAULT_RESAMPLES, DEFAULT_SEED, BootstrapSettings, compare_runs
from .protocol_diff import add_diff_parser, run_diff
from .published import load_published
from .render import FORMATS, render
from .runs import filter_runs, load_records, load_runs, parse_where
from .tables import components_table, detector_table, main_table, sweep_table

TABLE_COMMANDS = ("main", "components", "detector", "sweep")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    commands = parser.add_subparsers(dest="command", required=True,
                                     metavar="{main,components,detector,sweep,compare,images,diff,plots,pull,"
                                             "dashboard}")

    source = argparse.ArgumentParser(add_help=False)
    where = source.add_argument_group("runs")
    where.add_argument("--runs", nargs="+", type=Path, metavar="DIR", help="folders searched for results.json")
    where.add_argument("--wandb", metavar="ENTITY/PROJECT", help="runs of a W&B project (pulled once, then cached)")
    where.add_argument("--group", help="only this W&B group (with --wandb)")
    where.add_argument("--refresh", action="store_true", help="pull from W&B again even when a cache exists")
    where.add_argument("--cache-dir", type=Path, help="W&B cache folder (default $SFP_CACHE_DIR/wandb_runs "
                                                      "or .cache/sfp/wandb_runs)")
    where.add_argument("--wandb-cache", type=Path, metavar="FILE", help="read this W&B cache file (offline)")
    where.add_argument("--where", action="append", default=[], metavar="KEY=VALUE",
                       help="keep runs whose field equals VALUE (backbone=vit_b16, mitigator.top_k=10); repeatable")
    where.add_argument("--datasets", help="comma-separated dataset columns, or 'all' for the eight benchmarks "
                                          "(default: the datasets the runs evaluated)")

    output = argparse.ArgumentParser(add_help=False)
    out = output.add_argument_group("output")
    out.add_argument("--format", choices=FORMATS, help="md (default; or from --out's suffix), tex or csv")
    out.add_argument("--out", type=Path, metavar="FILE", help="write here instead of printing")
    out.add_argument("--decimals", type=int, default=2, help="decimals shown in md and tex (default 2)")

    bootstrap = argparse.ArgumentParser(add_help=False)
    _bootstrap_options(bootstrap.add_argument_group("confidence intervals"))
    output = argparse.ArgumentParser(add_help=False, parents=[output, bootstrap])

    main = commands.add_parser("main", parents=[source, output], help="methods x datasets with published figures")
    main.add_argument("--published", type=Path, metavar="CSV", help="published figures (default: the project's)")
    main.add_argument("--no-published", action="store_true", help="reproduced rows only")
    main.add_argument("--published-rows", choices=("all", "matched"), default="all",
                      help="all published methods of each backbone (default) or only those with runs")
    main.add_argument("--backbone-label", action="append", default=[], metavar="CHOICE=NAME",
                      help="compare a backbone with a published one, e.g. custom=ViT-B/16; repeatable")
    main.add_argument("--reference", metavar="PRESET", help="also a Δ row per reproduced row against this "
                                                            "preset's row (e.g. sfp); with --ci, its interval")
    for name, text in (("components", "one row per on/off combination of the SFP components"),
                       ("detector", "one row per outlier detector")):
        command = commands.add_parser(name, parents=[source, output], help=text)
        command.add_argument("--preset", default="sfp", help="method preset whose runs are compared (default sfp)")
    sweep = commands.add_parser("sweep", parents=[source, output], help="one row per value of a config field")
    sweep.add_argument("--param", required=True, help="config field, e.g. mitigator.top_k or aggregation.beta")

    compare = commands.add_parser("compare", help="paired bootstrap interval of B - A per dataset",
                                  description="mIoU of two runs evaluated on the same images and the paired "
                                              "bootstrap interval of their difference (B - A), per dataset.")
    compare.add_argument("run_a", type=Path, metavar="RUN_A", help="a run folder (or its results.json)")
    compare.add_argument("run_b", type=Path, metavar="RUN_B")
    compare.add_argument("--dataset", action="append", default=[], help="only this dataset; repeatable")
    _bootstrap_options(compare, switch=False)
    compare.add_argument("--json", action="store_true", help="one JSON object per dataset (for scripts)")

    add_images_parser(commands)
    add_diff_parser(commands)
    add_dashboard_parser(commands)

    plots = commands.add_parser("plots", parents=[source], help="figures as PNG and PDF")
    plots.add_argument("--out-dir", type=Path, required=True, help="folder for the figures")
    plots.add_argument("--param", action="append", default=[], help="also plot mIoU against this swept field")
    plots.add_argument("--dataset", action="append", default=[], help="datasets for the per-layer figures "
                                                                       "(default: every dataset with statistics)")

    pull = commands.add_parser("pull", help="pull W&B runs into the cache and print its path")
    pull.add_argument("--wandb", required=True, metavar="ENTITY/PROJECT")
    pull.add_argument("--group")
    pull.add_argument("--cache-dir", type=Path)
    return parser


def _bootstrap_options(group, switch: bool = True) -> None:
    if switch:
        group.add_argument("--ci", action="store_true", help="Δ rows with paired bootstrap intervals (needs the "
                                                             "runs' per-image records)")
    group.add_argument("--level", type=float, default=DEFAULT_LEVEL, help=f"interval level (default {DEFAULT_LEVEL})")
    group.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES,
                       help=f"bootstrap resamples (default {DEFAULT_RESAMPLES})")
    group.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"resampling seed (default {DEFAULT_SEED})")


def _settings(args: argparse.Namespace) -> BootstrapSettings:
    return BootstrapSettings(resamples=args.resamples, level=args.level, seed=args.seed)


def _compare(args: argparse.Namespace) -> str:
    results = compare_runs(args.run_a, args.run_b, args.dataset or None, _settings(args))
    if args.json:
        return "".join(json.dumps(r.as_json()) + "\n" for r in results)
    level = f"{results[0].settings.level:.0%}"
    lines = [f"A: {args.run_a}", f"B: {args.run_b}", "",
             f"| dataset | images | mIoU A [{level}] | mIoU B [{level}] | Δ B - A [{level}] |", "|:--|--:|--:|--:|--:|"]
    for r in results:
        lines.append(f"| {r.dataset} | {r.n_images} | {r.miou_a:.2f} [{r.miou_a_lo:.2f}, {r.miou_a_hi:.2f}] | "
                     f"{r.miou_b:.2f} [{r.miou_b_lo:.2f}, {r.miou_b_hi:.2f}] | {r.delta:+.2f} [{r.lo:+.2f}, "
                     f"{r.hi:+.2f}]{'*' if r.significant else ''} |")
    lines += ["", f"Paired bootstrap over images ({results[0].settings.resamples} resamples, seed "
                  f"{results[0].settings.seed}); * the interval excludes zero."]
    return "\n".join(lines) + "\n"


def _records(args: argparse.Namespace):
    """The run records of the chosen source (W&B caches hold records of the same shape)."""
    from .wandb_pull import cache_path, pull_runs, read_cache

    if args.runs:
        return load_records(args.runs)
    if args.wandb_cache:
        return read_cache(args.wandb_cache)
    target = cache_path(args.wandb, args.group, args.cache_dir)
    if args.refresh or not target.is_file():
        pull_runs(args.wandb, args.group, cache_file=target)
        print(f"pulled W&B runs into {target}", file=sys.stderr)
    return read_cache(target)


def _runs(args: argparse.Namespace, records=None):
    """The runs table of the chosen source, filtered by --where (from `records` when already loaded)."""
    if records is None and args.runs:
        runs = load_runs(args.runs)
    else:
        records = _records(args) if records is None else records
        if not records:
            raise SFPError("no runs found" + (" in the W&B project (or group)" if not args.runs else ""))
        runs = load_runs(records=records)
    runs = filter_runs(runs, parse_where(args.where))
    if runs.empty:
        raise SFPError(f"no runs left after --where {' '.join(args.where)}")
    return runs


def _table(args: argparse.Namespace):
    runs = _runs(args)
    intervals = _settings(args) if args.ci else None
    if args.command == "main":
        published = False if args.no_published else (None if args.published is None else
                                                      load_published(args.published))
        return main_table(runs, published=published, datasets=args.datasets, published_rows=args.published_rows,
                          backbone_labels=parse_where(args.backbone_label), reference=args.reference,
                          intervals=intervals)
    if args.command == "components":
        return components_table(runs, preset=args.preset, datasets=args.datasets, intervals=intervals)
    if args.command == "detector":
        return detector_table(runs, preset=args.preset, datasets=args.datasets, intervals=intervals)
    return sweep_table(runs, args.param, datasets=args.datasets, intervals=intervals)


def _plots(args: argparse.Namespace) -> List[Path]:
    from .plots import heatmap_plot, layer_stats_plot, save_figure, sweep_plot

    written: List[Path] = []
    records = _records(args)
    runs = _runs(args, records)
    kept = set(runs["run_dir"])  # --where applies to the per-layer figures too
    records = [r for r in records if r["run_dir"] in kept]
    for param in args.param:
        table = sweep_table(runs, param, datasets=args.datasets)
        written += save_figure(sweep_plot(table), args.out_dir / f"sweep-{param}")
    datasets = args.dataset or sorted({d for r in records for d in (r.get("outlier_stats") or {})})
    for dataset in datasets:
        try:
            written += save_figure(layer_stats_plot(records, dataset), args.out_dir / f"layer-stats-{dataset}")
        except ValueError as e:
            print(f"skipped: {e}", file=sys.stderr)
        try:
            written += save_figure(heatmap_plot(records, dataset), args.out_dir / f"outlier-heatmap-{dataset}")
        except ValueError as e:
            print(f"skipped: {e}", file=sys.stderr)
    return written


def main(argv: Optional[List[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "images":
        return run_images(args)
    if args.command == "diff":
        return run_diff(args)
    if args.command == "dashboard":
        return run_dashboard(args)
    if args.command not in ("pull", "compare") and sum(map(bool, (args.runs, args.wandb, args.wandb_cache))) != 1:
        parser.error("give exactly one of --runs DIR, --wandb ENTITY/PROJECT or --wandb-cache FILE")
    try:
        if args.command == "pull":
            from .wandb_pull import pull_runs

            print(pull_runs(args.wandb, args.group, cache_dir=args.cache_dir))
            return 0
        if args.command == "compare":
            sys.stdout.write(_compare(args))
            return 0
        if args.command == "plots":
            for path in _plots(args):
                print(path)
            return 0
        fmt = args.format or (args.out.suffix.lstrip(".") if args.out and args.out.suffix.lstrip(".") in FORMATS
                              else "md")
        text = render(_table(args), fmt, decimals=args.decimals)
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            args.out.write_text(text, encoding="utf-8")
        else:
            sys.stdout.write(text)
        return 0
    except (SFPError, ValueError, KeyError, FileNotFoundError) as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {message}", file=sys.stderr)
        return 2
