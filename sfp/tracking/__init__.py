"""Result records (always written) and experiment tracking (W&B, optional; imported lazily)."""
from sfp.tracking.results_store import (
    BASE_COLUMNS,
    RESULTS_FILENAME,
    ResultsError,
    build_record,
    collect_results,
    collect_versions,
    read_results,
    to_jsonable,
    write_json_atomic,
    write_results,
)
from sfp.tracking.wandb_tracker import (
    NullTracker,
    Tracker,
    TrackingWarning,
    WandbTracker,
    has_wandb_credentials,
    make_tracker,
)

__all__ = [
    "BASE_COLUMNS",
    "RESULTS_FILENAME",
    "ResultsError",
    "build_record",
    "collect_results",
    "collect_versions",
    "read_results",
    "to_jsonable",
    "write_json_atomic",
    "write_results",
    "NullTracker",
    "Tracker",
    "TrackingWarning",
    "WandbTracker",
    "has_wandb_credentials",
    "make_tracker",
]
