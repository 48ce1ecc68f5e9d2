"""Resuming sweeps: a job is done when its output dir holds a complete record of the same configuration."""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..errors import ConfigError
from .per_image import complete_entries
from .results_store import RESULTS_FILENAME, ResultsError, flatten_config, read_results, to_jsonable

log = logging.getLogger(__name__)

# Settings that change neither the numbers nor what was evaluated (batching is tested to be invariant).
VOLATILE_KEYS = (
    ("tracker",), ("paths", "output_dir"), ("resume",), ("save_predictions",),
    ("inference", "batch_size"), ("inference", "images_per_batch"), ("inference", "num_workers"),
)


def _stable(config: Dict[str, Any]) -> Dict[str, Any]:
    stable = json.loads(json.dumps(to_jsonable(config)))
    for path in VOLATILE_KEYS:
        node = stable
        for key in path[:-1]:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return stable


def config_fingerprint(config: Dict[str, Any]) -> str:
    """sha256 of the resolved config without the volatile keys."""
    return hashlib.sha256(json.dumps(_stable(config), sort_keys=True).encode()).hexdigest()


def differing_keys(first: Dict[str, Any], second: Dict[str, Any]) -> List[str]:
    """Dotted keys whose values differ between two configs (volatile keys left out)."""
    a, b = flatten_config(_stable(first)), flatten_config(_stable(second))
    return sorted(key for key in set(a) | set(b) if a.get(key, "<absent>") != b.get(key, "<absent>"))


def refuse_other_configuration(output_dir: Path, config: Dict[str, Any]) -> None:
    """A job folder that holds a complete record of another configuration is never written over."""
    path = Path(output_dir) / RESULTS_FILENAME
    if not path.is_file():
        return
    try:
        record = read_results(path)
    except ResultsError:
        return  # unreadable: nothing finished to protect
    if record.get("status") != "complete" or record.get("fingerprint") == config_fingerprint(config):
        return
    differences = differing_keys(record.get("config", {}), config)
    shown = ", ".join(differences[:8]) + (f" and {len(differences) - 8} more" if len(differences) > 8 else "")
    raise ConfigError(
        f"{path} holds a complete record of another configuration (fingerprint {record.get('fingerprint')}, "
        f"this job's {config_fingerprint(config)}; they differ in {shown or 'settings the record lacks'}): "
        "nothing was overwritten. Run this configuration in another folder (a new sweep, or another "
        "hydra.sweep.dir / hydra.run.dir), or move that record away")


def completed_record(output_dir: Path, fingerprint: str) -> Optional[Path]:
    """The job's results.json if it is complete (per-image files included) and of the same configuration,
    else None."""
    path = Path(output_dir) / RESULTS_FILENAME
    if not path.is_file():
        return None
    try:
        record = read_results(path)
    except ResultsError:
        return None  # unreadable: run the job again
    if record.get("status") != "complete" or record.get("fingerprint") != fingerprint:
        return None
    missing = complete_entries(path.parent, record)
    if missing is not None:  # the per-image counts are part of the result
        log.info("resume: %s is complete but %s; the job runs again", path, missing)
        return None
    return path
