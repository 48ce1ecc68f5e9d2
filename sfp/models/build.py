"""`build_model(cfg)`: backbone + method in one module with the inference API other projects use."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import torch
from torch import nn

from ..backbones.loading import load_backbone
from ..engine.device import resolve_device
from ..methods import METHODS
from .templates import get_templates
from .text import QueryEmbeddings, encode_queries
from .vit import VisionTower


class DenseModel(nn.Module):
    """A CLIP backbone and a dense method. `dense_features` takes CLIP-normalised crops (B, 3, H, W)."""

    def __init__(self, clip_model: nn.Module, tokenizer, method: nn.Module, source: str, is_real_clip: bool):
        super().__init__()
        self.clip = clip_model
        self.tokenizer = tokenizer
        self.method = method
        self.source = source
        self.is_real_clip = is_real_clip

    @property
    def tower(self) -> VisionTower:
        return self.method.tower

    @property
    def patch_size(self):
        return self.tower.patch_size

    @property
    def device(self) -> torch.device:
        return next(self.clip.parameters()).device

    @torch.no_grad()
    def dense_features(self, images: torch.Tensor, return_aux: bool = False):
        return self.method.dense_features(images, return_aux=return_aux)

    def encode_queries(
        self, class_synonyms: Sequence[Sequence[str]], templates: str | Sequence[str] = "imagenet80",
        cache_dir: Optional[str] = None,
    ) -> QueryEmbeddings:
        template_list = get_templates(templates) if isinstance(templates, str) else list(templates)
        return encode_queries(self.clip, self.tokenizer, class_synonyms, template_list, self.device, cache_dir)


def _job_number() -> int:
    """The Hydra job number inside a sweep, 0 elsewhere."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    if not HydraConfig.initialized():
        return 0
    number = OmegaConf.select(HydraConfig.get(), "job.num", default=None, throw_on_missing=False)
    return number if isinstance(number, int) else 0  # missing outside a multirun


def build_model(cfg: Any, device: Optional[torch.device | str] = None) -> DenseModel:
    """Load the configured backbone once and wrap it with the configured method."""
    from ..config.validate import check_layer_indices

    torch.manual_seed(cfg.seed)  # random-weight (test) backbones are reproducible
    loaded = load_backbone(cfg.backbone, weights_cache_dir=cfg.backbone.weights_cache_dir)
    tower = VisionTower(loaded.model.visual)
    check_layer_indices(cfg, tower.depth)
    method = METHODS.get(cfg.method.name)(tower, cfg)
    model = DenseModel(loaded.model, loaded.tokenizer, method, loaded.source, bool(cfg.backbone.is_real_clip))
    device = torch.device(device) if device is not None else resolve_device(cfg.inference.device, _job_number())
    return model.to(device).eval()
