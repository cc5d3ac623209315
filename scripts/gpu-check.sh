#!/usr/bin/env bash
# Every GPU check in one run on a machine with one CUDA GPU (the README's "On a GPU" section): the
# carried wheels installed, the gpu tests, the encode bench per decoder, the statistics bench; each
# log and figure under $OUT (default ./gpu-out). Sized to end within 8 minutes on one H100 with 16
# cores; each step has its own time limit, so a slow step costs its own figures only.
#
# Before, where pip reaches an index (the GPU machine may not):
#     ../shared/gpu/wheels.sh        # writes .whl/ with the missing wheels and install.sh
# Then on the GPU machine, from the project's root:
#     bash scripts/gpu-check.sh
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-gpu-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
begun=$(date +%s)
step() { echo "== $(($(date +%s) - begun)) s: $*" | tee -a "$out/steps.log"; }

step "install"
if [ -f .whl/install.sh ]; then
    bash .whl/install.sh 2>&1 | tee "$out/install.log" || exit 1
fi

step "gpu tests"
timeout 150 python3 -m pytest -m gpu -p no:cacheprovider -q -rA tests/test_gpu.py tests/test_nvjpeg.py \
    2>&1 | tee "$out/gpu-tests.log"

# the decoders that can reach the goal first (a PIL pipeline feeds a GPU at about one core's pace)
step "bench encode: opencv and nvjpeg, 200,000 CelebA-size JPEGs"
timeout 240 python3 -m latentdask.cli bench encode --device cuda --n 200000 --shard-size 16384 \
    --batch-size 1024 --decoder opencv --decoder nvjpeg --json "$out/bench-encode-gpu.json" \
    2>&1 | tee "$out/bench-encode-gpu.log"

step "bench stats: 10,000,000 x 256 on the device"
timeout 90 python3 -m latentdask.cli bench stats --device cuda --n 10000000 \
    --json "$out/bench-stats-gpu.json" 2>&1 | tee "$out/bench-stats-gpu.log"

step "done"
