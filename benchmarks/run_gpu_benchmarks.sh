#!/usr/bin/env bash
# Every GPU benchmark of docs/benchmarks.md in one run, on one CUDA device (about 5 minutes on an H100/H200):
#   1. bench_topoloss.py --device cuda: TopoLoss forward+backward, the reference vs hf_topo (eager and replayed as one
#      CUDA graph), aten operator and kernel counts, peak extra memory, the operator table;
#   2. bench_gpu_throughput.py: TopoTrainer vs Trainer, GPT-2-124M, 32 k tokens per optimizer step, bf16;
#   3. bench_gpu_throughput.py --model resnet-18: the same for ResNet-18, 256 images of 224² per step.
# Each step has its own time limit, and a failed step does not stop the next ones; the exit status is non-zero if
# any failed. The results go to OUT_DIR (default benchmarks/results), with the GPU named in every JSON.
#
#   bash benchmarks/run_gpu_benchmarks.sh [OUT_DIR]
#   PYTHON=.venv/bin/python bash benchmarks/run_gpu_benchmarks.sh     # another interpreter (default: python3)
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT_DIR="$(mkdir -p "${1:-$ROOT/benchmarks/results}" && cd "${1:-$ROOT/benchmarks/results}" && pwd)"
PYTHON="${PYTHON:-python3}"
cd "$ROOT"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
"$PYTHON" - <<'EOF' || exit 1
import sys

import torch
import transformers

if not torch.cuda.is_available():
    sys.exit(f"run_gpu_benchmarks.sh needs a CUDA device; torch {torch.__version__} sees none.")
print(f"{torch.cuda.get_device_name()}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"transformers {transformers.__version__}")
EOF
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.mem,temperature.gpu --format=csv || true

failed=()
step() {  # step NAME SECONDS COMMAND...: run COMMAND under a time limit, note a failure and go on
    local name="$1" limit="$2"
    shift 2
    echo "=== $name (limit ${limit} s)"
    local start=$SECONDS
    timeout "$limit" "$@" || failed+=("$name (exit $?)")
    echo "=== $name: $((SECONDS - start)) s"
}
step topoloss 200 "$PYTHON" benchmarks/bench_topoloss.py --device cuda --memory \
    --profile "$OUT_DIR/bench_topoloss_cuda_profile.txt" --output "$OUT_DIR/bench_topoloss_cuda.json"
step gpt2-throughput 180 "$PYTHON" benchmarks/bench_gpu_throughput.py --repeats 3 --output "$OUT_DIR/bench_gpu_throughput.json"
step resnet18-throughput 150 "$PYTHON" benchmarks/bench_gpu_throughput.py --model resnet-18 \
    --output "$OUT_DIR/bench_gpu_throughput_resnet18.json"
if ((${#failed[@]})); then
    echo "failed: ${failed[*]}"
    exit 1
fi
echo "all GPU benchmarks done; results in $OUT_DIR"
