"""Shared fixtures: a tiny random-weight CLIP and tiny datasets in the real on-disk layouts."""
from __future__ import annotations

import pytest
import torch

from tests.helpers import tiny_overrides

pytest_plugins = ["tests.analysis_runs_fixture"]  # the session-wide `analysis_runs` fixture

# The tiny test models gain nothing from threads, and a busy second core makes every op wait on it.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch, tmp_path):
    # Tests never reach W&B servers nor read a developer's keys or data locations.
    for var in ("WANDB_API_KEY", "WANDB_MODE", "WANDB_BASE_URL", "SFP_DATA_ROOT", "SFP_CACHE_DIR", "SFP_ROOT",
                "SFP_CONF_DIR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb_dir"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time otherwise
    monkeypatch.setenv("NETRC", str(tmp_path / "no-netrc"))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # for subprocess runs


@pytest.fixture
def tiny_voc(tmp_path):
    """A 3-image PASCAL VOC tree under tmp_path/data, and the overrides that evaluate it on the tiny model."""
    from tests.data_layouts_fixture import build_layout

    entries = build_layout("voc21", tmp_path / "data", n=3)
    return entries, tiny_overrides(tmp_path) + ["datasets.voc21.short_side=40"]
