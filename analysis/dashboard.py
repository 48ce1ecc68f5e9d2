"""W&B dashboards as code: a saved workspace view and a report for the runs of one study, built with
`wandb-workspaces` (W&B's own library for workspaces and reports).

    python -m analysis dashboard my-team/sfp --experiment ablation_components --dry-run dashboard.json
    python -m analysis dashboard my-team/sfp --group sweep-7f3a --datasets voc21,ade20k

The panels follow from what the study varies: a group choice (`mitigator=on,off`) gets a bar chart of mIoU
grouped by its `<group>_choice` column and, with the other choices, a parallel-coordinates panel; a config
field (`mitigator.top_k=1,3,...`) gets mIoU against its value (a scatter plot, or a bar chart for values that
are not numbers); a study of methods and backbones (the main table) groups the runs table by backbone and
method with one mIoU column per dataset. Every study gets, per dataset, the per-layer statistics as lines
against their `layer` axis, the outlier heat map and the prediction overlays as media, and the per-class IoU
table. All panels are filtered to the study's W&B group. Every key comes from `sfp.tracking.logged_keys`, the
registry the tracker logs through.

The panels are first described as plain data (`Dashboard`: sections of `PanelSpec`), which says which keys
each panel reads (`Dashboard.keys()`), then turned into the library's models (`to_workspace`, `to_report`).
`--dry-run PATH` writes both models' serialised form and prints a summary; nothing is sent. Without it, the
workspace and report are saved with the configured API key and their URLs printed; with no key the command
stops with an error (it never prompts).
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from sfp.errors import SFPError
from sfp.tracking import logged_keys as keys

KINDS = ("bar", "parallel", "scatter", "line", "media", "table")
AXIS_CHOICE, AXIS_FIELD = "choice", "field"


@dataclass(frozen=True)
class PanelSpec:
    """One panel: what it shows (`kind`), the logged keys it reads (`metrics`: summary or history keys), the
    config keys it reads (`config`: `<group>_choice` columns or dotted config fields), its x axis and grouping."""

    kind: str
    title: str
    description: str
    metrics: Tuple[str, ...] = ()
    config: Tuple[str, ...] = ()
    x: Optional[str] = None  # a config key (scatter) or a history key (line)
    groupby: Optional[str] = None  # a config key

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"panel kind must be one of {', '.join(KINDS)}, got {self.kind!r}")


@dataclass
class Section:
    name: str
    panels: List[PanelSpec] = field(default_factory=list)


@dataclass(frozen=True)
class Axis:
    """What a study varies: a config group's choice (`mitigator`) or a config field (`mitigator.top_k`)."""

    name: str
    kind: str
    values: Tuple[str, ...]

    @property
    def column(self) -> str:
        """The W&B config key that holds it."""
        return keys.CHOICE.key(group=self.name.replace("/", "_")) if self.kind == AXIS_CHOICE else self.name

    @property
    def numeric(self) -> bool:
        try:
            [float(v) for v in self.values]
        except ValueError:
            return False
        return self.kind == AXIS_FIELD


@dataclass
class Study:
    """What a dashboard is for: a W&B group, its datasets, what its runs vary, and what they log."""

    name: str
    group: str
    datasets: List[str]
    axes: List[Axis] = field(default_factory=list)
    stats: bool = True  # per-layer statistics are logged
    overlays: bool = True  # prediction overlays are logged
    heatmap: bool = True  # some job detects outliers, so an outlier heat map is logged


@dataclass
class Dashboard:
    entity: str
    project: str
    study: Study
    sections: List[Section]
    runs_table_groupby: Tuple[str, ...] = ()  # config keys the runs table is grouped by
    runs_table_columns: Tuple[str, ...] = ()  # summary keys pinned in the runs table

    def panels(self) -> List[PanelSpec]:
        return [panel for section in self.sections for panel in section.panels]

    def keys(self) -> Dict[str, List[str]]:
        """Every key the dashboard reads, by where W&B keeps it: logged keys and config keys."""
        logged = {k for p in self.panels() for k in p.metrics} | set(self.runs_table_columns)
        logged |= {p.x for p in self.panels() if p.kind == "line" and p.x}
        config = {k for p in self.panels() for k in p.config} | set(self.runs_table_groupby)
        config |= {p.groupby for p in self.panels() if p.groupby}
        config |= {p.x for p in self.panels() if p.kind == "scatter" and p.x}
        return {"logged": sorted(logged), "config": sorted(config)}


# --------------------------------------------------------------------------- studies


def group_names() -> Tuple[str, ...]:
    """The config groups (the folders of conf/): a sweep over one of them varies a choice."""
    from sfp.config.locations import conf_dir

    return tuple(sorted(p.name for p in conf_dir().iterdir() if p.is_dir()))


def study_from_experiment(name: str, overrides: Sequence[str] = ()) -> Study:
    """The study a named experiment runs (with `overrides` applied as on the command line): its W&B group,
    datasets, and the axes its jobs vary, read from the jobs Hydra would launch."""
    import sfp
    from sfp.assembly import sweep_jobs

    try:
        jobs = sweep_jobs([f"+experiment={name}", *overrides]) or [[f"+experiment={name}", *overrides]]
        # one run per distinct method setting (the first is the grid's first job): what the study logs
        runs = [sfp.compose(job) for job in _by_method(jobs)]
    except SFPError as exc:
        raise SFPError(f"experiment {name!r}: {exc}") from None
    varied: Dict[str, List[str]] = {}
    for job in jobs:
        for override in job:
            key, _, value = override.partition("=")
            varied.setdefault(key.lstrip("+"), [])
            if value not in varied[key.lstrip("+")]:
                varied[key.lstrip("+")].append(value)
    groups = group_names()
    axes = [Axis(key, AXIS_CHOICE if key in groups else AXIS_FIELD, tuple(values))
            for key, values in varied.items() if len(values) > 1]
    cfg = runs[0]
    return Study(name, cfg.tracker.group or name, list(cfg.datasets), axes, bool(cfg.stats.enabled),
                 cfg.tracker.num_overlays > 0, any(detects_outliers(run) for run in runs))


def _by_method(jobs: Sequence[Sequence[str]]) -> List[Sequence[str]]:
    """One job per distinct method and mitigator setting (what decides whether outliers are detected)."""
    seen: Dict[Tuple[str, ...], Sequence[str]] = {}
    for job in jobs:
        seen.setdefault(tuple(o for o in job if o.startswith(("method=", "mitigator=", "mitigator.enabled="))), job)
    return list(seen.values())


def detects_outliers(run) -> bool:
    """Whether a run's method detects outlier tokens (and so logs the outlier heat map with its statistics)."""
    from sfp.methods import METHODS

    return run.stats.enabled and "mitigator" in METHODS.get(run.method.name).components and run.mitigator.enabled


def study_from_group(group: str, datasets: Sequence[str], axes: Sequence[str] = ()) -> Study:
    """A study known only by its W&B group: the datasets and axes are given (`axes`: group names or config
    fields; none gives the panels every study has)."""
    groups = group_names()
    return Study(group, group, list(datasets), [Axis(a, AXIS_CHOICE if a in groups else AXIS_FIELD, ())
                                                 for a in axes])


# --------------------------------------------------------------------------- panels


def _miou_keys(study: Study) -> Tuple[str, ...]:
    return (keys.MIOU_MEAN.key(), *(keys.MIOU.key(dataset=d) for d in study.datasets))


def build_dashboard(entity: str, project: str, study: Study) -> Dashboard:
    """The sections and panels for `study` (see the module docstring)."""
    miou = _miou_keys(study)
    results = Section("mIoU")
    choices = [a for a in study.axes if a.kind == AXIS_CHOICE]
    fields = [a for a in study.axes if a.kind == AXIS_FIELD]
    for axis in choices:
        results.panels.append(PanelSpec(
            "bar", f"mIoU by {axis.name}", f"mIoU (mean and per dataset) of the runs grouped by their {axis.name} "
            f"choice ({axis.column}), averaged within a group", metrics=miou, groupby=axis.column))
    for axis in fields:
        if axis.numeric or not axis.values:
            for metric in miou:
                results.panels.append(PanelSpec(
                    "scatter", f"{metric} against {axis.name}", f"{metric} of each run against its {axis.name}",
                    metrics=(metric,), x=axis.column))
        else:
            results.panels.append(PanelSpec(
                "bar", f"mIoU by {axis.name}", f"mIoU of the runs grouped by {axis.name}", metrics=miou,
                groupby=axis.column))
    if study.axes:
        results.panels.append(PanelSpec(
            "parallel", "what the study varies, against mIoU", "one line per run through the varied settings "
            "and its mean mIoU", metrics=(keys.MIOU_MEAN.key(),), config=tuple(a.column for a in study.axes)))
    if not study.axes:  # a group of unknown design: mIoU per method
        results.panels.append(PanelSpec(
            "bar", "mIoU by method", "mIoU of the runs grouped by method preset", metrics=miou,
            groupby=keys.CHOICE.key(group="method")))
    sections = [results]
    for dataset in study.datasets:
        section = Section(f"{dataset}: per-layer statistics and media")
        if study.stats:
            layer = keys.LAYER.key(dataset=dataset)
            for statistic in keys.statistics():
                section.panels.append(PanelSpec(
                    "line", f"{dataset}: {statistic} per layer", f"per-layer {statistic} on {dataset}, one line "
                    "per run (or group)", metrics=(keys.LAYER_STAT.key(dataset=dataset, statistic=statistic),),
                    x=layer))
        if study.stats and study.heatmap:
            section.panels.append(PanelSpec(
                "media", f"{dataset}: outlier heat map", keys.HEATMAP.description,
                metrics=(keys.HEATMAP.key(dataset=dataset),)))
        if study.overlays:
            section.panels.append(PanelSpec(
                "media", f"{dataset}: predictions", keys.OVERLAYS.description,
                metrics=(keys.OVERLAYS.key(dataset=dataset),)))
        section.panels.append(PanelSpec(
            "table", f"{dataset}: per-class IoU", keys.PER_CLASS_IOU.description,
            metrics=(keys.PER_CLASS_IOU.key(dataset=dataset),)))
        sections.append(section)
    groupby = tuple(a.column for a in choices)
    return Dashboard(entity, project, study, sections, runs_table_groupby=groupby, runs_table_columns=miou)


# --------------------------------------------------------------------------- wandb-workspaces models


def _panel(spec: PanelSpec):
    import wandb_workspaces.reports.v2 as wr

    if spec.kind == "bar":
        return wr.BarPlot(title=spec.title, metrics=list(spec.metrics), groupby=wr.Config(spec.groupby),
                          groupby_aggfunc="mean")
    if spec.kind == "scatter":
        return wr.ScatterPlot(title=spec.title, x=wr.Config(spec.x), y=wr.SummaryMetric(spec.metrics[0]))
    if spec.kind == "parallel":
        columns = [wr.ParallelCoordinatesPlotColumn(metric=wr.Config(c)) for c in spec.config]
        columns += [wr.ParallelCoordinatesPlotColumn(metric=wr.SummaryMetric(m)) for m in spec.metrics]
        return wr.ParallelCoordinatesPlot(title=spec.title, columns=columns)
    if spec.kind == "line":
        return wr.LinePlot(title=spec.title, x=spec.x, y=list(spec.metrics))
    if spec.kind == "media":
        return wr.MediaBrowser(title=spec.title, media_keys=list(spec.metrics))
    return wr.WeavePanelSummaryTable(table_name=spec.metrics[0])


def _group_filter(group: str):
    from wandb_workspaces import expr

    return [expr.Metric("Group") == group]


def to_workspace(dashboard: Dashboard):
    """The saved workspace view: one section per dashboard section, the runs filtered to the study's group
    and grouped by the choices it varies, its mIoU columns pinned."""
    import wandb_workspaces.workspaces as ws
    from wandb_workspaces import expr

    study = dashboard.study
    return ws.Workspace(
        entity=dashboard.entity, project=dashboard.project, name=f"sfp: {study.name}",
        sections=[ws.Section(name=s.name, panels=[_panel(p) for p in s.panels], is_open=i == 0)
                  for i, s in enumerate(dashboard.sections)],
        runset_settings=ws.RunsetSettings(
            filters=_group_filter(study.group), groupby=[expr.Config(c) for c in dashboard.runs_table_groupby],
            pinned_columns=[f"summary:{k}" for k in dashboard.runs_table_columns]))


def to_report(dashboard: Dashboard, resolve_project: bool = True):
    """The report: a title, what the study varies, then per section a short description of each panel and
    a panel grid over the study's runs. The library looks up the project's internal id for each run set when
    the report is turned into its model (a network call): `resolve_project=False` leaves the run sets'
    project out (the dry run, which W&B would read as the report's own project)."""
    import wandb_workspaces.reports.v2 as wr

    where = {"entity": dashboard.entity, "project": dashboard.project} if resolve_project else {}

    study = dashboard.study
    varied = ", ".join(f"{a.name} ({', '.join(a.values)})" if a.values else a.name for a in study.axes) or "—"
    blocks: List[Any] = [
        wr.P(f"Runs of the W&B group {study.group!r} on {', '.join(study.datasets)}; varied: {varied}."),
    ]
    for section in dashboard.sections:
        blocks.append(wr.H2(section.name))
        blocks.append(wr.UnorderedList(items=[f"{p.title}: {p.description}" for p in section.panels]))
        blocks.append(wr.PanelGrid(
            runsets=[wr.Runset(name=study.group, filters=_group_filter(study.group), **where)],
            panels=[_panel(p) for p in section.panels]))
    return wr.Report(entity=dashboard.entity, project=dashboard.project, title=f"sfp: {study.name}",
                     description=f"Dashboard of the study {study.name!r}, built by `python -m analysis dashboard`.",
                     blocks=blocks)


def specification(dashboard: Dashboard) -> Dict[str, Any]:
    """The serialised workspace and report (the library's models, as they would be sent), with the keys read."""
    workspace, report = to_workspace(dashboard), to_report(dashboard, resolve_project=False)
    return {
        "study": {"name": dashboard.study.name, "group": dashboard.study.group, "datasets": dashboard.study.datasets,
                  "axes": [{"name": a.name, "kind": a.kind, "values": list(a.values), "column": a.column}
                           for a in dashboard.study.axes]},
        "keys": dashboard.keys(),
        "workspace": workspace._to_model().model_dump(mode="json", by_alias=True, exclude_none=True),
        "report": report._to_model().model_dump(mode="json", by_alias=True, exclude_none=True),
    }


def summary(dashboard: Dashboard) -> str:
    lines = [f"{dashboard.entity}/{dashboard.project}, group {dashboard.study.group!r}: "
             f"{len(dashboard.panels())} panels in {len(dashboard.sections)} sections"]
    for section in dashboard.sections:
        lines.append(f"  {section.name}")
        lines += [f"    [{p.kind}] {p.title}" for p in section.panels]
    if dashboard.runs_table_groupby:
        lines.append(f"  runs table grouped by {', '.join(dashboard.runs_table_groupby)}")
    return "\n".join(lines)


# --------------------------------------------------------------------------- command line


def add_dashboard_parser(commands) -> argparse.ArgumentParser:
    parser = commands.add_parser("dashboard", help="W&B workspace and report for a study (wandb-workspaces)",
                                 description="Build a saved W&B workspace view and a report for the runs of a "
                                             "study; --dry-run writes them to a file instead of saving.")
    parser.add_argument("path", metavar="ENTITY/PROJECT")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--experiment", metavar="NAME", help="a named experiment (experiments/experiment/NAME.yaml)")
    which.add_argument("--group", metavar="G", help="a W&B group (a sweep directory's name or tracker.group)")
    parser.add_argument("--datasets", help="with --group: comma-separated dataset keys (default: the benchmarks)")
    parser.add_argument("--varies", action="append", default=[], metavar="KEY",
                        help="with --group: a group or config field the runs vary (repeatable)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="with --experiment: a config override the sweep was run with (repeatable)")
    parser.add_argument("--dry-run", type=Path, metavar="PATH", help="write the specifications here; send nothing")
    return parser


def run_dashboard(args: argparse.Namespace) -> int:
    from .names import BENCHMARKS

    try:
        entity, sep, project = args.path.partition("/")
        if not sep or not entity or not project or "/" in project:
            raise ValueError(f"a W&B project is given as ENTITY/PROJECT, got {args.path!r}")
        if args.experiment:
            study = study_from_experiment(args.experiment, args.override)
        else:
            datasets = [d.strip() for d in args.datasets.split(",") if d.strip()] if args.datasets else BENCHMARKS
            study = study_from_group(args.group, datasets, args.varies)
        dashboard = build_dashboard(entity, project, study)
        if args.dry_run is not None:
            args.dry_run.parent.mkdir(parents=True, exist_ok=True)
            args.dry_run.write_text(json.dumps(specification(dashboard), indent=1) + "\n", encoding="utf-8")
            print(summary(dashboard))
            print(f"specifications written to {args.dry_run}; nothing was sent")
            return 0
        from sfp.tracking import has_wandb_credentials

        if not has_wandb_credentials():
            raise SFPError("no W&B API key is configured (WANDB_API_KEY or `wandb login`): nothing was saved; "
                           "use --dry-run PATH to write the specifications instead")
        print(summary(dashboard))
        workspace = to_workspace(dashboard).save()
        report = to_report(dashboard).save()
        print(f"workspace: {workspace.url}\nreport: {report.url}")
        return 0
    except (SFPError, ValueError, KeyError, OSError) as exc:
        message = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"error: {message}", file=sys.stderr)
        return 2


__all__ = ["PanelSpec", "Section", "Axis", "Study", "Dashboard", "study_from_experiment", "study_from_group",
           "build_dashboard", "to_workspace", "to_report", "specification", "summary", "add_dashboard_parser",
           "run_dashboard"]
