"""Evaluation sets: reproducible .npz files, the store's cheap safety check, and the worker's evaluation."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from agent_helpers import tiny_onnx_bytes
from edge_agent.contract.errors import ArtifactRejected
from edge_agent.runtimes.base import fixed_batches
from edge_agent.store import evalsets
from edge_agent.worker import evaluation
from edge_opt import evalset

pytestmark = pytest.mark.unit


def _inputs(n: int = 50) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    return rng.standard_normal((n, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, n).astype(np.int64)


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_npz_is_reproducible_and_accepted(tmp_path: Path) -> None:
    x, y = _inputs()
    first = evalset.npz_bytes({"inputs": x, "labels": y})
    assert first == evalset.npz_bytes({"inputs": x.copy(), "labels": y.copy()})  # same images → same sha256
    shapes = evalsets.check_file(_write(tmp_path / "e.npz", first))
    assert shapes == {"inputs": (50, 1, 28, 28), "labels": (50,)}
    record = evalset.publish(tmp_path / "out", {"inputs": x, "labels": y}, {"dataset": "test"})
    folder = tmp_path / "out" / "evalsets" / record["sha256"]
    assert (folder / "evalset.npz").read_bytes() == first and (folder / "manifest.json").is_file()


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"labels": np.zeros(4, np.int64)}, "need inputs"),
        ({"inputs": np.zeros((4, 3), np.float32), "labels": np.zeros(5, np.int64)}, "first dimension"),
        ({"inputs": np.zeros((4, 3), np.float64), "labels": np.zeros(4, np.int64)}, "dtype"),
        ({"reference": np.zeros(4, np.float32)}, "two-dimensional"),
        ({"weights": np.zeros(4, np.float32)}, "holds only"),
    ],
)
def test_malformed_sets_are_refused(tmp_path: Path, arrays: dict, message: str) -> None:
    with pytest.raises(ArtifactRejected, match=message):
        evalsets.check_file(_write(tmp_path / "e.npz", evalset.npz_bytes(arrays)))


def test_pickles_bombs_and_non_zips_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ArtifactRejected, match="not"):
        evalsets.check_file(_write(tmp_path / "a.npz", b"PK\x03\x04 not really a zip"))
    buffer = io.BytesIO()
    member = io.BytesIO()
    np.lib.format.write_array(member, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("inputs.npy", member.getvalue())
        archive.writestr("labels.npy", member.getvalue())
    with pytest.raises(ArtifactRejected, match="numeric"):
        evalsets.check_file(_write(tmp_path / "b.npz", buffer.getvalue()))
    bomb = io.BytesIO()
    member = io.BytesIO()
    np.lib.format.write_array(member, np.zeros((2000, 1000), np.float32))
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("reference.npy", member.getvalue())
    with pytest.raises(ArtifactRejected, match="implausibly"):
        evalsets.check_file(_write(tmp_path / "c.npz", bomb.getvalue()))


def test_evaluate_reports_accuracy_agreement_and_difference(tmp_path: Path) -> None:
    session = ort.InferenceSession(tiny_onnx_bytes(), providers=["CPUExecutionProvider"])

    def call(x: np.ndarray) -> np.ndarray:
        return session.run(None, {"input": x})[0]

    x, _ = _inputs(250)
    host = call(x)
    labels = host.argmax(1).copy()
    labels[:25] = (labels[:25] + 1) % 10  # 10% wrong on purpose
    inputs = _write(tmp_path / "i.npz", evalset.npz_bytes({"inputs": x, "labels": labels}))
    reference = host.copy()
    reference[3, 0] += 0.5  # a host output the device will not reproduce
    ref = _write(tmp_path / "r.npz", evalset.npz_bytes({"reference": reference}))
    out = evaluation.evaluate(call, {"eval_set": str(inputs), "eval_reference": str(ref)}, "float32", [1, 28, 28])
    assert out["samples"] == 250 and out["top1_accuracy"] == pytest.approx(0.9)
    assert out["has_reference"] and 0.5 - 1e-4 < out["max_abs_diff"] < 0.5 + 1e-4
    assert out["agreement_with_host"] >= 249 / 250
    assert evalset.flags(out, float(np.abs(reference).max()))  # 0.5 is beyond 1% of these small logits
    wrong = evaluation.evaluate(call, {"eval_set": str(inputs)}, "float32", [3, 28, 28])
    assert "shape" in wrong["error"] and "top1_accuracy" not in wrong


def test_unlabelled_sets_measure_fidelity_not_accuracy(tmp_path: Path) -> None:
    # setup: inputs without labels (the user's unlabelled data) and the host's outputs on them
    session = ort.InferenceSession(tiny_onnx_bytes(), providers=["CPUExecutionProvider"])

    def call(x: np.ndarray) -> np.ndarray:
        return session.run(None, {"input": x})[0]

    x, _ = _inputs(120)
    assert evalsets.check_file(_write(tmp_path / "i.npz", evalset.npz_bytes({"inputs": x}))) == {"inputs": (120, 1, 28, 28)}
    host = call(x)
    noisy = host + np.float32(0.01) * np.abs(host).max()
    ref = _write(tmp_path / "r.npz", evalset.npz_bytes({"reference": noisy}))
    # execute
    out = evaluation.evaluate(call, {"eval_set": str(tmp_path / "i.npz"), "eval_reference": str(ref)}, "float32", [1, 28, 28])
    same = _write(tmp_path / "s.npz", evalset.npz_bytes({"reference": host}))
    exact = evaluation.evaluate(call, {"eval_set": str(tmp_path / "i.npz"), "eval_reference": str(same)}, "float32", [1, 28, 28])
    # assert: no accuracy without labels; SQNR is finite for a small offset and the ceiling for identical outputs
    assert "top1_accuracy" not in out and out["samples"] == 120
    expected = 10 * np.log10(np.square(noisy.astype(np.float64)).sum() / np.square(noisy - host).astype(np.float64).sum())
    assert out["sqnr_db"] == pytest.approx(expected, abs=0.05)
    assert exact["sqnr_db"] == evaluation.SQNR_IDENTICAL_DB


def _zip(members: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=compression) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def _header(shape: tuple) -> bytes:
    text = repr({"descr": "<f4", "fortran_order": False, "shape": shape}).encode()
    text += b" " * ((64 - (10 + len(text) + 1) % 64) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(text).to_bytes(2, "little") + text + bytes(64)


def test_headers_that_lie_or_a_broken_stream_are_refused_not_an_internal_error(tmp_path: Path) -> None:
    # a product of sizes that wraps around 2^64 in int64 (0 bytes "expected"), a negative size
    for shape in [(1, 1 << 32, 1 << 32), (20, 3, 1 << 30, 1 << 30), (1, -3, 4, 4)]:
        with pytest.raises(ArtifactRejected, match=r"inputs\.npy"):
            evalsets.check_file(_write(tmp_path / "lie.npz", _zip({"inputs.npy": _header(shape)})))
    # a deflate stream damaged where the .npy header is: zlib's error, not the agent's INTERNAL
    x, _ = _inputs(20)
    member = io.BytesIO()
    np.lib.format.write_array(member, x)
    data = bytearray(_zip({"inputs.npy": member.getvalue()}, zipfile.ZIP_DEFLATED))
    start = data.index(b"inputs.npy") + len("inputs.npy")
    data[start + 2 : start + 40] = b"\xff" * 38
    with pytest.raises(ArtifactRejected, match=r"not a valid \.npy array"):
        evalsets.check_file(_write(tmp_path / "broken.npz", bytes(data)))


def test_evaluate_names_what_it_cannot_evaluate_and_never_raises(tmp_path: Path) -> None:
    # setup: a labelled set with a reference; models that give a row count other than the items, no outputs,
    # NaN; a set whose data no longer matches its CRC; a reference of NaN
    x, labels = _inputs(30)
    inputs = str(_write(tmp_path / "i.npz", evalset.npz_bytes({"inputs": x, "labels": labels})))
    ref = str(_write(tmp_path / "r.npz", evalset.npz_bytes({"reference": np.ones((30, 10), np.float32)})))
    nan_ref = str(_write(tmp_path / "n.npz", evalset.npz_bytes({"reference": np.full((30, 10), np.nan, np.float32)})))
    big, big_labels = _inputs(300)
    damaged = bytearray(evalset.npz_bytes({"inputs": big, "labels": big_labels}))
    damaged[len(damaged) // 2] ^= 0xFF
    damaged_path = str(_write(tmp_path / "d.npz", bytes(damaged)))
    cases = {
        "two rows": (lambda v: np.ones((2, 10), np.float32), {"eval_set": inputs}, "one row of outputs per item"),
        "double rows": (lambda v: np.ones((2 * len(v), 10), np.float32), {"eval_set": inputs, "eval_reference": ref}, "per item"),
        "no outputs": (lambda v: np.ones((len(v), 0), np.float32), {"eval_set": inputs}, "one row of outputs per item"),
        "NaN outputs": (lambda v: np.full((len(v), 10), np.nan, np.float32), {"eval_set": inputs}, "NaN or infinite"),
        "NaN reference": (
            lambda v: np.ones((len(v), 10), np.float32),
            {"eval_set": inputs, "eval_reference": nan_ref},
            "reference",
        ),
        "bad CRC": (lambda v: np.ones((len(v), 10), np.float32), {"eval_set": damaged_path}, "cannot read the evaluation set"),
    }
    for name, (call, paths, words) in cases.items():
        # execute
        out = evaluation.evaluate(call, paths, "float32", [1, 28, 28])
        # assert: one line naming the problem, no figures from outputs that cannot be compared
        assert words in out.get("error", ""), (name, out)
        assert "top1_accuracy" not in out and "\n" not in out["error"], (name, out)


def test_fixed_batches_feed_exactly_the_batch_a_model_takes() -> None:
    seen = []

    def call(x: np.ndarray) -> np.ndarray:
        seen.append(len(x))
        return x.reshape(len(x), -1) * 2

    x = np.arange(7 * 3, dtype=np.float32).reshape(7, 3)
    out = fixed_batches(call, 3)(x)
    assert seen == [3, 3, 3] and np.array_equal(out, x * 2)
