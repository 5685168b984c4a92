#!/usr/bin/env bash
# Runs a command as an AVX2-only x86 (no AVX-512, no VNNI, no AMX) would see this one, at native speed:
#   sudo bash scripts/avx2_only.sh COMMAND [ARGS...]
#   sudo bash scripts/avx2_only.sh --check    # what a Python sees there (EDGE_AVX2_ONLY_PYTHON, default python3)
# In a private mount namespace, /proc/cpuinfo is replaced by a copy without those flags (what edge-opt reads to
# choose a target) and every Python process loads scripts/avx2_only/cpuid_mask.c, which hides them from the CPUID
# instruction too (what ONNX Runtime, PyTorch, oneDNN and FBGEMM read to choose their kernels). It is a view for
# the programs' own dispatch, not a restriction of the instruction set; containers started inside keep their own
# /proc and see the real CPU. scripts/avx2_only/probe.py checks the view before the command runs.
# Needs root, gcc and the cpuid_fault CPU flag; on a CPU without AVX-512, VNNI and AMX it runs the command as is.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
fail() { echo "avx2-only: $*" >&2; exit 1; }
probe=$here/avx2_only/probe.py

if [ "${1:-}" = --inside ]; then  # in the namespace (started below): cover the two files, check, run
  work=$2
  shift 2
  mount --bind "$work/cpuinfo" /proc/cpuinfo
  mount --bind "$work/ld.so.preload" /etc/ld.so.preload
  export EDGE_AVX2_ONLY_STRICT=1
  # glibc's own choices (string functions, library subdirectories) follow the view too, where it can.
  export GLIBC_TUNABLES=${GLIBC_TUNABLES:+$GLIBC_TUNABLES:}glibc.cpu.hwcaps=-AVX512F,-AVX512CD,-AVX512BW,-AVX512DQ,-AVX512VL
  python=${EDGE_AVX2_ONLY_PYTHON:-python3}
  if ! report=$("$python" "$probe" 2>&1); then
    echo "$report" >&2
    fail "a Python in the view still sees AVX-512, VNNI or AMX (above): is /tmp mounted noexec?"
  fi
  if [ "$1" = --check ]; then echo "$report"; exit 0; fi
  exec "$@"
fi

[ $# -gt 0 ] || fail "usage: scripts/avx2_only.sh COMMAND [ARGS...] | --check"
[ "$1" != --check ] || [ $# = 1 ] || fail "--check takes no arguments"
[ "$(uname -m)" = x86_64 ] || fail "needs an x86_64 machine (this is $(uname -m))"
if ! grep -qE '^flags.*\b(avx512[a-z0-9_]*|avx_vnni[a-z0-9_]*|amx_[a-z0-9_]+)\b' /proc/cpuinfo; then
  echo "avx2-only: this CPU has no AVX-512, VNNI or AMX: nothing to hide, the command runs as is" >&2
  if [ "$1" = --check ]; then exec "${EDGE_AVX2_ONLY_PYTHON:-python3}" "$probe"; fi
  exec "$@"
fi
[ "$(id -u)" = 0 ] || fail "must run as root (a mount namespace with bind mounts over /proc/cpuinfo and /etc/ld.so.preload)"
grep -qw cpuid_fault /proc/cpuinfo || fail "this CPU has no cpuid_fault flag: CPUID cannot be masked here"
command -v gcc >/dev/null || fail "gcc is missing: apt-get install gcc libc6-dev"

work=$(mktemp -d /tmp/edge-opt-avx2-only.XXXXXX)
chmod 755 "$work"
gcc -O2 -shared -fPIC -Wall -o "$work/cpuid_mask.so" "$here/avx2_only/cpuid_mask.c" -ldl
# What /etc/ld.so.preload already lists stays listed in the view.
{ cat /etc/ld.so.preload 2>/dev/null || true; echo "$work/cpuid_mask.so"; } >"$work/ld.so.preload"
# The flags of the AVX-512 family, VNNI and AMX are dropped; the model name says it is a view. (A snapshot: its
# "cpu MHz" lines do not move while the command runs.)
sed -E -e '/^flags/ s/ (avx512[a-z0-9_]*|avx_vnni[a-z0-9_]*|avx_ifma|avx_ne_convert|amx_[a-z0-9_]*)\b//g' \
  -e 's/^(model name\s*:.*)$/\1 (AVX2-only view)/' /proc/cpuinfo >"$work/cpuinfo"

# A bind mount needs a file to cover. Views running at once share a lock; the last one to finish removes the
# empty /etc/ld.so.preload (removing it while another view runs would detach that view's mask).
exec 9>>/run/lock/edge-opt-avx2-only.lock 2>/dev/null || exec 9>>/tmp/edge-opt-avx2-only.lock
flock -s 9
[ -e /etc/ld.so.preload ] || : >/etc/ld.so.preload

# The command runs in the namespace as a child; signals to this script are passed on to it, and the files above
# are removed only once it has ended (a view killed with SIGKILL leaves $work behind, never a half-masked run).
unshare --mount --propagation private -- bash "$0" --inside "$work" "$@" &
child=$!
trap 'kill -TERM "$child" 2>/dev/null || true' TERM HUP
trap 'kill -INT "$child" 2>/dev/null || true' INT
status=0
while :; do
  wait "$child" && status=0 || status=$?
  kill -0 "$child" 2>/dev/null || break
done
rm -rf "$work"
if flock -x -n 9 && [ ! -s /etc/ld.so.preload ]; then rm -f /etc/ld.so.preload; fi
exit "$status"
