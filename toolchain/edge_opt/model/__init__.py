"""The model before quantization: building it (``models``), training it (``train``) and pruning it
(``pruning``). Nothing here knows about precisions, formats or devices."""

from __future__ import annotations
