"""Published figures of SFP and its peers: `analysis/data/published_results.csv`, one row per source.

Columns: method, backbone (ViT-B/16, ViT-L/14, ...), one mIoU column per benchmark key, source, note, and the
protocol facts the source states (empty: not stated): `short_side` (`dataset=value` entries separated by `;`,
`*` for every other dataset), `window` (`crop/stride` in pixels or `whole image`, in the same per-dataset form
when it varies), `postprocess` (`none`, `PAMR`, ...), `weights`, and `protocol_source` (where the facts were
read). Empty figure cells stay NaN; a method may have several rows (different sources or settings).
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Union

import pandas as pd

from .names import BENCHMARKS, PUBLISHED_CSV

REQUIRED_COLUMNS = ("method", "backbone", *BENCHMARKS, "source", "note")
PROTOCOL_COLUMNS = ("short_side", "window", "postprocess", "weights", "protocol_source")  # optional
PROTOCOL_LABELS = {"short_side": "short side", "window": "window", "postprocess": "post-processing",
                   "weights": "weights"}


def load_published(path: Optional[Union[str, Path]] = None) -> pd.DataFrame:
    """The published-results table (the project's copy unless `path` is given), checked for its columns."""
    path = Path(path) if path is not None else PUBLISHED_CSV
    table = pd.read_csv(path, dtype={name: str for name in ("method", "backbone", "source", "note",
                                                            *PROTOCOL_COLUMNS)},
                        keep_default_na=False, na_values={key: [""] for key in BENCHMARKS})
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"published results {path} lack the column(s) {', '.join(missing)}")
    for key in BENCHMARKS:
        table[key] = pd.to_numeric(table[key], errors="raise").astype("float64")
    for column in PROTOCOL_COLUMNS:  # files without protocol facts state none
        if column not in table.columns:
            table[column] = ""
    return table.reset_index(drop=True)


def parse_per_dataset(text: str) -> Dict[str, str]:
    """`*=336;cityscapes=560` -> {"*": "336", "cityscapes": "560"}; a value without `DATASET=` applies to every
    dataset (`224/112`, `whole image`). Raises ValueError on an entry without a value."""
    values: Dict[str, str] = {}
    for entry in filter(None, (part.strip() for part in (text or "").split(";"))):
        dataset, sep, value = entry.partition("=")
        dataset, value = (dataset.strip(), value.strip()) if sep else ("*", entry)
        if not dataset or not value:
            raise ValueError(f"{text!r}: {entry!r} is not DATASET=VALUE")
        values[dataset] = value
    return values


def protocol_text(row: pd.Series) -> str:
    """The protocol facts of a published row as a phrase, e.g. "short side 336 (cityscapes 560), window
    224/112, post-processing none"; "protocol not stated" when the source states none."""
    parts = []
    for column, label in PROTOCOL_LABELS.items():
        value = str(row.get(column, "") or "").strip()
        if not value:
            continue
        values = parse_per_dataset(value) if column in ("short_side", "window") else {"*": value}
        default = values.pop("*", None)
        others = ", ".join(f"{k} {v}" for k, v in values.items())
        text = (default or "") + (f" ({others})" if others and default else others)
        parts.append(f"{label} {text}")
    return ", ".join(parts) if parts else "protocol not stated"


def published_protocol_notes(rows: pd.DataFrame) -> List[str]:
    """One note per published source shown (its rows share what the source states), with where the facts
    were read."""
    notes: List[str] = []
    silent: List[str] = []
    for (source, facts, origin), group in rows.assign(
            _facts=rows.apply(protocol_text, axis=1),
            _origin=rows.get("protocol_source", pd.Series("", index=rows.index)).fillna("")) \
            .groupby(["source", "_facts", "_origin"], sort=False):
        methods = ", ".join(dict.fromkeys(f"{m} {b}" for m, b in zip(group["method"], group["backbone"])))
        if facts == "protocol not stated":
            silent.append(f"{source} ({methods})")
        else:
            notes.append(f"published protocol, {source} ({methods}): {facts}" + (f" [from {origin}]" if origin
                                                                                else ""))
    if silent:
        notes.append("published rows whose source states no protocol: " + "; ".join(silent))
    return notes


def published_label(row: pd.Series) -> str:
    """How a published row is named in a table: its source, then its note when it has one."""
    note = str(row["note"]).strip()
    return f"published: {row['source']}" + (f"; {note}" if note else "")
