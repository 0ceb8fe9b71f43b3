#!/usr/bin/env bash
# Create (or reuse) the project's virtualenv in .venv and install hf_topo with its test extras and scikit-learn (the
# vision demo's digits).
# Sourced by scripts/run_demo.sh and scripts/run_tests.sh; safe to run again (a stamp skips unchanged installs).
#   TORCH_SPEC   torch requirement installed first (default torch==2.13.0: the CPU wheel on our machines;
#                on a CUDA machine pip picks the CUDA build of the same release)
#   PYTHON       interpreter used to create the virtualenv (default python3, must be >= 3.10)
#   HF_TOPO_WITH_DEEPSPEED=1  also install DeepSpeed (only the ZeRO-3 test needs it: scripts/run_tests.sh sets it,
#                the demo does not)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"

"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "hf_topo needs Python >= 3.10, found " + sys.version.split()[0])'
if [ ! -x "$VENV/bin/python" ]; then
    echo "[setup] creating virtualenv $VENV"
    "$PYTHON" -m venv "$VENV"
fi
WITH_DEEPSPEED="${HF_TOPO_WITH_DEEPSPEED:-0}"
# The stamp holds what the virtualenv has: "<pyproject.toml hash> <torch spec>", with " +deepspeed" once DeepSpeed is
# in it too. A run that wants DeepSpeed after one that did not (the tests after the demo) adds it; the reverse reuses it.
STAMP="$VENV/.hf_topo-installed"
WANT="$(sha256sum < "$ROOT/pyproject.toml" | cut -d' ' -f1) $TORCH_SPEC"
HAVE="$(cat "$STAMP" 2>/dev/null || true)"
if [ "$HAVE" != "$WANT" ] && [ "$HAVE" != "$WANT +deepspeed" ]; then
    echo "[setup] installing $TORCH_SPEC and hf_topo[test,vision-demo] (first run takes a minute)"
    rm -f "$STAMP"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip 2>/dev/null || true
    "$VENV/bin/python" -m pip install --quiet "$TORCH_SPEC"
    "$VENV/bin/python" -m pip install --quiet -e "$ROOT[test,vision-demo]"
    HAVE="$WANT"
    echo "$HAVE" > "$STAMP"
fi
if [ "$WITH_DEEPSPEED" = 1 ] && [ "$HAVE" != "$WANT +deepspeed" ]; then
    # DeepSpeed (for the ZeRO-3 test) builds from an sdist that imports torch: build it against the torch above,
    # without its CUDA ops (JIT-compiled on a GPU machine when used), instead of letting pip fetch another torch.
    echo "[setup] installing DeepSpeed"
    "$VENV/bin/python" -m pip install --quiet setuptools wheel
    DS_BUILD_OPS=0 "$VENV/bin/python" -m pip install --quiet --no-build-isolation "deepspeed>=0.16"
    echo "$WANT +deepspeed" > "$STAMP"
fi
export PATH="$VENV/bin:$PATH"
export TOKENIZERS_PARALLELISM="${TOKENIZERS_PARALLELISM:-false}"
