#!/usr/bin/env bash
# Runs a command as an AVX2-only x86 (no AVX-512, no VNNI, no AMX) would see this one, at native speed:
#   sudo bash scripts/avx2_only.sh COMMAND [ARGS...]
#   sudo EDGE_AVX2_ONLY_PYTHON=.venv/bin/python bash scripts/avx2_only.sh --check   # what a Python sees there
# In a private mount namespace, /proc/cpuinfo is replaced by a copy without those flags (what edge-opt reads to
# choose a target) and every Python process loads scripts/avx2_only/cpuid_mask.c, which hides them from the CPUID
# instruction too (what ONNX Runtime, PyTorch, oneDNN and FBGEMM read to choose their kernels); glibc's own
# choices follow through GLIBC_TUNABLES. It is a view for the programs' own dispatch, not a restriction of the
# instruction set; containers started inside keep their own /proc and see the real CPU.
# scripts/avx2_only/probe.py checks the view before the command runs. Exit status: the command's, or 125 when the
# view cannot be made. Needs root, gcc and the cpuid_fault CPU flag; on an x86 with AVX2 and without AVX-512,
# VNNI and AMX there is nothing to hide and the command runs as is.
set -euo pipefail
umask 022
here=$(cd "$(dirname "$0")" && pwd)
fail() { echo "avx2-only: $*" >&2; exit 125; }
probe=$here/avx2_only/probe.py
python=${EDGE_AVX2_ONLY_PYTHON:-python3}
# The CPU flags the view hides from /proc/cpuinfo (probe.py checks the same names).
hidden='avx512[a-z0-9_]*|avx_vnni[a-z0-9_]*|avx_ifma|avx_ne_convert|amx_[a-z0-9_]+'

if [ "${1:-}" = --inside ]; then  # in the namespace made below: cover the two files, check, run
  # Only for the script's own child: a namespace of its own, which its parent (the script) is not in.
  [ "$(readlink /proc/self/ns/mnt)" != "$(readlink /proc/$PPID/ns/mnt)" ] || fail "--inside is for the script itself"
  work=$2
  shift 2
  mount --bind "$work/cpuinfo" /proc/cpuinfo
  mount --bind "$work/ld.so.preload" /etc/ld.so.preload
  export EDGE_AVX2_ONLY_STRICT=1
  export GLIBC_TUNABLES=${GLIBC_TUNABLES:+$GLIBC_TUNABLES:}glibc.cpu.hwcaps=-AVX512F,-AVX512CD,-AVX512BW,-AVX512DQ,-AVX512VL
  if ! report=$("$python" "$probe" 2>&1); then
    echo "$report" >&2
    fail "$python in the view does not see an AVX2-only x86 (above)"
  fi
  if [ "$1" = --check ]; then echo "$report"; exit 0; fi
  exec "$@"
fi

[ $# -gt 0 ] || fail "usage: scripts/avx2_only.sh COMMAND [ARGS...] | --check"
[ "$1" != --check ] || [ $# = 1 ] || fail "--check takes no arguments"
[ "$(uname -m)" = x86_64 ] || fail "needs an x86_64 machine (this is $(uname -m))"
grep -qE '^flags.*\bavx2\b' /proc/cpuinfo || fail "this x86 has no AVX2: it cannot be seen as an AVX2 one"
if report=$("$python" "$probe" 2>&1); then  # the probe is the one definition of "AVX2-only"
  echo "avx2-only: this CPU has no AVX-512, VNNI or AMX: nothing to hide, the command runs as is" >&2
  if [ "$1" = --check ]; then echo "$report"; exit 0; fi
  exec "$@"
fi
[ "$(id -u)" = 0 ] || fail "must run as root (a mount namespace with bind mounts over /proc/cpuinfo and /etc/ld.so.preload)"
grep -qw cpuid_fault /proc/cpuinfo ||
  fail "this CPU has no cpuid_fault flag, so CPUID cannot be masked here (Intel CPUs and KVM guests have it; elsewhere compare with qemu-x86_64-static -cpu Haswell, as tests/integration/test_semantics_avx2_emulated.py does)"
command -v gcc >/dev/null || fail "gcc is missing: apt-get install gcc libc6-dev"

work=$(mktemp -d /tmp/edge-opt-avx2-only.XXXXXX)
chmod 755 "$work"
# Warnings are shown, not fatal: a newer gcc's new warning should not stop the view.
gcc -O2 -shared -fPIC -Wall -o "$work/cpuid_mask.so" "$here/avx2_only/cpuid_mask.c" -ldl || fail "gcc failed"
# What /etc/ld.so.preload already lists stays listed in the view.
{ cat /etc/ld.so.preload 2>/dev/null || true; printf '\n%s\n' "$work/cpuid_mask.so"; } >"$work/ld.so.preload"
# The flags are dropped; the model name says it is a view. (A snapshot: its "cpu MHz" lines do not move.)
sed -E -e "/^flags/ s/ ($hidden)\\b//g" -e 's/^(model name\s*:.*)$/\1 (AVX2-only view)/' /proc/cpuinfo >"$work/cpuinfo"

# A bind mount needs a file to cover. Views running at once share a lock; the last one to finish removes the
# empty /etc/ld.so.preload (removing it while another view runs would detach that view's mask).
lock=/run/lock/edge-opt-avx2-only.lock
[ -d /run/lock ] || lock=/tmp/edge-opt-avx2-only.lock
exec 9>>"$lock"
flock -s 9
[ -e /etc/ld.so.preload ] || : >/etc/ld.so.preload

# The command runs in the namespace as a child, with this script's stdin and default INT/QUIT handling (a
# background job would start with them ignored); TERM, HUP, INT and QUIT sent to the script are passed on to it,
# and the files above are removed only once it has ended (a view killed with SIGKILL leaves $work behind, never a
# half-masked run).
child=""
for sig in TERM HUP INT QUIT; do
  trap "[ -z \"\$child\" ] || kill -$sig \"\$child\" 2>/dev/null || true" "$sig"
done
exec 3<&0
unshare --mount --propagation private -- env --default-signal=INT,QUIT bash "$0" --inside "$work" "$@" <&3 3<&- 9>&- &
child=$!
exec 3<&-
while kill -0 "$child" 2>/dev/null; do
  wait "$child" || true  # returns early when a trapped signal arrives; the loop waits again
done
status=0
wait "$child" || status=$?  # the child's own exit status (bash keeps it for an ended job)
rm -rf "$work"
if flock -x -n 9 && [ ! -s /etc/ld.so.preload ]; then rm -f /etc/ld.so.preload; fi
exit "$status"
