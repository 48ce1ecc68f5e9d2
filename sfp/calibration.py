"""The register-neuron search of test-time registers on its calibration images, cached on disk.

The cache file (paths.cache_dir/registers/<key>.npz) holds every neuron's score, so `top_k` and
`highest_layer` can change without a new search; its key hashes the image tower's weights, the calibration
images' contents and the search settings that change the scores.
"""
from __future__ import annotations

import hashlib
import logging
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import torch

from .config.schema import RunConfig
from .data import build_dataset, file_sha256
from .data.dataset import load_image
from .errors import ConfigError, DataError
from .models.registers import RegisterNeurons, TestTimeRegisters, neuron_scores, rank_neurons
from .models.vit import CLIP_MEAN, CLIP_STD, VisionTower

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def default_highest_layer(depth: int) -> int:
    """The release's 5 for 12 blocks (the first half of the depth); the same fraction for other depths."""
    return max(depth // 2 - 1, 0)


def build_registers(run: RunConfig, tower: VisionTower) -> Tuple[Optional[TestTimeRegisters], Dict[str, Any]]:
    """The configured test-time registers (None when off) and their report for the results record."""
    cfg = run.registers
    if not cfg.enabled:
        return None, {}
    highest = cfg.highest_layer if cfg.highest_layer is not None else default_highest_layer(tower.depth)
    hidden = tower.blocks[0].mlp.c_fc.out_features
    if cfg.neurons is not None:
        bad = [pair for pair in cfg.neurons if pair[0] >= tower.depth or pair[1] >= hidden]
        if bad:
            raise ConfigError(f"config error: registers.neurons={bad[0]} is out of range: expected [block, neuron] "
                              f"with block < {tower.depth} and neuron < {hidden} for this backbone")
        neurons = RegisterNeurons(tuple(tuple(pair) for pair in cfg.neurons))
        report: Dict[str, Any] = {"source": "registers.neurons"}
    else:
        if not -tower.depth <= cfg.detect_layer < tower.depth:
            raise ConfigError(f"config error: registers.detect_layer={cfg.detect_layer} is out of range for this "
                              f"{tower.depth}-block backbone")
        scores, used, report = _search(run, tower)
        neurons = rank_neurons(scores, used, min(highest, tower.depth - 1), cfg.top_k)
        if not neurons.neurons:
            log.warning("test-time registers: no calibration image has a token with output norm > "
                        "registers.norm_threshold=%g, so no register neurons were found (only the extra token is "
                        "added); lower the threshold for this backbone", cfg.norm_threshold)
    report.update(neurons.as_dict(), highest_layer=highest, count=cfg.count)
    key = ("registers", neurons.neurons, cfg.count)
    return TestTimeRegisters(neurons, cfg.count, key), report


def _search(run: RunConfig, tower: VisionTower) -> Tuple[torch.Tensor, int, Dict[str, Any]]:
    cfg = run.registers
    files, source = calibration_files(run)
    size = cfg.calibration.size or tower.native_grid[0] * tower.patch_size[0]
    digest = hashlib.sha256()
    for part in (visual_fingerprint(tower), str(size), str(cfg.detect_layer), repr(cfg.norm_threshold),
                 repr(cfg.sparsity), repr(cfg.sparsity_fraction), repr(cfg.sparsity_activation)):
        digest.update(part.encode())
    images_digest = hashlib.sha256("\n".join(file_sha256(path) for path in files).encode()).hexdigest()
    digest.update(images_digest.encode())
    key = digest.hexdigest()[:32]
    report: Dict[str, Any] = {"source": "search", "calibration": {
        "source": source, "num_images": len(files), "size": size, "images_sha256": images_digest}}
    cache = Path(run.paths.cache_dir) / "registers" / f"{key}.npz" if cfg.cache and run.paths.cache_dir else None
    if cache is not None and cache.is_file():
        with np.load(cache) as stored:
            report.update(cache_file=str(cache), from_cache=True)
            return torch.from_numpy(stored["scores"]), int(stored["used"]), report
    device = next(tower.parameters()).device
    images = (load_calibration_image(path, size).to(device) for path in files)
    scores, used = neuron_scores(tower, images, cfg.detect_layer, cfg.norm_threshold, cfg.sparsity,
                                 cfg.sparsity_fraction, cfg.sparsity_activation)
    scores = scores.cpu()
    report.update(from_cache=False)
    if cache is not None:
        report["cache_file"] = str(cache) if _save(cache, scores, used) else None
    return scores, used, report


def calibration_files(run: RunConfig) -> Tuple[List[Path], str]:
    """The calibration images (a seeded sample of `num_images`) and where they come from."""
    cfg = run.registers.calibration
    if cfg.folder:
        folder = Path(cfg.folder).expanduser()
        if not folder.is_dir():
            raise DataError(f"registers.calibration.folder={cfg.folder}: not a folder")
        files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        source = str(folder)
        if not files:
            raise DataError(f"registers.calibration.folder={cfg.folder}: no images "
                            f"({', '.join(sorted(IMAGE_SUFFIXES))})")
    else:
        key = next(iter(run.datasets))
        files = [item.image_path for item in build_dataset(run.datasets[key], key=key).items]
        source = f"dataset:{key}"
    if len(files) > cfg.num_images:
        files = sorted(random.Random(cfg.seed).sample(files, cfg.num_images))
    return files, source


def load_calibration_image(path: Path, size: int) -> torch.Tensor:
    """(1, 3, size, size): short side resized to `size` (bicubic), centre crop, CLIP normalisation."""
    from PIL import Image
    from torchvision.transforms import functional as TF

    image = Image.fromarray(load_image(path))
    image = TF.center_crop(TF.resize(image, size, interpolation=TF.InterpolationMode.BICUBIC), [size, size])
    tensor = TF.normalize(TF.to_tensor(image), CLIP_MEAN, CLIP_STD)
    return tensor.unsqueeze(0)


def visual_fingerprint(tower: VisionTower) -> str:
    digest = hashlib.sha256()
    for name, tensor in sorted(tower.visual.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _save(path: Path, scores: torch.Tensor, used: int) -> bool:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
        with os.fdopen(fd, "wb") as handle:
            np.savez(handle, scores=scores.numpy(), used=np.int64(used))
        os.replace(tmp, path)
        return True
    except OSError as exc:
        log.warning("could not cache the register-neuron scores in %s: %s", path, exc)
        return False

