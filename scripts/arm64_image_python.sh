#!/usr/bin/env bash
# The Python of the arm64 agent image as an emulated Raspberry Pi: a launcher that runs the image's python3 in a
# chroot of the image's root filesystem, arm64 code running under qemu user-mode through binfmt_misc.
#
#   scripts/arm64_image_python.sh IMAGE DIR [pi4|pi5]   prints the path of DIR/python-arm64, a launcher to use as a Python
#   scripts/arm64_image_python.sh --remove DIR          removes the container behind DIR's launcher
#
# IMAGE is an arm64 image built from docker/agent.Dockerfile (scripts/build_images.sh makes edge-agent:arm64). A
# container is created from it (never started: `podman mount` gives its writable root). Each launch enters a private
# mount namespace, mounts /proc, /sys and /dev, binds the host's /tmp (stores, tokens and sockets under /tmp are
# seen at the same path), and runs python3 there with the caller's arguments and environment (minus the host's
# PATH, library and virtualenv variables); the working directory is kept when it lies under /tmp, else it is /.
# Child processes (the agent's workers, started with sys.executable) run inside the same root.
# qemu 7 shows the guest the host's x86 /proc/cpuinfo, on which onnxruntime crashes: QEMU_LD_PREFIX points qemu at a
# folder in the image with an ARM cpuinfo and a Pi model string for /proc/device-tree/model, QEMU_CPU at the Pi's core.
# Needs root, podman, qemu-user-static and binfmt_misc (scripts/build_images.sh binfmt registers qemu-aarch64).
set -euo pipefail

fail() { echo "arm64_image_python: $*" >&2; exit 1; }

if [ "${1:-}" = --remove ]; then
  dir=${2:?usage: arm64_image_python.sh --remove DIR}
  if [ -f "$dir/container" ]; then
    podman rm -f "$(cat "$dir/container")" >/dev/null 2>&1 || true
    rm -f "$dir/container" "$dir/python-arm64" "$dir/enter-root"
  fi
  exit 0
fi

image=${1:?usage: arm64_image_python.sh IMAGE DIR [pi4|pi5]}
dir=$(mkdir -p "${2:?usage: arm64_image_python.sh IMAGE DIR [pi4|pi5]}" && cd "$2" && pwd)
board=${3:-pi4}
case "$board" in
  pi4) cpu=cortex-a72 part=0xd08 model="Raspberry Pi 4 Model B Rev 1.4" extra="" ;;
  pi5) cpu=cortex-a76 part=0xd0b model="Raspberry Pi 5 Model B Rev 1.0" extra=" atomics fphp asimdhp asimdrdm lrcpc dcpop asimddp" ;;
  *) fail "board must be pi4 or pi5" ;;
esac
[ "$(id -u)" = 0 ] || fail "must run as root (podman mount, chroot, mount namespaces)"
command -v podman >/dev/null || fail "podman not found: apt-get install podman"
grep -qs '^flags:.*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 \
  || fail "qemu-aarch64 is not registered with binfmt_misc (flag F): run scripts/build_images.sh binfmt"
podman image exists "$image" || fail "image $image not found: build it with scripts/build_images.sh build"
arch=$(podman image inspect --format '{{.Architecture}}' "$image")
[ "$arch" = arm64 ] || fail "image $image is $arch, not arm64"

"$0" --remove "$dir"
container="edge-arm64-python-$(printf '%s' "$dir" | sha256sum | cut -c1-12)"
podman rm -f "$container" >/dev/null 2>&1 || true
podman create --arch arm64 --name "$container" "$image" >/dev/null
echo "$container" >"$dir/container"
root=$(podman mount "$container")
[ -x "$root/opt/python/bin/python3" ] || [ -x "$root/usr/local/bin/python3" ] || fail "no python3 in $image"
mkdir -p "$root/proc" "$root/sys" "$root/dev" "$root/tmp"

board_dir=/opt/edge-board
mkdir -p "$root$board_dir/proc/device-tree"
{
  for n in 0 1 2 3; do
    printf 'processor\t: %s\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid%s\n' "$n" "$extra"
    printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: %s\nCPU revision\t: 3\n\n' "$part"
  done
  printf 'Model\t\t: %s\n' "$model"
} >"$root$board_dir/proc/cpuinfo"
printf '%s\0' "$model" >"$root$board_dir/proc/device-tree/model"

cat >"$dir/enter-root" <<ENTER
#!/bin/sh
# Inside a private mount namespace: mount what a container would have, then become python3 in $image's root.
set -eu
root="$root"
mount -t proc proc "\$root/proc"
mount --rbind /sys "\$root/sys"
mount --rbind /dev "\$root/dev"
mount --bind /tmp "\$root/tmp"
cwd=\$(pwd)
case "\$cwd" in /tmp|/tmp/*) ;; *) cwd=/ ;; esac
exec env -u EDGE_AGENT_WORKER_PYTHON -u LD_LIBRARY_PATH -u LD_PRELOAD -u PYTHONHOME -u VIRTUAL_ENV \\
  PATH=/opt/python/bin:/usr/local/bin:/usr/bin:/bin QEMU_CPU=$cpu QEMU_LD_PREFIX=$board_dir \\
  unshare --root="\$root" --wd="\$cwd" python3 "\$@"
ENTER
cat >"$dir/python-arm64" <<LAUNCH
#!/bin/sh
# python3 of $image (arm64) as an emulated $model; see scripts/arm64_image_python.sh.
exec unshare --mount --propagation private /bin/sh "$dir/enter-root" "\$@"
LAUNCH
chmod +x "$dir/enter-root" "$dir/python-arm64"

probe=$("$dir/python-arm64" -c 'import platform, onnxruntime, edge_agent; print(platform.machine(), edge_agent.__version__)') \
  || fail "the image's python3 does not start under emulation (launcher: $dir/python-arm64)"
case "$probe" in aarch64\ *) ;; *) fail "the image's python3 reports '$probe', expected aarch64" ;; esac
echo "$dir/python-arm64"
