"""Extending the framework, as the README's "Extending" section says: a new method is one module plus one
preset file, a new dataset with an existing layout one dataset file plus one class-name file. Both are added
to a copy of the project and run end to end through main.py, with no other file edited."""
from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.data_layouts_fixture import build_layout
from tests.helpers import REPO, project_copy, tiny_overrides

NEW_METHOD = '''
"""KK-CLIP: key-key attention with a scale of its own in the last block (reduced): an example peer."""
from __future__ import annotations

from dataclasses import dataclass

from ..config.checks import positive
from ..config.schema import MethodSettings
from .base import register_method
from .last_block import LastBlockMethod


@dataclass
class KKSettings(MethodSettings):
    scale: float = 1.0  # multiplies the key-key logits

    def validate(self, prefix: str = "method") -> None:
        positive(f"{prefix}.scale", self.scale)


@register_method("kkclip")
class KKCLIPDense(LastBlockMethod):
    Settings = KKSettings

    def attention(self, q, k, grid):
        return self.tower.self_attention(k * self.settings.scale, k)
'''

NEW_PRESET = '''
# @package _global_
# KK-CLIP: key-key attention in the last block.
defaults:
  - /method_settings@method: kkclip
  - override /mitigator: 'off'
  - override /enhancer: 'off'
  - override /integrator: 'off'
  - override /aggregation: 'off'

preset:
  label: KK-CLIP (example)
'''

NEW_DATASET = '''
# A VOC-layout dataset of its own: its images, its class names.
toyvoc:
  label: ToyVOC
  with_background: true
  root: ${paths.data_root}/VOCdevkit/VOC2012
  class_names: toyvoc
  logit_scale: 50.0
  short_side: 40
'''


def test_a_new_method_and_a_new_dataset_are_one_module_one_preset_one_dataset_file_one_class_file(tmp_path):
    project = project_copy(tmp_path / "project")
    (project / "sfp" / "methods" / "kkclip.py").write_text(NEW_METHOD.lstrip())
    (project / "conf" / "method" / "kkclip.yaml").write_text(NEW_PRESET.lstrip())
    (project / "conf" / "datasets" / "toyvoc.yaml").write_text(NEW_DATASET.lstrip())
    classes = (REPO / "sfp" / "data" / "class_names" / "voc21.txt").read_text()
    (project / "sfp" / "data" / "class_names" / "toyvoc.txt").write_text(classes)
    build_layout("voc21", tmp_path / "data", n=2)

    overrides = [o for o in tiny_overrides(tmp_path) if not o.startswith("datasets=")]
    env = {**os.environ, "PYTHONPATH": str(project)}
    sweep = tmp_path / "sweep"
    run = subprocess.run(
        [sys.executable, "main.py", "-m", "method=kkclip,clip", "datasets=[toyvoc]", *overrides,
         f"hydra.sweep.dir={sweep}"], cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    records = {json.loads(p.read_text())["choices"]["method"]: json.loads(p.read_text())
               for p in sweep.glob("*/results.json")}
    assert set(records) == {"kkclip", "clip"}
    kk = records["kkclip"]
    assert kk["status"] == "complete" and kk["config"]["method"] == {"name": "kkclip", "scale": 1.0}
    assert kk["metrics"]["toyvoc"]["n_images"] == 2 and kk["config"]["datasets"]["toyvoc"]["label"] == "ToyVOC"

    knob = subprocess.run([sys.executable, "main.py", "method=kkclip", "method.scale=0", "datasets=[toyvoc]",
                           *overrides], cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert knob.returncode == 2 and "method.scale=0.0 is out of range" in knob.stdout + knob.stderr

    table = subprocess.run([sys.executable, "-m", "analysis", "main", "--no-published", "--runs", str(sweep)],
                           cwd=project, env=env, capture_output=True, text=True, timeout=600)
    assert table.returncode == 0, table.stderr[-3000:]
    assert "KK-CLIP (example)" in table.stdout and "ToyVOC" in table.stdout
