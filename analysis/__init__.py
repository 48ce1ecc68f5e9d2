"""analysis: the paper's tables and figures from a folder of runs (results.json files) or a W&B project.

    from analysis import load_runs, main_table, components_table, render
    runs = load_runs("outputs/")                       # one row per (run, dataset)
    print(render(main_table(runs), "md"))              # also "tex" (booktabs) and "csv"

Command line: `python -m analysis {main,components,detector,sweep,plots,pull} --runs DIR ...`, `python -m
analysis compare RUN_A RUN_B`, `images --runs A B`, `diff RUN_A RUN_B` (see cli.py).
Nothing here runs a model: the inputs are the records the runner wrote.
"""
from __future__ import annotations

from .gallery import gallery, gallery_figure, gallery_panels, image_differences, top_and_bottom
from .intervals import BootstrapSettings, compare_runs
from .published import PUBLISHED_CSV, load_published
from .render import render, to_csv, to_latex, to_markdown
from .runs import filter_runs, load_records, load_runs
from .tables import Table, components_table, detector_table, main_table, sweep_table
from .wandb_pull import cache_path, load_wandb_runs, pull_runs, read_cache, run_to_record

__all__ = [
    "load_runs", "load_records", "BootstrapSettings", "compare_runs", "gallery", "gallery_figure", "gallery_panels",
    "image_differences", "top_and_bottom", "filter_runs", "load_wandb_runs", "pull_runs", "read_cache", "cache_path",
    "run_to_record", "load_published", "PUBLISHED_CSV", "Table", "main_table", "components_table",
    "detector_table", "sweep_table", "render", "to_markdown", "to_latex", "to_csv",
    "sweep_plot", "layer_stats_plot", "heatmap_plot", "save_figure",
]


def __getattr__(name):
    # The figures need matplotlib, imported only when a figure is asked for.
    if name in ("sweep_plot", "layer_stats_plot", "heatmap_plot", "save_figure"):
        from . import plots

        return getattr(plots, name)
    raise AttributeError(f"module 'analysis' has no attribute {name!r}")
