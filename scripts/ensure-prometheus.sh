#!/usr/bin/env bash
# Make sure Prometheus's server binary is on this machine (Debian's prometheus package).
# The tests start their own throwaway server from it on 127.0.0.1; the package's system
# service is not used (it is stopped and disabled if the install started it).
set -euo pipefail
if command -v prometheus >/dev/null 2>&1; then
  exit 0
fi
echo "Prometheus is missing: installing Debian's prometheus package" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# Installing the package may try to start its service; on machines without a service manager
# that fails harmlessly, and where one runs the service is stopped: the tests run their own.
apt-get install -y -qq --no-install-recommends prometheus >/dev/null
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
  systemctl stop prometheus || true
  systemctl disable prometheus >/dev/null 2>&1 || true
fi
command -v prometheus >/dev/null
