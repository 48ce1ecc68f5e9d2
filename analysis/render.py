"""A `Table` as markdown, LaTeX (booktabs, best value per column in bold) or CSV.

Difference rows with a paired bootstrap interval show it as `+1.20 [+0.40, +2.05]*` (* the interval excludes
zero); the CSV gives `<column>_lo`, `<column>_hi` and `<column>_excludes_zero` at full precision.

Cells show the mean mIoU with `decimals` decimals; differences carry a sign. The `runs` column gives how many
runs were averaged into a row (e.g. "2"; "1-2" when the row's datasets had different numbers of runs, and
then the cells with fewer runs say so, e.g. "12.30 (n=1)"). Missing values are empty cells.
"""
from __future__ import annotations

import io
import math
from typing import Any, List, Tuple

import pandas as pd

from .intervals import excludes_zero
from .names import dataset_group, dataset_label
from .tables import AVERAGE, DELTA, DIFFERENCE, REPRODUCED, Table
from .variants import normalise

FORMATS = ("md", "tex", "csv")
RUNS = "runs"


def render(table: Table, fmt: str = "md", decimals: int = 2) -> str:
    if fmt == "md":
        return to_markdown(table, decimals)
    if fmt == "tex":
        return to_latex(table, decimals)
    if fmt == "csv":
        return to_csv(table)
    raise ValueError(f"unknown format {fmt!r}: expected one of {', '.join(FORMATS)}")


# --------------------------------------------------------------------------- cells


def _number(value: float, decimals: int, signed: bool = False) -> str:
    if value is None or math.isnan(value):
        return ""
    value = round(float(value), decimals)
    if value == 0:
        value = 0.0  # no "-0.00"
    return f"{value:+.{decimals}f}" if signed else f"{value:.{decimals}f}"


def _bounds(table: Table, row: Any, column: str) -> Tuple[float, float]:
    if table.lo is None or column not in table.lo.columns:
        return math.nan, math.nan
    return float(table.lo.at[row, column]), float(table.hi.at[row, column])


def _interval(table: Table, row: Any, column: str, decimals: int) -> str:
    """" [lo, hi]" after a difference, with "*" when the interval excludes zero; "" without an interval."""
    lo, hi = _bounds(table, row, column)
    if math.isnan(lo) or math.isnan(hi):
        return ""
    return f" [{_number(lo, decimals, True)}, {_number(hi, decimals, True)}]" + ("*" if excludes_zero(lo, hi) else "")


def _runs_text(counts: pd.Series) -> str:
    present = counts[counts > 0]
    if present.empty:
        return ""
    low, high = int(present.min()), int(present.max())
    return str(high) if low == high else f"{low}-{high}"


def _label(value: Any) -> str:
    return value if isinstance(value, str) else ("" if normalise(value) == "null" else normalise(value))


def headers(table: Table) -> List[Tuple[str, str]]:
    """(group, label) per displayed column: datasets under "with/without background", then Avg, the
    difference column when there is one, and runs."""
    columns = [(dataset_group(d), dataset_label(d)) for d in table.datasets] + [("", "Avg")]
    if DELTA in table.values.columns:
        columns.append(("", table.delta_label or "Δ"))
    return columns + [("", RUNS)]


def display_frame(table: Table, decimals: int = 2) -> pd.DataFrame:
    """The table's cells as text, with (group, label) column headers and the row labels as index."""
    rows = []
    for row in table.values.index:
        kind = table.kinds[row]
        signed = kind == DIFFERENCE
        counts = table.counts.loc[row]
        most = int(counts.max()) if len(counts) else 0
        cells = []
        for dataset in table.datasets:
            text = _number(table.values.at[row, dataset], decimals, signed)
            count = int(counts[dataset])
            if text and kind == REPRODUCED and 0 < count < most:
                text += f" (n={count})"
            cells.append(text + _interval(table, row, dataset, decimals))
        cells.append(_number(table.values.at[row, AVERAGE], decimals, signed) + _interval(table, row, AVERAGE,
                                                                                          decimals))
        if DELTA in table.values.columns:
            cells.append(_number(table.values.at[row, DELTA], decimals, signed=True))
        cells.append(_runs_text(counts) if kind == REPRODUCED else "")
        rows.append(cells)
    index = pd.MultiIndex.from_tuples([tuple(_label(v) for v in row) for row in table.values.index],
                                      names=table.values.index.names)
    return pd.DataFrame(rows, index=index, columns=pd.MultiIndex.from_tuples(headers(table)))


def best_cells(table: Table, decimals: int = 2) -> pd.DataFrame:
    """True where a dataset or Avg cell holds the best (highest, as displayed) value of its column among the
    reproduced and published rows of its block; False elsewhere (differences, Δ and runs columns). Columns:
    the value keys of `table.values` plus `runs`."""
    compared = table.datasets + [AVERAGE]
    shown = table.values[compared].round(decimals)
    values_rows = (table.kinds != DIFFERENCE).to_numpy()
    candidates = shown[values_rows]
    if table.block_levels:
        best = candidates.groupby(level=list(table.block_levels), sort=False).transform("max").reindex(shown.index)
    else:
        best = pd.DataFrame([candidates.max()] * len(shown), index=shown.index)
    mask = pd.DataFrame(False, index=shown.index, columns=[*table.values.columns, RUNS])
    mask[compared] = (shown == best) & shown.notna() & values_rows[:, None]
    return mask


# --------------------------------------------------------------------------- formats


def _flat(header: Tuple[str, str]) -> str:
    return " / ".join(part for part in header if part)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


def to_markdown(table: Table, decimals: int = 2) -> str:
    """A pipe table: one column per row level, then the flattened (group / label) column headers."""
    frame = display_frame(table, decimals)
    names = [n or "" for n in frame.index.names]
    header = names + [_flat(h) for h in frame.columns]
    align = [":--"] * len(names) + ["--:"] * len(frame.columns)
    lines = [f"### {table.title}", "", "| " + " | ".join(map(_md_cell, header)) + " |",
             "|" + "|".join(align) + "|"]
    for labels, cells in zip(frame.index, frame.itertuples(index=False)):
        lines.append("| " + " | ".join(_md_cell(str(c)) for c in (*labels, *cells)) + " |")
    lines.append("")
    lines += [f"- {note}" for note in table.notes]
    return "\n".join(lines) + "\n"


def to_latex(table: Table, decimals: int = 2) -> str:
    """A booktabs tabular (needs \\usepackage{booktabs}); the best value per column and block in bold; the
    title and notes as comments above it."""
    frame = display_frame(table, decimals)
    bold = best_cells(table, decimals)
    bold.index, bold.columns = frame.index, frame.columns  # same rows and columns, in the same order
    frame.index = frame.index.set_names([_escape_latex(n or "") for n in frame.index.names])
    styler = frame.style.format(escape="latex").format_index(escape="latex", axis=0) \
        .format_index(escape="latex", axis=1)
    styler = styler.apply(lambda _: bold.map(lambda b: "textbf:--rwrap;" if b else ""), axis=None)
    column_format = "l" * frame.index.nlevels + "r" * frame.shape[1]
    body = styler.to_latex(hrules=True, column_format=column_format, multicol_align="c",
                           multirow_align="naive", sparse_index=True, sparse_columns=True)
    body = _rule_between_blocks(body, table).replace("Δ", r"$\Delta$")
    comments = [f"% {table.title}"] + [f"% {note}" for note in table.notes]
    return "\n".join(comments) + "\n" + body


def _rule_between_blocks(body: str, table: Table) -> str:
    """A \\midrule before each new value of the outermost block level (e.g. each backbone after the first)."""
    if not table.block_levels or table.values.index.names[0] != table.block_levels[0]:
        return body
    head, rest = body.split("\\midrule\n", 1)
    lines = rest.split("\n")
    out = [lines[0]]
    for line in lines[1:]:
        if line and not line.startswith((" &", "\\bottomrule", "\\end")):
            out.append("\\midrule")
        out.append(line)
    return head + "\\midrule\n" + "\n".join(out)


_LATEX_SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                   "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def _escape_latex(text: str) -> str:
    return "".join(_LATEX_SPECIALS.get(ch, ch) for ch in text)


def to_csv(table: Table) -> str:
    """Machine-readable: the row levels, the row kind, the values at full precision under their keys
    (dataset keys, avg, delta), and the number of runs; empty cells where a value is missing."""
    values = table.values.copy()
    if table.lo is not None:  # the intervals of the difference rows, and whether each excludes zero
        for column in table.lo.columns:
            bounds = [_bounds(table, row, column) for row in values.index]
            values[f"{column}_lo"] = [b[0] for b in bounds]
            values[f"{column}_hi"] = [b[1] for b in bounds]
            values[f"{column}_excludes_zero"] = [("" if math.isnan(b[0]) else excludes_zero(*b)) for b in bounds]
    values[RUNS] = [(_runs_text(table.counts.loc[row]) if table.kinds[row] == REPRODUCED else "")
                    for row in values.index]
    values.insert(0, "kind", table.kinds.to_numpy())
    values.index = pd.MultiIndex.from_tuples([tuple(_label(v) for v in row) for row in values.index],
                                             names=table.values.index.names)
    buffer = io.StringIO()
    values.reset_index().to_csv(buffer, index=False, lineterminator="\n")
    return buffer.getvalue()
