"""The installed package: a wheel built from the checkout and installed (without its dependencies, which
come from the running environment) into a fresh virtual environment works from any directory, as the
library, as `python -m sfp` and as `python -m sfp.analysis`; nothing with a generic name is installed."""
from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tomllib
import venv
from pathlib import Path

import pytest

from tests.helpers import REPO, project_copy


def test_the_package_list_names_every_package_of_the_checkout():
    listed = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "sfp").rglob("__init__.py")}
    found |= {".".join(p.parent.relative_to(REPO).parts) for p in (REPO / "hydra_plugins").rglob("__init__.py")}
    assert found <= listed and {"sfp.conf", "sfp.experiments", "sfp.analysis"} <= listed


def _run(args, **kwargs):
    result = subprocess.run(args, capture_output=True, text=True, timeout=900, **kwargs)
    assert result.returncode == 0, f"{args}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.mark.slow
def test_a_wheel_installed_elsewhere_runs_the_demo_from_any_directory(tmp_path):
    dist = tmp_path / "dist"
    source = project_copy(tmp_path / "source")  # the build writes build/ beside its sources: not in the checkout
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(dist), str(source)])
    wheel = next(dist.glob("sfp-*.whl"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).stdout.strip())
    # The dependencies (torch, open_clip, hydra, ...) come from the running environment, which is a path
    # entry only: its own .pth files (such as an editable install of this checkout) are not processed.
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q", "--target", str(site), str(wheel)])

    installed = sorted(p.name for p in site.iterdir())
    assert "sfp" in installed and "analysis" not in installed and "conf" not in installed
    assert (site / "sfp" / "conf" / "config.yaml").is_file() and (site / "sfp" / "experiments" / "experiment").is_dir()

    home, work = tmp_path / "home", tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SFP_", "PYTHON"))}
    env.update(HOME=str(home), WANDB_MODE="disabled", HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    run = dict(cwd=work, env=env)
    where = _run([str(python), "-c", "import sfp, sfp.config.locations as l; print(sfp.__file__, l.root())"], **run)
    assert str(site) in where.stdout and str(home / "sfp") in where.stdout  # the installed copy, root ~/sfp

    _run([str(python), "-m", "sfp.demo", "prepare"], **run)
    assert (home / "sfp" / ".cache" / "sfp" / "demo" / "VOCdevkit" / "VOC2012").is_dir()
    sweep = tmp_path / "sweep"
    cli = _run([str(python), "-m", "sfp", "-m", "method=clip,maskclip", "tracker=none", "datasets.demo.max_images=3",
                f"hydra.sweep.dir={sweep}"], **run)
    assert cli.stdout.count("demo ") >= 2 and len(list(sweep.glob("*/results.json"))) == 2
    experiment = _run([str(python), "-m", "sfp", "--cfg", "job", "+experiment=ablation_components"], **run)
    assert "ablation_components" in experiment.stdout

    library = """
import sfp
cfg = sfp.compose(["tracker=none", "method=maskclip", "datasets.demo.max_images=2"])
model = sfp.build_model(cfg)
import numpy as np
labels = sfp.Segmenter(cfg, model=model).predict(np.zeros((40, 60, 3), np.uint8))
record = sfp.run_job(cfg, "lib-run")
print(labels.shape, record["status"], record["metrics"]["demo"]["n_images"])
"""
    assert "(40, 60) complete 2" in _run([str(python), "-c", library], **run).stdout
    table = _run([str(python), "-m", "sfp.analysis", "main", "--no-published", "--runs", str(sweep)], **run)
    assert "maskclip" in table.stdout
    assert sorted(p.name for p in work.iterdir()) == ["lib-run"]  # defaults never land in the working directory
