"""Conversion: a model to a standard .tflite file with the tfpconv plan as ``Model.metadata``.

TensorFlow's own TFLite converter does the conversion (:mod:`tfpconv.tflite.frontend`), the
planner derives the plan from the actual zero structure of every operator it knows
(:mod:`tfpconv.tflite.planner`), and the plan is stored as the ``tfpconv`` metadata entry. Nothing
else in the model changes, so plain TFLite runs the file exactly as it runs TF's own conversion.
Tuning is not done here: :func:`tfpconv.convert` composes this step with the runtime's tuner.
"""

from __future__ import annotations

import os
from typing import Any

from tfpconv.tflite.files import check_output_path, write_atomic
from tfpconv.tflite.filter_order import DEFAULT_FILTER_GROUP_SIZE
from tfpconv.tflite.frontend import to_tflite
from tfpconv.tflite.planner import check_group_size, embed_plan


def convert_model(
    model: Any,
    output_path: str | os.PathLike[str] | None = None,
    **options: Any,
) -> bytes:
    """Convert a model to a standard .tflite file carrying the tfpconv plan.

    TensorFlow's TFLite converter does the conversion (float32, default optimizations off); the
    result is the same model with one more ``Model.metadata`` entry, ``tfpconv``, holding the
    plan of every CONV_2D (see :func:`tfpconv.tflite.planner.plan_model`). Plain TFLite runs it
    with outputs identical to TF's own conversion.

    Args:
      model: a Keras 3 or tf_keras model, a path to a ``.keras`` / ``.h5`` file or a SavedModel
        directory, or a ``.tflite`` file (path or bytes) to plan as it is (an existing plan is
        replaced).
      output_path: if given, the result is also written there atomically.
      **options: ``filter_group_size`` (nominal filters per group of the filter kernel reorder,
        default 16); ``custom_objects`` (for loading a Keras file); anything else is set as an
        attribute of ``tf.lite.TFLiteConverter``, e.g. ``optimizations=[tf.lite.Optimize.DEFAULT]``
        or ``target_spec={"supported_types": [tf.float16]}``.

    Returns:
      The .tflite model bytes.

    Raises:
      FileNotFoundError: ``model`` names a missing path (or the output directory is missing).
      NotADirectoryError, IsADirectoryError: ``output_path`` cannot be a file (see
        :func:`check_output_path`); checked before anything is converted.
      ConversionError: the model cannot be loaded or converted, or it has no CONV_2D.
      TFLiteModelError: a given .tflite model is corrupt.
    """
    options = dict(options)
    filter_group_size = options.pop("filter_group_size", DEFAULT_FILTER_GROUP_SIZE)
    # Everything cheap to check is checked before TF's conversion, which can take a while.
    check_group_size(filter_group_size)
    if output_path is not None:
        check_output_path(output_path)
    tflite, label = to_tflite(model, options)
    data, _ = embed_plan(tflite, filter_group_size=filter_group_size, source=label)
    if output_path is not None:
        write_atomic(output_path, data)
    return data
