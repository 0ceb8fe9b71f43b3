#!/usr/bin/env bash
# Docs job: set up .venv (as scripts/run_tests.sh does), add the `docs` extra's tools (mkdocs, mkdocs-material,
# mkdocstrings), and build the site strictly (any warning, e.g. a broken link, fails) into site/.
# Extra arguments go to `mkdocs build`. The API reference reads hf_topo's source statically (griffe).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
# A stamp (pyproject.toml's hash) skips the install when the extra has not changed since the last build.
DOCS_STAMP="$VENV/.hf_topo-docs-installed"
DOCS_WANT="$(sha256sum < "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [ "$(cat "$DOCS_STAMP" 2>/dev/null || true)" != "$DOCS_WANT" ]; then
    echo "[docs] installing the docs extra (mkdocs, mkdocs-material, mkdocstrings)"
    python -m pip install --quiet -e "$ROOT[docs]"
    echo "$DOCS_WANT" > "$DOCS_STAMP"
fi
export NO_MKDOCS_2_WARNING=1  # mkdocs-material's banner about its successor
exec mkdocs build --strict --site-dir site "$@"
