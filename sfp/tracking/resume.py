"""Resuming sweeps: a job is done when its output dir holds a complete record of the same configuration."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict, Optional

from .results_store import RESULTS_FILENAME, ResultsError, read_results, to_jsonable

# Settings that change neither the numbers nor what was evaluated (batching is tested to be invariant).
VOLATILE_KEYS = (
    ("tracker",), ("paths", "output_dir"), ("resume",), ("save_predictions",),
    ("inference", "batch_size"), ("inference", "images_per_batch"), ("inference", "num_workers"),
)


def config_fingerprint(config: Dict[str, Any]) -> str:
    """sha256 of the resolved config without the volatile keys."""
    stable = json.loads(json.dumps(to_jsonable(config)))
    for path in VOLATILE_KEYS:
        node = stable
        for key in path[:-1]:
            node = node.get(key, {}) if isinstance(node, dict) else {}
        if isinstance(node, dict):
            node.pop(path[-1], None)
    return hashlib.sha256(json.dumps(stable, sort_keys=True).encode()).hexdigest()


def completed_record(output_dir: Path, fingerprint: str) -> Optional[Path]:
    """The job's results.json if it is complete and of the same configuration, else None."""
    path = Path(output_dir) / RESULTS_FILENAME
    if not path.is_file():
        return None
    try:
        record = read_results(path)
    except ResultsError:
        return None  # unreadable: run the job again
    if record.get("status") != "complete" or record.get("fingerprint") != fingerprint:
        return None
    return path
