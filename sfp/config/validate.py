"""Range checks that types cannot express. Each error names the key, the value and what is allowed."""
from __future__ import annotations

from typing import Any, Dict, List, Optional

from ..errors import ConfigError

# Default SFP layer indices by depth (sfp-method.md): ViT-B/16 (12 blocks) and ViT-L/14 (24 blocks).
DEFAULT_LAYERS: Dict[int, Dict[str, Any]] = {
    12: {"detect": 10, "ref": 8, "aux": 3, "integrate": list(range(3, 10))},
    24: {"detect": 22, "ref": 16, "aux": 6, "integrate": list(range(8, 20))},
}


def _check(condition: bool, key: str, value: Any, expected: str) -> None:
    if not condition:
        raise ConfigError(f"config error: {key}={value!r} is out of range: expected {expected}")


def validate_config(cfg: Any) -> None:
    """Check every numeric knob of a composed run config (raises ConfigError on the first bad value)."""
    from ..methods import METHODS
    from ..models.templates import TEMPLATE_SETS

    from dataclasses import fields

    from .schema import RunConfig

    known = {f.name for f in fields(RunConfig)} | {"hydra"}
    unknown = sorted(set(cfg.keys()) - known)
    if unknown:  # e.g. +experiment=<name> when the experiments folder was not found
        raise ConfigError(f"config error: unknown top-level key(s) {unknown}: expected only {sorted(known - {'hydra'})}"
                          " (is the group you selected with '+' on Hydra's search path?)")
    inf = cfg.inference
    _check(inf.crop >= 1, "inference.crop", inf.crop, "an integer >= 1")
    _check(1 <= inf.stride <= inf.crop, "inference.stride", inf.stride, f"an integer in [1, inference.crop={inf.crop}]")
    _check(inf.max_long_side >= 1, "inference.max_long_side", inf.max_long_side, "an integer >= 1")
    _check(inf.batch_size >= 1, "inference.batch_size", inf.batch_size, "an integer >= 1")
    _check(inf.images_per_batch >= 1, "inference.images_per_batch", inf.images_per_batch, "an integer >= 1")
    _check(inf.num_workers >= 0, "inference.num_workers", inf.num_workers, "an integer >= 0")
    _check(inf.pamr_steps >= 1, "inference.pamr_steps", inf.pamr_steps, "an integer >= 1")
    _check(len(inf.pamr_dilations) > 0 and all(d >= 1 for d in inf.pamr_dilations), "inference.pamr_dilations",
           list(inf.pamr_dilations), "a non-empty list of integers >= 1")
    _check(inf.templates in TEMPLATE_SETS, "inference.templates", inf.templates,
           f"one of {', '.join(TEMPLATE_SETS.names())}")
    _check(cfg.method.name in METHODS, "method.name", cfg.method.name, f"one of {', '.join(METHODS.names())}")
    _check(cfg.method.res_cls >= 0, "method.res_cls", cfg.method.res_cls, "a number >= 0")

    if not cfg.datasets:
        raise ConfigError("config error: datasets is empty: select at least one, e.g. datasets=[voc21]")
    for key, dataset in cfg.datasets.items():
        _check_protocol(f"datasets.{key}", dataset)
        if dataset.max_images is not None:
            _check(dataset.max_images >= 1, f"datasets.{key}.max_images", dataset.max_images, "null or >= 1")
    for key, override in (cfg.backbone.dataset_overrides or {}).items():
        _check_protocol(f"backbone.dataset_overrides.{key}", override)

    mit = cfg.mitigator
    _check(mit.top_k >= 1, "mitigator.top_k", mit.top_k, "an integer >= 1")
    _check(mit.cls_scale > 0, "mitigator.cls_scale", mit.cls_scale, "a number > 0")
    _check(mit.lof_neighbours >= 1, "mitigator.lof_neighbours", mit.lof_neighbours, "an integer >= 1")
    _check(0 < mit.lof_contamination < 1, "mitigator.lof_contamination", mit.lof_contamination,
           "a fraction in (0, 1)")
    _check(cfg.integrator.extend >= 0, "integrator.extend", cfg.integrator.extend, "an integer >= 0")
    _check(cfg.method.naclip_sigma > 0, "method.naclip_sigma", cfg.method.naclip_sigma, "a number > 0")
    _check(cfg.enhancer.temperature > 0, "enhancer.temperature", cfg.enhancer.temperature, "a number > 0")
    _check(-1 <= cfg.aggregation.beta <= 1, "aggregation.beta", cfg.aggregation.beta, "a cosine threshold in [-1, 1]")
    _check(0 <= cfg.tracker.num_overlays <= 50, "tracker.num_overlays", cfg.tracker.num_overlays, "an integer in [0, 50]")
    bb = cfg.backbone
    _check(bb.head_width >= 1, "backbone.head_width", bb.head_width, "an integer >= 1")
    if bb.checkpoint_sha256 is not None:
        digest = str(bb.checkpoint_sha256)
        _check(len(digest) == 64 and all(c in "0123456789abcdefABCDEF" for c in digest),
               "backbone.checkpoint_sha256", digest, "64 hexadecimal digits (or null)")
    if cfg.backbone.name == "custom" and not cfg.backbone.checkpoint:
        raise ConfigError("config error: backbone=custom needs backbone.checkpoint=/path/to/weights.pt")


def _check_protocol(prefix: str, node: Any) -> None:
    values = {k: node[k] for k in ("short_side", "logit_scale", "prob_thd", "area_thd")}
    if values["short_side"] is not None:
        _check(values["short_side"] >= 1, f"{prefix}.short_side", values["short_side"], "an integer >= 1")
    if values["logit_scale"] is not None:
        _check(values["logit_scale"] > 0, f"{prefix}.logit_scale", values["logit_scale"], "a number > 0")
    for name in ("prob_thd", "area_thd"):
        if values[name] is not None:
            _check(0 <= values[name] <= 1, f"{prefix}.{name}", values[name], "a number in [0, 1]")


def resolve_layer_indices(cfg: Any, depth: int) -> Dict[str, Any]:
    """The backbone's configured indices, with the defaults of its depth filling the gaps."""
    layers = cfg.backbone.layers
    configured = {name: layers[name] for name in ("detect", "ref", "aux", "integrate")}
    defaults = DEFAULT_LAYERS.get(depth)
    missing = [name for name, value in configured.items() if value is None]
    if missing and defaults is None:
        raise ConfigError(
            f"config error: backbone.layers.{missing[0]} is not set and a {depth}-block backbone has no default "
            f"indices (defaults exist for 12 and 24 blocks): set backbone.layers.detect/ref/aux/integrate"
        )
    resolved = {name: (list(value) if name == "integrate" else value) if value is not None else defaults[name]
                for name, value in configured.items()}
    return resolved


def check_layer_indices(cfg: Any, depth: int) -> None:
    """Out-of-range indices fail when the backbone is built (its depth is known only then)."""
    layers = cfg.backbone.layers
    for name in ("detect", "ref", "aux"):
        value = layers[name]
        if value is not None:
            _check(0 <= value <= depth - 2, f"backbone.layers.{name}", value,
                   f"a block index in [0, {depth - 2}] for this {depth}-block backbone (the last block is rebuilt)")
    integrate: Optional[List[int]] = layers.integrate
    for value in integrate or []:
        _check(0 <= value <= depth - 2, "backbone.layers.integrate", list(integrate),
               f"block indices in [0, {depth - 2}] for this {depth}-block backbone")
    for value in cfg.mitigator.layers or []:
        _check(0 <= value <= depth - 2, "mitigator.layers", list(cfg.mitigator.layers),
               f"block indices in [0, {depth - 2}] for this {depth}-block backbone")
