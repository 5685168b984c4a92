"""The figures an artifact is judged by, chosen by what the data allows.

* Labelled data and a classifier (one row of class scores per item): ``top1`` accuracy, and ``top5`` when the
  model has more than ten classes.
* Otherwise (no labels, or an output that is not class scores: an embedding, a feature or segmentation map):
  fidelity to the FP32 model on the same inputs: ``sqnr_db`` (signal-to-quantization-noise ratio of the
  outputs, in dB: 10·log10(Σ ref² / Σ (ref − out)²)), mean ``cosine`` per item, and ``top1_agreement`` with
  FP32 for classifiers.

Outputs are compared as one flattened row per item. torch-free: the fleet and the device side read these too.
"""

from __future__ import annotations

import math

import numpy as np

TOP1 = "top1"
SQNR_DB = "sqnr_db"
#: How each headline metric is named in tables.
LABELS = {TOP1: "accuracy", SQNR_DB: "SQNR dB"}
#: SQNR reported for outputs identical to the reference (no noise at all).
SQNR_IDENTICAL_DB = 200.0


def top_k(outputs: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Fraction of items whose label is among the ``k`` highest outputs."""
    if k == 1:
        return float((outputs.argmax(axis=1) == labels).mean())
    best = np.argpartition(-outputs, kth=min(k, outputs.shape[1]) - 1, axis=1)[:, :k]
    return float((best == labels[:, None]).any(axis=1).mean())


def sqnr_db(reference: np.ndarray, candidate: np.ndarray) -> float:
    """10·log10(signal power / noise power) over every output value; 200 dB when identical, -inf for non-finite."""
    ref = reference.astype(np.float64)
    cand = candidate.astype(np.float64)
    if not np.isfinite(cand).all():
        return -math.inf
    noise = float(np.square(ref - cand).sum())
    signal = float(np.square(ref).sum())
    if noise == 0.0:
        return SQNR_IDENTICAL_DB
    if signal == 0.0:
        return -math.inf
    return min(SQNR_IDENTICAL_DB, 10.0 * math.log10(signal / noise))


def mean_cosine(reference: np.ndarray, candidate: np.ndarray) -> float:
    ref = reference.astype(np.float64)
    cand = np.nan_to_num(candidate.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    dot = (ref * cand).sum(axis=1)
    norms = np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1)
    return float(np.where(norms > 0, dot / np.maximum(norms, 1e-30), 0.0).mean())


def headline(labelled: bool, classifier: bool) -> str:
    return TOP1 if labelled and classifier else SQNR_DB


def metrics_of(
    outputs: np.ndarray, labels: np.ndarray | None, fp32_outputs: np.ndarray, *, classifier: bool
) -> dict[str, float]:
    """Every figure the data allows for ``outputs`` (one flattened row per item)."""
    figures: dict[str, float] = {}
    if labels is not None and classifier:
        figures[TOP1] = top_k(outputs, labels, 1)
        if outputs.shape[1] > 10:
            figures["top5"] = top_k(outputs, labels, 5)
    figures[SQNR_DB] = sqnr_db(fp32_outputs, outputs)
    figures["cosine"] = mean_cosine(fp32_outputs, outputs)
    if classifier:
        figures["top1_agreement"] = float((fp32_outputs.argmax(axis=1) == outputs.argmax(axis=1)).mean())
    return figures
