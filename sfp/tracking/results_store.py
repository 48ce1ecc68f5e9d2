"""The local results store: one `results.json` per job, written atomically, and a collector
that turns a folder tree of them into one pandas table.

This is the source of truth for every table and plot (W&B is optional and offline W&B runs
cannot be read back locally). NaN is stored as JSON null.
"""
from __future__ import annotations

import dataclasses
import enum
import functools
import importlib.metadata
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import IO, Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import numpy as np
import pandas as pd

from sfp.errors import SFPError

__all__ = [
    "RESULTS_FILENAME",
    "REQUIRED_KEYS",
    "BASE_COLUMNS",
    "ResultsError",
    "to_jsonable",
    "write_json_atomic",
    "write_file_atomic",
    "read_results",
    "write_results",
    "build_record",
    "collect_versions",
    "code_version",
    "collect_results",
    "flatten_config",
]

RESULTS_FILENAME = "results.json"
REQUIRED_KEYS = ("config", "choices", "metrics", "status")
BASE_COLUMNS = ("run_dir", "dataset", "miou", "aacc", "macc", "n_images", "status", "code_version")
_METRIC_COLUMNS = ("miou", "aacc", "macc", "n_images")

# Distribution names of the packages whose versions are recorded with every result.
_VERSION_PACKAGES = {
    "torch": "torch",
    "open_clip": "open_clip_torch",
    "hydra": "hydra-core",
    "omegaconf": "omegaconf",
    "wandb": "wandb",
    "numpy": "numpy",
    "pandas": "pandas",
}

PathLike = Union[str, "os.PathLike[str]"]


class ResultsError(SFPError, ValueError):
    """A results file is unreadable, not JSON or not a results record."""


# --------------------------------------------------------------------------- JSON sanitising


def to_jsonable(obj: Any, _where: str = "$") -> Any:
    """A copy of `obj` made of JSON types only.

    float NaN/inf -> None (JSON has no NaN; None reads back as NaN in `collect_results`),
    numpy/torch scalars -> Python numbers, arrays/tensors -> lists, Enum -> its value,
    Path -> str, dataclasses and OmegaConf containers -> dicts, tuples/sets -> lists.
    Anything else raises TypeError naming where it sits.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, enum.Enum):
        return to_jsonable(obj.value, _where)
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.generic):
        return to_jsonable(obj.item(), _where)
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist(), _where)
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(obj, torch.Tensor):
        return to_jsonable(obj.detach().cpu().tolist(), _where)
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    omegaconf = sys.modules.get("omegaconf")
    if omegaconf is not None and isinstance(obj, (omegaconf.DictConfig, omegaconf.ListConfig)):
        return to_jsonable(omegaconf.OmegaConf.to_container(obj, resolve=True), _where)
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return to_jsonable(dataclasses.asdict(obj), _where)
    if isinstance(obj, Mapping):
        out = {}
        for key, value in obj.items():
            skey = _json_key(key, _where)
            out[skey] = to_jsonable(value, f"{_where}.{skey}")
        return out
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = sorted(obj, key=repr) if isinstance(obj, (set, frozenset)) else obj
        return [to_jsonable(v, f"{_where}[{i}]") for i, v in enumerate(items)]
    raise TypeError(f"cannot store {type(obj).__name__} at {_where} in JSON: {obj!r:.80}")


def _json_key(key: Any, where: str) -> str:
    if isinstance(key, enum.Enum):
        key = key.value
    if isinstance(key, np.generic):
        key = key.item()
    if isinstance(key, (str, int, float, bool)) or key is None:
        return key if isinstance(key, str) else json.dumps(key)
    raise TypeError(f"cannot use {type(key).__name__} key {key!r} at {where} in JSON")


def write_json_atomic(path: PathLike, obj: Any, *, indent: Optional[int] = 2) -> None:
    """Write JSON so that readers see the old file or the new one, never a partial one (`write_file_atomic`)."""
    data = to_jsonable(obj)  # fail before touching the disk

    def dump(handle) -> None:
        json.dump(data, handle, indent=indent, allow_nan=False, ensure_ascii=False)
        handle.write("\n")

    write_file_atomic(path, dump, text=True)


def write_file_atomic(path: PathLike, write: Callable[[IO], None], *, text: bool = False) -> None:
    """`write(handle)` fills a temporary file in the same directory, which is flushed, fsynced and then swapped
    in with os.replace(). On any error the temporary file is removed and the old file stays as it was."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with (os.fdopen(fd, "w", encoding="utf-8") if text else os.fdopen(fd, "wb")) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600; results should be as readable as an ordinary file
        mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable; not possible on every platform / filesystem.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- records


def read_results(path: PathLike) -> Dict[str, Any]:
    """Read and check one results record; raises ResultsError naming the file."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            record = json.load(f)
    except FileNotFoundError:
        raise ResultsError(f"results file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ResultsError(f"cannot read results file {path}: {e}") from None
    except json.JSONDecodeError as e:
        raise ResultsError(f"results file {path} is not valid JSON: {e}") from None
    if not isinstance(record, dict):
        raise ResultsError(
            f"results file {path} holds a {type(record).__name__}, not a results record (object)"
        )
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ResultsError(f"results file {path} lacks the required key(s) {', '.join(missing)}")
    for key in ("config", "choices", "metrics"):
        if not isinstance(record[key], dict):
            raise ResultsError(
                f"results file {path}: {key!r} must be an object, got {type(record[key]).__name__}"
            )
    for dataset, entry in record["metrics"].items():
        if not isinstance(entry, dict):
            raise ResultsError(
                f"results file {path}: metrics[{dataset!r}] must be an object, "
                f"got {type(entry).__name__}"
            )
    return record


def write_results(run_dir: PathLike, record: Mapping[str, Any]) -> Path:
    """Write `record` to <run_dir>/results.json atomically; returns the file's path."""
    missing = [k for k in REQUIRED_KEYS if k not in record]
    if missing:
        raise ValueError(f"a results record needs the key(s) {', '.join(missing)}")
    path = Path(run_dir) / RESULTS_FILENAME
    write_json_atomic(path, record)
    return path


def build_record(
    config: Mapping[str, Any],
    choices: Mapping[str, Any],
    metrics: Mapping[str, Any],
    timing: Mapping[str, Any],
    class_files: Mapping[str, str],
    extra: Optional[Mapping[str, Any]] = None,
    status: str = "complete",
) -> Dict[str, Any]:
    """Assemble the record a job writes. `metrics` maps dataset -> {"miou", "aacc", "macc",
    "per_class_iou": {class name: iou}, "n_images"}; `extra` adds top-level keys."""
    record: Dict[str, Any] = {
        "config": dict(config),
        "choices": dict(choices),
        "metrics": {str(k): dict(v) for k, v in metrics.items()},
        "timing": dict(timing),
        "versions": collect_versions(),
        "class_files": dict(class_files),
        "status": status,
    }
    if extra:
        clash = sorted(set(extra) & set(record))
        if clash:
            raise ValueError(f"extra keys {clash} would overwrite the record's own keys")
        record.update(extra)
    return record


def collect_versions() -> Dict[str, Optional[str]]:
    """Versions of Python, the main packages (None where not installed) and this code: those of the running
    process, read once (records written later in a long sweep keep the code the process runs)."""
    return dict(_process_versions())


@functools.lru_cache(maxsize=1)
def _process_versions() -> Dict[str, Optional[str]]:
    versions: Dict[str, Optional[str]] = {"python": platform.python_version()}
    for key, dist in _VERSION_PACKAGES.items():
        try:
            versions[key] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[key] = None
    versions["code_version"] = code_version()
    return versions


def code_version() -> Optional[str]:
    """`git describe --always --dirty` of the checkout holding the sfp package, else the
    installed sfp distribution's version, else None."""
    package_dir = Path(__file__).resolve().parents[1]
    if "site-packages" not in package_dir.parts and "dist-packages" not in package_dir.parts:
        described = _git(package_dir, "describe", "--always", "--dirty")
        if described:
            return described
    try:
        return importlib.metadata.version("sfp")
    except importlib.metadata.PackageNotFoundError:
        return None


def _git(cwd: Path, *args: str) -> Optional[str]:
    try:
        out = subprocess.run(
            ["git", *args],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=20,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},  # don't take index.lock during sweeps
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() or None


# --------------------------------------------------------------------------- collecting


def flatten_config(config: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """Nested dicts -> {"a.b.c": value}; lists become tuples (JSON strings when they hold
    dicts or lists) so every value is hashable for groupby / pivot."""
    flat: Dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten_config(value, name + "."))
        elif isinstance(value, (list, tuple)):
            if any(isinstance(v, (Mapping, list, tuple)) for v in value):
                flat[name] = json.dumps(value, sort_keys=True)
            else:
                flat[name] = tuple(value)
        else:
            flat[name] = value
    return flat


def _number(value: Any) -> float:
    if value is None or isinstance(value, bool):
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def _rows(record: Dict[str, Any], run_dir: str, per_class: bool) -> Iterable[Dict[str, Any]]:
    common: Dict[str, Any] = {
        "run_dir": run_dir,
        "status": record.get("status"),
        "code_version": (record.get("versions") or {}).get("code_version"),
    }
    for group, option in record["choices"].items():
        if not str(group).startswith("hydra/"):  # launcher, logging, ...: not ablation axes
            common[f"choice.{group}"] = option
    common.update(flatten_config(record["config"], "cfg."))

    # A record without datasets (e.g. a failed job) still gets a row, so it stays visible.
    datasets = record["metrics"] or {None: {}}
    for dataset, entry in datasets.items():
        row = dict(common)
        row["dataset"] = dataset
        # what the row's number also depends on: the class file and the image set (compared by the tables)
        class_file = (record.get("class_files") or {}).get(dataset)
        if class_file:
            row["class_file_sha256"] = class_file
        images = ((record.get("per_image") or {}).get(dataset) or {}).get("images_sha256")
        if images:
            row["images_sha256"] = images
        for key in _METRIC_COLUMNS:
            row[key] = _number(entry.get(key))
        if per_class and isinstance(entry.get("per_class_iou"), Mapping):
            for name, iou in entry["per_class_iou"].items():
                row[f"iou.{name}"] = _number(iou)
        yield row


def collect_results(folder: PathLike, per_class: bool = False) -> pd.DataFrame:
    """One row per (results.json under `folder`, dataset).

    Columns: run_dir, dataset, miou, aacc, macc, n_images, status, code_version, then
    `choice.<group>` for every Hydra choice (except Hydra's own `hydra/...` groups) and `cfg.<dotted.key>` for
    the flattened config
    (and `iou.<class>` with per_class=True). Values a record lacks are NaN/None, never 0.
    Files that are not valid records are skipped with a warning naming them; a folder without
    any gives an empty frame with the base columns.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"results folder {folder} does not exist or is not a folder")
    located: List[Tuple[str, Dict[str, Any]]] = []
    for path in sorted(folder.rglob(RESULTS_FILENAME)):
        if not path.is_file():
            continue
        try:
            located.append((str(path.parent), read_results(path)))
        except ResultsError as e:
            warnings.warn(f"skipping {path}: {e}", stacklevel=2)
    return records_to_frame(located, per_class=per_class)


def records_to_frame(records: Iterable[Tuple[str, Dict[str, Any]]], per_class: bool = False) -> pd.DataFrame:
    """The rows of `collect_results` for (run_dir, record) pairs already in memory."""
    rows: List[Dict[str, Any]] = []
    for run_dir, record in records:
        rows.extend(_rows(record, run_dir, per_class))
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=_empty_dtype(c)) for c in BASE_COLUMNS})

    df = pd.DataFrame(rows)
    extra = [c for c in df.columns if c not in BASE_COLUMNS]
    order = {"choice.": 0, "cfg.": 1, "iou.": 2}
    extra.sort(key=lambda c: (next((v for k, v in order.items() if c.startswith(k)), 3), c))
    df = df[list(BASE_COLUMNS) + extra]
    for c in ("miou", "aacc", "macc"):
        df[c] = df[c].astype("float64")
    if df["n_images"].notna().all():
        df["n_images"] = df["n_images"].astype("int64")
    return df.reset_index(drop=True)


def _empty_dtype(column: str) -> str:
    return "float64" if column in _METRIC_COLUMNS else "object"
