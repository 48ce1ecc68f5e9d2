"""Reproduce the shipped demo CLIP (`sfp/assets/demo/`): the plain CLIP loss on the synthetic world.

    python experiments/train_demo_clip.py                      # train into outputs/demo_clip (resumes)
    python experiments/train_demo_clip.py --check              # ... then compare with the shipped SHA-256
    python experiments/train_demo_clip.py --install            # ... then copy into sfp/assets/demo/
    python experiments/train_demo_clip.py --set steps=100 --out-dir /tmp/quick   # any recipe field

The recipe is `sfp.demo.train.TrainSettings` (its defaults made the shipped weights). An
interrupted run continues from its last checkpoint (every `save_every` steps) with the same
result. Curves go to `{out_dir}/train_log.csv`, and to W&B with `--wandb offline|online`.
Bit-identical weights need the same torch version and thread count (recorded in summary.json).
"""
from __future__ import annotations

import argparse
import ast
import json
import re
import shutil
import sys
from dataclasses import asdict
from pathlib import Path

from sfp.demo import train as demo_train
from sfp.demo.assets import CHECKSUMS, SHIPPED_DIR, shipped_checksums

SHIPPED_FILES = (demo_train.WEIGHTS_NAME, demo_train.BPE_NAME, "model_config.json", "settings.json",
                 demo_train.LOG_NAME, "summary.json")


def _parse_sets(items):
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def _wandb_logger(mode: str, settings, out_dir: Path):
    if mode == "disabled":
        return None, None
    import wandb

    run = wandb.init(project="sfp-demo-clip", mode=mode, dir=str(out_dir), config=asdict(settings),
                     settings=wandb.Settings(silent=True))
    return run, (lambda step, row: run.log({k: v for k, v in row.items() if k != "step"}, step=step))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out-dir", default="outputs/demo_clip", help="run folder (default: outputs/demo_clip)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override recipe fields")
    parser.add_argument("--no-resume", action="store_true", help="start from scratch even if a checkpoint exists")
    parser.add_argument("--wandb", choices=["disabled", "offline", "online"], default="disabled")
    parser.add_argument("--check", action="store_true", help="compare the result with the shipped SHA-256")
    parser.add_argument("--install", action="store_true", help="copy the result into sfp/assets/demo/")
    args = parser.parse_args(argv)

    fields = asdict(demo_train.TrainSettings())
    fields.update(_parse_sets(args.set))
    try:
        settings = demo_train.settings_from_dict(fields)
    except ValueError as exc:
        raise SystemExit(f"--set: {exc}")
    out_dir = Path(args.out_dir)
    run, on_step = _wandb_logger(args.wandb, settings, out_dir.parent if out_dir.parent.exists() else Path("."))
    try:
        summary = demo_train.train(out_dir, settings, resume=not args.no_resume, on_step=on_step)
    finally:
        if run is not None:
            run.finish()
    print(json.dumps(summary, indent=2, sort_keys=True))

    status = 0
    if args.check:
        shipped = shipped_checksums()
        for name, key in ((demo_train.WEIGHTS_NAME, "weights_sha256"), (demo_train.BPE_NAME, "bpe_sha256")):
            same = shipped.get(name) == summary[key]
            print(f"{name}: {'identical to' if same else 'DIFFERS from'} the shipped file "
                  f"({summary[key][:16]} vs {str(shipped.get(name))[:16]})")
            status |= 0 if same else 1
    if args.install:
        SHIPPED_DIR.mkdir(parents=True, exist_ok=True)
        for name in SHIPPED_FILES:
            shutil.copyfile(out_dir / name, SHIPPED_DIR / name)
        lines = [f"{summary['weights_sha256']}  {demo_train.WEIGHTS_NAME}", f"{summary['bpe_sha256']}  {demo_train.BPE_NAME}"]
        (SHIPPED_DIR / CHECKSUMS).write_text("\n".join(lines) + "\n", encoding="utf-8")
        backbone = Path(__file__).resolve().parents[1] / "conf" / "backbone" / "demo.yaml"
        text = re.sub(r"(?m)^checkpoint_sha256: .*$", f"checkpoint_sha256: {summary['weights_sha256']}",
                      backbone.read_text(encoding="utf-8"))
        backbone.write_text(text, encoding="utf-8")
        print(f"installed into {SHIPPED_DIR}; {backbone} now expects SHA-256 {summary['weights_sha256']}")
    return status


if __name__ == "__main__":
    sys.exit(main())
