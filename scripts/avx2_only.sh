#!/usr/bin/env bash
# Runs a command as if this x86 were AVX2-only (no AVX-512, no VNNI, no AMX), at native speed:
#   sudo bash scripts/avx2_only.sh COMMAND [ARGS...]
#   sudo bash scripts/avx2_only.sh --check        # prints what a Python inside sees, fails if it sees AVX-512
# Inside a private mount namespace, /proc/cpuinfo is replaced by a copy without those flags (what edge-opt reads
# to choose a target), and every Python process loads scripts/avx2_only/cpuid_mask.c, which hides them from CPUID
# too (what ONNX Runtime, PyTorch, oneDNN and FBGEMM read to choose their kernels). Containers started inside keep
# their own /proc and see the real CPU. Needs root, gcc and the cpuid_fault CPU flag.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
fail() { echo "avx2-only: $*" >&2; exit 1; }
[ $# -gt 0 ] || fail "usage: scripts/avx2_only.sh COMMAND [ARGS...] | --check"
[ "$(uname -m)" = x86_64 ] || fail "needs an x86_64 machine (this is $(uname -m))"
[ "$(id -u)" = 0 ] || fail "must run as root (a mount namespace with bind mounts over /proc/cpuinfo and /etc/ld.so.preload)"
grep -qw cpuid_fault /proc/cpuinfo || fail "this CPU has no cpuid_fault flag: CPUID cannot be masked here"
command -v gcc >/dev/null || fail "gcc is missing: apt-get install gcc"

work=$(mktemp -d /tmp/edge-opt-avx2-only.XXXXXX)
chmod 755 "$work"
created_preload=""
cleanup() {
  rm -rf "$work"
  [ -z "$created_preload" ] || rm -f /etc/ld.so.preload
}
trap cleanup EXIT
gcc -O2 -shared -fPIC -Wall -Werror -o "$work/cpuid_mask.so" "$here/avx2_only/cpuid_mask.c" -ldl
echo "$work/cpuid_mask.so" >"$work/ld.so.preload"
# The flags of the AVX-512 family, VNNI and AMX are dropped; the model name says it is a masked view.
sed -E -e '/^flags/ s/ (avx512[a-z0-9_]*|avx_vnni[a-z0-9_]*|avx_ifma|avx_ne_convert|amx_[a-z0-9_]*)\b//g' \
  -e 's/^(model name\s*:.*)$/\1 (AVX2-only view)/' /proc/cpuinfo >"$work/cpuinfo"
# A bind mount needs a file to cover; an empty /etc/ld.so.preload changes nothing outside.
if [ ! -e /etc/ld.so.preload ]; then : >/etc/ld.so.preload; created_preload=1; fi

if [ "$1" = --check ]; then
  python=${EDGE_AVX2_ONLY_PYTHON:-python3}
  set -- "$python" -c '
import re, sys
flags = set(next(l for l in open("/proc/cpuinfo") if l.startswith("flags")).split(":")[1].split())
hidden = sorted(f for f in flags if re.match(r"avx512|avx_vnni|amx", f))
print("cpuinfo: avx2", "avx2" in flags, "| AVX-512/VNNI/AMX flags:", hidden or "none")
try:
    import torch
    print("torch CPU capability:", torch.backends.cpu.get_cpu_capability())
    ok = torch.backends.cpu.get_cpu_capability() == "AVX2"
except ImportError:
    ok = True
sys.exit(0 if ok and not hidden and "avx2" in flags else 1)
'
fi
EDGE_AVX2_ONLY_STRICT=1 unshare --mount --propagation private -- bash -c '
  mount --bind "$1/cpuinfo" /proc/cpuinfo && mount --bind "$1/ld.so.preload" /etc/ld.so.preload && shift && exec "$@"
' avx2-only "$work" "$@"
