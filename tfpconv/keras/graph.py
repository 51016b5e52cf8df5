"""A functional or Sequential model's layer graph: its layer calls, who consumes each tensor.

Shared by the model surgery that follows the graph (:mod:`tfpconv.keras.activation_masks`) and by
the sparsity training, which asks which layers a ``BatchNormalization`` renormalizes. Works on
Keras 3 and ``tf_keras`` models; subclassed models have no graph to follow.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import tensorflow as tf

from tfpconv.keras import compat


@dataclass
class Call:
    """One layer call of a model graph, with its flat input and output tensors."""

    layer: Any
    node: Any
    inputs: list[Any]
    outputs: list[Any]


def layer_calls(model: Any) -> list[Call] | None:
    """The model's layer calls in topological order (input layers left out); None for a model
    without a layer graph (subclassed, or never built on an ``Input``)."""
    functional = getattr(model, "_functional", None) or model  # Keras 3 Sequential wraps one
    nodes_by_depth = getattr(functional, "_nodes_by_depth", None)
    if not nodes_by_depth:
        return None
    calls = []
    for depth in sorted(nodes_by_depth, reverse=True):
        for node in nodes_by_depth[depth]:
            if node.is_input:
                continue
            layer = getattr(node, "operation", None) or node.layer
            inputs = tf.nest.flatten(node.input_tensors)
            calls.append(Call(layer, node, inputs, tf.nest.flatten(node.output_tensors)))
    return calls


def consumers(calls: list[Call]) -> dict[int, list[Call]]:
    """The calls that take each tensor (by ``id``) as an input."""
    users: dict[int, list[Call]] = {}
    for call in calls:
        for tensor in call.inputs:
            users.setdefault(id(tensor), []).append(call)
    return users


def output_uses(model: Any) -> dict[int, int]:
    """How often each tensor (by ``id``) is one of the model's outputs."""
    uses: dict[int, int] = {}
    for tensor in tf.nest.flatten(model.outputs):
        uses[id(tensor)] = uses.get(id(tensor), 0) + 1
    return uses


def renormalized_layers(model: Any) -> set[int]:
    """The ``id`` of every layer whose output goes only into a ``BatchNormalization`` (so the
    scale of its output does not matter to the rest of the model), over the model and the models
    nested in it; empty for a model without a layer graph."""
    found: set[int] = set()
    calls = layer_calls(model)
    if calls is None:
        return found
    users, outputs = consumers(calls), output_uses(model)
    batch_norms = compat.batch_norm_classes()
    for call in calls:
        if layer_calls(call.layer) is not None:  # a nested functional or Sequential model
            found |= renormalized_layers(call.layer)
        if len(call.outputs) != 1 or outputs.get(id(call.outputs[0]), 0):
            continue
        next_calls = users.get(id(call.outputs[0]), [])
        if next_calls and all(isinstance(c.layer, batch_norms) for c in next_calls):
            found.add(id(call.layer))
    return found
