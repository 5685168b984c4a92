"""Confine the benchmark worker's filesystem view with Landlock before it loads an untrusted model.

Linux Landlock (kernel 5.13+, ``CONFIG_SECURITY_LANDLOCK``) lets an unprivileged process drop its own access to
the filesystem. The worker calls :func:`confine` after its imports and after reading the model file into
memory: from then on it can read only the Python installation and shared libraries it runs from (for lazy
imports), ``/proc`` and the CPU topology under ``/sys`` (runtimes read them), ``/dev/null`` and
``/dev/urandom``, and read and write only its own scratch directory. ``/etc``, ``/home``, the agent's store and
everything else are out of reach, so a model that slipped past :mod:`edge_agent.runtimes.onnx_guard` still cannot read
files. Where the kernel lacks Landlock (some Raspberry Pi OS kernels, user-mode emulators), :func:`confine`
reports why and the worker runs with the other defences only (guard, empty working directory, scrubbed
environment, bytes-only model loading).
"""

from __future__ import annotations

import ctypes
import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Final

# Syscall numbers are the same on every architecture (added after the unified syscall table).
_SYS_CREATE_RULESET: Final = 444
_SYS_ADD_RULE: Final = 445
_SYS_RESTRICT_SELF: Final = 446
_CREATE_RULESET_VERSION: Final = 1 << 0
_RULE_PATH_BENEATH: Final = 1
_PR_SET_NO_NEW_PRIVS: Final = 38

_EXECUTE, _WRITE_FILE, _READ_FILE, _READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
_REMOVE_DIR, _REMOVE_FILE, _MAKE_CHAR, _MAKE_DIR = 1 << 4, 1 << 5, 1 << 6, 1 << 7
_MAKE_REG, _MAKE_SOCK, _MAKE_FIFO, _MAKE_BLOCK, _MAKE_SYM = 1 << 8, 1 << 9, 1 << 10, 1 << 11, 1 << 12
_REFER, _TRUNCATE, _IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
#: Filesystem rights each Landlock ABI version can restrict.
_ABI_RIGHTS: Final = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1, 5: (1 << 16) - 1}

_READ: Final = _EXECUTE | _READ_FILE | _READ_DIR
_SCRATCH: Final = (
    _READ
    | _WRITE_FILE
    | _REMOVE_DIR
    | _REMOVE_FILE
    | _MAKE_DIR
    | _MAKE_REG
    | _MAKE_SYM
    | _MAKE_FIFO
    | _MAKE_SOCK
    | _REFER
    | _TRUNCATE
)
#: Read-only paths besides the Python installation: shared libraries, the kernel's CPU facts, two devices.
SYSTEM_READ_PATHS: Final = ("/usr", "/lib", "/lib64", "/proc", "/sys/devices/system/cpu", "/dev/null", "/dev/urandom")


@dataclass(frozen=True)
class Confinement:
    confined: bool
    detail: str  # "landlock ABI 7" or why not

    def describe(self) -> str:
        return self.detail if self.confined else f"not confined: {self.detail}"


def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, or 0 when Landlock is unavailable."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        version = _libc().syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    except (OSError, AttributeError):
        return 0
    return int(version) if version > 0 else 0


def python_paths() -> list[str]:
    """Where this interpreter and its packages live (read-only after confinement, for lazy imports)."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, str(Path(sys.executable).resolve().parent)}
    paths.update(p for p in sys.path if p)
    # The agent package itself (an editable install is found by an import hook, not through sys.path).
    paths.add(str(Path(__file__).resolve().parents[1]))
    return sorted(p for p in paths if Path(p).exists())


def readable_except(paths: list[str], private: list[str]) -> list[str]:
    """``paths`` to grant for reading, with every ``private`` path (the store, the token, TLS keys) cut out: a path
    holding a private one is replaced by its children that do not (recursively), one inside a private one dropped.
    So a ``PYTHONPATH`` entry above the store (``$HOME``, a checkout) cannot open the store to the model.

    A granted directory gives access to what lies beneath it, never to where a symlink in it points (Landlock
    checks the resolved path). So when a directory is replaced by its children, symlinked children are left out
    rather than granted: granting one would put the rule on its target (the store, or ``/``)."""
    hidden = [Path(p).resolve() for p in private if p]
    out: list[str] = []

    def grant(path: Path) -> None:
        if any(path == h or h in path.parents for h in hidden):
            return  # private itself, or inside a private path
        if not any(path in h.parents for h in hidden):
            out.append(str(path))
            return
        try:
            children = sorted(path.iterdir())
        except OSError:
            return
        for child in children:
            if not child.is_symlink():
                grant(child)

    for raw in paths:
        grant(Path(raw).resolve())  # an entry that is itself a link: where Python reads from
    return out


def confine(scratch: str, extra_read: list[str] | None = None, private: list[str] | None = None) -> Confinement:
    """Restrict this process (and its future children) to the paths above; irreversible. ``private`` paths stay
    unreadable even where a readable path holds them (:func:`readable_except`); the scratch directory is writable.

    Returns what was done; never raises for a kernel without Landlock (the caller reports it).
    """
    abi = landlock_abi()
    if abi <= 0:
        return Confinement(False, "the kernel offers no Landlock")
    handled = _ABI_RIGHTS.get(abi, _ABI_RIGHTS[5])
    libc = _libc()
    attr = struct.pack("=Q", handled)  # handled_access_fs only: accepted by every ABI version
    ruleset = libc.syscall(_SYS_CREATE_RULESET, attr, ctypes.c_size_t(len(attr)), ctypes.c_uint32(0))
    if ruleset < 0:
        return Confinement(False, f"landlock_create_ruleset failed: {os.strerror(ctypes.get_errno())}")
    try:
        readable = readable_except([*python_paths(), *SYSTEM_READ_PATHS], private or []) + list(extra_read or [])
        rules = [(p, _READ) for p in readable] + [(scratch, _SCRATCH)]
        for path, access in rules:
            _add_rule(libc, int(ruleset), path, access & handled)
        if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return Confinement(False, f"prctl(NO_NEW_PRIVS) failed: {os.strerror(ctypes.get_errno())}")
        if libc.syscall(_SYS_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)) != 0:
            return Confinement(False, f"landlock_restrict_self failed: {os.strerror(ctypes.get_errno())}")
    finally:
        os.close(int(ruleset))
    return Confinement(True, f"landlock ABI {abi}")


def _add_rule(libc: ctypes.CDLL, ruleset: int, path: str, access: int) -> None:
    try:
        # Resolved paths (readable_except): a symlink here would put the rule on whatever it points to.
        fd = os.open(os.path.realpath(path), os.O_PATH | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return  # a path this system does not have
    try:
        if not Path(path).is_dir():
            # Rights that only make sense on directories are refused on a file rule.
            access &= _EXECUTE | _WRITE_FILE | _READ_FILE | _TRUNCATE | _IOCTL_DEV
        attr = struct.pack("=Qi", access, fd)  # struct landlock_path_beneath_attr is packed
        libc.syscall(_SYS_ADD_RULE, ctypes.c_int(ruleset), ctypes.c_int(_RULE_PATH_BENEATH), attr, ctypes.c_uint32(0))
    finally:
        os.close(fd)
