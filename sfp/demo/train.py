"""Train the tiny CLIP-architecture demo model ``sfp-demo-vit`` (NOT a real CLIP).

What the model is
    An open_clip ``CLIP`` built from ``sfp/backbones/model_configs/sfp-demo-vit.json``: a ViT
    visual tower with 12 blocks, width 64, 2 heads of 32 dims, patch 16, 224 px input, and a
    3-layer, width-64 causal text transformer (context length 16, the standard 49408-token
    CLIP BPE vocabulary), nn.GELU (no QuickGELU), joint embedding dimension 64; about 4.0 M
    parameters, 3.2 M of them the token embedding table, 0.67 M the visual tower. It starts
    from random weights (seeded).

What it was trained on
    Only synthetic scenes of :mod:`sfp.demo.scenes`: 1000 distinct 224x224 images of 2-5
    coloured, textured shapes (ball, crate, star, leaf, checkerboard, cloud, heart, ring) on
    a muted textured background, and English text built from the 80 OpenAI ImageNet prompt
    templates (``open_clip.OPENAI_IMAGENET_TEMPLATES``) filled with the class names and
    synonyms of ``sfp/data/class_names/demo.txt``. The training scenes come from a seed
    stream disjoint from the benchmark's train and val scenes (the benchmark's images are
    320x240 with 1-4 objects). No real image or text data and no pretrained weights are
    involved.

How it was trained (from scratch, both towers jointly, CPU, 250 steps of 16 scenes)
    Each step takes 16 scenes of the pool (random horizontal flips) and minimises
    1. an image-text contrastive loss, as in CLIP: the normalised image embedding (class
       token -> ln_post -> proj) against the normalised text embedding of a caption
       ``template("<a> and <b> ...")`` naming the scene's visible object classes (random
       template, random synonym per class, random order); symmetric InfoNCE with CLIP's
       learnable temperature; captions naming the same set of classes count as positives;
    2. + ``dense_weight`` x a dense loss on the value path ("MaskCLIP" features): for every
       16x16 patch, the feature ``ln_post(attn.out_proj(v_proj(ln_1(h)))) @ proj`` of the
       last block (``h`` = its input; no residual, no MLP) is compared, cosine similarity x
       ``dense_scale``, with the text embeddings of all 9 classes (background included;
       each class written with a random template and synonym, ``text_draws`` draws per
       step), and a soft cross-entropy pulls it towards the class mix of the patch's
       pixels; classes are balanced (weight 1/sqrt(share of the batch's patches));
    3. + ``clip_dense_weight`` (10x weaker) x the same loss on the ordinary last-layer patch
       tokens (``ln_post(block output) @ proj``, the "clip" dense path).
    So the value path is the best-aligned dense feature, as MaskCLIP found for real CLIP, and
    the plain last-layer tokens are weaker but well above chance (with no loss 3 they stay at
    chance level, which would make the "clip" row of the demo look broken).
    AdamW (lr ``lr``, text tower x ``text_lr_mult``, weight decay ``weight_decay`` on
    matrices, 30 warm-up steps then cosine decay, gradient clipping at 1), fixed seeds,
    ``torch.use_deterministic_algorithms(True)`` and ``threads`` CPU threads.
"""
from __future__ import annotations

import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, List, Optional

import numpy as np
import torch
import torch.nn.functional as F

from sfp.demo import scenes

MODEL_NAME = "sfp-demo-vit"
CONFIG_PATH = Path(__file__).resolve().parent.parent / "backbones" / "model_configs" / f"{MODEL_NAME}.json"
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: seed of the training scene stream (the benchmark uses other seeds, see sfp.demo.benchmark)
TRAIN_SCENE_SEED = 1000


def _print(msg: str) -> None:
    print(msg, flush=True)


@dataclass(frozen=True)
class TrainSettings:
    """Knobs of the demo training (all part of the demo manifest)."""

    steps: int = 250
    batch_size: int = 16
    pool_size: int = 1000  # distinct training scenes, rendered once and reused with flips
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup: int = 30
    text_lr_mult: float = 3.0  # the text tower learns faster (it must tell 9 words apart in 80 templates)
    dense_weight: float = 1.0
    dense_scale: float = 40.0
    clip_dense_weight: float = 0.1  # weak version of loss 2 on the ordinary last-layer patch tokens
    text_draws: int = 3  # (template, synonym) draws per class per step for the dense loss
    seed: int = 0
    threads: int = 2


def register_model_config() -> None:
    """Make ``sfp-demo-vit`` known to open_clip (idempotent)."""
    import open_clip

    if MODEL_NAME not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_PATH)


def create_model(pretrained: Optional[str | Path] = None):
    """Build ``sfp-demo-vit`` with open_clip (random weights, or ``pretrained`` weights)."""
    import logging

    import open_clip

    register_model_config()
    if pretrained is None:
        # open_clip warns that no pretrained weights were loaded: expected here
        logger = logging.getLogger()
        level = logger.level
        logger.setLevel(logging.ERROR)
        try:
            return open_clip.create_model(MODEL_NAME)
        finally:
            logger.setLevel(level)
    return open_clip.create_model(MODEL_NAME, pretrained=str(pretrained))


def _templates() -> List[Callable[[str], str]]:
    import open_clip

    out = []
    for t in open_clip.OPENAI_IMAGENET_TEMPLATES:
        out.append(t if callable(t) else (lambda c, _t=t: _t.format(c)))
    return out


def visual_features(visual, x: torch.Tensor):
    """(image embedding, clip-path patch features, maskclip-path patch features) of a batch."""
    h = visual.conv1(x)
    h = h.reshape(h.shape[0], h.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding.to(h.dtype).view(1, 1, -1).expand(h.shape[0], -1, -1)
    h = torch.cat([cls, h], dim=1) + visual.positional_embedding.to(h.dtype)
    h = visual.ln_pre(h)
    blocks = visual.transformer.resblocks
    for blk in blocks[:-1]:
        h = blk(h)
    last = blocks[-1]
    d = h.shape[-1]
    y = last.ln_1(h)
    v = F.linear(y, last.attn.in_proj_weight[2 * d:], last.attn.in_proj_bias[2 * d:])
    o = last.attn.out_proj(v)
    dense_mc = visual.ln_post(o[:, 1:]) @ visual.proj
    out = last(h)
    out = visual.ln_post(out)
    image = out[:, 0] @ visual.proj
    dense_clip = out[:, 1:] @ visual.proj
    return image, dense_clip, dense_mc


def _patch_targets(labels: np.ndarray, patch: int, num_classes: int) -> torch.Tensor:
    """(B, H, W) labels -> (B, P, K) per-patch class fractions."""
    lab = torch.from_numpy(labels.astype(np.int64))
    onehot = F.one_hot(lab, num_classes).permute(0, 3, 1, 2).float()
    frac = F.avg_pool2d(onehot, patch)  # B, K, h, w
    return frac.flatten(2).transpose(1, 2)


def _to_tensor(images: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def train(
    out_path: str | Path,
    settings: TrainSettings = TrainSettings(),
    log: Callable[[str], None] = _print,
) -> Path:
    """Train ``sfp-demo-vit`` from scratch and save its open_clip state dict to ``out_path``."""
    import open_clip

    s = settings
    t0 = time.time()
    torch.set_num_threads(s.threads)
    torch.manual_seed(s.seed)
    random.seed(s.seed)
    np.random.seed(s.seed)
    prev_det = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        model = create_model()
        model.train()
        tokenizer = open_clip.get_tokenizer(MODEL_NAME)
        templates = _templates()
        synonyms = scenes.load_class_synonyms()
        k = len(synonyms)
        if k != scenes.NUM_CLASSES:
            raise ValueError(f"{scenes.CLASS_FILE} lists {k} classes, the scene generator draws {scenes.NUM_CLASSES}")
        patch = model.visual.patch_size[0]
        size = model.visual.image_size[0]

        log(f"[demo/train] rendering {s.pool_size} training scenes ({size}x{size}) ...")
        spec = scenes.SceneSpec(height=size, width=size, min_objects=2, max_objects=5)
        imgs = np.empty((s.pool_size, size, size, 3), np.uint8)
        labs = np.empty((s.pool_size, size, size), np.uint8)
        for i in range(s.pool_size):
            imgs[i], labs[i] = scenes.render_scene(TRAIN_SCENE_SEED + s.seed, i, spec)
        log(f"[demo/train] scenes ready in {time.time() - t0:.1f}s; training {s.steps} steps x {s.batch_size}")

        groups = {}
        for name, p in model.named_parameters():
            is_text = not name.startswith("visual.") and name != "logit_scale"
            wd = 0.0 if (p.ndim < 2 or "embedding" in name or name == "logit_scale") else s.weight_decay
            groups.setdefault((is_text, wd), []).append(p)
        opt = torch.optim.AdamW(
            [{"params": ps, "weight_decay": wd, "lr_mult": s.text_lr_mult if is_text else 1.0}
             for (is_text, wd), ps in sorted(groups.items())],
            lr=s.lr, betas=(0.9, 0.98), eps=1e-6,
        )

        def lr_at(step: int) -> float:
            if step < s.warmup:
                return s.lr * (step + 1) / s.warmup
            t = (step - s.warmup) / max(s.steps - s.warmup, 1)
            return s.lr * 0.5 * (1 + math.cos(math.pi * t))

        rng = np.random.default_rng([s.seed, 7])
        t_train = time.time()
        for step in range(s.steps):
            for g in opt.param_groups:
                g["lr"] = lr_at(step) * g["lr_mult"]
            idx = rng.choice(s.pool_size, size=s.batch_size, replace=False)
            bi, bl = imgs[idx], labs[idx]
            flip = rng.random(s.batch_size) < 0.5
            bi = np.where(flip[:, None, None, None], bi[:, :, ::-1], bi)
            bl = np.where(flip[:, None, None], bl[:, :, ::-1], bl)

            # captions: the visible object classes, random synonyms / order / template
            captions, sets = [], []
            for b in range(s.batch_size):
                present = [c for c in range(1, k) if (bl[b] == c).sum() >= patch * patch // 2]
                sets.append(tuple(present))
                order = list(present)
                rng.shuffle(order)
                names = [synonyms[c][int(rng.integers(len(synonyms[c])))] for c in order]
                if not names:
                    names = [synonyms[0][int(rng.integers(len(synonyms[0])))]]
                tmpl = templates[int(rng.integers(len(templates)))]
                captions.append(tmpl(" and ".join(names)))
            class_texts = [
                templates[int(rng.integers(len(templates)))](syn[int(rng.integers(len(syn)))])
                for _ in range(s.text_draws)
                for syn in synonyms
            ]
            tokens = tokenizer(captions + class_texts)
            text = F.normalize(model.encode_text(tokens), dim=-1)
            cap_emb = text[: s.batch_size]
            cls_emb = text[s.batch_size:].reshape(s.text_draws, k, -1)

            x = _to_tensor(np.ascontiguousarray(bi))
            image, dense_clip, dense_mc = visual_features(model.visual, x)
            image = F.normalize(image, dim=-1)

            scale = model.logit_scale.exp().clamp(max=100)
            logits = scale * image @ cap_emb.T
            pos = torch.tensor([[float(a == b) for b in sets] for a in sets])
            pos = pos / pos.sum(1, keepdim=True)
            loss_con = 0.5 * (
                torch.sum(-pos * F.log_softmax(logits, 1), 1).mean()
                + torch.sum(-pos.T / pos.T.sum(1, keepdim=True) * F.log_softmax(logits.T, 1), 1).mean()
            )

            target = _patch_targets(bl, patch, k)  # B, P, K
            # class-balanced: each class present in the batch weighs by 1 / sqrt(its patch share)
            share = target.sum((0, 1)) / target.sum()
            cw = torch.where(share > 0, share.clamp(min=1e-3).rsqrt(), torch.zeros_like(share))
            pw = target @ cw  # B, P
            pw = pw / pw.mean()
            dn = F.normalize(dense_mc, dim=-1)
            dc = F.normalize(dense_clip, dim=-1)
            loss_dense = loss_clip_dense = 0.0
            for d in range(s.text_draws):
                dl = s.dense_scale * dn @ cls_emb[d].T
                ce = torch.sum(-target * F.log_softmax(dl, -1), -1)
                loss_dense = loss_dense + (pw * ce).mean() / s.text_draws
                if s.clip_dense_weight > 0:
                    ce = torch.sum(-target * F.log_softmax(s.dense_scale * dc @ cls_emb[d].T, -1), -1)
                    loss_clip_dense = loss_clip_dense + (pw * ce).mean() / s.text_draws

            loss = loss_con + s.dense_weight * loss_dense + s.clip_dense_weight * loss_clip_dense
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
            if step % 25 == 0 or step == s.steps - 1:
                acc = (dl.argmax(-1) == target.argmax(-1)).float().mean().item()
                log(
                    f"[demo/train] step {step + 1:4d}/{s.steps}  contrastive {loss_con.item():.3f}  "
                    f"dense {loss_dense.item():.3f}  patch-acc {acc:.2f}  "
                    f"({time.time() - t_train:.0f}s)"
                )

        model.eval()
        out_path = Path(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        state = {name: t.detach().clone().contiguous() for name, t in model.state_dict().items()}
        tmp = out_path.with_name(out_path.name + f".tmp{os.getpid()}")
        torch.save(state, tmp)
        os.replace(tmp, out_path)
        log(f"[demo/train] saved {out_path} ({time.time() - t0:.1f}s in all)")
        return out_path
    finally:
        torch.use_deterministic_algorithms(prev_det)


def settings_dict(settings: TrainSettings) -> dict:
    return asdict(settings)
