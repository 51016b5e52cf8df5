"""tfpconv: PCONV pattern + connectivity pruning for Keras, and fast pattern convolutions in TFLite.

Sub-modules load on first use, so ``tfpconv inspect`` or the runtime helpers start without
importing TensorFlow and Keras.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Light modules (NumPy + FlatBuffers), imported eagerly; `convert` the function, not the module.
from tfpconv.convert import ConversionError, convert
from tfpconv.plan import Plan, PlanError, read_plan
from tfpconv.tflite_model import TFLiteModelError

_SUBMODULES = (
    "admm",
    "allocation",
    "bench",
    "callbacks",
    "datasets",
    "layer_selection",
    "models",
    "patterns",
    "plan",
    "pruning",
    "report",
    "runtime",
    "schedules",
)
_EXPORTS = {
    "prune_patterns": "tfpconv.pruning",
    "PruningSummary": "tfpconv.report",
    "summary": "tfpconv.report",
    "Interpreter": "tfpconv.runtime",
    "delegate_path": "tfpconv.runtime",
    "load_delegate": "tfpconv.runtime",
}

__all__ = [
    "ConversionError",
    "Plan",
    "PlanError",
    "TFLiteModelError",
    "convert",
    "read_plan",
    *_SUBMODULES,
    *_EXPORTS,
]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"tfpconv.{name}")
    raise AttributeError(f"module 'tfpconv' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
