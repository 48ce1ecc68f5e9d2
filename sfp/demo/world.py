"""The demo's image-caption world: synthetic scenes (:mod:`sfp.demo.scenes`) and captions naming what they show.

A caption names the visible object classes in random order, each by a random synonym of
``sfp/data/class_names/demo.txt``, inside one of the 80 OpenAI ImageNet prompt templates, and
(optionally) the background with its colour word and a background synonym, e.g.
``"a photo of the star and sphere on a green wall."``. Scenes without objects are captioned with
the background alone (``"a bad photo of a grey floor."``). Captions are the only supervision:
the model never sees a label map.
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np

from sfp.demo import scenes
from sfp.models.templates import get_templates

#: the template set captions are written with (format strings with one ``{}``)
CAPTION_TEMPLATES = "imagenet80"


def templates() -> List[str]:
    """The 80 OpenAI ImageNet templates, as the framework's prompt sets hold them."""
    return get_templates(CAPTION_TEMPLATES)


def visible_classes(labels: np.ndarray, min_pixels: int) -> List[int]:
    """Foreground classes covering at least ``min_pixels`` pixels of a label map, in index order."""
    counts = np.bincount(labels.ravel(), minlength=scenes.NUM_CLASSES)
    return [c for c in range(1, scenes.NUM_CLASSES) if counts[c] >= min_pixels]


#: (upper hue bound, name) for the background's mean colour; hues wrap around at 1.0
HUE_NAMES = ((0.04, "red"), (0.11, "orange"), (0.19, "yellow"), (0.45, "green"), (0.70, "blue"),
             (0.84, "purple"), (0.93, "pink"), (1.01, "red"))
COLOUR_WORDS = ("grey",) + tuple(dict.fromkeys(name for _, name in HUE_NAMES))


def background_colour(image: np.ndarray, labels: np.ndarray) -> str:
    """A colour word for the mean colour of the background pixels (grey when nearly unsaturated)."""
    import colorsys

    pixels = image[labels == 0]
    if len(pixels) == 0:
        return ""
    r, g, b = pixels.reshape(-1, 3).mean(0) / 255.0
    hue, sat, _ = colorsys.rgb_to_hsv(r, g, b)
    if sat < 0.12:
        return "grey"
    return next(name for bound, name in HUE_NAMES if hue < bound)


def caption(classes: Sequence[int], synonyms: Sequence[Sequence[str]], rng: np.random.Generator,
            tmpl: Sequence[str], background: str = "") -> str:
    """One caption of a scene showing ``classes`` (empty: a background-only scene).

    With ``background`` (a colour word), the background is described too: "... on a green wall".
    """
    order = list(classes)
    rng.shuffle(order)
    names = [synonyms[c][int(rng.integers(len(synonyms[c])))] for c in order]
    scene = " and ".join(names)
    if background or not names:
        place = synonyms[0][int(rng.integers(len(synonyms[0])))]
        place = f"{background} {place}" if background else place
        scene = f"{scene} on a {place}" if names else place
    return tmpl[int(rng.integers(len(tmpl)))].format(scene)


def vocabulary_corpus(synonyms: Sequence[Sequence[str]], prompt_sets: Sequence[Sequence[str]] = ()) -> List[str]:
    """Every text the demo model is trained or evaluated with, for its reduced BPE vocabulary.

    Captions join class names with "and" inside the 80 templates; ``prompt_sets`` adds the
    framework's prompt template sets (format strings with one ``{}``) filled with every synonym.
    """
    words = [w for syn in synonyms for w in syn]
    corpus = [t.format(" and ".join(words) + " on a " + " ".join(COLOUR_WORDS)) for t in templates()]
    for prompt_set in prompt_sets:
        corpus += [p.format(w) for p in prompt_set for w in words]
    return corpus
