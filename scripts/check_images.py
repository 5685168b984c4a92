"""Run the images made by scripts/build_images.sh, as a host and as devices, against this machine. Exit 1 on any failure.

No container runtime is needed: a container is created from each image (never started) and ``podman mount`` gives
its writable root; each program runs in a private mount namespace with /proc, /sys and /dev mounted and the
folders it needs bound in, chrooted into that root, with the image's environment and entrypoint. Networking is the
host's, so agents listen on 127.0.0.1.

1. toolchain (``edge-opt-toolchain:amd64``): ``edge-export --precision int8`` on the mounted Fashion-MNIST; its
   exit code, then every artifact's manifest and sha256 are checked on the host.
2. agent amd64 (``edge-agent:amd64``): the three agents of ``docker/compose.yaml``, each started with its service's
   command (listening on a free 127.0.0.1 port instead of the container's 0.0.0.0:50051, since there is no port
   mapping); ``edge-fleet devices`` and ``edge-fleet bench`` collect from them; one of them benchmarks the INT8 ONNX
   artifact with ``edge-agent bench`` and its output for the fixed input must match the host's reference: this
   host's onnxruntime kernels when host, artifact and device share a target profile, else the model's semantics,
   whole output quantization steps apart and at most one (see ``host_reference`` and ``output_mismatch``).
3. agent arm64 (``edge-agent:arm64``): the image's entrypoint under qemu (binfmt_misc) as an emulated Raspberry Pi 4;
   the same push, benchmark and output comparison. Then each agent gets SIGTERM and must exit 0.

    python scripts/check_images.py [--work DIR] [--arches amd64,arm64] [--skip-toolchain]

Run it with a Python that has edge-opt's toolchain installed (the host side); EDGE_OPT_DATA_DIR must name the data.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parent.parent
TOKEN = secrets.token_urlsafe(24)
AGENT_IMAGE = "edge-agent:{arch}"
TOOLCHAIN_IMAGE = "edge-opt-toolchain:amd64"
PI4_CPU = "cortex-a72"
PI4_MODEL = "Raspberry Pi 4 Model B Rev 1.4"
BOARD_DIR = "/opt/edge-board"
ARTIFACT = "smallcnn-int8-onnx"


class CheckError(RuntimeError):
    """A check that failed, with what was seen."""


def podman(*args: str) -> str:
    exe = shutil.which("podman")
    if exe is None:
        raise CheckError("podman not found: apt-get install podman")
    done = subprocess.run([exe, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise CheckError(f"podman {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ImageRoot:
    """A container's writable root (created from an image, mounted, never started) and how to run programs in it."""

    image: str
    name: str
    binds: dict[Path, str] = field(default_factory=dict)  # host path -> path in the image
    read_only: set[Path] = field(default_factory=set)
    extra_env: dict[str, str] = field(default_factory=dict)
    root: Path = Path()
    config: dict[str, Any] = field(default_factory=dict)

    def create(self) -> ImageRoot:
        if not podman("image", "ls", "-q", self.image):
            raise CheckError(f"image {self.image} not found: run scripts/build_images.sh build")
        subprocess.run([shutil.which("podman") or "podman", "rm", "-f", self.name], capture_output=True, check=False)
        arch = podman("image", "inspect", "--format", "{{.Architecture}}", self.image)
        podman("create", "--arch", arch, "--name", self.name, self.image)
        self.root = Path(podman("mount", self.name))
        self.config = json.loads(podman("image", "inspect", self.image))[0]["Config"]
        return self

    def remove(self) -> None:
        subprocess.run([shutil.which("podman") or "podman", "rm", "-f", self.name], capture_output=True, check=False)

    def write(self, path: str, text: str) -> None:
        target = self.root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")

    def command(self, argv: list[str], workdir: str | None = None) -> list[str]:
        """The host command that runs ``argv`` in the image (argv[0] found on the image's PATH)."""
        mounts = [
            f"mount -t proc proc {shlex.quote(str(self.root / 'proc'))}",
            f"mount --rbind /sys {shlex.quote(str(self.root / 'sys'))}",
            f"mount --rbind /dev {shlex.quote(str(self.root / 'dev'))}",
        ]
        for host, inside in self.binds.items():
            target = self.root / inside.lstrip("/")
            target.mkdir(parents=True, exist_ok=True)
            mounts.append(f"mount --bind {shlex.quote(str(host))} {shlex.quote(str(target))}")
            if host in self.read_only:
                mounts.append(f"mount -o remount,bind,ro {shlex.quote(str(target))}")
        for inside in ("proc", "sys", "dev"):
            (self.root / inside).mkdir(exist_ok=True)
        env = [*(self.config.get("Env") or []), *(f"{k}={v}" for k, v in self.extra_env.items())]
        wd = workdir or self.config.get("WorkingDir") or "/"
        (self.root / wd.lstrip("/")).mkdir(parents=True, exist_ok=True)  # as a container runtime does
        script = " && ".join(mounts) + ' && exec "$@"'
        chroot = ["env", "-i", *env, "unshare", f"--root={self.root}", f"--wd={wd}", *argv]
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, "sh", *chroot]

    def entrypoint(self, args: list[str]) -> list[str]:
        return [*(self.config.get("Entrypoint") or []), *args]


def stage(title: str) -> None:
    print(f"== {title}", flush=True)


def run(cmd: list[str], *, timeout: float, what: str, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False, env=env)
    if done.returncode != 0:
        raise CheckError(f"{what} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return done.stdout


def host_tool(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", module, *args]


def check_toolchain(work: Path, data: Path, cache: Path | None) -> Path:
    stage("toolchain image: edge-export --precision int8 on the mounted Fashion-MNIST")
    out = work / "toolchain-artifacts"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    binds = {data: "/data", out: "/work/artifacts"}
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        binds[cache] = "/work/.cache"
    image = ImageRoot(TOOLCHAIN_IMAGE, "edge-images-check-toolchain", binds, read_only={data}).create()
    image.extra_env["EDGE_OPT_DATA_DIR"] = "/data"
    try:
        probe = run(image.command(["python", "-c", "import torch, edge_opt; print(torch.__version__)"]), timeout=300,
                    what="import torch in the toolchain image")
        print(f"toolchain image: torch {probe.strip()}")
        started = time.monotonic()
        output = run(image.command(["edge-export", "--precision", "int8", "--out", "/work/artifacts"], workdir="/work"),
                     timeout=1800, what="edge-export --precision int8 in the toolchain image")
        print(output.rstrip())
        print(f"edge-export in the image: exit 0 in {time.monotonic() - started:.0f} s")
    finally:
        image.remove()
    from edge_opt.export.artifact import read_manifest

    for name in (ARTIFACT, "smallcnn-int8-torchscript"):
        manifest = read_manifest(out / name)  # schema version and the model file's sha256
        accuracy = manifest["host_metrics"]["accuracy"]
        print(f"{name}: manifest ok, sha256 {manifest['file']['sha256'][:16]}…, accuracy {accuracy}")
    if not (out / "summary.json").is_file():
        raise CheckError(f"{out}/summary.json missing")
    return out


def device_target(port: int, token_file: Path) -> str:
    """The target profile the agent on ``port`` suggests for its CPU (device info)."""
    info = json.loads(run(host_tool("edge_agent.cli", "info", "--device", f"127.0.0.1:{port}", "--token-file",
                                    str(token_file), "--json", "--timeout", "120"), timeout=300, what="edge-agent info"))
    target = str(info["data"].get("suggested_target") or "")
    if not target:
        raise CheckError(f"the agent on port {port} suggests no target profile: {info['data']}")
    return target


def host_reference(artifact: Path, device: str) -> tuple[np.ndarray, float, str]:
    """The worker's fixed input (seed 1234) run on this host, the output quantization step, and which reference it is.

    When the host's profile, the artifact's target and the device's profile are one (or the artifact is float),
    host and device run the same kernels: this host's optimised onnxruntime (``host-kernels``, step 0). Otherwise
    (a Pi, or a host whose kernels are not the target's) the reference is the model's semantics
    (``reference-semantics``), the rule of the toolchain's evaluation and of the arm64 test.
    """
    from edge_opt.export.artifact import read_manifest
    from edge_opt.formats.evaluation import HOST_KERNELS, REFERENCE_SEMANTICS, evaluation_mode, output_step
    from edge_opt.formats.onnx import OrtRunner

    manifest = read_manifest(artifact)
    target, quantized = manifest["target"]["name"], manifest["precision"] == "int8"
    mode = evaluation_mode(target, quantized=quantized)
    if quantized and device != target:
        mode = REFERENCE_SEMANTICS
    model = artifact / "model.onnx"
    fixed = np.random.default_rng(1234).standard_normal([1, 1, 28, 28]).astype(np.float32)
    output = OrtRunner(model, semantics=mode != HOST_KERNELS)(fixed)
    step = 0.0 if mode == HOST_KERNELS else output_step(model)
    return np.asarray(output, dtype=np.float64).ravel(), step, mode


def output_mismatch(device: np.ndarray, host: np.ndarray, step: float) -> str:
    """Why ``device`` is not a correct device's output for ``host``'s reference; "" when it is.

    Same shape and top-1 always. Against this host's kernels (``step`` 0): equal to 1e-4. Against the semantics:
    a device dequantizes from the same output grid, so each element is a whole number of steps away, and at most one
    (the rounding tie of an optimised integer kernel).
    """
    if device.shape != host.shape:
        return f"shape {device.shape} instead of {host.shape}"
    if np.argmax(device) != np.argmax(host):
        return f"top-1 {int(np.argmax(device))} instead of {int(np.argmax(host))}"
    if step == 0.0:
        diff = float(np.max(np.abs(device - host)))
        return "" if diff <= 1e-4 else f"max |diff| {diff:.2e} > 1e-4"
    steps = (device - host) / step
    if np.max(np.abs(steps - np.round(steps))) > 1e-3:
        return f"differences {steps.round(4).tolist()} (in output steps of {step:.4g}) are not whole steps"
    if np.max(np.abs(np.round(steps))) > 1:
        return f"{int(np.max(np.abs(np.round(steps))))} output steps apart (at most 1)"
    return ""


def bench_and_compare(port: int, token_file: Path, artifact: Path, label: str, timeout: float) -> None:
    args = ["bench", str(artifact), "--device", f"127.0.0.1:{port}", "--token-file", str(token_file), "--json",
            "--iterations", "20", "--min-seconds", "0.01", "--warmup-runs", "2", "--warmup-seconds", "0.01",
            "--timeout", str(timeout)]
    result = json.loads(run(host_tool("edge_agent.cli", *args), timeout=timeout * 4, what=f"edge-agent bench on {label}"))
    last = result["data"][0]
    if last.get("state") != "RUN_STATE_SUCCEEDED":
        raise CheckError(f"{label}: benchmark did not succeed: {last}")
    stats = last["result"]
    device = np.asarray(stats["output_sample"], dtype=np.float64)
    host, step, mode = host_reference(artifact, device_target(port, token_file))
    diff = float(np.max(np.abs(device - host))) if device.shape == host.shape else float("nan")
    p50 = stats.get("latency", {}).get("p50_ms", float("nan"))
    allowed = "1e-4" if step == 0.0 else f"one output step, {step:.3g}"
    print(f"{label}: {artifact.name} p50 {p50:.3f} ms; output vs the host's {mode} max |diff| {diff:.2e} "
          f"(allowed {allowed}), argmax {int(np.argmax(device))}/{int(np.argmax(host))}")
    problem = output_mismatch(device, host, step)
    if problem:
        raise CheckError(f"{label}: device output {device.tolist()} is not the host's {mode} {host.tolist()}: {problem}")


def no_torch(image: ImageRoot, label: str, timeout: float) -> None:
    code = "import importlib.util, sys; sys.exit(1 if importlib.util.find_spec('torch') else 0)"
    run(image.command(["python", "-c", code]), timeout=timeout, what=f"{label}: torch must not be installed")
    print(f"{label}: no torch in the image")


@dataclass
class RunningAgent:
    image: ImageRoot
    proc: subprocess.Popen[str]
    port: int
    log: Path

    def stop(self, grace: float) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise CheckError(f"{self.image.name}: no exit within {grace:.0f} s of SIGTERM") from None
            if code != 0:
                raise CheckError(f"{self.image.name}: exit code {code} after SIGTERM; log {self.log}")


def start_agent(image: ImageRoot, args: list[str], port: int, work: Path, timeout: float) -> RunningAgent:
    image.write("/run/secrets/edge-agent-token", TOKEN + "\n")
    log = work / f"{image.name}.log"
    with log.open("w") as sink:
        proc = subprocess.Popen(image.command(image.entrypoint(args)), stdout=sink, stderr=subprocess.STDOUT, text=True)
    agent = RunningAgent(image, proc, port, log)
    from edge_agent.host.client import AgentClient, Credentials

    deadline = time.monotonic() + timeout
    while "serving on" not in log.read_text():
        if proc.poll() is not None or time.monotonic() > deadline:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            raise CheckError(f"{image.name} did not start (exit {proc.poll()}):\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    with AgentClient(f"127.0.0.1:{port}", Credentials(token=TOKEN)) as client:
        client.wait_ready(max(1.0, deadline - time.monotonic()))
    print(f"{image.name}: {log.read_text().strip().splitlines()[-1]}")
    return agent


def compose_commands() -> dict[str, list[str]]:
    spec = yaml.safe_load((REPO / "docker" / "compose.yaml").read_text(encoding="utf-8"))
    commands = {}
    for name, service in spec["services"].items():
        expected = AGENT_IMAGE.format(arch="amd64")
        if service.get("image") != expected:
            raise CheckError(f"compose service {name} uses image {service.get('image')!r}, not {expected}")
        commands[name] = [str(a) for a in service["command"]]
    return commands


def check_agents_amd64(work: Path, artifacts: Path, token_file: Path) -> None:
    stage("agent image amd64: the three agents of docker/compose.yaml, edge-fleet devices + bench, output check")
    agents: list[RunningAgent] = []
    images: list[ImageRoot] = []
    try:
        for service, command in compose_commands().items():
            port = free_port()
            args = [f"127.0.0.1:{port}" if a == "0.0.0.0:50051" else a for a in command]
            image = ImageRoot(AGENT_IMAGE.format(arch="amd64"), f"edge-images-check-{service}").create()
            images.append(image)
            if not agents:
                no_torch(image, "edge-agent:amd64", 120)
            agents.append(start_agent(image, args, port, work, timeout=60))
        inventory = work / "fleet.yaml"
        inventory.write_text(yaml.safe_dump({
            "defaults": {"token_file": str(token_file)},
            "devices": [{"name": f"agent-{i + 1}", "address": f"127.0.0.1:{a.port}", "tags": ["compose"]}
                        for i, a in enumerate(agents)],
        }))
        devices = run(host_tool("edge_opt.fleet.cli", "devices", "--inventory", str(inventory)), timeout=120,
                      what="edge-fleet devices")
        print(devices.rstrip())
        db = work / "fleet.sqlite"
        db.unlink(missing_ok=True)
        bench = run(host_tool("edge_opt.fleet.cli", "bench", "--inventory", str(inventory), str(artifacts / ARTIFACT),
                              "--collection", "images-check", "--db", str(db), "--iterations", "20",
                              "--min-seconds", "0.01", "--warmup-runs", "2"),
                    timeout=600, what="edge-fleet bench")
        print(bench.rstrip())
        bench_and_compare(agents[0].port, token_file, artifacts / ARTIFACT, "edge-agent:amd64", timeout=120)
        for agent in agents:
            agent.stop(grace=60)
        print("edge-agent:amd64: every agent exited 0 on SIGTERM")
    finally:
        for agent in agents:
            if agent.proc.poll() is None:
                agent.proc.kill()
                agent.proc.wait()
        for image in images:
            image.remove()


def check_agent_arm64(work: Path, artifacts: Path, token_file: Path) -> None:
    stage("agent image arm64: its entrypoint under qemu (binfmt_misc) as a Raspberry Pi 4, push, bench, output check")
    image = ImageRoot(AGENT_IMAGE.format(arch="arm64"), "edge-images-check-arm64",
                      extra_env={"QEMU_CPU": PI4_CPU, "QEMU_LD_PREFIX": BOARD_DIR}).create()
    agent: RunningAgent | None = None
    try:
        arch = podman("image", "inspect", "--format", "{{.Architecture}}", image.image)
        if arch != "arm64":
            raise CheckError(f"{image.image} is {arch}, not arm64")
        cpuinfo = "".join(
            f"processor\t: {n}\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\n"
            "CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n"
            for n in range(4)
        )
        image.write(f"{BOARD_DIR}/proc/cpuinfo", cpuinfo + f"Model\t\t: {PI4_MODEL}\n")
        image.write(f"{BOARD_DIR}/proc/device-tree/model", PI4_MODEL + "\0")
        no_torch(image, "edge-agent:arm64", 300)
        port = free_port()
        args = ["serve", "--listen", f"127.0.0.1:{port}", "--store", "/var/lib/edge-agent",
                "--token-file", "/run/secrets/edge-agent-token", "--grace", "30"]
        agent = start_agent(image, args, port, work, timeout=180)
        info = json.loads(run(host_tool("edge_agent.cli", "info", "--device", f"127.0.0.1:{port}", "--token-file",
                                        str(token_file), "--json", "--timeout", "120"), timeout=300, what="edge-agent info"))
        data = info["data"]
        print(f"edge-agent:arm64: arch {data['arch']}, board {data['board_model']!r}, cpu flags {data['cpu_flags']}")
        if data["arch"] != "aarch64" or not data["board_model"].startswith("Raspberry Pi 4"):
            raise CheckError(f"edge-agent:arm64 is not an emulated Pi 4: {data}")
        bench_and_compare(port, token_file, artifacts / ARTIFACT, "edge-agent:arm64", timeout=600)
        agent.stop(grace=120)
        print("edge-agent:arm64: exited 0 on SIGTERM")
    finally:
        if agent is not None and agent.proc.poll() is None:
            agent.proc.kill()
            agent.proc.wait()
        image.remove()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work", type=Path, default=REPO / ".image-work", help="scratch folder")
    parser.add_argument("--arches", default="amd64,arm64", help="agent images to check")
    parser.add_argument("--skip-toolchain", action="store_true", help="reuse WORK/toolchain-artifacts")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("check_images: must run as root (podman mount, chroot, mount namespaces)", file=sys.stderr)
        return 1
    data = Path(os.environ.get("EDGE_OPT_DATA_DIR", "")).resolve()
    if not (data / "FashionMNIST" / "raw").is_dir():
        print(f"check_images: EDGE_OPT_DATA_DIR must hold FashionMNIST/raw (got {data})", file=sys.stderr)
        return 1
    cache = Path(os.environ["EDGE_OPT_CACHE_DIR"]).resolve() if os.environ.get("EDGE_OPT_CACHE_DIR") else None
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    token_file = work / "token"
    token_file.write_text(TOKEN + "\n")
    token_file.chmod(0o600)
    try:
        artifacts = work / "toolchain-artifacts" if args.skip_toolchain else check_toolchain(work, data, cache)
        arches = [a for a in args.arches.split(",") if a]
        if "amd64" in arches:
            check_agents_amd64(work, artifacts, token_file)
        if "arm64" in arches:
            check_agent_arm64(work, artifacts, token_file)
    except (CheckError, ValueError, subprocess.TimeoutExpired) as exc:
        print(f"check_images: FAILED: {exc}", file=sys.stderr)
        return 1
    print("check_images: every image built, ran and benchmarked")
    return 0


if __name__ == "__main__":
    sys.exit(main())
