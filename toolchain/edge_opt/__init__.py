"""edge-opt toolchain: prune, quantize and export PyTorch models for edge devices.

The public helpers most users want are re-exported lazily so that ``import edge_opt`` stays cheap:
``edge_opt.quantization.to_fp16`` / ``to_int8`` and ``edge_opt.pipeline.run_export``.
"""

from __future__ import annotations

__version__ = "0.1.0"
