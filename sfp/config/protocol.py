"""The effective evaluation protocol of one dataset: its values, the backbone's overrides, the window."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Tuple


@dataclass(frozen=True)
class Protocol:
    short_side: int
    max_long_side: int
    crop: int
    stride: int
    logit_scale: float
    prob_thd: float
    area_thd: float
    pamr_steps: int = 0  # 0: no PAMR
    pamr_dilations: Tuple[int, ...] = ()

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


def effective_protocol(cfg: Any, dataset_key: str) -> Protocol:
    """cfg is the run config; per-backbone overrides (e.g. the ViT-L/14 thresholds) win over dataset values."""
    dataset = cfg.datasets[dataset_key]
    values = {name: dataset[name] for name in ("short_side", "logit_scale", "prob_thd", "area_thd")}
    override = cfg.backbone.dataset_overrides.get(dataset_key) if cfg.backbone.dataset_overrides else None
    if override is not None:
        values.update({k: v for k, v in dict(override).items() if v is not None})
    return Protocol(
        short_side=int(values["short_side"]),
        max_long_side=int(cfg.inference.max_long_side),
        crop=int(cfg.inference.crop),
        stride=int(cfg.inference.stride),
        logit_scale=float(values["logit_scale"]),
        prob_thd=float(values["prob_thd"]),
        area_thd=float(values["area_thd"]),
        pamr_steps=int(cfg.inference.pamr_steps) if cfg.inference.pamr else 0,
        pamr_dilations=tuple(int(d) for d in cfg.inference.pamr_dilations) if cfg.inference.pamr else (),
    )
