"""Channel pruning by model surgery: a physically smaller Keras model with fewer filters.

Whole output channels of Conv2D and Dense layers are removed, and the removal follows the graph:
the matching entries of BatchNormalization, the input channels of every consumer (Conv2D,
DepthwiseConv2D, Dense after Flatten or pooling, the slices of a Concatenate), and channels joined
by ``Add`` (or another element-wise merge) are kept or removed together. Channels that must move
together form a *group*; :func:`groups` lists them, :func:`prune` removes channels from them and
copies the kept weights into a new model (no masks: smaller tensors, fewer FLOPs on every backend).

Works on functional and Sequential models of Keras 3 and ``tf_keras``. A layer it cannot follow
(a ``Lambda``, a ``Softmax`` over channels, a reshape that moves channels, a layer called twice)
freezes the groups it touches: :func:`groups` says why, and asking :func:`prune` to change such a
group raises a ``ValueError`` naming the layer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf

from tfpconv.keras import compat

__all__ = ["ChannelGroup", "ChannelPlan", "groups", "plan", "prune"]

#: Widths: one keep ratio for every prunable group, or per group (by group or producer name) a
#: kept width (int) or keep ratio (float in (0, 1]).
Widths = float | Mapping[str, int | float]

_PASS_THROUGH = {
    "Activation", "ReLU", "LeakyReLU", "ELU", "ThresholdedReLU", "Dropout", "SpatialDropout2D",
    "GaussianNoise", "GaussianDropout", "AlphaDropout", "ActivityRegularization", "Identity",
    "MaxPooling2D", "AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D",
    "ZeroPadding2D", "Cropping2D", "UpSampling2D",
}  # fmt: skip
_MERGES = {"Add", "Subtract", "Multiply", "Average", "Maximum", "Minimum"}
_FIXED = -1  # group of a channel that can never be removed (e.g. the image's RGB)


@dataclass
class ChannelGroup:
    """Output channels that are kept or removed together.

    Attributes:
      name: the group's name: its first producer's layer name.
      producers: the Conv2D / Dense layers whose output channels form the group (more than one
        when ``Add`` joins their outputs).
      width: the number of channels.
      prunable: whether channels can be removed.
      reason: why not, naming the layer (empty when prunable).
    """

    name: str
    producers: list[str]
    width: int
    prunable: bool = True
    reason: str = ""


@dataclass
class ChannelPlan:
    """Which channels of which group a :func:`prune` keeps (indices in the original model)."""

    groups: list[ChannelGroup]
    kept: dict[str, np.ndarray] = field(default_factory=dict)
    _analysis: Any = None

    def input_keep(self, layer_name: str) -> np.ndarray:
        """Boolean mask over the last-axis input channels of a layer: True where kept."""
        return self._analysis.keep_mask(self._analysis.input_maps[layer_name], self.kept)


@dataclass
class _Map:
    """Per channel of a tensor's last axis: its group (or _FIXED) and its index in the group."""

    group: np.ndarray
    index: np.ndarray

    @classmethod
    def fixed(cls, width: int) -> _Map:
        return cls(np.full(width, _FIXED, np.int64), np.arange(width, dtype=np.int64))


def _class_name(layer: Any) -> str:
    return type(layer).__name__


def _last_dim(shape: Any) -> int:
    return int(tuple(shape)[-1])


def _model_nodes(model: Any) -> list[tuple[Any, list[tuple[str, int]], list[Any]]]:
    """The model's layer calls in topological order: (layer, input tensor keys, output tensors)."""
    functional = getattr(model, "_functional", None) or model  # Keras 3 Sequential wraps one
    nodes_by_depth = getattr(functional, "_nodes_by_depth", None)
    if not nodes_by_depth:
        raise ValueError(
            f"channel pruning needs a functional or Sequential model built on a keras.Input; "
            f"{type(model).__name__} {getattr(model, 'name', '')!r} has no layer graph "
            "(subclassed models cannot be followed)"
        )
    calls = []
    seen: set[str] = set()
    for depth in sorted(nodes_by_depth, reverse=True):
        for node in nodes_by_depth[depth]:
            layer = getattr(node, "operation", None) or node.layer
            if layer.name in seen:
                raise ValueError(
                    f"layer {layer.name!r} is called more than once in the model; channel pruning "
                    "cannot follow shared layers"
                )
            seen.add(layer.name)
            inputs = (
                [] if _class_name(layer) == "InputLayer" else tf.nest.flatten(node.input_tensors)
            )
            keys = [(t._keras_history[0].name, t._keras_history[2]) for t in inputs]
            calls.append((layer, keys, tf.nest.flatten(node.output_tensors)))
    return calls


class _Analysis:
    """Follows the channels of a model once: groups, their union by merges, and what freezes."""

    def __init__(self, model: Any) -> None:
        self.model = model
        self.parent: list[int] = []
        self.producers: list[list[str]] = []
        self.widths: list[int] = []
        self.frozen: dict[int, str] = {}
        self.maps: dict[tuple[str, int], _Map] = {}
        self.input_maps: dict[str, _Map] = {}
        self.output_group: dict[str, int] = {}
        self.layers: dict[str, Any] = {}
        for layer, keys, outputs in _model_nodes(model):
            self.layers[layer.name] = layer
            inputs = [self.maps[key] for key in keys]
            if inputs:
                self.input_maps[layer.name] = inputs[0]
            for position, out_map in enumerate(self._follow(layer, inputs, outputs)):
                self.maps[(layer.name, position)] = out_map
        for tensor in tf.nest.flatten(model.outputs):
            self._freeze_map(
                self.maps[(tensor._keras_history[0].name, tensor._keras_history[2])],
                f"it is the output of layer {tensor._keras_history[0].name!r}, a model output",
            )

    # -- union-find over groups ------------------------------------------------------------------

    def _new_group(self, producer: str, width: int) -> int:
        self.parent.append(len(self.parent))
        self.producers.append([producer])
        self.widths.append(width)
        return len(self.parent) - 1

    def find(self, group: int) -> int:
        while self.parent[group] != group:
            self.parent[group] = self.parent[self.parent[group]]
            group = self.parent[group]
        return group

    def _union(self, a: int, b: int) -> None:
        a, b = self.find(a), self.find(b)
        if a != b:
            low, high = min(a, b), max(a, b)
            self.parent[high] = low
            self.producers[low] += self.producers[high]
            if high in self.frozen:
                self.frozen.setdefault(low, self.frozen.pop(high))

    def _freeze(self, group: int, reason: str) -> None:
        self.frozen.setdefault(self.find(group), reason)

    def _freeze_map(self, channel_map: _Map, reason: str) -> None:
        for group in set(channel_map.group.tolist()) - {_FIXED}:
            self._freeze(group, reason)

    # -- per layer ---------------------------------------------------------------------------------

    def _follow(self, layer: Any, inputs: list[_Map], outputs: list[Any]) -> list[_Map]:
        kind = _class_name(layer)
        config = layer.get_config()
        if kind == "InputLayer":
            return [_Map.fixed(_last_dim(outputs[0].shape))]
        if kind in ("Conv2D", "Dense") and config.get("groups", 1) == 1:
            width = _last_dim(outputs[0].shape)
            group = self._new_group(layer.name, width)
            self.output_group[layer.name] = group
            return [_Map(np.full(width, group, np.int64), np.arange(width, dtype=np.int64))]
        if kind == "DepthwiseConv2D" and config.get("depth_multiplier", 1) == 1:
            return [inputs[0]]
        if kind in ("BatchNormalization", "PReLU") and _acts_on_last_axis(layer, config):
            return [inputs[0]]
        if kind in _PASS_THROUGH or (kind == "Rescaling" and np.ndim(config.get("scale")) == 0):
            return [inputs[0]]
        if kind == "Reshape" and _last_dim(outputs[0].shape) == len(inputs[0].group):
            return [inputs[0]]
        if kind in _MERGES and len({len(m.group) for m in inputs}) == 1:
            for other in inputs[1:]:
                self._join(layer, inputs[0], other)
            return [inputs[0]]
        if kind == "Concatenate" and config.get("axis") in (-1, len(outputs[0].shape) - 1):
            return [
                _Map(
                    np.concatenate([m.group for m in inputs]),
                    np.concatenate([m.index for m in inputs]),
                )
            ]
        repeat = _positions(layer) if kind == "Flatten" else -1
        if repeat > 0 and len(inputs[0].group) * repeat == _last_dim(outputs[0].shape):
            return [_Map(np.tile(inputs[0].group, repeat), np.tile(inputs[0].index, repeat))]
        for channel_map in inputs:
            self._freeze_map(
                channel_map,
                f"layer {layer.name!r} ({kind}) may mix channels; it cannot be followed",
            )
        return [_Map.fixed(_last_dim(t.shape)) for t in outputs]

    def _join(self, layer: Any, a: _Map, b: _Map) -> None:
        why = f"layer {layer.name!r} ({_class_name(layer)}) joins it with channels"
        for ga, gb in set(zip(a.group.tolist(), b.group.tolist(), strict=True)):
            if ga == _FIXED and gb != _FIXED:
                self._freeze(gb, f"{why} that cannot be removed")
            elif gb == _FIXED and ga != _FIXED:
                self._freeze(ga, f"{why} that cannot be removed")
        joined = (a.group != _FIXED) & (b.group != _FIXED)
        if np.any(a.index[joined] != b.index[joined]):
            self._freeze_map(a, f"{why} in another order")
            self._freeze_map(b, f"{why} in another order")
        for ga, gb in set(zip(a.group[joined].tolist(), b.group[joined].tolist(), strict=True)):
            self._union(ga, gb)

    # -- results -----------------------------------------------------------------------------------

    def groups(self) -> list[ChannelGroup]:
        roots = sorted({self.find(g) for g in range(len(self.parent))})
        return [
            ChannelGroup(
                name=self.producers[root][0],
                producers=list(self.producers[root]),
                width=self.widths[root],
                prunable=root not in self.frozen,
                reason=self.frozen.get(root, ""),
            )
            for root in roots
        ]

    def root_of(self, name: str) -> int:
        return self.find(self.output_group[name])

    def keep_mask(self, channel_map: _Map, kept: Mapping[str, np.ndarray]) -> np.ndarray:
        keep = np.ones(len(channel_map.group), dtype=bool)
        for group in set(channel_map.group.tolist()) - {_FIXED}:
            name = self.producers[self.find(group)][0]
            members = channel_map.group == group
            keep[members] = np.isin(channel_map.index[members], kept[name])
        return keep


def _acts_on_last_axis(layer: Any, config: Mapping[str, Any]) -> bool:
    if _class_name(layer) == "PReLU":
        return True
    axis = config.get("axis", -1)
    axis = axis[0] if isinstance(axis, (list, tuple)) and len(axis) == 1 else axis
    rank = len(layer.input.shape) if hasattr(layer, "input") else 4
    return axis in (-1, rank - 1)


def _positions(layer: Any) -> int:
    """Spatial positions flattened together (Flatten on channels-last input)."""
    shape = tuple(layer.input.shape)[1:]
    if any(d is None for d in shape):
        return -1
    return int(np.prod(shape[:-1]))


def _importance(layer: Any, criterion: str) -> np.ndarray:
    kernel = np.asarray(compat.read(layer.kernel), dtype=np.float64)
    per_output = kernel.reshape(-1, kernel.shape[-1])
    if criterion == "l1":
        return np.abs(per_output).sum(axis=0)
    return np.sqrt((per_output**2).sum(axis=0))


def _kept_width(name: str, width: int, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"channel group {name!r}: width or ratio must be a number, got {value!r}")
    if isinstance(value, (int, np.integer)):
        if not 1 <= value <= width:
            raise ValueError(
                f"channel group {name!r}: kept width {value} is outside 1..{width} (its width)"
            )
        return int(value)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"channel group {name!r}: keep ratio {value!r} is outside (0, 1]")
    return max(1, min(width, math.floor(value * width + 0.5)))


def groups(model: Any) -> list[ChannelGroup]:
    """The channel groups of a model: what channel pruning can vary, and what it cannot and why.

    Example::

        for group in tfpconv.channels.groups(model):
            print(group.name, group.width, group.producers, group.prunable or group.reason)
    """
    return _Analysis(model).groups()


def plan(model: Any, widths_or_ratios: Widths, criterion: str = "l2") -> ChannelPlan:
    """Decide which channels :func:`prune` keeps, without building the model.

    Args:
      model: a functional or Sequential Keras model (Keras 3 or tf_keras).
      widths_or_ratios: a keep ratio in (0, 1] for every prunable group, or a mapping from a group
        (its name, or the name of any of its producers) to a kept width (int) or keep ratio
        (float); groups not named keep all channels.
      criterion: ``"l2"`` (default) or ``"l1"``: channels with the smallest norm of their output
        filters, summed over the group's producers, go first.

    Raises:
      ValueError: an unknown group or layer name, a width out of range, a group that cannot be
        pruned (the message names the layer that stops it), or an unknown criterion.
    """
    if criterion not in ("l1", "l2"):
        raise ValueError(f"unknown criterion {criterion!r}; use 'l2' or 'l1'")
    analysis = _Analysis(model)
    all_groups = analysis.groups()
    by_name = {g.name: g for g in all_groups}
    by_producer = {p: g for g in all_groups for p in g.producers}
    wanted: dict[str, Any] = {}
    if isinstance(widths_or_ratios, Mapping):
        for key, value in widths_or_ratios.items():
            group = by_name.get(key) or by_producer.get(key)
            if group is None:
                raise ValueError(
                    f"no channel group or Conv2D/Dense layer named {key!r}; groups: "
                    f"{sorted(by_name)}"
                )
            if not group.prunable and _kept_width(key, group.width, value) != group.width:
                raise ValueError(f"channel group {group.name!r} cannot be pruned: {group.reason}")
            wanted[group.name] = value
    else:
        wanted = {g.name: widths_or_ratios for g in all_groups if g.prunable}
    kept = {}
    for group in all_groups:
        width = _kept_width(group.name, group.width, wanted.get(group.name, group.width))
        score = sum(_importance(analysis.layers[p], criterion) for p in group.producers)
        # Highest score first; ties keep the lower channel. The kept channels stay in order.
        ranked = np.lexsort((np.arange(group.width), -score))
        kept[group.name] = np.sort(ranked[:width])
    return ChannelPlan(groups=all_groups, kept=kept, _analysis=analysis)


def _sliced_weights(layer: Any, weights: list[np.ndarray], in_keep: Any, out_keep: Any) -> list:
    kind = _class_name(layer)
    if kind == "Conv2D":
        kernel = weights[0][:, :, in_keep, :][..., out_keep]
        return [kernel, *(w[out_keep] for w in weights[1:])]
    if kind == "Dense":
        return [weights[0][in_keep][:, out_keep], *(w[out_keep] for w in weights[1:])]
    if kind == "DepthwiseConv2D":
        return [weights[0][:, :, in_keep, :], *(w[in_keep] for w in weights[1:])]
    if kind in ("BatchNormalization", "PReLU"):
        return [w[..., in_keep] for w in weights]
    return weights


def prune(model: Any, widths_or_ratios: Widths, criterion: str = "l2") -> Any:
    """A new, physically smaller model with channels removed and the kept weights copied in.

    Args: as :func:`plan`.

    Returns:
      A model of the same flavour (Keras 3 or tf_keras) and layer names; uncompiled.

    Example::

        smaller = tfpconv.channels.prune(model, 0.5)                  # half of every group
        smaller = tfpconv.channels.prune(model, {"conv2": 24, "block1_conv1": 0.75})
    """
    decision = plan(model, widths_or_ratios, criterion)
    analysis = decision._analysis  # noqa: SLF001
    new_widths = {}
    for name in analysis.output_group:
        group = analysis.producers[analysis.root_of(name)][0]
        new_widths[name] = len(decision.kept[group])

    def clone_layer(layer: Any) -> Any:
        if _class_name(layer) == "Lambda" and not layer.weights:
            # Keras 3 refuses to rebuild a Python lambda from its config; a layer without
            # weights can serve both models.
            return layer
        config = layer.get_config()
        if layer.name in new_widths:
            key = "filters" if _class_name(layer) == "Conv2D" else "units"
            config[key] = new_widths[layer.name]
        return type(layer).from_config(config)

    clone_model = (
        compat.tf_keras_module().models.clone_model
        if compat.is_tf_keras_object(model)
        else _keras3_clone_model
    )
    smaller = clone_model(model, clone_function=clone_layer)
    for name, layer in analysis.layers.items():
        weights = layer.get_weights()
        if not weights:
            continue
        in_map = analysis.input_maps.get(name)
        in_keep = analysis.keep_mask(in_map, decision.kept) if in_map is not None else slice(None)
        out_keep = slice(None)
        if name in analysis.output_group:
            group = analysis.producers[analysis.root_of(name)][0]
            out_keep = np.isin(
                np.arange(analysis.widths[analysis.output_group[name]]), decision.kept[group]
            )
        smaller.get_layer(name).set_weights(_sliced_weights(layer, weights, in_keep, out_keep))
    return smaller


def _keras3_clone_model(model: Any, clone_function: Any) -> Any:
    import keras

    return keras.models.clone_model(model, clone_function=clone_function)
