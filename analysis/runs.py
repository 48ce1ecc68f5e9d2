"""Runs as tables: a folder of `results.json` files or a cache of pulled W&B runs -> one row per (run, dataset).

The rows are `sfp.collect_results`'s (run_dir, dataset, miou, ..., `choice.<group>`, `cfg.<dotted.key>`), plus
the axes every table uses: `backbone` (the backbone choice), `preset` (the method preset) and one on/off
column per SFP component.
"""
from __future__ import annotations

import math
import warnings
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import pandas as pd

from sfp.tracking.results_store import (
    RESULTS_FILENAME, ResultsError, collect_results, read_results, records_to_frame,
)

COMPONENTS = ("mitigator", "enhancer", "integrator", "aggregation", "registers")  # on/off columns
PathLike = Union[str, Path]


def load_runs(folders: Union[PathLike, Sequence[PathLike]] = (),
              records: Iterable[Dict[str, Any]] = ()) -> pd.DataFrame:
    """Rows of every results.json under `folders` and of in-memory `records` (e.g. a W&B cache), with axes."""
    if isinstance(folders, (str, Path)):
        folders = [folders]
    frames = [collect_results(folder) for folder in folders]
    records = list(records)
    if records:
        frames.append(records_frame(records))
    frames = [f for f in frames if len(f)]
    if not frames:
        sources = ", ".join(str(f) for f in folders) or "the given records"
        raise FileNotFoundError(f"no {RESULTS_FILENAME} records found in {sources}")
    runs = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    return add_axes(runs)


def records_frame(records: Iterable[Dict[str, Any]]) -> pd.DataFrame:
    """`collect_results`'s rows for records already in memory; each record's `run_dir` key names it."""
    frame = records_to_frame((str(record.get("run_dir", f"record-{i}")), record) for i, record in enumerate(records))
    for column in ("miou", "aacc", "macc", "n_images"):
        frame[column] = frame[column].astype("float64")
    return frame


def load_records(folders: Union[PathLike, Sequence[PathLike]]) -> List[Dict[str, Any]]:
    """Every readable results record under `folders` (sorted by path), each with its `run_dir`; for the
    per-layer statistics and heat maps, which the row table does not hold."""
    if isinstance(folders, (str, Path)):
        folders = [folders]
    records = []
    for folder in folders:
        for path in sorted(Path(folder).rglob(RESULTS_FILENAME)):
            try:
                record = read_results(path)
            except ResultsError as e:
                warnings.warn(f"skipping {path}: {e}", stacklevel=2)
                continue
            records.append({**record, "run_dir": str(path.parent)})
    return records


def add_axes(runs: pd.DataFrame) -> pd.DataFrame:
    """Adds `backbone` and `preset` (the Hydra choices; the config's names where a record has no choices) and
    one on/off column per SFP component (from the config's `enabled`, which is what ran; the choice where
    the config lacks it)."""
    runs = runs.copy()
    runs["backbone"] = _coalesce(runs.index, runs.get("choice.backbone"), runs.get("cfg.backbone.name"))
    runs["preset"] = _coalesce(runs.index, runs.get("choice.method"), runs.get("cfg.method.name"))
    for name in COMPONENTS:
        enabled = runs.get(f"cfg.{name}.enabled")
        switch = enabled.map(_on_off) if enabled is not None else None
        # records from before test-time registers existed ran without them
        default = pd.Series(["off"] * len(runs), index=runs.index, dtype=object) if name == "registers" else None
        runs[name] = _coalesce(runs.index, switch, runs.get(f"choice.{name}"), default)
    return runs


def _coalesce(index: pd.Index, *candidates: Optional[pd.Series]) -> pd.Series:
    """Per row, the first value that is present among the candidate columns (absent columns are None)."""
    result = pd.Series([None] * len(index), index=index, dtype=object)
    for values in reversed([c for c in candidates if c is not None]):
        result = values.astype(object).where(values.notna(), result)
    return result


def _on_off(value: Any) -> Optional[str]:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return "on" if bool(value) else "off"


def resolve_column(runs: pd.DataFrame, name: str) -> str:
    """A column of `runs` from what a user types: a column name as is, `cfg.<name>` (a config field such as
    mitigator.top_k), or `choice.<name>` (a Hydra group such as enhancer)."""
    for candidate in (name, f"cfg.{name}", f"choice.{name}"):
        if candidate in runs.columns:
            return candidate
    import difflib

    known = [c[4:] if c.startswith("cfg.") else c for c in runs.columns]
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    raise KeyError(f"no run has the field {name!r}{hint}")


def parse_where(conditions: Iterable[str]) -> Dict[str, str]:
    """["backbone=vit_b16", "mitigator.top_k=10"] -> {"backbone": "vit_b16", "mitigator.top_k": "10"}."""
    parsed: Dict[str, str] = {}
    for condition in conditions:
        key, sep, value = condition.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"a filter must look like KEY=VALUE, got {condition!r}")
        parsed[key.strip()] = value.strip()
    return parsed


def filter_runs(runs: pd.DataFrame, where: Mapping[str, str]) -> pd.DataFrame:
    """Rows whose fields equal the given values; values are compared as they print (10 == "10",
    True == "true"), so command-line strings work."""
    keep = pd.Series(True, index=runs.index)
    for name, wanted in where.items():
        column = resolve_column(runs, name)
        keep &= runs[column].map(lambda value: matches(value, wanted))
    return runs[keep]


def matches(value: Any, wanted: str) -> bool:
    if isinstance(value, bool) or wanted.lower() in ("true", "false"):
        return str(value).lower() == wanted.lower()
    try:
        return float(value) == float(wanted)
    except (TypeError, ValueError):
        return str(value) == wanted


def numeric(value: Any) -> Tuple[int, Any]:
    """Sort key that puts numbers in numeric order before other values in text order."""
    try:
        return (0, float(value))
    except (TypeError, ValueError):
        return (1, str(value))
