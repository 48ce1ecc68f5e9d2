"""Which runs are the same configuration.

Two runs are the same configuration when every setting that can change their numbers is equal: the resolved
config without the keys that only say where files live or how work is batched (`sfp.tracking.resume`'s
VOLATILE_KEYS, plus `paths.*`, the dataset roots and `inference.device`), and, for one dataset's figures,
without the other datasets' settings. Tables average the runs of one configuration and keep different
configurations apart: when the runs behind a table row differ in some setting (e.g. a `top_k` sweep lying in
the same folder as a component ablation), the row keeps the runs whose differing settings are the schema
defaults, or, when none are, becomes one row per configuration.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Dict, List, Sequence, Tuple

import pandas as pd

from sfp.tracking.resume import VOLATILE_KEYS
from sfp.tracking.results_store import flatten_config, to_jsonable

# `preset` and a dataset's `label` only name things in tables; no computation reads them
IGNORED_PREFIXES = tuple(".".join(path) for path in VOLATILE_KEYS) + ("paths", "inference.device", "preset")
DATASET_PREFIX = "dataset."  # settings of the row's own dataset: dataset.short_side, dataset.prob_thd, ...
IGNORED_DATASET_FIELDS = ("root", "label")


def is_ignored(key: str) -> bool:
    return any(key == p or key.startswith(p + ".") for p in IGNORED_PREFIXES)


def normalise(value: Any) -> str:
    """A setting's value as comparable text: None and missing -> "null", tuples -> JSON lists."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "null"
    if isinstance(value, str):
        return value
    if isinstance(value, tuple):
        value = list(value)
    try:
        return json.dumps(to_jsonable(value), sort_keys=True)
    except TypeError:
        return str(value)


def settings(runs: pd.DataFrame) -> pd.DataFrame:
    """One column per significant setting (dotted names without `cfg.`), values normalised to text; the
    row's own dataset's settings appear as `dataset.<field>`."""
    columns: Dict[str, pd.Series] = {}
    for column in runs.columns:
        if not column.startswith("cfg."):
            continue
        key = column[4:]
        if key.startswith("datasets.") or is_ignored(key):
            continue
        columns[key] = runs[column].map(normalise)
    for dataset in runs["dataset"].dropna().unique():
        prefix = f"cfg.datasets.{dataset}."
        rows = runs["dataset"] == dataset
        for column in runs.columns:
            if column.startswith(prefix) and column[len(prefix):] not in IGNORED_DATASET_FIELDS:
                name = DATASET_PREFIX + column[len(prefix):]
                values = columns.setdefault(name, pd.Series("null", index=runs.index, dtype=object))
                values[rows] = runs.loc[rows, column].map(normalise)
    return pd.DataFrame(columns, index=runs.index)


_CONFLICT = object()


@lru_cache(maxsize=1)
def _defaults() -> Tuple[Tuple[str, str], ...]:
    from sfp.config.schema import RunConfig, settings_dict
    from sfp.methods import METHODS

    flat = flatten_config(json.loads(json.dumps(to_jsonable(RunConfig()))))
    # a method's own knobs default in its settings class; a knob two methods default differently has none
    method_defaults: Dict[str, Any] = {}
    for name in METHODS.names():
        for key, value in flatten_config(settings_dict(METHODS.get(name).Settings(name=name)), "method.").items():
            if key != "method.name":
                method_defaults[key] = value if method_defaults.get(key, value) == value else _CONFLICT
    flat.update({k: v for k, v in method_defaults.items() if v is not _CONFLICT})
    return tuple((key, normalise(value)) for key, value in flat.items())


def defaults() -> Dict[str, str]:
    """The schema's default of every setting, normalised (what `python main.py` runs unless told otherwise)."""
    return dict(_defaults())


def describe(key: str, value: str) -> str:
    """`mitigator.enabled`="true" -> "mitigator=on"; other settings as key=value."""
    if key.endswith(".enabled") and value in ("true", "false"):
        return f"{key[:-len('.enabled')]}={'on' if value == 'true' else 'off'}"
    return f"{key}={value}"


@dataclass
class Selection:
    """The runs kept for a table row group: `variant` labels each kept row ("" when the group is one
    configuration), `notes` say which runs were set aside."""

    keep: pd.Series
    variant: pd.Series
    notes: List[str] = field(default_factory=list)


def select_configurations(runs: pd.DataFrame, keys: Sequence[str], describe_group=None) -> Selection:
    """For each group of rows with equal `keys`: the settings that differ within it (per dataset); keeps the
    runs at the defaults of those settings when there are such runs, otherwise keeps all and labels each
    configuration."""
    table = settings(runs)
    known = defaults()
    keep = pd.Series(True, index=runs.index)
    variant = pd.Series("", index=runs.index, dtype=object)
    notes: List[str] = []
    group_keys = list(keys)
    for key, index in runs.groupby(group_keys, dropna=False, sort=False).groups.items():
        group = table.loc[index]
        datasets = runs.loc[index, "dataset"]
        distinct = group.groupby(datasets).nunique().max()
        differing = [c for c in group.columns if distinct[c] > 1]
        if not differing:
            continue
        label = group[differing].apply(lambda row: ", ".join(describe(k, row[k]) for k in differing), axis=1)
        at_defaults = pd.Series(True, index=index)
        for column in differing:
            at_defaults &= group[column] == known.get(column, object())
        name = describe_group(key) if describe_group else ", ".join(map(str, _as_tuple(key)))
        if at_defaults.any():
            left_out = runs.loc[index[~at_defaults.to_numpy()], "run_dir"].nunique()
            keep[index[~at_defaults.to_numpy()]] = False
            fields = ", ".join(differing)
            notes.append(f"{name}: {left_out} run(s) with other settings of {fields} left out "
                         f"(the row uses the defaults: {', '.join(describe(c, known[c]) for c in differing)})")
        else:
            variant[index] = label
    return Selection(keep, variant, notes)


def _as_tuple(key: Any) -> Tuple[Any, ...]:
    return key if isinstance(key, tuple) else (key,)


# Settings that belong to the evaluation protocol (what every row of a table must share to be compared), as
# prefixes of `settings()` columns; `RECORD_PROTOCOL_COLUMNS` are run columns read from the records themselves.
PROTOCOL_PREFIXES = ("dataset.", "inference.", "backbone.", "seed")
NOT_PROTOCOL = ("backbone.layers", "inference.check_finite", "dataset.method_values")
RECORD_PROTOCOL_COLUMNS = ("class_file_sha256", "images_sha256")


def is_protocol(key: str) -> bool:
    if any(key == p or key.startswith(p + ".") for p in NOT_PROTOCOL) or ".method_values" in key:
        return False
    return any(key == p or key.startswith(p) for p in PROTOCOL_PREFIXES) or key in RECORD_PROTOCOL_COLUMNS


def protocol_flags(runs: pd.DataFrame, row_keys: Sequence[str], block_keys: Sequence[str],
                   exclude: Sequence[str] = (), describe_row=None) -> Tuple[List[str], List[Tuple[Any, ...]]]:
    """Rows of one block (and dataset) whose protocols differ: notes naming the settings and the rows, and the
    row keys (values of `row_keys`) that differ from the block's most common protocol. `exclude`: settings a
    table compares on purpose (a swept `inference.precision`)."""
    if runs.empty:
        return [], []
    table = settings(runs)
    for column in RECORD_PROTOCOL_COLUMNS:
        if column in runs.columns:
            table[column] = runs[column].map(normalise)
    columns = [c for c in table.columns if is_protocol(c) and c not in exclude]
    if not columns:
        return [], []
    rows = runs[list(row_keys)].apply(tuple, axis=1)
    blocks = runs[list(block_keys)].apply(tuple, axis=1) if block_keys else pd.Series([()] * len(runs), runs.index)
    describe_row = describe_row or (lambda key: ", ".join(normalise(v) for v in key
                                                          if normalise(v) not in ("", "null")))
    notes: List[str] = []
    flagged: List[Tuple[Any, ...]] = []
    for (block, dataset), index in runs.groupby([blocks, runs["dataset"]], sort=False).groups.items():
        group = table.loc[index, columns]
        per_row = group.groupby(rows[index], sort=False).first()  # one protocol per row (rows are one configuration)
        differing = [c for c in columns if per_row[c].nunique(dropna=False) > 1]
        if not differing:
            continue
        signature = per_row[differing].apply(tuple, axis=1)
        common = signature.value_counts().index[0]
        odd = [row for row, sig in signature.items() if sig != common]
        flagged.extend(odd)
        where = ", ".join(str(b) for b in block if str(b)) if block else ""
        shown = []
        for column in differing[:3]:
            groups = per_row.groupby(per_row[column], sort=False).groups
            shown.append(f"{column} (" + "; ".join(f"{value}: {', '.join(describe_row(r) for r in members)}"
                                                  for value, members in groups.items()) + ")")
        more = f" and {len(differing) - 3} more" if len(differing) > 3 else ""
        notes.append(f"protocols differ{' in ' + where if where else ''} on {dataset}: " + "; ".join(shown) + more
                     + ": these rows were not evaluated alike")
    return notes, list(dict.fromkeys(flagged))
