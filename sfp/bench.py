"""Speed benchmark: images per second of the evaluation pipeline for several methods, same images and weights.

    python -m sfp.bench --device cpu                   # ViT-B/16 shapes, random weights, VOC-sized images
    python -m sfp.bench --device cuda --backbones vit_b16 vit_l14 --images 64

It writes VOC-sized (500x375) random JPEG images and PNG label maps in the PASCAL VOC layout to a temporary
folder. Per variant and backbone it measures, in one process and on those files: the full evaluation pipeline
(`sfp.evaluation.evaluate_dataset`: decode in DataLoader workers, resize, windows, forward, upsampling,
post-processing, metric) in images/s; the bare `dense_features` forward over the same crops, batched (the
limit); the same pipeline one window at a time (batch 1); and the peak memory. The variants of a backbone
are built first and timed in interleaved rounds (every variant, every measurement), each time the best of
`--repeats` rounds. `efficiency` = pipeline / bare forward, `speedup` = pipeline / batch-1 loop,
`same_metrics_as_batch1` whether both gave identical intersections and unions. The last printed line is one
JSON object with every figure, keyed by device, variant and backbone. Weights are random (the backbone's
architecture without its pretrained tag), so no download is needed; the numbers measure cost, not quality.

    python -m sfp.bench --study ablation_components main_table --images 4      # shared passes vs one by one

`--study NAME` times a named experiment's grid (restricted to each of `--backbones`) on the same files, in one
process: every job evaluated alone, one after another (`separate_s`), and the jobs in shared passes
(`grouped_s`), model loading excluded from both (it is negligible over a real benchmark); best of
`--repeats` interleaved rounds after one untimed warm-up job. `identical` says whether every job's
intersections and unions are equal in both modes. The per-layer statistics are as the experiment sets them
(on), whatever `--stats` says; templates are the single prompt in both modes, as above.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np
import torch

from .config import catalog

# Every method preset, plus SFP with all components off.
VARIANTS: Dict[str, List[str]] = {
    **{preset: [f"method={preset}"] for preset in catalog.presets()},
    "sfp_all_off": ["method=sfp", "mitigator=off", "enhancer=off", "integrator=off", "aggregation=off"],
}
IMAGE_SIZE = (375, 500)  # (H, W) of a typical PASCAL VOC image


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def write_voc_files(data_root: Path, count: int, seed: int = 0) -> Path:
    """`count` random VOC-sized JPEG images and PNG label maps in the PASCAL VOC layout under data_root."""
    from PIL import Image

    from sfp.data import load_class_names

    num_classes = load_class_names("voc21").num_classes
    voc = Path(data_root) / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / folder).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    ids = [f"bench_{i:05d}" for i in range(count)]
    for name in ids:
        image = rng.integers(0, 256, (*IMAGE_SIZE, 3), dtype=np.uint8)
        Image.fromarray(image).save(voc / "JPEGImages" / f"{name}.jpg", quality=95)
        Image.fromarray(rng.integers(0, num_classes, IMAGE_SIZE).astype(np.uint8)).save(
            voc / "SegmentationClass" / f"{name}.png")
    (voc / "ImageSets" / "Segmentation" / "val.txt").write_text("\n".join(ids) + "\n")
    return voc


def _same(a: Dict, b: Dict) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # NaN cells compare equal too


class VariantBench:
    """One variant on one backbone: its model, the crops of the benchmark files, and its best times.

    All variants of a backbone are built first and then timed in interleaved rounds, so that a slow spell of
    a shared machine hits every variant and every measurement alike."""

    def __init__(self, overrides: Sequence[str], work_dir: Path):
        import sfp
        from sfp.config.protocol import effective_protocol
        from sfp.data import build_dataset
        from sfp.engine.device import resolve_dtype
        from sfp.engine.preprocess import normalize, rescaled_size, resize_image
        from sfp.engine.windows import sliding_windows

        self.cfg = sfp.compose(list(overrides))
        self.batch1_cfg = sfp.compose(list(overrides) + ["inference.batch_size=1", "inference.images_per_batch=1"])
        self.model = sfp.build_model(self.cfg)
        self.device = self.model.device
        self.dtype = resolve_dtype(self.cfg.inference.precision, self.device)
        self.dataset = build_dataset(self.cfg.datasets["voc21"], "voc21")
        self.work_dir = work_dir
        self.outcomes: Dict[str, object] = {}
        # The same crops the pipeline cuts, fed straight to the model: the bare-forward limit.
        protocol = effective_protocol(self.cfg, "voc21")
        crops = []
        for index in range(len(self.dataset)):
            image = self.dataset[index].image
            resized = normalize(resize_image(image, rescaled_size(*image.shape[:2], protocol.short_side,
                                                                  protocol.max_long_side), device=self.device))
            crops += [resized[:, w.top:w.bottom, w.left:w.right] for w in
                      sliding_windows(resized.shape[1], resized.shape[2], protocol.crop, protocol.stride)]
        self.crops = torch.stack(crops)
        self.queries = None  # the class text, for methods whose features read it
        if self.model.method.uses_queries:
            from sfp.data import load_class_names

            names = load_class_names(self.cfg.datasets["voc21"].class_names)
            self.queries = self.model.encode_queries(names.synonyms, self.cfg.inference.templates)
        self.timings = {"pipeline": float("inf"), "bare_forward": float("inf"), "batch1": float("inf")}
        self.peak_bytes = 0
        self._evaluate(self.cfg, "warm-up")  # kernels, caches, the text embeddings

    def _evaluate(self, run_cfg, label: str) -> None:
        from sfp.evaluation import evaluate_dataset

        with contextlib.redirect_stderr(io.StringIO()):  # the progress bar
            self.outcomes[label] = evaluate_dataset(run_cfg, self.dataset, self.model, self.work_dir)

    def _bare(self) -> None:
        from sfp.engine.inference import autocast_context

        batch = self.cfg.inference.batch_size
        with torch.no_grad(), autocast_context(self.device, self.dtype):
            for start in range(0, len(self.crops), batch):
                self.model.dense_features(self.crops[start:start + batch], queries=self.queries, background=True)

    def run_round(self) -> None:
        measured = (("pipeline", lambda: self._evaluate(self.cfg, "pipeline")), ("bare_forward", self._bare),
                    ("batch1", lambda: self._evaluate(self.batch1_cfg, "batch1")))
        cuda = self.device.type == "cuda"
        for label, fn in measured:
            _sync(self.device)
            if cuda:  # what this variant allocates on top of what is resident (every variant's weights)
                resident = torch.cuda.memory_allocated(self.device)
                torch.cuda.reset_peak_memory_stats(self.device)
            started = time.perf_counter()
            fn()
            _sync(self.device)
            self.timings[label] = min(self.timings[label], time.perf_counter() - started)
            if cuda:
                self.peak_bytes = max(self.peak_bytes, torch.cuda.max_memory_allocated(self.device) - resident)

    def figures(self) -> Dict[str, float]:
        n, timings = len(self.dataset), self.timings
        if self.device.type == "cuda":  # the variant's own weights plus the most its evaluation allocated
            weights = sum(p.numel() * p.element_size() for p in self.model.parameters())
            peak_mb = (weights + self.peak_bytes) / 2**20
        else:  # the process's high-water mark (Linux: KiB); every variant of the run is resident
            peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {
            "pipeline_images_per_s": n / timings["pipeline"],
            "bare_forward_images_per_s": n / timings["bare_forward"],
            "crops_per_image": len(self.crops) / n,
            "batch1_images_per_s": n / timings["batch1"],
            "efficiency": timings["bare_forward"] / timings["pipeline"],
            "speedup": timings["batch1"] / timings["pipeline"],
            "same_metrics_as_batch1": _same(self.outcomes["pipeline"].metrics, self.outcomes["batch1"].metrics),
            "peak_memory_mb": peak_mb,
        }


def study_figures(experiment: str, backbone: str, common: Sequence[str], work_dir: Path,
                  repeats: int) -> Dict[str, object]:
    """Time one experiment's grid on one backbone: every job alone vs the jobs in shared passes."""
    import sfp
    from sfp.assembly import sweep_jobs
    from sfp.grouping import group_indices
    from sfp.runner import run_jobs

    jobs: List[List[str]] = []  # the grid with its backbone axis replaced by this backbone
    for job in sweep_jobs([f"+experiment={experiment}"]):
        job = [o for o in job if not o.startswith("backbone=")]
        if job not in jobs:
            jobs.append(job)
    runs = [sfp.compose(job + [f"backbone={backbone}", *common]) for job in jobs]
    with contextlib.redirect_stderr(io.StringIO()):  # the progress bars
        run_jobs(runs[:1], [work_dir / f"{experiment}-{backbone}-warm-up"])  # kernels, text embeddings
    best = {"separate": float("inf"), "grouped": float("inf")}
    outcomes = {}
    for round_ in range(repeats):
        for mode in best:
            dirs = [work_dir / f"{experiment}-{backbone}-{mode}-{round_}-{i}" for i in range(len(runs))]
            started = time.perf_counter()
            with contextlib.redirect_stderr(io.StringIO()):
                results = run_jobs(runs, dirs, grouped=mode == "grouped")
            wall = time.perf_counter() - started
            failed = [str(r.error) for r in results if not r.ok]
            if failed:
                raise SystemExit(f"study {experiment} on {backbone}: a job failed: {failed[0]}")
            loading = sum(r.record["timing"]["model_load_s"] / r.record["evaluation"]["jobs_in_pass"] for r in results)
            best[mode] = min(best[mode], wall - loading)
            outcomes[mode] = [r.record["areas"] for r in results]
    return {"variants": len(runs), "groups": len(group_indices(runs)), "separate_s": best["separate"],
            "grouped_s": best["grouped"], "speedup": best["separate"] / best["grouped"],
            "identical": _same(outcomes["separate"], outcomes["grouped"])}


def main(argv: Sequence[str] = ()) -> int:
    parser = argparse.ArgumentParser(prog="python -m sfp.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--backbones", nargs="+", default=["vit_b16"], choices=["vit_b16", "vit_l14", "tiny"],
                        help="architectures to time (random weights; tiny is a smoke check)")
    parser.add_argument("--images", type=int, default=4, help="number of VOC-sized (500x375) images")
    parser.add_argument("--repeats", type=int, default=2,
                        help="timed rounds over every variant and measurement (the best time is kept)")
    parser.add_argument("--variants", nargs="*", default=None, choices=sorted(VARIANTS),
                        help="variants to time (default: clip sfp sfp_early, or none with --study)")
    parser.add_argument("--study", nargs="+", default=[], metavar="EXPERIMENT",
                        help="named experiments whose grids are timed in shared passes vs one job at a time")
    parser.add_argument("--stats", action="store_true", help="also collect the per-layer outlier statistics")
    parser.add_argument("--precision", default="float32", choices=["float32", "float16", "bfloat16"])
    parser.add_argument("--workers", type=int, default=None,
                        help="DataLoader workers decoding the files (default: 0 on a CPU, whose cores the "
                             "forward pass uses, 4 on a GPU)")
    args = parser.parse_args(list(argv) or None)
    if args.images < 1 or args.repeats < 1:
        parser.error(f"--images and --repeats must be >= 1, got {args.images} and {args.repeats}")
    workers = args.workers if args.workers is not None else (0 if args.device == "cpu" else 4)
    if args.variants is None:
        args.variants = [] if args.study else ["clip", "sfp", "sfp_early"]
    from sfp.config.locations import experiments_dir

    known = sorted(p.stem for p in (experiments_dir() / "experiment").glob("*.yaml"))
    unknown = [name for name in args.study if name not in known]
    if unknown:
        parser.error(f"--study {unknown[0]}: not a named experiment (known: {', '.join(known)})")

    results: Dict[str, Dict[str, Dict[str, float]]] = {}
    studies: Dict[str, Dict[str, Dict[str, object]]] = {}
    print(f"{'variant':<14}{'backbone':<10}{'pipeline':>10}{'bare':>10}{'batch-1':>10}{'effic.':>8}"
          f"{'speedup':>9}{'peak MB':>9}   (images/s)")
    with tempfile.TemporaryDirectory(prefix="sfp-bench-") as tmp:
        work_dir = Path(tmp)
        write_voc_files(work_dir / "data", args.images)
        for backbone in args.backbones:
            # random weights; a VFM-assisted method gets its VFM's architecture with random weights too
            vfm = ["vfm=tiny_dino"] if backbone == "tiny" else ["vfm.pretrained=null"]
            common = [f"backbone={backbone}", "backbone.pretrained=null", *vfm, "tracker=none", "datasets=[voc21]",
                      f"paths.data_root={work_dir / 'data'}", f"paths.cache_dir={work_dir / 'cache'}",
                      f"paths.output_dir={work_dir / 'outputs'}", f"inference.num_workers={workers}",
                      f"inference.device={args.device}", f"inference.precision={args.precision}",
                      "inference.templates=single", f"stats.enabled={str(args.stats).lower()}"]
            for experiment in args.study:
                as_run = [o for o in common if not o.startswith("stats.")]  # statistics as the experiment sets them
                figures = study_figures(experiment, backbone, as_run, work_dir / "studies", args.repeats)
                studies.setdefault(experiment, {})[backbone] = figures
                print(f"study {experiment} on {backbone}: {figures['variants']} jobs in {figures['groups']} passes, "
                      f"one by one {figures['separate_s']:.1f} s, shared {figures['grouped_s']:.1f} s, speedup "
                      f"{figures['speedup']:.2f}, identical {str(figures['identical']).lower()}", flush=True)
            benches = {name: VariantBench(common + VARIANTS[name], work_dir / "outputs") for name in args.variants}
            for _ in range(args.repeats):
                for bench in benches.values():
                    bench.run_round()
            for name, bench in benches.items():
                figures = bench.figures()
                results.setdefault(name, {})[backbone] = figures
                print(f"{name:<14}{backbone:<10}{figures['pipeline_images_per_s']:>10.3f}"
                      f"{figures['bare_forward_images_per_s']:>10.3f}{figures['batch1_images_per_s']:>10.3f}"
                      f"{figures['efficiency']:>8.2f}{figures['speedup']:>9.2f}{figures['peak_memory_mb']:>9.0f}",
                      flush=True)
            del benches  # before the next backbone's models are built
    for name, per_backbone in results.items():
        for backbone, figures in per_backbone.items():
            if "clip" in results and backbone in results["clip"]:
                figures["cost_vs_clip"] = (results["clip"][backbone]["pipeline_images_per_s"]
                                           / figures["pipeline_images_per_s"])
    print(json.dumps({args.device: results, "studies": studies, "settings": {
        "torch": torch.__version__, "threads": torch.get_num_threads(), "images": args.images,
        "repeats": args.repeats, "stats": args.stats, "precision": args.precision, "workers": workers}}))
    return 0


def _main_with_clear_errors(argv: Sequence[str]) -> int:
    from sfp.errors import SFPError

    try:
        return main(argv)
    except SFPError as exc:  # e.g. --device cuda without a GPU
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(_main_with_clear_errors(sys.argv[1:]))
