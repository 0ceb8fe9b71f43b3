#!/usr/bin/env bash
# Lowest-versions job: checks that the floors in pyproject.toml are true. A fresh virtualenv .venv-lowest gets torch,
# then hf_topo[test] with every direct dependency at the lowest version pyproject.toml allows (uv's
# --resolution lowest-direct; indirect dependencies at their newest, torch held as installed); it prints what was
# resolved and runs the tests that exercise transformers, accelerate, peft, datasets and huggingface_hub, offline.
# Extra arguments go to pytest.
#   TORCH_SPEC   torch requirement installed first (default torch==2.13.0, as in scripts/setup_env.sh)
#   PYTHON       interpreter used to create the virtualenv (default python3, must be >= 3.10)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv-lowest"
PYTHON="${PYTHON:-python3}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
TESTS=(
    tests/test_trainer.py tests/test_config.py tests/test_regularizers_laplacian_pyramid.py
    tests/test_regularizers_model.py tests/test_lora.py tests/test_targets.py tests/test_sheet.py tests/test_hub.py
    tests/test_data.py tests/test_analysis_temporal.py
)

"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "hf_topo needs Python >= 3.10, found " + sys.version.split()[0])'
echo "[lowest] creating a fresh virtualenv $VENV"
rm -rf "$VENV"
"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip 2>/dev/null || true
# torch through pip, as scripts/setup_env.sh does (pip's configuration picks the build); uv only resolves the rest.
"$VENV/bin/python" -m pip install --quiet "$TORCH_SPEC" uv
TORCH_VERSION="$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("torch"))')"
echo "torch==$TORCH_VERSION" > "$VENV/constraints.txt"
# --upgrade: resolve from scratch rather than keep what torch brought along (jinja2 is also a direct dependency);
# the constraint keeps the installed torch build (a local version such as +cpu is found only as installed).
"$VENV/bin/uv" pip install --quiet --python "$VENV/bin/python" --resolution lowest-direct --upgrade \
    --constraint "$VENV/constraints.txt" -e "$ROOT[test]"

echo "[lowest] resolved versions:"
"$VENV/bin/python" - <<'EOF'
import importlib.metadata as m
names = ["transformers", "accelerate", "peft", "datasets", "huggingface_hub", "torch", "safetensors", "tokenizers",
         "jinja2", "matplotlib", "tqdm", "numpy", "pytest", "pytest_xdist", "optuna"]
print("  " + "  ".join(f"{name}=={m.version(name)}" for name in names))
EOF

cd "$ROOT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM="${TOKENIZERS_PARALLELISM:-false}"
# PATH: tests that start scripts (accelerate launch, python) must find this virtualenv's commands.
# Two pytest-xdist workers as in scripts/run_tests.sh (this also tests the pytest-xdist floor).
PATH="$VENV/bin:$PATH" OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}" exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider \
    -n "${HF_TOPO_TEST_WORKERS:-2}" --dist loadfile "${TESTS[@]}" "$@"
