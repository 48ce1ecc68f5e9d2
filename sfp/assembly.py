"""From config to model: the one place that knows every layer.

`to_run_config` turns a composed config into typed settings once (the method node typed by the method's own
settings class) and checks every range and every name that a registry holds; `build_model` loads the
backbone and builds the method from its own settings. Everything below this module takes typed settings.
"""
from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import fields
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from .backbones.loading import load_backbone
from .backbones.vfm_loading import load_vfm
from .calibration import build_registers
from .config.checks import check
from .config.compose import compose_config as compose_raw, describe_config_exception, sweep_jobs as sweep_raw
from .config.protocol import dataset_method_values
from .config.schema import COMPONENT_GROUPS, MethodSettings, RunConfig, settings_dict
from .config.store import register_schema
from .data.layouts import LAYOUTS
from .engine.device import resolve_device
from .errors import ConfigError
from .methods import METHODS, DenseMethod
from .models.dense import DenseModel
from .models.vfm import VFMTower
from .models.templates import TEMPLATE_SETS
from .models.vit import VisionTower

ConfigLike = Union[RunConfig, DictConfig]


METHOD_SETTINGS_GROUP = "method_settings"


def register_schemas() -> None:
    """The run schema, and each registered method's settings as `method_settings/<name>` (a preset's defaults
    list places them at `method`, so the method's knobs exist, typed, before any override)."""
    register_schema()
    store = ConfigStore.instance()
    for name in METHODS.names():
        store.store(group=METHOD_SETTINGS_GROUP, name=name, node=METHODS.get(name).Settings(name=name))


def run_choices(hydra_choices: Dict[str, Any]) -> Dict[str, str]:
    """The group choices a record keeps: the user's groups, not Hydra's own nor the method-settings schema
    (which always equals the method's name)."""
    return {k: v for k, v in hydra_choices.items()
            if not k.startswith("hydra/") and not k.startswith(METHOD_SETTINGS_GROUP)}


def compose_config(overrides: Sequence[str] = (), return_hydra_config: bool = False) -> DictConfig:
    """The composed (untyped) config, e.g. to read Hydra's own nodes with return_hydra_config=True."""
    register_schemas()
    return compose_raw(overrides, return_hydra_config=return_hydra_config)


def sweep_jobs(overrides: Sequence[str] = ()) -> List[List[str]]:
    """The override lists of the jobs `python main.py -m <overrides>` launches, e.g. ["+experiment=main_table"]."""
    register_schemas()
    return sweep_raw(overrides)


def compose(overrides: Sequence[str] = ()) -> RunConfig:
    """Typed, validated settings of a run, e.g. compose(["backbone=vit_l14", "datasets=[voc21]"])."""
    return to_run_config(compose_config(overrides))


def to_run_config(cfg: ConfigLike) -> RunConfig:
    """Typed settings from a composed config (a `RunConfig` is checked again and returned as it is)."""
    run = cfg if isinstance(cfg, RunConfig) else _convert(cfg)
    run.validate()
    _check_registered_names(run)
    return run


def from_resolved(config: Mapping[str, Any]) -> RunConfig:
    """Typed settings from a resolved config as a results record stores it (`record["config"]`), to rebuild
    a run's model or segmenter later; ConfigError when the record does not fit this version's settings."""
    config = dict(config)
    method = config.pop("method", None)  # typed by the method's own settings class in to_run_config
    try:
        node = OmegaConf.merge(OmegaConf.structured(RunConfig), config)
        with open_dict(node):
            node.method = method
    except OmegaConfBaseException as exc:
        raise ConfigError(f"the recorded config does not fit this version's settings "
                          f"({describe_config_exception(exc)}); the run was written by another version") from None
    return to_run_config(node)


def _convert(cfg: DictConfig) -> RunConfig:
    known = {f.name for f in fields(RunConfig)}
    unknown = sorted(set(cfg.keys()) - known - {"hydra"})
    if unknown:  # e.g. +experiment=<name> when the experiments folder was not found
        raise ConfigError(f"config error: unknown top-level key(s) {unknown}: expected only {sorted(known)}"
                          " (is the group you selected with '+' on Hydra's search path?)")
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        cfg.pop("hydra", None)
    method = _method_settings(cfg.method)
    try:
        run = OmegaConf.to_object(cfg)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"config error: {describe_config_exception(exc)}") from exc
    run.method = method
    return run


def _method_settings(node: Any) -> MethodSettings:
    name = node.get("name") if node is not None else None
    if name not in METHODS:
        raise ConfigError(f"config error: method.name={name!r} is out of range: expected one of "
                          f"{', '.join(METHODS.names())}")
    settings_type = METHODS.get(name).Settings
    allowed = [f.name for f in fields(settings_type)]
    extra = sorted(set(node.keys()) - set(allowed))
    if extra:
        raise ConfigError(f"config error: method.{extra[0]} is not a setting of method {name!r} "
                          f"(its settings: {', '.join(allowed)})")
    try:
        return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(settings_type), node))
    except OmegaConfBaseException as exc:
        key = f"method.{exc.full_key}" if getattr(exc, "full_key", None) else "method"
        raise ConfigError(f"config error: {key}: {getattr(exc, 'msg', exc)}") from exc


def _check_registered_names(run: RunConfig) -> None:
    check(run.method.name in METHODS, "method.name", run.method.name, f"one of {', '.join(METHODS.names())}")
    check(isinstance(run.method, METHODS.get(run.method.name).Settings), "method", type(run.method).__name__,
          f"the settings class of method {run.method.name!r}")
    check(run.inference.templates in TEMPLATE_SETS, "inference.templates", run.inference.templates,
          f"one of {', '.join(TEMPLATE_SETS.names())}")
    for key, dataset in run.datasets.items():
        check(dataset.layout in LAYOUTS, f"datasets.{key}.layout", dataset.layout,
              f"one of {', '.join(LAYOUTS.names())}")
        _check_method_values(f"datasets.{key}.method_values", dataset.method_values)
        override = run.backbone.dataset_overrides.get(key)
        if override is not None:
            _check_method_values(f"backbone.dataset_overrides.{key}.method_values", override.method_values)
        resolved = dataset_method_values(run, key)
        if resolved:
            dataclasses.replace(run.method, **resolved).validate(f"datasets.{key}.method_values.{run.method.name}")


def _check_method_values(prefix: str, method_values: Dict[str, Dict[str, Any]]) -> None:
    for name, values in method_values.items():
        check(name in METHODS, prefix, name, f"keys naming methods ({', '.join(METHODS.names())})")
        tunable = METHODS.get(name).Settings.dataset_fields
        for knob in values:
            check(knob in tunable, f"{prefix}.{name}", knob,
                  f"one of method {name!r}'s per-dataset knobs ({', '.join(tunable) or 'it has none'})")


def build_method(tower: VisionTower, run: RunConfig, vfm: Optional[VFMTower] = None) -> DenseMethod:
    """The configured method over `tower`, given its own settings and the run-config parts it declares
    (`vfm`: the loaded vision foundation model, for methods that declare it; loaded here when not given)."""
    method_type = METHODS.get(run.method.name)
    parts: Dict[str, Any] = {name: getattr(run, name) for name in COMPONENT_GROUPS}
    parts["layers"] = run.backbone.layers
    if "vfm" in method_type.components:
        parts["vfm"] = vfm if vfm is not None else load_vfm(run.vfm, run.seed)
    return method_type(tower, run.method, run.stats, **{name: parts[name] for name in method_type.components})


def check_geometry(run: RunConfig, patch_size: Sequence[int]) -> None:
    """Windows and resized images must hold at least one patch of the backbone (known once it is loaded)."""
    patch = max(patch_size)
    expected = f"an integer >= the backbone's patch size {patch}"
    check(run.inference.crop >= patch, "inference.crop", run.inference.crop, expected)
    check(run.inference.max_long_side >= patch, "inference.max_long_side", run.inference.max_long_side, expected)
    for key, dataset in run.datasets.items():
        check(dataset.short_side >= patch, f"datasets.{key}.short_side", dataset.short_side, expected)
    for key, override in run.backbone.dataset_overrides.items():
        if override.short_side is not None:
            check(override.short_side >= patch, f"backbone.dataset_overrides.{key}.short_side", override.short_side,
                  expected)


def build_model(cfg: ConfigLike, device: Optional[Union[torch.device, str]] = None) -> DenseModel:
    """Load the configured backbone once and wrap it with the configured method, on `device` (default:
    `inference.device` resolved here; the runner resolves it once and passes it)."""
    run = to_run_config(cfg)
    torch.manual_seed(run.seed)  # random-weight (test) backbones are reproducible
    loaded = load_backbone(run.backbone)
    tower = VisionTower(loaded.model.visual)
    check_geometry(run, tower.patch_size)
    method = build_method(tower, run)
    model = DenseModel(loaded.model, loaded.tokenizer, method, loaded.source, run.backbone.is_real_clip)
    model.weights_sha256 = loaded.sha256
    device = torch.device(device) if device is not None else resolve_device(run.inference.device)
    model = model.to(device).eval()
    method.registers, model.registers_report = build_registers(run, tower)
    return model


def build_variant_models(runs: Sequence[RunConfig], device: torch.device) -> List[DenseModel]:
    """One model per run of a pass: the first run's backbone loaded once, every run's own method over it (and
    one loaded VFM per distinct `vfm` setting)."""
    lead = build_model(runs[0], device=device)
    models = [lead]
    vfms = {_key(runs[0].vfm): getattr(lead.method, "vfm", None)}
    registers = {_key(runs[0].registers): (lead.method.registers, lead.registers_report)}
    for run in runs[1:]:
        check_geometry(run, lead.tower.patch_size)
        key = _key(run.vfm)
        if "vfm" in METHODS.get(run.method.name).components and vfms.get(key) is None:
            vfms[key] = load_vfm(run.vfm, run.seed)
        method = build_method(lead.tower, run, vfm=vfms.get(key))
        model = DenseModel(lead.clip, lead.tokenizer, method, lead.source, run.backbone.is_real_clip).to(device).eval()
        model.weights_sha256 = lead.weights_sha256
        if _key(run.registers) not in registers:  # one search per distinct registers setting
            registers[_key(run.registers)] = build_registers(run, lead.tower)
        method.registers, model.registers_report = registers[_key(run.registers)]
        models.append(model)
    return models


def _key(settings) -> str:
    return json.dumps(settings_dict(settings), sort_keys=True)
