"""Quantization: how a float model becomes an INT8 one, without writing any file.

``fx`` (FX graph mode, FP16 casts, backend checks), ``ort`` (ONNX Runtime static quantization of an ONNX graph),
``pt2e`` (PT2E with XNNPACKQuantizer, the executorch format's INT8), ``qat`` (quantization-aware training) and
``sensitivity`` (per-layer INT8 sensitivity). The formats (:mod:`edge_opt.formats`) call these; nothing here knows
about artifacts.
"""

from __future__ import annotations
