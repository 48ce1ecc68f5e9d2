"""Shared fixtures: a tiny random-weight CLIP and tiny datasets in the real on-disk layouts."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import List

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # helper modules beside the tests

REPO = Path(__file__).resolve().parents[1]

# The tiny test models gain nothing from threads, and a busy second core makes every op wait on it.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch, tmp_path):
    # Tests never reach W&B servers nor read a developer's keys or data locations.
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "SFP_DATA_ROOT", "SFP_CACHE_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time otherwise
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # for subprocess runs


def tiny_overrides(tmp_path: Path, datasets: str = "[voc21]") -> List[str]:
    """A fast CPU configuration: the tiny 12-block model, 64-pixel windows, no W&B."""
    return [
        "backbone=tiny",
        "tracker=none",
        f"datasets={datasets}",
        f"paths.data_root={tmp_path / 'data'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"paths.output_dir={tmp_path / 'outputs'}",
        "inference.crop=64",
        "inference.stride=32",
        "inference.templates=single",
    ]


@pytest.fixture
def tiny_voc(tmp_path):
    """A 3-image PASCAL VOC tree under tmp_path/data, and the overrides that evaluate it on the tiny model."""
    from data_layouts_fixture import build_layout

    entries = build_layout("voc21", tmp_path / "data", n=3)
    return entries, tiny_overrides(tmp_path) + ["datasets.voc21.short_side=40"]


def synthetic_attention(cls_row, diagonal):
    """(1, 2, 1+N, 1+N) head-identical attention probabilities with a given CLS row and patch diagonal."""
    n = len(diagonal)
    attention = torch.full((1 + n, 1 + n), 0.01)
    attention[0, :] = torch.tensor(cls_row)
    attention[torch.arange(1, n + 1), torch.arange(1, n + 1)] = torch.tensor(diagonal)
    return attention.expand(1, 2, -1, -1).clone()
