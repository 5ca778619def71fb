#!/usr/bin/env bash
# Make sure the wrk HTTP load generator is on this machine (the gateway benchmark drives
# its load with it). Debian packages it; nothing else is downloaded.
set -euo pipefail
if command -v wrk >/dev/null 2>&1; then
  exit 0
fi
echo "wrk is missing: installing Debian's wrk package" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends wrk >/dev/null
command -v wrk >/dev/null
