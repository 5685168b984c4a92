#!/usr/bin/env bash
# Render an HTML report in headless Chromium (Debian's chromium package) and save a PNG screenshot.
#   scripts/screenshot_report.sh report.html report.png [WIDTHxHEIGHT]
set -euo pipefail
html=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
size=${3:-1400,1900}
command -v chromium >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; }
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking \
  --disable-component-update --disable-sync --user-data-dir="$profile" --hide-scrollbars \
  --window-size="${size/x/,}" --screenshot="$2" "file://$html" >/dev/null 2>&1
echo "$2"
