"""A small folder of REAL runs for the analysis tests: jobs of `sfp.runner.run_job` on the tiny random-weight
model over tiny VOC21 and ADE20K trees, laid out the way studies are (one folder per study).

    runs/presets/{clip,maskclip,naclip,sfp_early}     maskclip evaluates voc21 only (a missing dataset)
    runs/components/<mitigator>-<enhancer>-<integrator>   7 of the 8 combinations (off-on-off is missing),
                                                          plus on-on-on-repeat: the full method run twice
    runs/detector/{som,l2,lof}                           mitigator.detector
    runs/sweep_top_k/{k2,k5,k10}                         mitigator.top_k

The choices recorded with each job are Hydra's own (`hydra.runtime.choices`), as `main.py` records them.
Built once per test session (about 10 s); tests that change records copy the folder first.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Dict, List, Tuple

import pytest

from tests.helpers import tiny_overrides
from tests.data_layouts_fixture import build_layout


DATASETS = ("voc21", "ade20k")
MISSING_COMBINATION = ("off", "on", "off")


def jobs() -> List[Tuple[str, List[str]]]:
    """(folder below runs/, overrides) of every job."""
    out: List[Tuple[str, List[str]]] = [
        ("presets/clip", ["method=clip"]),
        ("presets/maskclip", ["method=maskclip", "datasets=[voc21]"]),
        ("presets/naclip", ["method=naclip"]),
        ("presets/sfp_early", ["method=sfp_early"]),
    ]
    for m in ("on", "off"):
        for e in ("on", "off"):
            for i in ("on", "off"):
                if (m, e, i) != MISSING_COMBINATION:
                    out.append((f"components/{m}-{e}-{i}", ["method=sfp", f"mitigator={m}", f"enhancer={e}",
                                                           f"integrator={i}"]))
    out.append(("components/on-on-on-repeat", ["method=sfp"]))
    out += [(f"detector/{d}", ["method=sfp", f"mitigator.detector={d}"]) for d in ("som", "l2", "lof")]
    out += [(f"sweep_top_k/k{k}", ["method=sfp", f"mitigator.top_k={k}"]) for k in (2, 5, 10)]
    return out


def build_runs(root: Path) -> Path:
    """Writes the data and runs every job below `root`; returns root / "runs"."""
    import sfp
    from omegaconf import open_dict

    from sfp.assembly import run_choices
    from sfp.runner import run_job

    build_layout("voc21", root / "data", n=3)
    build_layout("ade20k", root / "data", n=3)
    for folder, overrides in jobs():
        datasets = next((o.split("=", 1)[1].strip("[]").split(",") for o in overrides if o.startswith("datasets=")),
                        DATASETS)
        base = tiny_overrides(root, f"[{','.join(datasets)}]") + [f"datasets.{d}.short_side=40" for d in datasets]
        overrides = [o for o in overrides if not o.startswith("datasets=")]
        cfg = sfp.compose_config(base + overrides, return_hydra_config=True)
        choices: Dict[str, str] = run_choices(cfg.hydra.runtime.choices)
        with open_dict(cfg):
            del cfg["hydra"]
        run_job(cfg, root / "runs" / folder, choices=choices)
    return root / "runs"


_BUILT: Dict[str, Path] = {}


@pytest.fixture(scope="session")
def analysis_runs(tmp_path_factory) -> Path:
    """The runs folder (read-only for tests: copy it with `copy_runs` before changing anything)."""
    if "runs" not in _BUILT:  # one build per process, whichever test module asks first
        _BUILT["runs"] = build_runs(tmp_path_factory.mktemp("analysis"))
    return _BUILT["runs"]


def copy_runs(runs: Path, destination: Path, *folders: str) -> Path:
    """A copy of the whole runs folder, or of the named study folders, under `destination`."""
    for folder in folders or [""]:
        shutil.copytree(runs / folder, destination / folder, dirs_exist_ok=True)
    return destination
