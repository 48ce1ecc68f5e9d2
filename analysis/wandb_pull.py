"""Runs from a W&B project, pulled once with the public API and cached to a local JSON file, so that tables
and plots run offline afterwards.

Each W&B run of this framework carries the resolved config plus one `<group>_choice` column per Hydra group
(run.config) and `miou/<dataset>`, `aacc/<dataset>`, `macc/<dataset>`, `n_images/<dataset>` and `miou/mean`
(run.summary). A pulled run becomes a record shaped like results.json (config, choices, metrics, status) plus
a `wandb` entry (id, name, group, state, path); `status` is "complete" for a finished run and "partial"
otherwise (its datasets that were logged are kept).

Cache file (JSON, written atomically), one per project and group:
    {"format": "sfp-wandb-runs", "version": 1, "path": "entity/project", "group": "G" | null,
     "filters": {...}, "pulled_at": "<UTC ISO time>", "runs": [<record>, ...]}
"""
from __future__ import annotations

import datetime as _dt
import inspect
import json
import math
import os
import re
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Union

import pandas as pd

from sfp.tracking import logged_keys
from sfp.tracking.results_store import write_json_atomic

from .runs import load_runs

CACHE_FORMAT = "sfp-wandb-runs"
CACHE_VERSION = 1
FINISHED = "finished"


def default_cache_dir() -> Path:
    """$SFP_CACHE_DIR/wandb_runs, else .cache/sfp/wandb_runs (the framework's cache folder)."""
    return Path(os.environ.get("SFP_CACHE_DIR", ".cache/sfp")) / "wandb_runs"


def cache_path(path: str, group: Optional[str] = None, cache_dir: Optional[Union[str, Path]] = None) -> Path:
    """The cache file of a project (and group): <cache_dir>/<entity>__<project>[__<group>].json."""
    _check_path(path)
    name = "__".join(_safe(part) for part in [*path.split("/"), *([group] if group else [])])
    return Path(cache_dir if cache_dir is not None else default_cache_dir()) / f"{name}.json"


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text)


def _check_path(path: str) -> None:
    if not re.fullmatch(r"[^/\s]+/[^/\s]+", path or ""):
        raise ValueError(f"a W&B project is given as ENTITY/PROJECT, got {path!r}")


# --------------------------------------------------------------------------- runs -> records


def _number(value: Any) -> Optional[float]:
    """A summary value as a finite float, else None (W&B stores NaN as the string "NaN")."""
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _summary_dict(summary: Any) -> Dict[str, Any]:
    raw = getattr(summary, "_json_dict", None)
    if isinstance(raw, str):
        raw = json.loads(raw)
    return dict(raw if raw is not None else summary)


def run_to_record(run: Any, path: str) -> Dict[str, Any]:
    """One public-API run (id, name, group, state, config, summary) as a results record."""
    config: Dict[str, Any] = {}
    choices: Dict[str, str] = {}
    for key, value in dict(run.config).items():
        if key.startswith("_"):
            continue  # W&B's own entries
        choice = logged_keys.CHOICE.match(key)
        if choice:
            choices[choice["group"]] = value
        else:
            config[key] = value
    metrics: Dict[str, Dict[str, Any]] = {}
    for key, value in _summary_dict(run.summary).items():
        for metric, logged in logged_keys.DATASET_METRICS.items():
            fields = logged.match(key)
            if fields and key != logged_keys.MIOU_MEAN.key():
                number = _number(value)
                if metric == "n_images" and number is not None:
                    number = int(number)
                metrics.setdefault(fields["dataset"], {})[metric] = number
    state = str(getattr(run, "state", "") or "")
    run_id = str(run.id)
    return {
        "config": config,
        "choices": choices,
        "metrics": metrics,
        "status": "complete" if state == FINISHED else "partial",
        "run_dir": f"wandb:{path}/{run_id}",
        "wandb": {"id": run_id, "name": getattr(run, "name", None), "group": getattr(run, "group", None),
                  "state": state, "path": f"{path}/{run_id}"},
    }


# --------------------------------------------------------------------------- pull and cache


def pull_runs(path: str, group: Optional[str] = None, *, api: Any = None,
              cache_dir: Optional[Union[str, Path]] = None, filters: Optional[Mapping[str, Any]] = None,
              cache_file: Optional[Union[str, Path]] = None) -> Path:
    """Pull every run of `path` ("entity/project"), or of one group, and write the cache file; returns it.

    api: a `wandb.Api()` (made here when None; needs network and an API key). filters: extra W&B
    (MongoDB-style) run filters.
    """
    _check_path(path)
    if api is None:
        import wandb

        api = wandb.Api()
    query: Dict[str, Any] = dict(filters or {})
    if group:
        query["group"] = group
    options: Dict[str, Any] = {"filters": query or None}
    if "lazy" in inspect.signature(api.runs).parameters:
        options["lazy"] = False  # config and summary in the listing's pages, not one more query per run
    records = [run_to_record(run, path) for run in api.runs(path, **options)]
    target = Path(cache_file) if cache_file is not None else cache_path(path, group, cache_dir)
    write_json_atomic(target, {
        "format": CACHE_FORMAT, "version": CACHE_VERSION, "path": path, "group": group, "filters": query,
        "pulled_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "runs": records,
    })
    return target


def read_cache(cache_file: Union[str, Path]) -> List[Dict[str, Any]]:
    """The records of a cache file; raises ValueError naming the file when it is not one."""
    cache_file = Path(cache_file)
    try:
        data = json.loads(cache_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FileNotFoundError(f"W&B runs cache {cache_file} does not exist (pull it with --wandb)") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"W&B runs cache {cache_file} is not valid JSON: {e}") from None
    if not isinstance(data, dict) or data.get("format") != CACHE_FORMAT:
        raise ValueError(f"{cache_file} is not a W&B runs cache (format {CACHE_FORMAT!r})")
    if data.get("version") != CACHE_VERSION:
        raise ValueError(f"W&B runs cache {cache_file} has version {data.get('version')}; "
                         f"this code reads version {CACHE_VERSION}: pull again with --refresh")
    return list(data["runs"])


def load_wandb_runs(path: str, group: Optional[str] = None, *, refresh: bool = False, api: Any = None,
                    cache_dir: Optional[Union[str, Path]] = None) -> pd.DataFrame:
    """The runs table of a W&B project (or group): from the cache file when there is one (offline), pulled
    and cached first otherwise or with refresh=True."""
    target = cache_path(path, group, cache_dir)
    if refresh or not target.is_file():
        pull_runs(path, group, api=api, cache_file=target)
    records = read_cache(target)
    if not records:
        raise ValueError(f"no runs in W&B project {path}" + (f", group {group}" if group else "") +
                         f" (cache {target}; pull again with refresh=True / --refresh)")
    return load_runs(records=records)
