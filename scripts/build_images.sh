#!/usr/bin/env bash
# Build edge-opt's container images from docker/*.Dockerfile with podman (no Docker daemon needed), then check them.
#
#   scripts/build_images.sh [all|build|check|sizes]     (default: all = build, check, sizes)
#   scripts/build_images.sh base|agent|toolchain|binfmt  (single steps: base images, agent images, toolchain image,
#                                                          register qemu-aarch64 with binfmt_misc)
#   scripts/build_images.sh clean                         (remove the images made here, podman's dangling ones
#                                                          and the prefetched torch wheels in the scratch folder;
#                                                          the Debian-made bases are kept)
#
# Images made:
#   edge-agent:amd64, edge-agent:arm64    docker/agent.Dockerfile      (no torch)
#   edge-opt-toolchain:amd64              docker/toolchain.Dockerfile  (torch, edge-export)
# Where no container registry is reachable (this project's CI), the Dockerfiles' BASE build argument points at a
# Debian bookworm base made here with debootstrap, once per architecture (localhost/edge-opt-base:bookworm-ARCH,
# cached in podman's store across calls). EDGE_IMAGE_BASE=python:3.11-slim builds on the public image instead.
# arm64 is built and run under qemu user-mode through binfmt_misc (registered here if it is not).
#
# Environment:
#   EDGE_IMAGE_BASE          base image for every build (default: the Debian-made base of each architecture)
#   EDGE_IMAGE_ARCHES        agent architectures (default "amd64 arm64")
#   EDGE_IMAGE_WORK          scratch folder (default ./.image-work)
#   EDGE_IMAGE_PIP_DIRS      host folders of wheels that the toolchain build may install from (mounted read-only;
#                            default: those of /opt/wheels /opt/pypi/files /opt/pypi-more/files that exist)
#   DEBIAN_MIRROR            default http://deb.debian.org/debian
#   EDGE_OPT_DATA_DIR        Fashion-MNIST for the toolchain check (required by `check`)
#   EDGE_OPT_CACHE_DIR       trained-checkpoint cache mounted into the toolchain check (optional)
#   EDGE_HOST_PYTHON         the host-side Python of the checks (default .venv/bin/python, else python3)
#   EDGE_IMAGE_MIN_FREE_GB   free space a build needs where podman stores images and where it writes layers
#                            (default 8 for an agent image, 22 for the toolchain image: its layer is about 6 GB
#                            and is held three times while it is committed)
# Disk: every build replaces the image of its tag and removes the one it replaced, and keeps no intermediate
# layers, so repeated builds do not pile up images; `clean` frees what is left.
# Needs root, podman, debootstrap, qemu-user-static (apt-get install podman debootstrap qemu-user-static).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
step=${1:-all}
work=${EDGE_IMAGE_WORK:-$repo/.image-work}
arches=${EDGE_IMAGE_ARCHES:-amd64 arm64}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
ca=/etc/ssl/certs/ca-certificates.crt
mkdir -p "$work"
work=$(cd "$work" && pwd)

fail() { echo "build_images: $*" >&2; exit 1; }
note() { echo "build_images: $*" >&2; }
timed() {  # timed LABEL COMMAND...: run, then print how long it took
  local label=$1 start=$SECONDS
  shift
  "$@"
  note "$label took $((SECONDS - start)) s"
}

require() {
  [ "$(id -u)" = 0 ] || fail "must run as root (podman build --isolation chroot, debootstrap, binfmt_misc, chroot)"
  local tool
  for tool in podman debootstrap qemu-aarch64-static chroot unshare; do
    command -v "$tool" >/dev/null || fail "$tool not found: apt-get install podman debootstrap qemu-user-static"
  done
  [ -f "$ca" ] || fail "$ca missing: apt-get install ca-certificates"
}

# arm64 programs run transparently through qemu: binfmt_misc with the interpreter opened at registration (flag F),
# so that it also works inside chroots and image builds.
ensure_binfmt() {
  local fs=/proc/sys/fs/binfmt_misc entry=/proc/sys/fs/binfmt_misc/qemu-aarch64
  [ -d "$fs" ] || fail "$fs missing: the kernel lacks binfmt_misc, arm64 images cannot be built here"
  [ -e "$fs/register" ] || mount -t binfmt_misc binfmt_misc "$fs" || fail "cannot mount binfmt_misc on $fs"
  if [ -e "$entry" ] && grep -q '^enabled' "$entry" && grep -q '^flags:.*F' "$entry"; then
    return 0
  fi
  [ -e "$entry" ] && echo -1 >"$entry"
  printf '%s' ':qemu-aarch64:M::\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/bin/qemu-aarch64-static:F' \
    >"$fs/register" || fail "cannot register qemu-aarch64 with binfmt_misc"
  grep -q '^flags:.*F' "$entry" || fail "qemu-aarch64 registered without flag F: $(cat "$entry")"
}

base_for() { echo "${EDGE_IMAGE_BASE:-localhost/edge-opt-base:bookworm-$1}"; }

# A Debian bookworm root filesystem with Python 3.11 in a venv at /opt/python (Debian's own python3 is
# "externally managed"), imported as a base image whose `python` and `pip` are that venv's, like python:3.11-slim's.
make_base() {
  local arch=$1 name rootfs
  name=$(base_for "$arch")
  if podman image exists "$name"; then
    note "base $name: cached"
    return 0
  fi
  rootfs="$work/rootfs-$arch"
  rm -rf "$rootfs"
  note "base $name: debootstrap bookworm $arch from $mirror (log: $work/debootstrap-$arch.log)"
  debootstrap --arch="$arch" --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$rootfs" "$mirror" >"$work/debootstrap-$arch.log" 2>&1 \
    || { tail -20 "$work/debootstrap-$arch.log" >&2; fail "debootstrap $arch failed"; }
  chroot "$rootfs" /usr/bin/python3 -m venv /opt/python || fail "python3 -m venv failed in the $arch root filesystem"
  chroot "$rootfs" /opt/python/bin/python -c 'import ssl, venv, sys; print(sys.version)' >/dev/null
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* "$rootfs"/tmp/*
  tar -C "$rootfs" --numeric-owner -cf - . | podman import --quiet --arch "$arch" --os linux \
    --change 'ENV PATH=/opt/python/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' - "$name" >/dev/null
  rm -rf "$rootfs"
}

step_base() {
  local arch
  [ -n "${EDGE_IMAGE_BASE:-}" ] && { note "base: using $EDGE_IMAGE_BASE"; return 0; }
  for arch in $arches; do
    timed "base image $arch" make_base "$arch"
  done
}

# The toolchain build installs torch from the host's wheel folders where they exist (mounted read-only, pip pointed
# at them with PIP_FIND_LINKS); elsewhere pip downloads from the package index as a user's build does.
pip_dirs() {
  local d
  if [ -n "${EDGE_IMAGE_PIP_DIRS+x}" ]; then
    echo "$EDGE_IMAGE_PIP_DIRS"
    return 0
  fi
  for d in /opt/wheels /opt/pypi/files /opt/pypi-more/files; do
    [ -d "$d" ] && printf '%s ' "$d"
  done
  echo
}

# Free space where podman keeps its images and where it writes a layer before storing it (TMPDIR, /var/tmp).
require_space() {  # require_space GB WHAT
  local need=$1 what=$2 dir avail
  for dir in "$(podman info --format '{{.Store.GraphRoot}}')" "${TMPDIR:-/var/tmp}"; do
    mkdir -p "$dir"
    avail=$(df -P -B1M "$dir" | awk 'NR == 2 { print int($4 / 1024) }')  # whole GiB, rounded down
    [ "$avail" -ge "$need" ] || fail "$what needs $need GB free in $dir, only $avail GB are: free space \
(scripts/build_images.sh clean removes the images made here; podman image prune -a removes every unused image) \
or lower EDGE_IMAGE_MIN_FREE_GB at your own risk"
  done
}

# podman build with the given arguments into TAG; the image TAG named before is removed once nothing names it.
build_image() {  # build_image TAG LOG PODMAN-BUILD-ARGUMENTS...
  local tag=$1 log=$2 before=""
  shift 2
  before=$(podman image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)
  podman build --isolation chroot --format docker --layers=false -t "$tag" "$@" . >"$log" 2>&1 || return 1
  if [ -n "$before" ] && [ "$before" != "$(podman image inspect --format '{{.Id}}' "$tag")" ]; then
    podman rmi "$before" >/dev/null 2>&1 || note "kept the previous $tag ($before): a container or tag still uses it"
  fi
}

build_agent() {
  local arch=$1
  require_space "${EDGE_IMAGE_MIN_FREE_GB:-8}" "the agent image $arch"
  build_image "edge-agent:$arch" "$work/build-agent-$arch.log" --platform "linux/$arch" \
    --build-arg "BASE=$(base_for "$arch")" -v "$ca:$ca:ro" -f docker/agent.Dockerfile \
    || { tail -30 "$work/build-agent-$arch.log" >&2; fail "agent image $arch failed to build (log: $work/build-agent-$arch.log)"; }
}

host_python() {
  if [ -n "${EDGE_HOST_PYTHON:-}" ]; then echo "$EDGE_HOST_PYTHON"; elif [ -x .venv/bin/python ]; then echo .venv/bin/python; else echo python3; fi
}

prefetch_torch() {  # the pinned torch + torchvision and their dependencies as wheels, from the host's pip cache
  local wheels=$work/wheels
  mkdir -p "$wheels"
  "$(host_python)" -m pip download --quiet --dest "$wheels" --only-binary=:all: "torch==2.14.1" "torchvision==0.29.1" \
    >"$work/prefetch.log" 2>&1 || { tail -20 "$work/prefetch.log" >&2; fail "could not fetch torch wheels for the toolchain image"; }
  echo "$wheels"
}

build_toolchain() {
  local dirs d mounts=()
  require_space "${EDGE_IMAGE_MIN_FREE_GB:-22}" "the toolchain image"
  # pip takes a file from a --find-links folder before the same file from the index, so torch (2.7 GB with its CUDA
  # libraries) is copied from the host's cache instead of downloaded again.
  dirs="$(prefetch_torch) $(pip_dirs)"
  for d in $dirs; do mounts+=(-v "$d:$d:ro"); done
  build_image edge-opt-toolchain:amd64 "$work/build-toolchain.log" --platform linux/amd64 \
    --build-arg "BASE=$(base_for amd64)" --build-arg "PIP_FIND_LINKS=$dirs" -v "$ca:$ca:ro" "${mounts[@]}" \
    -f docker/toolchain.Dockerfile \
    || { tail -30 "$work/build-toolchain.log" >&2; fail "toolchain image failed to build (log: $work/build-toolchain.log)"; }
}

# The arm64 side (its base, then the agent built under emulation: one busy core) runs beside the amd64 side (its base,
# the agent, then the toolchain: mostly unpacking torch and storing a 6 GB layer, disk-bound), so the two overlap.
step_build() {
  local arm_pid="" arch
  if [[ " $arches " == *" arm64 "* ]]; then
    (
      [ -n "${EDGE_IMAGE_BASE:-}" ] || timed "base image arm64" make_base arm64
      timed "agent image arm64" build_agent arm64
    ) &
    arm_pid=$!
  fi
  if [ -z "${EDGE_IMAGE_BASE:-}" ]; then
    timed "base image amd64" make_base amd64
  fi
  for arch in $arches; do
    [ "$arch" = arm64 ] || timed "agent image $arch" build_agent "$arch"
  done
  timed "toolchain image amd64" build_toolchain
  [ -z "$arm_pid" ] || wait "$arm_pid" || fail "the arm64 side failed (see above; logs in $work)"
}

# The checks run on the host side with edge-opt's toolchain (the CI's .venv, or EDGE_HOST_PYTHON).
step_check() {
  local py
  py=$(host_python)
  "$py" -c 'import edge_opt, edge_agent' 2>/dev/null \
    || fail "$py lacks edge-opt: install the toolchain (pip install -e '.[dev]') or set EDGE_HOST_PYTHON"
  local arch_list
  arch_list=$(echo $arches | tr ' ' ',')
  timed "image checks" "$py" scripts/check_images.py --work "$work" --arches "$arch_list"
}

step_clean() {
  local image
  for image in $(for a in amd64 arm64; do echo "edge-agent:$a"; done) edge-opt-toolchain:amd64; do
    if podman image exists "$image"; then
      podman rmi "$image" >/dev/null || fail "cannot remove $image (a container uses it? podman ps -a)"
      note "removed $image"
    fi
  done
  podman image prune -f >/dev/null
  rm -rf "$work"/wheels
  podman system df
}

step_sizes() {
  local image
  echo "image sizes (podman image inspect .Size, uncompressed):"
  for image in $(for a in $arches; do echo "edge-agent:$a"; done) edge-opt-toolchain:amd64; do
    podman image exists "$image" || fail "$image was not built"
    podman image inspect --format '{{.Size}}' "$image" \
      | awk -v name="$image" '{ printf "  %-26s %8.0f MB\n", name, $1 / 1e6 }'
  done
}

if [ "$step" = clean ]; then  # freeing disk needs only podman, never the build tools or binfmt_misc
  command -v podman >/dev/null || fail "podman not found: nothing to clean"
  step_clean
  exit 0
fi
require
case " $arches " in *" arm64 "*) ensure_binfmt ;; esac
case "$step" in
  base) step_base ;;
  build) step_build ;;
  check) step_check ;;
  sizes) step_sizes ;;
  clean) step_clean ;;
  binfmt) ensure_binfmt ;;
  toolchain) timed "toolchain image amd64" build_toolchain ;;
  agent) for a in $arches; do timed "agent image $a" build_agent "$a"; done ;;
  all) step_build; step_check; step_sizes ;;
  *) fail "unknown step '$step': all, build, check, sizes, clean, base, agent, toolchain, binfmt" ;;
esac
