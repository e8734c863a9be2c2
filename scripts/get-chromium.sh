#!/usr/bin/env bash
# Headless Chromium for the HTML report's browser test: Debian's chromium + chromium-driver packages.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing chromium and chromium-driver (Debian packages) for the report's browser test"
  apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q chromium chromium-driver >/dev/null; }
  exit 0
fi
echo "the report's browser test needs headless Chromium: sudo apt-get install chromium chromium-driver" >&2
exit 1
