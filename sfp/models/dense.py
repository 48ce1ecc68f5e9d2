"""`DenseModel`: a CLIP backbone and a dense method, with the inference API other projects use."""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from .templates import get_templates
from .text import QueryEmbeddings, encode_queries
from .vit import VisionTower


class DenseModel(nn.Module):
    """`dense_features` takes CLIP-normalised crops (B, 3, H, W); `encode_queries` embeds class names."""

    def __init__(self, clip_model: nn.Module, tokenizer, method: nn.Module, source: str, is_real_clip: bool):
        super().__init__()
        self.clip = clip_model
        self.tokenizer = tokenizer
        self.method = method
        self.source = source
        self.is_real_clip = is_real_clip
        self.registers_report: dict = {}  # test-time registers: neurons found, calibration set (for records)
        self.weights_sha256: Optional[str] = None  # of the checkpoint file the weights came from, when one

    @property
    def tower(self) -> VisionTower:
        return self.method.tower

    @property
    def patch_size(self):
        """Pixels per output token of the method (the backbone's patch, or its VFM's)."""
        return self.method.output_patch_size

    @property
    def device(self) -> torch.device:
        return next(self.clip.parameters()).device

    @torch.no_grad()
    def dense_features(self, images: torch.Tensor, return_aux: bool = False, queries=None, background: bool = False):
        """Features (B, N, D) of CLIP-normalised crops, or per-query scores (B, N, Q) for a method whose
        `output` is "scores"; `queries` (embeddings (Q, D) or QueryEmbeddings) for methods that read the text,
        `background` when their class 0 is a background class."""
        return self.method.dense_features(images, return_aux=return_aux, queries=queries, background=background)

    def encode_queries(
        self, class_synonyms: Sequence[Sequence[str]], templates: str | Sequence[str] = "imagenet80",
        cache_dir: Optional[str] = None,
    ) -> QueryEmbeddings:
        template_list = get_templates(templates) if isinstance(templates, str) else list(templates)
        return encode_queries(self.clip, self.tokenizer, class_synonyms, template_list, self.device, cache_dir)
