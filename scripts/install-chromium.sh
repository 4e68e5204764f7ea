#!/usr/bin/env bash
# Install Debian's chromium for the report's browser test (tests/results/test_report_browser.py).
# Idempotent: returns at once when chromium is already on PATH. Test tools' own browser downloads
# (`playwright install`) cannot reach their hosts from our machines; the Debian package can.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
apt=(env DEBIAN_FRONTEND=noninteractive apt-get)
if [ "$(id -u)" -ne 0 ]; then
  apt=(sudo "${apt[@]}")  # developers' machines; CI runs as root
fi
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# apt is chatty; keep its output in a log and show it only when a step fails.
run() {
  if ! "$@" >"$log" 2>&1; then
    cat "$log" >&2
    echo "install-chromium: failed: $*" >&2
    exit 1
  fi
}
run "${apt[@]}" update -q
run "${apt[@]}" install -y -q --no-install-recommends chromium
echo "installed $(chromium --version 2>/dev/null || echo chromium)"
