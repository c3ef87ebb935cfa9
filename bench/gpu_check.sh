#!/usr/bin/env bash
# One device-machine call: the GPU tests and the GPU benchmarks, each under its own time limit.
# Usage (on the lent machine, from the repo root; wheels of av/webdataset/braceexpand in .whl/ when the
# image lacks them):   bash bench/gpu_check.sh [tests,post,mfu,attention,transnet,generate,trained]   (results under $OUT)
set -u
OUT=${OUT:-out/gpu}; mkdir -p "$OUT"
PARTS=${1:-tests,post,mfu,attention,generate}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm --format=csv
python3 -c "import torch, av; print('torch', torch.__version__, torch.cuda.get_device_name(), 'av', av.__version__)"
FAILED=0
run() {
  local limit=$1 name=$2 rc; shift 2; echo "=== $name"
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1; rc=$?; echo "rc=$rc"; [ $rc -eq 0 ] || FAILED=1
  grep -v Warning "$OUT/$name.log" | grep -v "return torch" | tail -n 14
}
has() { [[ ",$PARTS," == *",$1,"* ]]; }
has tests && run 170 gpu_tests python3 -m pytest -q -p no:cacheprovider -m "gpu and not slow" tests/test_train_gpu.py
has post && run 170 post_gpu python3 -m pytest -q -p no:cacheprovider tests/test_posttrain_gpu.py
has mfu && run 200 mfu_high python3 -m bench.train --mfu --compile --mfu-stage video-high --steps 6 --warmup 3 --json "$OUT/mfu_high.json"
has mfu && run 150 mfu_low python3 -m bench.train --mfu --compile --mfu-stage video-low --mfu-batch 4 --steps 6 --warmup 3 --json "$OUT/mfu_low.json"
has attention && run 90 attention python3 -m bench.attention --dim 512 --heads 8 --text-len 256 --sizes 8x16x16,16x32x32,31x32x56 --budget-s 80 --json "$OUT/attention.json"
# TransNetV2 alone on CUDA and on this machine's CPU, each at fp32 and bf16 (CUDA / CPU only at equal precision)
has transnet && run 120 transnet python3 bench/transnet_gpu.py --frames 20000 --cpu-frames 1000 --json "$OUT/transnet_gpu.json"
has generate && run 120 generate python3 -m bench.generate --device cuda --json "$OUT/generate.json"
# trained demo teacher and students copied into .gpu_data/ (teacher, cfg, tscd4, thin; see bench/README.md)
has trained && run 240 generate_trained python3 -m bench.generate --device cuda --teacher .gpu_data/teacher \
  --cfg-student .gpu_data/cfg --tscd-student .gpu_data/tscd4 --thin-decoder .gpu_data/thin --json "$OUT/generate_trained.json"
exit $FAILED
