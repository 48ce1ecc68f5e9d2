"""Every key a job logs to W&B, written once: the tracker logs through these names and the dashboards
(`analysis/dashboard.py`) build their panels from them, so a renamed key cannot leave a dead panel.

A key is a template with `{dataset}`, `{statistic}` or `{group}` fields; `where` says where W&B keeps it:
`summary` (one value per run), `history` (logged rows; per-layer statistics against their `layer` axis),
`table`, `media` (images) or `config` (the run config).
"""
from __future__ import annotations

import re
import string
from dataclasses import dataclass
from typing import Dict, Optional, Tuple

WHERE = ("summary", "history", "table", "media", "config")


@dataclass(frozen=True)
class LoggedKey:
    template: str
    where: str
    description: str

    def __post_init__(self) -> None:
        if self.where not in WHERE:
            raise ValueError(f"{self.template}: where must be one of {', '.join(WHERE)}, got {self.where!r}")

    def key(self, **fields: str) -> str:
        """The key for these fields, e.g. MIOU.key(dataset="voc21") -> "miou/voc21"."""
        try:
            return self.template.format(**fields)
        except KeyError as exc:
            raise KeyError(f"logged key {self.template!r} needs the field {exc.args[0]!r}") from None

    def match(self, key: str) -> Optional[Dict[str, str]]:
        """The fields of a logged key of this template ("miou/voc21" -> {"dataset": "voc21"}), else None."""
        pattern = ""
        for literal, name, _, _ in string.Formatter().parse(self.template):
            pattern += re.escape(literal) + (f"(?P<{name}>[^/]+)" if name else "")
        found = re.fullmatch(pattern, key)
        return found.groupdict() if found else None


MIOU = LoggedKey("miou/{dataset}", "summary", "mIoU (%) of the dataset")
AACC = LoggedKey("aacc/{dataset}", "summary", "pixel accuracy (%) of the dataset")
MACC = LoggedKey("macc/{dataset}", "summary", "mean class accuracy (%) of the dataset")
N_IMAGES = LoggedKey("n_images/{dataset}", "summary", "images evaluated")
MIOU_MEAN = LoggedKey("miou/mean", "summary", "mIoU averaged over the job's datasets")
PER_CLASS_IOU = LoggedKey("per_class_iou/{dataset}", "table", "per-class IoU (columns class, iou)")
OVERLAYS = LoggedKey("overlays/{dataset}", "media", "prediction and ground-truth mask overlays")
LAYER_STATS_TABLE = LoggedKey("outlier_stats/{dataset}", "table", "per-layer outlier statistics, one row per layer")
LAYER = LoggedKey("outlier_stats/{dataset}/layer", "history", "the layer axis of the per-layer statistics")
LAYER_STAT = LoggedKey("outlier_stats/{dataset}/{statistic}", "history", "one per-layer statistic")
HEATMAP = LoggedKey("outlier_stats/{dataset}/heatmap", "media", "how often each patch was an outlier")
REGISTER_NEURONS = LoggedKey("registers/neurons", "summary", "test-time register neurons (layer:neuron)")
CHOICE = LoggedKey("{group}_choice", "config", "the Hydra choice of a config group, as a flat column")

# summary values per dataset, by the name of the record's metric they hold
DATASET_METRICS: Dict[str, LoggedKey] = {"miou": MIOU, "aacc": AACC, "macc": MACC, "n_images": N_IMAGES}


def statistics() -> Tuple[str, ...]:
    """The `{statistic}` values of LAYER_STAT: the per-layer statistics the methods compute (imported when
    asked for, so that reading records does not load the models)."""
    from ..methods.stats import STAT_NAMES

    return STAT_NAMES

REGISTRY: Dict[str, LoggedKey] = {name: value for name, value in dict(globals()).items()
                                   if isinstance(value, LoggedKey)}
