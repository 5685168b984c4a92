#!/usr/bin/env bash
# Check deploy/edge-agent.service with systemd-analyze verify (and print systemd's exposure score for it).
#
#   scripts/check_unit.sh [EDGE_AGENT]     EDGE_AGENT: an installed edge-agent (default .venv/bin/edge-agent)
#
# The unit names /opt/edge-agent/bin/edge-agent, where deploy/install_pi.sh puts it on a device; verify insists that
# the command exists, so a copy of the unit naming EDGE_AGENT instead is what is verified here.
set -euo pipefail
cd "$(dirname "$0")/.."
agent=$(realpath -e "${1:-.venv/bin/edge-agent}" 2>/dev/null) || { echo "check_unit: ${1:-.venv/bin/edge-agent} not found: install edge-opt first" >&2; exit 1; }
command -v systemd-analyze >/dev/null || { echo "check_unit: systemd-analyze not found: apt-get install systemd" >&2; exit 1; }
grep -q '^ExecStart=/opt/edge-agent/bin/edge-agent serve' deploy/edge-agent.service \
  || { echo "check_unit: deploy/edge-agent.service no longer starts /opt/edge-agent/bin/edge-agent serve" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
sed "s#/opt/edge-agent/bin/edge-agent#$agent#" deploy/edge-agent.service >"$tmp/edge-agent.service"
systemd-analyze verify "$tmp/edge-agent.service" || { echo "check_unit: systemd-analyze verify failed" >&2; exit 1; }
systemd-analyze security --offline=true "$tmp/edge-agent.service" | tail -1
"$agent" --version
echo "check_unit: deploy/edge-agent.service verified"
