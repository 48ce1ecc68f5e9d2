"""The embedded demo behind ``make demo``: a synthetic segmentation benchmark in the PASCAL VOC
layout and a small CLIP (``sfp-demo-clip``, NOT OpenAI's CLIP) that the project trained with the
plain CLIP loss on the same synthetic world and ships in ``sfp/assets/demo/``.

``python -m sfp.demo prepare`` (or :func:`prepare`) writes the benchmark under ``{cache_dir}/demo``
and checks the shipped weights; ``experiments/train_demo_clip.py`` reproduces the weights.
"""
from sfp.demo.assets import DEMO_VERSION, DemoPaths, demo_paths, prepare

__all__ = ["DEMO_VERSION", "DemoPaths", "demo_paths", "prepare"]
