#!/usr/bin/env bash
# Install what the explorer's browser test (tests/browser/test_app_browser.py) drives: Debian's chromium and chromium-driver.
# Needs root (CI runs as root) and Debian's package archive; does nothing when both are already there.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
    echo "[browser] $(chromium --version 2>/dev/null | head -1) and chromedriver already installed"
    exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
echo "[browser] installing Debian's chromium and chromium-driver"
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium chromium-driver >/dev/null
chromium --version
