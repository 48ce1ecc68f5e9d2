"""Loading vision foundation models (DINO, DINOv2) through timm: a pretrained tag, a local file in the release's
or timm's key format, or random weights (tests). Mirrors the CLIP loader: no unpickling of code, checksums,
every tensor accounted for, errors that name the file and the key."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional

import torch

from ..config.schema import VFMConfig
from ..errors import WeightsError
from ..models.vfm import VFMTower
from .loading import check_keys, read_state_dict, refuse_non_finite, verify_checksum


def load_vfm(cfg: VFMConfig, seed: int = 0) -> Optional[VFMTower]:
    """The configured VFM in float32 eval mode, or None for vfm=none (random weights drawn from `seed`)."""
    if not cfg.enabled:
        return None
    import timm

    if cfg.model not in timm.list_models():
        raise WeightsError(f"vfm.model={cfg.model!r} is not a timm architecture (e.g. vit_base_patch8_224, "
                           "vit_base_patch14_reg4_dinov2)")
    kwargs = dict(num_classes=0, **cfg.arch.kwargs())
    if cfg.checkpoint:
        vit, source = _from_checkpoint(cfg, kwargs)
    elif cfg.pretrained:
        vit, source = _from_pretrained_tag(cfg, kwargs), f"timm:{cfg.model}.{cfg.pretrained}"
    else:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            vit, source = _create(cfg, kwargs), "random-init"
    refuse_non_finite(vit, f"vfm {cfg.name!r}", source)
    tower = VFMTower(vit.float().eval(), cfg.name, cfg.mean, cfg.std, cfg.pos_offset, cfg.pos_antialias)
    tower.source = source
    return tower.eval()


def _create(cfg: VFMConfig, kwargs: Dict, **extra):
    import timm

    try:
        return timm.create_model(cfg.model, **kwargs, **extra)
    except TypeError as exc:
        raise WeightsError(f"vfm.arch={cfg.arch.kwargs()!r} is not accepted by timm's {cfg.model!r}: {exc}") from exc


def _from_pretrained_tag(cfg: VFMConfig, kwargs: Dict):
    import timm

    name = f"{cfg.model}.{cfg.pretrained}"
    if name not in timm.list_pretrained(f"{cfg.model}.*"):
        known = ", ".join(n.split(".", 1)[1] for n in timm.list_pretrained(f"{cfg.model}.*")) or "none"
        raise WeightsError(f"vfm.pretrained={cfg.pretrained!r} is not a timm tag of {cfg.model!r} (known: {known}); "
                           "for a local file set vfm.checkpoint=/path/to/weights")
    try:
        return timm.create_model(name, pretrained=True, cache_dir=cfg.weights_cache_dir, **kwargs)
    except Exception as exc:  # download or cache failures
        raise WeightsError(
            f"could not load the VFM weights {name!r} ({type(exc).__name__}: {exc}). To provide them offline: on "
            f"a machine with internet run `python -c \"import timm; timm.create_model('{name}', pretrained=True)\"` "
            "and copy the Hugging Face cache here, or download the release's checkpoint and pass "
            "vfm.checkpoint=/path/to/file"
        ) from exc


def _from_checkpoint(cfg: VFMConfig, kwargs: Dict):
    from timm.models.vision_transformer import checkpoint_filter_fn

    path = Path(cfg.checkpoint).expanduser()
    verify_checksum(path, cfg.checkpoint_sha256, "vfm.checkpoint_sha256")
    state = read_state_dict(path)
    vit = _create(cfg, kwargs)
    try:
        state = checkpoint_filter_fn(dict(state), vit)  # the release's key format -> timm's
    except Exception as exc:
        raise WeightsError(f"VFM checkpoint {path} could not be converted to timm's {cfg.model!r}: "
                           f"{type(exc).__name__}: {exc}") from exc
    expected = vit.state_dict()
    if not any(k.startswith("head.") for k in expected):  # the features are taken before any head
        state = {k: v for k, v in state.items() if not k.startswith("head.")}
    check_keys(path, cfg.model, state, expected,
               f" with vfm.arch={cfg.arch.kwargs()} (set vfm.model / vfm.arch to the checkpoint's architecture)")
    vit.load_state_dict(state, strict=True)
    return vit, f"file:{path}" + (f"#sha256={cfg.checkpoint_sha256.lower()}" if cfg.checkpoint_sha256 else "")
