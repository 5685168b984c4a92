"""edge-opt toolchain: prune, quantize and export PyTorch models for edge devices.

Importing the package is cheap; the helpers most users want live in their modules:
``edge_opt.quant.fx.to_fp16`` / ``to_int8`` and ``edge_opt.export.pipeline.run_export``.
"""

from __future__ import annotations

__version__ = "0.1.0"
