"""The documented commands run as written. A fenced block preceded by `<!-- doc-test -->` in README.md,
analysis/README.md or experiments/README.md runs on the embedded demo in a copy of the project, in document
order (later blocks may use what earlier ones wrote); `<!-- doc-test: reduced -->` marks a study that runs
on the first 2 demo images (`datasets.demo.max_images=2` added to its `main.py` lines), and `<date>/<time>`
placeholders stand for the one sweep folder the block wrote. Then every inline `python ...` command of the
documents that runs on the demo as written (see NOT_RUN for those that cannot), a whole study reduced so."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Iterator, NamedTuple

import pytest

from tests.helpers import REPO, project_copy

DOCS = ("README.md", "analysis/README.md", "experiments/README.md")
MARKED = re.compile(r"<!-- doc-test(?::\s*(?P<mode>\w+))? -->\n```(?P<lang>\w+)\n(?P<code>.*?)```", re.S)
INLINE = re.compile(r"`(python [^`]+)`")
# Inline commands not run: placeholders or real data, the network, 25 minutes of training, ViT-B/16 studies
# timed on the CPU (tests/test_bench.py runs them on the tiny model), the extending example's files, and
# module names mentioned without arguments.
NOT_RUN = ("<", "...", "/path", "/data", "ENTITY", "open_clip.create_model", "timm.create_model",
           "train_demo_clip.py --check",
           "sfp.bench --study", "kkclip", "toyvoc")
MENTIONS = ("python -m analysis", "python -m sfp.tracking.sync")


class Block(NamedTuple):
    where: str
    mode: str
    lang: str
    code: str


def marked_blocks() -> Iterator[Block]:
    for doc in DOCS:
        text = (REPO / doc).read_text()
        for match in MARKED.finditer(text):
            line = text[:match.start()].count("\n") + 1
            yield Block(f"{doc}:{line}", match["mode"] or "as-written", match["lang"], match["code"])


def inline_commands() -> Iterator[Block]:
    """Inline `python ...` commands of the documents that run on the demo as written."""
    for doc in DOCS:
        text = MARKED.sub("", (REPO / doc).read_text())
        for command in dict.fromkeys(" ".join(c.split()) for c in INLINE.findall(text)):
            analysis_without_runs = command.startswith("python -m analysis") and "--runs" not in command
            if command in MENTIONS or analysis_without_runs or any(part in command for part in NOT_RUN):
                continue
            # a whole study is run on the reduced demo
            mode = "reduced" if " -m " in command and "+experiment=" in command else "as-written"
            yield Block(f"{doc} (inline)", mode, "bash", command + "\n")


def commands(block: Block) -> Iterator[str]:
    if block.lang == "python":
        yield f"{sys.executable} - <<'PYTHON'\n{block.code}PYTHON"
        return
    for line in block.code.replace("\\\n", " ").splitlines():  # continuation lines joined
        line = line.split("  #")[0].strip()
        if not line or line.startswith("#"):
            continue
        if block.mode == "reduced" and " main.py " in f" {line} ":
            line += " datasets.demo.max_images=2"  # main.py is the last command of such a line
        yield line.replace("python ", f"{sys.executable} ", 1).replace("<date>/<time>", "*/*")


def test_the_documents_mark_demo_commands_and_each_is_bash_or_python():
    blocks = list(marked_blocks())
    assert len(blocks) >= 3 and all(block.lang in ("bash", "python") for block in blocks)
    assert all(block.mode in ("as-written", "reduced") for block in blocks)
    inline = [block.code.strip() for block in inline_commands()]
    assert "python main.py" in inline and "python main.py --cfg job" in inline


@pytest.mark.slow
def test_every_marked_command_runs_as_written_on_the_demo(tmp_path):
    project = project_copy(tmp_path / "project")
    env = {k: v for k, v in os.environ.items() if not k.startswith("SFP_")}
    env.update(PYTHONPATH=str(project), HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}")  # as in an activated venv
    for block in [*marked_blocks(), *inline_commands()]:
        for command in commands(block):
            result = subprocess.run(["bash", "-euo", "pipefail", "-c", command], cwd=project, env=env,
                                    capture_output=True, text=True, timeout=900)
            assert result.returncode == 0, f"{block.where}: {command}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
            assert "Traceback" not in result.stderr, f"{block.where}: {command}\n{result.stderr[-3000:]}"
