#!/usr/bin/env bash
# The GPU checks in one script (about 8 minutes on one GPU; nothing here runs without one): the speed
# benchmark at the three precisions, the study benchmark (shared passes against one job at a time), and the
# tests that need a GPU. Record the printed figures in the README ("Performance", GPU).
#   bash experiments/gpu_check.sh            (PYTHON=... to choose the interpreter)
set -euo pipefail
PY=${PYTHON:-python}
cd "$(dirname "$0")/.."
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
$PY -c "import torch; assert torch.cuda.is_available(), 'no CUDA GPU visible to torch'; print(torch.__version__)"
bench() { $PY -m sfp.bench --device cuda --repeats 2 "$@"; }
bench --backbones vit_b16 vit_l14 --images 32
bench --backbones vit_b16 --images 16 --variants clip resclip cliper proxyclip
bench --backbones vit_b16 vit_l14 --images 32 --precision bfloat16 --variants clip sfp
bench --backbones vit_b16 --images 32 --precision float16 --variants clip sfp
bench --backbones vit_b16 vit_l14 --images 16 --study ablation_components main_table
$PY -m pytest -q tests/test_engine.py -k gpu
