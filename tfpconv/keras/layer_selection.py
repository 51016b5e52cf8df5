"""Which layers of a Keras model tfpconv prunes, and why the others are left alone."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tfpconv.keras import compat as _compat

#: Selects layers: None for every prunable one, a list of layer names, or a predicate on layers.
LayerFilter = Sequence[str] | Callable[[Any], bool] | None


@dataclass(frozen=True)
class SkippedLayer:
    """A convolution tfpconv does not prune, with the reason."""

    name: str
    reason: str


def _why_not_prunable(layer: Any) -> str | None:
    if isinstance(layer, _compat.excluded_conv_classes()) or not isinstance(
        layer, _compat.conv2d_classes()
    ):
        return f"{type(layer).__name__} is not a plain Conv2D"
    if tuple(layer.kernel_size) != (3, 3):
        return f"kernel {layer.kernel_size[0]}x{layer.kernel_size[1]}, only 3x3 is pruned"
    if tuple(layer.dilation_rate) != (1, 1):
        return f"dilation {tuple(layer.dilation_rate)}, only 1 is supported"
    if getattr(layer, "groups", 1) != 1:
        return f"groups={layer.groups}, only 1 is supported"
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return f"data_format={layer.data_format}, only channels_last is supported"
    if not layer.built:
        return "not built yet (call the model on data or give it an Input first)"
    return None


def find_conv_layers(model: Any) -> tuple[list[Any], list[SkippedLayer]]:
    """All convolution layers of ``model`` (anything with a ``kernel_size``), split into prunable
    3x3 Conv2D layers and skipped ones with the reason."""
    prunable, skipped = [], []
    for layer in _compat.flatten_layers(model):
        if not hasattr(layer, "kernel_size"):
            continue
        reason = _why_not_prunable(layer)
        if reason is None:
            prunable.append(layer)
        else:
            skipped.append(SkippedLayer(layer.name, reason))
    return prunable, skipped


def first_conv_layer(model: Any) -> Any | None:
    """The model's first convolution layer of any kind, or None."""
    return next(
        (layer for layer in _compat.flatten_layers(model) if hasattr(layer, "kernel_size")), None
    )


def describe_model_layers(model: Any) -> str:
    """A short list of the model's layers, for error messages."""
    names = [f"{layer.name} ({type(layer).__name__})" for layer in _compat.flatten_layers(model)]
    shown = ", ".join(names[:12]) + (f", ... ({len(names)} layers)" if len(names) > 12 else "")
    return shown or "no layers"


def select_prunable_layers(model: Any, layers: LayerFilter = None) -> list[Any]:
    """The layers to prune; raises a ValueError naming what was found when there are none."""
    prunable, skipped = find_conv_layers(model)
    available = [layer.name for layer in prunable]
    if layers is not None:
        if callable(layers):
            prunable = [layer for layer in prunable if layers(layer)]
        else:
            wanted = list(layers)
            by_name = {layer.name: layer for layer in prunable}
            skipped_reasons = {s.name: s.reason for s in skipped}
            for name in wanted:
                if name in skipped_reasons:
                    raise ValueError(f"layer {name!r} cannot be pruned: {skipped_reasons[name]}")
                if name not in by_name:
                    raise ValueError(
                        f"layer {name!r} is not a 3x3 Conv2D of model {model.name!r}; "
                        f"prunable layers: {sorted(by_name) or 'none'}"
                    )
            prunable = [by_name[name] for name in wanted]
    if not prunable and available:
        raise ValueError(
            f"the layers filter {_describe_filter(layers)} selected none of the prunable layers "
            f"of model {model.name!r}: {available}; pass layers=None to prune them all"
        )
    if not prunable:
        found = "; ".join(f"{s.name}: {s.reason}" for s in skipped)
        raise ValueError(
            f"no prunable layer in model {model.name!r}: tfpconv prunes built 3x3 Conv2D layers "
            f"(groups=1, dilation 1, channels_last). "
            + (f"Convolutions found but skipped: {found}." if found else "")
            + f" Layers found: {describe_model_layers(model)}."
        )
    return prunable


def _describe_filter(layers: LayerFilter) -> str:
    if callable(layers):
        return getattr(layers, "__name__", type(layers).__name__)
    return repr(list(layers))


def left_alone(model: Any, selected: Sequence[Any]) -> list[SkippedLayer]:
    """The model's convolutions that are not in ``selected``, each with the reason."""
    prunable, skipped = find_conv_layers(model)
    chosen = {id(layer) for layer in selected}
    not_selected = [
        SkippedLayer(layer.name, "not selected by the layers filter")
        for layer in prunable
        if id(layer) not in chosen
    ]
    return skipped + not_selected


def unification_candidates(model: Any) -> tuple[list[Any], dict[str, str]]:
    """The model's ``Dense`` and 1x1 ``Conv2D`` layers that can be unified, and the reasons the
    other ``Dense`` / convolution layers cannot."""
    candidates, reasons = [], {}
    for layer in _compat.flatten_layers(model):
        if isinstance(layer, _compat.dense_classes()):
            if not layer.built:
                reasons[layer.name] = "not built yet"
            else:
                candidates.append(layer)
        elif isinstance(layer, _compat.conv2d_classes()) and not isinstance(
            layer, _compat.excluded_conv_classes()
        ):
            if tuple(layer.kernel_size) != (1, 1):
                continue  # 3x3 kernels are unified together with their patterns
            if getattr(layer, "groups", 1) != 1 or not layer.built:
                reasons[layer.name] = "grouped or not built"
            else:
                candidates.append(layer)
    return candidates, reasons
