"""The interpreter benchmark workers run with: the environment it gets, and what it has installed.

The workers' Python (``worker_python``, ``$EDGE_AGENT_WORKER_PYTHON``, or the agent's own) need not be the agent's:
an emulator's launcher, another venv. So what the device reports it can run, and what a run is refused for, is
asked of that interpreter, in a subprocess with the workers' environment and a scratch folder as its working
directory (as a worker starts), never of the agent's own ``sys.path``; the agent itself imports no runtime.

:class:`RuntimeProbe` asks once, at agent start, in stages that each print one JSON line: which runtimes are
installed and their versions (from the package metadata: quick), then onnxruntime's execution providers (imports
it), then torch's version and quantized engines (imports torch: seconds). Each stage is reported as soon as it
is known, so a runtime whose import hangs or crashes costs only its own details.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import tempfile
import threading
from typing import Any

from edge_agent.runtimes.base import RuntimeInfo
from edge_agent.runtimes.registry import BY_DEVICE_NAME, PROBED_MODULES

_LOGGER = logging.getLogger(__name__)

#: Environment variables a worker inherits (everything else is dropped: no secrets, no proxies, no paths to data).
WORKER_ENV_KEEP = (
    "PATH",
    "PYTHONPATH",
    "PYTHONHOME",
    "LD_LIBRARY_PATH",
    "LANG",
    "LC_ALL",
    "TZ",
    "OPENBLAS_CORETYPE",
    "OPENBLAS_L2_SIZE",
    "EDGE_AGENT_ENABLE_FAULTS",
    "EDGE_AGENT_FAULT",
)


def worker_environment(tmp: str, threads: int) -> dict[str, str]:
    """A scrubbed environment for the worker: only what running Python needs, HOME and TMPDIR in its scratch."""
    env = {k: v for k, v in os.environ.items() if k in WORKER_ENV_KEEP or k.startswith("QEMU_")}
    env.update({"HOME": tmp, "TMPDIR": tmp, "OMP_NUM_THREADS": str(threads)})
    return env


#: The runtimes a worker can run with: device info's name → the module whose presence means it is installed.
RUNTIME_MODULES = PROBED_MODULES

#: Run by the workers' interpreter (``python -c``; argv[1]: "torch" to import torch too). Standard library only
#: until a runtime is imported, so any Python answers the first line.
_PROBE = r"""
import importlib.metadata, importlib.util, json, platform, sys

def say(**fields):
    print(json.dumps(fields), flush=True)

def installed(module):
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False

def version(dist):
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return ""

present = {name: version(name) for name, module in json.loads(sys.argv[1]).items() if installed(module)}
say(stage="present", runtimes=present, python_version=platform.python_version())
if "onnxruntime" in present:
    import onnxruntime
    say(stage="onnxruntime", providers=[str(p) for p in onnxruntime.get_available_providers()])
if "torch" in present and sys.argv[2:] == ["torch"]:
    import torch
    say(stage="torch", version=str(torch.__version__), engines=[str(e) for e in torch.backends.quantized.supported_engines])
"""


class RuntimeProbe:
    """What the workers' interpreter ``python`` has, asked of it once (:meth:`start`); thread-safe."""

    #: The longest a caller waits for the first answer (which runtimes are installed): once, just after start.
    PRESENCE_WAIT_SECONDS = 30.0
    #: The whole probe (importing torch included) is ended after this long.
    TIMEOUT_SECONDS = 120.0

    def __init__(self, python: str, *, probe_torch: bool = True) -> None:
        self.python = python
        self.probe_torch = probe_torch
        self._present = threading.Event()
        self._providers_known = threading.Event()
        self._done = threading.Event()
        self._lock = threading.Lock()
        #: Runtime name → version ('' when its metadata has none), for the installed ones; None until known.
        self._versions: dict[str, str] | None = None
        self._providers: list[str] = []
        self._torch: tuple[str, list[str]] | None = None
        self._python_version = ""
        #: Why the interpreter could not say which runtimes it has ('' when it did).
        self.problem = ""
        self._thread: threading.Thread | None = None

    def start(self) -> RuntimeProbe:
        """Probe in the background (GetDeviceInfo and run submission then wait only for the first answer)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="edge-agent-runtime-probe", daemon=True)
            self._thread.start()
        return self

    # ----- answers -------------------------------------------------------------------------------------------
    def wait(self, timeout: float | None = None) -> bool:
        """Wait until it is known which runtimes are installed (or that the interpreter could not tell)."""
        return self._present.wait(self.PRESENCE_WAIT_SECONDS if timeout is None else timeout)

    def installed(self, runtime: str) -> bool | None:
        """Is ``runtime`` installed for the workers? None when the probe has not answered (or could not)."""
        with self._lock:
            return None if self._versions is None else runtime in self._versions

    @property
    def python_version(self) -> str:
        """The workers' Python version ('' until known)."""
        with self._lock:
            return self._python_version

    def runtimes(self, detail_wait: float = 0.5) -> list[RuntimeInfo]:
        """The runtimes installed for the workers, waiting for the first answer (:attr:`PRESENCE_WAIT_SECONDS` at
        most), then up to ``detail_wait`` seconds each for onnxruntime's providers and torch's quantized engines
        (until they are known, providers are left empty and torch has its metadata version and no engines)."""
        self.wait()
        with self._lock:
            versions = dict(self._versions or {})
        if "onnxruntime" in versions:
            self._providers_known.wait(detail_wait)
        if "torch" in versions and self.probe_torch:
            self._done.wait(detail_wait)
        with self._lock:
            details: dict[str, dict[str, Any]] = {"onnxruntime": {"providers": list(self._providers)}}
            if self._torch is not None and "torch" in versions:  # torch's own version, once it was imported
                versions["torch"] = self._torch[0]
                details["torch"] = {"quantized_engines": list(self._torch[1])}
        # In the registry's order; each runtime says how device info lists it.
        return [r.describe(versions[name], details.get(name, {})) for name, r in BY_DEVICE_NAME.items() if name in versions]

    # ----- the probe -----------------------------------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._probe()
        except Exception as exc:  # never let the probe thread die silently: say why in device info
            _LOGGER.exception("probing the workers' Python %s failed", self.python)
            self._fail(f"{type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                if self._versions is None and not self.problem:
                    self.problem = f"the workers' Python {self.python} did not say which runtimes it has"
            self._present.set()
            self._providers_known.set()
            self._done.set()

    def _probe(self) -> None:
        args = [self.python, "-c", _PROBE, json.dumps(RUNTIME_MODULES), *(["torch"] if self.probe_torch else [])]
        with tempfile.TemporaryDirectory(prefix="edge-agent-probe-") as tmp, tempfile.TemporaryFile() as stderr:
            try:
                proc = subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    cwd=tmp,
                    env=worker_environment(tmp, 1),
                    text=True,
                    start_new_session=True,
                )
            except OSError as exc:
                self._fail(f"cannot start it: {exc.strerror or exc}")
                return
            timed_out = threading.Event()
            timer = threading.Timer(self.TIMEOUT_SECONDS, _kill, (proc, timed_out))
            timer.daemon = True
            timer.start()
            try:
                assert proc.stdout is not None  # a pipe (see Popen above)
                for line in proc.stdout:
                    with contextlib.suppress(ValueError, TypeError, KeyError, AttributeError):
                        self._take(json.loads(line))
                code = proc.wait()
            finally:
                timer.cancel()
            if self._versions is None:
                stderr.seek(0)
                tail = stderr.read()[-2000:].decode(errors="replace").strip().splitlines()
                ended = f"no answer in {self.TIMEOUT_SECONDS:g} s" if timed_out.is_set() else f"exit code {code}"
                self._fail(ended + (f": {tail[-1][:300]}" if tail else ""))
            elif code != 0:
                _LOGGER.warning("the runtime probe of %s ended with exit code %s after its first answer", self.python, code)

    def _take(self, message: dict[str, Any]) -> None:
        stage = message["stage"]
        with self._lock:
            if stage == "present":
                self._versions = {str(k): str(v) for k, v in dict(message["runtimes"]).items() if k in RUNTIME_MODULES}
                self._python_version = str(message["python_version"])
            elif stage == "onnxruntime":
                self._providers = [str(p) for p in message["providers"]]
            elif stage == "torch":
                self._torch = (str(message["version"]), [str(e) for e in message["engines"]])
        if stage == "present":
            self._present.set()
        elif stage == "onnxruntime":
            self._providers_known.set()

    def _fail(self, why: str) -> None:
        with self._lock:
            if self._versions is not None:
                return
            self.problem = f"the workers' Python {self.python} could not be asked which runtimes it has ({why})"
        _LOGGER.warning("%s", self.problem)


def _kill(proc: subprocess.Popen[str], timed_out: threading.Event) -> None:
    """The probe and anything it started (its own process group), at its timeout."""
    timed_out.set()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
