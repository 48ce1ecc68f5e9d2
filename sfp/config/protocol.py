"""The effective evaluation protocol of one dataset: its values, the backbone's overrides, the window."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Dict, Tuple

from .schema import RunConfig


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
    # the method's per-dataset knobs as resolved for this dataset (name, value)
    method_values: Tuple[Tuple[str, Any], ...] = ()

    def as_dict(self) -> Dict[str, Any]:
        values = asdict(self)
        values["method_values"] = {name: value for name, value in self.method_values}
        return values


def effective_protocol(run: RunConfig, dataset_key: str) -> Protocol:
    """Per-backbone overrides (e.g. the ViT-L/14 thresholds) win over the dataset's values."""
    dataset = run.datasets[dataset_key]
    values = {name: getattr(dataset, name) for name in ("short_side", "logit_scale", "prob_thd", "area_thd")}
    override = run.backbone.dataset_overrides.get(dataset_key)
    if override is not None:
        values.update({k: v for k, v in asdict(override).items() if v is not None and k != "method_values"})
    inference = run.inference
    return Protocol(
        short_side=values["short_side"],
        max_long_side=inference.max_long_side,
        crop=inference.crop,
        stride=inference.stride,
        logit_scale=values["logit_scale"],
        prob_thd=values["prob_thd"],
        area_thd=values["area_thd"],
        pamr_steps=inference.pamr_steps if inference.pamr else 0,
        pamr_dilations=tuple(inference.pamr_dilations) if inference.pamr else (),
        method_values=tuple(sorted(dataset_method_values(run, dataset_key).items())),
    )


def dataset_method_values(run: RunConfig, dataset_key: str) -> Dict[str, Any]:
    """The method's `dataset_fields`: its own value when set, else the dataset's, else the method's fallback."""
    method = run.method
    fields = getattr(method, "dataset_fields", ())
    name = getattr(method, "name", None)
    tuned = dict(run.datasets[dataset_key].method_values.get(name, {}))
    override = run.backbone.dataset_overrides.get(dataset_key)
    if override is not None:  # the backbone's tuned values win
        tuned.update(override.method_values.get(name, {}))
    resolved = {}
    for name in fields:
        own = getattr(method, name)
        value = own if own is not None else tuned.get(name, method.value(name))
        resolved[name] = list(value) if isinstance(value, (list, tuple)) else value
    return resolved
