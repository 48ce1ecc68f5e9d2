"""sfp: an ablation framework for training-free open-vocabulary semantic segmentation with CLIP.

The library works without Hydra's entry point:

    import sfp
    cfg = sfp.compose(["backbone=vit_b16", "method=sfp", "datasets=[voc21]"])  # typed settings
    model = sfp.build_model(cfg)                   # model.dense_features(crops) -> (B, N, D)
    labels = sfp.Segmenter(cfg).predict(image)     # (H, W, 3) uint8 -> (H, W) int64
    record = sfp.run_job(cfg, "outputs/my-run")    # every dataset, results.json (and W&B)
    results = sfp.run_jobs([cfg_a, cfg_b], ["outputs/a", "outputs/b"])  # variants in one shared pass
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["compose", "compose_config", "to_run_config", "build_model", "Segmenter", "run_job",
           "run_jobs", "collect_results", "__version__"]

# Lazy, so `import sfp` stays cheap and Hydra and torch are imported only when used.
_EXPORTS = {
    "compose": ("assembly", "compose"),
    "compose_config": ("assembly", "compose_config"),
    "to_run_config": ("assembly", "to_run_config"),
    "build_model": ("assembly", "build_model"),
    "Segmenter": ("segmenter", "Segmenter"),
    "run_job": ("runner", "run_job"),
    "run_jobs": ("runner", "run_jobs"),
    "collect_results": ("tracking.results_store", "collect_results"),
}


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'sfp' has no attribute {name!r}")
    import importlib

    module, attribute = _EXPORTS[name]
    return getattr(importlib.import_module(f".{module}", __name__), attribute)
