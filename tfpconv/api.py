"""``tfpconv.convert``: conversion, and with ``tune=True`` the runtime's tuner on top.

Conversion (:mod:`tfpconv.tflite`) knows nothing of timing; tuning (:mod:`tfpconv.runtime`) reads
and rewrites converted models. This module composes the two for the public API.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from tfpconv.tflite.conversion import convert_model
from tfpconv.tflite.errors import ConversionError
from tfpconv.tflite.files import check_output_path, write_atomic

_log = logging.getLogger("tfpconv")


def convert(
    model: Any,
    output_path: str | os.PathLike[str] | None = None,
    *,
    tune: bool = False,
    tune_threads: int = 1,
    **options: Any,
) -> bytes:
    """Convert a model to a standard .tflite file carrying the tfpconv plan.

    TensorFlow's TFLite converter does the conversion (float32, default optimizations off); the
    result is the same model with one more ``Model.metadata`` entry, ``tfpconv``, holding the
    plan of every CONV_2D it can run. Plain TFLite runs it with outputs identical to TF's own
    conversion.

    Args:
      model: a Keras 3 or tf_keras model, a path to a ``.keras`` / ``.h5`` file or a SavedModel
        directory, or a ``.tflite`` file (path or bytes) to plan as it is (an existing plan is
        replaced).
      output_path: if given, the result is also written there atomically.
      tune: time the delegate's kernel variants for every planned convolution on this machine
        (and TFLite's own kernel) and record the fastest in the plan, tagged with this machine's
        instruction set and CPU; layers where TFLite wins are marked to stay with TFLite on this
        instruction set. Takes a few seconds per layer; progress goes to the ``tfpconv`` logger.
      tune_threads: the thread count to tune for (the delegate's ``num_threads`` at run time).
      **options: ``filter_group_size`` (nominal filters per group of the filter kernel reorder,
        default 16); ``custom_objects`` (for loading a Keras file); anything else is set as an
        attribute of ``tf.lite.TFLiteConverter``, e.g. ``optimizations=[tf.lite.Optimize.DEFAULT]``.

    Returns:
      The .tflite model bytes.

    Raises:
      FileNotFoundError: ``model`` names a missing path (or the output directory is missing).
      NotADirectoryError, IsADirectoryError: ``output_path`` cannot be a file; checked before
        anything is converted.
      ConversionError: the model cannot be loaded or converted, or it has no CONV_2D, or
        ``tune_threads`` is not an int >= 1.
      TFLiteModelError: a given .tflite model is corrupt.
    """
    if not isinstance(tune_threads, int) or isinstance(tune_threads, bool) or tune_threads < 1:
        raise ConversionError(f"tune_threads must be an int >= 1, got {tune_threads!r}")
    if output_path is not None:
        check_output_path(output_path)
    data = convert_model(model, **options)
    if tune:
        from tfpconv.runtime.tuning import tune_model  # loads the delegate: only when asked

        data, _ = tune_model(data, threads=tune_threads, progress=_log.info)
    if output_path is not None:
        write_atomic(output_path, data)
    return data
