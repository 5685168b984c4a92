"""Defence in depth for a model that slips past the guard: the installed onnxruntime and the worker's Landlock.

Both run in fresh subprocesses (confinement is irreversible). In CI (``CI=true``) a kernel without Landlock is a
failure; elsewhere the Landlock test is skipped and device info says the worker runs unconfined.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import hostile_onnx
import pytest
from edge_agent.worker.confine import landlock_abi

pytestmark = pytest.mark.unit


@pytest.fixture
def landlock() -> None:
    """This kernel's Landlock: a failure in CI without it, a skip elsewhere."""
    if landlock_abi() == 0:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("this kernel offers no Landlock; CI machines are expected to have it")
        pytest.skip("no Landlock in this kernel")

_PROBE = textwrap.dedent(
    """
    import json, sys
    import numpy as np
    import onnxruntime as ort
    model, secret_dir, scratch, confine_first = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4] == "1"
    data = open(model, "rb").read()
    out = {}
    if confine_first:
        from edge_agent.worker.confine import confine
        out["confinement"] = confine(scratch).describe()
        for path in ("/etc/passwd", secret_dir + "/secret.bin"):
            try:
                open(path, "rb").read(1)
                out[path] = "read"
            except OSError as exc:
                out[path] = exc.strerror
        with open(scratch + "/scratch.txt", "w") as fh:
            fh.write("ok")
    try:
        session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        out["outputs"] = session.run(None, {"x": np.zeros(4, np.float32)})[0].tolist()
    except Exception as exc:
        out["refused"] = str(exc).splitlines()[0][:200]
    print(json.dumps(out))
    """
)


def _hostile_model(tmp_path: Path, builder_name: str) -> tuple[Path, Path]:
    """A hostile model whose external data points at a secret file outside the model's folder."""
    secret_dir = tmp_path / "secret"
    secret_dir.mkdir()
    (secret_dir / "secret.bin").write_bytes(bytes(range(16)))
    model = tmp_path / "model.onnx"
    hostile = getattr(hostile_onnx, builder_name)()
    model.write_bytes(hostile_onnx.point_external_data_at(hostile, str(secret_dir / "secret.bin")))
    return model, secret_dir


def _probe(model: Path, secret_dir: Path, scratch: Path, confine: bool) -> dict:
    env = {k: v for k, v in os.environ.items()}
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(model), str(secret_dir), str(scratch), "1" if confine else "0"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=scratch,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("builder", ["ext_initializer", "ext_sparse_value_values", "ext_constant_value"])
def test_installed_onnxruntime_refuses_escaping_external_data_loaded_from_bytes(builder: str, tmp_path: Path) -> None:
    """The floor in pyproject.toml (onnxruntime>=1.27): older versions read the sparse tensor's file."""
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    model, secret_dir = _hostile_model(tmp_path, builder)
    result = _probe(model, secret_dir, scratch, confine=False)
    assert "refused" in result, f"onnxruntime loaded external data from {secret_dir}: {result}"
    # The control: the same model with its data inline loads and runs, so the refusal was about the external data.
    control = tmp_path / "control.onnx"
    control.write_bytes(hostile_onnx.same_model_without_external_data(builder))
    assert "outputs" in _probe(control, secret_dir, scratch, confine=False)


def test_confined_worker_reads_no_file_outside_its_scratch(tmp_path: Path, landlock: None) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    model, secret_dir = _hostile_model(tmp_path, "ext_initializer")
    result = _probe(model, secret_dir, scratch, confine=True)
    assert result["confinement"].startswith("landlock ABI")
    assert result["/etc/passwd"] == "Permission denied"
    assert result[f"{secret_dir}/secret.bin"] == "Permission denied"
    assert (scratch / "scratch.txt").read_text() == "ok"
    assert "outputs" not in result


_PYTHONPATH_PROBE = textwrap.dedent(
    """
    import json, sys
    from edge_agent.worker.confine import confine
    scratch, store = sys.argv[1], sys.argv[2]
    confinement = confine(scratch, private=[store])
    out = {"confinement": confinement.describe()}
    for path in sys.argv[3:]:
        try:
            out[path] = open(path, "rb").read().decode()
        except OSError as exc:
            out[path] = exc.strerror
    print(json.dumps(out))
    """
)


def test_a_python_path_above_the_store_does_not_open_the_store_to_the_model(tmp_path: Path, landlock: None) -> None:
    # A developer's PYTHONPATH=$HOME (or a checkout holding the store) once made the whole store readable to a
    # confined worker: a TorchScript model read the agent's token and device id through torch.from_file.
    home = tmp_path / "home"
    (home / "store").mkdir(parents=True)
    (home / "store" / "token").write_text("the-agent-token")
    (home / "lib").mkdir()
    (home / "lib" / "helper.py").write_text("x = 1\n")
    (home / "lib" / "to-store").symlink_to(home / "store")  # links cannot reopen what was cut out
    (home / "to-root").symlink_to("/")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(home), os.environ.get("PYTHONPATH", "")])}
    args = [str(scratch), str(home / "store"), str(home / "store" / "token"), str(home / "lib" / "helper.py")]
    args += [str(home / "lib" / "to-store" / "token"), str(home / "to-root" / "etc" / "passwd")]
    proc = subprocess.run([sys.executable, "-c", _PYTHONPATH_PROBE, *args], env=env, capture_output=True, text=True, timeout=120)
    result = json.loads(proc.stdout)
    assert result["confinement"].startswith("landlock ABI"), result
    assert result[str(home / "store" / "token")] == "Permission denied"
    assert result[str(home / "lib" / "helper.py")] == "x = 1\n"  # the rest of that path stays readable
    assert result[str(home / "lib" / "to-store" / "token")] == "Permission denied"
    assert result[str(home / "to-root" / "etc" / "passwd")] == "Permission denied"


def test_sessions_parse_every_model_as_onnx_never_as_ort_format(tmp_path: Path) -> None:
    # ONNX Runtime loads bytes with "ORTM" at offset 4 as its flatbuffer format, which the guard (a protobuf walk)
    # never inspects; a file valid as both would have slipped past it.
    from agent_helpers import tiny_onnx_bytes
    from edge_agent.runtimes.onnx_session import open_session

    (tmp_path / "m.onnx").write_bytes(tiny_onnx_bytes())
    subprocess.run(
        [sys.executable, "-m", "onnxruntime.tools.convert_onnx_models_to_ort", "m.onnx", "--output_dir", "out"],
        cwd=tmp_path,
        check=True,
        capture_output=True,
        timeout=300,
    )
    ort_format = (tmp_path / "out" / "m.ort").read_bytes()
    assert ort_format[4:8] == b"ORTM"
    import onnxruntime as ort

    assert ort.InferenceSession(ort_format, providers=["CPUExecutionProvider"])  # what a default session does
    with pytest.raises(Exception, match=r"INVALID_PROTOBUF|protobuf parsing failed"):
        open_session(ort_format)
    assert open_session(tiny_onnx_bytes()).get_inputs()[0].name == "input"
