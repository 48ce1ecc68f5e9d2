"""The embedded demo behind ``make demo``: a synthetic segmentation benchmark in the PASCAL VOC
layout and a tiny CLIP-architecture model (``sfp-demo-vit``, NOT a real CLIP) trained on it.

``python -m sfp.demo prepare`` (or :func:`prepare`) creates both under ``{cache_dir}/demo``.
"""
from sfp.demo.assets import DEMO_VERSION, DemoPaths, demo_paths, prepare

__all__ = ["DEMO_VERSION", "DemoPaths", "demo_paths", "prepare"]
