"""Published figures of SFP and its peers: `analysis/data/published_results.csv`, one row per source.

Columns: method, backbone (ViT-B/16, ViT-L/14), one mIoU column per benchmark key, source, note. Empty cells
(figures a source does not give) stay NaN; a method may have several rows (different sources or settings).
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import pandas as pd

from .names import BENCHMARKS, PUBLISHED_CSV

REQUIRED_COLUMNS = ("method", "backbone", *BENCHMARKS, "source", "note")


def load_published(path: Optional[Union[str, Path]] = None) -> pd.DataFrame:
    """The published-results table (the project's copy unless `path` is given), checked for its columns."""
    path = Path(path) if path is not None else PUBLISHED_CSV
    table = pd.read_csv(path, dtype={"method": str, "backbone": str, "source": str, "note": str},
                        keep_default_na=False, na_values={key: [""] for key in BENCHMARKS})
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"published results {path} lack the column(s) {', '.join(missing)}")
    for key in BENCHMARKS:
        table[key] = pd.to_numeric(table[key], errors="raise").astype("float64")
    return table.reset_index(drop=True)


def published_label(row: pd.Series) -> str:
    """How a published row is named in a table: its source, then its note when it has one."""
    note = str(row["note"]).strip()
    return f"published: {row['source']}" + (f"; {note}" if note else "")
