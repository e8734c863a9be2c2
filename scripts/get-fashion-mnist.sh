#!/usr/bin/env bash
# Obtain Fashion-MNIST where convolab looks for it:
#   already on disk (--data-dir, $CONVOLAB_DATA, ~/.cache/convolab, /usr/share/datasets) -> nothing to do;
#   Debian/Ubuntu as root -> the dataset-fashion-mnist package (works without internet access to the dataset hosts);
#   otherwise -> torchvision's download into ~/.cache/convolab.
set -euo pipefail
convolab=${1:-convolab}

present() {
  "$convolab" datasets --json | python3 -c '
import json, sys
rows = json.load(sys.stdin)
sys.exit(0 if any(r["name"] == "fashion-mnist" and r["location"] for r in rows) else 1)'
}

present && exit 0
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "getting Fashion-MNIST from Debian's dataset-fashion-mnist package"
  apt-get install -y -q dataset-fashion-mnist >/dev/null 2>&1 \
    || { apt-get update -q >/dev/null && apt-get install -y -q dataset-fashion-mnist >/dev/null; } \
    || echo "apt-get could not install dataset-fashion-mnist; trying torchvision's download"
  present && exit 0
fi
"$convolab" datasets --download fashion-mnist
