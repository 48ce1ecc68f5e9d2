"""Which configurations can be evaluated in one pass, and the pass itself over one model's variants.

Two configurations share a pass when everything but the per-variant settings is equal: weights, precision,
device, windows, data. Within a pass, variants whose trunk plans agree share backbone blocks (the prefix tree
of `VisionTower.run_plans`), and variants whose feature settings are equal share the features too (e.g. a
`prob_thd` or template sweep). Each variant's predictions are those of a separate run, bit for bit.
"""
from __future__ import annotations

import json
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from .config.protocol import effective_protocol
from .config.schema import COMPONENT_GROUPS, RunConfig, settings_dict
from .engine.inference import AuxSink, LogitHead, class_probabilities, postprocess, shared_window_logits
from .errors import ConfigError, NumericalError
from .methods import METHODS
from .models.dense import DenseModel
from .segmenter import Segmenter

# Settings that may differ within one pass: what the method head, the logits and the post-processing read,
# and what each job records on its own. Everything else must be equal (conservative by construction: a new
# setting is shared-only until it is listed here).
PER_VARIANT_KEYS = (
    "method", "preset", *COMPONENT_GROUPS, "stats", "tracker", "save_predictions", "resume",
    "backbone.layers", "backbone.label", "backbone.dataset_overrides", "vfm", "registers",
    "inference.templates", "inference.pamr", "inference.pamr_steps", "inference.pamr_dilations",
    "inference.check_finite", "paths.output_dir", "paths.cache_dir",
)
PER_VARIANT_DATASET_KEYS = ("logit_scale", "prob_thd", "area_thd", "label", "with_background")


def _drop(values: Dict[str, Any], dotted: str) -> None:
    *parents, leaf = dotted.split(".")
    for name in parents:
        values = values.get(name, {})
    values.pop(leaf, None)


def group_key(run: RunConfig) -> str:
    """Equal keys: the two configurations can be evaluated in one pass (same model weights, images, windows)."""
    values = settings_dict(run)
    for dotted in PER_VARIANT_KEYS:
        _drop(values, dotted)
    for dataset in values["datasets"].values():
        for name in PER_VARIANT_DATASET_KEYS:
            dataset.pop(name, None)
    # The window geometry after per-backbone overrides; the dataset order is the evaluation order.
    values["geometry"] = {key: effective_protocol(run, key).short_side for key in run.datasets}
    values["dataset_order"] = list(run.datasets)
    return json.dumps(values, sort_keys=True)


def feature_key(run: RunConfig, dataset: Optional[str] = None) -> str:
    """Equal keys (within a pass over `dataset`): the two configurations compute the same dense features and
    statistics."""
    method = METHODS.get(run.method.name)
    components = method.components
    parts = {name: settings_dict(getattr(run, name)) for name in COMPONENT_GROUPS if name in components}
    if "layers" in components:
        parts["layers"] = settings_dict(run.backbone.layers)
    if method.uses_queries:  # the features read the class text
        parts["templates"] = run.inference.templates
    if dataset is not None:  # the method's per-dataset knobs as resolved for this dataset
        parts["dataset_values"] = effective_protocol(run, dataset).as_dict()["method_values"]
    return json.dumps({"method": settings_dict(run.method), "stats": settings_dict(run.stats),
                       "registers": settings_dict(run.registers), **parts}, sort_keys=True)


def check_max_variants(value: Optional[int]) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"config error: max_variants={value!r} (hydra.launcher.max_variants): expected an "
                          "integer >= 1 or null")


def group_indices(runs: Sequence[RunConfig], max_variants: Optional[int] = None) -> List[List[int]]:
    """Indices of `runs` grouped by `group_key`, in order of first appearance; groups of at most
    `max_variants` (None: no limit)."""
    check_max_variants(max_variants)
    groups: Dict[str, List[int]] = {}
    for index, run in enumerate(runs):
        groups.setdefault(group_key(run), []).append(index)
    size = max_variants or max(len(runs), 1)
    return [members[i:i + size] for members in groups.values() for i in range(0, len(members), size)]


class GroupedSegmenter:
    """Several variants over one loaded backbone, segmenting the same images in one pass per batch.

    `models[i]` is variant i's DenseModel; all share the same CLIP model (and so the same tower)."""

    def __init__(self, runs: Sequence[RunConfig], models: Sequence[DenseModel], dataset: str,
                 class_names: Any = None):
        self.segmenters: List[Segmenter] = []
        by_templates: Dict[str, Segmenter] = {}  # one text encoding per template set (same text tower, classes)
        for run, model in zip(runs, models):
            same = by_templates.get(run.inference.templates)
            segmenter = Segmenter(run, dataset=dataset, model=model, class_names=class_names,
                                  queries=same.queries if same is not None else None)
            by_templates.setdefault(run.inference.templates, segmenter)
            self.segmenters.append(segmenter)
        self.tower = models[0].tower
        slots: Dict[str, int] = {}
        self.slot_of: List[int] = [slots.setdefault(feature_key(run, dataset), len(slots)) for run in runs]
        first_of_slot = {slot: i for i, slot in reversed(list(enumerate(self.slot_of)))}
        self.methods = [self.segmenters[first_of_slot[slot]].method for slot in range(len(slots))]
        lead = self.segmenters[0]
        self.device, self.dtype, self.batch_size = lead.model.device, lead.dtype, lead.batch_size
        self.patch_size = lead.model.patch_size
        self.trunks = len({_plan_signature(m.plan()) for m in self.methods})

    @property
    def num_feature_heads(self) -> int:
        return len(self.methods)

    def shared_features(self, crops: torch.Tensor) -> List[Tuple[torch.Tensor, Dict[str, Any]]]:
        if len(self.methods) == 1:  # a method alone runs exactly as `dense_features` runs it
            return [self.methods[0].forward_features(crops)]
        traces = self.tower.run_plans(crops, [method.plan() for method in self.methods])
        return [method.features_from_trace(trace) for method, trace in zip(self.methods, traces)]

    def predict_batch(self, images: Sequence[np.ndarray], aux_sinks: Sequence[Optional[AuxSink]],
                      names: Optional[Sequence[str]] = None,
                      live: Optional[Sequence[bool]] = None) -> List[List[np.ndarray] | NumericalError]:
        """Per variant, the label maps of `images` (or the error that stopped that variant). Variants with
        live[i] False are skipped (None in the result)."""
        live = list(live) if live is not None else [True] * len(self.segmenters)
        for index, image in enumerate(images):
            self.segmenters[0].check_image(image, names[index] if names is not None else f"image {index}")
        chosen = [i for i, ok in enumerate(live) if ok]
        heads = [LogitHead(self.segmenters[i].queries, self.segmenters[i].protocol, self.slot_of[i], aux_sinks[i],
                           self.segmenters[i].check_finite, self.segmenters[i].scores,
                           self.segmenters[i].method.output_patch_size) for i in chosen]
        with torch.no_grad():
            logits = shared_window_logits(self.shared_features, images, heads, self.patch_size, self.batch_size,
                                          self.device, self.dtype, names)
        results: List[Any] = [None] * len(self.segmenters)
        for i, result in zip(chosen, logits):
            if isinstance(result, BaseException):
                results[i] = result
                continue
            segmenter = self.segmenters[i]
            results[i] = [
                postprocess(class_probabilities(image_logits, segmenter.queries, segmenter.scores),
                            segmenter.protocol.prob_thd, segmenter.protocol.area_thd).cpu().numpy().astype(np.int64)
                for image_logits in result]
        return results


def _plan_signature(plan) -> Tuple:
    return (plan.root_key, plan.num_blocks, tuple(sorted(plan.attention_layers)), tuple(sorted(plan.edit_layers)),
            plan.edit_key)
