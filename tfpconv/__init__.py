"""tfpconv: hardware-friendly pruning for Keras, and a TFLite delegate that turns it into speed.

The package mirrors the pipeline a model passes through:

* :mod:`tfpconv.sparsity` -- the math (NumPy only): pattern and connectivity constraints, their
  projections, allocation over layers, schedules, ADMM;
* :mod:`tfpconv.keras` -- the Keras side: callbacks, one-shot pruning, summary, layer selection;
* :mod:`tfpconv.tflite` -- conversion to .tflite, planning, the plan codec, inspection;
* :mod:`tfpconv.runtime` -- the delegate from Python: interpreter, benchmarking, tuning;
* :mod:`tfpconv.data` -- datasets and reference models; :mod:`tfpconv.cli` -- the command.

The public names below load their sub-package on first use, so ``tfpconv inspect`` or the runtime
helpers start without importing TensorFlow and Keras.
"""

from __future__ import annotations

import importlib
import logging
from typing import Any

from tfpconv._version import __version__

# A library logs; the application decides where it goes.
logging.getLogger("tfpconv").addHandler(logging.NullHandler())

#: Public name -> the module that defines it.
_EXPORTS = {
    "convert": "tfpconv.api",
    "ConversionError": "tfpconv.tflite.errors",
    "Plan": "tfpconv.tflite.plan",
    "PlanError": "tfpconv.tflite.plan",
    "read_plan": "tfpconv.tflite.plan",
    "inspect_model": "tfpconv.tflite.inspect",
    "TFLiteModelError": "tfpconv.tflite.model_file",
    "prune_patterns": "tfpconv.keras.one_shot",
    "unify_weights": "tfpconv.keras.one_shot",
    "PruningSummary": "tfpconv.keras.summary",
    "summary": "tfpconv.keras.summary",
    "Interpreter": "tfpconv.runtime.interpreter",
    "delegate_path": "tfpconv.runtime.library",
    "load_delegate": "tfpconv.runtime.delegate",
}
#: Short module names of the public API -> the module.
_MODULES = {
    **{
        name: f"tfpconv.{name}"
        for name in ("sparsity", "keras", "tflite", "runtime", "search", "data", "cli")
    },
    "activation": "tfpconv.activation",
    "callbacks": "tfpconv.keras.callbacks",
    "channels": "tfpconv.keras.channels",
    "datasets": "tfpconv.data.datasets",
    "models": "tfpconv.data.models",
    "patterns": "tfpconv.sparsity.patterns",
    "allocation": "tfpconv.sparsity.allocation",
}

__all__ = ["__version__", *_EXPORTS, *_MODULES]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    if name in _MODULES:
        return importlib.import_module(_MODULES[name])
    raise AttributeError(f"module 'tfpconv' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
