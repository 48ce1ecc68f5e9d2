"""Speed benchmark: images per second of the evaluation pipeline for several methods, same images and weights.

    python -m sfp.bench --device cpu                   # ViT-B/16 shapes, random weights, VOC-sized images
    python -m sfp.bench --device cuda --backbones vit_b16 vit_l14 --images 16

Per variant and backbone it measures, in one process: the full pipeline (resize, windows, forward, upsampling,
post-processing, metric) in images/s; the bare `dense_features` forward over the same crops, batched (the
limit); the same pipeline one window at a time (batch 1); and the peak memory. `efficiency` = pipeline / bare
forward, `speedup` = pipeline / batch-1 loop. The last printed line is one JSON object with every figure,
keyed by device, variant and backbone. Weights are random (the backbone's
architecture without its pretrained tag), so no download is needed; the numbers measure cost, not quality.
"""
from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from typing import Dict, List, Sequence

import numpy as np
import torch

VARIANTS: Dict[str, List[str]] = {
    "clip": ["method=clip"],
    "maskclip": ["method=maskclip"],
    "sfp": ["method=sfp"],
    "sfp_all_off": ["method=sfp", "mitigator=off", "enhancer=off", "integrator=off", "aggregation=off"],
    "sfp_early": ["method=sfp_early"],
}


def _peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process-wide high-water mark (Linux: KiB)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_variant(overrides: Sequence[str], images: List[np.ndarray], labels: List[np.ndarray],
                  repeats: int) -> Dict[str, float]:
    import sfp
    from sfp.engine.preprocess import normalize, rescaled_size, resize_image
    from sfp.engine.windows import sliding_windows
    from sfp.metrics import IoUAccumulator

    cfg = sfp.compose(list(overrides))
    segmenter = sfp.Segmenter(cfg, dataset="voc21")
    model, device = segmenter.model, segmenter.model.device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    batch = int(cfg.inference.images_per_batch)

    def pipeline(images_per_batch=batch):
        accumulator = IoUAccumulator(segmenter.num_classes)
        for start in range(0, len(images), images_per_batch):
            for prediction, label in zip(segmenter.predict_batch(images[start:start + images_per_batch]),
                                         labels[start:start + images_per_batch]):
                accumulator.update(prediction, label)
        return accumulator

    def one_window_at_a_time():
        crops_per_forward = segmenter.cfg.inference.batch_size
        segmenter.cfg.inference.batch_size = 1
        try:
            pipeline(images_per_batch=1)
        finally:
            segmenter.cfg.inference.batch_size = crops_per_forward

    # The same crops the pipeline cuts, fed straight to the model: the bare-forward limit.
    protocol = segmenter.protocol
    crops = []
    for image in images:
        resized = normalize(resize_image(image, rescaled_size(*image.shape[:2], protocol.short_side,
                                                              protocol.max_long_side), device=device))
        crops += [resized[:, w.top:w.bottom, w.left:w.right]
                  for w in sliding_windows(resized.shape[1], resized.shape[2], protocol.crop, protocol.stride)]
    crops = torch.stack(crops)

    def bare():
        with torch.no_grad():
            for start in range(0, len(crops), int(cfg.inference.batch_size)):
                model.dense_features(crops[start:start + int(cfg.inference.batch_size)])

    pipeline()  # warm-up (kernels, caches)
    timings = {}
    for label, fn in (("pipeline", pipeline), ("bare_forward", bare), ("batch1", one_window_at_a_time)):
        best = float("inf")
        for _ in range(repeats):
            _sync(device)
            started = time.perf_counter()
            fn()
            _sync(device)
            best = min(best, time.perf_counter() - started)
        timings[label] = best
    return {
        "pipeline_images_per_s": len(images) / timings["pipeline"],
        "bare_forward_images_per_s": len(images) / timings["bare_forward"],
        "crops_per_image": len(crops) / len(images),
        "batch1_images_per_s": len(images) / timings["batch1"],
        "efficiency": timings["bare_forward"] / timings["pipeline"],
        "speedup": timings["batch1"] / timings["pipeline"],
        "peak_memory_mb": _peak_memory_mb(device),
    }


def main(argv: Sequence[str] = ()) -> int:
    parser = argparse.ArgumentParser(prog="python -m sfp.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--backbones", nargs="+", default=["vit_b16"], choices=["vit_b16", "vit_l14"],
                        help="architectures to time (random weights)")
    parser.add_argument("--images", type=int, default=4, help="number of VOC-sized (500x375) images")
    parser.add_argument("--repeats", type=int, default=2, help="timed repeats per measurement (best is kept)")
    parser.add_argument("--variants", nargs="+", default=["clip", "sfp", "sfp_early"], choices=sorted(VARIANTS))
    parser.add_argument("--stats", action="store_true", help="also collect the per-layer outlier statistics")
    parser.add_argument("--precision", default="float32", choices=["float32", "float16", "bfloat16"])
    args = parser.parse_args(list(argv) or None)

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (375, 500, 3), dtype=np.uint8) for _ in range(args.images)]
    labels = [rng.integers(0, 21, (375, 500)).astype(np.int64) for _ in range(args.images)]
    results: Dict[str, Dict[str, Dict[str, float]]] = {}
    print(f"{'variant':<14}{'backbone':<10}{'pipeline':>10}{'bare':>10}{'batch-1':>10}{'effic.':>8}"
          f"{'speedup':>9}{'peak MB':>9}   (images/s)")
    for backbone in args.backbones:
        common = [f"backbone={backbone}", "backbone.pretrained=null", "tracker=none", "datasets=[voc21]",
                  f"inference.device={args.device}", f"inference.precision={args.precision}",
                  "inference.templates=single", f"stats.enabled={str(args.stats).lower()}"]
        for name in args.variants:
            figures = bench_variant(common + VARIANTS[name], images, labels, args.repeats)
            results.setdefault(name, {})[backbone] = figures
            print(f"{name:<14}{backbone:<10}{figures['pipeline_images_per_s']:>10.3f}"
                  f"{figures['bare_forward_images_per_s']:>10.3f}{figures['batch1_images_per_s']:>10.3f}"
                  f"{figures['efficiency']:>8.2f}{figures['speedup']:>9.2f}{figures['peak_memory_mb']:>9.0f}",
                  flush=True)
    for name, per_backbone in results.items():
        for backbone, figures in per_backbone.items():
            if "clip" in results and backbone in results["clip"]:
                figures["cost_vs_clip"] = (results["clip"][backbone]["pipeline_images_per_s"]
                                           / figures["pipeline_images_per_s"])
    print(json.dumps({args.device: results, "settings": {
        "torch": torch.__version__, "threads": torch.get_num_threads(), "images": args.images,
        "repeats": args.repeats, "stats": args.stats, "precision": args.precision}}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
