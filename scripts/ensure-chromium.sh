#!/usr/bin/env bash
# Make sure Debian's Chromium and its driver are on this machine: the incident-report test
# opens a report in a real headless browser. Nothing is downloaded but Debian's packages.
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
echo "Chromium is missing: installing Debian's chromium and chromium-driver packages" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
/usr/bin/chromium --version >/dev/null
