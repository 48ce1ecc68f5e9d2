"""sfp: an ablation framework for training-free open-vocabulary semantic segmentation with CLIP.

The library works without Hydra's entry point:

    import sfp
    cfg = sfp.compose(["backbone=vit_b16", "method=maskclip", "datasets=[voc21]"])
    model = sfp.build_model(cfg)                   # model.dense_features(crops) -> (B, N, D)
    labels = sfp.Segmenter(cfg).predict(image)     # (H, W, 3) uint8 -> (H, W) int64
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["compose", "build_model", "Segmenter", "collect_results", "__version__"]


def __getattr__(name):
    # Lazy, so `import sfp` stays cheap and Hydra is imported only by compose().
    if name == "compose":
        from .config.compose import compose
        return compose
    if name == "build_model":
        from .models.build import build_model
        return build_model
    if name == "Segmenter":
        from .engine.segmenter import Segmenter
        return Segmenter
    if name == "collect_results":
        from .tracking.results_store import collect_results
        return collect_results
    raise AttributeError(f"module 'sfp' has no attribute {name!r}")
