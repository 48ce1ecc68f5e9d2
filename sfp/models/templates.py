"""Prompt template sets, by name. A template is a format string with one `{}` for the class word."""
from __future__ import annotations

import hashlib
from typing import Dict, List

import open_clip

from ..registry import Registry

TEMPLATE_SETS: Registry[List[str]] = Registry("template set")

# The 80 OpenAI ImageNet templates, the protocol default.
TEMPLATE_SETS.register("imagenet80")([t("{}") for t in open_clip.OPENAI_IMAGENET_TEMPLATES])

# The 15 templates of the December 2025 SFP code state.
TEMPLATE_SETS.register("sfp15")([
    "a clean origami {}.",
    "a photo of a {}.",
    "This is a photo of a {}.",
    "This is a photo of a small {}.",
    "This is a photo of a medium {}.",
    "This is a photo of a large {}.",
    "There is a {} in the scene.",
    "There is a small {} in the scene.",
    "There is a medium {} in the scene.",
    "There is a large {} in the scene.",
    "There is the {} in the scene.",
    "a photo of a {} in the scene.",
    "a photo of a small {}.",
    "a photo of a medium {}.",
    "a photo of a large {}.",
])

# One plain template, for quick experiments.
TEMPLATE_SETS.register("single")(["a photo of a {}."])


def get_templates(name: str) -> List[str]:
    return list(TEMPLATE_SETS.get(name))


def template_record(name: str) -> Dict[str, object]:
    """What a results record says about a template set: its name, size and the sha256 of its texts (the
    texts are code, so a changed set under an old name is still told apart)."""
    texts = get_templates(name)
    return {"name": name, "count": len(texts), "sha256": hashlib.sha256("\n".join(texts).encode()).hexdigest()}
