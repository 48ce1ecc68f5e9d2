"""Dense sliding-window inference: windows of several images batched through the model together."""
from __future__ import annotations

from collections import defaultdict
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..config.protocol import Protocol
from ..errors import NumericalError
from ..models.text import QueryEmbeddings
from .pamr import pamr
from .preprocess import normalize, rescaled_size, resize_image
from .windows import sliding_windows

# dense_features: (B, 3, h, w) -> (B, N, D), or ((B, N, D), aux) with return_aux=True
FeatureFn = Callable[..., Any]
AuxSink = Callable[[Dict[str, Any]], None]


def autocast_context(device: torch.device, dtype: torch.dtype):
    if dtype == torch.float32:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass
class LogitHead:
    """One variant's view of a shared forward pass: which feature output it reads (`slot`), its text queries
    and protocol (logit scale, PAMR; the window geometry is shared), and where its aux outputs go."""

    queries: QueryEmbeddings
    protocol: Protocol
    slot: int = 0
    aux_sink: Optional[AuxSink] = None
    check_finite: bool = True
    scores: bool = False  # the slot holds per-query scores (averaged as they are), not features
    patch_size: Optional[Tuple[int, int]] = None  # pixels per output token (None: the pass's patch size)


# crops (B, 3, h, w) -> one (features (B, N, D), aux or None) per slot
SharedFeatureFn = Callable[[torch.Tensor], Sequence[Tuple[torch.Tensor, Optional[Dict[str, Any]]]]]


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
    names: Optional[Sequence[str]] = None,
    check_finite: bool = True,
    scores: bool = False,
) -> List[torch.Tensor]:
    """Per image, (Q, H, W) query logits (scaled cosine similarities) at the image's original size; with
    `scores`, the method's own per-query scores averaged over windows the same way.

    aux_sink, when given, receives the method's auxiliary outputs of every forward pass (e.g. statistics).
    With check_finite, non-finite features or logits raise NumericalError naming the stage and the images
    (`names`, default "image <index>")."""
    if aux_sink is None:
        shared = lambda crops: [(features_fn(crops), None)]  # noqa: E731
    else:
        shared = lambda crops: [features_fn(crops, return_aux=True)]  # noqa: E731
    [result] = shared_window_logits(shared, images, [LogitHead(queries, protocol, 0, aux_sink, check_finite, scores)],
                                    patch_size, batch_size, device, dtype, names)
    if isinstance(result, BaseException):
        raise result
    return result


@torch.no_grad()
def shared_window_logits(
    features_fn: SharedFeatureFn,
    images: Sequence[np.ndarray],
    heads: Sequence[LogitHead],
    patch_size: Tuple[int, int],
    batch_size: int,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
    names: Optional[Sequence[str]] = None,
) -> List[Union[List[torch.Tensor], NumericalError]]:
    """`sliding_window_logits` for several variants at once: each image is resized and cut into windows once,
    `features_fn` runs once per batch of windows, and each head turns its slot's features into its own logits.

    Returns, per head, its per-image logits, or the NumericalError that stopped it (the other heads go on;
    when every head has stopped, so does the pass). Each head's logits are those of a separate call."""
    names = list(names) if names is not None else [f"image {i}" for i in range(len(images))]
    protocol = heads[0].protocol
    geometry = ("short_side", "max_long_side", "crop", "stride")
    for head in heads[1:]:
        differing = [g for g in geometry if getattr(head.protocol, g) != getattr(protocol, g)]
        if differing:
            raise ValueError(f"heads of one pass must share the window geometry; {differing} differ")
    resized = []
    for image in images:
        size = rescaled_size(image.shape[0], image.shape[1], protocol.short_side, protocol.max_long_side)
        resized.append(normalize(resize_image(image, size, device=device)))

    # The resized images lie side by side in one flat pixel buffer. A window is a block of flat indices
    # into it, so the crops of a whole batch are cut with one gather and their logits summed back with one
    # index_add: no per-window tensor work in Python.
    sizes = [(img.shape[1], img.shape[2]) for img in resized]
    offsets = np.cumsum([0] + [h * w for h, w in sizes])
    pixels = torch.cat([img.reshape(3, -1) for img in resized], dim=1)
    # Queries innermost: each window pixel adds one contiguous row (a far faster index_add than a column).
    sums = [torch.zeros(int(offsets[-1]), head.queries.embeddings.shape[0], device=device) for head in heads]
    counts = torch.zeros(int(offsets[-1]), device=device)
    texts = [head.queries.embeddings.float() for head in heads]
    failed: Dict[int, NumericalError] = {}

    # Windows of equal size (all of them, unless an image is smaller than the crop) share forward passes.
    groups: Dict[Tuple[int, int], List[Tuple[int, int, int, int]]] = defaultdict(list)
    for index, (height, width) in enumerate(sizes):
        for window in sliding_windows(height, width, protocol.crop, protocol.stride):
            groups[window.size].append((int(offsets[index]), width, window.top, window.left))

    for (height, width), placements in groups.items():
        index = _window_indices(placements, height, width, device)  # (n, h * w)
        counts.index_add_(0, index.flatten(), torch.ones(index.numel(), device=device))
        grids = [(height // (head.patch_size or patch_size)[0], width // (head.patch_size or patch_size)[1])
                 for head in heads]
        for start in range(0, len(placements), batch_size):
            if len(failed) == len(heads):
                break
            chunk = index[start:start + batch_size]
            crops = pixels[:, chunk.flatten()].view(3, len(chunk), height, width).transpose(0, 1)
            with autocast_context(device, dtype):
                outputs = features_fn(crops)
            for h, head in enumerate(heads):
                if h in failed:
                    continue
                features, aux = outputs[head.slot]
                if head.aux_sink is not None:
                    head.aux_sink(aux)
                if head.check_finite and not torch.isfinite(features).all():
                    owners = sorted({int(np.searchsorted(offsets, int(o), side="right")) - 1 for o in chunk[:, 0]})
                    failed[h] = NumericalError(f"non-finite dense features (NaN or inf) from the method, in "
                                               f"windows of {', '.join(names[i] for i in owners)}")
                    continue
                _add_window_logits(sums[h], features, None if head.scores else texts[h], head.protocol.logit_scale,
                                   chunk, grids[h], (height, width))

    results: List[Union[List[torch.Tensor], NumericalError]] = []
    for h, head in enumerate(heads):
        if h in failed:
            results.append(failed[h])
            continue
        try:
            results.append(_image_logits(sums[h] / counts[:, None], images, resized, sizes, offsets, head, names))
        except NumericalError as exc:
            results.append(exc)
    return results


def _add_window_logits(sums: torch.Tensor, features: torch.Tensor, text: Optional[torch.Tensor],
                       logit_scale: float, chunk: torch.Tensor, grid: Tuple[int, int], size: Tuple[int, int]) -> None:
    """Window logits (features against `text`), or the method's scores as they are (`text` None)."""
    if text is None:
        logits = features.float()  # (b, N, Q)
    else:
        logits = logit_scale * F.normalize(features.float(), dim=-1) @ text.T  # (b, N, Q)
    num_queries = logits.shape[-1]
    # (b, Q, gh, gw) in channels-last memory: upsampled without a copy, and the result's rows of Q
    # values are the index_add rows.
    logits = logits.view(len(chunk), *grid, num_queries).permute(0, 3, 1, 2)
    logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    sums.index_add_(0, chunk.flatten(), logits.permute(0, 2, 3, 1).reshape(-1, num_queries))


def _image_logits(averaged: torch.Tensor, images, resized, sizes, offsets, head: LogitHead,
                  names: Sequence[str]) -> List[torch.Tensor]:
    protocol, num_queries = head.protocol, averaged.shape[1]
    outputs = []
    for image, resized_image, (height, width), offset in zip(images, resized, sizes, offsets):
        # (1, Q, h, w) in channels-last memory; later per-pixel reductions over Q read contiguous rows.
        logits = averaged[offset:offset + height * width].view(1, height, width, num_queries).permute(0, 3, 1, 2)
        if protocol.pamr_steps:
            logits = pamr(resized_image[None], logits, protocol.pamr_steps, protocol.pamr_dilations)
        if head.check_finite and not torch.isfinite(logits).all():
            raise NumericalError(f"non-finite logits (NaN or inf) for {names[len(outputs)]}")
        outputs.append(
            F.interpolate(logits, size=image.shape[:2], mode="bilinear", align_corners=False, antialias=False)[0]
        )
    return outputs


def _window_indices(placements: List[Tuple[int, int, int, int]], height: int, width: int,
                    device: torch.device) -> torch.Tensor:
    """Flat buffer indices of windows given as (image offset, image width, top, left): (n, height * width)."""
    offset, image_width, top, left = (torch.tensor(column, device=device).view(-1, 1, 1)
                                      for column in zip(*placements))
    rows = torch.arange(height, device=device).view(1, -1, 1)
    cols = torch.arange(width, device=device).view(1, 1, -1)
    return (offset + (top + rows) * image_width + left + cols).view(len(placements), -1)


def class_probabilities(logits: torch.Tensor, queries: QueryEmbeddings, scores: bool = False) -> torch.Tensor:
    """Softmax over all queries (scores: taken as they are), then per class the max over its synonyms:
    (Q, H, W) -> (C, H, W).

    Computed along the last dimension of the (H, W, Q) view, which is contiguous for the engine's
    channels-last logits; any layout gives the same values."""
    probs = logits.movedim(0, -1) if scores else logits.movedim(0, -1).softmax(dim=-1)
    if probs.shape[-1] == queries.num_classes:
        return probs.movedim(-1, 0)
    index = queries.query_to_class.expand_as(probs)
    out = torch.zeros(*probs.shape[:-1], queries.num_classes, device=probs.device, dtype=probs.dtype)
    return out.scatter_reduce_(-1, index, probs, reduce="amax", include_self=False).movedim(-1, 0)


def postprocess(class_probs: torch.Tensor, prob_thd: float, area_thd: float) -> torch.Tensor:
    """(C, H, W) class probabilities -> (H, W) int64 labels with the protocol's background rules."""
    best, labels = class_probs.max(dim=0)  # ties: the first class (as argmax); max is the faster kernel
    if area_thd > 0:
        foreground = labels[labels != 0]
        area = torch.bincount(foreground, minlength=class_probs.shape[0])
        too_small = area <= area_thd * foreground.numel()
        too_small[0] = False
        best, labels = class_probs.masked_fill(too_small.view(-1, 1, 1), 0).max(dim=0)
    if prob_thd > 0:
        labels[best < prob_thd] = 0
    return labels
