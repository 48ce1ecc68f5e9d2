"""Text queries: one embedding per class synonym, averaged over prompt templates, cached on disk."""
from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)


@dataclass
class QueryEmbeddings:
    embeddings: torch.Tensor  # (Q, D), L2-normalised
    query_to_class: torch.Tensor  # (Q,) long: the class each query (synonym) belongs to
    num_classes: int

    def to(self, device) -> "QueryEmbeddings":
        return QueryEmbeddings(self.embeddings.to(device), self.query_to_class.to(device), self.num_classes)


def text_tower_fingerprint(clip_model: torch.nn.Module) -> str:
    """Hash of the text tower's weights: the cache key part that names the model, whatever its source."""
    cached = getattr(clip_model, "_sfp_text_fingerprint", None)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    for name, tensor in sorted(clip_model.state_dict().items()):
        if name.startswith("visual."):
            continue
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    clip_model._sfp_text_fingerprint = digest.hexdigest()
    return clip_model._sfp_text_fingerprint


@torch.no_grad()
def encode_queries(
    clip_model: torch.nn.Module,
    tokenizer: Callable,
    class_synonyms: Sequence[Sequence[str]],
    templates: Sequence[str],
    device: torch.device | str = "cpu",
    cache_dir: Optional[str | Path] = None,
    cache_tag: str = "",
    chunk_size: int = 256,
) -> QueryEmbeddings:
    """Embed every synonym as normalise(mean over templates of normalise(encode_text(template)))."""
    queries = [(c, word) for c, words in enumerate(class_synonyms) for word in words]
    query_to_class = torch.tensor([c for c, _ in queries], dtype=torch.long)
    cache_file = None
    if cache_dir is not None:
        key = hashlib.sha256(
            "\n".join([text_tower_fingerprint(clip_model), cache_tag, *templates, "||",
                       *("\t".join(words) for words in class_synonyms)]).encode()
        ).hexdigest()[:32]
        cache_file = Path(cache_dir) / "text_embeddings" / f"{key}.pt"
        if cache_file.is_file():
            try:
                embeddings = torch.load(cache_file, map_location="cpu", weights_only=True)
                return QueryEmbeddings(embeddings.to(device), query_to_class.to(device), len(class_synonyms))
            except Exception as exc:  # unreadable or damaged: compute the embeddings again
                log.warning("text-embedding cache %s is unreadable (%s): computing the embeddings again",
                            cache_file, exc)

    prompts = [template.format(word) for _, word in queries for template in templates]
    features = []
    for start in range(0, len(prompts), chunk_size):
        tokens = tokenizer(prompts[start:start + chunk_size]).to(device)
        features.append(F.normalize(clip_model.encode_text(tokens).float(), dim=-1))
    features = torch.cat(features).reshape(len(queries), len(templates), -1)
    embeddings = F.normalize(features.mean(dim=1), dim=-1)

    if cache_file is not None:
        try:
            _save_atomic(embeddings.cpu(), cache_file)
        except (OSError, RuntimeError) as exc:  # a read-only or full cache folder costs time, never the run
            log.warning("text-embedding cache disabled: cannot write %s (%s); the embeddings are computed "
                        "anew in every run until paths.cache_dir is writable", cache_file.parent, exc)
    return QueryEmbeddings(embeddings, query_to_class.to(device), len(class_synonyms))


def _save_atomic(tensor: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(tensor, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
