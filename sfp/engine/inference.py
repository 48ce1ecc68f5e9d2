"""Dense sliding-window inference: windows of several images batched through the model together."""
from __future__ import annotations

from collections import defaultdict
from contextlib import nullcontext
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ..config.protocol import Protocol
from ..models.text import QueryEmbeddings
from .preprocess import normalize, rescaled_size, resize_image
from .windows import Window, sliding_windows

# dense_features: (B, 3, h, w) -> (B, N, D), or ((B, N, D), aux) with return_aux=True
FeatureFn = Callable[..., Any]
AuxSink = Callable[[Dict[str, Any]], None]


def autocast_context(device: torch.device, dtype: torch.dtype):
    if dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@torch.no_grad()
def sliding_window_logits(
    features_fn: FeatureFn,
    images: Sequence[np.ndarray],
    queries: QueryEmbeddings,
    protocol: Protocol,
    patch_size: Tuple[int, int],
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    aux_sink: Optional[AuxSink] = None,
) -> List[torch.Tensor]:
    """Per image, (Q, H, W) query logits (scaled cosine similarities) at the image's original size.

    aux_sink, when given, receives the method's auxiliary outputs of every forward pass (e.g. statistics)."""
    resized = []
    for image in images:
        size = rescaled_size(image.shape[0], image.shape[1], protocol.short_side, protocol.max_long_side)
        resized.append(normalize(resize_image(image, size, device=device)))

    num_queries = queries.embeddings.shape[0]
    sums = [torch.zeros(num_queries, *img.shape[1:], device=device) for img in resized]
    counts = [torch.zeros(1, *img.shape[1:], device=device) for img in resized]

    # Windows of equal size (all of them, unless an image is smaller than the crop) share forward passes.
    jobs: Dict[Tuple[int, int], List[Tuple[int, Window]]] = defaultdict(list)
    for index, img in enumerate(resized):
        for window in sliding_windows(img.shape[1], img.shape[2], protocol.crop, protocol.stride):
            jobs[window.size].append((index, window))

    text = queries.embeddings.float()
    for (height, width), entries in jobs.items():
        grid = (height // patch_size[0], width // patch_size[1])
        for start in range(0, len(entries), batch_size):
            chunk = entries[start:start + batch_size]
            crops = torch.stack([resized[i][:, w.top:w.bottom, w.left:w.right] for i, w in chunk])
            with autocast_context(device, dtype):
                if aux_sink is None:
                    features = features_fn(crops)
                else:
                    features, aux = features_fn(crops, return_aux=True)
                    aux_sink(aux)
            features = F.normalize(features.float(), dim=-1)
            logits = protocol.logit_scale * features @ text.T  # (b, N, Q)
            logits = logits.transpose(1, 2).reshape(len(chunk), num_queries, *grid)
            logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
            for (i, w), window_logits in zip(chunk, logits):
                sums[i][:, w.top:w.bottom, w.left:w.right] += window_logits
                counts[i][:, w.top:w.bottom, w.left:w.right] += 1

    outputs = []
    for image, total, count in zip(images, sums, counts):
        averaged = (total / count)[None]
        outputs.append(
            F.interpolate(averaged, size=image.shape[:2], mode="bilinear", align_corners=False, antialias=False)[0]
        )
    return outputs


def class_probabilities(logits: torch.Tensor, queries: QueryEmbeddings) -> torch.Tensor:
    """Softmax over all queries, then per class the max over its synonyms: (Q, H, W) -> (C, H, W)."""
    probs = logits.softmax(dim=0)
    if probs.shape[0] == queries.num_classes:
        return probs
    index = queries.query_to_class.view(-1, 1, 1).expand_as(probs)
    out = torch.zeros(queries.num_classes, *probs.shape[1:], device=probs.device, dtype=probs.dtype)
    return out.scatter_reduce_(0, index, probs, reduce="amax", include_self=False)


def postprocess(class_probs: torch.Tensor, prob_thd: float, area_thd: float) -> torch.Tensor:
    """(C, H, W) class probabilities -> (H, W) int64 labels with the protocol's background rules."""
    if area_thd > 0:
        argmax = class_probs.argmax(dim=0)
        foreground = argmax[argmax != 0]
        area = torch.bincount(foreground, minlength=class_probs.shape[0])
        too_small = area <= area_thd * foreground.numel()
        too_small[0] = False
        class_probs = class_probs.clone()
        class_probs[too_small] = 0
    best, labels = class_probs.max(dim=0)
    if prob_thd > 0:
        labels[best < prob_thd] = 0
    return labels
