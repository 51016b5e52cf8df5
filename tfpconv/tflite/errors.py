"""Errors of the conversion step."""

from __future__ import annotations


class ConversionError(ValueError):
    """The model cannot be converted: says which file / layer / value and what to do."""
