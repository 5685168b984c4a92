from __future__ import annotations

from pathlib import Path

import pytest
from edge_agent.device.cpu import cpu_flags, cpu_model, suggested_target
from edge_opt.errors import ConfigError
from edge_opt.targets import PROFILES, profile_for, resolve_target

pytestmark = [pytest.mark.unit, pytest.mark.cpus]


def test_profiles_choose_backend_and_ort_types() -> None:
    vnni = profile_for("x86_64", {"avx2", "avx512_vnni"})
    assert (vnni.name, vnni.torch_engine, vnni.ort_activation_type, vnni.ort_reduce_range) == ("x86_64", "x86", "QUInt8", False)
    avx2 = profile_for("AMD64", {"avx2"})
    assert avx2.name == "x86_64-avx2" and avx2.ort_reduce_range
    arm = profile_for("aarch64", {"asimd", "asimddp"})
    assert (arm.torch_engine, arm.ort_activation_type) == ("qnnpack", "QInt8")
    assert profile_for("arm64", set()) is PROFILES["arm64"]


def test_unknown_arch_and_target() -> None:
    with pytest.raises(ConfigError, match="riscv64"):
        profile_for("riscv64", set())
    with pytest.raises(ConfigError, match=r"unknown target 'pi9'.*arm64"):
        resolve_target("pi9")


def test_cpu_flags_x86_and_arm(tmp_path: Path) -> None:
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nflags\t\t: fpu avx2 avx512_vnni\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd evtstrm crc32 cpuid\n")
    assert cpu_flags(x86) == {"fpu", "avx2", "avx512_vnni"}
    assert "asimd" in cpu_flags(arm)
    assert cpu_flags(tmp_path / "missing") == set()


def test_cpu_model_names_the_arm_core_and_both_sides_suggest_the_same_target(tmp_path: Path) -> None:
    pi4 = tmp_path / "pi4"
    pi4.write_text("processor\t: 0\nFeatures\t: fp asimd\nCPU implementer\t: 0x41\nCPU part\t: 0xd08\nModel\t: Raspberry Pi 4\n")
    xeon = tmp_path / "xeon"
    xeon.write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R)\nflags\t: avx2\n")
    assert (cpu_model(pi4), cpu_model(xeon)) == ("ARM Cortex-A72", "Intel(R) Xeon(R)")
    cases = [
        ("aarch64", {"asimd"}, "arm64"),
        ("arm64", set(), "arm64"),
        ("x86_64", {"avx2", "avx512f"}, "x86_64-avx2"),
        ("AMD64", {"avx2", "avx_vnni"}, "x86_64"),
        ("x86_64", {"avx512_vnni"}, "x86_64"),
        ("riscv64", {"rv64"}, ""),
    ]
    for arch, flags, expected in cases:
        assert suggested_target(arch, flags) == expected
        # What the agent reports is a profile the toolchain has, and the one it builds for that machine.
        if expected:
            assert profile_for(arch, flags) is PROFILES[expected]


def test_the_agent_reports_a_target_the_toolchain_knows() -> None:
    from edge_agent.device.info import device_info

    info = device_info("test", probe_torch=False)
    assert info["suggested_target"] in PROFILES
    assert info["suggested_target"] == resolve_target("host").name


def test_host_resolves() -> None:
    assert resolve_target("host").name in PROFILES


def test_evaluation_mode_uses_the_semantics_unless_this_host_is_the_target() -> None:
    from edge_opt.formats.evaluation import HOST_KERNELS, REFERENCE_SEMANTICS, evaluation_mode

    assert evaluation_mode("arm64", quantized=True, host_target="x86_64") == REFERENCE_SEMANTICS
    assert evaluation_mode("x86_64", quantized=True, host_target="x86_64-avx2") == REFERENCE_SEMANTICS
    assert evaluation_mode("x86_64-avx2", quantized=True, host_target="x86_64-avx2") == HOST_KERNELS
    assert evaluation_mode("arm64", quantized=False, host_target="x86_64") == HOST_KERNELS  # float: same file everywhere
    assert evaluation_mode(resolve_target("host").name, quantized=True) == HOST_KERNELS
