#!/usr/bin/env bash
# Main job: set up .venv, then pretrain a small TopoNet and a τ=0 baseline offline (python scripts/demo.py --help);
# `--domain vision`: the vision demo (a tiny-resnet TopoNet and its twin on scikit-learn's handwritten digits).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
# BLiMP sample data sits beside the repository on our machines (../shared); without it the demo says so and skips BLiMP.
BLIMP_ARGS=()
if [ -d "$ROOT/../shared/data/blimp_sample" ] && [[ " $* " != *" --blimp_dir "* ]] && [[ " $* " != *" --domain vision "* ]]; then
    BLIMP_ARGS=(--blimp_dir "$ROOT/../shared/data/blimp_sample")
fi
HF_HUB_OFFLINE="${HF_HUB_OFFLINE:-1}" exec python scripts/demo.py "${BLIMP_ARGS[@]}" "$@"
