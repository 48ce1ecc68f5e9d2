"""Train the demo CLIP from scratch on the synthetic image-caption world, with open_clip's own model and loss.

The recipe (``TrainSettings``; ``experiments/train_demo_clip.py`` is its command line):

* model: ``open_clip.CLIP`` built from the settings' architecture (a small ViT image tower with a
  class token, a causal text transformer), random init from ``seed``;
* tokenizer: open_clip's ``SimpleTokenizer`` on a reduced BPE file (:mod:`sfp.demo.vocab`) that
  holds the merges the world's texts and the framework's prompt sets need;
* data: ``pool_size`` scenes of :mod:`sfp.demo.scenes` rendered once from their own seed stream
  (never the benchmark's): a fraction background only, a fraction close-ups of one large object,
  the rest 1 to ``max_objects`` objects; each step draws ``batch_size`` of them with a random
  flip/rotation and a fresh random caption naming the visible classes and the background's
  colour (:mod:`sfp.demo.world`). Describing the background matters: without it the background
  patches are never tied to any words, and the dense features send them to whichever object
  class lies nearest;
* loss: ``open_clip.ClipLoss`` (symmetric InfoNCE over the batch, learnable temperature),
  nothing else: no label map is ever used;
* AdamW, linear warm-up then cosine decay, gradient clipping, deterministic algorithms.

Every random draw of step ``t`` comes from ``numpy.random.default_rng([seed, t])``, so a run
resumed from a checkpoint continues exactly as an uninterrupted one (the tests check the bytes).
"""
from __future__ import annotations

import csv
import json
import math
import os
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Callable, Dict, List, Optional

import numpy as np
import torch

from sfp.data.class_names import file_sha256
from sfp.demo import scenes, vocab, world
from sfp.engine.preprocess import CLIP_MEAN, CLIP_STD
#: seed stream of the training scenes (the benchmark's splits use 1 and 2)
TRAIN_SCENE_SEED = 1000
WEIGHTS_NAME = "sfp-demo-clip.safetensors"
BPE_NAME = "sfp-demo-bpe.txt.gz"
LOG_NAME = "train_log.csv"
STATE_NAME = "train_state.pt"
LOG_FIELDS = ("step", "loss", "lr", "logit_scale", "seconds")


@dataclass(frozen=True)
class TrainSettings:
    """The whole recipe; the defaults made the shipped weights."""

    # architecture (open_clip CLIP config)
    embed_dim: int = 128
    image_size: int = 224
    patch_size: int = 16
    vision_layers: int = 4
    vision_width: int = 128
    head_width: int = 32
    text_layers: int = 3
    text_width: int = 128
    context_length: int = 32
    # data
    pool_size: int = 4000
    empty_fraction: float = 0.15  # background-only scenes, captioned with a background synonym
    closeup_fraction: float = 0.4  # one large object filling most of the frame (sizes below)
    closeup_min_size: float = 0.45
    closeup_max_size: float = 0.7
    min_objects: int = 1
    max_objects: int = 3
    min_visible_pixels: int = 100  # a class is named in the caption from this many visible pixels on
    describe_background: bool = True  # captions end with the background's colour: "... on a green wall"
    # optimisation
    steps: int = 1500
    batch_size: int = 64
    lr: float = 7e-4
    weight_decay: float = 0.1
    warmup: int = 50
    grad_clip: float = 1.0
    seed: int = 0
    threads: int = 2
    save_every: int = 100

    def __post_init__(self) -> None:
        def check(ok: bool, name: str, expected: str) -> None:
            if not ok:
                raise ValueError(f"training setting {name}={getattr(self, name)!r}: expected {expected}")

        for name in ("embed_dim", "image_size", "patch_size", "vision_layers", "vision_width", "head_width",
                     "text_layers", "text_width", "context_length", "pool_size", "max_objects", "steps",
                     "batch_size", "save_every", "threads", "min_visible_pixels"):
            check(getattr(self, name) >= 1, name, "an integer >= 1")
        check(self.image_size % self.patch_size == 0, "image_size", f"a multiple of patch_size={self.patch_size}")
        for name in ("vision_width", "text_width"):
            check(getattr(self, name) % self.head_width == 0, name, f"a multiple of head_width={self.head_width}")
        for name in ("empty_fraction", "closeup_fraction"):
            check(0 <= getattr(self, name) <= 1, name, "a fraction in [0, 1]")
        check(self.empty_fraction + self.closeup_fraction <= 1, "closeup_fraction",
              f"at most 1 - empty_fraction = {1 - self.empty_fraction}")
        check(0 < self.closeup_min_size <= self.closeup_max_size, "closeup_min_size",
              f"in (0, closeup_max_size={self.closeup_max_size}]")
        check(1 <= self.min_objects <= self.max_objects, "min_objects", f"in [1, max_objects={self.max_objects}]")
        check(self.batch_size <= self.pool_size, "batch_size", f"at most pool_size={self.pool_size}")
        check(0 <= self.warmup < self.steps, "warmup", f"in [0, steps={self.steps})")
        for name in ("lr", "grad_clip"):
            check(getattr(self, name) > 0, name, "a number > 0")
        check(self.weight_decay >= 0, "weight_decay", "a number >= 0")

    def model_config(self, vocab_size: int) -> Dict:
        return {
            "embed_dim": self.embed_dim,
            "quick_gelu": False,
            "vision_cfg": {"image_size": self.image_size, "layers": self.vision_layers, "width": self.vision_width,
                           "head_width": self.head_width, "patch_size": self.patch_size},
            "text_cfg": {"context_length": self.context_length, "vocab_size": vocab_size, "width": self.text_width,
                         "heads": max(self.text_width // self.head_width, 1), "layers": self.text_layers},
        }


def settings_from_dict(data: Dict) -> TrainSettings:
    known = {f.name for f in fields(TrainSettings)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown training settings: {', '.join(unknown)} (known: {', '.join(sorted(known))})")
    return TrainSettings(**data)


def build_vocabulary(path: str | Path) -> Path:
    """Write the reduced BPE file for the world's texts and the framework's prompt template sets."""
    from sfp.models.templates import TEMPLATE_SETS

    synonyms = scenes.load_class_synonyms()
    sets = [TEMPLATE_SETS.get(name) for name in TEMPLATE_SETS.names()]
    return vocab.write_bpe(vocab.merges_used(world.vocabulary_corpus(synonyms, sets)), path)


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def render_pool(s: TrainSettings):
    """The training scenes: (images uint8 N x S x S x 3, visible classes, background colour word per scene)."""
    size = s.image_size
    spec = scenes.SceneSpec(height=size, width=size, min_objects=s.min_objects, max_objects=s.max_objects)
    empty = scenes.SceneSpec(height=size, width=size, min_objects=0, max_objects=0)
    closeup = scenes.SceneSpec(height=size, width=size, min_objects=1, max_objects=1,
                               min_size=s.closeup_min_size, max_size=s.closeup_max_size)
    kind = np.random.default_rng([s.seed, TRAIN_SCENE_SEED]).random(s.pool_size)
    specs = np.where(kind < s.empty_fraction, 0, np.where(kind < s.empty_fraction + s.closeup_fraction, 1, 2))
    images = np.empty((s.pool_size, size, size, 3), np.uint8)
    visible: List[List[int]] = []
    colours: List[str] = []
    for i in _progress(range(s.pool_size), "rendering scenes"):
        images[i], labels = scenes.render_scene(TRAIN_SCENE_SEED + s.seed, i, (empty, closeup, spec)[specs[i]])
        visible.append(world.visible_classes(labels, s.min_visible_pixels))
        colours.append(world.background_colour(images[i], labels) if s.describe_background else "")
    return images, visible, colours


def _progress(iterable, desc: str, total: Optional[int] = None, initial: int = 0):
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, total=total, initial=initial, dynamic_ncols=True, mininterval=2.0)


def lr_at(s: TrainSettings, step: int) -> float:
    if step < s.warmup:
        return s.lr * (step + 1) / s.warmup
    t = (step - s.warmup) / max(s.steps - s.warmup, 1)
    return s.lr * 0.5 * (1 + math.cos(math.pi * t))


def _optimizer(model: torch.nn.Module, s: TrainSettings) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (decay if p.ndim >= 2 and "embedding" not in name else no_decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": s.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=s.lr, betas=(0.9, 0.98), eps=1e-6,
    )


def _batch(s: TrainSettings, step: int, images: np.ndarray, visible: List[List[int]], colours: List[str],
           synonyms, tmpl):
    rng = np.random.default_rng([s.seed, step])
    idx = rng.choice(len(images), size=s.batch_size, replace=False)
    views = rng.integers(8, size=s.batch_size)  # the 8 flips/rotations of the square
    batch = np.empty((s.batch_size,) + images.shape[1:], np.uint8)
    for b, (i, v) in enumerate(zip(idx, views)):
        img = np.rot90(images[i], int(v) % 4)
        batch[b] = img[:, ::-1] if v >= 4 else img
    captions = [world.caption(visible[i], synonyms, rng, tmpl, colours[i]) for i in idx]
    return batch, captions


def _read_log(path: Path, upto: int) -> List[Dict]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as fh:
        return [row for row in csv.DictReader(fh) if int(row["step"]) <= upto]


def _write_log(path: Path, rows: List[Dict]) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=LOG_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _save_state(path: Path, model, opt, step: int, s: TrainSettings, seconds: float) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                "settings": asdict(s), "seconds": seconds}, tmp)
    os.replace(tmp, path)


def export_weights(model: torch.nn.Module, path: Path) -> Path:
    """The model's state dict as safetensors (float32, deterministic bytes for equal weights)."""
    from safetensors.torch import save_file

    state = {k: v.detach().float().contiguous().clone() for k, v in model.state_dict().items()}
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    save_file(state, str(tmp), metadata={"format": "pt"})  # one key: safetensors orders several at random
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path


def train(
    out_dir: str | Path,
    settings: TrainSettings = TrainSettings(),
    resume: bool = True,
    log: Callable[[str], None] = print,
    on_step: Optional[Callable[[int, Dict], None]] = None,
) -> Dict:
    """Train, checkpointing every ``save_every`` steps into ``out_dir``; returns a summary.

    Writes ``out_dir/{BPE_NAME}``, ``{WEIGHTS_NAME}``, ``model_config.json``, ``settings.json``,
    ``train_log.csv`` (loss, learning rate, temperature per step) and ``train_state.pt`` (for
    resuming). With ``resume`` a run continues from ``train_state.pt`` when its settings match.
    ``on_step(step, row)`` receives each log row (e.g. for W&B).
    """
    import open_clip

    s = settings
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(s.threads)
    prev_det = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        bpe = build_vocabulary(out / BPE_NAME)
        tokenizer = open_clip.SimpleTokenizer(bpe_path=str(bpe), context_length=s.context_length)
        model_cfg = s.model_config(tokenizer.vocab_size)
        (out / "model_config.json").write_text(json.dumps(model_cfg, indent=2) + "\n", encoding="utf-8")
        (out / "settings.json").write_text(json.dumps(asdict(s), indent=2, sort_keys=True) + "\n", encoding="utf-8")

        torch.manual_seed(s.seed)
        model = open_clip.CLIP(**model_cfg)
        model.train()
        opt = _optimizer(model, s)
        loss_fn = open_clip.ClipLoss()

        start, seconds = 0, 0.0
        state_path = out / STATE_NAME
        if resume and state_path.is_file():
            state = torch.load(state_path, map_location="cpu", weights_only=True)
            if state.get("settings") == asdict(s):
                model.load_state_dict(state["model"])
                opt.load_state_dict(state["optimizer"])
                start, seconds = int(state["step"]), float(state.get("seconds", 0.0))
                log(f"[demo/train] resuming from step {start} ({state_path})")
            else:
                log(f"[demo/train] {state_path} was made with other settings: starting from scratch")
        rows = _read_log(out / LOG_NAME, start)

        synonyms = scenes.load_class_synonyms()
        tmpl = world.templates()
        images, visible, colours = render_pool(s) if start < s.steps else (None, None, None)
        t_loop = time.time()
        bar = _progress(range(start, s.steps), "training", total=s.steps, initial=start)
        for step in bar:
            for group in opt.param_groups:
                group["lr"] = lr_at(s, step)
            batch, captions = _batch(s, step, images, visible, colours, synonyms, tmpl)
            img_f, txt_f, scale = model(_to_tensor(batch), tokenizer(captions))
            loss = loss_fn(img_f, txt_f, scale)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip)
            opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            row = {"step": step + 1, "loss": round(loss.item(), 5), "lr": lr_at(s, step),
                   "logit_scale": round(model.logit_scale.exp().item(), 4),
                   "seconds": round(seconds + time.time() - t_loop, 2)}
            rows.append(row)
            bar.set_postfix(loss=f"{row['loss']:.3f}", T=f"{row['logit_scale']:.1f}")
            if on_step is not None:
                on_step(step + 1, row)
            done = step + 1
            if done % s.save_every == 0 or done == s.steps:
                model.eval()
                _save_state(state_path, model, opt, done, s, seconds + time.time() - t_loop)
                model.train()
                _write_log(out / LOG_NAME, rows)
        train_seconds = seconds + (time.time() - t_loop if start < s.steps else 0.0)
        model.eval()
        weights = export_weights(model, out / WEIGHTS_NAME)
        summary = {
            "weights": weights.name, "weights_sha256": file_sha256(weights),
            "bpe": bpe.name, "bpe_sha256": file_sha256(bpe), "vocab_size": tokenizer.vocab_size,
            "parameters": sum(p.numel() for p in model.parameters()), "steps": s.steps,
            "train_seconds": round(train_seconds, 1),  # the optimisation steps, summed over resumed calls
            "final_loss": float(rows[-1]["loss"]) if rows else None, "torch": torch.__version__,
            "threads": s.threads,
        }
        (out / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return summary
    finally:
        torch.use_deterministic_algorithms(prev_det)
