"""Create (once) everything ``make demo`` needs: the synthetic benchmark and the demo model weights.

``prepare(cache_dir)`` writes, under ``{cache_dir}/demo/``:

    VOCdevkit/VOC2012/...   the synthetic benchmark in the PASCAL VOC layout (sfp.demo.benchmark)
    sfp-demo-vit.pt         the tiny CLIP-architecture model trained on it (sfp.demo.train)
    manifest.json           version + settings of both; a part is rebuilt when its entry differs

Every file is written under a temporary name and renamed into place, and a part's manifest
entry is recorded only after the part is complete, so an interrupted prepare is redone by
the next call rather than mistaken for a finished one.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

from sfp.demo.benchmark import BenchmarkSettings, image_ids, write_benchmark
from sfp.demo.train import MODEL_NAME, TrainSettings, train

#: bump when the scene generator, the benchmark writer or the training recipe changes behaviour
DEMO_VERSION = "1"
MANIFEST = "manifest.json"


def _print(msg: str) -> None:
    print(msg, flush=True)


@dataclass(frozen=True)
class DemoPaths:
    data_root: Path  # {cache_dir}/demo
    checkpoint: Path  # {cache_dir}/demo/sfp-demo-vit.pt
    voc_root: Path  # {cache_dir}/demo/VOCdevkit/VOC2012


def demo_paths(cache_dir: str | Path) -> DemoPaths:
    data_root = Path(cache_dir) / "demo"
    return DemoPaths(
        data_root=data_root,
        checkpoint=data_root / f"{MODEL_NAME}.pt",
        voc_root=data_root / "VOCdevkit" / "VOC2012",
    )


def _read_manifest(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_manifest(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _benchmark_complete(voc_root: Path, settings: BenchmarkSettings) -> bool:
    for split, n in (("train", settings.num_train), ("val", settings.num_val)):
        listing = voc_root / "ImageSets" / "Segmentation" / f"{split}.txt"
        if not listing.is_file() or listing.read_text(encoding="utf-8").split() != image_ids(split, n):
            return False
        for i in image_ids(split, n):
            if not (voc_root / "JPEGImages" / f"{i}.jpg").is_file():
                return False
            if not (voc_root / "SegmentationClass" / f"{i}.png").is_file():
                return False
    return True


def prepare(
    cache_dir: str | Path = ".cache/sfp",
    force: bool = False,
    benchmark: Optional[BenchmarkSettings] = None,
    training: Optional[TrainSettings] = None,
    log: Callable[[str], None] = _print,
) -> DemoPaths:
    """Generate the demo benchmark and train the demo model where missing or out of date.

    ``benchmark`` / ``training`` override the default settings (tests use tiny ones); a
    change of settings (or of ``DEMO_VERSION``) rebuilds the affected part. ``force``
    rebuilds both.
    """
    benchmark = benchmark or BenchmarkSettings()
    training = training or TrainSettings()
    paths = demo_paths(cache_dir)
    paths.data_root.mkdir(parents=True, exist_ok=True)
    manifest_path = paths.data_root / MANIFEST
    manifest = {} if force else _read_manifest(manifest_path)
    t0 = time.time()

    want_bench = {"version": DEMO_VERSION, "settings": asdict(benchmark)}
    bench_ok = manifest.get("benchmark") == want_bench and _benchmark_complete(paths.voc_root, benchmark)
    if bench_ok:
        log(f"[demo] benchmark up to date: {paths.voc_root}")
    else:
        log(f"[demo] writing the synthetic benchmark to {paths.voc_root}")
        manifest.pop("benchmark", None)
        _write_manifest(manifest_path, manifest)
        devkit = paths.data_root / "VOCdevkit"
        if devkit.exists():
            shutil.rmtree(devkit)
        write_benchmark(paths.voc_root, benchmark, log=log)
        manifest["benchmark"] = want_bench
        _write_manifest(manifest_path, manifest)

    want_model = {"version": DEMO_VERSION, "model": MODEL_NAME, "settings": asdict(training)}
    model_ok = manifest.get("model") == want_model and paths.checkpoint.is_file()
    if model_ok:
        log(f"[demo] model up to date: {paths.checkpoint}")
    else:
        log(f"[demo] training the demo model {MODEL_NAME} (NOT a real CLIP) -> {paths.checkpoint}")
        manifest.pop("model", None)
        _write_manifest(manifest_path, manifest)
        train(paths.checkpoint, training, log=log)
        manifest["model"] = want_model
        _write_manifest(manifest_path, manifest)

    if bench_ok and model_ok:
        log("[demo] nothing to do")
    else:
        log(f"[demo] done in {time.time() - t0:.1f}s")
    return paths
