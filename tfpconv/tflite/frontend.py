"""Front end: a Keras model, Keras file or SavedModel to .tflite bytes with TF's converter."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tfpconv.tflite.errors import ConversionError
from tfpconv.tflite.model_file import is_tflite

#: File name endings of the Keras model files the front end loads.
KERAS_SUFFIXES = (".keras", ".h5", ".hdf5")


def _describe(model: Any) -> str:
    name = getattr(model, "name", None)
    return f"Keras model {name!r}" if name else type(model).__name__


def _is_keras3_model(model: Any) -> bool:
    try:
        import keras
    except ImportError:  # pragma: no cover - keras is a dependency
        return False
    return isinstance(model, keras.Model)


def _is_tf_keras_model(model: Any) -> bool:
    try:
        import tf_keras
    except ImportError:
        return False
    return isinstance(model, tf_keras.Model)


def load_keras_file(path: Path, custom_objects: Mapping[str, Any] | None) -> Any:
    """Load a .keras / .h5 file with Keras 3, else with tf_keras (Keras 2)."""
    errors = []
    try:
        import keras

        return keras.saving.load_model(path, custom_objects=custom_objects, compile=False)
    except Exception as err:
        errors.append(f"Keras 3: {_first_line(err)}")
    try:
        import tf_keras

        return tf_keras.models.load_model(path, custom_objects=custom_objects, compile=False)
    except ImportError:
        pass
    except Exception as err:
        errors.append(f"tf_keras: {_first_line(err)}")
    raise ConversionError(f"{path}: cannot load the Keras model ({'; '.join(errors)})")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    line = text.splitlines()[0] if text else type(err).__name__
    return line if len(line) <= 300 else line[:297] + "..."


def _configure(converter: Any, options: Mapping[str, Any]) -> None:
    """Set TF converter attributes from options; ``target_spec`` may be given as a dict."""
    for key, value in options.items():
        if key.startswith("_") or not hasattr(converter, key):
            raise ConversionError(
                f"unknown option {key!r}: expected filter_group_size, custom_objects or an "
                "attribute of tf.lite.TFLiteConverter (e.g. optimizations, target_spec)"
            )
        if key == "target_spec" and isinstance(value, Mapping):
            for spec_key, spec_value in value.items():
                if not hasattr(converter.target_spec, spec_key):
                    raise ConversionError(f"unknown target_spec option {spec_key!r}")
                setattr(converter.target_spec, spec_key, spec_value)
        else:
            setattr(converter, key, value)


def _run_tf_converter(make_converter: Any, options: Mapping[str, Any], what: str) -> bytes:
    # Keras 3's export prints "Saved artifact at ..." to stdout; keep the caller's stdout clean.
    with contextlib.redirect_stdout(io.StringIO()):
        try:
            converter = make_converter()
        except ConversionError:
            raise
        except Exception as err:
            raise ConversionError(
                f"{what}: cannot load for conversion: {_first_line(err)}"
            ) from err
        _configure(converter, options)
        try:
            return bytes(converter.convert())
        except Exception as err:
            raise ConversionError(
                f"{what}: TensorFlow's TFLite converter failed: {_first_line(err)}"
            ) from err


def to_tflite(model: Any, options: dict[str, Any]) -> tuple[bytes, str]:
    """Convert a Keras model / model path with TF's converter; returns (tflite bytes, label)."""
    custom_objects = options.pop("custom_objects", None)
    if isinstance(model, (bytes, bytearray, memoryview)):
        data = bytes(model)
        if not is_tflite(data):
            raise ConversionError(
                "bytes given, but they are not a TFLite model (pass a Keras model or a path)"
            )
        _no_tf_options(options, "a .tflite model")
        return data, "model"
    if isinstance(model, (str, os.PathLike)):
        return _path_to_tflite(Path(model), options, custom_objects)
    if _is_keras3_model(model) or _is_tf_keras_model(model):
        import tensorflow as tf

        return (
            _run_tf_converter(
                lambda: tf.lite.TFLiteConverter.from_keras_model(model), options, _describe(model)
            ),
            _describe(model),
        )
    raise ConversionError(
        f"cannot convert a {type(model).__module__}.{type(model).__qualname__}: expected a Keras 3 "
        "or tf_keras model, a .keras/.h5 file, a SavedModel directory or a .tflite file"
    )


def _no_tf_options(options: Mapping[str, Any], what: str) -> None:
    if options:
        raise ConversionError(
            f"options {sorted(options)} configure TF's converter, which {what} does not go through"
        )


def _path_to_tflite(
    path: Path, options: dict[str, Any], custom_objects: Mapping[str, Any] | None
) -> tuple[bytes, str]:
    if not path.exists():
        raise FileNotFoundError(2, "no such model file or directory", str(path))
    if path.is_dir():
        if not (path / "saved_model.pb").exists() and not (path / "saved_model.pbtxt").exists():
            raise ConversionError(
                f"{path}: a directory but not a SavedModel (no saved_model.pb); pass a .keras "
                "file, a SavedModel directory or a .tflite file"
            )
        import tensorflow as tf

        return (
            _run_tf_converter(
                lambda: tf.lite.TFLiteConverter.from_saved_model(str(path)), options, str(path)
            ),
            str(path),
        )
    with path.open("rb") as handle:
        head = handle.read(8)
    if not head:
        raise ConversionError(
            f"{path}: the file is empty, so it is not a Keras model, SavedModel or .tflite file"
        )
    if is_tflite(head):
        _no_tf_options(options, "a .tflite model")
        return path.read_bytes(), str(path)
    if path.suffix.lower() in KERAS_SUFFIXES:
        keras_model = load_keras_file(path, custom_objects)
        import tensorflow as tf

        return (
            _run_tf_converter(
                lambda: tf.lite.TFLiteConverter.from_keras_model(keras_model), options, str(path)
            ),
            str(path),
        )
    raise ConversionError(
        f"{path}: not a model tfpconv can read; expected a .keras or .h5 file, a SavedModel "
        "directory or a .tflite file"
    )
