"""Runtimes as plugins: one module per runtime (ONNX Runtime, TorchScript, ExecuTorch, LiteRT) behind a small
interface (:mod:`edge_agent.runtimes.base`) and one registry (:mod:`edge_agent.runtimes.registry`).

The store checks a pushed file's content, the run manager resolves and refuses runtimes, the worker prepares
and opens a model, and device info lists runtimes, all by iterating the registry. Adding a runtime is one
module here and one line in the registry. Runtime packages (onnxruntime, torch, executorch, ai_edge_litert) are imported only
inside the functions that need them, in the worker's interpreter: the agent itself never imports them.
"""

from __future__ import annotations
