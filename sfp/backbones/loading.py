"""Loading CLIP backbones through open_clip: pretrained tags, local checkpoint files, or random weights.

Every path ends in an `open_clip.model.CLIP` in float32 plus its tokenizer. Weights are read without
arbitrary unpickling: safetensors, `torch.load(weights_only=True)`, or a TorchScript archive (the format of
OpenAI's original .pt files), whose state dict is read with `torch.jit.load`.
"""
from __future__ import annotations

import logging
import os
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional

import open_clip
import torch
from open_clip.model import CLIP, CLIPTextCfg, CLIPVisionCfg

from ..config.schema import BackboneConfig, CheckpointFormat
from ..data.class_names import file_sha256
from ..errors import WeightsError

log = logging.getLogger(__name__)

MODEL_CONFIG_DIR = Path(__file__).parent / "model_configs"
_OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size", "attn_mask")


def register_packaged_model_configs() -> None:
    """Make the project's own architectures (tiny test and demo models) known to open_clip by name."""
    known = set(open_clip.list_models())
    for path in sorted(MODEL_CONFIG_DIR.glob("*.json")):
        if path.stem not in known:
            open_clip.add_model_config(path)


@dataclass
class LoadedBackbone:
    model: CLIP
    tokenizer: Callable
    source: str  # where the weights came from, for the results record
    sha256: Optional[str] = None  # the checkpoint file's SHA-256 (None for pretrained tags and random weights)


def load_backbone(cfg: BackboneConfig) -> LoadedBackbone:
    register_packaged_model_configs()
    sha256 = None
    if cfg.checkpoint:
        model, source = _from_checkpoint(cfg)
        path = Path(cfg.checkpoint).expanduser()  # verified against checkpoint_sha256 when the config gives one
        sha256 = cfg.checkpoint_sha256.lower() if cfg.checkpoint_sha256 else file_sha256(path)
    elif cfg.pretrained:
        model, source = _from_pretrained_tag(cfg, cfg.weights_cache_dir), f"open_clip:{cfg.model}:{cfg.pretrained}"
    else:
        model, source = _create(cfg, pretrained=None), "random-init"
    if not hasattr(model, "visual") or not hasattr(model.visual, "transformer"):
        raise WeightsError(f"backbone {cfg.name!r}: only CLIP ViT backbones are supported (got {type(model).__name__})")
    refuse_non_finite(model, f"backbone {cfg.name!r}", source)
    return LoadedBackbone(model=model.float().eval(), tokenizer=_tokenizer_for(cfg, model), source=source,
                          sha256=sha256)


def refuse_non_finite(model: torch.nn.Module, who: str, source: str) -> None:
    """NaN or inf weights would give a run of silently wrong numbers (often all one class)."""
    for key, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            count = int((~torch.isfinite(tensor)).sum())
            raise WeightsError(f"{who} ({source}): tensor {key} holds {count} non-finite value(s) "
                               "(NaN or inf); the weights are damaged")


def _create(cfg: BackboneConfig, pretrained: Optional[str], cache_dir: Optional[str] = None) -> CLIP:
    if not cfg.model or cfg.model not in open_clip.list_models():
        raise WeightsError(
            f"backbone.model={cfg.model!r} is not an open_clip architecture; known ones include "
            f"ViT-B-16, ViT-L-14 and the project's own: {', '.join(p.stem for p in MODEL_CONFIG_DIR.glob('*.json'))}"
        )
    return open_clip.create_model(
        cfg.model, pretrained=pretrained, force_quick_gelu=cfg.quick_gelu, cache_dir=cache_dir
    )


def _from_pretrained_tag(cfg: BackboneConfig, cache_dir: Optional[str]) -> CLIP:
    tags = open_clip.list_pretrained_tags_by_model(cfg.model) if cfg.model in open_clip.list_models() else []
    if cfg.pretrained not in tags:
        raise WeightsError(
            f"backbone.pretrained={cfg.pretrained!r} is not an open_clip tag of {cfg.model!r} "
            f"(known tags: {', '.join(tags) or 'none'}); for a local file set backbone.checkpoint=/path/to/weights"
        )
    try:
        return _create(cfg, pretrained=cfg.pretrained, cache_dir=cache_dir)
    except Exception as exc:  # open_clip wraps download errors in RuntimeError
        where = cache_dir or os.environ.get("HF_HUB_CACHE") or os.environ.get("HF_HOME") or "~/.cache/huggingface/hub"
        raise WeightsError(
            f"could not load the {cfg.model!r} weights with tag {cfg.pretrained!r}: looked in the open_clip / "
            f"Hugging Face cache at {where} and tried to download ({type(exc).__name__}: {exc}). "
            f"To provide them offline: on a machine with internet run "
            f"`python -c \"import open_clip; open_clip.create_model('{cfg.model}', pretrained='{cfg.pretrained}'"
            f"{', cache_dir=' + repr(cache_dir) if cache_dir else ''})\"` and copy the cache folder here, "
            f"or download the weights file and pass backbone.checkpoint=/path/to/file "
            f"(without network, HF_HUB_OFFLINE=1 makes this check fail fast)"
        ) from exc


def read_state_dict(path: Path) -> Dict[str, torch.Tensor]:
    """Read a state dict from safetensors, a plain torch file, or a TorchScript archive, never unpickling code."""
    if not path.is_file():
        raise WeightsError(f"checkpoint file not found: {path} (set backbone.checkpoint to an existing file)")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path))
        elif _is_torchscript(path):
            obj = torch.jit.load(str(path), map_location="cpu").state_dict()
        else:
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except WeightsError:
        raise
    except Exception as exc:
        raise WeightsError(
            f"could not read checkpoint {path}: {type(exc).__name__}: {exc}. Expected a state dict saved with "
            "torch.save (tensors only), a .safetensors file, or OpenAI's TorchScript .pt file"
        ) from exc
    for wrapper in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and isinstance(obj.get(wrapper), dict):
            obj = obj[wrapper]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"checkpoint {path} does not hold a state dict of tensors")
    state = {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}
    for key in _OPENAI_EXTRA_KEYS:
        state.pop(key, None)
    return state


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as archive:
        return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())


def verify_checksum(path: Path, expected: Optional[str], key: str) -> None:
    """The file must have the SHA-256 the config key `key` names (nothing to check when it names none)."""
    if not expected or not path.is_file():
        return
    actual = file_sha256(path)
    if actual != expected.lower():
        raise WeightsError(
            f"checkpoint {path} has SHA-256 {actual}, but {key} expects "
            f"{expected}: the file is damaged or not the one this config names"
        )


def _from_checkpoint(cfg: BackboneConfig):
    path = Path(cfg.checkpoint).expanduser()
    verify_checksum(path, cfg.checkpoint_sha256, "backbone.checkpoint_sha256")
    state = read_state_dict(path)
    if "visual.proj" not in state or "visual.transformer.resblocks.0.attn.in_proj_weight" not in state:
        raise WeightsError(
            f"checkpoint {path} is not a CLIP ViT state dict (missing visual.proj / visual.transformer.resblocks.*); "
            "only CLIP ViT checkpoints in open_clip or OpenAI naming are supported"
        )
    if _named(cfg):
        with _quiet_random_init_warning():  # the weights are loaded right below
            model = _create(cfg, pretrained=None)
        arch = cfg.model
    else:
        try:
            model = build_clip_from_state_dict(state, quick_gelu=cfg.quick_gelu, head_width=cfg.head_width)
        except WeightsError as exc:
            raise WeightsError(f"{path}: {exc}") from exc
        arch = "inferred"
    try:
        hint = "" if arch == "inferred" else (" (for a checkpoint of another width or depth set backbone.model=null, "
                                              "which infers the architecture)")
        check_keys(path, arch, state, model.state_dict(), hint)
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(
            f"checkpoint {path} does not match the architecture {arch!r}: {str(exc).splitlines()[0]} ... "
            "(for a checkpoint of another width or depth set backbone.model=null, which infers the architecture)"
        ) from exc
    return model, f"file:{path}" + (f"#sha256={cfg.checkpoint_sha256.lower()}" if cfg.checkpoint_sha256 else "")


def check_keys(path: Path, arch: str, state: Dict[str, torch.Tensor], expected: Dict[str, torch.Tensor],
               hint: str = "") -> None:
    """Every tensor of the architecture present with its shape, and nothing else: named, not a truncated torch
    message."""
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(expected) & set(state) if tuple(expected[k].shape) != tuple(state[k].shape))
    if missing or extra or wrong:
        def shown(keys):
            return ", ".join(keys[:6]) + (f" and {len(keys) - 6} more" if len(keys) > 6 else "")

        parts = ([f"{len(missing)} missing tensor(s): {shown(missing)}"] if missing else []) + \
            ([f"{len(extra)} unexpected tensor(s): {shown(extra)}"] if extra else []) + \
            ([f"shape of {wrong[0]}: {tuple(state[wrong[0]].shape)} in the file, "
              f"{tuple(expected[wrong[0]].shape)} in the architecture"] if wrong else [])
        raise WeightsError(f"checkpoint {path} does not match the architecture {arch!r}: {'; '.join(parts)}{hint}")


def _complete_blocks(state: Dict[str, torch.Tensor], prefix: str, where: str) -> int:
    """The number of transformer blocks under `prefix`; refuses gaps and blocks with missing tensors."""
    by_block: Dict[int, set] = {}
    for key in state:
        if key.startswith(prefix):
            index, _, rest = key[len(prefix):].partition(".")
            by_block.setdefault(int(index), set()).add(rest)
    if not by_block:
        raise WeightsError(f"checkpoint has no {where} blocks ({prefix}<i>.*)")
    if sorted(by_block) != list(range(len(by_block))):
        gaps = sorted(set(range(max(by_block) + 1)) - set(by_block))
        raise WeightsError(f"checkpoint's {where} blocks are not numbered 0..{max(by_block)}: "
                           f"missing block(s) {', '.join(map(str, gaps))} ({prefix}<i>.*)")
    reference = by_block[0]
    for index, keys in by_block.items():
        if keys != reference:
            lacking = sorted(reference - keys) or sorted(keys - reference)
            raise WeightsError(f"checkpoint's {where} block {index} differs from block 0 in tensor(s) "
                               f"{', '.join(f'{prefix}{index}.{k}' for k in lacking[:6])}")
    return len(by_block)


def build_clip_from_state_dict(state: Dict[str, torch.Tensor], quick_gelu: bool, head_width: int = 64) -> CLIP:
    """Infer a CLIP ViT architecture of any width and depth from its (OpenAI-named) state dict."""
    needed = ("visual.conv1.weight", "visual.positional_embedding", "ln_final.weight", "positional_embedding",
              "token_embedding.weight", "text_projection", "visual.transformer.resblocks.0.mlp.c_fc.weight")
    absent = [key for key in needed if key not in state]
    if absent:
        raise WeightsError(f"checkpoint lacks tensor(s) {', '.join(absent)}, needed to infer the architecture")
    vision_width = state["visual.conv1.weight"].shape[0]
    patch = state["visual.conv1.weight"].shape[-1]
    vision_layers = _complete_blocks(state, "visual.transformer.resblocks.", "image tower")
    grid = round((state["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    text_width = state["ln_final.weight"].shape[0]
    text_layers = _complete_blocks(state, "transformer.resblocks.", "text tower")
    vision_cfg = CLIPVisionCfg(
        layers=vision_layers, width=vision_width, patch_size=patch, image_size=patch * grid,
        head_width=min(head_width, vision_width),
        mlp_ratio=state["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / vision_width,
    )
    text_cfg = CLIPTextCfg(
        context_length=state["positional_embedding"].shape[0],
        vocab_size=state["token_embedding.weight"].shape[0],
        width=text_width, heads=max(text_width // head_width, 1), layers=text_layers,
    )
    return CLIP(state["text_projection"].shape[1], vision_cfg=vision_cfg, text_cfg=text_cfg, quick_gelu=quick_gelu)


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "initialized randomly" not in record.getMessage()


@contextmanager
def _quiet_random_init_warning():
    root, drop = logging.getLogger(), _DropRandomInitWarning()
    root.addFilter(drop)
    try:
        yield
    finally:
        root.removeFilter(drop)


def _tokenizer_for(cfg: BackboneConfig, model: CLIP) -> Callable:
    context_length = model.context_length
    if cfg.tokenizer:
        tokenizer = _bpe_tokenizer(Path(cfg.tokenizer).expanduser(), context_length)
    elif cfg.model and cfg.model in open_clip.list_models() and (not cfg.checkpoint or _named(cfg)):
        tokenizer = open_clip.get_tokenizer(cfg.model, context_length=context_length)
    else:
        tokenizer = open_clip.SimpleTokenizer(context_length=context_length)
    rows = model.token_embedding.num_embeddings if hasattr(model, "token_embedding") else None
    size = getattr(tokenizer, "vocab_size", None)
    if rows is not None and size is not None and size > rows:
        raise WeightsError(
            f"backbone {cfg.name!r}: the tokenizer has {size} tokens but the text tower embeds only {rows}; "
            + ("backbone.tokenizer names a vocabulary that does not belong to these weights"
               if cfg.tokenizer else "set backbone.tokenizer to the BPE merges file the weights were trained with")
        )
    return tokenizer


def _bpe_tokenizer(path: Path, context_length: int) -> Callable:
    if not path.is_file():
        raise WeightsError(f"backbone.tokenizer: BPE merges file not found: {path}")
    try:
        return open_clip.SimpleTokenizer(bpe_path=str(path), context_length=context_length)
    except Exception as exc:
        raise WeightsError(
            f"backbone.tokenizer: could not read {path} as an open_clip BPE merges file "
            f"(gzip text, a version line, then one merge per line): {type(exc).__name__}: {exc}"
        ) from exc


def _named(cfg: BackboneConfig) -> bool:
    return cfg.checkpoint_format == CheckpointFormat.open_clip or (
        cfg.checkpoint_format == CheckpointFormat.auto and bool(cfg.model) and cfg.model in open_clip.list_models()
    )
