"""`python -m sfp.tracking.sync RUNS_DIR`: upload the offline W&B runs of finished jobs only.

A job that was killed or failed leaves an offline W&B run beside a missing or unfinished `results.json`;
`wandb sync` on a glob would upload it as if it were a result. This selects the runs whose job folder holds a
complete record and hands exactly those to `wandb sync` (`--dry-run` prints them instead).
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path
from typing import List, Optional, Tuple

from .results_store import RESULTS_FILENAME, ResultsError, read_results


def offline_runs(folder: Path) -> Tuple[List[Path], List[Tuple[Path, str]]]:
    """(runs of complete jobs, [(run, why it is left out)]) below `folder`, in path order."""
    keep, skip = [], []
    for run in sorted(Path(folder).rglob("wandb/offline-run-*")):
        if not run.is_dir():
            continue
        record = run.parent.parent / RESULTS_FILENAME
        try:
            status = read_results(record).get("status") if record.is_file() else "no results.json"
        except ResultsError as exc:
            status = f"unreadable results.json ({exc})"
        if status == "complete":
            keep.append(run)
        else:
            skip.append((run, f"job not complete: {status}"))
    return keep, skip


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sfp.tracking.sync", description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="a folder of jobs (a sweep, outputs/, ...)")
    parser.add_argument("--dry-run", action="store_true", help="print the runs that would be uploaded")
    args = parser.parse_args(argv)
    if not args.runs.is_dir():
        print(f"error: {args.runs} is not a folder", file=sys.stderr)
        return 2
    keep, skip = offline_runs(args.runs)
    for run, why in skip:
        print(f"left out: {run} ({why})", file=sys.stderr)
    if not keep:
        print(f"no offline W&B run of a complete job below {args.runs}", file=sys.stderr)
        return 0
    if args.dry_run:
        print("\n".join(str(run) for run in keep))
        return 0
    wandb = shutil.which("wandb")
    if wandb is None:
        print("error: the wandb command is not installed (pip install wandb)", file=sys.stderr)
        return 2
    return subprocess.call([wandb, "sync", *map(str, keep)])


if __name__ == "__main__":
    sys.exit(main())
