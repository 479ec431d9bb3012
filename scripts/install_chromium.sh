#!/usr/bin/env bash
# Install Debian's headless-capable Chromium (idempotent: nothing happens when it is already there). The test suite
# opens the Snakemake HTML report in it (tests/test_html_report.py: the summary table, the images, a screenshot);
# nothing else in asrflow needs a browser.
#
# Usage: scripts/install_chromium.sh   (called by `make setup`)
set -euo pipefail

have_chromium() {
  command -v chromium >/dev/null && chromium --headless --no-sandbox --version >/dev/null 2>&1
}

if have_chromium; then
  exit 0
fi
sudo=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null ||
    { echo "install_chromium.sh: chromium is missing; install it as root: apt-get install chromium" >&2; exit 1; }
  sudo=sudo
fi
echo "install_chromium.sh: apt-get install chromium"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium >/dev/null
have_chromium || { echo "install_chromium.sh: chromium installed but does not start" >&2; exit 1; }
echo "install_chromium.sh: $(chromium --version)"
