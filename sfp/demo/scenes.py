"""Deterministic synthetic scenes for the embedded demo benchmark.

A scene is an RGB image (uint8, H x W x 3) and a label map (uint8, H x W) of class indices.
Each scene shows 1 to 4 objects on a textured background; objects may overlap (painted
back to front, so the label map records the visible object). Every foreground class has its
own shape, colour range and texture, with random size, position, rotation, colour jitter
and shading, so that recognising a class needs both colour and local shape/texture cues:

    0 background    smooth two-colour gradient in muted mid tones + low-frequency blotches + noise
    1 ball          red/orange disk with a radial highlight
    2 crate         brown rotated square with plank stripes and a dark frame
    3 star          yellow/gold five-pointed star
    4 leaf          green lens-shaped leaf with a lighter central vein
    5 checkerboard  rotated square of black and white cells
    6 cloud         white/light-grey union of 3-5 overlapping disks
    7 heart         pink/magenta heart
    8 ring          blue thick annulus (background visible through the hole)

The same (seed, index) always gives byte-identical arrays: every random draw comes from
``numpy.random.default_rng([seed, index])`` and the rendering is plain numpy.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

from sfp.data.sample import IGNORE_INDEX

CLASS_FILE = Path(__file__).resolve().parent.parent / "data" / "class_names" / "demo.txt"

#: primary name of each class, in label-index order (must match the first synonym of each
#: line of ``sfp/data/class_names/demo.txt``)
CLASSES: Tuple[str, ...] = (
    "background",
    "ball",
    "crate",
    "star",
    "leaf",
    "checkerboard",
    "cloud",
    "heart",
    "ring",
)
NUM_CLASSES = len(CLASSES)


def load_class_synonyms(path: str | Path = CLASS_FILE) -> List[List[str]]:
    """Parse a class-name file: one class per line, synonyms comma-separated."""
    classes = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        names = [n.strip() for n in line.split(",") if n.strip()]
        classes.append(names)
    return classes


@dataclass(frozen=True)
class SceneSpec:
    """Settings of the scene generator (part of the demo manifest)."""

    height: int = 240
    width: int = 320
    min_objects: int = 1
    max_objects: int = 4
    min_size: float = 0.14  # object radius as a fraction of the short side
    max_size: float = 0.30
    noise: float = 6.0  # std of the per-pixel Gaussian noise (0..255 scale)


# --------------------------------------------------------------------------- helpers


def _hsv_to_rgb(h: float, s: float, v: float) -> np.ndarray:
    """Scalar HSV (all in [0, 1]) -> RGB float array in [0, 255]."""
    i = int(h * 6.0) % 6
    f = h * 6.0 - int(h * 6.0)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    rgb = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return np.array(rgb, dtype=np.float64) * 255.0


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a coarse random grid upsampled bilinearly."""
    gh, gw = cells + 1, int(round(cells * w / h)) + 1
    grid = rng.random((gh, gw))
    ys = np.linspace(0, gh - 1, h)
    xs = np.linspace(0, gw - 1, w)
    y0 = np.clip(np.floor(ys).astype(int), 0, gh - 2)
    x0 = np.clip(np.floor(xs).astype(int), 0, gw - 2)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    a = grid[y0][:, x0]
    b = grid[y0][:, x0 + 1]
    c = grid[y0 + 1][:, x0]
    d = grid[y0 + 1][:, x0 + 1]
    return (a * (1 - fx) + b * fx) * (1 - fy) + (c * (1 - fx) + d * fx) * fy


@dataclass
class _Frame:
    """Local object coordinates: u, v in units of the object radius, rotated."""

    u: np.ndarray
    v: np.ndarray
    rho: np.ndarray
    phi: np.ndarray


def _frame(y0: int, y1: int, x0: int, x1: int, cx: float, cy: float, r: float, theta: float) -> _Frame:
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    dx, dy = (xx + 0.5 - cx) / r, (yy + 0.5 - cy) / r
    c, s = np.cos(theta), np.sin(theta)
    u = c * dx + s * dy
    v = -s * dx + c * dy
    return _Frame(u=u, v=v, rho=np.hypot(u, v), phi=np.arctan2(v, u))


# Each painter returns (mask bool HxW, colour float HxWx3) given the frame and rng.
Painter = Callable[[_Frame, np.random.Generator], Tuple[np.ndarray, np.ndarray]]


def _solid(shape: Tuple[int, int], rgb: np.ndarray) -> np.ndarray:
    return np.broadcast_to(rgb, shape + (3,)).astype(np.float64)


def _paint_ball(f: _Frame, rng: np.random.Generator):
    mask = f.rho <= 1.0
    base = _hsv_to_rgb(rng.uniform(-0.03, 0.07) % 1.0, rng.uniform(0.7, 0.95), rng.uniform(0.75, 0.95))
    hx, hy = rng.uniform(-0.5, -0.2), rng.uniform(-0.5, -0.2)
    d = np.hypot(f.u - hx, f.v - hy)
    shade = np.clip(1.25 - 0.55 * d, 0.45, 1.25)[..., None]
    col = np.clip(_solid(mask.shape, base) * shade, 0, 255)
    return mask, col


def _paint_crate(f: _Frame, rng: np.random.Generator):
    half = 0.8
    mask = np.maximum(np.abs(f.u), np.abs(f.v)) <= half
    base = _hsv_to_rgb(rng.uniform(0.06, 0.1), rng.uniform(0.55, 0.8), rng.uniform(0.5, 0.7))
    planks = rng.integers(4, 7)
    stripe = np.cos(np.pi * planks * (f.v + half) / (2 * half)) ** 8
    frame = np.maximum(np.abs(f.u), np.abs(f.v)) > half * 0.82
    shade = 1.0 - 0.35 * stripe
    shade = np.where(frame, 0.55, shade)[..., None]
    col = _solid(mask.shape, base) * shade
    return mask, col


def _paint_star(f: _Frame, rng: np.random.Generator):
    inner = rng.uniform(0.42, 0.5)
    k = 5.0
    t = np.abs(((f.phi * k / (2 * np.pi)) % 1.0) - 0.5) * 2.0  # 1 at the tips, 0 between
    radius = inner + (1.0 - inner) * t ** 1.3
    mask = f.rho <= radius
    base = _hsv_to_rgb(rng.uniform(0.12, 0.16), rng.uniform(0.75, 1.0), rng.uniform(0.85, 1.0))
    shade = (1.0 - 0.15 * f.rho)[..., None]
    return mask, _solid(mask.shape, base) * shade


def _paint_leaf(f: _Frame, rng: np.random.Generator):
    width = rng.uniform(0.4, 0.55)
    mask = (np.abs(f.u) <= 1.0) & (np.abs(f.v) <= width * (1.0 - f.u**2))
    base = _hsv_to_rgb(rng.uniform(0.24, 0.36), rng.uniform(0.6, 0.9), rng.uniform(0.45, 0.75))
    vein = np.exp(-((f.v / 0.06) ** 2)) + 0.6 * np.exp(-(((f.v - 0.5 * np.abs(f.u + 0.3)) % 0.35) / 0.05) ** 2)
    shade = (1.0 + 0.45 * np.clip(vein, 0, 1))[..., None]
    return mask, np.clip(_solid(mask.shape, base) * shade, 0, 255)


def _paint_checkerboard(f: _Frame, rng: np.random.Generator):
    half = 0.8
    mask = np.maximum(np.abs(f.u), np.abs(f.v)) <= half
    cells = int(rng.integers(3, 6))
    cu = np.floor((f.u + half) / (2 * half) * cells)
    cv = np.floor((f.v + half) / (2 * half) * cells)
    odd = ((cu + cv) % 2).astype(bool)
    dark = rng.uniform(10, 50)
    light = rng.uniform(205, 250)
    val = np.where(odd, dark, light)[..., None]
    return mask, np.broadcast_to(val, mask.shape + (3,)).astype(np.float64)


def _paint_cloud(f: _Frame, rng: np.random.Generator):
    n = int(rng.integers(3, 6))
    mask = np.zeros(f.u.shape, dtype=bool)
    shade = np.zeros(f.u.shape)
    for i in range(n):
        ox = -0.6 + 1.2 * i / max(n - 1, 1) + rng.uniform(-0.1, 0.1)
        oy = rng.uniform(-0.25, 0.15) - 0.2 * (1 - abs(ox))
        rr = rng.uniform(0.35, 0.55)
        d = np.hypot(f.u - ox, f.v - oy) / rr
        mask |= d <= 1.0
        shade = np.maximum(shade, np.clip(1.0 - 0.25 * d, 0, 1))
    grey = rng.uniform(215, 250)
    tint = np.array([grey - rng.uniform(0, 12), grey - rng.uniform(0, 8), grey])
    return mask, _solid(mask.shape, tint) * (0.8 + 0.2 * shade)[..., None]


def _paint_heart(f: _Frame, rng: np.random.Generator):
    x = f.u * 1.25
    y = -(f.v * 1.25) + 0.25
    mask = (x**2 + y**2 - 1.0) ** 3 - x**2 * y**3 <= 0.0
    base = _hsv_to_rgb(rng.uniform(0.88, 0.96), rng.uniform(0.45, 0.75), rng.uniform(0.8, 1.0))
    shade = (1.05 - 0.2 * f.rho)[..., None]
    return mask, np.clip(_solid(mask.shape, base) * shade, 0, 255)


def _paint_ring(f: _Frame, rng: np.random.Generator):
    inner = rng.uniform(0.45, 0.6)
    mask = (f.rho <= 1.0) & (f.rho >= inner)
    base = _hsv_to_rgb(rng.uniform(0.56, 0.66), rng.uniform(0.6, 0.9), rng.uniform(0.6, 0.9))
    mid = (1.0 + inner) / 2
    shade = (1.1 - 0.6 * np.abs(f.rho - mid) / (1.0 - inner))[..., None]
    return mask, np.clip(_solid(mask.shape, base) * shade, 0, 255)


_EXTENT = 1.4

PAINTERS: Dict[int, Painter] = {
    1: _paint_ball,
    2: _paint_crate,
    3: _paint_star,
    4: _paint_leaf,
    5: _paint_checkerboard,
    6: _paint_cloud,
    7: _paint_heart,
    8: _paint_ring,
}


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    c1 = _hsv_to_rgb(rng.uniform(0.0, 1.0), rng.uniform(0.15, 0.45), rng.uniform(0.3, 0.6))
    c2 = _hsv_to_rgb(rng.uniform(0.0, 1.0), rng.uniform(0.15, 0.45), rng.uniform(0.3, 0.6))
    angle = rng.uniform(0, 2 * np.pi)
    t = np.sin(angle) * np.arange(h)[:, None] / h + np.cos(angle) * np.arange(w)[None, :] / w
    t = ((t - t.min()) / max(t.max() - t.min(), 1e-6)).astype(np.float32)[..., None]
    blotch = _smooth_noise(rng, h, w, int(rng.integers(3, 7))).astype(np.float32)[..., None]
    img = (c1.astype(np.float32) * (1 - t) + c2.astype(np.float32) * t) * (0.8 + 0.4 * blotch)
    return img


def render_scene(
    seed: int,
    index: int,
    spec: SceneSpec = SceneSpec(),
    classes: Sequence[int] | None = None,
) -> Tuple[np.ndarray, np.ndarray]:
    """Render scene ``index`` of the stream ``seed``: (image uint8 HxWx3, labels uint8 HxW).

    ``classes`` restricts the foreground classes drawn (default: all of 1..8).
    """
    rng = np.random.default_rng([int(seed), int(index)])
    h, w = spec.height, spec.width
    short = min(h, w)
    img = _background(rng, h, w)
    labels = np.zeros((h, w), dtype=np.uint8)
    pool = list(classes) if classes is not None else list(range(1, NUM_CLASSES))
    n = int(rng.integers(spec.min_objects, spec.max_objects + 1))
    for _ in range(n):
        cls = int(pool[int(rng.integers(0, len(pool)))])
        r = rng.uniform(spec.min_size, spec.max_size) * short
        cx = rng.uniform(0.1 * w, 0.9 * w)
        cy = rng.uniform(0.1 * h, 0.9 * h)
        theta = rng.uniform(0, 2 * np.pi)
        ext = _EXTENT * r  # every painter's shape lies within this radius of the centre
        y0, y1 = max(int(cy - ext), 0), min(int(np.ceil(cy + ext)) + 1, h)
        x0, x1 = max(int(cx - ext), 0), min(int(np.ceil(cx + ext)) + 1, w)
        f = _frame(y0, y1, x0, x1, cx, cy, r, theta)
        mask, col = PAINTERS[cls](f, rng)
        win = img[y0:y1, x0:x1]
        img[y0:y1, x0:x1] = np.where(mask[..., None], col.astype(np.float32), win)
        labels[y0:y1, x0:x1][mask] = cls
    # global photometric jitter + sensor noise
    gain = rng.uniform(0.9, 1.1)
    bias = rng.uniform(-10, 10)
    noise = rng.standard_normal(size=img.shape, dtype=np.float32) * np.float32(spec.noise)
    img = img * np.float32(gain) + np.float32(bias) + noise
    return np.clip(np.rint(img), 0, 255).astype(np.uint8), labels


def ignore_borders(labels: np.ndarray, width: int = 2) -> np.ndarray:
    """VOC-style ground truth: pixels within ``width`` px of an object boundary become 255."""
    lab = labels.astype(np.int16)
    edge = np.zeros(lab.shape, dtype=bool)
    h, w = lab.shape
    for dy in range(-width, width + 1):
        for dx in range(-width, width + 1):
            if dy == 0 and dx == 0:
                continue
            shifted = np.full_like(lab, -1)
            ys = slice(max(dy, 0), h + min(dy, 0))
            yd = slice(max(-dy, 0), h + min(-dy, 0))
            xs = slice(max(dx, 0), w + min(dx, 0))
            xd = slice(max(-dx, 0), w + min(-dx, 0))
            shifted[yd, xd] = lab[ys, xs]
            edge |= (shifted >= 0) & (shifted != lab)
    out = labels.copy()
    out[edge] = IGNORE_INDEX
    return out
