"""Reference points for the demo table: what predicting all background scores, and the best any
patch-level method could score (the patch-grid oracle).

Both read the benchmark through the same dataset loader and metric as the runner:

* all background: every pixel predicted as class 0;
* patch-grid oracle: the image is resized as the protocol does (short side ``short_side``) and cut
  into ``patch`` x ``patch`` cells; each cell is labelled with its most frequent ground-truth
  class (ignore pixels aside) and the map is resized back with nearest neighbours. A method that
  assigns one class per patch token cannot, at best, do better than this (up to the smoothing of
  bilinear upsampling).
"""
from __future__ import annotations

from typing import Dict

import numpy as np
import torch
import torch.nn.functional as F

from sfp.config.schema import RunConfig
from sfp.data.dataset import IGNORE_INDEX, build_dataset
from sfp.engine.preprocess import rescaled_size
from sfp.metrics import IoUAccumulator


def patch_grid_oracle(label: np.ndarray, num_classes: int, short_side: int, max_long_side: int,
                      patch: int) -> np.ndarray:
    """The oracle's (H, W) prediction for one ground-truth map."""
    h, w = label.shape
    rh, rw = rescaled_size(h, w, short_side, max_long_side)
    lab = torch.from_numpy(label.astype(np.int64))
    resized = F.interpolate(lab[None, None].float(), size=(rh, rw), mode="nearest")[0, 0].long()
    gh, gw = -(-rh // patch), -(-rw // patch)
    padded = torch.full((gh * patch, gw * patch), IGNORE_INDEX, dtype=torch.long)
    padded[:rh, :rw] = resized
    cells = padded.view(gh, patch, gw, patch).permute(0, 2, 1, 3).reshape(gh * gw, patch * patch)
    counts = torch.zeros(gh * gw, num_classes + 1, dtype=torch.long)
    counts.scatter_add_(1, cells.clamp(max=num_classes), torch.ones_like(cells))
    majority = counts[:, :num_classes].argmax(1).view(gh, gw)
    grid = majority.repeat_interleave(patch, 0).repeat_interleave(patch, 1)[:rh, :rw]
    back = F.interpolate(grid[None, None].float(), size=(h, w), mode="nearest")[0, 0].long()
    return back.numpy()


def reference_scores(cfg: RunConfig, dataset: str = "demo", patch: int = 16) -> Dict[str, float]:
    """{'all_background': mIoU, 'patch_grid_oracle': mIoU} in percent on ``cfg.datasets[dataset]``."""
    from sfp.config.protocol import effective_protocol

    data = build_dataset(cfg.datasets[dataset], dataset)
    protocol = effective_protocol(cfg, dataset)
    background, oracle = IoUAccumulator(data.num_classes), IoUAccumulator(data.num_classes)
    for i in range(len(data)):
        label = data[i].label
        background.update(np.zeros_like(label, dtype=np.int64), label)
        oracle.update(patch_grid_oracle(label, data.num_classes, protocol.short_side,
                                        protocol.max_long_side, patch), label)
    return {"all_background": background.compute().miou, "patch_grid_oracle": oracle.compute().miou}
