"""Helpers shared by the tests: the repository root, the tiny-model overrides, synthetic attention."""
from __future__ import annotations

import dataclasses
import shutil
import subprocess
import typing
from pathlib import Path
from typing import Dict, List

import torch

REPO = Path(__file__).resolve().parents[1]


def tiny_overrides(tmp_path: Path, datasets: str = "[voc21]") -> List[str]:
    """A fast CPU configuration: the tiny 12-block model (and a tiny VFM for the methods that read one),
    64-pixel windows, no W&B."""
    return [
        "backbone=tiny",
        "vfm=tiny_dino",
        "tracker=none",
        f"datasets={datasets}",
        f"paths.data_root={tmp_path / 'data'}",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"paths.output_dir={tmp_path / 'outputs'}",
        "inference.crop=64",
        "inference.stride=32",
        "inference.templates=single",
    ]


def synthetic_attention(cls_row, diagonal):
    """(1, 2, 1+N, 1+N) head-identical attention probabilities with a given CLS row and patch diagonal."""
    n = len(diagonal)
    attention = torch.full((1 + n, 1 + n), 0.01)
    attention[0, :] = torch.tensor(cls_row)
    attention[torch.arange(1, n + 1), torch.arange(1, n + 1)] = torch.tensor(diagonal)
    return attention.expand(1, 2, -1, -1).clone()



def project_copy(destination: Path) -> Path:
    """The project's sources (no virtual environment, caches or outputs) copied to `destination`."""
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", ".venv", ".git", "outputs", ".cache", "build")
    for name in ("sfp", "conf", "experiments", "analysis", "hydra_plugins"):
        shutil.copytree(REPO / name, destination / name, ignore=ignore)
    for name in ("main.py", "pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, destination / name)
    return destination


def project_files() -> List[Path]:
    """The files of the project: tracked or not ignored by git (every file but ignored folders without git)."""
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                                capture_output=True, text=True, check=True).stdout.splitlines()
        return [REPO / name for name in listed if (REPO / name).is_file()]
    except (OSError, subprocess.CalledProcessError):
        skip = {".git", ".venv", "outputs", ".cache", "build", "dist"}
        return [p for p in REPO.rglob("*") if p.is_file() and not skip & set(p.relative_to(REPO).parts)]


def group_schemas() -> Dict[str, type]:
    """Each config group of the run settings and its settings class, read from `RunConfig` itself."""
    from sfp.config.schema import RunConfig

    hints = typing.get_type_hints(RunConfig)
    return {f.name: hints[f.name] for f in dataclasses.fields(RunConfig) if dataclasses.is_dataclass(hints[f.name])}
