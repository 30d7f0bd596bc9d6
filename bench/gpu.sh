#!/usr/bin/env bash
# The GPU checks in one command (a lent GPU machine with torch, transformers and numba; no network):
# the CUDA-only tests, then `bench decode` and `bench live` on random small and large MusicGens,
# built once on the GPU in bf16. Tables go to stdout, JSON and logs to $1 (default bench/results).
#   bash bench/gpu.sh [OUT_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-bench/results}"; mkdir -p "$out"
models=/tmp/expotion-bench-models
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python3 -c "import torch; print(torch.__version__, torch.cuda.get_device_name())"
python3 -m pytest -q -p no:cacheprovider tests/test_model_stream.py 2>&1 | tail -3
python3 - "$models" <<'PY'
import sys, pathlib, torch
from expotion_live.testing.random_musicgen import save_random_musicgen
for preset in ("small", "large"):
    if not (pathlib.Path(sys.argv[1]) / preset / "config.json").exists():
        save_random_musicgen(pathlib.Path(sys.argv[1]) / preset, preset=preset, seed=0, dtype=torch.bfloat16, device="cuda")
PY
for preset in small large; do
  python3 bench/decode.py --device cuda --model "$models/$preset" --precisions bf16 --steps 250 \
    --json "$out/decode-$preset.json" 2>&1 | grep -v Warning | tee "$out/decode-$preset.log"
done
python3 bench/live.py --device cuda --models small,large --precisions bf16 --chunks 0.25,0.5 --contexts 4 \
  --windows 30 --seconds 12 --model-cache "$models" --json "$out/live.json" 2>&1 | tee "$out/live.log"
