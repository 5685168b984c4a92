#!/usr/bin/env bash
# Provision an emulated Raspberry Pi Python: a real aarch64 CPython 3.11 with the agent's dependencies, run under
# qemu user-mode. No binfmt_misc and no change to the system's package state beyond installing qemu-user-static.
#
#   scripts/arm64_python.sh DIR [pi4|pi5]     prints the path of DIR/python-arm64, a launcher to use as a Python
#
# Emulation is 35-300x slower than a real Pi: use it for function and compatibility, never for timing.
set -euo pipefail
dir=$(mkdir -p "$1" && cd "$1" && pwd)
board=${2:-pi4}
root="$dir/root" state="$dir/apt" site="$dir/site" wheels="$dir/wheels"
launcher="$dir/python-arm64"
log="$dir/provision.log"
case "$board" in
  pi4) cpu=cortex-a72 part=0xd08 model="Raspberry Pi 4 Model B Rev 1.4" ;;
  pi5) cpu=cortex-a76 part=0xd0b model="Raspberry Pi 5 Model B Rev 1.0" ;;
  *) echo "board must be pi4 or pi5" >&2; exit 2 ;;
esac

if ! command -v qemu-aarch64-static >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-user-static) >>"$log" 2>&1
fi

if [ ! -x "$root/usr/bin/python3.11" ]; then
  mkdir -p "$state/lists/partial" "$state/cache/archives/partial" "$root"
  : >"$state/status"
  apt_opts=(-o APT::Architecture=arm64 -o APT::Architectures::=arm64 -o "Dir::State::Lists=$state/lists"
            -o "Dir::State::Status=$state/status" -o "Dir::Cache=$state/cache" -o Debug::NoLocking=1)
  apt-get "${apt_opts[@]}" update -qq >>"$log" 2>&1
  apt-get "${apt_opts[@]}" install -y -qq --download-only python3.11 libpython3.11-stdlib libgomp1 libstdc++6 >>"$log" 2>&1
  for deb in "$state"/cache/archives/*.deb; do dpkg -x "$deb" "$root"; done
  # qemu 7 shows the guest the host's /proc/cpuinfo, on which onnxruntime segfaults: serve an ARM one via -L.
  mkdir -p "$root/proc/device-tree"
  {
    for n in 0 1 2 3; do
      printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid%s\n' "$n" \
        "$([ "$board" = pi5 ] && echo ' atomics fphp asimdhp asimdrdm lrcpc dcpop asimddp')"
      printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: %s\nCPU revision\t: 3\n\n' "$part"
    done
    printf 'Model\t\t: %s\n' "$model"
  } >"$root/proc/cpuinfo"
  printf '%s\0' "$model" >"$root/proc/device-tree/model"
  # Same bytecode magic as the host's 3.11: compile once here instead of on every emulated start.
  python3 -m compileall -q -j 0 "$root/usr/lib/python3.11" >>"$log" 2>&1 || true
fi

if [ ! -f "$site/.complete" ]; then
  platforms=(--platform manylinux_2_28_aarch64 --platform manylinux_2_17_aarch64 --platform manylinux2014_aarch64)
  rm -rf "$site" "$wheels"
  python3 -m pip download -q --no-deps --only-binary=:all: "${platforms[@]}" --python-version 3.11 --implementation cp \
    -d "$wheels" onnxruntime "grpcio>=1.85.1" "grpcio-health-checking>=1.85.1" "protobuf>=7.35,<8" numpy \
    typing-extensions >>"$log" 2>&1
  python3 -m pip install -q --no-deps --no-index "${platforms[@]}" --python-version 3.11 --implementation cp \
    --only-binary=:all: --target "$site" "$wheels"/*.whl >>"$log" 2>&1
  touch "$site/.complete"
fi

repo=$(cd "$(dirname "$0")/.." && pwd)
cat >"$launcher" <<LAUNCH
#!/bin/sh
# An emulated $model Python with the agent's dependencies and this checkout's agent package.
export PYTHONPATH="$repo/agent:$site"
export EDGE_AGENT_WORKER_PYTHON="$launcher"
exec qemu-aarch64-static -cpu $cpu -L "$root" "$root/usr/bin/python3.11" "\$@"
LAUNCH
chmod +x "$launcher"
echo "$launcher"
