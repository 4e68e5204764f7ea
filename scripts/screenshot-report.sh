#!/usr/bin/env bash
# Refresh docs/report.png: a full-page screenshot of `xcompile report` in headless chromium.
# Usage: scripts/screenshot-report.sh [WORKSPACE] [OUT.png]. WORKSPACE is copied, never written;
# without one (or with "") a synthetic workspace is used. The quickstart's workspace gives the
# real picture.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-chromium.sh
args=()
if [ -n "${1:-}" ]; then
  args+=("$1")
fi
.venv/bin/python tests/results/test_report_browser.py "${args[@]}" "${2:-docs/report.png}"
