"""Create (once) what ``make demo`` needs beside the shipped model: the synthetic benchmark.

``prepare(cache_dir)`` writes, under ``{cache_dir}/demo/``:

    VOCdevkit/VOC2012/...   the synthetic benchmark in the PASCAL VOC layout (sfp.demo.benchmark)
    manifest.json           version + settings of the benchmark; it is rebuilt when they differ

and checks the shipped demo weights (``sfp/assets/demo/``) against their SHA-256. The weights
are not made here: ``experiments/train_demo_clip.py`` reproduces them (sfp.demo.train).

Every file is written under a temporary name and renamed into place, and the manifest entry is
recorded only after the benchmark is complete, so an interrupted prepare is redone by the next
call rather than mistaken for a finished one.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Optional

from sfp.config import asset_path
from sfp.data.class_names import file_sha256
from sfp.errors import WeightsError
from sfp.demo.benchmark import BenchmarkSettings, image_ids, write_benchmark
from sfp.demo.train import BPE_NAME, WEIGHTS_NAME

#: bump when the scene generator, the benchmark writer or the training recipe changes behaviour
DEMO_VERSION = "2"
#: the shipped model: weights, BPE merges and checksums (written by experiments/train_demo_clip.py --install)
SHIPPED_DIR = Path(asset_path("demo"))
CHECKSUMS = "SHA256SUMS"
MANIFEST = "manifest.json"


def _print(msg: str) -> None:
    print(msg, flush=True)


@dataclass(frozen=True)
class DemoPaths:
    data_root: Path  # {cache_dir}/demo
    voc_root: Path  # {cache_dir}/demo/VOCdevkit/VOC2012
    checkpoint: Path  # the shipped weights, sfp/assets/demo/sfp-demo-clip.safetensors
    tokenizer: Path  # the shipped BPE merges, sfp/assets/demo/sfp-demo-bpe.txt.gz


def demo_paths(cache_dir: str | Path) -> DemoPaths:
    data_root = Path(cache_dir) / "demo"
    return DemoPaths(
        data_root=data_root,
        voc_root=data_root / "VOCdevkit" / "VOC2012",
        checkpoint=SHIPPED_DIR / WEIGHTS_NAME,
        tokenizer=SHIPPED_DIR / BPE_NAME,
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


def shipped_checksums(directory: Path = SHIPPED_DIR) -> dict:
    """{file name: SHA-256} from the shipped ``SHA256SUMS`` (``sha256sum`` format)."""
    sums = {}
    path = directory / CHECKSUMS
    if path.is_file():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                digest, name = line.split(maxsplit=1)
                sums[name.lstrip("*")] = digest
    return sums


def verify_shipped_model(directory: Path = SHIPPED_DIR) -> None:
    """Raise WeightsError unless the shipped weights and BPE file exist and match SHA256SUMS."""
    sums = shipped_checksums(directory)
    for name in (WEIGHTS_NAME, BPE_NAME):
        path = directory / name
        if not path.is_file():
            raise WeightsError(f"the shipped demo file {path} is missing (is this a complete clone?); "
                                 "`python experiments/train_demo_clip.py --install` rebuilds it")
        if name not in sums:
            raise WeightsError(f"{directory / CHECKSUMS} has no checksum for {name}")
        actual = file_sha256(path)
        if actual != sums[name]:
            raise WeightsError(f"{path} has SHA-256 {actual}, expected {sums[name]} from {directory / CHECKSUMS}: "
                                 "the file is damaged (a Git LFS pointer or an interrupted copy?)")


def prepare(
    cache_dir: str | Path,
    force: bool = False,
    benchmark: Optional[BenchmarkSettings] = None,
    log: Callable[[str], None] = _print,
) -> DemoPaths:
    """Generate the demo benchmark where missing or out of date, and check the shipped model.

    ``benchmark`` overrides the default settings (tests use tiny ones); a change of settings (or
    of ``DEMO_VERSION``) rebuilds it. ``force`` rebuilds it regardless.
    """
    benchmark = benchmark or BenchmarkSettings()
    paths = demo_paths(cache_dir)
    paths.data_root.mkdir(parents=True, exist_ok=True)
    manifest_path = paths.data_root / MANIFEST
    manifest = {} if force else _read_manifest(manifest_path)
    t0 = time.time()
    verify_shipped_model(paths.checkpoint.parent)
    log(f"[demo] shipped model verified: {paths.checkpoint}")

    want_bench = {"version": DEMO_VERSION, "settings": asdict(benchmark)}
    if manifest.get("benchmark") == want_bench and _benchmark_complete(paths.voc_root, benchmark):
        log(f"[demo] benchmark up to date: {paths.voc_root}")
        log("[demo] nothing to do")
        return paths
    log(f"[demo] writing the synthetic benchmark to {paths.voc_root}")
    manifest = {}
    _write_manifest(manifest_path, manifest)
    devkit = paths.data_root / "VOCdevkit"
    if devkit.exists():
        shutil.rmtree(devkit)
    write_benchmark(paths.voc_root, benchmark, log=log)
    manifest["benchmark"] = want_bench
    _write_manifest(manifest_path, manifest)
    log(f"[demo] done in {time.time() - t0:.1f}s")
    return paths
