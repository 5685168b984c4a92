#!/usr/bin/env bash
# Install edge-agent as a hardened systemd service on a Raspberry Pi OS (64-bit) or any systemd Linux device.
#
#   sudo deploy/install_pi.sh [PIP_SPEC]       from a checkout of edge-opt; PIP_SPEC defaults to this checkout
#
# Steps (each skipped when already done, so re-running upgrades the package and keeps the token and certificate):
#   1. a venv in /opt/edge-agent with edge-opt's `agent` extra (onnxruntime, grpcio, protobuf, numpy; no torch)
#   2. /etc/edge-agent/token (random, root-only) and a self-signed TLS certificate for this host's names
#   3. deploy/edge-agent.service as /etc/systemd/system/edge-agent.service, checked with systemd-analyze verify,
#      enabled and (re)started
# Then copy /etc/edge-agent/token and /etc/edge-agent/server.pem to the host (the host passes --tls-ca server.pem).
# Environment: EDGE_AGENT_NO_START=1 installs and verifies without enabling or starting the service.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
spec=${1:-"$repo[agent]"}
prefix=/opt/edge-agent
etc=/etc/edge-agent
unit=/etc/systemd/system/edge-agent.service

fail() { echo "install_pi: $*" >&2; exit 1; }
[ "$(id -u)" = 0 ] || fail "run as root: sudo $0"
command -v python3 >/dev/null || fail "python3 not found: apt install python3 python3-venv"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' || fail "Python 3.11+ needed (Raspberry Pi OS bookworm has 3.11)"
command -v openssl >/dev/null || fail "openssl not found: apt install openssl"

echo "install_pi: 1/3 venv $prefix with $spec"
[ -x "$prefix/bin/python" ] || python3 -m venv "$prefix" || fail "python3 -m venv failed: apt install python3-venv"
"$prefix/bin/pip" install --quiet --upgrade pip
"$prefix/bin/pip" install --quiet --upgrade "$spec"
"$prefix/bin/edge-agent" --version

echo "install_pi: 2/3 token and TLS certificate in $etc"
install -d -m 0700 "$etc"
if [ ! -s "$etc/token" ]; then
  (umask 077 && head -c 32 /dev/urandom | base64 >"$etc/token")
fi
if [ ! -s "$etc/server.pem" ] || [ ! -s "$etc/server.key" ]; then
  host=$(hostname)
  san="DNS:$host,DNS:$host.local,DNS:localhost,IP:127.0.0.1"
  for ip in $(hostname -I 2>/dev/null || true); do san="$san,IP:$ip"; done
  (umask 077 && openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/CN=$host" -addext "subjectAltName=$san" -keyout "$etc/server.key" -out "$etc/server.pem" 2>/dev/null) \
    || fail "openssl could not make a certificate"
fi
chmod 0600 "$etc/token" "$etc/server.key"
chmod 0644 "$etc/server.pem"

echo "install_pi: 3/3 systemd unit $unit"
install -m 0644 "$repo/deploy/edge-agent.service" "$unit"
systemd-analyze verify "$unit" || fail "systemd-analyze verify rejected $unit"
if [ "${EDGE_AGENT_NO_START:-0}" = 1 ]; then
  echo "install_pi: installed, not started (EDGE_AGENT_NO_START=1)"
  exit 0
fi
systemctl daemon-reload
systemctl enable edge-agent.service
systemctl restart edge-agent.service
sleep 2
systemctl --no-pager --lines=5 status edge-agent.service || fail "edge-agent did not start: journalctl -u edge-agent"
echo "install_pi: serving on port 50051; on the host: edge-agent info --device $(hostname).local:50051 \\"
echo "    --token-file token --tls-ca server.pem   (copy $etc/token and $etc/server.pem from this device)"
