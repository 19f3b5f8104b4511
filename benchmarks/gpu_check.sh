#!/usr/bin/env bash
# The one prepared script that measures every GPU figure of tomo4d in one call on a lent GPU machine
# (python3 there holds torch with CUDA; nothing can be fetched).  Run from the repository root:
#     bash benchmarks/gpu_check.sh            # figures -> $OUT (or ./gpu_out): gpu.txt, gpu_figures.json, log
# Without a GPU it degrades to a CPU dry-run of the code paths that says so ("dry_run" in the JSON).
# Issue 19's GPU acceptance (reference preset, 512^2 crops, steps/s fp32 vs bf16, a training run within
# the time budget with its final validation figures) is the indi_train part: --only indi_train.
# Packages the machine lacks can be carried as wheels in benchmarks/_wheels (ignored by git):
#     .venv/bin/pip download --only-binary=:all: --python-version 3.12 -d benchmarks/_wheels pydantic zarr dask
# Record the figures in benchmarks/RESULTS.md with the GPU's name.
set -uo pipefail
export PYTHONPATH=src PYTHONUNBUFFERED=1
OUT=${OUT:-gpu_out}
mkdir -p "$OUT"
if [ -d benchmarks/_wheels ]; then
  python3 -m pip install -q --no-index --find-links benchmarks/_wheels benchmarks/_wheels/*.whl || true
fi
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
else   # no GPU: gpu_figures.py runs as a CPU dry-run and says so in every output
  echo "no nvidia-smi: CPU dry-run (figures are NOT GPU figures)" | tee "$OUT/gpu.txt"
fi
python3 -c "import tomo4d, torch; print('tomo4d', tomo4d.__version__, 'torch', torch.__version__, torch.cuda.is_available())"
timeout 540 python3 benchmarks/gpu_figures.py --out "$OUT/gpu_figures.json" "$@" 2>&1 | tee "$OUT/gpu_log.txt"
